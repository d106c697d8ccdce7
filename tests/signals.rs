//! The binary drains on SIGTERM: stops accepting, sends close 1001 to every WebSocket client and
//! exits within the deadline.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

#[test]
fn sigterm_closes_clients_with_1001_and_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgecomet"))
        .args(["--listen", "127.0.0.1:0", "--workers", "2"])
        .args(["--shutdown-timeout-ms", "3000"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("start edgecomet");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let mut subs: Vec<TcpStream> = (0..10)
        .map(|_| raw_subscriber(addr, "/sub/term", None))
        .collect();
    let start = Instant::now();
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    for mut s in subs.drain(..) {
        let f = frames(&read_to_close(&mut s));
        assert_eq!(f.len(), 1, "exactly one frame: the close");
        assert_eq!(f[0].0, 0x8);
        assert_eq!(u16::from_be_bytes([f[0].1[0], f[0].1[1]]), 1001);
        // Dropping the stream completes the close; the server need not wait for its deadline.
    }
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        // Every client has closed, so the drain ends well before the 3 s deadline.
        assert!(
            start.elapsed() < Duration::from_millis(2500),
            "did not exit promptly"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(addr).is_err(), "still accepting");
}
