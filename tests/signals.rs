//! The binary and its signals: SIGTERM drains (what was accepted is delivered first, every
//! WebSocket client gets 1001, requests arriving meanwhile are refused, the deadline is kept),
//! SIGHUP changes nothing, and a second server on a served port refuses to start.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// An `edgecomet` process on a free loopback port; killed when dropped.
struct Proc {
    child: Child,
    addr: SocketAddr,
    err: BufReader<ChildStderr>,
}

impl Proc {
    fn start(args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgecomet"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
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
        Proc { child, addr, err }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// The next line the server logs that contains `what`.
    fn log_line(&mut self, what: &str) -> String {
        loop {
            let mut line = String::new();
            assert!(
                self.err.read_line(&mut line).unwrap() > 0,
                "no {what:?} logged"
            );
            if line.contains(what) {
                return line;
            }
        }
    }

    /// Waits for the exit (at most `within`) and returns its status and when it came.
    fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, Instant) {
        let until = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, Instant::now());
            }
            assert!(Instant::now() < until, "did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn stats(&self) -> serde_json::Value {
        let (st, body) = Publisher::new(self.addr).get("/stats");
        assert_eq!(st, 200);
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn close_code(f: &(u8, Vec<u8>)) -> u16 {
    assert_eq!(f.0, 0x8, "a close frame");
    u16::from_be_bytes([f.1[0], f.1[1]])
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits() {
    let mut p = Proc::start(&["--workers", "2", "--shutdown-timeout-ms", "3000"]);
    let mut subs: Vec<TcpStream> = (0..10)
        .map(|_| raw_subscriber(p.addr, "/sub/term", None))
        .collect();
    let start = Instant::now();
    p.signal(libc::SIGTERM);
    for mut s in subs.drain(..) {
        let f = frames(&read_to_close(&mut s));
        assert_eq!(f.len(), 1, "exactly one frame: the close");
        assert_eq!(close_code(&f[0]), 1001);
        // Dropping the stream completes the close; the server need not wait for its deadline.
    }
    // Every client has closed, so the drain ends well before the 3 s deadline.
    let (status, at) = p.wait_exit(Duration::from_millis(2500));
    assert!(at - start < Duration::from_millis(2500));
    assert!(status.success(), "{status:?}");
    assert!(TcpStream::connect(p.addr).is_err(), "still accepting");
}

#[test]
fn a_publish_answered_before_sigterm_reaches_every_subscriber() {
    // Issue 14: with two workers, the worker that did not take the publish began its shutdown
    // before delivering what its inbox already held (110-144 of 250 got the message). Three
    // rounds, 200 WebSocket and 50 SSE subscribers each, SIGTERM right behind the publish.
    let mut accepted = 0;
    for round in 0..5 {
        let p = Proc::start(&["--workers", "2", "--shutdown-timeout-ms", "5000"]);
        let ws: Vec<TcpStream> = (0..200)
            .map(|_| raw_subscriber(p.addr, "/sub/last", None))
            .collect();
        let sse: Vec<TcpStream> = (0..50)
            .map(|_| {
                let mut s = TcpStream::connect(p.addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.write_all(b"GET /sub/last?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                s
            })
            .collect();
        assert!(wait_until(10, || {
            let s = p.stats();
            s["total"]["conns_ws_sub"] == 200 && s["total"]["conns_sse"] == 50
        }));
        let per_worker: Vec<u64> = p.stats()["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["conns_ws_sub"].as_u64().unwrap())
            .collect();
        // The signal goes right behind the publish, before its answer is read: the publish is
        // either accepted (200: then everyone must get it) or refused (503: then nobody).
        let mut publisher = Publisher::new(p.addr);
        publisher.send_raw(
            b"POST /pub/last HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\n\r\nthe last word",
        );
        p.signal(libc::SIGTERM);
        let (st, body) = publisher.response();
        assert!(st == 200 || st == 503, "{st} {body}");
        let mut missing = 0;
        for mut s in ws {
            let f = frames(&read_to_close(&mut s));
            let last = f.last().expect("a close frame");
            assert_eq!(close_code(last), 1001);
            if !f.iter().any(|(op, p)| *op == 0x1 && p == b"the last word") {
                missing += 1;
            }
        }
        let mut sse_missing = 0;
        for mut s in sse {
            let got = read_to_close(&mut s);
            if find(&got, b"data: the last word\n").is_none() {
                sse_missing += 1;
            }
        }
        let want = if st == 200 { (0, 0) } else { (200, 50) };
        assert_eq!(
            (missing, sse_missing),
            want,
            "round {round}, publish answered {st}: WebSocket and SSE subscribers without the \
             message (subscribers per worker {per_worker:?})"
        );
        accepted += usize::from(st == 200);
    }
    eprintln!("publishes accepted before the signal: {accepted} of 5");
}

#[test]
fn a_request_arriving_during_the_drain_is_refused_not_accepted() {
    let mut p = Proc::start(&["--workers", "1", "--shutdown-timeout-ms", "5000"]);
    let mut sub = raw_subscriber(p.addr, "/sub/late", None);
    // A keep-alive connection: a request answered (so the server has read this write), with a
    // publish's head and half its body behind it.
    let mut c = TcpStream::connect(p.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /pub/late HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello",
    )
    .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut c, &mut buf);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    p.signal(libc::SIGTERM);
    // The subscriber's 1001 says the drain has begun.
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while frames(&got).is_empty() {
        let n = sub.read(&mut b).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    assert_eq!(close_code(&frames(&got)[0]), 1001);
    c.write_all(b"world").unwrap();
    let resp = read_to_close(&mut c);
    let text = String::from_utf8_lossy(&resp);
    assert_eq!(status(&resp), 503, "{text}");
    assert!(text.contains("shutting down"), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    // Nothing was published: the subscriber got nothing but the close.
    got.extend_from_slice(&read_to_close(&mut sub));
    assert_eq!(frames(&got).len(), 1, "only the close");
    // Our closes end the drain before its deadline.
    drop((c, sub));
    let (st, _) = p.wait_exit(Duration::from_secs(4));
    assert!(st.success(), "{st:?}");
}

#[test]
fn the_drain_deadline_is_kept() {
    // Clients that never answer the close: the process exits at the deadline, not up to a
    // second after it (issue 14: 1.02-1.53 s for 1000 ms).
    for ms in [1000u64, 1500] {
        let mut p = Proc::start(&["--workers", "2", "--shutdown-timeout-ms", &ms.to_string()]);
        let _subs: Vec<TcpStream> = (0..8)
            .map(|_| raw_subscriber(p.addr, "/sub/deaf", None))
            .collect();
        let start = Instant::now();
        p.signal(libc::SIGTERM);
        let (st, at) = p.wait_exit(Duration::from_millis(ms + 2000));
        let took = at - start;
        assert!(st.success(), "{st:?}");
        assert!(
            took >= Duration::from_millis(ms - 20) && took < Duration::from_millis(ms + 200),
            "--shutdown-timeout-ms {ms}: exited after {took:?}"
        );
    }
}

#[test]
fn sighup_changes_nothing() {
    let mut p = Proc::start(&["--workers", "2"]);
    let mut sub = ws(p.addr, "/sub/hup");
    p.signal(libc::SIGHUP);
    let line = p.log_line("SIGHUP");
    assert!(line.contains("still serving"), "{line}");
    let (st, body) = Publisher::new(p.addr).publish("hup", b"still here");
    assert_eq!(st, 200, "{body}");
    assert_eq!(recv_text(&mut sub), "still here");
    assert!(p.child.try_wait().unwrap().is_none(), "exited on SIGHUP");
    drop(sub);
    p.signal(libc::SIGTERM);
    let (st, _) = p.wait_exit(Duration::from_secs(5));
    assert!(st.success(), "{st:?}");
}

#[test]
fn a_second_server_on_a_served_port_refuses_to_start() {
    let p = Proc::start(&["--workers", "1"]);
    let listen = p.addr.to_string();
    let err = refused(&["--listen", &listen, "--workers", "1"]);
    assert!(err.contains("already served"), "{err}");
    assert!(err.contains("--share-port"), "{err}");
    // Sharing without a broker would split the subscribers: refused too.
    let err = refused(&["--listen", &listen, "--share-port"]);
    assert!(err.contains("--share-port needs --broker"), "{err}");
    // The first one still has every connection.
    let (st, _) = Publisher::new(p.addr).get("/stats");
    assert_eq!(st, 200);
}
