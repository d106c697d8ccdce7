//! One flood worker process: opens its share of subscriber connections (WebSocket, Server-Sent
//! Events, long-poll, Bayeux or Socket.IO clients) at a paced rate, holds them, reads every message, checks sequence numbers
//! and records delivery latency, and reports to the coordinator as JSON lines on stdout. It stops
//! when its stdin says `close` or closes; a line `target N` (`--stages`) makes N the number of
//! connections it keeps open: more are opened, or open ones closed (the client closing first).
//!
//! Cost per connection in this process: one slab entry (`Conn`, 40 bytes) and an optional
//! leftover buffer that exists only while a frame, an event or a long-poll answer is split across
//! reads; a Bayeux client adds its clientId in a side table (24 bytes, see `Conn`), a Socket.IO
//! polling client its Engine.IO sid in the same table. Reads land
//! in one 64 KiB scratch buffer. Never a thread or a timer per connection. Over TLS
//! (`wss://`, `https://`) a connection adds its session, boxed in a side table (see
//! `Worker::sessions` and `tls`). With `--deflate`, compressed messages are inflated by one
//! inflater per worker into one reused buffer; only a server that keeps its compression context
//! costs a connection an inflater of its own (`Worker::inflate_own`).

//!
//! The per-transport wire work (requests written, replies parsed) is in `transports`, the
//! WebSocket frames of all three WebSocket transports (and permessage-deflate) in `frames`; this
//! file holds the connection table, the event loop, pacing, slow readers, churn and the
//! sequence-number accounting.

mod frames;
mod tls;
mod transports;

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flate2::Decompress;
use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::bayeux::{ClientId, ConnType};
pub use crate::plan::{
    Errors, Final, Line, Progress, Transport, WorkerPlan, WsWire, channel_name, is_slow,
};
use crate::socketio::{self, SioTransport};
use crate::tls::{ClientTls, TlsClient};
use crate::{deflate, longpoll, memory, msg, sys, ws};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// TCP connect in progress, request not written yet.
    Connecting,
    /// TLS: connected, the ClientHello sent, the handshake in progress; the request follows.
    TlsHandshake,
    /// Request written, waiting for the response head (WebSocket 101, SSE 200).
    Upgrading,
    /// Bayeux: `/meta/handshake` sent (or due, [`UNSENT`]), its reply awaited. Socket.IO: the
    /// open packet awaited (over polling: the handshake `GET` sent or due).
    Handshake,
    /// Bayeux: `/meta/subscribe` sent (or due), its reply awaited. Socket.IO: the CONNECT sent
    /// (or due); over a WebSocket the server's `40` awaited, over polling the `POST`'s `ok`.
    Subscribe,
    /// Bayeux: the first `/meta/connect` (`advice.timeout` 0) sent (or due), its reply awaited.
    /// Socket.IO over polling: a `GET` sent (or due), the server's `40` not yet seen.
    FirstConnect,
    /// Established: frames or events arrive; for long-poll, a poll is outstanding; for Bayeux, a
    /// held `/meta/connect` is (or, with [`UNSENT`], is due to be).
    Open,
    /// Long-poll, established: the next poll could not be written yet (socket buffer full).
    Resend,
}

/// `Conn::flags`: the last byte an SSE parse consumed was a CR (a leading LF completes it).
const AFTER_CR: u8 = 1;
/// `Conn::flags`, Bayeux: the request of the current phase could not be written yet (socket
/// buffer full); it goes out on the next writable event.
const UNSENT: u8 = 2;
/// `Conn::flags`: a slow reader ([`is_slow`]): once open it reads only in [`Worker::read_slow`].
const SLOW: u8 = 4;
/// `Conn::flags`, Socket.IO over polling: the request outstanding (or due) is the `POST 3`
/// answering a ping, not the `GET` the state says; the `GET` follows its `ok`.
const SIO_PONG: u8 = 8;
/// `Conn::flags`, WebSocket: the upgrade's answer accepted permessage-deflate (`--deflate`), so
/// a data message may come compressed (RSV1).
const DEFLATE: u8 = 16;
/// `Conn::last_id` before the first long-poll answer: poll without a cursor.
const NO_CURSOR: u64 = u64::MAX;

/// One connection: 40 bytes in the slab.
///
/// A Bayeux client costs the same 40 bytes here (its phase is `st`, its request counter
/// `last_id`) plus 24 bytes in [`Worker::client_ids`], 64 in all: the clientId is needed for
/// every request, and edgecomet's (128 bits as 32 hex digits) fits inline in a [`ClientId`]
/// (another server's longer ids are boxed: + their length). Keeping the id in the entry would
/// cost every WebSocket, SSE and long-poll connection 24 bytes for nothing; keeping it inline
/// on the heap as a `String` would cost a 32-byte allocation plus 24 bytes.
struct Conn {
    /// Non-blocking socket, registered with mio by fd (4 bytes).
    sock: TcpStream,
    st: St,
    /// SSE parser state between reads ([`AFTER_CR`]), Bayeux's [`UNSENT`]; fits in the padding
    /// after `st`.
    flags: u8,
    chan: u32,
    /// Next sequence number expected on this connection's channel.
    next: u32,
    /// Seen-bitmap of the 64 sequence numbers below `next` (bit i = next - 1 - i).
    window: u64,
    /// A frame or response head split across reads. Boxed so that the common case (nothing
    /// pending) costs 8 bytes, not the 24 of an empty `Vec`.
    #[allow(clippy::box_collection)]
    partial: Option<Box<Vec<u8>>>,
    /// Long-poll: the `cursor` of the last answer, sent with the next poll ([`NO_CURSOR`] at
    /// first). Bayeux: the `id` of the last request written (0 before the handshake). Costs 8
    /// bytes per connection whatever the transport (32 → 40 bytes): a side table for long-poll
    /// only would save 120 KB per 15,000 WebSocket connections and cost a second structure to
    /// keep in step with the slab.
    last_id: u64,
}

impl Conn {
    fn is_open(&self) -> bool {
        matches!(self.st, St::Open | St::Resend)
    }
}

const WAKER: Token = Token(usize::MAX);
const SCRATCH: usize = 64 * 1024;
/// Largest handshake response head accepted.
const MAX_HEAD: usize = longpoll::MAX_HEAD;
/// Largest frame, SSE event or long-poll answer accepted from the server (more fails the
/// connection, so a hostile or broken server cannot make a leftover grow without bound).
const MAX_FRAME: usize = 64 << 20;

struct Worker {
    plan: WorkerPlan,
    poll: Poll,
    conns: Slab<Conn>,
    /// (slot, deadline) of connections not yet open, in start order (deadlines increase).
    pending: VecDeque<(usize, Instant)>,
    in_flight: usize,
    attempted: u64,
    established: u64,
    /// Connections that became open, and open ones this client closed for `target N`
    /// (`--stages`), since the start: the per-second rates of `--jsonl`.
    opened: u64,
    stage_closed: u64,
    errors: Errors,
    deliveries: u64,
    duplicated: u64,
    reordered: u64,
    foreign: u64,
    gaps: u64,
    /// Unique messages received, per channel index (over this worker's connections).
    unique: Vec<u64>,
    hist: Histogram<u64>,
    /// The latencies since the last progress line (sent with it, then cleared): the
    /// coordinator's per-second p50/p99 (`--jsonl`).
    hist_tick: Histogram<u64>,
    /// See [`Final::broadcasts`], [`Final::load_deliveries`], [`Final::load_last_ns`].
    broadcasts: Vec<(u64, u64)>,
    load_deliveries: u64,
    load_last_ns: u64,
    scratch: Vec<u8>,
    start: Instant,
    ramp_end: Option<Instant>,
    /// Per channel: the request (WebSocket, SSE), or for long-poll its start, up to the channel
    /// name (the query and the rest of the head follow, see [`Worker::poll_request`]).
    request: Vec<Vec<u8>>,
    /// The next long-poll request is assembled here.
    poll_buf: Vec<u8>,
    /// SSE: the data lines of an event, joined.
    sse_data: Vec<u8>,
    /// Bayeux: each connection's clientId; Socket.IO over polling: its Engine.IO sid. Indexed by
    /// slab key (empty for other transports).
    client_ids: Vec<ClientId>,
    /// Bayeux: the WebSocket upgrade request (`GET {bayeux_path}`); Socket.IO: `GET
    /// {socketio_path}?EIO=4&transport=websocket`.
    upgrade: Vec<u8>,
    /// Bayeux: the JSON of the next request, and the clientId as text, assembled here.
    bayeux_body: Vec<u8>,
    client_text: String,
    /// Slow readers closed by the server, and the messages slow readers read.
    slow_closed: u64,
    slow_deliveries: u64,
    /// Bytes each slow reader may read per second, the last time they did, and the fraction of
    /// a byte carried over.
    slow_rate: u64,
    slow_last: Instant,
    slow_carry: f64,
    /// At the end: slow readers read what is left, to see whether the server closed them
    /// ([`Worker::drain_slow`]); `drained` counts the bytes.
    draining: bool,
    drained: u64,
    /// `--churn`: connections closed to be replaced, when the last were, the fraction carried
    /// over, and where the next search for an open connection starts in the slab.
    churned: u64,
    churn_first: Option<Instant>,
    churn_last: Option<Instant>,
    churn_carry: f64,
    churn_cursor: usize,
    /// TLS (`wss://`, `https://`): the settings and session store every connection of this
    /// process shares (so that a new connection resumes an earlier session); `None`: plaintext.
    tls: Option<TlsClient>,
    /// TLS: each connection's session, indexed by slab key (empty in plaintext). Boxed, so that
    /// a slot costs 8 bytes; the session itself is what rustls' unbuffered client keeps (its
    /// size: `tls::tests`), no buffers but an incomplete record or unsent ciphertext while they
    /// last.
    sessions: Vec<Option<Box<ClientTls>>>,
    /// TLS: records to send are encrypted here; plaintext read is decrypted into `tls_plain`.
    tls_out: Vec<u8>,
    tls_plain: Vec<u8>,
    /// TLS handshakes completed, resumed, completed during the ramp; the first failure's text.
    tls_handshakes: u64,
    tls_resumed: u64,
    tls_ramp_handshakes: u64,
    tls_first_error: Option<String>,
    /// WebSocket frames and bytes received, permessage-deflate answers (see [`WsWire`]); the
    /// first failed extension answer's reason.
    ws: WsWire,
    ws_extension_first_error: Option<String>,
    /// `--deflate`: the inflater of the connections whose server resets its context for every
    /// message (`server_no_context_takeover`, as edgecomet answers), reset before each; `None`
    /// without `--deflate` (nothing allocated).
    inflate_shared: Option<Decompress>,
    /// The connections whose server keeps its context across messages: an inflater each, by
    /// slab key (empty while there are none, as against edgecomet).
    inflate_own: Vec<Option<Decompress>>,
    /// The message being inflated (its buffer reused: it grows to the largest message).
    inflater: deflate::Inflater,
    /// A fragmented uncompressed message reassembled (empty unless a server fragments).
    ws_message: Vec<u8>,
}

/// Runs a worker to completion. `commands` yields lines from the coordinator.
pub fn run(plan: WorkerPlan) -> io::Result<()> {
    let poll = Poll::new()?;
    let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel::<Cmd>();
    {
        let waker = waker.clone();
        std::thread::spawn(move || {
            // A "close" line or the end of stdin ends the run; "target N" sets the connections
            // to keep open.
            for line in io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                match Cmd::parse(&line) {
                    Some(Cmd::Close) => break,
                    Some(cmd) => {
                        let _ = tx.send(cmd);
                        let _ = waker.wake();
                    }
                    None => continue,
                }
            }
            let _ = tx.send(Cmd::Close);
            let _ = waker.wake();
        });
    }
    let channels = plan.channels.max(1) as usize;
    let request = (0..channels)
        .map(|c| {
            let path = format!(
                "{}{}",
                plan.path_prefix,
                channel_name(&plan.channel, c as u32, plan.channels)
            );
            let token = plan.token.as_deref();
            match plan.transport {
                Transport::Ws => bearer(upgrade(&plan, &path), token),
                Transport::Sse => bearer(
                    format!(
                        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                        plan.host
                    ),
                    token,
                ),
                Transport::Longpoll => format!("GET {path}"),
                // The Bayeux channel of the native channel `a/b` is `/a/b`.
                Transport::Bayeux => format!("/{}", native_channel(&plan.path_prefix, &path)),
                // The CONNECT packet asking for the channel.
                Transport::Socketio => {
                    let name = native_channel(&plan.path_prefix, &path);
                    return socketio::connect_packet(name, token);
                }
            }
            .into_bytes()
        })
        .collect();
    let upgrade = match plan.transport {
        Transport::Socketio => upgrade(&plan, &socketio::websocket_path(&plan.socketio_path)),
        _ => upgrade(&plan, &plan.bayeux_path),
    }
    .into_bytes();
    let broadcasts = vec![(0, 0); plan.broadcasts as usize];
    let tls = match &plan.tls {
        Some(p) => Some(TlsClient::new(p).map_err(io::Error::other)?),
        None => None,
    };
    let mut w = Worker {
        conns: Slab::with_capacity(plan.conns as usize),
        plan,
        poll,
        pending: VecDeque::new(),
        in_flight: 0,
        attempted: 0,
        established: 0,
        opened: 0,
        stage_closed: 0,
        errors: Errors::default(),
        deliveries: 0,
        duplicated: 0,
        reordered: 0,
        foreign: 0,
        gaps: 0,
        unique: vec![0; channels],
        // Latencies up to 100 s at 3 significant digits.
        hist: Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds"),
        hist_tick: Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds"),
        broadcasts,
        load_deliveries: 0,
        load_last_ns: 0,
        scratch: vec![0u8; SCRATCH + 2 * MAX_HEAD],
        start: Instant::now(),
        ramp_end: None,
        request,
        poll_buf: Vec::with_capacity(256),
        sse_data: Vec::new(),
        client_ids: Vec::new(),
        upgrade,
        bayeux_body: Vec::with_capacity(256),
        client_text: String::with_capacity(64),
        slow_closed: 0,
        slow_deliveries: 0,
        slow_rate: 0,
        slow_last: Instant::now(),
        slow_carry: 0.0,
        draining: false,
        drained: 0,
        churned: 0,
        churn_first: None,
        churn_last: None,
        churn_carry: 0.0,
        churn_cursor: 0,
        tls,
        sessions: Vec::new(),
        tls_out: Vec::with_capacity(4096),
        tls_plain: Vec::new(),
        tls_handshakes: 0,
        tls_resumed: 0,
        tls_ramp_handshakes: 0,
        tls_first_error: None,
        ws: WsWire::default(),
        ws_extension_first_error: None,
        inflate_shared: None,
        inflate_own: Vec::new(),
        inflater: deflate::Inflater::default(),
        ws_message: Vec::new(),
    };
    if w.plan.deflate {
        w.inflate_shared = Some(deflate::decompressor());
    }
    w.slow_rate = w.plan.slow_read_rate;
    // Our fixed costs (scratch buffer, histogram, slab) are counted before the first connection.
    w.scratch.fill(0);
    let pss_before = memory::own_mem().map(|m| m.pss).unwrap_or(0);
    let mut events = Events::with_capacity(1024);
    let mut last_report = Instant::now();
    let mut pss_open = 0;
    // `--stages`: the connections open when `pss_open` was read; it is read again whenever the
    // target goes below what is open (a peak just passed) with more open than last time.
    let mut pss_open_at = 0;
    loop {
        let ramping = w.attempted < w.plan.conns;
        let timeout = if ramping || !w.pending.is_empty() {
            Duration::from_millis(2)
        } else {
            Duration::from_millis(100)
        };
        if let Err(e) = w.poll.poll(&mut events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() != WAKER {
                w.on_event(ev.token().0, ev.is_read_closed() || ev.is_error());
            }
        }
        if w.slow_rate > 0 && w.slow_last.elapsed() >= Duration::from_millis(100) {
            w.read_slow();
        }
        if w.plan.churn_rate > 0.0 && w.ramp_end.is_some() {
            w.churn();
        }
        w.start_connections();
        w.expire();
        if w.ramp_end.is_none() && w.attempted == w.plan.conns && w.pending.is_empty() {
            w.ramp_end = Some(Instant::now());
            pss_open = memory::own_mem().map(|m| m.pss).unwrap_or(0);
            pss_open_at = w.established;
            w.report_progress()?;
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = Instant::now();
            w.report_progress()?;
        }
        let mut close = false;
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Close => close = true,
                Cmd::Target(n) => {
                    if n < w.established && w.established > pss_open_at {
                        pss_open = memory::own_mem().map(|m| m.pss).unwrap_or(0);
                        pss_open_at = w.established;
                    }
                    w.retarget(n);
                }
            }
        }
        if close {
            break;
        }
    }
    if w.plan.churn_rate > 0.0 {
        // Let the replacements in progress settle (open, or fail by their deadline), so that
        // the final count is of settled connections.
        w.plan.churn_rate = 0.0;
        while !w.pending.is_empty() {
            if let Err(e) = w.poll.poll(&mut events, Some(Duration::from_millis(5)))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    w.on_event(ev.token().0, ev.is_read_closed() || ev.is_error());
                }
            }
            w.expire();
        }
    }
    w.drain_slow();
    let fin = w.finish(pss_before, pss_open);
    emit(&Line::Final(Box::new(fin)))?;
    Ok(())
}

/// A line from the coordinator on stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    /// `close`: end the run.
    Close,
    /// `target N`: keep N connections open (`--stages`).
    Target(u64),
}

impl Cmd {
    fn parse(line: &str) -> Option<Cmd> {
        let line = line.trim();
        if line == "close" {
            return Some(Cmd::Close);
        }
        line.strip_prefix("target ")?
            .trim()
            .parse()
            .ok()
            .map(Cmd::Target)
    }
}

/// How a worker reaches `target` open connections from `open` open, `in_flight` in progress
/// and `unstarted` still to start: (connections to start beyond those, connections not to start
/// after all, open connections to close). In-progress ones are left to finish: the next
/// target corrects for them.
fn retarget_plan(target: u64, open: u64, in_flight: u64, unstarted: u64) -> (u64, u64, u64) {
    let have = open + in_flight + unstarted;
    if target >= have {
        return (target - have, 0, 0);
    }
    let excess = have - target;
    let unstart = excess.min(unstarted);
    let close = (excess - unstart).min(open);
    (0, unstart, close)
}

/// The native channel a subscribe path names, for the transports that name it apart from the
/// path (Bayeux, Socket.IO): what follows the last `/sub/` of the prefix (`/sub/a/b` → `a/b`,
/// the channel `POST /pub/a/b` publishes on), or the last segment when the prefix has no `/sub/`
/// (a custom --pub-path).
fn native_channel<'a>(prefix: &str, path: &'a str) -> &'a str {
    match prefix.rfind("/sub/") {
        Some(i) => &path[i + 5..],
        None => &path[prefix.len()..],
    }
}

/// The WebSocket upgrade request for `path`, offering permessage-deflate with `--deflate`.
fn upgrade(plan: &WorkerPlan, path: &str) -> String {
    let req = ws::upgrade_request(path, &plan.host);
    if plan.deflate {
        deflate::offer(req)
    } else {
        req
    }
}

/// `req` (a request head) with `Authorization: Bearer {token}` added when there is a token.
fn bearer(mut req: String, token: Option<&str>) -> String {
    if let Some(t) = token {
        // Before the empty line that ends the head.
        req.truncate(req.len() - 2);
        req.push_str("Authorization: Bearer ");
        req.push_str(t);
        req.push_str("\r\n\r\n");
    }
    req
}

fn emit(line: &Line) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, line).map_err(io::Error::other)?;
    out.write_all(b"\n")?;
    out.flush()
}

impl Worker {
    fn progress(&self) -> Progress {
        Progress {
            index: self.plan.index,
            established: self.established,
            opened: self.opened,
            stage_closed: self.stage_closed,
            latency_tick: self
                .hist_tick
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            attempted: self.attempted,
            errors: self.errors.clone(),
            deliveries: self.deliveries,
            ramp_done: self.ramp_end.is_some(),
            churned: self.churned,
            churn_secs: self.churn_first.map_or(0.0, |f| {
                self.churn_last.unwrap_or(f).duration_since(f).as_secs_f64()
            }),
            ramp_secs: self
                .ramp_end
                .unwrap_or_else(Instant::now)
                .duration_since(self.start)
                .as_secs_f64(),
            tls_handshakes: self.tls_handshakes,
            tls_resumed: self.tls_resumed,
            tls_ramp_handshakes: self.tls_ramp_handshakes,
            ws: self.ws,
        }
    }

    /// Sends a progress line, with the latencies since the last one.
    fn report_progress(&mut self) -> io::Result<()> {
        let p = self.progress();
        self.hist_tick.reset();
        emit(&Line::Progress(p))
    }

    /// `target N` (`--stages`): more connections to start, or fewer: those not started yet
    /// are not, then open ones are closed, round robin in slab order as `--churn` takes them.
    fn retarget(&mut self, target: u64) {
        let unstarted = self.plan.conns - self.attempted;
        let (more, unstart, mut close) =
            retarget_plan(target, self.established, self.in_flight as u64, unstarted);
        self.plan.conns = self.plan.conns + more - unstart;
        let cap = self.conns.capacity().max(1);
        let mut scanned = 0;
        while close > 0 && scanned < cap && !self.conns.is_empty() {
            let key = self.churn_cursor % cap;
            self.churn_cursor = key + 1;
            scanned += 1;
            if self.conns.get(key).is_some_and(Conn::is_open) {
                self.close_notify(key);
                self.drop_conn(key);
                self.stage_closed += 1;
                close -= 1;
            }
        }
    }

    /// Starts as many connections as the rate and the in-flight bound allow.
    fn start_connections(&mut self) {
        let allowed = match self.plan.rate {
            Some(r) => ((self.start.elapsed().as_secs_f64() * r) as u64 + 1).min(self.plan.conns),
            None => self.plan.conns,
        };
        while self.attempted < allowed && self.in_flight < self.plan.max_in_flight {
            let g = self.plan.offset + self.attempted;
            self.attempted += 1;
            let src = if self.plan.sources.is_empty() {
                None
            } else {
                Some(self.plan.sources[(g % self.plan.sources.len() as u64) as usize])
            };
            let chan = (g % u64::from(self.plan.channels.max(1))) as u32;
            let target = self.plan.targets[(g % self.plan.targets.len() as u64) as usize];
            match sys::connect(target, src) {
                Ok(sock) => {
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&sock.as_raw_fd()),
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        self.errors.count(&e);
                        continue;
                    }
                    let bayeux = self.plan.transport == Transport::Bayeux;
                    let sid = self.plan.transport == Transport::Socketio
                        && self.plan.socketio == SioTransport::Polling;
                    entry.insert(Conn {
                        sock,
                        st: St::Connecting,
                        flags: if is_slow(g, self.plan.slow_fraction) {
                            SLOW
                        } else {
                            0
                        },
                        chan,
                        next: 0,
                        window: 0,
                        partial: None,
                        last_id: if bayeux { 0 } else { NO_CURSOR },
                    });
                    if (bayeux || sid) && self.client_ids.len() <= key {
                        self.client_ids.resize(key + 1, ClientId::None);
                    }
                    self.in_flight += 1;
                    self.pending.push_back((
                        key,
                        Instant::now() + Duration::from_millis(self.plan.connect_timeout_ms),
                    ));
                }
                Err(e) => self.errors.count(&e),
            }
        }
    }

    /// Fails connections that did not open in time.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(key, deadline)) = self.pending.front() {
            let open = self.conns.get(key).is_none_or(Conn::is_open);
            if open {
                self.pending.pop_front();
                continue;
            }
            if deadline > now {
                break;
            }
            self.pending.pop_front();
            self.errors.timeout += 1;
            self.drop_conn(key);
        }
    }

    fn drop_conn(&mut self, key: usize) {
        if let Some(id) = self.client_ids.get_mut(key) {
            *id = ClientId::None;
        }
        if let Some(s) = self.sessions.get_mut(key) {
            *s = None;
        }
        if let Some(d) = self.inflate_own.get_mut(key) {
            *d = None;
        }
        if let Some(c) = self.conns.try_remove(key) {
            if c.is_open() {
                self.established -= 1;
            } else {
                self.in_flight -= 1;
            }
        }
    }

    fn fail(&mut self, key: usize, e: &io::Error) {
        let open = self.conns.get(key).is_some_and(Conn::is_open);
        if open {
            self.closed_by_server(key);
        } else {
            self.errors.count(e);
            self.drop_conn(key);
        }
    }

    /// The server closed an open connection (close frame, EOF, reset): an error, except for a
    /// slow reader, which the server is expected to let go as a slow consumer.
    fn closed_by_server(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| c.flags & SLOW != 0) {
            self.slow_closed += 1;
        } else {
            self.errors.closed_by_server += 1;
        }
        self.drop_conn(key);
    }

    /// The slab keys of the slow readers still open.
    fn open_slow_readers(&self) -> Vec<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| c.flags & SLOW != 0 && c.is_open())
            .map(|(k, _)| k)
            .collect()
    }

    /// Reads what the slow readers may read since the last call: `slow_rate` bytes per second
    /// each.
    fn read_slow(&mut self) {
        let budget =
            self.slow_rate as f64 * self.slow_last.elapsed().as_secs_f64() + self.slow_carry;
        self.slow_last = Instant::now();
        let whole = budget.floor();
        self.slow_carry = budget - whole;
        if whole < 1.0 {
            return;
        }
        for k in self.open_slow_readers() {
            self.read(k, whole as usize, true);
        }
    }

    /// `--churn`: closes `churn_rate` open connections per second (the client closes first, as
    /// a long-poll client without keep-alive or a browser leaving a page does: the TIME-WAIT is
    /// on this side, holding the port) and starts as many new ones, through the same pacing,
    /// in-flight bound and error counting as the ramp. Open connections are taken in slab order,
    /// round robin.
    fn churn(&mut self) {
        let now = Instant::now();
        let last = *self.churn_last.get_or_insert(now);
        self.churn_first.get_or_insert(now);
        let due = self.plan.churn_rate * now.duration_since(last).as_secs_f64() + self.churn_carry;
        self.churn_last = Some(now);
        let mut n = due.floor() as u64;
        self.churn_carry = due - n as f64;
        let mut scanned = 0;
        let cap = self.conns.capacity().max(1);
        while n > 0 && scanned < cap && !self.conns.is_empty() {
            let key = self.churn_cursor % cap;
            self.churn_cursor = key + 1;
            scanned += 1;
            if self.conns.get(key).is_some_and(Conn::is_open) {
                self.close_notify(key);
                self.drop_conn(key);
                self.churned += 1;
                self.plan.conns += 1;
                n -= 1;
            }
        }
    }

    /// At the end of a run, slow readers read everything left. A server that let one go as a
    /// slow consumer queued its close behind the unread messages (a stalled reader cannot see
    /// it otherwise): reading them brings the close frame or the EOF, counted in `slow_closed`.
    /// What is read now is not counted as delivered. Stops when no slow reader is left open,
    /// after 500 ms without a byte, or after 5 s.
    fn drain_slow(&mut self) {
        if self.plan.slow_fraction <= 0.0 {
            return;
        }
        self.draining = true;
        let start = Instant::now();
        let mut quiet = Instant::now();
        while start.elapsed() < Duration::from_secs(5)
            && quiet.elapsed() < Duration::from_millis(500)
        {
            let keys = self.open_slow_readers();
            if keys.is_empty() {
                break;
            }
            let before = self.drained;
            for k in keys {
                self.read(k, usize::MAX, true);
            }
            if self.drained > before {
                quiet = Instant::now();
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// `closed`: the event says the peer closed or the socket failed.
    fn on_event(&mut self, key: usize, closed: bool) {
        if !self.conns.contains(key) {
            return;
        }
        if !self.sessions.is_empty()
            && let Err(e) = self.flush_tls(key)
        {
            return self.fail(key, &e);
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.flags & SLOW != 0 && c.is_open() {
            // A slow reader reads on its own clock (read_slow). A stalled one never reads, so
            // the server's close is seen here, with unread bytes still queued.
            if closed && self.slow_rate == 0 {
                self.closed_by_server(key);
            }
            return;
        }
        if c.st == St::Connecting {
            match c.sock.take_error() {
                Ok(Some(e)) | Err(e) => return self.fail(key, &e),
                Ok(None) => {}
            }
            match c.sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // still connecting
                Err(e) => return self.fail(key, &e),
            }
            let r = if self.tls.is_some() {
                self.start_tls(key)
            } else {
                self.on_connected(key)
            };
            if let Err(e) = r {
                return self.fail(key, &e);
            }
        } else if c.st == St::Resend {
            match self.send_poll(key) {
                Ok(_) => {}
                Err(e) => return self.fail(key, &e),
            }
        } else if c.flags & UNSENT != 0 {
            let r = if self.plan.transport == Transport::Socketio {
                self.send_sio(key)
            } else {
                self.send_bayeux(key)
            };
            if let Err(e) = r {
                return self.fail(key, &e);
            }
        }
        // A read that returns less than asked emptied the socket: the next byte to arrive is a
        // new edge. Only once the peer has closed (no edge will follow) is it read to the end.
        self.read(key, usize::MAX, closed);
    }

    /// The connection `key` is ready for its first request (TCP connected; over TLS, the
    /// handshake done): the WebSocket upgrade or SSE request, the first poll or the Bayeux
    /// handshake. If the socket would block, it stays `Connecting` and is tried again on the
    /// next writable event (a TLS write never blocks: its ciphertext is queued).
    fn on_connected(&mut self, key: usize) -> io::Result<()> {
        if self.plan.transport == Transport::Bayeux && self.plan.bayeux == ConnType::LongPolling {
            // Long-polling: the handshake goes out at once on the new connection.
            self.conns[key].st = St::Handshake;
            return self.send_bayeux(key);
        }
        if self.plan.transport == Transport::Socketio && self.plan.socketio == SioTransport::Polling
        {
            // Polling: the handshake `GET` goes out at once.
            self.conns[key].st = St::Handshake;
            return self.send_sio(key);
        }
        if self.plan.transport == Transport::Longpoll {
            // No answer comes until a message is published (or the poll times out): the
            // connection counts as open once its first poll is sent.
            if self.send_poll(key)? {
                self.in_flight -= 1;
                self.established += 1;
                self.opened += 1;
            }
            return Ok(());
        }
        let c = &mut self.conns[key];
        let req = if matches!(self.plan.transport, Transport::Bayeux | Transport::Socketio) {
            &self.upgrade
        } else {
            &self.request[c.chan as usize]
        };
        let tls = self.sessions.get_mut(key).and_then(|s| s.as_deref_mut());
        match tls::send(&c.sock, tls, req, &mut self.tls_out) {
            Ok(n) if n == req.len() => c.st = St::Upgrading,
            Ok(_) => return Err(io::Error::other("short write of the request")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Reads what `key` has, at most `budget` bytes (a slow reader's share), and handles it.
    /// Reads what `key` has, up to `budget` bytes: until the socket would block (`to_the_end`),
    /// or until a read returns less than it asked for (the socket was emptied by it: one
    /// `read(2)` per message instead of two).
    fn read(&mut self, key: usize, mut budget: usize, to_the_end: bool) {
        if !self.sessions.is_empty() {
            return self.read_tls(key, budget);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        while budget > 0
            && let Some(c) = self.conns.get_mut(key)
        {
            let want = SCRATCH.min(budget);
            let start = c.partial.as_ref().map_or(0, |p| p.len());
            if let Some(p) = c.partial.take() {
                // A large frame in progress: room for it plus one more read (bounded by
                // MAX_FRAME + SCRATCH).
                if scratch.len() < start + SCRATCH {
                    scratch.resize(start + SCRATCH, 0);
                }
                scratch[..start].copy_from_slice(&p);
            }
            match c.sock.read(&mut scratch[start..start + want]) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::UnexpectedEof);
                    self.fail(key, &e);
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    if self.draining {
                        self.drained += n as u64;
                    }
                    let total = start + n;
                    let used = self.consume(key, &scratch[..total]);
                    if let Some(c) = self.conns.get_mut(key)
                        && used < total
                    {
                        c.partial = Some(Box::new(scratch[used..total].to_vec()));
                    }
                    if n < want && !to_the_end {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if start > 0
                        && let Some(c) = self.conns.get_mut(key)
                    {
                        c.partial = Some(Box::new(scratch[..start].to_vec()));
                    }
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if start > 0
                        && let Some(c) = self.conns.get_mut(key)
                    {
                        c.partial = Some(Box::new(scratch[..start].to_vec()));
                    }
                }
                Err(e) => {
                    self.fail(key, &e);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// A gap the server reported on `key` (messages it could no longer deliver). A slow
    /// reader's are expected (it is one of the slow consumers the server lets go) and not counted.
    fn gap(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| c.flags & SLOW == 0) {
            self.gaps += 1;
        }
    }

    fn on_message(&mut self, key: usize, payload: &[u8]) {
        if self.conns[key].flags & SLOW != 0 {
            if !self.draining {
                self.slow_deliveries += 1;
            }
            return;
        }
        self.deliveries += 1;
        let Some((seq, sent_ns)) = msg::parse(payload) else {
            self.foreign += 1;
            return;
        };
        let now = msg::now_ns();
        let us = now.saturating_sub(sent_ns) / 1000;
        let _ = self.hist.record(us.max(1));
        let _ = self.hist_tick.record(us.max(1));
        if let Some(b) = self.broadcasts.get_mut(seq as usize) {
            b.0 += 1;
            b.1 = b.1.max(us);
        } else {
            self.load_deliveries += 1;
            self.load_last_ns = self.load_last_ns.max(now);
        }
        let c = &mut self.conns[key];
        let chan = c.chan as usize;
        if seq >= c.next {
            // New: shift the window past the skipped numbers.
            let shift = u64::from(seq - c.next) + 1;
            c.window = if shift >= 64 { 0 } else { c.window << shift } | 1;
            c.next = seq + 1;
            self.unique[chan] += 1;
        } else {
            let back = u64::from(c.next - 1 - seq);
            if back < 64 && c.window & (1 << back) != 0 {
                self.duplicated += 1;
            } else {
                // Arrived after a later one: counted as reordered (and received).
                if back < 64 {
                    c.window |= 1 << back;
                }
                self.reordered += 1;
                self.unique[chan] += 1;
            }
        }
    }

    fn finish(mut self, pss_before: u64, pss_open: u64) -> Final {
        let mut per_chan_conns = vec![0u64; self.unique.len()];
        let mut slow_open = 0;
        for (_, c) in self.conns.iter() {
            if c.is_open() && c.flags & SLOW != 0 {
                slow_open += 1;
            } else if c.is_open() {
                per_chan_conns[c.chan as usize] += 1;
            }
        }
        let progress = self.progress();
        if self.tls.is_some() {
            let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
            for k in keys {
                self.close_notify(k);
            }
        }
        // Close everything: dropping a socket sends FIN.
        self.conns.clear();
        self.client_ids.clear();
        Final {
            progress,
            per_channel: per_chan_conns
                .iter()
                .zip(self.unique.iter())
                .enumerate()
                .map(|(i, (n, u))| (i as u32, *n, *u))
                .collect(),
            duplicated: self.duplicated,
            reordered: self.reordered,
            foreign: self.foreign,
            gaps: self.gaps,
            slow_open,
            slow_closed: self.slow_closed,
            slow_deliveries: self.slow_deliveries,
            broadcasts: std::mem::take(&mut self.broadcasts),
            load_deliveries: self.load_deliveries,
            load_last_ns: self.load_last_ns,
            latency: self
                .hist
                .iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
            pss_before,
            pss_open,
            tls_first_error: self.tls_first_error.take(),
            ws_extension_first_error: self.ws_extension_first_error.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinator_commands() {
        assert_eq!(Cmd::parse("close"), Some(Cmd::Close));
        assert_eq!(Cmd::parse(" close \n"), Some(Cmd::Close));
        assert_eq!(Cmd::parse("target 250"), Some(Cmd::Target(250)));
        assert_eq!(Cmd::parse("target 0"), Some(Cmd::Target(0)));
        assert_eq!(Cmd::parse("target -1"), None);
        assert_eq!(Cmd::parse("target"), None);
        assert_eq!(Cmd::parse("hello"), None);
    }

    #[test]
    fn retargeting_opens_more_or_skips_then_closes() {
        // (target, open, in flight, unstarted) -> (start more, do not start, close)
        assert_eq!(retarget_plan(100, 0, 0, 0), (100, 0, 0));
        assert_eq!(retarget_plan(100, 40, 10, 20), (30, 0, 0));
        assert_eq!(retarget_plan(70, 40, 10, 20), (0, 0, 0));
        // Fewer: the unstarted go first, then open ones close; in-flight ones are left.
        assert_eq!(retarget_plan(60, 40, 10, 20), (0, 10, 0));
        assert_eq!(retarget_plan(30, 40, 10, 20), (0, 20, 20));
        assert_eq!(retarget_plan(0, 40, 10, 20), (0, 20, 40));
        assert_eq!(retarget_plan(0, 0, 10, 0), (0, 0, 0));
    }

    #[test]
    fn native_channels() {
        assert_eq!(native_channel("/sub/", "/sub/news"), "news");
        assert_eq!(native_channel("/sub/a/", "/sub/a/b-3"), "a/b-3");
        assert_eq!(native_channel("/app/sub/a/", "/app/sub/a/b"), "a/b");
        assert_eq!(native_channel("/x/", "/x/b"), "b");
    }

    #[test]
    fn bearer_header() {
        assert_eq!(
            bearer("GET / HTTP/1.1\r\n\r\n".into(), None),
            "GET / HTTP/1.1\r\n\r\n"
        );
        assert_eq!(
            bearer("GET / HTTP/1.1\r\nHost: h\r\n\r\n".into(), Some("t")),
            "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\n\r\n"
        );
    }

    #[test]
    fn conn_entry_is_small() {
        // The flood process's own cost per connection must stay far below 1 KB. 40 bytes: the
        // 32 of the WebSocket-only entry plus the long-poll cursor (8); the SSE parser's bit
        // lives in the padding after `st`.
        assert_eq!(std::mem::size_of::<Conn>(), 40);
    }
}
