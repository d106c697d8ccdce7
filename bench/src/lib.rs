//! Shared helpers for the macro benchmark tools (`idle_memory`, `broadcast`):
//!
//! - [`ServerProc`]: start a server process, wait for its "listening on ADDR" line, stop it;
//! - [`Pool`]: a single-threaded `mio` pool of raw TCP/WebSocket subscribers that performs the
//!   upgrade (or a Bayeux client's handshake, subscribe and first connects), then only reads and
//!   counts bytes (frames have a known size);
//! - [`HttpConn`], [`get_stats`]: a tiny keep-alive HTTP/1.1 client for `/stats` and `/pub`;
//! - [`smaps_rollup`]: PSS/RSS of a process; [`thread_cpu`]: CPU time of the calling thread;
//! - small statistics and argument helpers.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

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

// ---- memory and CPU -----------------------------------------------------------------------

/// Memory of a process from `/proc/PID/smaps_rollup`, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Mem {
    pub pss: u64,
    pub rss: u64,
    /// Transparent huge pages mapped (`AnonHugePages:`): memory comes in 2 MiB steps there.
    pub anon_huge: u64,
}

/// Reads the `Pss:`, `Rss:` and `AnonHugePages:` lines of `/proc/PID/smaps_rollup`.
pub fn smaps_rollup(pid: u32) -> io::Result<Mem> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> io::Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| io::Error::other(format!("no {name} line in smaps_rollup")))
    };
    Ok(Mem {
        pss: field("Pss:")?,
        rss: field("Rss:")?,
        anon_huge: field("AnonHugePages:").unwrap_or(0),
    })
}

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

// ---- tiny HTTP client ---------------------------------------------------------------------

/// One keep-alive HTTP/1.1 connection (blocking, TCP_NODELAY, 10 s read timeout).
pub struct HttpConn {
    sock: std::net::TcpStream,
    buf: Vec<u8>,
}

/// A `POST /pub/{channel}` request with `body`, ready to be written.
pub fn pub_request(channel: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST /pub/{channel} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

impl HttpConn {
    pub fn connect(addr: SocketAddr) -> io::Result<HttpConn> {
        let sock = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(HttpConn {
            sock,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Writes a complete, pre-built request.
    pub fn send_raw(&mut self, req: &[u8]) -> io::Result<()> {
        self.sock.write_all(req)
    }

    /// Reads one response (needs `Content-Length`); returns the status and the body.
    pub fn read_response(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let mut chunk = [0u8; 8192];
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p + 4;
            }
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a complete response head",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line in {head:?}")))?;
        let len = content_length(&head).unwrap_or(0);
        while self.buf.len() < head_end + len {
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed within a response body",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok((status, body))
    }

    /// Sends a request and reads the response.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n").into_bytes();
        if method != "GET" || !body.is_empty() {
            req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        self.send_raw(&req)?;
        self.read_response()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `GET /stats` on a fresh connection; returns the parsed JSON.
pub fn get_stats(addr: SocketAddr) -> io::Result<serde_json::Value> {
    let mut c = HttpConn::connect(addr)?;
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

// ---- WebSocket frames ---------------------------------------------------------------------

/// Bytes of an unmasked server text frame carrying `payload_len` bytes.
pub fn frame_len(payload_len: usize) -> usize {
    payload_len
        + match payload_len {
            0..=125 => 2,
            126..=65535 => 4,
            _ => 10,
        }
}

/// A masked text frame (FIN, opcode 1) with `payload`: what a client sends. The mask is fixed
/// (the server unmasks whatever it is).
pub fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x5A, 0xA5, 0x3C, 0xC3];
    let n = payload.len();
    let mut f = Vec::with_capacity(frame_len(n) + 4);
    f.push(0x81);
    match n {
        0..=125 => f.push(0x80 | n as u8),
        126..=65535 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// An unmasked text frame (FIN, opcode 1) with `payload`: what a server sends.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = Vec::with_capacity(frame_len(n));
    f.push(0x81);
    match n {
        0..=125 => f.push(n as u8),
        126..=65535 => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
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
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum State {
    Connecting,
    Upgrading,
    /// Bayeux: waiting for the reply to the handshake (0), the subscribe (1), the first
    /// connect (2).
    Bayeux(u8),
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

/// A non-blocking socket bound to `src` (port chosen at connect: IP_BIND_ADDRESS_NO_PORT)
/// and connecting to `dst`.
fn start_connect(src: Ipv4Addr, dst: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(dst) = dst else {
        return Err(io::Error::other("IPv4 only"));
    };
    // SAFETY: socket/setsockopt/bind/connect on the fd created here, with pointers to live
    // values of the stated sizes; the fd is owned by the TcpStream built from it or closed on error.
    unsafe {
        let fd = libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // Owned from here: closed on any early return.
        let std_sock = std::net::TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let sa = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let s = sa(SocketAddrV4::new(src, 0));
        if libc::bind(fd, &s as *const _ as *const libc::sockaddr, len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let d = sa(dst);
        if libc::connect(fd, &d as *const _ as *const libc::sockaddr, len) != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(TcpStream::from_std(std_sock))
    }
}

/// Writes request `step` of a Bayeux client's setup: the handshake (0), the subscribe to
/// `channel` (1), the first connect with `advice.timeout` 0 (2), the connect to be held (3). As
/// a `POST {path}` (long-polling) or a masked text frame (websocket).
fn bayeux_send(s: &mut Sock, ws: bool, path: &str, step: u8, channel: &str) -> io::Result<()> {
    use serde_json::json;
    let t = if ws { "websocket" } else { "long-polling" };
    let c = s.client.as_str();
    let id = (step + 1).to_string();
    let msg = match step {
        0 => json!({"id": id, "channel": "/meta/handshake", "version": "1.0",
            "minimumVersion": "1.0", "supportedConnectionTypes": [t],
            "advice": {"timeout": 60000, "interval": 0}}),
        1 => json!({"id": id, "channel": "/meta/subscribe", "subscription": channel,
            "clientId": c}),
        2 => json!({"id": id, "channel": "/meta/connect", "connectionType": t,
            "advice": {"timeout": 0}, "clientId": c}),
        _ => json!({"id": id, "channel": "/meta/connect", "connectionType": t, "clientId": c}),
    };
    let body = json!([msg]).to_string();
    let req = if ws {
        masked_text_frame(body.as_bytes())
    } else {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body.as_bytes());
        r
    };
    // One request at a time on the connection: the send buffer is empty and takes it whole.
    let w = s.stream.write(&req)?;
    if w != req.len() {
        return Err(io::Error::other("short write of a Bayeux request"));
    }
    Ok(())
}

/// The body of the next complete Bayeux reply at the start of `buf` (consumed), if one is
/// complete: a `200` response with `Content-Length` (long-polling) or a text frame (websocket).
fn bayeux_reply(buf: &mut Vec<u8>, ws: bool) -> io::Result<Option<Vec<u8>>> {
    if ws {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (at, len) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (4, usize::from(u16::from_be_bytes([buf[2], buf[3]]))),
            127 if buf.len() >= 10 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&buf[2..10]);
                (10, u64::from_be_bytes(a) as usize)
            }
            126 | 127 => return Ok(None),
            n => (2, usize::from(n)),
        };
        if buf.len() < at + len {
            return Ok(None);
        }
        if buf[0] != 0x81 {
            return Err(io::Error::other(format!(
                "Bayeux over WebSocket: frame 0x{:02x}, expected a text frame",
                buf[0]
            )));
        }
        let body = buf[at..at + len].to_vec();
        buf.drain(..at + len);
        return Ok(Some(body));
    }
    let Some(p) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..p]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!(
            "Bayeux request answered {head:?}"
        )));
    }
    let len = content_length(&head)
        .ok_or_else(|| io::Error::other("Bayeux reply without Content-Length"))?;
    if buf.len() < p + 4 + len {
        return Ok(None);
    }
    let body = buf[p + 4..p + 4 + len].to_vec();
    buf.drain(..p + 4 + len);
    Ok(Some(body))
}

const UPGRADE_TAIL: &str = "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

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
                let mut stream = start_connect(src, dst).map_err(|e| {
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
                            let req =
                                format!("GET {} HTTP/1.1\r\n{UPGRADE_TAIL}", path(idx - first));
                            // A fresh socket's send buffer takes this whole.
                            let w = s.stream.write(req.as_bytes())?;
                            if w != req.len() {
                                return Err(io::Error::other("short write of the upgrade request"));
                            }
                            s.state = State::Upgrading;
                        }
                        Handshake::Bayeux { ws: true, path, .. } => {
                            let req = format!("GET {path} HTTP/1.1\r\n{UPGRADE_TAIL}");
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
            let Some(body) = bayeux_reply(&mut s.head, ws)? else {
                return Ok(());
            };
            let meta = ["/meta/handshake", "/meta/subscribe", "/meta/connect"][usize::from(step)];
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                io::Error::other(format!("Bayeux reply is not JSON ({e}): {body:?}"))
            })?;
            let reply = v
                .as_array()
                .and_then(|a| a.iter().find(|m| m["channel"] == meta))
                .filter(|m| m["successful"] == true)
                .ok_or_else(|| {
                    io::Error::other(format!(
                        "Bayeux client {idx}: no successful {meta} reply in {v}"
                    ))
                })?;
            if step == 0 {
                s.client = reply["clientId"]
                    .as_str()
                    .ok_or_else(|| io::Error::other("handshake reply without clientId"))?
                    .to_string();
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
        let Some(p) = find(&s.head, b"\r\n\r\n") else {
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

/// Largest number of open files this process may have (RLIMIT_NOFILE soft limit), after
/// raising the soft limit to the hard one.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a valid, owned struct; rlimit is plain old data.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        }
        rl.rlim_cur
    }
}

/// The `Content-Length` of a response head, if it has one that parses.
fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}
