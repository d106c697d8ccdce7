//! EMFILE on accept: the worker pauses accepting (no busy loop), counts the error, and serves the
//! waiting client once descriptors are available again. A test binary of its own, because it
//! lowers the whole process's RLIMIT_NOFILE.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn emfile_pauses_accepting_and_recovers() {
    let srv = server(1, |c| c.accept_pause_ms = 200);
    let port = srv.local_addr().port();
    // The client is another process, started while descriptors are still available: it connects
    // after 0.5 s and sends a request.
    let script = format!(
        "sleep 0.5; exec 3<>/dev/tcp/127.0.0.1/{port}; \
         printf 'GET /stats HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n' >&3; cat <&3"
    );
    let child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .stdout(Stdio::piped())
        .spawn()
        .expect("bash");
    // Make every new descriptor in this process fail with EMFILE.
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a valid, owned struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut old), 0);
        let highest = std::fs::read_dir("/proc/self/fd").map_or(64, |d| d.count() as u64 + 16);
        let low = libc::rlimit {
            rlim_cur: highest.min(old.rlim_cur),
            rlim_max: old.rlim_max,
        };
        // Occupy every free slot below the limit so that the next accept gets EMFILE.
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }
    let mut hogs = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hogs.push(f);
    }
    let saw_error = wait_until(5, || total(&srv, "accept_errors") >= 1);
    let errors_while_paused = total(&srv, "accept_errors");
    std::thread::sleep(Duration::from_millis(700));
    let errors_later = total(&srv, "accept_errors");
    drop(hogs);
    // SAFETY: restores the limit read above.
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &old), 0);
    }
    assert!(saw_error, "accept never failed with EMFILE");
    // Paused for 200 ms at a time: a handful of retries in 0.7 s, not a busy loop.
    assert!(
        errors_later - errors_while_paused <= 6,
        "accept retried {} times in 0.7 s",
        errors_later - errors_while_paused
    );
    let out = child.wait_with_output().expect("client");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}
