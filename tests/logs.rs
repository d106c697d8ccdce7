//! The log (`--log-level`, `--log-format`): JSON lines carry time, level, target, message and
//! fields; events that repeat per connection are summarised once a second per worker; the
//! "listening on" line stays plain for the scripts that read it; passwords never show.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::redis::{Redis, free_port};

/// The edgecomet binary with its stderr read line by line by a thread.
struct Proc {
    child: Child,
    addr: SocketAddr,
    /// The first line ("listening on"), not in `seen`.
    first: String,
    lines: Receiver<String>,
    seen: Vec<String>,
    /// Lines of `seen` that `until` has looked at already (those read before the ready line
    /// are looked at by the first `until`).
    looked: usize,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgecomet"))
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgecomet binary");
        let err = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        // The ready line, plain in every format (scripts read the address from it). With
        // --broker, the broker thread's "up" line may come before it: kept in `seen`.
        let mut seen = Vec::new();
        let first = loop {
            let l = lines.recv_timeout(Duration::from_secs(10)).unwrap();
            if l.starts_with("edgecomet: listening on ") {
                break l;
            }
            assert!(seen.len() < 50, "no ready line in {seen:#?}");
            seen.push(l);
        };
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap();
        Proc {
            child,
            addr,
            first,
            lines,
            seen,
            looked: 0,
        }
    }

    /// Lines until one contains `what` (at most 10 s); all of them are kept in `seen`.
    fn until(&mut self, what: &str) -> String {
        // A line read before the ready line (the broker's "up" may come first) counts too.
        while self.looked < self.seen.len() {
            self.looked += 1;
            let l = &self.seen[self.looked - 1];
            if l.contains(what) {
                return l.clone();
            }
        }
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let l = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {what:?} in {:#?}", self.seen));
            self.seen.push(l.clone());
            self.looked = self.seen.len();
            if l.contains(what) {
                return l;
            }
        }
    }

    /// SIGTERM, then every line until the exit.
    fn stop(mut self) -> Vec<String> {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(l);
        }
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse(line: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    for k in ["time", "level", "target", "message", "pid", "fields"] {
        assert!(v.get(k).is_some(), "no {k} in {line}");
    }
    assert!(v["fields"].is_object(), "{line}");
    v
}

fn bad_requests(addr: SocketAddr, n: usize) {
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"NOT HTTP\r\n\r\n").unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
}

#[test]
fn json_lines_carry_the_fields_and_repeated_events_are_summarised() {
    let mut p = Proc::start(&["--log-format", "json"]);
    let started = parse(&p.until("\"started"));
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["target"], "edgecomet::server");
    assert_eq!(started["fields"]["workers"], 1);
    assert_eq!(started["fields"]["max_connections"], 1_000_000);
    assert!(started["fields"]["open_files_limit"].as_u64().unwrap() > 0);
    assert_eq!(started["fields"]["authorization"], "open");
    assert_eq!(started["fields"]["broker"], "none");
    p.until("authorization: OPEN");
    // 1,000 bad requests in about a second: a couple of lines, with the count.
    let t = Instant::now();
    bad_requests(p.addr, 1000);
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(2500));
    let lines = p.stop();
    let mut total = 0;
    let mut summaries = 0;
    for l in &lines {
        let v = parse(l);
        if v["fields"]["event"] == "client_error" {
            summaries += 1;
            total += v["fields"]["count"].as_u64().unwrap();
            assert_eq!(v["fields"]["last"], "400 Bad Request", "{l}");
            assert_eq!(v["fields"]["worker"], 0);
        }
    }
    assert_eq!(total, 1000, "{lines:#?}");
    // One line per second at most (the first at once, then one per second boundary).
    let most = 2 + took.as_secs() as usize;
    assert!(
        summaries <= most,
        "{summaries} lines in {took:?}: {lines:#?}"
    );
    let stopped = lines.iter().find(|l| l.contains("\"stopped")).unwrap();
    let v = parse(stopped);
    assert!(v["fields"]["connections_told"].is_u64(), "{stopped}");
    assert!(v["fields"]["messages_delivered"].is_u64(), "{stopped}");
    assert!(v["fields"]["drain_ms"].is_u64(), "{stopped}");
}

#[test]
fn log_level_warn_leaves_out_info_lines() {
    let p = Proc::start(&["--log-level", "warn", "--max-connections", "1"]);
    // Two connections at a limit of one: the second is refused, summarised at warn.
    let _held = TcpStream::connect(p.addr).unwrap();
    let mut refused = TcpStream::connect(p.addr).unwrap();
    let mut b = Vec::new();
    let _ = refused.read_to_end(&mut b);
    std::thread::sleep(Duration::from_millis(1500));
    let lines = p.stop();
    assert!(
        !lines.iter().any(|l| l.contains(" INFO ")),
        "info lines at --log-level warn: {lines:#?}"
    );
    let l = lines
        .iter()
        .find(|l| l.contains("refused at --max-connections"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(l.contains(" WARN ") && l.contains("count=1"), "{l}");
}

#[test]
fn broker_state_changes_are_logged_without_the_password() {
    let port = free_port();
    let redis = Redis::start_with(port, &["--requirepass", "Zq9pass9qZ"]);
    let url = format!("redis://:Zq9pass9qZ@127.0.0.1:{port}/3");
    let mut p = Proc::start(&["--log-format", "json", "--broker", &url]);
    let up = parse(&p.until("up: subscriber and publisher"));
    assert_eq!(up["fields"]["connected"], true);
    assert_eq!(
        up["fields"]["broker"],
        format!("redis://:***@127.0.0.1:{port}/3")
    );
    drop(redis);
    let down = parse(&p.until("down: publishes get 503"));
    assert_eq!(down["level"], "WARN");
    assert_eq!(down["fields"]["connected"], false);
    // The reconnection failure is logged once per reason, not once per attempt.
    std::thread::sleep(Duration::from_millis(2000));
    let _redis = Redis::start_with(port, &["--requirepass", "Zq9pass9qZ"]);
    p.until("up: subscriber and publisher");
    let lines = p.stop();
    assert!(
        !lines.iter().any(|l| l.contains("Zq9pass9qZ")),
        "{lines:#?}"
    );
    let failures = lines
        .iter()
        .filter(|l| l.contains("connection failed"))
        .count();
    assert!(failures <= 4, "{failures}: {lines:#?}");
}

#[test]
fn the_lines_of_processes_under_a_launcher_say_which_process_wrote_them() {
    let redis = Redis::start();
    let mut p = Proc::start(&[
        "--processes",
        "2",
        "--broker",
        &redis.url(),
        "--log-format",
        "json",
    ]);
    // Every process has started before the launcher says so: both children's "started"
    // lines are in, each with its index and pid.
    p.until("2 processes listening on");
    let mut seen = std::collections::BTreeSet::new();
    for l in p.seen.iter().filter(|l| l.contains("\"started")) {
        let v = parse(l);
        seen.insert(v["process"].as_u64().expect("a process index"));
        assert!(v["pid"].as_u64().unwrap() > 0);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    let first = p.first.clone();
    let lines = p.stop();
    // The children's ready lines say which process they are from.
    let ready: Vec<&String> = std::iter::once(&first)
        .chain(lines.iter())
        .filter(|l| l.starts_with("edgecomet: listening on"))
        .collect();
    assert_eq!(ready.len(), 2, "{lines:#?}");
    for l in ready {
        assert!(l.contains("(process "), "{l}");
    }
}

#[test]
fn a_subscription_refused_by_redis_acl_is_logged_once() {
    let port = free_port();
    let _redis = Redis::start_with(
        port,
        &[
            "--user",
            "narrow",
            "on",
            ">pw",
            "~*",
            "&allowed*",
            "+@all",
            "--user",
            "default",
            "off",
        ],
    );
    let url = format!("redis://narrow:pw@127.0.0.1:{port}");
    let mut p = Proc::start(&["--broker", &url, "--broker-linger-ms", "100"]);
    p.until("up: subscriber and publisher");
    for _ in 0..3 {
        let ws = common::ws(p.addr, "/sub/forbidden");
        std::thread::sleep(Duration::from_millis(300));
        drop(ws);
    }
    let l = p.until("refused a subscription command");
    assert!(l.contains("NOPERM"), "{l}");
    std::thread::sleep(Duration::from_millis(500));
    let lines = p.stop();
    let n = lines
        .iter()
        .filter(|l| l.contains("refused a subscription command"))
        .count();
    assert_eq!(n, 1, "logged again: {lines:#?}");
}
