//! permessage-deflate (RFC 7692) over real sockets: what docs/api.md ("permessage-deflate")
//! promises, checked on the wire (the 101's extension line, RSV1 on the frames, the close code)
//! and in the counters. The client side is raw frames built here (masked, RSV1 = 0x40 on the
//! first byte) and flate2 as an independent compressor and inflater.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use edgecomet::config::OnOff;
use edgecomet::proto::ws::frame::client_frame;
use edgecomet::{Config, Server};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{Value, json};

use common::{Publisher, server, total};

const RSV1: u8 = 0x40;
const FIN: u8 = 0x80;
const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The extension line this server answers an acceptable offer with.
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// What Chromium offers.
const CHROMIUM: &str = "permessage-deflate; client_max_window_bits";

// ---- A raw WebSocket client --------------------------------------------------------------------

/// One server frame: its first byte (FIN, RSV1, opcode) and payload.
#[derive(Debug)]
struct Frame {
    b0: u8,
    payload: Vec<u8>,
}

impl Frame {
    fn op(&self) -> u8 {
        self.b0 & 0x0F
    }

    fn compressed(&self) -> bool {
        self.b0 & RSV1 != 0
    }

    /// The payload, inflated when RSV1 is set.
    fn data(&self) -> Vec<u8> {
        match self.compressed() {
            true => inflate(&self.payload),
            false => self.payload.clone(),
        }
    }

    fn close_code(&self) -> u16 {
        assert_eq!(self.op(), OP_CLOSE, "{self:?}");
        u16::from_be_bytes([self.payload[0], self.payload[1]])
    }
}

struct Client {
    s: TcpStream,
    buf: Vec<u8>,
    /// The 101 response head.
    head: String,
}

impl Client {
    /// Upgrades on `path`, offering `ext` (`Sec-WebSocket-Extensions`, one header per element)
    /// when given; reads exactly the 101 head.
    fn open(addr: SocketAddr, path: &str, ext: &[&str]) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_nodelay(true).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        );
        for e in ext {
            req.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
        }
        req.push_str("\r\n");
        let mut c = Client {
            s,
            buf: Vec::new(),
            head: String::new(),
        };
        c.s.write_all(req.as_bytes()).unwrap();
        let end = loop {
            if let Some(i) = c.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            c.fill();
        };
        c.head = String::from_utf8(c.buf.drain(..end).collect()).unwrap();
        assert!(c.head.starts_with("HTTP/1.1 101 "), "{}", c.head);
        c
    }

    /// The `Sec-WebSocket-Extensions` values of the 101.
    fn extensions(&self) -> Vec<&str> {
        self.head
            .split("\r\n")
            .filter_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .collect()
    }

    fn fill(&mut self) {
        let mut tmp = [0u8; 65536];
        let n = self.s.read(&mut tmp).expect("read (5 s timeout)");
        assert!(n > 0, "server closed the connection");
        self.buf.extend_from_slice(&tmp[..n]);
    }

    /// Writes one masked frame with first byte `b0` (FIN, RSV bits, opcode) as it is.
    fn send(&mut self, b0: u8, payload: &[u8]) {
        self.s.write_all(&raw_frame(b0, payload)).unwrap();
    }

    /// One compressed message in a single frame.
    fn send_deflated(&mut self, op: u8, data: &[u8]) {
        self.send(FIN | RSV1 | op, &deflate(data));
    }

    /// The next server frame.
    fn frame(&mut self) -> Frame {
        loop {
            if let Some((hlen, plen)) = frame_len(&self.buf) {
                let b0 = self.buf[0];
                let payload = self.buf[hlen..hlen + plen].to_vec();
                self.buf.drain(..hlen + plen);
                return Frame { b0, payload };
            }
            self.fill();
        }
    }

    /// The next data frame (skipping pings and pongs).
    fn data_frame(&mut self) -> Frame {
        loop {
            let f = self.frame();
            if f.op() != OP_PING && f.op() != OP_PONG {
                assert_ne!(f.op(), OP_CLOSE, "closed: {f:?}");
                return f;
            }
        }
    }

    /// Reads until the close frame; returns its code.
    fn close_code(&mut self) -> u16 {
        loop {
            let f = self.frame();
            if f.op() == OP_CLOSE {
                return f.close_code();
            }
        }
    }
}

/// A masked client frame with first byte `b0`.
fn raw_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = client_frame(b0 & FIN != 0, b0 & 0x0F, payload, MASK);
    f[0] |= b0 & 0x70;
    f
}

/// Header and payload length of the (unmasked, server) frame at the start of `b`, if whole.
fn frame_len(b: &[u8]) -> Option<(usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    assert_eq!(b[1] & 0x80, 0, "server frames are unmasked");
    let (hlen, plen) = match b[1] & 0x7F {
        126 if b.len() >= 4 => (4, usize::from(u16::from_be_bytes([b[2], b[3]]))),
        127 if b.len() >= 10 => (
            10,
            u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
        ),
        126 | 127 => return None,
        n => (2, usize::from(n)),
    };
    (b.len() >= hlen + plen).then_some((hlen, plen))
}

// ---- DEFLATE, independently of the server ------------------------------------------------------

/// Raw DEFLATE of `data` ending with a sync flush, whose 00 00 ff ff tail is dropped (RFC 7692
/// §7.2.1): one message as a client sends it.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = deflate_with_tail(data);
    assert_eq!(z[z.len() - 4..], [0x00, 0x00, 0xff, 0xff]);
    z.truncate(z.len() - 4);
    z
}

fn deflate_with_tail(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    while (c.total_in() as usize) < data.len() || out.len() == out.capacity() {
        if out.len() == out.capacity() {
            out.reserve(out.capacity());
        }
        let at = c.total_in() as usize;
        c.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
            .unwrap();
    }
    out
}

/// A server message's payload, inflated (with the 00 00 ff ff tail put back).
fn inflate(payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(64 * 1024);
    loop {
        let at = d.total_in() as usize;
        d.decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
            .expect("the server's frame inflates");
        if d.total_in() as usize == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

/// A JSON document of about `len` bytes (compressible, as real messages are).
fn json_of(len: usize) -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    let mut i = 0;
    while s.len() + 40 < len {
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item-{i}\",\"on\":true}},"
        ));
        i += 1;
    }
    s.pop();
    s.push_str("]}");
    s.into_bytes()
}

/// A compressible JSON text of exactly `len` (>= 10) bytes.
fn padded(len: usize) -> Vec<u8> {
    format!("{{\"pad\":\"{}\"}}", "x".repeat(len - 10)).into_bytes()
}

fn one_worker(tweak: impl FnOnce(&mut Config)) -> Server {
    server(1, tweak)
}

// ---- Negotiation -------------------------------------------------------------------------------

#[test]
fn negotiation_answers_the_first_acceptable_offer() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();
    // Chromium's offer: the exact line, no window parameter restated.
    assert_eq!(Client::open(a, "/echo", &[CHROMIUM]).extensions(), [AGREED]);
    // A window limit the client asks of the server is answered.
    assert_eq!(
        Client::open(
            a,
            "/echo",
            &["permessage-deflate; server_max_window_bits=10"]
        )
        .extensions(),
        [format!("{AGREED}; server_max_window_bits=10")]
    );
    // An offer this server must decline, then one it can take: the second, in one header...
    assert_eq!(
        Client::open(
            a,
            "/echo",
            &["permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=12"]
        )
        .extensions(),
        [format!("{AGREED}; server_max_window_bits=12")]
    );
    // ...or in the next header, after an unknown extension and an unknown parameter.
    assert_eq!(
        Client::open(
            a,
            "/echo",
            &[
                "x-webkit-deflate-frame, permessage-deflate; mystery",
                "permessage-deflate; client_max_window_bits=15; server_no_context_takeover",
            ]
        )
        .extensions(),
        [AGREED]
    );
    assert_eq!(total(&srv, "ws_deflate_agreed"), 4);
    // Nothing acceptable, or not an extension list: a 101 without the extension.
    for junk in [
        "permessage-deflate; =",
        "@@@ garbage ;;; \"",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    ] {
        let c = Client::open(a, "/echo", &[junk]);
        assert!(c.extensions().is_empty(), "{junk}: {}", c.head);
    }
    // No offer, no extension.
    assert!(Client::open(a, "/echo", &[]).extensions().is_empty());
    assert_eq!(total(&srv, "ws_deflate_agreed"), 4);
}

#[test]
fn deflate_off_declines_every_offer() {
    let srv = one_worker(|c| c.deflate = OnOff::Off);
    let a = srv.local_addr();
    for path in ["/echo", "/sub/off"] {
        let mut c = Client::open(a, path, &[CHROMIUM]);
        assert!(c.extensions().is_empty(), "{}", c.head);
        if path == "/echo" {
            // And so RSV1 is a protocol error on it.
            c.send_deflated(OP_TEXT, b"hello");
            assert_eq!(c.close_code(), 1002);
        }
    }
    assert_eq!(total(&srv, "ws_deflate_agreed"), 0);
    assert_eq!(total(&srv, "ws_protocol_errors"), 1);
}

#[test]
fn every_websocket_endpoint_agrees() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();
    let paths = [
        "/echo",
        "/sub/everywhere",
        "/sub/everywhere?envelope=1",
        "/cometd",
        "/socket.io/?EIO=4&transport=websocket",
    ];
    for path in paths {
        let c = Client::open(a, path, &[CHROMIUM]);
        assert_eq!(c.extensions(), [AGREED], "{path}");
    }
    assert_eq!(total(&srv, "ws_deflate_agreed"), paths.len() as u64);
}

// ---- Fan-out -----------------------------------------------------------------------------------

#[test]
fn fanout_sends_compressed_frames_only_to_those_that_agreed() {
    // Two workers: the subscribers and the publisher may land on either.
    let srv = server(2, |_| {});
    let a = srv.local_addr();
    let mut z = Client::open(a, "/sub/fan", &[CHROMIUM]);
    let mut plain = Client::open(a, "/sub/fan", &[]);
    let mut z_env = Client::open(a, "/sub/fan?envelope=1", &[CHROMIUM]);
    let mut plain_env = Client::open(a, "/sub/fan?envelope=1", &[]);
    assert_eq!(z.extensions(), [AGREED]);
    assert!(plain.extensions().is_empty());
    let mut p = Publisher::new(a);

    let big = json_of(2000);
    assert!((1900..=2000).contains(&big.len()));
    assert_eq!(p.publish("fan", &big).0, 200);
    let f = z.data_frame();
    assert_eq!(f.b0, FIN | RSV1 | OP_TEXT);
    assert!(f.payload.len() < big.len() / 2, "{}", f.payload.len());
    assert_eq!(f.data(), big, "inflates to exactly the message");
    let f = plain.data_frame();
    assert_eq!(f.b0, FIN | OP_TEXT);
    assert_eq!(f.payload, big);
    // With the envelope: the envelope is what is compressed.
    let f = z_env.data_frame();
    assert_eq!(f.b0, FIN | RSV1 | OP_TEXT);
    let env: Value = serde_json::from_slice(&f.data()).unwrap();
    assert_eq!(env["data"].as_str().unwrap().as_bytes(), big);
    let f = plain_env.data_frame();
    assert_eq!(f.b0, FIN | OP_TEXT);
    assert_eq!(serde_json::from_slice::<Value>(&f.payload).unwrap(), env);
    assert_eq!(total(&srv, "ws_deflated_out"), 2);

    // Under --deflate-min-bytes (256): plain for everyone, envelope included.
    let small = json_of(150);
    assert_eq!(p.publish("fan", &small).0, 200);
    for c in [&mut z, &mut plain] {
        let f = c.data_frame();
        assert_eq!(f.b0, FIN | OP_TEXT);
        assert_eq!(f.payload, small);
    }
    for c in [&mut z_env, &mut plain_env] {
        let f = c.data_frame();
        assert_eq!(f.b0, FIN | OP_TEXT);
        assert!(f.payload.len() < 256);
        let env: Value = serde_json::from_slice(&f.payload).unwrap();
        assert_eq!(env["data"].as_str().unwrap().as_bytes(), small);
    }
    assert_eq!(total(&srv, "ws_deflated_out"), 2);
    // The boundary is the payload's length, not the frame's: 255 bytes (257 with the header)
    // plain, 256 compressed.
    for (len, compressed) in [(255, false), (256, true)] {
        let m = padded(len);
        assert_eq!(p.publish("fan", &m).0, 200);
        let f = z.data_frame();
        assert_eq!(f.compressed(), compressed, "{len} bytes");
        assert_eq!(f.data(), m);
        assert_eq!(plain.data_frame().payload, m);
        z_env.data_frame();
        plain_env.data_frame();
    }
    // (The envelopes of both are over 256 bytes: compressed for z_env.)
    assert_eq!(total(&srv, "ws_deflated_out"), 5);

    // Binary-looking but compressible text well over the minimum, to several subscribers that
    // agreed: still one frame each, the same bytes.
    let mut z2 = Client::open(a, "/sub/fan", &[CHROMIUM]);
    let text = "a".repeat(5000);
    assert_eq!(p.publish("fan", text.as_bytes()).0, 200);
    let (f1, f2) = (z.data_frame(), z2.data_frame());
    assert_eq!(f1.b0, FIN | RSV1 | OP_TEXT);
    assert_eq!(f1.payload, f2.payload, "the same compressed frame for both");
    assert_eq!(f1.data(), text.as_bytes());
    assert_eq!(plain.data_frame().payload, text.as_bytes());
    assert!(z_env.data_frame().compressed());
    assert!(!plain_env.data_frame().compressed());
    assert_eq!(total(&srv, "ws_deflated_out"), 8);
}

#[test]
fn a_server_window_limit_sends_longer_messages_plain() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();
    let mut c = Client::open(
        a,
        "/sub/win",
        &["permessage-deflate; server_max_window_bits=9"],
    );
    assert_eq!(
        c.extensions(),
        [format!("{AGREED}; server_max_window_bits=9")]
    );
    let mut p = Publisher::new(a);
    let big = json_of(2000);
    assert_eq!(p.publish("win", &big).0, 200);
    let f = c.data_frame();
    assert_eq!(f.b0, FIN | OP_TEXT, "2 KB > 2^9: plain");
    assert_eq!(f.payload, big);
    let medium = json_of(400);
    assert_eq!(p.publish("win", &medium).0, 200);
    let f = c.data_frame();
    assert_eq!(f.b0, FIN | RSV1 | OP_TEXT, "400 B <= 2^9: compressed");
    assert_eq!(f.data(), medium);
    // Near the limit: 500 bytes compressed, 513 (past 2^9) plain.
    for (len, compressed) in [(500, true), (513, false)] {
        let m = padded(len);
        assert_eq!(m.len(), len);
        assert_eq!(p.publish("win", &m).0, 200);
        let f = c.data_frame();
        assert_eq!(f.compressed(), compressed, "{len} bytes");
        assert_eq!(f.data(), m);
    }
    assert_eq!(total(&srv, "ws_deflated_out"), 2);
}

// ---- Echo: compressed messages from the client -------------------------------------------------

#[test]
fn echo_inflates_client_messages_and_compresses_the_reply() {
    let srv = one_worker(|_| {});
    let mut c = Client::open(srv.local_addr(), "/echo", &[CHROMIUM]);

    // One frame, compressed; the echo (>= 256 bytes) comes back compressed.
    let msg = json_of(3000);
    c.send_deflated(OP_TEXT, &msg);
    let f = c.data_frame();
    assert_eq!(f.b0, FIN | RSV1 | OP_TEXT);
    assert_eq!(f.data(), msg);
    assert_eq!(total(&srv, "ws_deflated_in"), 1);
    assert_eq!(total(&srv, "ws_deflated_out"), 1);

    // The same compressed message over four frames, RSV1 on the first only, a ping among them:
    // the pong first, then the echo.
    let z = deflate(&msg);
    let cuts = [0, z.len() / 4, z.len() / 2, 3 * z.len() / 4, z.len()];
    let mut bytes = Vec::new();
    for (i, w) in cuts.windows(2).enumerate() {
        let b0 = match i {
            0 => RSV1 | OP_TEXT,
            3 => FIN | OP_CONT,
            _ => OP_CONT,
        };
        bytes.extend(raw_frame(b0, &z[w[0]..w[1]]));
        if i == 1 {
            bytes.extend(raw_frame(FIN | OP_PING, b"mid"));
        }
    }
    c.s.write_all(&bytes).unwrap();
    let pong = c.frame();
    assert_eq!((pong.b0, &pong.payload[..]), (FIN | OP_PONG, &b"mid"[..]));
    let f = c.data_frame();
    assert_eq!(f.b0, FIN | RSV1 | OP_TEXT);
    assert_eq!(f.data(), msg);

    // The fragments written one at a time, too.
    for (i, w) in cuts.windows(2).enumerate() {
        let b0 = match i {
            0 => RSV1 | OP_BINARY,
            3 => FIN | OP_CONT,
            _ => OP_CONT,
        };
        c.send(b0, &z[w[0]..w[1]]);
    }
    let f = c.data_frame();
    assert_eq!(f.b0, FIN | RSV1 | OP_BINARY);
    assert_eq!(f.data(), msg);

    // Uncompressed messages on the same connection: a long one is echoed compressed, a short
    // one plain.
    c.send(FIN | OP_TEXT, &msg);
    let f = c.data_frame();
    assert_eq!(f.b0, FIN | RSV1 | OP_TEXT);
    assert_eq!(f.data(), msg);
    c.send(FIN | OP_TEXT, b"short and plain");
    let f = c.data_frame();
    assert_eq!(
        (f.b0, &f.payload[..]),
        (FIN | OP_TEXT, &b"short and plain"[..])
    );

    // A short compressed message: inflated, echoed plain (under the minimum). And the empty
    // message (RFC 7692 §7.2.3.6: a single 00 byte).
    c.send_deflated(OP_TEXT, b"Hello");
    let f = c.data_frame();
    assert_eq!((f.b0, &f.payload[..]), (FIN | OP_TEXT, &b"Hello"[..]));
    c.send(FIN | RSV1 | OP_TEXT, &[0x00]);
    let f = c.data_frame();
    assert_eq!((f.b0, f.payload.len()), (FIN | OP_TEXT, 0));
    // A message ending with a final block (BFINAL, as some senders do).
    let mut fin = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(msg.len());
    fin.compress_vec(&msg, &mut out, FlushCompress::Finish)
        .unwrap();
    c.send(FIN | RSV1 | OP_TEXT, &out);
    assert_eq!(c.data_frame().data(), msg);

    assert_eq!(total(&srv, "ws_deflated_in"), 6);
    assert_eq!(total(&srv, "ws_deflated_out"), 5);
    assert_eq!(total(&srv, "ws_inflate_errors"), 0);
    assert_eq!(total(&srv, "ws_protocol_errors"), 0);
}

#[test]
fn bayeux_and_socketio_take_compressed_messages() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();

    let mut b = Client::open(a, "/cometd", &[CHROMIUM]);
    let hs = json!([{"channel":"/meta/handshake","version":"1.0",
        "supportedConnectionTypes":["websocket"],"id":"1"}]);
    b.send_deflated(OP_TEXT, hs.to_string().as_bytes());
    let r: Value = serde_json::from_slice(&b.data_frame().data()).unwrap();
    assert_eq!(r[0]["channel"], "/meta/handshake");
    assert_eq!(r[0]["successful"], true, "{r}");

    let mut s = Client::open(a, "/socket.io/?EIO=4&transport=websocket", &[CHROMIUM]);
    let open = s.data_frame().data();
    assert!(open.starts_with(b"0{\"sid\":"), "{open:?}");
    s.send_deflated(OP_TEXT, b"40");
    let connect = s.data_frame().data();
    assert!(connect.starts_with(b"40{\"sid\":"), "{connect:?}");
    assert_eq!(total(&srv, "ws_deflated_in"), 2);
    assert_eq!(total(&srv, "ws_inflate_errors"), 0);
}

/// A Bayeux WebSocket client that handshakes and subscribes to `/{channel}`, compressing
/// what it sends when `z`; returns it with its clientId after the subscribe reply.
fn bayeux_subscriber(a: SocketAddr, channel: &str, ext: &[&str]) -> Client {
    let mut b = Client::open(a, "/cometd", ext);
    let hs = json!([{"channel":"/meta/handshake","version":"1.0",
        "supportedConnectionTypes":["websocket"],"id":"1"}]);
    b.send(FIN | OP_TEXT, hs.to_string().as_bytes());
    let r: Value = serde_json::from_slice(&b.data_frame().data()).unwrap();
    let id = r[0]["clientId"].as_str().unwrap().to_string();
    let sub = json!([{"channel":"/meta/subscribe","subscription":format!("/{channel}"),
        "clientId":id,"id":"2"},
        {"channel":"/meta/connect","connectionType":"websocket","clientId":id,"id":"3",
        "advice":{"timeout":0}}]);
    b.send(FIN | OP_TEXT, sub.to_string().as_bytes());
    // The subscribe reply and the first connect's (answered at once: timeout 0), in one frame
    // or two.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let r: Value = serde_json::from_slice(&b.data_frame().data()).unwrap();
        for m in r.as_array().unwrap() {
            assert_eq!(m["successful"], true, "{m}");
            seen.push(m["channel"].as_str().unwrap().to_string());
        }
    }
    // The next connect is held: deliveries come with its reply or on their own.
    let c = json!([{"channel":"/meta/connect","connectionType":"websocket","clientId":id,
        "id":"4"}]);
    b.send(FIN | OP_TEXT, c.to_string().as_bytes());
    b
}

#[test]
fn bayeux_websocket_deliveries_are_compressed_once_and_stitched_per_client() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();
    let mut z1 = bayeux_subscriber(a, "bz", &[CHROMIUM]);
    let mut z2 = bayeux_subscriber(a, "bz", &[CHROMIUM]);
    let mut plain = bayeux_subscriber(a, "bz", &[]);
    assert_eq!(z1.extensions(), [AGREED]);
    let mut p = Publisher::new(a);
    let big = json_of(3000);
    assert_eq!(p.publish("bz", &big).0, 200);
    let want: Value = serde_json::from_slice(&big).unwrap();
    let mut frames = Vec::new();
    for c in [&mut z1, &mut z2, &mut plain] {
        // The delivery, with the held connect's reply in the same frame or in another.
        let mut got = None;
        while got.is_none() {
            let f = c.data_frame();
            let r: Value = serde_json::from_slice(&f.data()).unwrap();
            for m in r.as_array().unwrap() {
                if m["channel"] == "/bz" {
                    assert_eq!(m["data"], want);
                    got = Some(f.compressed());
                }
            }
            frames.push((f.compressed(), f.payload.len()));
        }
        frames.push((got.unwrap(), 0));
    }
    // Both clients that agreed got it compressed (a third of the bytes or less), the other
    // plain.
    let z: Vec<bool> = frames.iter().filter(|f| f.1 == 0).map(|f| f.0).collect();
    assert_eq!(z, [true, true, false], "{frames:?}");
    assert!(
        frames.iter().any(|&(c, n)| c && n > 0 && n < big.len() / 2),
        "{frames:?}"
    );
    assert!(total(&srv, "ws_deflated_out") >= 2);
}

// ---- Errors ------------------------------------------------------------------------------------

#[test]
fn rsv1_where_it_may_not_be_fails_with_1002() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();
    // Without the extension.
    let mut c = Client::open(a, "/echo", &[]);
    c.send_deflated(OP_TEXT, &json_of(500));
    assert_eq!(c.close_code(), 1002);
    // On a continuation frame.
    let mut c = Client::open(a, "/echo", &[CHROMIUM]);
    c.send(OP_TEXT, b"plain start");
    c.send(FIN | RSV1 | OP_CONT, &deflate(b" then compressed"));
    assert_eq!(c.close_code(), 1002);
    // On a ping, and on a close.
    for op in [OP_PING, OP_CLOSE] {
        let mut c = Client::open(a, "/echo", &[CHROMIUM]);
        c.send(FIN | RSV1 | op, &[0x03, 0xe8]);
        assert_eq!(c.close_code(), 1002, "opcode {op}");
    }
    // On a subscriber's message, without the extension (its payload is discarded: the frame
    // header alone decides).
    let mut c = Client::open(a, "/sub/r", &[]);
    c.send(FIN | RSV1 | OP_TEXT, &deflate(b"x"));
    assert_eq!(c.close_code(), 1002);
    assert_eq!(total(&srv, "ws_protocol_errors"), 5);
    assert_eq!(total(&srv, "ws_deflated_in"), 0);
}

#[test]
fn corrupt_compressed_data_fails_with_1007() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();
    let msg = json_of(1000);
    let z = deflate(&msg);
    // A reserved block type (BTYPE 11).
    let mut bad_type = Client::open(a, "/echo", &[CHROMIUM]);
    bad_type.send(FIN | RSV1 | OP_TEXT, &[0x07, 0x00]);
    // Cut short inside a block.
    let mut cut = Client::open(a, "/echo", &[CHROMIUM]);
    cut.send(FIN | RSV1 | OP_TEXT, &z[..z.len() / 2]);
    // Bytes after a final block.
    let mut fin = Compress::new(Compression::new(6), false);
    let mut trailing = Vec::with_capacity(msg.len());
    fin.compress_vec(&msg, &mut trailing, FlushCompress::Finish)
        .unwrap();
    trailing.extend_from_slice(b"junk");
    let mut after = Client::open(a, "/echo", &[CHROMIUM]);
    after.send(FIN | RSV1 | OP_TEXT, &trailing);
    // The same on Bayeux and Socket.IO connections.
    let mut b = Client::open(a, "/cometd", &[CHROMIUM]);
    b.send(FIN | RSV1 | OP_TEXT, &[0x07, 0x00]);
    let mut s = Client::open(a, "/socket.io/?EIO=4&transport=websocket", &[CHROMIUM]);
    s.data_frame();
    s.send(FIN | RSV1 | OP_TEXT, &[0x07, 0x00]);
    for (name, c) in [
        ("reserved block type", &mut bad_type),
        ("cut short", &mut cut),
        ("trailing garbage", &mut after),
        ("bayeux", &mut b),
        ("socket.io", &mut s),
    ] {
        assert_eq!(c.close_code(), 1007, "{name}");
    }
    assert_eq!(total(&srv, "ws_inflate_errors"), 5);
    assert_eq!(total(&srv, "ws_inflate_too_big"), 0);
}

/// Regression: a final block cut short used to be completed by the tail the inflater appends
/// (`00 00 ff ff`, whose zero bits read as a fixed-Huffman end of block), so the message was
/// accepted, often with a byte the client never sent ("Hello, world!" cut after 6 bytes came
/// back as "Hello(").
#[test]
fn a_final_block_cut_short_fails_with_1007() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();
    let msg = b"Hello, world! Hello, world!";
    let mut c = Compress::new(Compression::new(6), false);
    let mut fin = Vec::with_capacity(256);
    c.compress_vec(msg, &mut fin, FlushCompress::Finish)
        .unwrap();
    assert_eq!(fin[0] & 0x07, 0x03, "one final fixed-Huffman block");
    // Whole, it is fine.
    let mut e = Client::open(a, "/echo", &[CHROMIUM]);
    e.send(FIN | RSV1 | OP_TEXT, &fin);
    assert_eq!(e.data_frame().payload, msg);
    let mut cases: Vec<Vec<u8>> = (1..fin.len()).map(|cut| fin[..cut].to_vec()).collect();
    // Found by fuzz/fuzz_targets/deflate.rs: a final fixed block of ASCII with no end of block;
    // the tail's bits made one more byte and then the end of block.
    cases.push(b"3p%rmessagp%rmessage\x15deflatl;neei ct_maxits".to_vec());
    let mut n = 0;
    for (i, z) in cases.iter().enumerate() {
        let mut e = Client::open(a, "/echo", &[CHROMIUM]);
        e.send(FIN | RSV1 | OP_BINARY, z);
        let f = e.frame();
        assert_eq!(
            f.op(),
            OP_CLOSE,
            "case {i} {z:02x?} accepted as {:?}",
            f.data()
        );
        assert_eq!(f.close_code(), 1007, "case {i}");
        n += 1;
    }
    assert_eq!(total(&srv, "ws_inflate_errors"), n);
}

/// The worker's one inflater serves every connection: a back-reference before the start of a
/// message must never read what it inflated for another.
#[test]
fn a_reference_before_the_message_start_reads_nothing_of_another_message() {
    let srv = one_worker(|_| {});
    let a = srv.local_addr();
    let mut victim = Client::open(a, "/echo", &[CHROMIUM]);
    let secret = b"S3CR3T-".repeat(60);
    victim.send_deflated(OP_BINARY, &secret);
    assert_eq!(victim.data_frame().data(), secret);
    // One final fixed-Huffman block: a match of 258 bytes at distance 32,768 (the start of a
    // 32 KiB window that held the victim's message) as its first symbol, then the end of block.
    // And a match of 3 at distance 1, the smallest such reference.
    for z in [&[0x1b, 0xbd, 0xff, 0x1f, 0x00][..], &[0x03, 0x02, 0x00]] {
        let mut c = Client::open(a, "/echo", &[CHROMIUM]);
        c.send(FIN | RSV1 | OP_BINARY, z);
        let f = c.frame();
        if f.op() == OP_CLOSE {
            // What docs/api.md promises for invalid DEFLATE data (zlib refuses it: "invalid
            // distance too far back").
            assert_eq!(f.close_code(), 1007);
        } else {
            // What flate2's miniz_oxide backend does: the window is zeroed on reset, so the
            // reference reads zeros.
            let got = f.data();
            assert!(got.iter().all(|&b| b == 0), "{z:02x?} read {got:?}");
        }
    }
}

#[test]
fn inflated_text_must_be_utf8() {
    let srv = one_worker(|_| {});
    let mut c = Client::open(srv.local_addr(), "/echo", &[CHROMIUM]);
    let mut bad = json_of(600);
    bad[300] = 0xff;
    c.send_deflated(OP_TEXT, &bad);
    assert_eq!(c.close_code(), 1007);
    // As binary the same bytes are fine.
    let mut c = Client::open(srv.local_addr(), "/echo", &[CHROMIUM]);
    c.send_deflated(OP_BINARY, &bad);
    assert_eq!(c.data_frame().data(), bad);
    assert_eq!(total(&srv, "ws_inflate_errors"), 0);
    assert_eq!(total(&srv, "ws_protocol_errors"), 1);
}

#[test]
fn a_decompression_bomb_fails_with_1009_and_the_worker_carries_on() {
    let srv = one_worker(|c| c.max_message_bytes = 1 << 20);
    let a = srv.local_addr();
    // 10 MiB of zeros: 160 sync-flushed runs of 64 KiB each (a valid stream, each run standing
    // alone), cheaper to make than compressing 10 MiB at once.
    let run = deflate_with_tail(&[0u8; 64 * 1024]);
    let mut bomb = run.repeat(160);
    bomb.truncate(bomb.len() - 4);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    // The oracle agrees on what it is.
    assert_eq!(inflate(&bomb).len(), 10 << 20);

    let mut c = Client::open(a, "/echo", &[CHROMIUM]);
    c.send(FIN | RSV1 | OP_BINARY, &bomb);
    assert_eq!(c.close_code(), 1009);
    assert_eq!(total(&srv, "ws_inflate_too_big"), 1);
    assert_eq!(total(&srv, "ws_inflate_errors"), 0);

    // Exactly the limit inflates; one byte more does not.
    let at_limit = deflate(&vec![b'x'; 1 << 20]);
    let mut c = Client::open(a, "/echo", &[CHROMIUM]);
    c.send(FIN | RSV1 | OP_BINARY, &at_limit);
    let f = c.data_frame();
    assert_eq!(f.data().len(), 1 << 20);
    let mut c = Client::open(a, "/echo", &[CHROMIUM]);
    c.send_deflated(OP_BINARY, &vec![b'x'; (1 << 20) + 1]);
    assert_eq!(c.close_code(), 1009);
    assert_eq!(total(&srv, "ws_inflate_too_big"), 2);
    // The compressed bytes count too: a frame announcing more than the limit is refused from
    // its header, before anything is inflated.
    let mut c = Client::open(a, "/echo", &[CHROMIUM]);
    let mut head = vec![FIN | RSV1 | OP_BINARY, 0x80 | 127];
    head.extend_from_slice(&((1u64 << 20) + 1).to_be_bytes());
    head.extend_from_slice(&MASK);
    c.s.write_all(&head).unwrap();
    assert_eq!(c.close_code(), 1009);
    assert_eq!(total(&srv, "ws_too_big"), 1);
    assert_eq!(total(&srv, "ws_inflate_too_big"), 2);

    // The same (only) worker still serves everyone, compressed or not.
    let mut other = Client::open(a, "/echo", &[CHROMIUM]);
    let msg = json_of(2000);
    other.send_deflated(OP_TEXT, &msg);
    assert_eq!(other.data_frame().data(), msg);
    let mut plain = Client::open(a, "/echo", &[]);
    plain.send(FIN | OP_TEXT, b"still here");
    assert_eq!(plain.data_frame().payload, b"still here");
}
