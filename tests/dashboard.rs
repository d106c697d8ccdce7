//! `/dashboard` and `/dashboard/events` (docs/api.md#dashboard): the page's files come from the
//! binary, the stream sends the `/stats` document once a second, and the streams are bounded.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Publisher, server, total, wait_until};

/// Opens `/dashboard/events` and returns the socket once the response head has arrived, with
/// the head and what came after it.
fn open_stream(addr: SocketAddr) -> (TcpStream, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /dashboard/events HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    loop {
        if let Some(end) = common::find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let rest = buf[end + 4..].to_vec();
            return (s, head, rest);
        }
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "closed before the head");
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// The `data:` events of an SSE text, parsed.
fn events(text: &str) -> Vec<serde_json::Value> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("an event is one JSON line"))
        .collect()
}

#[test]
fn dashboard_files_come_from_the_binary_with_a_strict_policy() {
    let srv = server(1, |_| {});
    let mut c = Publisher::new(srv.local_addr());
    for (path, ctype) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ] {
        let mut buf = Vec::new();
        let (head, body) = {
            let mut s = TcpStream::connect(srv.local_addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
                .unwrap();
            common::read_response(&mut s, &mut buf)
        };
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(head.contains(&format!("Content-Type: {ctype}")), "{head}");
        assert!(
            head.contains("Content-Security-Policy: default-src 'none'; script-src 'self';"),
            "{head}"
        );
        assert!(!body.is_empty());
        // Nothing from another origin: no absolute URL in what the page loads.
        if path != "/dashboard/favicon.svg" {
            assert!(
                !body.contains("http://") && !body.contains("https://"),
                "{path}"
            );
        }
    }
    assert_eq!(c.get("/dashboard/nothing").0, 404);
    c.send_raw(b"POST /dashboard HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(c.response().0, 405);
}

#[test]
fn dashboard_stream_sends_the_stats_once_a_second() {
    let srv = server(2, |_| {});
    let (mut s, head, first) = open_stream(srv.local_addr());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    let mut text = String::from_utf8(first).unwrap();
    let start = Instant::now();
    let mut tmp = [0u8; 65536];
    while start.elapsed() < Duration::from_millis(3_300) {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "the stream ended");
        text.push_str(std::str::from_utf8(&tmp[..n]).unwrap());
    }
    let evs = events(&text);
    // One at once or at the turn's end, then one per tick: 3 or 4 in 3.3 s, never a burst.
    assert!((3..=5).contains(&evs.len()), "{} events: {text}", evs.len());
    let times: Vec<u64> = evs
        .iter()
        .map(|e| e["uptime_ms"].as_u64().unwrap())
        .collect();
    for w in times.windows(2).skip(1) {
        assert!((800..=1_300).contains(&(w[1] - w[0])), "{times:?}");
    }
    let last = evs.last().unwrap();
    assert_eq!(last["stats"]["total"]["conns_dashboard"], 1, "{last}");
    assert!(last["stats"]["hub"]["memory_pss_bytes"].as_u64().unwrap() > 0);
    assert!(last["stats"]["workers"].as_array().unwrap().len() == 2);
    assert_eq!(total(&srv, "conns_dashboard"), 1);
    drop(s);
    assert!(wait_until(5, || total(&srv, "conns_dashboard") == 0));
}

#[test]
fn dashboard_streams_are_bounded() {
    let srv = server(2, |_| {});
    let mut open: Vec<TcpStream> = (0..16)
        .map(|_| {
            let (s, head, _) = open_stream(srv.local_addr());
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            s
        })
        .collect();
    assert_eq!(total(&srv, "conns_dashboard"), 16);
    let (_, head, _) = open_stream(srv.local_addr());
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("Retry-After:"), "{head}");
    open.pop();
    assert!(wait_until(5, || total(&srv, "conns_dashboard") == 15));
    let (_s, head, _) = open_stream(srv.local_addr());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
