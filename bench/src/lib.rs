//! Shared helpers for the macro benchmark tools (`idle_memory`, `broadcast`):
//!
//! - [`ServerProc`]: start a server process, wait for its "listening on ADDR" line, stop it;
//! - [`Pool`]: a single-threaded `mio` pool of raw TCP/WebSocket subscribers that performs the
//!   upgrade (or a Bayeux client's handshake, subscribe and first connects), then only reads and
//!   counts bytes (frames have a known size);
//! - [`http_conn`], [`get_stats`]: `/stats` and `/pub` over flood's keep-alive HTTP client;
//! - [`thread_cpu`]: CPU time of the calling thread;
//! - [`token`]: a subscribe token for `--token-secret` runs;
//! - small statistics and argument helpers.
//!
//! The client toolkit itself is flood's ([`flood`], the library of `flood-client/`): the
//! source-bound connect and the open-files limit ([`flood::sys`]), WebSocket upgrade and frames
//! ([`flood::ws`]), Bayeux requests and replies ([`flood::bayeux`]), HTTP ([`flood::http`]) and
//! `/proc` memory readings ([`flood::memory`]). Nothing of it is written again here.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flood::bayeux::{self, ConnType, Event, Request, Unit};
use flood::http::{self, HttpConn};
use flood::ws;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// The `Host:` of every request the tools send (the servers ignore it).
const HOST: &str = "127.0.0.1";

// ---- server processes ---------------------------------------------------------------------

/// A child server process. Killed (SIGKILL) on drop if still running.
pub struct ServerProc {
    pub child: Child,
    pub pid: u32,
    /// The line that announced the listening address.
    pub line: String,
    /// The address parsed from "listening on ADDR".
    pub addr: SocketAddr,
}

/// Returns the whitespace-delimited token following `marker` in `line`.
pub fn token_after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    let i = line.find(marker)? + marker.len();
    line[i..].split_whitespace().next()
}

impl ServerProc {
    /// Spawns `cmd` (stdin and stdout null, stderr piped), waits up to `timeout` for a stderr
    /// line containing "listening on ADDR". Every other stderr line is forwarded to our stderr
    /// prefixed with `[name] `.
    pub fn spawn(mut cmd: Command, name: &str, timeout: Duration) -> io::Result<ServerProc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {cmd:?}: {e}")))?;
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel::<String>();
        let name = name.to_string();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.is_some() && line.contains("listening on ") {
                    let _ = tx.take().unwrap().send(line);
                } else {
                    eprintln!("[{name}] {line}");
                }
            }
        });
        let line = match rx.recv_timeout(timeout) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "{cmd:?} did not report its address within {timeout:?}"
                )));
            }
        };
        let addr = token_after(&line, "listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("cannot parse address in {line:?}")))?;
        let pid = child.id();
        Ok(ServerProc {
            child,
            pid,
            line,
            addr,
        })
    }

    /// SIGTERM, then waits up to `timeout` for the exit; SIGKILL after that.
    pub fn stop(&mut self, timeout: Duration) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: kill(2) on the child this handle started and has not reaped (try_wait above).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("bench: pid {} ignored SIGTERM; killing it", self.pid);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- CPU ---------------------------------------------------------------------------------

/// CPU time (user + system) of the calling thread: `getrusage(RUSAGE_THREAD)`.
pub fn thread_cpu() -> Duration {
    // SAFETY: rusage is plain old data; all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the valid, owned struct and nothing else.
    unsafe {
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---- HTTP ----------------------------------------------------------------------------------

/// A keep-alive connection to `addr` (10 s read timeout), flood's [`HttpConn`].
pub fn http_conn(addr: SocketAddr) -> io::Result<HttpConn> {
    HttpConn::connect(addr, HOST, Duration::from_secs(10))
}

/// A `POST /pub/{channel}` request with `body`, ready to be written.
pub fn pub_request(channel: &str, body: &[u8]) -> Vec<u8> {
    http::request_bytes("POST", HOST, &format!("/pub/{channel}"), body)
}

/// `GET /stats` on a fresh connection; returns the parsed JSON.
pub fn get_stats(addr: SocketAddr) -> io::Result<serde_json::Value> {
    let mut c = http_conn(addr)?;
    let (status, body) = c.request("GET", "/stats", b"")?;
    if status != 200 {
        return Err(io::Error::other(format!("/stats answered {status}")));
    }
    serde_json::from_slice(&body).map_err(io::Error::other)
}

/// `total.{field}` of a `/stats` document (0 if absent).
pub fn total(stats: &serde_json::Value, field: &str) -> u64 {
    stats["total"][field].as_u64().unwrap_or(0)
}

/// `total.{field}`, or `{section}.{field}` when `field` is written `section.field` (e.g.
/// `hub.bayeux_clients`), of a `/stats` document (0 if absent).
pub fn stat(stats: &serde_json::Value, field: &str) -> u64 {
    match field.split_once('.') {
        Some((section, f)) => stats[section][f].as_u64().unwrap_or(0),
        None => total(stats, field),
    }
}

/// Polls `/stats` every 50 ms until [`stat`]`(field) == want`; returns the last document.
pub fn wait_stat(
    addr: SocketAddr,
    field: &str,
    want: u64,
    timeout: Duration,
) -> io::Result<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = get_stats(addr)?;
        if stat(&s, field) == want {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "/stats {field} is {} after {timeout:?}, want {want}",
                    stat(&s, field)
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- subscriber pool ----------------------------------------------------------------------

/// How the pool's connections start.
#[derive(Clone, Copy)]
pub enum Handshake<'a> {
    /// `GET {path(i)}` with a WebSocket upgrade; wait for `101`.
    WebSocket(&'a dyn Fn(usize) -> String),
    /// Plain TCP: open as soon as connected.
    Raw,
    /// Sends the whole request `request(i)` and counts the connection open at once (an SSE
    /// subscription or a held long-poll: whatever comes back is counted as received data).
    Request(&'a dyn Fn(usize) -> String),
    /// A CometD/Bayeux client on `path`, over long-polling (`ws: false`: `POST`s on this one
    /// keep-alive connection) or a WebSocket (`ws: true`: an upgrade to `path`, then frames):
    /// `/meta/handshake`, `/meta/subscribe` to `channel(i)`, `/meta/connect` with
    /// `advice.timeout` 0, each waiting for its successful reply, then a `/meta/connect` that
    /// the server holds; open once that last one is written.
    Bayeux {
        ws: bool,
        path: &'a str,
        channel: &'a dyn Fn(usize) -> String,
    },
    /// A Socket.IO client over a WebSocket on `/socket.io/` (Engine.IO v4): the upgrade, the
    /// open packet, a CONNECT to `/` joining `channel(i)`, its reply; open once that is in.
    SocketIo {
        channel: &'a dyn Fn(usize) -> String,
    },
}

/// Where the bench's Socket.IO clients connect (edgecomet's default `--socketio-path`).
const SOCKETIO_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

#[derive(PartialEq, Eq, Clone, Copy)]
enum State {
    Connecting,
    Upgrading,
    /// Bayeux: waiting for the reply to the handshake (0), the subscribe (1), the first
    /// connect (2).
    Bayeux(u8),
    /// Socket.IO: waiting for the `101` (0), the open packet (1), the CONNECT reply (2).
    SocketIo(u8),
    Open,
}

struct Sock {
    stream: TcpStream,
    state: State,
    /// The response head while upgrading, Bayeux replies while setting up; empty (no
    /// allocation) afterwards.
    head: Vec<u8>,
    /// Bayeux: the clientId while setting up.
    client: String,
    /// Bytes received after the handshake.
    rx: u64,
}

/// Appends what `s` has to read to `s.head` (through `buf`) until it would block; true if the
/// server closed the connection.
fn read_into_head(s: &mut Sock, buf: &mut [u8]) -> io::Result<bool> {
    loop {
        match s.stream.read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => s.head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A pool of subscriber sockets served by one `mio::Poll` on the calling thread. After the
/// handshake it only reads and counts bytes per socket (the benchmarks know the frame size).
///
/// Reading: `mio` is edge-triggered; a read that returns less than the buffer size is taken as
/// "drained" (on Linux every new segment re-arms an edge-triggered TCP socket), which saves the
/// extra `read` → `EAGAIN` per socket per round.
pub struct Pool {
    poll: Poll,
    events: Events,
    socks: Vec<Sock>,
    buf: Box<[u8]>,
    toks: Vec<usize>,
    /// When non-zero, every `frame_len`-th byte received must be 0x81 (a FIN text frame).
    frame_len: u64,
    /// Frame starts that were not 0x81 (a ping, a close, a wrong length...).
    pub bad_frames: u64,
}

/// Largest Bayeux reply accepted during a client's setup (they are a few hundred bytes).
const MAX_REPLY: usize = 1 << 20;

/// The Bayeux transport: over a WebSocket or long-polling.
fn conn_type(ws: bool) -> ConnType {
    if ws {
        ConnType::WebSocket
    } else {
        ConnType::LongPolling
    }
}

/// Writes request `step` of a Bayeux client's setup: the handshake (0), the subscribe to
/// `channel` (1), the first connect with `advice.timeout` 0 (2), the connect to be held (3). As
/// a `POST {path}` (long-polling) or a masked text frame (websocket), encoded by flood.
fn bayeux_send(s: &mut Sock, ws: bool, path: &str, step: u8, channel: &str) -> io::Result<()> {
    let what = [
        Request::Handshake,
        Request::Subscribe,
        Request::FirstConnect,
        Request::Connect,
    ][usize::from(step.min(3))];
    let t = conn_type(ws);
    let mut body = Vec::new();
    bayeux::request(&mut body, what, u64::from(step) + 1, t, &s.client, channel);
    let mut req = Vec::new();
    bayeux::frame_request(&mut req, t, path, HOST, &body);
    // One request at a time on the connection: the send buffer is empty and takes it whole.
    let w = s.stream.write(&req)?;
    if w != req.len() {
        return Err(io::Error::other("short write of a Bayeux request"));
    }
    Ok(())
}

/// Checks that `body` holds the successful reply to setup request `step` (see
/// [`bayeux_send`]); returns the clientId for the handshake.
fn setup_reply(body: &[u8], step: u8) -> Result<Option<String>, String> {
    let text = || String::from_utf8_lossy(body).into_owned();
    let events = bayeux::replies(body)
        .map_err(|e| format!("Bayeux reply is not JSON ({e}): {:?}", text()))?;
    for ev in events {
        match (step, ev) {
            (0, Event::Handshake { client_id }) => return Ok(Some(client_id.into_owned())),
            (1, Event::Subscribe) | (2, Event::Connect { .. }) => return Ok(None),
            (_, f @ Event::Failed { .. }) => return Err(f.to_string()),
            _ => {}
        }
    }
    let meta = ["/meta/handshake", "/meta/subscribe", "/meta/connect"][usize::from(step.min(2))];
    Err(format!("no successful {meta} reply in {}", text()))
}

impl Pool {
    pub fn new() -> io::Result<Pool> {
        Ok(Pool {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            socks: Vec::new(),
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
            toks: Vec::with_capacity(1024),
            frame_len: 0,
            bad_frames: 0,
        })
    }

    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    /// Checks every `len`-th received byte for 0x81 (0 = no check). Set before any data.
    pub fn set_frame_len(&mut self, len: usize) {
        self.frame_len = len as u64;
    }

    /// Opens `n` connections to `dst` (sources round-robin over `sources`), at most `inflight`
    /// connecting/upgrading at once, and returns when all are open.
    pub fn connect(
        &mut self,
        dst: SocketAddr,
        n: usize,
        hs: Handshake<'_>,
        sources: &[Ipv4Addr],
        inflight: usize,
        timeout: Duration,
    ) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        let first = self.socks.len();
        self.socks.reserve(n);
        let (mut started, mut pending, mut opened) = (0usize, 0usize, 0usize);
        while opened < n {
            while started < n && pending < inflight.max(1) {
                let src = sources[started % sources.len()];
                let mut stream = flood::sys::connect(dst, Some(src))
                    .map(TcpStream::from_std)
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("connection {started} from {src}: {e}"))
                    })?;
                let idx = first + started;
                self.poll.registry().register(
                    &mut stream,
                    Token(idx),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                self.socks.push(Sock {
                    stream,
                    state: State::Connecting,
                    head: Vec::new(),
                    client: String::new(),
                    rx: 0,
                });
                started += 1;
                pending += 1;
            }
            let now = Instant::now();
            if now > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("only {opened} of {n} connections open after {timeout:?}"),
                ));
            }
            self.poll.poll(
                &mut self.events,
                Some((deadline - now).min(Duration::from_millis(100))),
            )?;
            let evs: Vec<(usize, bool)> = self
                .events
                .iter()
                .map(|e| (e.token().0, e.is_error() || e.is_read_closed()))
                .collect();
            for (idx, err) in evs {
                let was = self.socks[idx].state;
                if was == State::Connecting {
                    let s = &mut self.socks[idx];
                    if let Some(e) = s.stream.take_error()? {
                        return Err(io::Error::new(e.kind(), format!("connect: {e}")));
                    }
                    match s.stream.peer_addr() {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotConnected && !err => continue,
                        Err(e) => return Err(io::Error::new(e.kind(), format!("connect: {e}"))),
                    }
                    match hs {
                        Handshake::Raw => s.state = State::Open,
                        Handshake::Request(request) => {
                            let req = request(idx - first);
                            let w = s.stream.write(req.as_bytes())?;
                            if w != req.len() {
                                return Err(io::Error::other("short write of the request"));
                            }
                            s.state = State::Open;
                        }
                        Handshake::WebSocket(path) => {
                            let req = ws::upgrade_request(&path(idx - first), HOST);
                            // A fresh socket's send buffer takes this whole.
                            let w = s.stream.write(req.as_bytes())?;
                            if w != req.len() {
                                return Err(io::Error::other("short write of the upgrade request"));
                            }
                            s.state = State::Upgrading;
                        }
                        Handshake::Bayeux { ws: true, path, .. } => {
                            let req = ws::upgrade_request(path, HOST);
                            let w = s.stream.write(req.as_bytes())?;
                            if w != req.len() {
                                return Err(io::Error::other("short write of the upgrade request"));
                            }
                            s.state = State::Upgrading;
                        }
                        Handshake::Bayeux {
                            ws: false, path, ..
                        } => {
                            bayeux_send(s, false, path, 0, "")?;
                            s.state = State::Bayeux(0);
                        }
                        Handshake::SocketIo { .. } => {
                            let req = ws::upgrade_request(SOCKETIO_PATH, HOST);
                            let w = s.stream.write(req.as_bytes())?;
                            if w != req.len() {
                                return Err(io::Error::other("short write of the upgrade request"));
                            }
                            s.state = State::SocketIo(0);
                        }
                    }
                }
                match self.socks[idx].state {
                    State::Connecting => {}
                    State::Upgrading => {
                        if self.read_head(idx)? {
                            let s = &mut self.socks[idx];
                            s.state = match hs {
                                Handshake::Bayeux { path, .. } => {
                                    bayeux_send(s, true, path, 0, "")?;
                                    State::Bayeux(0)
                                }
                                _ => State::Open,
                            };
                        }
                    }
                    State::Bayeux(_) => {
                        if let Handshake::Bayeux { ws, path, channel } = hs {
                            let ch = channel(idx - first);
                            self.bayeux_step(idx, ws, path, &ch)?;
                        }
                    }
                    State::SocketIo(_) => {
                        if let Handshake::SocketIo { channel } = hs {
                            let ch = channel(idx - first);
                            self.socketio_step(idx, &ch)?;
                        }
                    }
                    State::Open => {
                        if was != State::Open {
                            // Raw connection just became open; nothing to read yet.
                        } else {
                            self.read_open(idx)?;
                        }
                    }
                }
                if was != State::Open && self.socks[idx].state == State::Open {
                    pending -= 1;
                    opened += 1;
                }
            }
        }
        Ok(())
    }

    /// Bayeux setup: reads what is there and, for each complete successful reply, sends the
    /// next request (the state says which); after the first connect's reply, the held connect
    /// goes out and the socket is open.
    fn bayeux_step(&mut self, idx: usize, ws: bool, path: &str, channel: &str) -> io::Result<()> {
        let s = &mut self.socks[idx];
        if read_into_head(s, &mut self.buf)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("Bayeux client {idx}: server closed during the setup"),
            ));
        }
        while let State::Bayeux(step) = s.state {
            let fail = |e: String| io::Error::other(format!("Bayeux client {idx}: {e}"));
            let Some((unit, len)) =
                bayeux::next_unit(&s.head, conn_type(ws), MAX_REPLY).map_err(|e| fail(e.into()))?
            else {
                return Ok(());
            };
            let client = match unit {
                Unit::Body(body) => setup_reply(body, step).map_err(fail)?,
                Unit::Status(code) => return Err(fail(format!("request answered {code}"))),
                _ => return Err(fail("a frame other than text during the setup".into())),
            };
            s.head.drain(..len);
            if let Some(id) = client {
                s.client = id;
            }
            // Next: subscribe (1), first connect (2), the held connect (3).
            bayeux_send(s, ws, path, step + 1, channel)?;
            s.state = if step == 2 {
                s.head = Vec::new();
                s.client = String::new();
                State::Open
            } else {
                State::Bayeux(step + 1)
            };
        }
        Ok(())
    }

    /// Socket.IO setup: the `101`, then the open packet (answered with the CONNECT joining
    /// `channel`), then the CONNECT's reply; bytes after it count as received data.
    fn socketio_step(&mut self, idx: usize, channel: &str) -> io::Result<()> {
        let s = &mut self.socks[idx];
        let fail = |e: String| io::Error::other(format!("Socket.IO client {idx}: {e}"));
        if read_into_head(s, &mut self.buf)? {
            return Err(fail("server closed during the setup".into()));
        }
        loop {
            match s.state {
                State::SocketIo(0) => {
                    let Some(p) = http::head_end(&s.head) else {
                        return Ok(());
                    };
                    if !s.head.starts_with(b"HTTP/1.1 101") {
                        let head = String::from_utf8_lossy(&s.head[..p]).into_owned();
                        return Err(fail(format!("upgrade refused: {head:?}")));
                    }
                    s.head.drain(..p + 4);
                    s.state = State::SocketIo(1);
                }
                State::SocketIo(step) => {
                    let Some((_, _, off, len)) = ws::frame_header(&s.head) else {
                        return Ok(());
                    };
                    if s.head.len() < off + len {
                        return Ok(());
                    }
                    let packet = &s.head[off..off + len];
                    if step == 1 {
                        if !packet.starts_with(b"0{") {
                            let p = String::from_utf8_lossy(packet).into_owned();
                            return Err(fail(format!("expected the open packet, got {p:?}")));
                        }
                        let connect = format!("40{{\"channels\":[\"{channel}\"]}}");
                        let frame = ws::client_frame(ws::OP_TEXT, connect.as_bytes());
                        if s.stream.write(&frame)? != frame.len() {
                            return Err(fail("short write of the CONNECT".into()));
                        }
                        s.head.drain(..off + len);
                        s.state = State::SocketIo(2);
                    } else {
                        if !packet.starts_with(b"40{") {
                            let p = String::from_utf8_lossy(packet).into_owned();
                            return Err(fail(format!("CONNECT refused: {p:?}")));
                        }
                        s.rx += (s.head.len() - (off + len)) as u64;
                        s.head = Vec::new();
                        s.state = State::Open;
                        return Ok(());
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// Reads the upgrade response; true once the whole head is in (`101` checked). Bytes after
    /// the head count as received data.
    fn read_head(&mut self, idx: usize) -> io::Result<bool> {
        let s = &mut self.socks[idx];
        if read_into_head(s, &mut self.buf)? {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "server closed during the upgrade: {:?}",
                    String::from_utf8_lossy(&s.head)
                ),
            ));
        }
        let Some(p) = http::head_end(&s.head) else {
            return Ok(false);
        };
        if !s.head.starts_with(b"HTTP/1.1 101") {
            return Err(io::Error::other(format!(
                "upgrade refused: {:?}",
                String::from_utf8_lossy(&s.head[..p])
            )));
        }
        let extra = s.head.len() - (p + 4);
        let fl = self.frame_len;
        if extra > 0 && fl > 0 && s.head[p + 4] != 0x81 {
            self.bad_frames += 1;
        }
        s.rx += extra as u64;
        s.head = Vec::new();
        Ok(true)
    }

    /// Reads what is there on an open socket; returns (bytes before, bytes after).
    fn read_open(&mut self, idx: usize) -> io::Result<(u64, u64)> {
        let s = &mut self.socks[idx];
        let before = s.rx;
        loop {
            match s.stream.read(&mut self.buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("subscriber {idx}: server closed the connection"),
                    ));
                }
                Ok(n) => {
                    if self.frame_len > 0 {
                        // Offsets in this chunk where a frame starts.
                        let fl = self.frame_len;
                        let mut j = ((fl - s.rx % fl) % fl) as usize;
                        while j < n {
                            if self.buf[j] != 0x81 {
                                self.bad_frames += 1;
                            }
                            j += fl as usize;
                        }
                    }
                    s.rx += n as u64;
                    if n < self.buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok((before, s.rx))
    }

    /// Runs the loop until every socket has received at least `target` bytes in all (since its
    /// handshake). Returns the instant the last socket reached it.
    pub fn wait_all(&mut self, target: u64, timeout: Duration) -> io::Result<Instant> {
        let deadline = Instant::now() + timeout;
        let n = self.socks.len();
        let mut done = self.socks.iter().filter(|s| s.rx >= target).count();
        let mut t1 = Instant::now();
        while done < n {
            let now = Instant::now();
            if now > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("only {done} of {n} subscribers got {target} bytes within {timeout:?}"),
                ));
            }
            self.poll.poll(&mut self.events, Some(deadline - now))?;
            let mut toks = std::mem::take(&mut self.toks);
            toks.clear();
            toks.extend(self.events.iter().map(|e| e.token().0));
            for &idx in &toks {
                if self.socks[idx].state != State::Open {
                    continue;
                }
                let (before, after) = self.read_open(idx)?;
                if before < target && after >= target {
                    done += 1;
                    if done == n {
                        t1 = Instant::now();
                    }
                }
            }
            self.toks = toks;
        }
        Ok(t1)
    }

    /// Bytes received by every socket (min, max).
    pub fn rx_range(&self) -> (u64, u64) {
        let min = self.socks.iter().map(|s| s.rx).min().unwrap_or(0);
        let max = self.socks.iter().map(|s| s.rx).max().unwrap_or(0);
        (min, max)
    }

    /// Closes every socket. With `reset`, SO_LINGER 0 makes the close an RST: no TIME_WAIT
    /// left behind, the server sees ECONNRESET/EOF at once.
    pub fn close_all(&mut self, reset: bool) {
        for s in self.socks.drain(..) {
            if reset {
                let lg = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: setsockopt on the stream's open fd with a pointer to a live linger of its size.
                unsafe {
                    libc::setsockopt(
                        s.stream.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        &lg as *const _ as *const libc::c_void,
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
            }
            drop(s);
        }
    }
}

// ---- statistics and arguments -------------------------------------------------------------

/// Percentile `p` in [0, 1] of `v` (linear interpolation between closest ranks).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let x = p * (s.len() - 1) as f64;
    let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (x - lo as f64)
}

pub fn median(v: &[f64]) -> f64 {
    percentile(v, 0.5)
}

/// `count` source addresses 127.0.0.1, 127.0.0.2, ... (offset by `base`, within 127.0.x.y).
pub fn sources(base: u32, count: usize) -> Vec<Ipv4Addr> {
    (0..count as u32)
        .map(|i| Ipv4Addr::from(0x7f00_0001u32 + base + i))
        .collect()
}

/// A minimal `--flag value` / `--switch` parser.
pub struct Args {
    args: Vec<String>,
}

impl Args {
    pub fn from_env() -> Args {
        Args {
            args: std::env::args().skip(1).collect(),
        }
    }

    /// Removes `--name` and returns whether it was present.
    pub fn flag(&mut self, name: &str) -> bool {
        if let Some(i) = self.args.iter().position(|a| a == name) {
            self.args.remove(i);
            true
        } else {
            false
        }
    }

    /// Removes `--name VALUE` (or `--name=VALUE`) and parses VALUE; `default` if absent.
    pub fn get<T: std::str::FromStr>(&mut self, name: &str, default: T) -> T {
        self.opt(name).unwrap_or(default)
    }

    pub fn opt<T: std::str::FromStr>(&mut self, name: &str) -> Option<T> {
        let prefix = format!("{name}=");
        let i = self
            .args
            .iter()
            .position(|a| a == name || a.starts_with(&prefix))?;
        let a = self.args.remove(i);
        let v = if let Some(v) = a.strip_prefix(&prefix) {
            v.to_string()
        } else if i < self.args.len() {
            self.args.remove(i)
        } else {
            die(&format!("{name} needs a value"));
        };
        match v.parse() {
            Ok(x) => Some(x),
            Err(_) => die(&format!("bad value for {name}: {v:?}")),
        }
    }

    /// Fails on anything left over.
    pub fn finish(self) {
        if let Some(a) = self.args.first() {
            die(&format!("unknown argument {a:?} (try --help)"));
        }
    }
}

pub fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2);
}

/// An HS256 subscribe token signed with `secret`, for every channel (`**`), valid for an hour:
/// what a `--token-secret` run's subscribers bring.
pub fn token(secret: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"exp": exp, "channels": ["**"]}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signs with any secret")
}
