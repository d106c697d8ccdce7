//! The operator's endpoints over real sockets: `/metrics` (the exposition's shape, its figures
//! equal to `/stats`', the histograms), `/healthz` and `/readyz` (GET and HEAD, 405, not ready
//! while draining), and the `Date` header on every kind of answer.
//!
//! `tests/python/test_metrics.py` checks the same output with `promtool` and a real Prometheus
//! server, and `/readyz` with the broker down.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use edgecomet::proto::http::HttpDate;

fn get(addr: std::net::SocketAddr, method: &str, path: &str) -> (String, String) {
    let resp = raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let text = String::from_utf8(resp).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    (head.to_string(), body.to_string())
}

/// Every sample of the exposition: `name{labels}` → value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// The sum of a family's samples over its `worker` label (and any other).
fn sum(s: &HashMap<String, f64>, name: &str) -> f64 {
    s.iter()
        .filter(|(k, _)| k.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_are_the_stats_in_prometheus_format() {
    let srv = server(2, |_| {});
    let a = srv.local_addr();
    let mut subs: Vec<Ws> = (0..3).map(|_| ws(a, "/sub/m")).collect();
    assert!(wait_until(5, || total(&srv, "conns_ws_sub") == 3));
    let mut p = Publisher::new(a);
    for i in 0..5 {
        assert_eq!(p.publish("m", format!("message {i}").as_bytes()).0, 200);
    }
    for s in &mut subs {
        for i in 0..5 {
            assert_eq!(recv_text(s), format!("message {i}"));
        }
    }
    // A connection closed: in the queued-at-close histogram once it is removed.
    assert_eq!(
        status(&raw(
            a,
            b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )),
        200
    );
    assert!(wait_until(5, || {
        srv.worker_stats()
            .iter()
            .any(|w| w.queued_at_close.snapshot().cumulative.last() > Some(&0))
    }));
    // The process's CPU time counts in clock ticks (10 ms): a process that started this fast
    // may have used less than one, and `process_cpu_seconds_total` would read 0. Work until the
    // kernel has counted one (a condition, not a sleep).
    while cpu_ticks() == 0 {
        std::hint::black_box((0..10_000u64).sum::<u64>());
    }
    let (head, body) = get(a, "GET", "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));

    // Each family: HELP, then TYPE, once, before its samples; no family twice.
    let mut families = HashSet::new();
    let mut current = String::new();
    let mut lines = body.lines().peekable();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            let ty = lines.next().unwrap();
            assert!(ty.starts_with(&format!("# TYPE {name} ")), "{ty}");
            assert!(families.insert(name.to_string()), "{name} twice");
            current = name.to_string();
        } else {
            let name = l.split(['{', ' ']).next().unwrap();
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .filter(|b| *b == current)
                .unwrap_or(name);
            assert_eq!(base, current, "sample {l} outside its family");
        }
    }

    let s = samples(&body);
    // The figures of /stats, summed over the workers.
    assert_eq!(
        sum(&s, "edgecomet_messages_in_total"),
        total(&srv, "messages_in") as f64
    );
    assert_eq!(sum(&s, "edgecomet_messages_in_total"), 5.0);
    assert_eq!(sum(&s, "edgecomet_messages_out_total"), 15.0);
    assert_eq!(
        s["edgecomet_connections{worker=\"0\",phase=\"ws_sub\"}"]
            + s["edgecomet_connections{worker=\"1\",phase=\"ws_sub\"}"],
        3.0
    );
    assert_eq!(s["edgecomet_history_messages"], 5.0);
    // Every counter of /stats is there, per worker.
    for (k, v) in srv.worker_stats()[1].snapshot() {
        if k.starts_with("conns_") {
            continue;
        }
        let counter = format!("edgecomet_{k}_total{{worker=\"1\"}}");
        let gauge = format!("edgecomet_{k}{{worker=\"1\"}}");
        let got = s.get(&counter).or(s.get(&gauge));
        assert!(got.is_some(), "{k} missing");
        // Counters move between the two reads (this test's own requests): equal or a little
        // more.
        assert!(*got.unwrap() <= v as f64 + 0.5 || k == "channels", "{k}");
    }
    // The publish-to-write histogram: each worker with subscribers observed each message once.
    let count = sum(&s, "edgecomet_publish_write_seconds_count");
    assert!((5.0..=10.0).contains(&count), "{count}");
    for w in ["0", "1"] {
        let inf =
            s[&format!("edgecomet_publish_write_seconds_bucket{{worker=\"{w}\",le=\"+Inf\"}}")];
        assert_eq!(
            inf,
            s[&format!("edgecomet_publish_write_seconds_count{{worker=\"{w}\"}}")]
        );
        assert!(s[&format!("edgecomet_publish_write_seconds_sum{{worker=\"{w}\"}}")] < 5.0);
    }
    assert!(sum(&s, "edgecomet_queued_at_close_bytes_count") >= 1.0);
    assert!(
        s["edgecomet_queued_at_close_bytes_bucket{worker=\"0\",le=\"0\"}"]
            <= s["edgecomet_queued_at_close_bytes_count{worker=\"0\"}"]
    );
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
    ] {
        assert!(s[name] > 0.0, "{name}");
    }
    assert!(s["process_open_fds"] >= 5.0);

    // HEAD: the same head, no body; other methods: 405.
    let (h, b) = get(a, "HEAD", "/metrics");
    assert!(
        h.starts_with("HTTP/1.1 200 OK\r\n") && b.is_empty(),
        "{h}{b}"
    );
    let (h, _) = get(a, "POST", "/metrics");
    assert!(h.starts_with("HTTP/1.1 405 ") && h.contains("\r\nAllow: GET, HEAD"));
}

#[test]
fn health_and_readiness() {
    let srv = server(2, |c| c.shutdown_timeout_ms = 3_000);
    let a = srv.local_addr();
    let (h, b) = get(a, "GET", "/healthz");
    assert!(h.starts_with("HTTP/1.1 200 "), "{h}");
    assert_eq!(b, "ok\n");
    let (h, b) = get(a, "GET", "/readyz");
    assert!(h.starts_with("HTTP/1.1 200 "), "{h}");
    assert_eq!(b, "ready\n");
    let (h, b) = get(a, "HEAD", "/readyz");
    assert!(h.starts_with("HTTP/1.1 200 ") && h.contains("Content-Length: 6\r\n"));
    assert!(b.is_empty());
    let (h, _) = get(a, "DELETE", "/healthz");
    assert!(h.starts_with("HTTP/1.1 405 "), "{h}");

    // Requests begun before the shutdown and finished after it are still answered by the probes.
    let mut ready = TcpStream::connect(a).unwrap();
    let mut health = TcpStream::connect(a).unwrap();
    for s in [&mut ready, &mut health] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    ready
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    health
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    srv.begin_shutdown(Instant::now() + Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(200));
    ready.write_all(b"\r\n").unwrap();
    health.write_all(b"\r\n").unwrap();
    let r = String::from_utf8(read_to_close(&mut ready)).unwrap();
    assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
    assert!(
        r.ends_with("not ready: draining: a shutdown has begun\n"),
        "{r}"
    );
    let r = String::from_utf8(read_to_close(&mut health)).unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200 ") && r.ends_with("\r\n\r\nok\n"),
        "{r}"
    );
}

/// The `Date` of a response head, checked against the clock (it is at most about a second old).
fn check_date(head: &str) {
    let date = head
        .split("\r\n")
        .find_map(|l| l.strip_prefix("Date: "))
        .unwrap_or_else(|| panic!("no Date in {head}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let near: Vec<String> = (now.saturating_sub(3)..=now + 1)
        .map(|t| HttpDate::from_unix(t).as_str().to_string())
        .collect();
    assert!(
        near.iter().any(|d| d == date),
        "{date} is not now ({near:?})"
    );
}

/// Open connections of a server (its `conns_*` gauges).
fn open(srv: &edgecomet::Server) -> u64 {
    srv.worker_stats()
        .iter()
        .flat_map(|w| w.snapshot())
        .filter(|(k, _)| k.starts_with("conns_"))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn every_answer_has_a_date() {
    let srv = server(1, |c| c.max_connections = 4);
    let a = srv.local_addr();
    for req in [
        "GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "GET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "GET /pub/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        "POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        "GARBAGE\r\n\r\n",
    ] {
        check_date(&String::from_utf8(raw(a, req.as_bytes())).unwrap());
    }
    // The event stream's head and the 101.
    let mut sse = TcpStream::connect(a).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sse.write_all(b"GET /sub/x?transport=sse HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sse.read(&mut buf).unwrap();
    check_date(&String::from_utf8_lossy(&buf[..n]));
    let mut up = TcpStream::connect(a).unwrap();
    up.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    up.write_all(&upgrade_request("/sub/x")).unwrap();
    let n = up.read(&mut buf).unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    check_date(&head);
    // Over --max-connections (4: the two above and two more), the 503 before the close.
    assert!(wait_until(5, || open(&srv) == 2));
    let _c = TcpStream::connect(a).unwrap();
    let _d = TcpStream::connect(a).unwrap();
    assert!(wait_until(5, || open(&srv) == 4));
    let refused = String::from_utf8(raw(a, b"")).unwrap();
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
    check_date(&refused);
}

/// This process's user + system CPU time in clock ticks (`/proc/self/stat` fields 14 and 15).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}
