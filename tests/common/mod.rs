//! Helpers for the integration tests: a server on 127.0.0.1:0, raw HTTP, tungstenite clients.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgecomet::{Config, Server};

pub mod bayeux;
pub mod redis;
use tungstenite::WebSocket;

pub type Ws = WebSocket<TcpStream>;

/// A server with `workers` workers on a free loopback port; `tweak` adjusts the config.
pub fn server(workers: usize, tweak: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config::defaults();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.workers = workers;
    cfg.ws_ping_interval = 0;
    tweak(&mut cfg);
    Server::start(cfg).expect("server starts")
}

/// A tungstenite WebSocket client on `path`.
pub fn ws(addr: SocketAddr, path: &str) -> Ws {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, resp) = tungstenite::client(format!("ws://{addr}{path}"), stream).expect("upgrade");
    assert_eq!(resp.status(), 101);
    ws
}

/// Reads the next text message (pongs and pings are handled by tungstenite).
pub fn recv_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("read") {
            tungstenite::Message::Text(t) => return t.to_string(),
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// Sends one raw request on a new connection and returns everything until the server closes
/// (or 5 s pass).
pub fn raw(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    read_to_close(&mut s)
}

pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read failed after {} bytes: {e}", out.len()),
        }
    }
}

/// The status code of a raw HTTP response.
pub fn status(resp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(resp);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// A keep-alive HTTP/1.1 client for publishing.
pub struct Publisher {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Publisher {
    pub fn new(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Publisher { s, buf: Vec::new() }
    }

    /// POSTs `body` to `/pub/{channel}`, returns (status, body).
    pub fn publish(&mut self, channel: &str, body: &[u8]) -> (u16, String) {
        let head = format!(
            "POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // One write: head and body in separate small writes would meet Nagle + delayed ACK.
        let mut req = head.into_bytes();
        req.extend_from_slice(body);
        self.s.write_all(&req).unwrap();
        self.response()
    }

    pub fn get(&mut self, path: &str) -> (u16, String) {
        let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        self.s.write_all(head.as_bytes()).unwrap();
        self.response()
    }

    /// Writes `bytes` as they are (pipelined requests); read the answers with `response`.
    #[allow(dead_code)]
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    pub fn response(&mut self) -> (u16, String) {
        let (head, body) = read_response(&mut self.s, &mut self.buf);
        (status(head.as_bytes()), body)
    }
}

/// Reads one `Content-Length`-framed response from `s` (`buf` keeps bytes read past it for the
/// next call); returns (head, body).
pub fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> (String, String) {
    let mut tmp = [0u8; 65536];
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= end + 4 + len {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                buf.drain(..end + 4 + len);
                return (head, body);
            }
        }
        let n = s.read(&mut tmp).expect("response");
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&tmp[..n]);
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A counter from the `total` object of `/stats`.
pub fn total(server: &Server, key: &str) -> u64 {
    counter(&server.stats_json(), "\"total\":", key)
}

/// A counter of one worker.
pub fn per_worker(server: &Server, worker: usize, key: &str) -> u64 {
    counter(
        &server.stats_json(),
        &format!("{{\"worker\":{worker},"),
        key,
    )
}

fn counter(json: &str, section: &str, key: &str) -> u64 {
    let at = json.find(section).expect("section") + section.len();
    let rest = &json[at..];
    let k = format!("\"{key}\":");
    let i = rest.find(&k).unwrap_or_else(|| panic!("no {key}")) + k.len();
    rest[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Waits until `cond` holds, at most `secs` seconds.
pub fn wait_until(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// The raw WebSocket upgrade request for `path`.
pub fn upgrade_request(path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Opens a raw subscriber: sends the upgrade, reads exactly the 101 head. Returns the stream.
pub fn raw_subscriber(addr: SocketAddr, path: &str, rcvbuf: Option<usize>) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n).unwrap();
    }
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&upgrade_request(path)).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed during handshake");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Splits raw server→client bytes into (opcode, payload) frames (server frames are unmasked).
pub fn frames(mut data: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let op = data[0] & 0x0F;
        let (len, at) = match data[1] & 0x7F {
            126 => (u16::from_be_bytes([data[2], data[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(data[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        if data.len() < at + len {
            break;
        }
        out.push((op, data[at..at + len].to_vec()));
        data = &data[at + len..];
    }
    out
}

/// Reads `n` messages of an enveloped WebSocket subscriber (`?envelope=1`) as (id, data); gap
/// frames (`{"gap":{..}}`) met on the way are returned apart.
pub fn ws_envelopes(w: &mut Ws, n: usize) -> (Vec<(u64, String)>, Vec<serde_json::Value>) {
    let mut msgs = Vec::new();
    let mut gaps = Vec::new();
    while msgs.len() < n {
        let v: serde_json::Value = serde_json::from_str(&recv_text(w)).unwrap();
        if let Some(g) = v.get("gap") {
            gaps.push(g.clone());
            continue;
        }
        let id = v["id"].as_str().unwrap().parse().unwrap();
        msgs.push((id, v["data"].as_str().unwrap().to_string()));
    }
    (msgs, gaps)
}

/// Runs `edgecomet ARGS` expecting it to refuse to start: its stderr, once it has exited
/// (within 10 s; one still running after that started, and fails the test).
pub fn refused(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgecomet"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("edgecomet {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!st.success(), "{err}");
    err
}
