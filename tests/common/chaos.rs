//! Helpers for `tests/chaos.rs`: real processes (redis-server, edgecomet, the `--processes`
//! launcher) killed on drop, a publisher that survives its connection dying, subscribers of
//! every transport that reconnect and resume with their cursor, and the checker that tells a
//! message delivered from one missing with a gap report, or missing silently.
//!
//! Included by `tests/chaos.rs` as a module of its own (`#[path]`), so the shared
//! `tests/common/mod.rs` is unchanged.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Polls `cond` every 10 ms until it holds or `secs` pass (as `common::wait_until`).
pub fn wait_for(secs: f64, mut cond: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

// Its own copy: tests/chaos.rs loads this file without `common` (tests/tls.rs loads both).
#[allow(clippy::duplicate_mod)]
#[path = "ports.rs"]
mod ports;
pub use ports::free_port;

// ---- processes ------------------------------------------------------------------------------

/// A redis-server of the test's own on a fixed loopback port; SIGKILLed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            child: None,
            port: free_port(),
        };
        r.restart();
        r
    }

    /// Starts it (again) on its port; waits until it answers PING.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test.sh installs it)");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_for(10.0, || resp_command(port, &["PING"])
                .is_ok_and(|r| r == "+PONG")),
            "redis-server did not start on {port}"
        );
    }

    /// SIGKILL, and reaped.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `CLIENT PAUSE ms ALL`: Redis answers nobody (other than this connection's OK) for `ms`.
    pub fn pause_all(&self, ms: u64) {
        let r = resp_command(self.port, &["CLIENT", "PAUSE", &ms.to_string(), "ALL"]).unwrap();
        assert_eq!(r, "+OK");
    }

    /// `PUBSUB NUMSUB channel`: how many connections (processes) are subscribed to it.
    pub fn numsub(&self, channel: &str) -> u64 {
        // Reply: *2 $len channel :N
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&resp_encode(&["PUBSUB", "NUMSUB", channel]))
            .unwrap();
        let mut buf = Vec::new();
        let mut tmp = [0u8; 512];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(line) = text.lines().find(|l| l.starts_with(':'))
                && text.ends_with("\r\n")
            {
                return line[1..].parse().unwrap();
            }
            let n = s.read(&mut tmp).unwrap();
            assert!(n > 0, "redis closed");
            buf.extend_from_slice(&tmp[..n]);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn resp_encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// Sends one command on a new connection and returns the first reply line (no CRLF).
fn resp_command(port: u16, args: &[&str]) -> io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(&resp_encode(args))?;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        line.push(b[0]);
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).to_string())
}

/// The edgecomet binary under test.
pub fn edgecomet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgecomet"))
}

/// One edgecomet process (no launcher) on its own port; SIGKILLed on drop.
pub struct Edge {
    child: Child,
    pub addr: SocketAddr,
}

impl Edge {
    /// `edgecomet --listen 127.0.0.1:FREE --workers 1 --ws-ping-interval 0 <args>`, once it
    /// accepts connections.
    pub fn start(args: &[&str]) -> Edge {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Self::start_cmd(edgecomet(), addr, args)
    }

    pub fn start_cmd(mut cmd: Command, addr: SocketAddr, args: &[&str]) -> Edge {
        let child = cmd
            .args(["--listen", &addr.to_string(), "--ws-ping-interval", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("edgecomet binary");
        let mut e = Edge { child, addr };
        assert!(
            wait_for(10.0, || Http::new(addr).stats().is_some()),
            "edgecomet did not start on {addr}"
        );
        assert!(e.child.try_wait().unwrap().is_none(), "edgecomet exited");
        e
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `edgecomet --processes P` (the launcher); on drop its processes and it are SIGKILLed.
pub struct Launcher {
    child: Child,
    pub addr: SocketAddr,
    /// Every line the launcher wrote to stderr so far, with when it was read.
    pub log: Arc<Mutex<Vec<(Instant, String)>>>,
    /// Its processes' pids (from `/stats`), SIGKILLed on drop while still its children.
    pub pids: Vec<u32>,
}

impl Launcher {
    pub fn start(processes: usize, args: &[&str]) -> Launcher {
        let mut child = edgecomet()
            .args(["--processes", &processes.to_string(), "--workers", "1"])
            .args(["--listen", "127.0.0.1:0", "--ws-ping-interval", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgecomet binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let err = child.stderr.take().unwrap();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in io::BufRead::lines(io::BufReader::new(err)).map_while(Result::ok) {
                    log.lock().unwrap().push((Instant::now(), line));
                }
            });
        }
        let mut l = Launcher {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            log,
            pids: Vec::new(),
        };
        let want = format!("{processes} processes listening on ");
        let mut addr = None;
        assert!(
            wait_for(30.0, || {
                addr = l.log_line(&want).map(|(_, line)| {
                    line.split(" on ")
                        .nth(1)
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap()
                        .parse()
                        .unwrap()
                });
                addr.is_some()
            }),
            "launcher did not start: {:?}",
            l.log.lock().unwrap()
        );
        l.addr = addr.unwrap();
        let mut s = Value::Null;
        assert!(
            wait_for(10.0, || {
                s = Http::new(l.addr).stats().unwrap_or(Value::Null);
                s["processes"]["reporting"] == processes
            }),
            "no sums in /stats: {s}"
        );
        l.pids = pids_of(&s);
        assert_eq!(l.pids.len(), processes, "{s}");
        l
    }

    /// The first stderr line containing `needle`, and when it was read.
    pub fn log_line(&self, needle: &str) -> Option<(Instant, String)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(needle))
            .cloned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

pub fn pids_of(stats: &Value) -> Vec<u32> {
    stats["processes"]["pids"]
        .as_array()
        .map(|a| a.iter().map(|p| p.as_u64().unwrap() as u32).collect())
        .unwrap_or_default()
}

/// The parent pid of `pid` (field 4 of /proc/PID/stat), if it is alive.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok()
}

/// User + system CPU seconds of `pid` so far (/proc/PID/stat fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / tck
}

pub fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a pid this test started (checked by the callers).
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        let me = self.child.id();
        for &p in &self.pids {
            if parent_of(p) == Some(me) {
                sigkill(p);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- HTTP: publishing and /stats --------------------------------------------------------------

/// What the answer to a publish says about the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pub {
    /// 2xx: published; with `--broker`, `broker_receivers` (processes it reached).
    Accepted(Option<u64>),
    /// 503 "nothing was sent": must never be delivered.
    Refused,
    /// A 504, a 503 "may or may not", a broken connection: delivered or not, either is right.
    Maybe(String),
}

impl Pub {
    pub fn accepted(&self) -> bool {
        matches!(self, Pub::Accepted(_))
    }
}

/// A keep-alive HTTP/1.1 client that reconnects when its connection fails (to the same
/// address: with processes sharing a port, the kernel picks a live one).
pub struct Http {
    addr: SocketAddr,
    s: Option<TcpStream>,
    buf: Vec<u8>,
    timeout: Duration,
    /// New connections made after the first.
    pub reconnects: u64,
    made: u64,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            addr,
            s: None,
            buf: Vec::new(),
            timeout: Duration::from_secs(5),
            reconnects: 0,
            made: 0,
        }
    }

    pub fn with_timeout(mut self, t: Duration) -> Http {
        self.timeout = t;
        self
    }

    /// Drops the connection: the next request opens a new one.
    pub fn reset(&mut self) {
        self.s = None;
        self.buf.clear();
    }

    /// Is a connection open (made and not failed)?
    pub fn connected(&self) -> bool {
        self.s.is_some()
    }

    /// Opens the connection now (before a descriptor shortage, say).
    pub fn connect(&mut self) -> io::Result<()> {
        if self.s.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.made += 1;
            if self.made > 1 {
                self.reconnects += 1;
            }
            self.s = Some(s);
            self.buf.clear();
        }
        Ok(())
    }

    /// One request, one answer: (status, head, body). Any failure drops the connection.
    pub fn request(&mut self, req: &[u8]) -> io::Result<(u16, String, String)> {
        let r = self.request_inner(req);
        match &r {
            Ok((_, head, _)) if !head.to_ascii_lowercase().contains("connection: close") => {}
            _ => self.reset(),
        }
        r
    }

    fn request_inner(&mut self, req: &[u8]) -> io::Result<(u16, String, String)> {
        self.connect()?;
        let s = self.s.as_mut().unwrap();
        s.write_all(req)?;
        let mut tmp = [0u8; 16384];
        loop {
            if let Some((status, head, body, used)) = parse_response(&self.buf) {
                self.buf.drain(..used);
                return Ok((status, head, body));
            }
            let n = s.read(&mut tmp)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// `POST /pub/{channel}`: what the answer says, and how long it took.
    pub fn publish(&mut self, channel: &str, body: &str) -> (Pub, Duration) {
        let mut req = format!(
            "POST /pub/{channel} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body.as_bytes());
        let t = Instant::now();
        let out = match self.request(&req) {
            Ok((200..=299, _, b)) => Pub::Accepted(
                serde_json::from_str::<Value>(&b)
                    .ok()
                    .and_then(|v| v["broker_receivers"].as_u64()),
            ),
            Ok((503, _, b)) if b.contains("nothing was sent") => Pub::Refused,
            Ok((st, _, b)) => Pub::Maybe(format!("{st} {}", b.trim())),
            Err(e) => Pub::Maybe(format!("connection: {e}")),
        };
        (out, t.elapsed())
    }

    /// `GET /stats`, parsed; `None` if it failed.
    pub fn stats(&mut self) -> Option<Value> {
        match self.request(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n") {
            Ok((200, _, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }
}

/// One complete `Content-Length` response at the start of `buf`: (status, head, body, bytes).
pub fn parse_response(buf: &[u8]) -> Option<(u16, String, String, usize)> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    if buf.len() < end + 4 + len {
        return None;
    }
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
    Some((status, head, body, end + 4 + len))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A key of `/stats` `hub` (or `total`) of one process, summed with `other`s.
pub fn stat(v: &Value, section: &str, key: &str) -> u64 {
    v[section][key].as_u64().unwrap_or(0)
}

// ---- payloads ---------------------------------------------------------------------------------

/// Warm-up messages (published until every subscriber has one) are `w`; the load's are
/// `{seq}:{channel}`.
pub fn payload(seq: u64, channel: &str) -> String {
    format!("{seq}:{channel}")
}

pub const WARM: &str = "w";

/// `None` for a warm-up message, else the sequence number (checked against the channel).
fn parse_payload(p: &str, channel: &str) -> Result<Option<u64>, String> {
    if p == WARM {
        return Ok(None);
    }
    let (seq, ch) = p
        .split_once(':')
        .ok_or_else(|| format!("payload {p:?} is not seq:channel"))?;
    if ch != channel {
        return Err(format!("payload {p:?} delivered on channel {channel}"));
    }
    seq.parse()
        .map(Some)
        .map_err(|_| format!("payload {p:?} has no sequence number"))
}

// ---- subscribers ------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Server-Sent Events; resumes with `Last-Event-ID`.
    Sse,
    /// Chunked NDJSON; resumes with `?cursor=`.
    Stream,
    /// JSON long-poll with `?cursor=` on one keep-alive connection.
    Poll,
    /// Plain WebSocket: payloads only, no ids, cannot resume (a cut ends it).
    Ws,
    /// `?envelope=1` WebSocket: `{"id","data"}` / `{"gap":…}` frames; resumes with `?cursor=`.
    WsEnvelope,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Stream => "stream",
            Kind::Poll => "poll",
            Kind::Ws => "ws",
            Kind::WsEnvelope => "ws-envelope",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Ev {
    /// A message: its id (none on plain WebSocket) and sequence number (none: warm-up).
    Msg { id: Option<u64>, seq: Option<u64> },
    /// A gap report: `missed` N, or unknown.
    Gap(Option<u64>),
    /// Connected again after a cut; `resumed`: with a cursor.
    Reconnected { resumed: bool, after: Duration },
    /// The connection ended (why).
    Cut(String),
}

/// What the subscriber threads share with the test.
pub struct Ctl {
    /// Subscribers that have received a warm-up message.
    pub ready: AtomicUsize,
    /// Per channel: the sequence number a subscriber must reach before it stops (`u64::MAX`
    /// while unknown).
    pub target: Vec<AtomicU64>,
    /// Stop all, whatever they have.
    pub stop: AtomicBool,
    /// Subscriber threads that have ended (for any reason).
    pub ended: AtomicUsize,
    /// Hard deadline: stop then.
    pub until: Mutex<Instant>,
}

impl Ctl {
    pub fn new(channels: usize, secs: u64) -> Arc<Ctl> {
        Arc::new(Ctl {
            ready: AtomicUsize::new(0),
            target: (0..channels).map(|_| AtomicU64::new(u64::MAX)).collect(),
            stop: AtomicBool::new(false),
            ended: AtomicUsize::new(0),
            until: Mutex::new(Instant::now() + Duration::from_secs(secs)),
        })
    }

    /// From now on, subscribers stop after `secs` at the latest.
    pub fn drain_within(&self, secs: u64) {
        *self.until.lock().unwrap() = Instant::now() + Duration::from_secs(secs);
    }

    fn finished(&self, ch: usize, max_seq: Option<u64>) -> bool {
        if self.stop.load(Ordering::Relaxed) || Instant::now() >= *self.until.lock().unwrap() {
            return true;
        }
        let t = self.target[ch].load(Ordering::Relaxed);
        t != u64::MAX && max_seq.is_some_and(|m| m >= t)
    }
}

/// One subscriber's record.
#[derive(Debug)]
pub struct SubLog {
    pub kind: Kind,
    pub ch: usize,
    pub channel: String,
    pub events: Vec<Ev>,
    /// Connections made (1 = never cut).
    pub connects: u32,
    pub resumes: u32,
    pub cuts: u32,
    /// A plain WebSocket that was cut: it ends there.
    pub ended_cut: bool,
    /// Something no client should see (a frame that is not an envelope, a bad payload…).
    pub fatal: Option<String>,
}

/// Starts a subscriber thread: `kind` on `channel` (number `ch`) at `addr`, until `ctl` says.
pub fn spawn_sub(
    kind: Kind,
    addr: SocketAddr,
    ch: usize,
    channel: &str,
    ctl: Arc<Ctl>,
) -> std::thread::JoinHandle<SubLog> {
    let channel = channel.to_string();
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || {
            let log = run_sub(kind, addr, ch, channel, ctl.clone());
            ctl.ended.fetch_add(1, Ordering::SeqCst);
            log
        })
        .unwrap()
}

fn run_sub(kind: Kind, addr: SocketAddr, ch: usize, channel: String, ctl: Arc<Ctl>) -> SubLog {
    let mut log = SubLog {
        kind,
        ch,
        channel,
        events: Vec::new(),
        connects: 0,
        resumes: 0,
        cuts: 0,
        ended_cut: false,
        fatal: None,
    };
    let mut cursor: Option<u64> = None;
    let mut max_seq: Option<u64> = None;
    let mut warm = false;
    let mut failures = 0u32;
    let mut cut_at: Option<Instant> = None;
    'outer: loop {
        if ctl.finished(ch, max_seq) {
            break;
        }
        let mut live = match Live::open(kind, addr, &log.channel, cursor) {
            Ok(l) => l,
            Err(e) => {
                failures += 1;
                if failures > 60 {
                    log.fatal = Some(format!("cannot connect: {e}"));
                    break;
                }
                // Back-off: 10 ms doubling to 320 ms.
                std::thread::sleep(Duration::from_millis(10 << failures.min(5)));
                continue;
            }
        };
        failures = 0;
        log.connects += 1;
        if let Some(at) = cut_at.take() {
            let resumed = cursor.is_some();
            log.resumes += u32::from(resumed);
            log.events.push(Ev::Reconnected {
                resumed,
                after: at.elapsed(),
            });
        }
        loop {
            if ctl.finished(ch, max_seq) {
                break 'outer;
            }
            let before = log.events.len();
            let r = live.step(&log.channel, &mut log.events, &mut cursor);
            for ev in &log.events[before..] {
                if let Ev::Msg { seq, .. } = ev {
                    match seq {
                        None if !warm => {
                            warm = true;
                            ctl.ready.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(s) => max_seq = Some(max_seq.map_or(*s, |m| m.max(*s))),
                        None => {}
                    }
                }
            }
            match r {
                Ok(()) => {}
                Err(Stop::Cut(why)) => {
                    log.cuts += 1;
                    log.events.push(Ev::Cut(why));
                    cut_at = Some(Instant::now());
                    break;
                }
                Err(Stop::Fatal(why)) => {
                    log.fatal = Some(why);
                    break 'outer;
                }
            }
        }
        if kind == Kind::Ws {
            log.ended_cut = true;
            break;
        }
    }
    log
}

enum Stop {
    /// The connection ended: reconnect.
    Cut(String),
    /// Give up: the server said something no client should see.
    Fatal(String),
}

enum Live {
    Sse {
        s: TcpStream,
        buf: Vec<u8>,
    },
    Stream {
        s: TcpStream,
        raw: Vec<u8>,
        lines: Vec<u8>,
    },
    Poll {
        s: TcpStream,
        buf: Vec<u8>,
        waiting: bool,
    },
    Ws {
        ws: Box<tungstenite::WebSocket<TcpStream>>,
        envelope: bool,
    },
}

const STEP: Duration = Duration::from_millis(200);

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Live {
    fn open(
        kind: Kind,
        addr: SocketAddr,
        channel: &str,
        cursor: Option<u64>,
    ) -> Result<Live, String> {
        let s =
            TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let live = match kind {
            Kind::Sse => {
                let id = cursor.map_or(String::new(), |c| format!("Last-Event-ID: {c}\r\n"));
                let req = format!(
                    "GET /sub/{channel} HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n{id}\r\n"
                );
                let (s, buf) = stream_head(s, &req)?;
                Live::Sse { s, buf }
            }
            Kind::Stream => {
                let q = cursor.map_or(String::new(), |c| format!("&cursor={c}"));
                let req = format!(
                    "GET /sub/{channel}?transport=stream{q} HTTP/1.1\r\nHost: t\r\n\
                     Accept: application/x-ndjson\r\n\r\n"
                );
                let (s, raw) = stream_head(s, &req)?;
                Live::Stream {
                    s,
                    raw,
                    lines: Vec::new(),
                }
            }
            Kind::Poll => Live::Poll {
                s,
                buf: Vec::new(),
                waiting: false,
            },
            Kind::Ws | Kind::WsEnvelope => {
                let envelope = kind == Kind::WsEnvelope;
                let mut q = String::new();
                if envelope {
                    q.push_str("?envelope=1");
                    if let Some(c) = cursor {
                        q.push_str(&format!("&cursor={c}"));
                    }
                }
                let (ws, resp) = tungstenite::client(format!("ws://{addr}/sub/{channel}{q}"), s)
                    .map_err(|e| format!("upgrade: {e}"))?;
                if resp.status() != 101 {
                    return Err(format!("upgrade answered {}", resp.status()));
                }
                Live::Ws {
                    ws: Box::new(ws),
                    envelope,
                }
            }
        };
        let s = match &live {
            Live::Sse { s, .. } | Live::Stream { s, .. } | Live::Poll { s, .. } => s,
            Live::Ws { ws, .. } => ws.get_ref(),
        };
        s.set_read_timeout(Some(STEP)).map_err(|e| e.to_string())?;
        Ok(live)
    }

    /// Reads what arrived within one step and appends the events it completes.
    fn step(
        &mut self,
        channel: &str,
        out: &mut Vec<Ev>,
        cursor: &mut Option<u64>,
    ) -> Result<(), Stop> {
        let mut tmp = [0u8; 65536];
        match self {
            Live::Sse { s, buf } => {
                read_some(s, buf, &mut tmp)?;
                while let Some(end) = find(buf, b"\n\n") {
                    let block: Vec<u8> = buf.drain(..end + 2).collect();
                    sse_block(&String::from_utf8_lossy(&block), channel, out, cursor)?;
                }
            }
            Live::Stream { s, raw, lines } => {
                read_some(s, raw, &mut tmp)?;
                let ended = dechunk(raw, lines).map_err(Stop::Fatal)?;
                while let Some(nl) = lines.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = lines.drain(..=nl).collect();
                    let line = String::from_utf8_lossy(&line[..nl]).to_string();
                    if !line.is_empty() {
                        json_event(&line, channel, out, cursor)?;
                    }
                }
                if ended {
                    return Err(Stop::Cut("stream ended".into()));
                }
            }
            Live::Poll { s, buf, waiting } => {
                if !*waiting {
                    let q = cursor.map_or(String::new(), |c| format!("?cursor={c}"));
                    let req = format!(
                        "GET /sub/{channel}{q} HTTP/1.1\r\nHost: t\r\nAccept: application/json\r\n\r\n"
                    );
                    s.write_all(req.as_bytes())
                        .map_err(|e| Stop::Cut(format!("poll write: {e}")))?;
                    *waiting = true;
                }
                read_some(s, buf, &mut tmp)?;
                if let Some((status, head, body, used)) = parse_response(buf) {
                    buf.drain(..used);
                    *waiting = false;
                    if status != 200 {
                        return Err(Stop::Cut(format!("poll answered {status}: {body}")));
                    }
                    let v: Value = serde_json::from_str(&body)
                        .map_err(|e| Stop::Fatal(format!("poll body {body:?}: {e}")))?;
                    if !v["gap"].is_null() {
                        out.push(Ev::Gap(v["gap"]["missed"].as_u64()));
                    }
                    for m in v["messages"].as_array().into_iter().flatten() {
                        push_msg(m, channel, out, cursor)?;
                    }
                    if let Some(c) = v["cursor"].as_str() {
                        *cursor = Some(c.parse().map_err(|_| Stop::Fatal(format!("cursor {c}")))?);
                    }
                    if head.to_ascii_lowercase().contains("connection: close") {
                        return Err(Stop::Cut("poll: connection close".into()));
                    }
                }
            }
            Live::Ws { ws, envelope } => match ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    if *envelope {
                        json_event(&t, channel, out, cursor).map_err(|e| match e {
                            Stop::Fatal(why) => Stop::Fatal(format!(
                                "{why} (a frame that is not an envelope: does the server \
                                 support GET /sub/{{channel}}?envelope=1 upgrades?)"
                            )),
                            cut => cut,
                        })?;
                    } else {
                        let seq = parse_payload(&t, channel).map_err(Stop::Fatal)?;
                        out.push(Ev::Msg { id: None, seq });
                    }
                }
                Ok(tungstenite::Message::Close(f)) => {
                    return Err(Stop::Cut(format!("close {f:?}")));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if is_timeout(&e) => {}
                Err(e) => return Err(Stop::Cut(format!("ws: {e}"))),
            },
        }
        Ok(())
    }
}

/// Sends `req` and reads the answer's head: it must be 200. Returns the bytes read past it.
fn stream_head(mut s: TcpStream, req: &str) -> Result<(TcpStream, Vec<u8>), String> {
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            if !head.starts_with("HTTP/1.1 200") {
                return Err(format!("answered {head:?}"));
            }
            buf.drain(..end + 4);
            return Ok((s, buf));
        }
        let n = s.read(&mut tmp).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before the head".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn read_some(s: &mut TcpStream, buf: &mut Vec<u8>, tmp: &mut [u8]) -> Result<(), Stop> {
    match s.read(tmp) {
        Ok(0) => Err(Stop::Cut("eof".into())),
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(())
        }
        Err(e) if is_timeout(&e) => Ok(()),
        Err(e) => Err(Stop::Cut(e.to_string())),
    }
}

/// Moves the complete chunks of `raw` into `out`; true at the last chunk.
fn dechunk(raw: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<bool, String> {
    loop {
        let Some(eol) = find(raw, b"\r\n") else {
            return Ok(false);
        };
        let line = String::from_utf8_lossy(&raw[..eol]).to_string();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
            .map_err(|_| format!("bad chunk size line {line:?}"))?;
        if size == 0 {
            return Ok(true);
        }
        if raw.len() < eol + 2 + size + 2 {
            return Ok(false);
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw.drain(..eol + 2 + size + 2);
    }
}

fn sse_block(
    block: &str,
    channel: &str,
    out: &mut Vec<Ev>,
    cursor: &mut Option<u64>,
) -> Result<(), Stop> {
    let mut event = None;
    let mut id = None;
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v);
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = Some(
                v.parse::<u64>()
                    .map_err(|_| Stop::Fatal(format!("sse id {v:?}")))?,
            );
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v);
        }
    }
    let data = data.join("\n");
    match event {
        Some("gap") => {
            let v: Value =
                serde_json::from_str(&data).map_err(|_| Stop::Fatal(format!("gap {data:?}")))?;
            out.push(Ev::Gap(v["missed"].as_u64()));
        }
        Some(other) => return Err(Stop::Fatal(format!("sse event {other:?}"))),
        None if id.is_some() => {
            let seq = parse_payload(&data, channel).map_err(Stop::Fatal)?;
            out.push(Ev::Msg { id, seq });
            *cursor = id;
        }
        // retry:, a heartbeat comment.
        None => {}
    }
    Ok(())
}

/// One JSON line / frame: `{"id":"…","data":"…"}` or `{"gap":{"missed":N}}`.
fn json_event(
    text: &str,
    channel: &str,
    out: &mut Vec<Ev>,
    cursor: &mut Option<u64>,
) -> Result<(), Stop> {
    let v: Value = serde_json::from_str(text)
        .map_err(|_| Stop::Fatal(format!("not an envelope / NDJSON line: {text:?}")))?;
    if v.get("gap").is_some() {
        out.push(Ev::Gap(v["gap"]["missed"].as_u64()));
        Ok(())
    } else {
        push_msg(&v, channel, out, cursor)
    }
}

fn push_msg(
    m: &Value,
    channel: &str,
    out: &mut Vec<Ev>,
    cursor: &mut Option<u64>,
) -> Result<(), Stop> {
    let id: u64 = m["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Stop::Fatal(format!("message without a string id: {m}")))?;
    let data = m["data"]
        .as_str()
        .ok_or_else(|| Stop::Fatal(format!("message without string data: {m}")))?;
    let seq = parse_payload(data, channel).map_err(Stop::Fatal)?;
    out.push(Ev::Msg { id: Some(id), seq });
    *cursor = Some(id);
    Ok(())
}

// ---- the checker ------------------------------------------------------------------------------

/// Totals over every subscriber; `violations` lists what breaks the rule "every message answered
/// 2xx arrives once, in order, or is covered by a gap report".
#[derive(Default, Debug)]
pub struct Verdict {
    pub subscribers: usize,
    pub delivered: HashMap<Kind, u64>,
    pub maybe_delivered: u64,
    pub gaps_reported: u64,
    /// Accepted messages a subscriber did not get, covered by a gap report.
    pub gap_covered: u64,
    /// Accepted messages a subscriber did not get, with no gap report.
    pub silent_losses: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// A message whose id is not above the previous one's.
    pub ids_backwards: u64,
    /// Messages (channel, seq) that reached subscribers under different ids (not in
    /// `violations`: ids are per process until they are assigned through Redis).
    pub id_mismatches: u64,
    pub id_examples: Vec<String>,
    pub refused_delivered: u64,
    /// Gap reports that said fewer than were missing.
    pub gaps_undercounted: u64,
    /// Plain WebSocket subscribers cut (they cannot resume) and the accepted messages after it.
    pub ws_cut: u64,
    pub ws_cut_missing: u64,
    pub cuts: u64,
    pub resumes: u64,
    /// Longest time from a cut to the next connection.
    pub max_reconnect: Duration,
    pub fatal: Vec<String>,
    /// One line per subscriber that broke the rule.
    pub violations: Vec<String>,
    sub_violations: u64,
    sub_examples: Vec<String>,
}

impl Verdict {
    pub fn delivered_line(&self) -> String {
        let mut kinds: Vec<_> = self.delivered.iter().collect();
        kinds.sort();
        kinds
            .iter()
            .map(|(k, n)| format!("{}={n}", k.name()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Nothing lost silently, duplicated, reordered, or mis-identified.
    pub fn clean(&self) -> bool {
        self.violations.is_empty() && self.fatal.is_empty()
    }

    /// One violation of the subscriber being checked (summed up per subscriber by `check`).
    fn violate(&mut self, what: String) {
        self.sub_violations += 1;
        if self.sub_examples.len() < 2 {
            self.sub_examples.push(what);
        }
    }

    /// Ends the subscriber being checked: one line in `violations` if it had any.
    fn close_subscriber(&mut self, who: &str, log: &SubLog) {
        if self.sub_violations > 0 {
            self.violations.push(format!(
                "{who}, {} cuts, {} resumes: {} violations, first: {}",
                log.cuts,
                log.resumes,
                self.sub_violations,
                self.sub_examples.join("; ")
            ));
        }
        self.sub_violations = 0;
        self.sub_examples.clear();
    }
}

/// Checks every subscriber's record against the publish outcomes (`outcomes[ch][seq]`).
pub fn check(logs: &[SubLog], outcomes: &[Vec<Pub>]) -> Verdict {
    let mut v = Verdict {
        subscribers: logs.len(),
        ..Verdict::default()
    };
    let mut ids: HashMap<(usize, u64), u64> = HashMap::new();
    let mut mismatched: std::collections::HashSet<(usize, u64)> = Default::default();
    for (n, log) in logs.iter().enumerate() {
        let who = format!("subscriber {n} ({} on {})", log.kind.name(), log.channel);
        let out = &outcomes[log.ch];
        if let Some(f) = &log.fatal {
            v.fatal.push(format!("{who}: {f}"));
        }
        v.cuts += u64::from(log.cuts);
        v.resumes += u64::from(log.resumes);
        let mut last: Option<u64> = None;
        let mut last_id: Option<u64> = None;
        let mut gap: Option<Option<u64>> = None;
        let mut delivered = 0;
        for ev in &log.events {
            match ev {
                Ev::Gap(m) => {
                    v.gaps_reported += 1;
                    gap = Some(match (gap, m) {
                        (None, m) => *m,
                        (Some(Some(a)), Some(b)) => Some(a + b),
                        _ => None,
                    });
                }
                Ev::Reconnected { after, .. } => v.max_reconnect = v.max_reconnect.max(*after),
                Ev::Cut(_) => {}
                Ev::Msg { id, seq } => {
                    if let Some(id) = *id {
                        if last_id.is_some_and(|l| id <= l) {
                            v.ids_backwards += 1;
                            v.violate(format!("id {id} after id {}", last_id.unwrap()));
                        }
                        last_id = Some(last_id.map_or(id, |l| l.max(id)));
                        if let Some(s) = seq {
                            let first = *ids.entry((log.ch, *s)).or_insert(id);
                            if first != id && mismatched.insert((log.ch, *s)) {
                                v.id_mismatches += 1;
                                if v.id_examples.len() < 3 {
                                    v.id_examples.push(format!(
                                        "{}: seq {s} has id {first} for one subscriber, {id} for \
                                         another",
                                        log.channel
                                    ));
                                }
                            }
                        }
                    }
                    let Some(s) = *seq else { continue };
                    let Some(o) = out.get(s as usize) else {
                        v.violate(format!("seq {s} was never published"));
                        continue;
                    };
                    if *o == Pub::Refused {
                        v.refused_delivered += 1;
                        v.violate(format!("seq {s} was refused (503) yet delivered"));
                    }
                    if let Some(l) = last
                        && s <= l
                    {
                        if s == l {
                            v.duplicates += 1;
                        } else {
                            v.reordered += 1;
                        }
                        let after_gap = match gap {
                            Some(m) => format!(", after a gap report (missed {m:?})"),
                            None => String::new(),
                        };
                        v.violate(format!(
                            "seq {s} after seq {l} (duplicate or out of order{after_gap})"
                        ));
                        continue;
                    }
                    let from = last.map_or(0, |l| l + 1);
                    missing(&mut v, out, from, s, gap, false);
                    gap = None;
                    last = Some(s);
                    if o.accepted() {
                        delivered += 1;
                    } else {
                        v.maybe_delivered += 1;
                    }
                }
            }
        }
        // The tail: every accepted message after the last one received.
        let from = last.map_or(0, |l| l + 1);
        let end = out.len() as u64;
        if log.ended_cut {
            v.ws_cut += 1;
            let lost = (from..end).filter(|&k| out[k as usize].accepted()).count() as u64;
            v.ws_cut_missing += lost;
        } else {
            missing(&mut v, out, from, end, gap, true);
        }
        *v.delivered.entry(log.kind).or_default() += delivered;
        v.close_subscriber(&who, log);
    }
    v
}

/// Accepted messages in `from..to` are missing: fine if `gap` covers them.
fn missing(v: &mut Verdict, out: &[Pub], from: u64, to: u64, gap: Option<Option<u64>>, tail: bool) {
    let lost: Vec<u64> = (from..to).filter(|&k| out[k as usize].accepted()).collect();
    if lost.is_empty() {
        return;
    }
    let n = lost.len() as u64;
    let what = if tail { "never got" } else { "skipped" };
    match gap {
        Some(None) => v.gap_covered += n,
        Some(Some(m)) if m >= n => v.gap_covered += n,
        Some(Some(m)) => {
            v.gaps_undercounted += 1;
            v.silent_losses += n - m;
            v.gap_covered += m;
            v.violate(format!(
                "{what} {n} accepted messages (seq {}..={}), the gap report said {m}",
                lost[0],
                lost[lost.len() - 1]
            ));
        }
        None => {
            v.silent_losses += n;
            v.violate(format!(
                "{what} {n} accepted messages (seq {}..={}) without a gap report",
                lost[0],
                lost[lost.len() - 1]
            ));
        }
    }
}

/// Counts of publish outcomes: (attempted, accepted, refused, maybe).
pub fn tally(outcomes: &[Vec<Pub>]) -> (usize, usize, usize, usize) {
    let all: Vec<&Pub> = outcomes.iter().flatten().collect();
    (
        all.len(),
        all.iter().filter(|p| p.accepted()).count(),
        all.iter().filter(|p| matches!(p, Pub::Refused)).count(),
        all.iter().filter(|p| matches!(p, Pub::Maybe(_))).count(),
    )
}
