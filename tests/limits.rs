//! Every limit and refusal answers what docs/api.md says, over real sockets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn req(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes()
}

#[test]
fn http_refusals() {
    let srv = server(1, |c| {
        c.max_head_bytes = 1024;
        c.max_headers = 8;
        c.max_body_bytes = 100;
    });
    let a = srv.local_addr();
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
    let many: String = (0..9).map(|i| format!("X-{i}: 1\r\n")).collect();
    // Host + 6 + Connection: close = exactly 8 fields.
    let eight: String = (0..6).map(|i| format!("X-{i}: 1\r\n")).collect();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (req("/nope", ""), 404),
        (req("/stats", ""), 200),
        (req("/stats", &format!("X-Big: {}\r\n", "b".repeat(1000))), 431),
        (long_line.into_bytes(), 414),
        (req("/stats", &many), 431),
        (req("/stats", &eight), 200),
        (b"GET /stats HTTP/1.1\r\n\r\n".to_vec(), 400),
        (b"GET /stats HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(), 400),
        (b"BLAH\r\n\r\n".to_vec(), 400),
        (b"POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: 101\r\n\r\n".to_vec(), 413),
        (b"POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello".to_vec(), 400),
        (
            b"POST /pub/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            200,
        ),
        (
            b"POST /pub/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            format!(
                "POST /pub/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n{}\r\n0\r\n\r\n",
                "a".repeat(101)
            )
            .into_bytes(),
            413,
        ),
        (
            b"POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            // An unterminated quoted chunk extension (issue 14): refused, not published.
            b"POST /pub/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;a=\"b\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
            400,
        ),
        (b"POST /pub/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(), 501),
        (b"POST /pub/bad%20name HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx".to_vec(), 400),
        (b"POST /pub/x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n\xff\xfe".to_vec(), 400),
        (req("/pub/x", ""), 405),
        (req("/sub/x?transport=bogus", ""), 400),
        (req("/sub/x?cursor=-1", ""), 400),
        (req("/sub/x?cursor=99999999999999999999", ""), 400),
        (req("/sub/x?callback=sh%0d%0art", ""), 400),
        (req("/sub/x?callback=NOTICE:", ""), 400),
        (req(&format!("/sub/x?callback={}", "a".repeat(65)), ""), 400),
        (req("/sub/x", "Client-Id: a b\r\n"), 400),
        (req("/sub/x", "Last-Event-ID: abc\r\n"), 400),
        (req("/sub/bad!name", "Accept: text/event-stream\r\n"), 400),
        (
            b"GET /sub/x?transport=stream HTTP/1.0\r\n\r\n".to_vec(),
            400,
        ),
        (upgrade_request("/sub/bad!name"), 400),
        (upgrade_request(&format!("/sub/{}", "a".repeat(256))), 400),
        (
            String::from_utf8(upgrade_request("/echo"))
                .unwrap()
                .replace("Version: 13", "Version: 8")
                .into_bytes(),
            426,
        ),
        (
            String::from_utf8(upgrade_request("/echo"))
                .unwrap()
                .replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ=")
                .into_bytes(),
            400,
        ),
        (
            String::from_utf8(upgrade_request("/echo"))
                .unwrap()
                .replace("HTTP/1.1", "HTTP/1.0")
                .into_bytes(),
            400,
        ),
    ];
    for (request, want) in cases {
        let mut request = request;
        // Answers to well-framed requests keep the connection open: ask for close.
        let keeps_open = matches!(want, 200 | 404 | 405)
            || request.starts_with(b"POST /pub/bad%20name")
            || (request.starts_with(b"GET /sub/") && find(&request, b"Upgrade").is_none())
            || find(&request, b"\xff\xfe").is_some();
        if keeps_open {
            let at = find(&request, b"\r\n\r\n").unwrap();
            request.splice(at + 2..at + 2, b"Connection: close\r\n".iter().copied());
        }
        let resp = raw(a, &request);
        assert_eq!(
            status(&resp),
            want,
            "{:?} -> {:?}",
            String::from_utf8_lossy(&request),
            String::from_utf8_lossy(&resp)
        );
        if want == 426 {
            assert!(find(&resp, b"\r\nSec-WebSocket-Version: 13\r\n").is_some());
        }
    }
    assert!(total(&srv, "head_too_large") >= 3);
    assert_eq!(total(&srv, "body_too_large"), 2);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let srv = server(1, |_| {});
    let resp = raw(
        srv.local_addr(),
        b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\nPOST /pub/a HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhiGET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&resp);
    let statuses: Vec<&str> = text
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &text[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["404", "200", "200"], "{text}");
}

#[test]
fn slowloris_head_gets_408_within_the_deadline() {
    let srv = server(1, |c| c.head_timeout = 1);
    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let start = Instant::now();
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: t\r\n").unwrap();
    let resp = read_to_close(&mut s);
    assert_eq!(status(&resp), 408);
    // One-second ticks: the deadline fires between 1 and 2.x seconds after accept.
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(total(&srv, "head_timeouts"), 1);
}

#[test]
fn the_head_timeout_never_fires_early() {
    // --head-timeout 2: a head completed 1.9 s after its first byte is served, wherever the
    // server's one-second tick falls; a head never completed gets 408 after more than 2 s and
    // at most 3 s (the wheel's resolution) plus scheduling.
    let srv = server(1, |c| c.head_timeout = 2);
    let addr = srv.local_addr();
    // Start the requests in the middle of the server's one-second tick (its clock starts with
    // it), where a deadline taken from the next tick came up to a second early.
    std::thread::sleep(Duration::from_millis(600));
    let mut late = TcpStream::connect(addr).unwrap();
    let mut silent = TcpStream::connect(addr).unwrap();
    for s in [&late, &silent] {
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    }
    late.write_all(b"GET /stats HTTP/1.1\r\n").unwrap();
    let start = Instant::now();
    silent.write_all(b"GET /stats HTTP/1.1\r\n").unwrap();
    // The time between the two halves is what is tested, not a wait for a condition.
    std::thread::sleep(Duration::from_millis(1900));
    late.write_all(b"Host: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = read_to_close(&mut late);
    assert_eq!(status(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    let resp = read_to_close(&mut silent);
    let took = start.elapsed();
    assert_eq!(status(&resp), 408);
    assert!(
        took > Duration::from_secs(2) && took < Duration::from_millis(3500),
        "{took:?}"
    );
    assert_eq!(total(&srv, "head_timeouts"), 1);
}

#[test]
fn connection_limit_refuses_with_503() {
    let srv = server(1, |c| c.max_connections = 3);
    let a = srv.local_addr();
    let _held: Vec<Ws> = (0..3).map(|_| ws(a, "/sub/x")).collect();
    let resp = raw(a, &req("/stats", ""));
    assert_eq!(status(&resp), 503);
    assert_eq!(total(&srv, "refused"), 1);
}

#[test]
fn channel_limit_refuses_with_503() {
    let srv = server(1, |c| c.max_channels = 2);
    let a = srv.local_addr();
    let _a = ws(a, "/sub/one");
    let _b = ws(a, "/sub/two");
    let _c = ws(a, "/sub/one"); // existing channel: admitted
    let resp = raw(a, &upgrade_request("/sub/three"));
    assert_eq!(status(&resp), 503);
    assert_eq!(total(&srv, "channel_limit"), 1);
}

#[test]
fn oversized_message_closes_with_1009() {
    let srv = server(1, |c| c.max_message_bytes = 1000);
    let a = srv.local_addr();
    let mut e = ws(a, "/echo");
    e.send(tungstenite::Message::binary(vec![0u8; 1000]))
        .unwrap();
    assert!(matches!(e.read().unwrap(), tungstenite::Message::Binary(b) if b.len() == 1000));
    e.send(tungstenite::Message::binary(vec![0u8; 1001]))
        .unwrap();
    match e.read() {
        Ok(tungstenite::Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1009),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert_eq!(total(&srv, "ws_too_big"), 1);
}

#[test]
fn handshake_and_first_frame_in_one_write() {
    let srv = server(1, |_| {});
    let mut bytes = upgrade_request("/echo");
    bytes.extend(edgecomet::proto::ws::frame::client_frame(
        true,
        0x1,
        b"together",
        [1, 2, 3, 4],
    ));
    let mut s = TcpStream::connect(srv.local_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while find(&got, b"together").is_none() {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before echo");
        got.extend_from_slice(&buf[..n]);
    }
    let at = find(&got, b"\r\n\r\n").unwrap() + 4;
    assert_eq!(frames(&got[at..]), vec![(0x1, b"together".to_vec())]);
}

#[test]
fn unmasked_frame_fails_with_1002() {
    let srv = server(1, |_| {});
    let mut s = raw_subscriber(srv.local_addr(), "/echo", None);
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let data = read_to_close(&mut s);
    let f = frames(&data);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].0, 0x8);
    assert_eq!(u16::from_be_bytes([f[0].1[0], f[0].1[1]]), 1002);
    assert_eq!(total(&srv, "ws_protocol_errors"), 1);
}

#[test]
fn silent_client_is_pinged_then_closed() {
    let srv = server(1, |c| {
        c.ws_ping_interval = 1;
        c.ws_pong_timeout = 1;
    });
    let mut s = raw_subscriber(srv.local_addr(), "/sub/quiet", None);
    let start = Instant::now();
    let data = read_to_close(&mut s);
    let f = frames(&data);
    assert_eq!(f[0].0, 0x9, "first a ping");
    let (op, payload) = f.last().unwrap();
    assert_eq!(*op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    assert!(start.elapsed() < Duration::from_secs(6));
    assert_eq!(total(&srv, "ws_pong_timeouts"), 1);
}

#[test]
fn answering_pings_keeps_the_connection() {
    let srv = server(1, |c| {
        c.ws_ping_interval = 1;
        c.ws_pong_timeout = 1;
    });
    let a = srv.local_addr();
    let mut sub = ws(a, "/sub/alive");
    sub.get_mut()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(4);
    // tungstenite answers pings while reading.
    while Instant::now() < until {
        match sub.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("connection lost: {e}"),
        }
        let _ = sub.flush();
    }
    Publisher::new(a).publish("alive", b"still here");
    sub.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(recv_text(&mut sub), "still here");
    assert_eq!(total(&srv, "ws_pong_timeouts"), 0);
}

#[test]
fn shutdown_sends_1001_to_every_client() {
    let srv = server(2, |_| {});
    let a = srv.local_addr();
    let mut subs: Vec<TcpStream> = (0..20)
        .map(|_| raw_subscriber(a, "/sub/bye", None))
        .collect();
    assert!(srv.shutdown(Duration::from_secs(5)));
    for s in &mut subs {
        let data = read_to_close(s);
        let f = frames(&data);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].0, 0x8);
        assert_eq!(u16::from_be_bytes([f[0].1[0], f[0].1[1]]), 1001);
    }
    // No longer accepting.
    assert!(TcpStream::connect(a).is_err());
}

#[test]
fn echo_client_that_never_reads_is_bounded() {
    let srv = server(1, |c| c.max_queued_bytes = 64 * 1024);
    let mut s = raw_subscriber(srv.local_addr(), "/echo", Some(4096));
    let frame = edgecomet::proto::ws::frame::client_frame(true, 0x2, &[9u8; 16_000], [1, 2, 3, 4]);
    // 9.6 MB of echoes: more than the kernel buffers plus the 64 KiB queue.
    for _ in 0..600 {
        if s.write_all(&frame).is_err() {
            break;
        }
    }
    assert!(wait_until(10, || total(&srv, "slow_consumers") == 1));
    let f = frames(&read_to_close(&mut s));
    let (op, payload) = f.last().expect("frames");
    assert_eq!(*op, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    assert!(
        f[..f.len() - 1]
            .iter()
            .all(|(op, p)| *op == 0x2 && p.len() == 16_000)
    );
}

#[test]
fn http_client_that_never_reads_is_disconnected() {
    let srv = server(1, |c| c.max_queued_bytes = 64 * 1024);
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&srv.local_addr().into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    // Pipelined requests whose answers (404s) are never read.
    let one = b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n".repeat(1000);
    for _ in 0..200 {
        if s.write_all(&one).is_err() {
            break;
        }
    }
    assert!(wait_until(10, || total(&srv, "slow_consumers") == 1));
    assert!(wait_until(5, || total(&srv, "conns_http") == 0));
}
