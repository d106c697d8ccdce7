//! `--processes P`: one command runs P server processes on the same address.
//!
//! The launcher (the process the user started) serves nothing itself. It starts P copies of its
//! own binary with the same flags plus `--listen ADDR --processes 1`; each binds ADDR with
//! SO_REUSEPORT, so the kernel spreads connections over all of them, and each has its own
//! open-files limit (the reason to run several on one machine). With port 0 the launcher picks
//! the port first and holds it (bound, not listening, so it receives no connections) until the
//! end, so every process binds the same one.
//!
//! Each process writes its totals as one line ([`crate::stats::render_line`]) to its stdout, a
//! pipe to the launcher, once a second; the launcher sums the latest line of every process
//! ([`crate::stats::aggregate`]) and writes the sums back to every process's stdin, which shows
//! them under `"processes"` in its `/stats`. So any process answers for all of them, at most
//! about two seconds late.
//!
//! SIGTERM or SIGINT to the launcher is passed on to every process as SIGTERM (a second one
//! again: they exit at once). A process that exits on its own is reported and not restarted (its
//! clients are gone already; they reconnect to the others). A process that fails to start stops
//! all of them. A process whose launcher dies gets SIGTERM (`PR_SET_PDEATHSIG`).
//!
//! The processes write their log lines to the launcher's stderr (inherited, one write(2) per
//! line), each line with its process index and pid (`crate::logging`).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use signal_hook::iterator::Signals;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::Config;
use crate::runtime::shared::Shared;
use crate::stats;

/// Set in a process the launcher started: `INDEX LAUNCHER_PID`.
pub const CHILD_ENV: &str = "EDGECOMET_LAUNCHER";

/// How long a process may take to start (bind, connect to the broker) before the launcher
/// gives up on all of them.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Pids of the processes not yet reaped (0 once reaped), by index.
type Live = Arc<Mutex<Vec<i32>>>;

struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    /// Its exit status, once reaped.
    exited: Option<std::process::ExitStatus>,
    /// Its exit has been dealt with (reported, its last totals dropped).
    noted: bool,
}

/// Runs the launcher until every process has exited. `signals` must already be installed
/// (SIGTERM, SIGINT, SIGHUP).
pub fn run(cfg: &Config, mut signals: Signals) -> ExitCode {
    let n = cfg.processes as usize;
    if let Some(tls) = cfg.tls_listen {
        // Every process binds the same TLS address: it needs a port, free unless shared.
        let checked = if tls.port() == 0 {
            Err(
                "--tls-listen needs a port other than 0 with --processes (each process \
                 would pick its own)"
                    .to_string(),
            )
        } else if cfg.share_port {
            Ok(())
        } else {
            crate::server::check_not_served(tls).map_err(|e| e.to_string())
        };
        // The certificate is checked here too, so that a bad file stops the start once, with
        // its name, instead of in every process.
        let loaded = checked.and_then(|()| match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => crate::tls::Certs::load(c, k, 1).map(|_| ()),
            _ => Ok(()),
        });
        if let Err(e) = loaded {
            log::error!(target: "edgecomet::launcher", "cannot start: {e}");
            return ExitCode::FAILURE;
        }
    }
    let (addr, _hold) = match reserve(cfg.listen) {
        Ok(r) => r,
        Err(e) => {
            log::error!(target: "edgecomet::launcher", "cannot bind {}: {e}", cfg.listen);
            return ExitCode::FAILURE;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            log::error!(target: "edgecomet::launcher", "cannot find my own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let latest: Arc<Mutex<Vec<Option<String>>>> = Arc::new(Mutex::new(vec![None; n]));
    let mut procs: Vec<Proc> = Vec::with_capacity(n);
    for i in 0..n {
        let spawned = Command::new(&exe)
            .args(&args)
            .arg("--listen")
            .arg(addr.to_string())
            .args(["--processes", "1", "--share-port"])
            .env(CHILD_ENV, format!("{i} {}", std::process::id()))
            // A group of its own: Ctrl-C in a terminal reaches the launcher only, which passes
            // it on once (the terminal's SIGINT plus ours would be two: "exit now").
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                log::error!(target: "edgecomet::launcher", process = i; "cannot start process {i}: {e}");
                let live = Arc::new(Mutex::new(
                    procs.iter().map(|p| p.child.id() as i32).collect(),
                ));
                stop_all(&mut procs, &live);
                return ExitCode::FAILURE;
            }
        };
        let out = child.stdout.take().expect("stdout is piped");
        let latest = latest.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                latest.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(line);
            }
        });
        let stdin = child.stdin.take();
        procs.push(Proc {
            child,
            stdin,
            exited: None,
            noted: false,
        });
    }

    // Signals are passed on (as SIGTERM) from a thread of their own, to the processes not yet
    // reaped: `live` holds their pids, and a pid leaves it under the same lock as it is reaped
    // (so a pid the kernel may reuse is never signalled).
    let live: Live = Arc::new(Mutex::new(
        procs.iter().map(|p| p.child.id() as i32).collect(),
    ));
    let signalled = Arc::new(AtomicUsize::new(0));
    {
        let (live, signalled) = (live.clone(), signalled.clone());
        // Something to reload: the certificate, or key files.
        let reloadable = cfg.tls_listen.is_some() || cfg.auth_configured();
        std::thread::spawn(move || {
            for sig in signals.forever() {
                if sig == libc::SIGHUP {
                    // A terminal hang-up must not stop a million clients. With TLS or keys each
                    // process reads the certificate and key files again (and logs how that
                    // went); SIGHUP is passed on as SIGHUP.
                    if reloadable {
                        let live = live.lock().unwrap_or_else(|e| e.into_inner());
                        for &pid in live.iter().filter(|&&p| p != 0) {
                            // SAFETY: kill(2) on a child not yet reaped (see `Live`).
                            unsafe {
                                libc::kill(pid, libc::SIGHUP);
                            }
                        }
                        log::info!(
                            target: "edgecomet::launcher",
                            "SIGHUP: passed on to {} processes (TLS \
                             certificate and key files reload)",
                            live.iter().filter(|&&p| p != 0).count()
                        );
                    } else {
                        log::info!(
                            target: "edgecomet::launcher",
                            "SIGHUP: nothing to reload; still serving \
                             (SIGTERM or SIGINT stops all processes)"
                        );
                    }
                    continue;
                }
                let k = signalled.fetch_add(1, Ordering::SeqCst) + 1;
                let live = live.lock().unwrap_or_else(|e| e.into_inner());
                let running: Vec<i32> = live.iter().copied().filter(|&p| p != 0).collect();
                log::info!(
                    target: "edgecomet::launcher",
                    signal = sig;
                    "signal {sig}: passing it on to {} processes{}",
                    running.len(),
                    if k > 1 { " (again: they exit now)" } else { "" }
                );
                for pid in running {
                    // SAFETY: kill(2) on a child not yet reaped (see `live`).
                    unsafe {
                        libc::kill(pid, libc::SIGTERM);
                    }
                }
            }
        });
    }

    // Started: every process has reported once (it binds and connects before that).
    let since = Instant::now();
    loop {
        let reported = latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|l| l.is_some())
            .count();
        reap(&mut procs, &live);
        if let Some((i, p)) = procs.iter().enumerate().find(|(_, p)| p.exited.is_some()) {
            log::error!(
                target: "edgecomet::launcher",
                process = i;
                "process {i} (pid {}) did not start ({}); stopping the others",
                p.child.id(),
                p.exited.map_or_else(String::new, |s| s.to_string())
            );
            stop_all(&mut procs, &live);
            return ExitCode::FAILURE;
        }
        if reported == n {
            break;
        }
        if since.elapsed() > START_TIMEOUT || signalled.load(Ordering::SeqCst) > 0 {
            log::error!(target: "edgecomet::launcher", "only {reported} of {n} processes started; stopping them");
            stop_all(&mut procs, &live);
            return ExitCode::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids: Vec<String> = procs.iter().map(|p| p.child.id().to_string()).collect();
    // One write(2), as the server's own "listening on" line (scripts read the address).
    let line = format!(
        "edgecomet: launcher {}: {n} processes listening on {addr} (pids {})\n",
        std::process::id(),
        pids.join(",")
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    log::info!(
        target: "edgecomet::launcher",
        processes = n, listen = addr.to_string().as_str(), pids = pids.join(",").as_str();
        "{n} processes started; their log lines carry their process index and pid"
    );

    // Supervise: the sums once a second, exits reported, until all have exited.
    loop {
        let sums = {
            let l = latest.lock().unwrap_or_else(|e| e.into_inner());
            let lines: Vec<&str> = l.iter().flatten().map(String::as_str).collect();
            stats::aggregate(n, &lines)
        };
        for p in procs.iter_mut().filter(|p| p.exited.is_none()) {
            if let Some(s) = p.stdin.as_mut()
                && writeln!(s, "{sums}").and_then(|()| s.flush()).is_err()
            {
                p.stdin = None;
            }
        }
        reap(&mut procs, &live);
        let exited = procs_exited(&procs);
        for (i, p) in procs.iter_mut().enumerate() {
            if p.noted || p.exited.is_none() {
                continue;
            }
            p.noted = true;
            latest.lock().unwrap_or_else(|e| e.into_inner())[i] = None;
            if signalled.load(Ordering::SeqCst) == 0 {
                log::error!(
                    target: "edgecomet::launcher",
                    process = i;
                    "process {i} (pid {}) exited ({}) without being asked; {} of {n} \
                     still running",
                    p.child.id(),
                    p.exited.map_or_else(String::new, |s| s.to_string()),
                    n - exited
                );
            }
        }
        if procs_exited(&procs) == n {
            break;
        }
        // Sleep a second, but notice the last exit sooner.
        for _ in 0..10 {
            std::thread::sleep(Duration::from_millis(100));
            reap(&mut procs, &live);
            if procs_exited(&procs) == n {
                break;
            }
        }
    }
    if procs.iter().all(|p| p.exited.is_some_and(|s| s.success())) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn procs_exited(procs: &[Proc]) -> usize {
    procs.iter().filter(|p| p.exited.is_some()).count()
}

/// Reaps the processes that exited, taking them out of `live` under its lock.
fn reap(procs: &mut [Proc], live: &Live) {
    let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
    for (i, p) in procs.iter_mut().enumerate() {
        if p.exited.is_none()
            && let Ok(Some(s)) = p.child.try_wait()
        {
            p.exited = Some(s);
            live[i] = 0;
        }
    }
}

/// SIGTERM to every process still running, then wait for them (SIGKILL after 10 s).
fn stop_all(procs: &mut [Proc], live: &Live) {
    for &pid in live.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if pid != 0 {
            // SAFETY: kill(2) on a child not yet reaped (see `Live`).
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
    let until = Instant::now() + Duration::from_secs(10);
    while procs_exited(procs) < procs.len() {
        if Instant::now() > until {
            for p in procs.iter_mut().filter(|p| p.exited.is_none()) {
                let _ = p.child.kill();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        reap(procs, live);
    }
}

/// The address every process binds. Port 0: a port chosen now and held by a bound,
/// non-listening SO_REUSEPORT socket (returned; keep it until the end). A fixed
/// port must not be served already (the processes join each other with `--share-port`, never
/// a stranger).
fn reserve(addr: SocketAddr) -> std::io::Result<(SocketAddr, Option<Socket>)> {
    if addr.port() != 0 {
        crate::server::check_not_served(addr)?;
        return Ok((addr, None));
    }
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&addr.into())?;
    let bound = s
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
    Ok((bound, Some(s)))
}

/// In a process the launcher started (`CHILD_ENV` set): dies with the launcher, reports its
/// totals on stdout once a second (the first at once: "started") and takes the sums from
/// stdin. Returns false when this process is not a launcher's.
pub fn child(shared: Arc<Shared>) -> bool {
    let Some(v) = std::env::var_os(CHILD_ENV) else {
        return false;
    };
    let parent: Option<i32> = v
        .to_str()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok());
    // SAFETY: prctl/getppid/kill with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
        // The launcher may have died before the line above: then nobody would tell us.
        if parent.is_some_and(|p| libc::getppid() != p) {
            libc::kill(libc::getpid(), libc::SIGTERM);
        }
    }
    let out = shared.clone();
    std::thread::Builder::new()
        .name("edgecomet-stats".into())
        .spawn(move || {
            let mut stdout = std::io::stdout().lock();
            loop {
                let line = out.stats_line();
                if stdout
                    .write_all(line.as_bytes())
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
        .expect("spawning a thread");
    std::thread::Builder::new()
        .name("edgecomet-sums".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                *shared.processes.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
            }
        })
        .expect("spawning a thread");
    true
}
