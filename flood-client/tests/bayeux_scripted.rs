//! `flood --transport bayeux` against a scripted Bayeux server in this test (long-polling and
//! websocket): the requests flood sends, in order, with the clientId it was given; deliveries
//! in their own frames and in connect replies; `ext.dropped` counted as a gap; a
//! `402::Unknown client` with `reconnect: handshake` counted as an error, never as silence.
//! The server is scripted so that every case happens on every connection, deterministically.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

/// What the server does with the first held `/meta/connect`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Answers it with [`MESSAGES`] messages and `ext.dropped: 1`, then holds the next one.
    Deliver,
    /// Answers it `402::Unknown client`, advice `reconnect: handshake`.
    Unknown,
}

const MESSAGES: u32 = 5;

/// Requests seen, per connection: (connection number, the message).
type Log = Arc<Mutex<Vec<(usize, Value)>>>;

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid, owned timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One connection of the scripted server.
struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
    ws: bool,
}

impl Peer {
    fn fill(&mut self) -> io::Result<()> {
        let mut b = [0u8; 4096];
        let n = self.s.read(&mut b)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&b[..n]);
        Ok(())
    }

    /// The next request head (and its body by Content-Length).
    fn request(&mut self) -> io::Result<(String, Vec<u8>)> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    self.fill()?;
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Ok((head, body));
            }
            self.fill()?;
        }
    }

    /// The next client text frame (unmasked); pongs are skipped.
    fn frame(&mut self) -> io::Result<Vec<u8>> {
        loop {
            while self.buf.len() < 2 {
                self.fill()?;
            }
            let op = self.buf[0] & 0x0F;
            let (at, len) = match self.buf[1] & 0x7F {
                126 => {
                    while self.buf.len() < 4 {
                        self.fill()?;
                    }
                    (
                        4,
                        usize::from(u16::from_be_bytes([self.buf[2], self.buf[3]])),
                    )
                }
                127 => panic!("no 64-bit frames here"),
                n => (2, usize::from(n)),
            };
            assert_eq!(self.buf[1] & 0x80, 0x80, "client frames are masked");
            while self.buf.len() < at + 4 + len {
                self.fill()?;
            }
            let key: [u8; 4] = self.buf[at..at + 4].try_into().unwrap();
            let payload: Vec<u8> = self.buf[at + 4..at + 4 + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            self.buf.drain(..at + 4 + len);
            match op {
                0x1 => return Ok(payload),
                0xA => continue,
                0x8 => return Err(io::ErrorKind::UnexpectedEof.into()),
                other => panic!("unexpected client opcode {other}"),
            }
        }
    }

    fn next(&mut self) -> io::Result<Value> {
        let body = if self.ws {
            self.frame()?
        } else {
            let (head, body) = self.request()?;
            assert!(head.starts_with("POST /cometd HTTP/1.1\r\n"), "{head}");
            body
        };
        Ok(serde_json::from_slice(&body).expect("flood sends JSON"))
    }

    fn send(&mut self, v: &Value) -> io::Result<()> {
        let body = v.to_string();
        if self.ws {
            self.raw_frame(0x1, body.as_bytes())
        } else {
            let r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            self.s.write_all(r.as_bytes())
        }
    }

    fn raw_frame(&mut self, op: u8, p: &[u8]) -> io::Result<()> {
        let mut f = vec![0x80 | op];
        if p.len() < 126 {
            f.push(p.len() as u8);
        } else {
            f.push(126);
            f.extend_from_slice(&(p.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(p);
        self.s.write_all(&f)
    }
}

/// Serves one connection by `script`, logging each request.
fn serve(n: usize, s: TcpStream, ws: bool, script: Script, log: Log) -> io::Result<()> {
    let mut p = Peer {
        s,
        buf: Vec::new(),
        ws,
    };
    if ws {
        let (head, _) = p.request()?;
        assert!(head.starts_with("GET /cometd HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));
        p.s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )?;
    }
    let client = format!("fake-client-{n}");
    let mut held = 0;
    loop {
        let v = p.next()?;
        let m = v[0].clone();
        log.lock().unwrap().push((n, m.clone()));
        let id = m["id"].clone();
        let channel = m["channel"].as_str().unwrap_or("").to_string();
        let reply = match channel.as_str() {
            "/meta/handshake" => json!([{"channel":"/meta/handshake","successful":true,"id":id,
                "clientId":client,"version":"1.0",
                "supportedConnectionTypes":["long-polling","websocket"],
                "advice":{"reconnect":"retry","interval":0,"timeout":30000}}]),
            "/meta/subscribe" => json!([{"channel":"/meta/subscribe","successful":true,"id":id,
                "subscription":m["subscription"]}]),
            "/meta/connect" if m["advice"]["timeout"] == 0 => {
                json!([{"channel":"/meta/connect","successful":true,"id":id}])
            }
            "/meta/connect" => {
                held += 1;
                if held > 1 {
                    continue; // held until flood goes away
                }
                if script == Script::Unknown {
                    json!([{"channel":"/meta/connect","successful":false,"id":id,
                        "error":"402::Unknown client",
                        "advice":{"reconnect":"handshake","interval":0}}])
                } else {
                    let msgs: Vec<Value> = (0..MESSAGES)
                        .map(|i| {
                            json!({"channel":"/fake","data":format!("{i} {} ....", now_ns()),
                                "id":format!("{}", 100 + i)})
                        })
                        .collect();
                    if ws {
                        // A ping, deliveries in frames of their own, then the connect reply.
                        p.raw_frame(0x9, b"ping")?;
                        for m in &msgs {
                            p.send(&json!([m]))?;
                        }
                        json!([{"channel":"/meta/connect","successful":true,"id":id,
                            "ext":{"dropped":1}}])
                    } else {
                        let mut all = msgs;
                        all.push(json!({"channel":"/meta/connect","successful":true,"id":id,
                            "ext":{"dropped":1}}));
                        Value::Array(all)
                    }
                }
            }
            _ => json!([{"channel":channel,"successful":false,"id":id,"error":"400::unexpected"}]),
        };
        p.send(&reply)?;
    }
}

/// Starts the scripted server; its address and the request log.
fn fake_server(ws: bool, script: Script) -> (SocketAddr, Log) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let Ok(s) = s else { continue };
            let log = log2.clone();
            std::thread::spawn(move || serve(n, s, ws, script, log));
        }
    });
    (addr, log)
}

const CONNS: usize = 20;

fn run_flood(addr: SocketAddr, ws: bool, tag: &str) -> (ExitStatus, Value) {
    let dir: PathBuf = std::env::temp_dir().join(format!("flood-bx-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    let status = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", &format!("http://{addr}/sub/fake")])
        .args(["--transport", "bayeux", "--bayeux-transport"])
        .arg(if ws { "websocket" } else { "long-polling" })
        .args([
            "--conns",
            &CONNS.to_string(),
            "--rate",
            "max",
            "--procs",
            "1",
        ])
        .args([
            "--duration",
            "1",
            "--server-pid",
            &std::process::id().to_string(),
        ])
        .arg("--json")
        .arg(&out)
        .status()
        .unwrap();
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (status, r)
}

/// Per connection, the requests in order: handshake (no clientId, our connection type),
/// subscribe to `/fake`, the first connect with `advice.timeout` 0, then held connects; every
/// request after the handshake with the clientId the server gave; ids increasing.
fn check_requests(log: &Log, ws: bool, connects_at_least: usize) {
    let log = log.lock().unwrap();
    let ty = if ws { "websocket" } else { "long-polling" };
    let conns: std::collections::BTreeSet<usize> = log.iter().map(|(n, _)| *n).collect();
    assert_eq!(conns.len(), CONNS);
    for n in conns {
        let reqs: Vec<&Value> = log
            .iter()
            .filter(|(m, _)| *m == n)
            .map(|(_, v)| v)
            .collect();
        assert!(reqs.len() >= 3 + connects_at_least, "{reqs:?}");
        assert_eq!(reqs[0]["channel"], "/meta/handshake");
        assert_eq!(reqs[0]["supportedConnectionTypes"], json!([ty]));
        assert!(reqs[0].get("clientId").is_none());
        assert_eq!(reqs[1]["channel"], "/meta/subscribe");
        assert_eq!(reqs[1]["subscription"], "/fake");
        assert_eq!(reqs[2]["channel"], "/meta/connect");
        assert_eq!(reqs[2]["advice"], json!({"timeout": 0}));
        for r in &reqs[3..] {
            assert_eq!(r["channel"], "/meta/connect");
            assert!(r.get("advice").is_none(), "{r}");
        }
        for r in &reqs[2..] {
            assert_eq!(r["connectionType"], ty);
        }
        let client = format!("fake-client-{n}");
        for r in &reqs[1..] {
            assert_eq!(r["clientId"], client.as_str());
        }
        let ids: Vec<u64> = reqs
            .iter()
            .map(|r| r["id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    }
}

fn deliveries_and_dropped(ws: bool) {
    let (addr, log) = fake_server(ws, Script::Deliver);
    let (status, r) = run_flood(addr, ws, if ws { "dws" } else { "dlp" });
    // The server reported drops: the run fails, and says why.
    assert!(!status.success(), "{r:#}");
    assert_eq!(r["conns_established"], CONNS);
    assert_eq!(r["gaps_reported"], CONNS);
    let total = u64::from(MESSAGES) * CONNS as u64;
    assert_eq!(r["deliveries"], total);
    assert_eq!(r["latency_us"]["count"], total);
    assert_eq!(r["foreign_frames"], 0);
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["reordered"], 0);
    let errors = r["errors"].as_object().unwrap();
    assert!(errors.values().all(|v| v == 0), "errors: {errors:?}");
    // After the answered connect, flood connected again (and that one was held).
    check_requests(&log, ws, 2);
}

fn unknown_client_is_an_error(ws: bool) {
    let (addr, log) = fake_server(ws, Script::Unknown);
    let (status, r) = run_flood(addr, ws, if ws { "uws" } else { "ulp" });
    assert!(!status.success(), "{r:#}");
    assert_eq!(r["errors"]["bayeux"], CONNS, "{r:#}");
    assert_eq!(r["conns_established"], 0);
    assert_eq!(r["deliveries"], 0);
    check_requests(&log, ws, 1);
    // No handshake again: the loss is counted, not papered over.
    let log = log.lock().unwrap();
    let handshakes = log
        .iter()
        .filter(|(_, v)| v["channel"] == "/meta/handshake")
        .count();
    assert_eq!(handshakes, CONNS);
}

#[test]
fn long_polling_deliveries_in_connect_replies_and_dropped_as_gaps() {
    deliveries_and_dropped(false);
}

#[test]
fn websocket_deliveries_in_frames_of_their_own_and_dropped_as_gaps() {
    deliveries_and_dropped(true);
}

#[test]
fn long_polling_unknown_client_counted_as_an_error() {
    unknown_client_is_an_error(false);
}

#[test]
fn websocket_unknown_client_counted_as_an_error() {
    unknown_client_is_an_error(true);
}
