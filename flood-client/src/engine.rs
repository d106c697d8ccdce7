//! One flood worker process: opens its share of subscriber connections (WebSocket, Server-Sent
//! Events, long-poll or Bayeux clients) at a paced rate, holds them, reads every message, checks sequence numbers
//! and records delivery latency, and reports to the coordinator as JSON lines on stdout. It stops
//! when its stdin says `close` or closes.
//!
//! Cost per connection in this process: one slab entry ([`Conn`], 40 bytes) and an optional
//! leftover buffer that exists only while a frame, an event or a long-poll answer is split across
//! reads; a Bayeux client adds its clientId in a side table (24 bytes, see [`Conn`]). Reads land
//! in one 64 KiB scratch buffer. Never a thread or a timer per connection.

use std::collections::VecDeque;
use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use serde::{Deserialize, Serialize};
use slab::Slab;

use crate::bayeux::{self, ClientId, ConnType, Event, Unit};
use crate::longpoll;
use crate::memory;
use crate::msg;
use crate::sse;

/// How a connection subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket: `GET /sub/{channel}` with an upgrade; each message is a text frame.
    #[default]
    Ws,
    /// Server-Sent Events: `GET /sub/{channel}` with `Accept: text/event-stream`.
    Sse,
    /// JSON long-poll: `GET /sub/{channel}?cursor=ID` with `Accept: application/json`, again and
    /// again on one keep-alive connection.
    Longpoll,
    /// CometD/Bayeux 1.0 on the Bayeux endpoint: `/meta/handshake`, `/meta/subscribe` to the
    /// channel, then `/meta/connect` again and again, over long-polling (one keep-alive
    /// connection) or a WebSocket (`--bayeux-transport`). Messages arrive in connect replies.
    Bayeux,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Longpoll => "longpoll",
            Transport::Bayeux => "bayeux",
        }
    }
}

/// What the coordinator tells a worker to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub index: u32,
    pub conns: u64,
    /// Global index of this worker's first connection (channel = global index % channels).
    pub offset: u64,
    /// Connections per second for this worker; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Server addresses; connection g goes to `targets[g % len]`.
    pub targets: Vec<SocketAddr>,
    pub host: String,
    /// Path prefix without the channel, e.g. `/sub/`.
    pub path_prefix: String,
    pub channel: String,
    pub channels: u32,
    pub sources: Vec<Ipv4Addr>,
    pub connect_timeout_ms: u64,
    /// Connections in progress at once (connect + handshake).
    pub max_in_flight: usize,
    pub transport: Transport,
    /// Bayeux: long-polling or websocket.
    #[serde(default)]
    pub bayeux: ConnType,
    /// Bayeux: the endpoint's path (`/cometd`).
    #[serde(default)]
    pub bayeux_path: String,
    /// Fraction of the connections that read slowly once open (which ones: [`is_slow`]).
    #[serde(default)]
    pub slow_fraction: f64,
    /// Bytes per second each slow reader reads; 0 = nothing once open.
    #[serde(default)]
    pub slow_read_rate: u64,
    /// Once every connection has been attempted: open connections closed by this client per
    /// second, each replaced by a new one ([`Worker::churn`]).
    #[serde(default)]
    pub churn_rate: f64,
    /// Messages with a sequence number below this are broadcasts (`--broadcasts`): their
    /// deliveries and latest latency are kept per number; later numbers are the publish load.
    #[serde(default)]
    pub broadcasts: u32,
}

/// Whether connection `g` (global index) is a slow reader when a fraction `f` of them are:
/// every time the running count `floor(g * f)` steps up, so that slow readers are spread evenly
/// (f = 0.1: connections 9, 19, 29, ...) and the total is `floor(N * f)` whatever the split into
/// processes.
pub fn is_slow(g: u64, f: f64) -> bool {
    f > 0.0 && ((g + 1) as f64 * f).floor() > (g as f64 * f).floor()
}

/// Errors by kind, as the summary names them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Errors {
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub eaddrnotavail: u64,
    pub emfile: u64,
    /// The server answered the upgrade with something other than 101 (WebSocket), the stream
    /// or a poll with something other than 200 (SSE, long-poll).
    pub http_status: u64,
    /// The server sent something this client cannot parse (a malformed response, a long-poll
    /// answer that is not the documented JSON, a frame or event over 64 MiB).
    #[serde(default)]
    pub protocol: u64,
    /// The server closed an established connection (close frame or EOF) before the end.
    pub closed_by_server: u64,
    /// A Bayeux meta reply failed (`successful` not true: `402::Unknown client`, a refused
    /// handshake or subscribe) or advised `reconnect: handshake` / `none`. A real client would
    /// handshake again and lose what was queued for the old one; flood counts it and closes the
    /// connection instead, so that the loss is never silent.
    #[serde(default)]
    pub bayeux: u64,
    pub other: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.refused
            + self.reset
            + self.timeout
            + self.eaddrnotavail
            + self.emfile
            + self.http_status
            + self.protocol
            + self.bayeux
            + self.other
    }

    pub fn add(&mut self, o: &Errors) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.eaddrnotavail += o.eaddrnotavail;
        self.emfile += o.emfile;
        self.http_status += o.http_status;
        self.protocol += o.protocol;
        self.closed_by_server += o.closed_by_server;
        self.bayeux += o.bayeux;
        self.other += o.other;
    }

    fn count(&mut self, e: &io::Error) {
        let slot = match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => &mut self.refused,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => &mut self.reset,
            Some(libc::ETIMEDOUT) => &mut self.timeout,
            Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => &mut self.eaddrnotavail,
            Some(libc::EMFILE) | Some(libc::ENFILE) => &mut self.emfile,
            _ => &mut self.other,
        };
        *slot += 1;
    }
}

/// Progress line, sent every 250 ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub index: u32,
    pub established: u64,
    pub attempted: u64,
    pub errors: Errors,
    pub deliveries: u64,
    /// Every connection has been attempted and is either open or failed.
    pub ramp_done: bool,
    /// Seconds from the first connect to the last connection settled.
    pub ramp_secs: f64,
    /// Connections this client closed to replace them (`--churn`).
    #[serde(default)]
    pub churned: u64,
    /// Seconds from the first of those closes to the last.
    #[serde(default)]
    pub churn_secs: f64,
}

/// The final report of one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Final {
    pub progress: Progress,
    /// Per channel: (channel index, connections on it that were open at the end, unique
    /// messages they received in total).
    pub per_channel: Vec<(u32, u64, u64)>,
    pub duplicated: u64,
    pub reordered: u64,
    /// Frames whose payload did not carry our sequence header (not counted for loss).
    pub foreign: u64,
    /// Gaps the server reported (SSE `gap` events, long-poll `gap` fields): messages it could
    /// no longer deliver.
    #[serde(default)]
    pub gaps: u64,
    /// Slow readers (`--slow-readers`) still open at the end, closed by the server meanwhile
    /// (a slow consumer let go: not an error), and the messages they read. They are left out of
    /// `per_channel`, loss, latency and `deliveries`.
    #[serde(default)]
    pub slow_open: u64,
    #[serde(default)]
    pub slow_closed: u64,
    #[serde(default)]
    pub slow_deliveries: u64,
    /// Per broadcast (sequence number below [`WorkerPlan::broadcasts`]): (deliveries, latest
    /// latency in microseconds).
    #[serde(default)]
    pub broadcasts: Vec<(u64, u64)>,
    /// Deliveries of the publish load (numbers from [`WorkerPlan::broadcasts`] on), and when
    /// the last of them arrived (CLOCK_MONOTONIC ns, 0 = none).
    #[serde(default)]
    pub load_deliveries: u64,
    #[serde(default)]
    pub load_last_ns: u64,
    /// Latency histogram, as (microseconds, count) pairs.
    pub latency: Vec<(u64, u64)>,
    /// This process's PSS before connecting and with every connection open.
    pub pss_before: u64,
    pub pss_open: u64,
}

/// The lines a worker writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Line {
    Progress(Progress),
    Final(Box<Final>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// TCP connect in progress, request not written yet.
    Connecting,
    /// Request written, waiting for the response head (WebSocket 101, SSE 200).
    Upgrading,
    /// Bayeux: `/meta/handshake` sent (or due, [`UNSENT`]), its reply awaited.
    Handshake,
    /// Bayeux: `/meta/subscribe` sent (or due), its reply awaited.
    Subscribe,
    /// Bayeux: the first `/meta/connect` (`advice.timeout` 0) sent (or due), its reply awaited.
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
    errors: Errors,
    deliveries: u64,
    duplicated: u64,
    reordered: u64,
    foreign: u64,
    gaps: u64,
    /// Unique messages received, per channel index (over this worker's connections).
    unique: Vec<u64>,
    hist: Histogram<u64>,
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
    /// Bayeux: each connection's clientId, indexed by slab key (empty for other transports).
    client_ids: Vec<ClientId>,
    /// Bayeux: the WebSocket upgrade request (`GET {bayeux_path}`).
    bayeux_upgrade: Vec<u8>,
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
}

/// Runs a worker to completion. `commands` yields lines from the coordinator.
pub fn run(plan: WorkerPlan) -> io::Result<()> {
    let poll = Poll::new()?;
    let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::channel::<()>();
    {
        let waker = waker.clone();
        std::thread::spawn(move || {
            // Any "close" line or the end of stdin ends the run.
            for line in io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "close" => break,
                    Ok(_) => continue,
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
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
            match plan.transport {
                Transport::Ws => format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n",
                    plan.host
                ),
                Transport::Sse => format!(
                    "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
                    plan.host
                ),
                Transport::Longpoll => format!("GET {path}"),
                // The Bayeux channel of the native channel `a/b` is `/a/b`.
                Transport::Bayeux => {
                    format!("/{}", channel_name(&plan.channel, c as u32, plan.channels))
                }
            }
            .into_bytes()
        })
        .collect();
    let bayeux_upgrade = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        plan.bayeux_path, plan.host
    )
    .into_bytes();
    let broadcasts = vec![(0, 0); plan.broadcasts as usize];
    let mut w = Worker {
        conns: Slab::with_capacity(plan.conns as usize),
        plan,
        poll,
        pending: VecDeque::new(),
        in_flight: 0,
        attempted: 0,
        established: 0,
        errors: Errors::default(),
        deliveries: 0,
        duplicated: 0,
        reordered: 0,
        foreign: 0,
        gaps: 0,
        unique: vec![0; channels],
        // Latencies up to 100 s at 3 significant digits.
        hist: Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds"),
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
        bayeux_upgrade,
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
    };
    w.slow_rate = w.plan.slow_read_rate;
    // Our fixed costs (scratch buffer, histogram, slab) are counted before the first connection.
    w.scratch.fill(0);
    let pss_before = memory::own_mem().map(|m| m.pss).unwrap_or(0);
    let mut events = Events::with_capacity(1024);
    let mut last_report = Instant::now();
    let mut pss_open = 0;
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
            w.report_progress()?;
        }
        if last_report.elapsed() >= Duration::from_millis(250) {
            last_report = Instant::now();
            w.report_progress()?;
        }
        if rx.try_recv().is_ok() {
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

/// The channel name of channel index `c` of `k` (`name` itself when k = 1).
pub fn channel_name(name: &str, c: u32, k: u32) -> String {
    if k <= 1 {
        name.to_string()
    } else {
        format!("{name}-{c}")
    }
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
        }
    }

    fn report_progress(&self) -> io::Result<()> {
        emit(&Line::Progress(self.progress()))
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
            match connect(target, src) {
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
                    if bayeux && self.client_ids.len() <= key {
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
            self.read(k, whole as usize);
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
                self.read(k, usize::MAX);
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
            if self.plan.transport == Transport::Bayeux && self.plan.bayeux == ConnType::LongPolling
            {
                // Long-polling: the handshake goes out at once on the new connection.
                c.st = St::Handshake;
                if let Err(e) = self.send_bayeux(key) {
                    return self.fail(key, &e);
                }
            } else if self.plan.transport == Transport::Longpoll {
                // No answer comes until a message is published (or the poll times out): the
                // connection counts as open once its first poll is sent.
                match self.send_poll(key) {
                    Ok(true) => {
                        self.in_flight -= 1;
                        self.established += 1;
                    }
                    Ok(false) => return,
                    Err(e) => return self.fail(key, &e),
                }
            } else {
                let req = if self.plan.transport == Transport::Bayeux {
                    &self.bayeux_upgrade
                } else {
                    &self.request[c.chan as usize]
                };
                match c.sock.write(req) {
                    Ok(n) if n == req.len() => c.st = St::Upgrading,
                    Ok(_) => {
                        return self.fail(key, &io::Error::other("short write of the request"));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => return self.fail(key, &e),
                }
            }
        } else if c.st == St::Resend {
            match self.send_poll(key) {
                Ok(_) => {}
                Err(e) => return self.fail(key, &e),
            }
        } else if c.flags & UNSENT != 0
            && let Err(e) = self.send_bayeux(key)
        {
            return self.fail(key, &e);
        }
        self.read(key, usize::MAX);
    }

    /// Writes the Bayeux request of `key`'s phase: handshake, subscribe, first connect, connect.
    /// If the socket would block, the request is marked [`UNSENT`] and written on the next
    /// writable event.
    fn send_bayeux(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.conns[key];
        let what = match c.st {
            St::Handshake => bayeux::Request::Handshake,
            St::Subscribe => bayeux::Request::Subscribe,
            St::FirstConnect => bayeux::Request::FirstConnect,
            _ => bayeux::Request::Connect,
        };
        let id = c.last_id + 1;
        let t = self.plan.bayeux;
        self.client_ids[key].write(&mut self.client_text);
        bayeux::request(
            &mut self.bayeux_body,
            what,
            id,
            t,
            &self.client_text,
            // The Bayeux channel name, built from a `String` in `run`: always UTF-8.
            std::str::from_utf8(&self.request[c.chan as usize]).unwrap_or("/"),
        );
        let b = &mut self.poll_buf;
        b.clear();
        match t {
            ConnType::LongPolling => {
                let _ = write!(
                    b,
                    "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n",
                    self.plan.bayeux_path,
                    self.plan.host,
                    self.bayeux_body.len()
                );
                b.extend_from_slice(&self.bayeux_body);
            }
            ConnType::WebSocket => client_frame_into(b, 0x1, &self.bayeux_body),
        }
        match c.sock.write(b) {
            Ok(n) if n == b.len() => {
                c.flags &= !UNSENT;
                c.last_id = id;
                Ok(())
            }
            Ok(_) => Err(io::Error::other("short write of a Bayeux request")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.flags |= UNSENT;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the next long-poll request of `key` (with its cursor, if it has one). `Ok(true)`:
    /// sent, the connection is `Open`; `Ok(false)`: the socket would block, it waits (as
    /// `Connecting` or `Resend`) for the next writable event.
    fn send_poll(&mut self, key: usize) -> io::Result<bool> {
        let c = &mut self.conns[key];
        let b = &mut self.poll_buf;
        b.clear();
        b.extend_from_slice(&self.request[c.chan as usize]);
        if c.last_id != NO_CURSOR {
            let _ = write!(b, "?cursor={}", c.last_id);
        }
        let _ = write!(
            b,
            " HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\r\n",
            self.plan.host
        );
        match c.sock.write(b) {
            Ok(n) if n == b.len() => {
                c.st = St::Open;
                Ok(true)
            }
            Ok(_) => Err(io::Error::other("short write of a poll")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if c.st != St::Connecting {
                    c.st = St::Resend;
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads what `key` has, at most `budget` bytes (a slow reader's share), and handles it.
    fn read(&mut self, key: usize, mut budget: usize) {
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

    /// Handles received bytes; returns how many were used (the rest is an incomplete unit).
    fn consume(&mut self, key: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        if self.conns[key].st == St::Upgrading {
            let Some(end) = find(buf, b"\r\n\r\n") else {
                if buf.len() > MAX_HEAD {
                    self.errors.http_status += 1;
                    self.drop_conn(key);
                    return buf.len();
                }
                return 0;
            };
            let want: &[u8] = match self.plan.transport {
                Transport::Ws | Transport::Bayeux => b"HTTP/1.1 101",
                _ => b"HTTP/1.1 200",
            };
            if !buf.starts_with(want) {
                self.errors.http_status += 1;
                self.drop_conn(key);
                return buf.len();
            }
            pos = end + 4;
            if self.plan.transport == Transport::Bayeux {
                // Over the WebSocket, the handshake comes next; open after the first connect.
                self.conns[key].st = St::Handshake;
                if let Err(e) = self.send_bayeux(key) {
                    self.fail(key, &e);
                    return buf.len();
                }
            } else {
                self.conns[key].st = St::Open;
                self.in_flight -= 1;
                self.established += 1;
            }
        }
        match self.plan.transport {
            Transport::Ws => self.consume_frames(key, buf, pos),
            Transport::Sse => self.consume_events(key, buf, pos),
            Transport::Longpoll => self.consume_answers(key, buf),
            Transport::Bayeux => self.consume_bayeux(key, buf, pos),
        }
    }

    /// Bayeux: complete replies (HTTP responses or WebSocket frames). After the reply to each
    /// request, the next request.
    fn consume_bayeux(&mut self, key: usize, buf: &[u8], mut pos: usize) -> usize {
        let t = self.plan.bayeux;
        while pos < buf.len() {
            let (unit, len) = match bayeux::next_unit(&buf[pos..], t, MAX_FRAME) {
                Ok(Some(u)) => u,
                Ok(None) => return pos,
                Err(_) => {
                    self.errors.protocol += 1;
                    self.drop_conn(key);
                    return buf.len();
                }
            };
            pos += len;
            match unit {
                Unit::Body(body) => {
                    if !self.on_bayeux(key, body) {
                        return buf.len();
                    }
                }
                Unit::Status(_) => {
                    self.errors.http_status += 1;
                    self.drop_conn(key);
                    return buf.len();
                }
                Unit::Ping(p) => {
                    let pong = client_frame(0xA, p);
                    let _ = self.conns[key].sock.write(&pong);
                }
                Unit::Close => {
                    self.closed_by_server(key);
                    return buf.len();
                }
                Unit::Ignored => {}
            }
        }
        pos
    }

    /// One Bayeux reply body: deliveries are counted; the reply to the outstanding request
    /// moves the client to its next phase and sends the next request. `false`: the connection
    /// was dropped (a failed meta reply, or a reply flood cannot follow).
    fn on_bayeux(&mut self, key: usize, body: &[u8]) -> bool {
        let Ok(events) = bayeux::replies(body) else {
            self.errors.protocol += 1;
            self.drop_conn(key);
            return false;
        };
        // The outstanding request was answered (at most one reply per body: one request at a
        // time).
        let mut answered = false;
        for ev in events {
            let st = self.conns[key].st;
            let next = match ev {
                Event::Delivery(data) => {
                    self.on_message(key, data.as_deref().map_or(b"", str::as_bytes));
                    continue;
                }
                Event::Other => continue,
                Event::Failed { .. } => {
                    self.errors.bayeux += 1;
                    self.drop_conn(key);
                    return false;
                }
                Event::Handshake { client_id } if st == St::Handshake && !answered => {
                    self.client_ids[key] = ClientId::new(&client_id);
                    St::Subscribe
                }
                Event::Subscribe if st == St::Subscribe && !answered => St::FirstConnect,
                Event::Connect { dropped } if !answered => {
                    if dropped > 0 {
                        // Messages dropped from the queue: a gap the server reports.
                        self.gap(key);
                    }
                    match st {
                        St::FirstConnect => {
                            self.in_flight -= 1;
                            self.established += 1;
                        }
                        St::Open => {}
                        _ => return self.bayeux_confused(key),
                    }
                    St::Open
                }
                // A reply to a request that is not outstanding.
                _ => return self.bayeux_confused(key),
            };
            answered = true;
            let c = &mut self.conns[key];
            c.st = next;
            if c.flags & UNSENT != 0 {
                // Answered before it was written: the server is not answering us.
                return self.bayeux_confused(key);
            }
        }
        if !answered {
            // Over long-polling every response answers the request sent; over a WebSocket,
            // frames of deliveries alone are normal.
            if self.plan.bayeux == ConnType::LongPolling {
                return self.bayeux_confused(key);
            }
            return true;
        }
        if let Err(e) = self.send_bayeux(key) {
            self.fail(key, &e);
            return false;
        }
        true
    }

    /// A reply flood cannot place: a protocol error, the connection is dropped.
    fn bayeux_confused(&mut self, key: usize) -> bool {
        self.errors.protocol += 1;
        self.drop_conn(key);
        false
    }

    /// SSE: the event stream after the response head.
    fn consume_events(&mut self, key: usize, buf: &[u8], pos: usize) -> usize {
        let mut after_cr = self.conns[key].flags & AFTER_CR != 0;
        let mut data = std::mem::take(&mut self.sse_data);
        let used = sse::parse(&buf[pos..], &mut after_cr, &mut data, |ev| match ev.kind {
            sse::Kind::Message => self.on_message(key, ev.data),
            sse::Kind::Gap => self.gap(key),
            sse::Kind::Other => self.foreign += 1,
        });
        self.sse_data = data;
        let c = &mut self.conns[key];
        c.flags = if after_cr {
            c.flags | AFTER_CR
        } else {
            c.flags & !AFTER_CR
        };
        if buf.len() - (pos + used) > MAX_FRAME {
            self.errors.protocol += 1;
            self.drop_conn(key);
            return buf.len();
        }
        pos + used
    }

    /// Long-poll: complete answers (head and body); after each, the next poll.
    fn consume_answers(&mut self, key: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let r = match longpoll::response(&buf[pos..], MAX_FRAME) {
                Ok(Some(r)) => r,
                Ok(None) => return pos,
                Err(_) => {
                    self.errors.protocol += 1;
                    self.drop_conn(key);
                    return buf.len();
                }
            };
            pos += r.len;
            if r.status != 200 {
                self.errors.http_status += 1;
                self.drop_conn(key);
                return buf.len();
            }
            let Ok(answer) = longpoll::answer(r.body) else {
                self.errors.protocol += 1;
                self.drop_conn(key);
                return buf.len();
            };
            let Some(cursor) = answer.cursor_id() else {
                self.errors.protocol += 1;
                self.drop_conn(key);
                return buf.len();
            };
            if answer.gap.is_some() {
                self.gap(key);
            }
            for m in &answer.messages {
                self.on_message(key, m.data.as_bytes());
            }
            self.conns[key].last_id = cursor;
            if let Err(e) = self.send_poll(key) {
                self.fail(key, &e);
                return buf.len();
            }
        }
        pos
    }

    /// WebSocket: frames after the handshake.
    fn consume_frames(&mut self, key: usize, buf: &[u8], mut pos: usize) -> usize {
        while pos < buf.len() {
            let rest = &buf[pos..];
            let Some((_, op, payload_at, len)) = frame_header(rest) else {
                return pos;
            };
            if len > MAX_FRAME {
                let e = io::Error::other("frame over 64 MiB");
                self.fail(key, &e);
                return buf.len();
            }
            if rest.len() < payload_at + len {
                return pos;
            }
            let payload = &rest[payload_at..payload_at + len];
            pos += payload_at + len;
            match op {
                0x1 | 0x2 => self.on_message(key, payload),
                0x9 => {
                    // Answer pings (masked, as a client must).
                    let pong = client_frame(0xA, payload);
                    let c = &mut self.conns[key];
                    let _ = c.sock.write(&pong);
                }
                0x8 => {
                    self.closed_by_server(key);
                    return buf.len();
                }
                _ => {}
            }
        }
        pos
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
        }
    }
}

/// Starts a non-blocking connect from `src` (port chosen at connect time, so that the same port
/// may serve several targets: IP_BIND_ADDRESS_NO_PORT).
fn connect(target: SocketAddr, src: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    if let Some(ip) = src {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid fd and a pointer to a live c_int of the stated size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        s.bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())?;
    }
    match s.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(s.into())
}

/// (FIN, opcode, payload offset, payload length) of a server frame at the start of `b`; `None`
/// while the header is incomplete (or its 64-bit length does not fit a `usize`).
pub(crate) fn frame_header(b: &[u8]) -> Option<(bool, u8, usize, usize)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (fin, op) = (b0 & 0x80 != 0, b0 & 0x0F);
    match b1 & 0x7F {
        126 => Some((
            fin,
            op,
            4,
            usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])),
        )),
        127 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b.get(2..10)?);
            Some((fin, op, 10, usize::try_from(u64::from_be_bytes(a)).ok()?))
        }
        n => Some((fin, op, 2, usize::from(n))),
    }
}

/// A masked client frame of any length (FIN set) appended to `out`. The mask is fixed: the
/// server must unmask whatever it is, and a load generator need not hide from proxies.
fn client_frame_into(out: &mut Vec<u8>, op: u8, payload: &[u8]) {
    let mask = [0x5A, 0xA5, 0x3C, 0xC3];
    out.push(0x80 | op);
    match payload.len() {
        n @ 0..=125 => out.push(0x80 | n as u8),
        n @ 126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// A small masked client frame (control frames).
fn client_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x5A, 0xA5, 0x3C, 0xC3];
    let mut v = vec![0x80 | op, 0x80 | payload.len().min(125) as u8];
    v.extend_from_slice(&mask);
    v.extend(
        payload
            .iter()
            .take(125)
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]),
    );
    v
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_readers_are_spread_evenly_and_counted_exactly() {
        let slow = |n: u64, f: f64| (0..n).filter(|&g| is_slow(g, f)).count() as u64;
        assert_eq!(slow(1000, 0.0), 0);
        assert_eq!(slow(1000, 1.0), 1000);
        assert_eq!(slow(1000, 0.1), 100);
        assert_eq!(slow(1000, 0.5), 500);
        assert_eq!(slow(10, 0.25), 2);
        let first: Vec<u64> = (0..40).filter(|&g| is_slow(g, 0.1)).collect();
        assert_eq!(first, [9, 19, 29, 39]);
        // The split into processes does not matter: the index is global.
        assert_eq!(
            slow(500, 0.1) + (500..1000).filter(|&g| is_slow(g, 0.1)).count() as u64,
            100
        );
    }

    #[test]
    fn conn_entry_is_small() {
        // The flood process's own cost per connection must stay far below 1 KB. 40 bytes: the
        // 32 of the WebSocket-only entry plus the long-poll cursor (8); the SSE parser's bit
        // lives in the padding after `st`.
        assert_eq!(std::mem::size_of::<Conn>(), 40);
    }

    #[test]
    fn frame_headers() {
        assert_eq!(frame_header(&[0x81, 5]), Some((true, 1, 2, 5)));
        assert_eq!(frame_header(&[0x01, 126, 1, 0]), Some((false, 1, 4, 256)));
        assert_eq!(frame_header(&[0x81]), None);
        assert_eq!(frame_header(&[0x81, 127, 0, 0]), None);
    }

    #[test]
    fn client_frames_unmask_to_the_payload() {
        for n in [0, 5, 125, 126, 300, 0xFFFF, 0x10000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut f = Vec::new();
            client_frame_into(&mut f, 0x1, &payload);
            // The header as a server reads it: FIN, text, the mask bit, then the key.
            let (fin, op, at, len) = frame_header(&f).unwrap();
            assert_eq!((fin, op, len), (true, 1, n), "length {n}");
            assert_eq!(f[1] & 0x80, 0x80);
            let key = [f[at], f[at + 1], f[at + 2], f[at + 3]];
            let body: Vec<u8> = f[at + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(body, payload, "length {n}");
        }
        assert_eq!(client_frame(0xA, b"hi")[..2], [0x8A, 0x82]);
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name("bench", 0, 1), "bench");
        assert_eq!(channel_name("bench", 3, 8), "bench-3");
    }
}
