//! `flood --transport socketio` against a scripted Socket.IO server in this test (websocket and
//! polling): the requests flood sends, in order (the handshake, the CONNECT with the channel and
//! the token, pongs, the polling `sid`); events counted with their first argument as the
//! payload (a recovery offset after it ignored, other events and noops ignored); several packets
//! in one polling response; a ping answered `3`; a `gap` event counted as a gap reported by the
//! server; a `connect_error` counted as a `socketio` error. The server is scripted so that every case happens on every connection,
//! deterministically.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::Value;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Script {
    /// Accepts the CONNECT, pings, sends [`MESSAGES`] events, then holds.
    Deliver,
    /// Refuses the CONNECT: `44{"message":…}`.
    Refuse,
}

const MESSAGES: u32 = 4;
const CONNS: usize = 20;

/// What each connection sent, in order: (connection number, request line or packet).
type Log = Arc<Mutex<Vec<(usize, String)>>>;

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

/// An event carrying flood's payload for message `i`, with a recovery offset after it.
fn event(i: u32) -> String {
    format!(r#"42["message","{i} {} ....","offset-{i}"]"#, now_ns())
}

struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
    n: usize,
    log: Log,
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

    fn log(&self, what: String) {
        self.log.lock().unwrap().push((self.n, what));
    }

    /// The next request: its head and its body (by Content-Length).
    fn request(&mut self) -> io::Result<(String, String)> {
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
                let body = String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
                self.buf.drain(..end + 4 + len);
                let line = head.lines().next().unwrap_or("").to_string();
                self.log(format!("{line} {body}").trim_end().to_string());
                return Ok((head, body));
            }
            self.fill()?;
        }
    }

    /// A polling response carrying `packets`, joined by `\x1e`.
    fn answer(&mut self, packets: &[String]) -> io::Result<()> {
        let body = packets.join("\x1e");
        let r = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.s.write_all(r.as_bytes())
    }

    /// The next client text frame (unmasked), logged; pongs are skipped.
    fn frame(&mut self) -> io::Result<String> {
        loop {
            while self.buf.len() < 2 {
                self.fill()?;
            }
            let op = self.buf[0] & 0x0F;
            assert_eq!(self.buf[1] & 0x80, 0x80, "client frames are masked");
            let len = usize::from(self.buf[1] & 0x7F);
            assert!(len < 126, "short frames only here");
            while self.buf.len() < 6 + len {
                self.fill()?;
            }
            let key: [u8; 4] = self.buf[2..6].try_into().unwrap();
            let payload: Vec<u8> = self.buf[6..6 + len]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            self.buf.drain(..6 + len);
            match op {
                0x1 => {
                    let p = String::from_utf8(payload).unwrap();
                    self.log(p.clone());
                    return Ok(p);
                }
                0xA => continue,
                0x8 => return Err(io::ErrorKind::UnexpectedEof.into()),
                other => panic!("unexpected client opcode {other}"),
            }
        }
    }

    fn text(&mut self, p: &str) -> io::Result<()> {
        assert!(p.len() < 126);
        let mut f = vec![0x81, p.len() as u8];
        f.extend_from_slice(p.as_bytes());
        self.s.write_all(&f)
    }
}

fn open_packet(n: usize, upgrades: &str) -> String {
    format!(
        r#"0{{"sid":"s+{n}/x","upgrades":[{upgrades}],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
    )
}

fn serve_ws(p: &mut Peer, script: Script) -> io::Result<()> {
    let (head, _) = p.request()?;
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"));
    p.s.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )?;
    p.text(&open_packet(p.n, ""))?;
    p.frame()?; // the CONNECT
    if script == Script::Refuse {
        p.text(r#"44{"message":"not allowed"}"#)?;
        loop {
            p.frame()?;
        }
    }
    p.text(r#"40{"sid":"nsp-sid"}"#)?;
    p.text("2")?;
    p.frame()?; // the pong
    for i in 0..MESSAGES {
        p.text(&event(i))?;
        p.text(r#"42["other","1 1 ...."]"#)?;
        if i == 1 {
            p.text(r#"42["gap",{"missed":3}]"#)?;
        }
        p.text("6")?;
    }
    loop {
        p.frame()?;
    }
}

fn serve_polling(p: &mut Peer, script: Script) -> io::Result<()> {
    p.request()?; // the handshake
    p.answer(&[open_packet(p.n, r#""websocket""#)])?;
    p.request()?; // the POST of the CONNECT
    p.answer(&["ok".into()])?;
    p.request()?;
    if script == Script::Refuse {
        p.answer(&[r#"44{"message":"not allowed"}"#.into()])?;
        loop {
            p.request()?;
        }
    }
    p.answer(&[r#"40{"sid":"nsp-sid"}"#.into()])?;
    p.request()?;
    // Two events, a ping between them, in one response.
    p.answer(&[event(0), "2".into(), event(1)])?;
    p.request()?; // the pong
    p.answer(&["ok".into()])?;
    p.request()?;
    let rest: Vec<String> = (2..MESSAGES)
        .flat_map(|i| {
            [
                event(i),
                r#"42["other",1]"#.into(),
                r#"42["gap",{"missed":null}]"#.into(),
            ]
        })
        .collect();
    p.answer(&rest)?;
    loop {
        p.request()?; // held
    }
}

fn fake_server(ws: bool, script: Script) -> (SocketAddr, Log) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for (n, s) in l.incoming().enumerate() {
            let Ok(s) = s else { continue };
            let log = log2.clone();
            std::thread::spawn(move || {
                let mut p = Peer {
                    s,
                    buf: Vec::new(),
                    n,
                    log,
                };
                if ws {
                    serve_ws(&mut p, script)
                } else {
                    serve_polling(&mut p, script)
                }
            });
        }
    });
    (addr, log)
}

fn run_flood(addr: SocketAddr, ws: bool, tag: &str) -> Value {
    let dir: PathBuf = std::env::temp_dir().join(format!("flood-sio-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    let status = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", &format!("http://{addr}/sub/fake")])
        .args(["--transport", "socketio", "--socketio-transport"])
        .arg(if ws { "websocket" } else { "polling" })
        .args(["--token", "tk\"1"])
        .args([
            "--conns",
            &CONNS.to_string(),
            "--rate",
            "max",
            "--procs",
            "1",
        ])
        .args(["--duration", "1", "--server-pid"])
        .arg(std::process::id().to_string())
        .arg("--json")
        .arg(&out)
        .status()
        .unwrap();
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    // The exit status fails on errors and on gaps the server reported.
    assert!(!status.success(), "{r:#}");
    r
}

/// Per connection, what flood sent, in order.
fn sent(log: &Log) -> Vec<Vec<String>> {
    let log = log.lock().unwrap();
    let mut per = vec![Vec::new(); CONNS];
    for (n, s) in log.iter() {
        per[*n].push(s.clone());
    }
    per
}

const CONNECT: &str = r#"40{"channels":["fake"],"token":"tk\"1"}"#;

fn check_sent(log: &Log, ws: bool, refused: bool) {
    for (n, reqs) in sent(log).iter().enumerate() {
        let sid = format!("sid=s%2B{n}%2Fx");
        if ws {
            assert!(
                reqs[0].starts_with("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1"),
                "{reqs:?}"
            );
            assert_eq!(reqs[1], CONNECT);
            if !refused {
                assert_eq!(reqs[2..], ["3"], "{reqs:?}");
            }
        } else {
            let get = format!("GET /socket.io/?EIO=4&transport=polling&{sid} HTTP/1.1");
            let post = |body: &str| {
                format!("POST /socket.io/?EIO=4&transport=polling&{sid} HTTP/1.1 {body}")
            };
            assert_eq!(reqs[0], "GET /socket.io/?EIO=4&transport=polling HTTP/1.1");
            assert_eq!(reqs[1], post(CONNECT));
            assert_eq!(reqs[2], get);
            if refused {
                assert_eq!(reqs.len(), 3, "{reqs:?}");
            } else {
                assert_eq!(
                    reqs[3..],
                    [get.clone(), post("3"), get.clone(), get.clone()],
                    "{reqs:?}"
                );
            }
        }
    }
}

fn deliveries(ws: bool) {
    let (addr, log) = fake_server(ws, Script::Deliver);
    let r = run_flood(addr, ws, if ws { "dws" } else { "dpl" });
    assert_eq!(r["transport"], "socketio");
    assert_eq!(
        r["socketio_transport"],
        if ws { "websocket" } else { "polling" }
    );
    assert_eq!(r["conns_established"], CONNS, "{r:#}");
    let total = u64::from(MESSAGES) * CONNS as u64;
    assert_eq!(r["deliveries"], total, "{r:#}");
    assert_eq!(r["latency_us"]["count"], total);
    assert_eq!(r["foreign_frames"], 0);
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["reordered"], 0);
    // One `gap` event per connection over the WebSocket, one per message after the first two
    // over polling.
    let gaps = if ws { 1 } else { MESSAGES - 2 } as usize * CONNS;
    assert_eq!(r["gaps_reported"], gaps, "{r:#}");
    let errors = r["errors"].as_object().unwrap();
    assert!(errors.values().all(|v| v == 0), "errors: {errors:?}");
    check_sent(&log, ws, false);
}

fn refused(ws: bool) {
    let (addr, log) = fake_server(ws, Script::Refuse);
    let r = run_flood(addr, ws, if ws { "rws" } else { "rpl" });
    assert_eq!(r["errors"]["socketio"], CONNS, "{r:#}");
    assert_eq!(r["conns_established"], 0);
    assert_eq!(r["deliveries"], 0);
    check_sent(&log, ws, true);
}

#[test]
fn websocket_events_pings_and_the_connect() {
    deliveries(true);
}

#[test]
fn polling_events_batched_pings_posted_and_the_sid() {
    deliveries(false);
}

#[test]
fn websocket_connect_error_counted() {
    refused(true);
}

#[test]
fn polling_connect_error_counted() {
    refused(false);
}
