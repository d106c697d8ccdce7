//! One worker: one thread, one `mio::Poll`, one SO_REUSEPORT listener, one slab of connections,
//! one subscription table, one timing wheel. Nothing here is shared with other workers except
//! the inboxes (mail in) and the statistics (read by `/stats`).
//!
//! # The loop turn
//!
//! 1. **poll** — wait for readiness, at most until the next one-second tick (zero when work was
//!    left over from the previous turn).
//! 2. **dispatch** — for each event (at most 1,024): accept on the listener (at most
//!    [`ACCEPT_BATCH`]); for a connection, flush its queue if writable, then read until
//!    `WouldBlock` or [`READ_BUDGET`] bytes, parsing HTTP or WebSocket from the per-worker scratch
//!    buffer. Publishes are not delivered here: they are recorded as pending fan-out.
//! 3. **mailbox** — publishes from other workers join the pending fan-out; `Quiesce` is counted;
//!    a `Shutdown` starts the drain once this turn's fan-out has delivered what came before it.
//! 4. **fan-out drain** — pending messages grouped by channel; each subscriber gets one
//!    `writev` of everything for it this turn, or an append to its queue if it is backlogged.
//! 5. **timers** — wheel slots up to now: head and keep-alive timeouts, pings, pong and close
//!    timeouts (armed with [`Worker::after`]: never early, at most a second late).
//! 6. **flush** — wake each peer worker that was sent mail this turn (once), drop emptied
//!    channels, retry accepts after a pause.
//!
//! Connections that used up their read budget go on a retry list served in the next turn, so one
//! busy client cannot starve the others. Network errors close that connection and bump a
//! counter; nothing reachable from peer input panics.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::broker::{AckTo, Broker, PublishError};
use crate::config::Config;
use crate::proto::http::{self, HeadLimits, HttpError, Method, Parse};
use crate::proto::ws::frame::{self, OP_BINARY, OP_PING, OP_PONG, OP_TEXT, close_code};
use crate::proto::ws::handshake;
use crate::proto::ws::reader::{Event, Fail};
use crate::pubsub::hub::{Gap, Hub, Message};
use crate::pubsub::{self, Channels};
use crate::runtime::conn::{Conn, Ext, NO_CHANNEL, Phase, Proto, flag};
use crate::runtime::mailbox::{Mail, Mailbox};
use crate::runtime::outq::{self, OutQueue};
use crate::runtime::timer::{Key, Wheel};
use crate::stats::{self, WorkerStats};

/// Token of the worker's listener.
pub const LISTENER: Token = Token(u32::MAX as usize);
/// Token of the worker's mailbox waker.
pub const WAKER: Token = Token(u32::MAX as usize - 1);

/// Per-worker read buffer: every read lands here first. 64 KiB takes a whole loopback segment
/// burst in one read; only the unparsed rest is copied into a connection's `tail`.
const SCRATCH: usize = 64 * 1024;
/// Leftovers up to this size are copied in front of the scratch buffer for the next read;
/// larger ones (a request body in progress) are read into directly.
const SMALL_TAIL: usize = 16 * 1024;
/// Bytes read from one connection per event before it yields to the others (4 full reads).
const READ_BUDGET: usize = 4 * SCRATCH;
/// Accepts per listener event before yielding to established connections.
const ACCEPT_BATCH: usize = 256;
/// Readiness events handled per poll.
const EVENTS: usize = 1024;

/// Sent to a connection refused for `--max-connections`.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: edgecomet\r\n\
    Content-Type: text/plain\r\nContent-Length: 28\r\nConnection: close\r\n\r\n\
    connection limit reached\r\n\r\n";

/// State shared by all workers of one server.
#[derive(Debug)]
pub struct Shared {
    pub mailboxes: Vec<Mailbox>,
    pub stats: Vec<Arc<WorkerStats>>,
    /// Open connections over all workers (checked against `--max-connections` at accept).
    pub conns: std::sync::atomic::AtomicUsize,
    /// Message ids, history and long-poll sessions of every channel.
    pub hub: Hub,
    /// Bayeux clients: subscriptions, queues, held connects.
    pub bayeux: crate::session::bayeux::store::Clients,
    /// The Redis link (`--broker`), set once at start.
    pub broker: std::sync::OnceLock<Arc<Broker>>,
    /// Under the launcher (`--processes`): the sums over all its processes, as the launcher last
    /// sent them (`"processes"` in `/stats`).
    pub processes: std::sync::Mutex<Option<String>>,
    /// A shutdown has begun: no publish is accepted any more (503, counted in
    /// `refused_draining`); see `Server::begin_shutdown`.
    pub draining: std::sync::atomic::AtomicBool,
    /// Workers that have confirmed `draining` (`Mail::Quiesce`).
    pub quiesced: std::sync::atomic::AtomicUsize,
}

impl Shared {
    /// The `/stats` document.
    pub fn stats_json(&self) -> String {
        let workers: Vec<&WorkerStats> = self.stats.iter().map(|s| &**s).collect();
        let processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        stats::render_json(&workers, &self.extra_stats(), processes.as_deref())
    }

    /// This process's totals as one line for the launcher ([`stats::render_line`]).
    pub fn stats_line(&self) -> String {
        let workers: Vec<&WorkerStats> = self.stats.iter().map(|s| &**s).collect();
        stats::render_line(&workers, &self.extra_stats())
    }

    /// Process-wide values for `/stats` (`"hub"`): history, sessions, Bayeux clients.
    pub fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.hub.stats.snapshot();
        v.extend(self.bayeux.stats.snapshot());
        if let Some(b) = self.broker.get() {
            v.extend(b.stats.snapshot());
        }
        v
    }

    /// A message from the broker: enters the process as a local publish does (with the id Redis
    /// gave it: the same in every process; the history, one `Arc<Message>` in every worker's inbox, Bayeux queues and wakes), from
    /// outside any worker. Nobody is woken here: the broker wakes every worker once per batch
    /// it read (`broker::Sink::flush`). A full inbox drops it for that worker's live
    /// subscribers, counted in `broker_inbox_drops` (it is in the history).
    pub fn deliver_from_broker(&self, channel: &str, id: u64, payload: Bytes) {
        if !crate::pubsub::valid_channel(channel, usize::MAX)
            || std::str::from_utf8(&payload).is_err()
        {
            // Not something an edgecomet process publishes: left alone.
            return;
        }
        let mut refused = 0;
        let mut woken = Vec::new();
        let published = self.hub.publish_at(channel, Some(id), payload, |msg| {
            for mb in &self.mailboxes {
                if mb.post(Mail::Publish(msg.clone())).is_err() {
                    refused += 1;
                }
            }
            woken = self.bayeux.deliver(&msg.channel, || msg.bayeux().clone());
        });
        if published.is_err() {
            refused += self.mailboxes.len() as u64;
        }
        for w in woken {
            if let Some(mb) = self.mailboxes.get(w.worker as usize) {
                // A full inbox: the held connect ends at its timeout, with what is queued.
                let _ = mb.post(Mail::BayeuxWake {
                    idx: w.idx,
                    generation: w.generation,
                });
            }
        }
        if refused > 0
            && let Some(b) = self.broker.get()
        {
            b.stats.inbox_drops.fetch_add(refused, Ordering::Relaxed);
        }
    }
}

/// `{"ok":true,"channel":..,WHAT,"bytes":..}`: the body of a publish's answer.
fn publish_body(channel: &str, what: &str, len: usize) -> String {
    format!("{{\"ok\":true,\"channel\":\"{channel}\",{what},\"bytes\":{len}}}\n")
}

/// Why a connection must go away at once (no further bytes to it).
#[derive(Debug)]
struct Dead;

/// Why a publish was not done (or not done everywhere).
#[derive(Debug)]
enum PubError {
    /// `--max-channels` channels have state (nothing delivered).
    Channels,
    /// A peer's inbox was full: its subscribers miss this message (id assigned, in history).
    Inbox(Arc<Message>),
    /// `--broker`: Redis is unreachable or the publish queue is full; nothing was sent.
    Broker(PublishError),
    /// A shutdown has begun: not published.
    Draining,
}

/// A publish that was done.
#[derive(Debug)]
enum Published {
    /// Fanned out in this process, with its id.
    Here(Arc<Message>),
    /// Handed to the broker: it comes back (with an id of this process) like anyone's.
    Broker,
}

mod bayeux;
mod transports;

pub struct Worker {
    id: usize,
    cfg: Arc<Config>,
    poll: Poll,
    listener: Option<TcpListener>,
    inbox: Receiver<Mail>,
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    conns: Slab<Conn>,
    next_generation: u32,
    channels: Channels,
    wheel: Wheel,
    scratch: Box<[u8]>,
    /// Messages to deliver at the end of this turn: (channel index, message).
    pending: Vec<(u32, Arc<Message>)>,
    /// Connections that stopped reading at their budget, to be read again next turn.
    retry: Vec<Key>,
    /// Peers that were sent mail this turn and must be woken.
    wake: Vec<bool>,
    /// Listener work left over (batch limit or pause).
    accept_more: bool,
    accept_paused_until: Option<Instant>,
    last_accept_log: Option<Instant>,
    /// Set when shutting down: the moment the worker exits regardless.
    drain_deadline: Option<Instant>,
    /// A `Shutdown` arrived this turn: it starts after this turn's fan-out, so that what was
    /// in the inbox before it is delivered before the 1001s.
    shutdown_asked: Option<Instant>,
    start: Instant,
    /// Whole seconds since `start`, plus one (0 means "no deadline" in connection fields).
    tick: u32,
    /// Tick of the last hub sweep (worker 0 sweeps once per tick).
    swept: u32,
    /// WebSocket subscribers that resumed this turn, with their cursor: anything at or below it
    /// is skipped by this turn's fan-out (it was sent from the history). Everything in flight
    /// when the history was read is delivered in this turn, so the map is emptied after it.
    resumed: std::collections::HashMap<Key, u64>,
    /// Held Bayeux connects of this worker to look at this turn: (slot, generation).
    bayeux_wakes: Vec<(u32, u32)>,
    /// The Bayeux advice JSON (from the flags), shared by every connect reply.
    bayeux_advice: String,
    head_limits: HeadLimits,
}

/// Builds the mio token of a connection slot.
fn token(idx: usize, generation: u32) -> Token {
    Token((generation as usize) << 32 | idx)
}

fn split_token(t: Token) -> (usize, u32) {
    (t.0 & 0xFFFF_FFFF, (t.0 >> 32) as u32)
}

impl Worker {
    pub fn new(
        id: usize,
        cfg: Arc<Config>,
        poll: Poll,
        mut listener: TcpListener,
        inbox: Receiver<Mail>,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let stats = shared.stats[id].clone();
        let n = shared.mailboxes.len();
        let head_limits = HeadLimits {
            max_head_bytes: cfg.max_head_bytes,
            max_headers: usize::from(cfg.max_headers),
        };
        let bayeux_advice = bayeux::advice(&cfg);
        Ok(Worker {
            id,
            channels: Channels::new(cfg.max_channels, shared.broker.get().cloned()),
            cfg,
            poll,
            listener: Some(listener),
            inbox,
            shared,
            stats,
            conns: Slab::new(),
            next_generation: 1,
            wheel: Wheel::new(1),
            scratch: vec![0u8; SCRATCH + SMALL_TAIL].into_boxed_slice(),
            pending: Vec::new(),
            retry: Vec::new(),
            wake: vec![false; n],
            accept_more: false,
            accept_paused_until: None,
            last_accept_log: None,
            drain_deadline: None,
            shutdown_asked: None,
            start: Instant::now(),
            tick: 1,
            swept: 0,
            resumed: std::collections::HashMap::new(),
            bayeux_wakes: Vec::new(),
            bayeux_advice,
            head_limits,
        })
    }

    /// Runs the loop until shutdown completes.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("edgecomet: worker {}: poll failed: {e}", self.id);
                return;
            }
            self.tick = (self.start.elapsed().as_secs() as u32).saturating_add(1);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_more = true,
                    WAKER => {}
                    t => self.conn_event(t, ev),
                }
            }
            self.retry_reads();
            self.drain_mailbox();
            self.fan_out();
            self.bayeux_wakes();
            if let Some(until) = self.shutdown_asked.take() {
                self.begin_shutdown(until);
            }
            self.fire_timers();
            self.end_turn();
            if let Some(deadline) = self.drain_deadline
                && (self.conns.is_empty() || Instant::now() >= deadline)
            {
                return;
            }
        }
    }

    fn poll_timeout(&self) -> Duration {
        let busy = !self.retry.is_empty()
            || (self.accept_more && self.accept_paused_until.is_none() && self.listener.is_some());
        if busy {
            return Duration::ZERO;
        }
        // Until the next whole-second tick.
        let elapsed = self.start.elapsed();
        let mut t = Duration::from_secs(elapsed.as_secs() + 1).saturating_sub(elapsed);
        if let Some(until) = self.accept_paused_until {
            t = t.min(until.saturating_duration_since(Instant::now()));
        }
        if let Some(until) = self.drain_deadline {
            // Wake at the drain deadline itself, not at the tick after it.
            return t.min(until.saturating_duration_since(Instant::now()));
        }
        t.max(Duration::from_millis(1))
    }

    // ---- accept -----------------------------------------------------------------------------

    fn accept(&mut self) {
        if let Some(until) = self.accept_paused_until {
            if Instant::now() < until {
                return;
            }
            self.accept_paused_until = None;
        }
        let Some(listener) = self.listener.take() else {
            self.accept_more = false;
            return;
        };
        self.accept_batch(&listener);
        self.listener = Some(listener);
    }

    fn accept_batch(&mut self, listener: &TcpListener) {
        for _ in 0..ACCEPT_BATCH {
            match listener.accept() {
                Ok((sock, _)) => self.admit(sock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_more = false;
                    return;
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unexpected: retrying now
                    // would spin, so pause accepting; queued connections wait in the backlog.
                    WorkerStats::add(&self.stats.accept_errors, 1);
                    let now = Instant::now();
                    if self
                        .last_accept_log
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                    {
                        eprintln!(
                            "edgecomet: worker {}: accept failed: {e}; pausing accepts for {} ms \
                             (logged at most every 10 s; see accept_errors in /stats)",
                            self.id, self.cfg.accept_pause_ms
                        );
                        self.last_accept_log = Some(now);
                    }
                    self.accept_paused_until = Some(now + self.cfg.accept_pause());
                    return;
                }
            }
        }
        // Batch used up: continue next turn.
    }

    fn admit(&mut self, sock: mio::net::TcpStream) {
        let mut sock = TcpStream::from(sock);
        let open = self.shared.conns.fetch_add(1, Ordering::Relaxed);
        if open >= self.cfg.max_connections {
            self.shared.conns.fetch_sub(1, Ordering::Relaxed);
            WorkerStats::add(&self.stats.refused, 1);
            // Best effort: the client learns why before the close.
            let _ = sock.write(REFUSED);
            return;
        }
        // Latency over batching: frames go out when written (coalescing is done by writev).
        let _ = sock.set_nodelay(true);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        if idx >= WAKER.0 {
            // Cannot happen below ~4 billion connections; refuse rather than alias a token.
            self.shared.conns.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let conn = Conn::new(sock, generation);
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&conn.sock.as_raw_fd()),
            token(idx, generation),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            eprintln!("edgecomet: worker {}: register failed: {e}", self.id);
            self.shared.conns.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        entry.insert(conn);
        WorkerStats::add(&self.stats.accepted, 1);
        WorkerStats::add(&self.stats.conns_http, 1);
        let at = self.after(self.cfg.head_timeout);
        self.set_deadline(idx, at);
    }

    // ---- events -----------------------------------------------------------------------------

    fn conn_event(&mut self, t: Token, ev: &mio::event::Event) {
        let (idx, generation) = split_token(t);
        if !self.is_live(idx, generation) {
            return; // stale event for a previous occupant
        }
        if ev.is_writable() && self.on_writable(idx).is_err() {
            self.remove(idx);
            return;
        }
        // Edge-triggered: without a readable edge there is nothing new to read (a write-space
        // wake-up alone must not cost a read(2) that returns EAGAIN).
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.on_readable(idx);
        }
    }

    /// Whether slot `idx` still holds the connection that had `generation`.
    fn is_live(&self, idx: usize, generation: u32) -> bool {
        self.conns
            .get(idx)
            .is_some_and(|c| c.generation == generation)
    }

    fn retry_reads(&mut self) {
        if self.retry.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.retry);
        for (idx, generation) in list {
            let idx = idx as usize;
            if self.is_live(idx, generation) {
                self.on_readable(idx);
            }
        }
    }

    fn on_writable(&mut self, idx: usize) -> Result<(), Dead> {
        let conn = &mut self.conns[idx];
        let Some(q) = conn.out.as_mut() else {
            return Ok(());
        };
        let before = q.bytes();
        let res = q.flush(&mut conn.sock);
        let after = q.bytes();
        WorkerStats::sub(&self.stats.bytes_queued, (before - after) as u64);
        WorkerStats::add(&self.stats.bytes_out, (before - after) as u64);
        if res.is_err() {
            return Err(Dead);
        }
        if after == 0 {
            conn.out = None;
            self.after_drained(idx);
        }
        Ok(())
    }

    /// Everything queued has gone: a closing connection now shuts its write side.
    fn after_drained(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        if conn.phase == Phase::Closing && !conn.has(flag::WRITE_SHUT) {
            conn.set(flag::WRITE_SHUT);
            let _ = conn.sock.shutdown(Shutdown::Write);
        }
    }

    fn on_readable(&mut self, idx: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut budget = READ_BUDGET;
        while let Some(conn) = self.conns.get_mut(idx) {
            if conn.has(flag::ACK_WAIT) {
                // Read again once the publish is answered (`resume`): meanwhile the kernel's
                // buffers hold what the client sends, bounded by TCP's window.
                break;
            }
            // Assemble [leftover | new bytes] in the scratch buffer, or in the leftover itself
            // when it is large (a request body in progress).
            let big_tail = conn.tail.as_ref().is_some_and(|t| t.len() > SMALL_TAIL);
            let result = if big_tail {
                let tail = conn.tail.as_mut().expect("checked above");
                let old = tail.len();
                tail.resize(old + SCRATCH, 0);
                let r = read_some(&mut conn.sock, &mut tail[old..]);
                tail.truncate(old + *r.as_ref().unwrap_or(&0));
                r.map(|n| (n, old + n))
            } else {
                let start = conn.tail.as_ref().map_or(0, |t| t.len());
                if let Some(t) = conn.tail.as_ref() {
                    scratch[..start].copy_from_slice(t);
                }
                read_some(&mut conn.sock, &mut scratch[start..start + SCRATCH])
                    .map(|n| (n, start + n))
            };
            match result {
                Ok((0, _)) => {
                    // Peer closed (or half-closed: we never serve a half-closed client).
                    self.remove(idx);
                    break;
                }
                Ok((n, total)) => {
                    budget = budget.saturating_sub(n);
                    let consumed = if big_tail {
                        let mut tail = self.conns[idx].tail.take().expect("big tail present");
                        let c = self.process(idx, &mut tail[..total]);
                        if let Some(conn) = self.conns.get_mut(idx) {
                            tail.drain(..c.min(total));
                            if !tail.is_empty() {
                                conn.tail = Some(tail);
                            }
                        }
                        None
                    } else {
                        Some(self.process(idx, &mut scratch[..total]))
                    };
                    if let (Some(c), Some(conn)) = (consumed, self.conns.get_mut(idx)) {
                        keep_leftover(conn, &scratch[c.min(total)..total]);
                    }
                    if !self.conns.contains(idx) {
                        break;
                    }
                    if budget == 0 {
                        let g = self.conns[idx].generation;
                        self.retry.push((idx as u32, g));
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.remove(idx);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Handles `buf` (leftover + new bytes) for connection `idx`; returns bytes consumed.
    /// The connection may be gone afterwards.
    fn process(&mut self, idx: usize, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        loop {
            let Some(conn) = self.conns.get_mut(idx) else {
                return buf.len();
            };
            match conn.phase {
                // Discarded: until the peer closes, or (streams) nothing is expected.
                Phase::Closing | Phase::Sse | Phase::Stream => return buf.len(),
                Phase::WsSub | Phase::WsEcho | Phase::BayeuxWs => {
                    return pos + self.ws_input(idx, &mut buf[pos..]);
                }
                Phase::Poll | Phase::BayeuxPoll => {
                    if pos == buf.len() {
                        return pos;
                    }
                    // A request pipelined behind a held poll: finish the poll now, then serve
                    // the request (responses leave in request order).
                    if conn.phase == Phase::Poll {
                        self.poll_interrupted(idx);
                    } else {
                        self.bayeux_end_hold(idx, None);
                    }
                }
                Phase::Http => {
                    // Nothing more is served until the waiting publish is answered.
                    if pos == buf.len() || conn.has(flag::ACK_WAIT) {
                        return pos;
                    }
                    match self.http_input(idx, &buf[pos..]) {
                        Some(used) => pos += used,
                        None => return pos, // need more bytes
                    }
                }
            }
        }
    }

    // ---- HTTP -------------------------------------------------------------------------------

    /// Handles at most one request from `buf`. Returns the bytes it used, or `None` if the
    /// request is not complete yet (nothing used).
    fn http_input(&mut self, idx: usize, buf: &[u8]) -> Option<usize> {
        let conn = &mut self.conns[idx];
        if !conn.has(flag::IN_REQUEST) {
            conn.set(flag::IN_REQUEST);
            let at = self.after(self.cfg.head_timeout);
            self.set_deadline(idx, at);
        }
        let conn = &mut self.conns[idx];
        if conn.has(flag::HEAD_DONE) && buf.len() < conn.http_mark as usize {
            return None;
        }
        let scanned = if conn.has(flag::HEAD_DONE) {
            0
        } else {
            conn.http_mark as usize
        };
        let head = match http::parse_head(buf, scanned, self.head_limits) {
            Parse::Partial => {
                conn.http_mark = buf.len() as u32;
                return None;
            }
            Parse::Error(e) => {
                self.http_refuse(idx, e);
                return Some(buf.len());
            }
            Parse::Complete(h) => h,
        };
        if head.content_length > u64::from(self.cfg.max_body_bytes) {
            self.http_refuse(idx, HttpError::BodyTooLarge);
            return Some(buf.len());
        }
        // A chunked body is decoded into a copy once it is complete; until then the head is
        // parsed again with each arrival (bounded by --max-body-bytes and --head-timeout).
        let mut decoded: Option<Vec<u8>> = None;
        let need = if head.chunked {
            match http::chunked_body(&buf[head.head_len..], self.cfg.max_body_bytes as usize) {
                Err(e) => {
                    self.http_refuse(idx, e);
                    return Some(buf.len());
                }
                Ok(None) => {
                    conn.set(flag::HEAD_DONE);
                    conn.http_mark = (buf.len() + 1) as u32;
                    return None;
                }
                Ok(Some((used, body))) => {
                    decoded = Some(body);
                    head.head_len + used
                }
            }
        } else {
            head.head_len + head.content_length as usize
        };
        if buf.len() < need {
            conn.set(flag::HEAD_DONE);
            conn.http_mark = need as u32;
            return None;
        }
        conn.clear(flag::HEAD_DONE | flag::IN_REQUEST);
        conn.http_mark = 0;
        WorkerStats::add(&self.stats.http_requests, 1);
        if self.drain_deadline.is_some() {
            // Shutting down: nothing new is taken on (a publish is not accepted).
            WorkerStats::add(&self.stats.refused_draining, 1);
            self.respond_error(
                idx,
                503,
                "Service Unavailable",
                "Retry-After: 1\r\n",
                "the server is shutting down: request not served (a publish was not \
                 published)\n",
                false,
            );
            return Some(need);
        }
        let body = decoded.as_deref().unwrap_or(&buf[head.head_len..need]);
        self.route(idx, &head, body);
        let at = self.after(self.cfg.keepalive_timeout);
        if let Some(conn) = self.conns.get_mut(idx)
            && conn.phase == Phase::Http
            && !conn.has(flag::ACK_WAIT)
        {
            conn.deadline = 0;
            self.set_deadline(idx, at);
        }
        Some(need)
    }

    fn route(&mut self, idx: usize, head: &http::Head<'_>, body: &[u8]) {
        let path = head.path.split('?').next().unwrap_or("");
        let bayeux = &self.cfg.bayeux_path;
        // CometD clients append the message type: /cometd/handshake, /cometd/connect, /cometd/.
        if path == bayeux
            || path
                .strip_prefix(bayeux.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        {
            self.bayeux_http(idx, head, body);
        } else if path == "/echo" {
            if self.check_origin(idx, head).is_some() {
                self.upgrade(idx, head, None);
            }
        } else if let Some(channel) = path.strip_prefix("/sub/") {
            self.route_sub(idx, head, body, channel);
        } else if let Some(channel) = path.strip_prefix("/pub/") {
            let Some(origin) = self.check_origin(idx, head) else {
                return;
            };
            if head.method_raw == "OPTIONS" {
                return self.preflight(idx, head, origin);
            }
            if head.method() != Method::Post {
                return self.respond_error(
                    idx,
                    405,
                    "Method Not Allowed",
                    "Allow: POST\r\n",
                    "use POST to publish\n",
                    head.keep_alive(),
                );
            }
            self.publish(idx, channel, body, head.keep_alive(), origin);
        } else if path == "/stats" {
            if head.method() != Method::Get {
                return self.respond_error(
                    idx,
                    405,
                    "Method Not Allowed",
                    "Allow: GET\r\n",
                    "use GET\n",
                    head.keep_alive(),
                );
            }
            let json = self.shared.stats_json();
            let resp = http::response(
                200,
                "OK",
                "application/json",
                "",
                json.as_bytes(),
                head.keep_alive(),
            );
            self.respond(idx, resp, head.keep_alive());
        } else {
            self.respond_error(idx, 404, "Not Found", "", "not found\n", head.keep_alive());
        }
    }

    fn publish(&mut self, idx: usize, channel: &str, body: &[u8], keep_alive: bool, origin: u16) {
        if !pubsub::valid_channel(channel, self.cfg.max_channel_len) {
            return self.bad_request(idx, "invalid channel name\n", keep_alive);
        }
        if std::str::from_utf8(body).is_err() {
            return self.bad_request(idx, "message must be UTF-8 text\n", keep_alive);
        }
        // With --broker the answer waits for Redis's: a publish answered is in Redis, so one
        // sent after it (through any process) comes after it everywhere.
        let ack = self.shared.broker.get().map(|_| AckTo {
            worker: self.id as u32,
            idx: idx as u32,
            generation: self.conns[idx].generation,
        });
        let len = body.len();
        match self.publish_message(channel, Bytes::copy_from_slice(body), ack) {
            Ok(Published::Here(msg)) => {
                let body = publish_body(channel, &format!("\"id\":\"{}\"", msg.id), len);
                self.publish_answer(idx, 200, &body, origin, keep_alive);
            }
            Ok(Published::Broker) => {
                let at = self.after(self.cfg.broker_ack_timeout);
                let conn = &mut self.conns[idx];
                conn.set(flag::ACK_WAIT);
                if keep_alive {
                    conn.set(flag::KEEP_ALIVE);
                }
                conn.ext = Some(Box::new(Ext::PubAck {
                    channel: channel.into(),
                    bytes: len,
                    origin,
                }));
                conn.deadline = 0;
                self.set_deadline(idx, at);
            }
            Err(e) => {
                let cors = self.cors_headers(origin);
                self.publish_refused(idx, e, &cors, keep_alive)
            }
        }
    }

    /// Answers a publish: 200 with the id of a local publish, 202 for one Redis has (each
    /// process gives it its own id when Redis sends it back). `body`: [`publish_body`].
    fn publish_answer(
        &mut self,
        idx: usize,
        status: u16,
        body: &str,
        origin: u16,
        keep_alive: bool,
    ) {
        let reason = if status == 200 { "OK" } else { "Accepted" };
        let cors = self.cors_headers(origin);
        let resp = http::response(
            status,
            reason,
            "application/json",
            &cors,
            body.as_bytes(),
            keep_alive,
        );
        self.respond(idx, resp, keep_alive);
    }

    /// Redis answered the publish `idx` waits for (`Some(receivers)`), or it was lost
    /// (`None`), or the wait timed out (`timed_out`): answer it, then serve what the client
    /// sent behind it.
    fn publish_acked(&mut self, idx: usize, receivers: Option<u64>, timed_out: bool) {
        let conn = &mut self.conns[idx];
        // While shutting down the connection ends with this answer.
        let keep_alive = conn.has(flag::KEEP_ALIVE) && self.drain_deadline.is_none();
        conn.clear(flag::ACK_WAIT | flag::KEEP_ALIVE);
        conn.deadline = 0;
        let Some(Ext::PubAck {
            channel,
            bytes,
            origin,
        }) = conn.ext.take().map(|b| *b)
        else {
            return self.remove(idx);
        };
        match receivers {
            Some(n) => {
                let what = format!("\"broker\":true,\"broker_receivers\":{n}");
                self.publish_answer(
                    idx,
                    202,
                    &publish_body(&channel, &what, bytes),
                    origin,
                    keep_alive,
                );
            }
            None => {
                let cors = self.cors_headers(origin);
                let (status, reason, body) = if timed_out {
                    WorkerStats::add(&self.stats.broker_ack_timeouts, 1);
                    (
                        504,
                        "Gateway Timeout",
                        "the broker (Redis) did not answer in time; the message may or may not \
                         have been published\n",
                    )
                } else {
                    (
                        503,
                        "Service Unavailable",
                        "the connection to the broker (Redis) failed before it answered; the \
                         message may or may not have been published\n",
                    )
                };
                self.respond_error(
                    idx,
                    status,
                    reason,
                    &("Retry-After: 1\r\n".to_string() + &cors),
                    body,
                    keep_alive,
                );
            }
        }
        if let Some(conn) = self.conns.get_mut(idx)
            && conn.phase == Phase::Http
        {
            let at = self.after(self.cfg.keepalive_timeout);
            self.set_deadline(idx, at);
            self.resume(idx);
        }
    }

    /// A connection that stopped reading (a publish waiting for the broker) goes on: the bytes
    /// read behind the publish are served, then whatever the kernel holds is read (its
    /// readiness edge may have passed meanwhile).
    fn resume(&mut self, idx: usize) {
        if let Some(mut tail) = self.conns[idx].tail.take() {
            let c = self.process(idx, &mut tail[..]);
            if let Some(conn) = self.conns.get_mut(idx) {
                tail.drain(..c.min(tail.len()));
                if !tail.is_empty() {
                    conn.tail = Some(tail);
                }
            }
        }
        if let Some(conn) = self.conns.get(idx) {
            self.retry.push((idx as u32, conn.generation));
        }
    }

    fn publish_refused(&mut self, idx: usize, e: PubError, cors: &str, keep_alive: bool) {
        let keep_alive = keep_alive && !matches!(e, PubError::Draining);
        let (extra, body) = match e {
            PubError::Channels => {
                WorkerStats::add(&self.stats.channel_limit, 1);
                (String::new(), "channel limit reached\n")
            }
            // The message has its id and is in the history; a worker's live subscribers miss
            // it. Said plainly so that a retry is a decision, not an accident.
            PubError::Inbox(msg) => (
                format!("Retry-After: 1\r\nEdgecomet-Id: {}\r\n", msg.id),
                "published, but the delivery queue of a worker is full: its live subscribers \
                 miss this message (it is in the history)\n",
            ),
            PubError::Broker(PublishError::Down) => (
                "Retry-After: 1\r\n".to_string(),
                "not published: the broker (Redis) is unreachable; nothing was sent\n",
            ),
            PubError::Broker(PublishError::Busy) => (
                "Retry-After: 1\r\n".to_string(),
                "not published: the broker's publish queue is full; nothing was sent\n",
            ),
            PubError::Draining => (
                "Retry-After: 1\r\n".to_string(),
                "not published: the server is shutting down\n",
            ),
        };
        self.respond_error(
            idx,
            503,
            "Service Unavailable",
            &(extra + cors),
            body,
            keep_alive,
        );
    }

    /// Publishes `payload` (UTF-8, checked by the caller) to `channel`: the hub gives it an id
    /// and records it; local subscribers get it in this turn's fan-out, other workers through
    /// their inboxes. With `--broker` it goes to Redis instead, and comes back from there.
    /// `ack`: with `--broker`, who waits for Redis's answer (an HTTP publish).
    fn publish_message(
        &mut self,
        channel: &str,
        payload: Bytes,
        ack: Option<AckTo>,
    ) -> Result<Published, PubError> {
        if self.shared.draining.load(Ordering::SeqCst) {
            WorkerStats::add(&self.stats.refused_draining, 1);
            return Err(PubError::Draining);
        }
        if let Some(b) = self.shared.broker.get() {
            b.publish(Arc::from(channel), payload, ack)
                .map_err(PubError::Broker)?;
            WorkerStats::add(&self.stats.messages_in, 1);
            return Ok(Published::Broker);
        }
        let shared = self.shared.clone();
        let me = self.id;
        let local = self.channels.lookup(channel);
        let pending = &mut self.pending;
        let wake = &mut self.wake;
        let mut refused = 0;
        let mut bayeux_woken = Vec::new();
        let msg = shared
            .hub
            .publish(channel, payload, |msg| {
                if let Some(chan) = local {
                    pending.push((chan, msg.clone()));
                }
                for (i, mb) in shared.mailboxes.iter().enumerate() {
                    if i == me {
                        continue;
                    }
                    if mb.post(Mail::Publish(msg.clone())).is_ok() {
                        wake[i] = true;
                    } else {
                        refused += 1;
                    }
                }
                // Bayeux subscribers (queued under the channel lock, so in id order).
                bayeux_woken = shared.bayeux.deliver(&msg.channel, || msg.bayeux().clone());
            })
            .map_err(|_| PubError::Channels)?;
        WorkerStats::add(&self.stats.messages_in, 1);
        for w in bayeux_woken {
            self.bayeux_wake(w);
        }
        if refused > 0 {
            // A peer's inbox is full (the peer is stuck): its subscribers miss this message
            // (resumable from the history).
            WorkerStats::add(&self.stats.drops, refused);
            return Err(PubError::Inbox(msg));
        }
        Ok(Published::Here(msg))
    }

    fn upgrade(&mut self, idx: usize, head: &http::Head<'_>, channel: Option<&str>) {
        // `?envelope=1`: messages as {"id":..,"data":..}, and a cursor resumes (raw frames
        // carry no id, so a cursor without the envelope could never be used).
        let mut envelope = false;
        let mut cursor = None;
        if let Some(ch) = channel {
            if !pubsub::valid_channel(ch, self.cfg.max_channel_len) {
                return self.bad_request(idx, "invalid channel name\n", false);
            }
            envelope = match http::query_param(head.path, "envelope") {
                None | Some("0") => false,
                Some("1") => true,
                Some(_) => return self.bad_request(idx, "envelope must be 0 or 1\n", false),
            };
            cursor = match transports::request_cursor(head) {
                Ok(c) => c,
                Err(why) => return self.bad_request(idx, why, false),
            };
            if cursor.is_some() && !envelope {
                return self.bad_request(
                    idx,
                    "a cursor / Last-Event-ID needs ?envelope=1 (raw frames carry no id)\n",
                    false,
                );
            }
            if !self.channels.admits(ch) {
                WorkerStats::add(&self.stats.channel_limit, 1);
                return self.respond_error(
                    idx,
                    503,
                    "Service Unavailable",
                    "",
                    "channel limit reached\n",
                    false,
                );
            }
        }
        let Some(resp) = self.accept_upgrade(idx, head) else {
            return;
        };
        let conn = &mut self.conns[idx];
        conn.phase = match channel {
            Some(_) => Phase::WsSub,
            None => Phase::WsEcho,
        };
        conn.clear(flag::IN_REQUEST | flag::HEAD_DONE);
        let mut first = vec![Bytes::from(resp)];
        if let Some(ch) = channel {
            WorkerStats::add(&self.stats.conns_ws_sub, 1);
            match self.channels.subscribe(ch, idx as u32) {
                Ok((chan, pos)) => {
                    conn.chan = chan;
                    conn.chan_pos = pos;
                }
                Err(_) => unreachable!("admits() was checked just above in the same turn"),
            }
            if envelope {
                conn.set(flag::ENVELOPE);
            }
            if cursor.is_some() {
                let since = self.shared.hub.since(ch, cursor);
                if since.gap.is_gap() {
                    WorkerStats::add(&self.stats.gaps_reported, 1);
                    let gap = format!("{{\"gap\":{}}}", since.gap.json());
                    first.push(frame::frame(OP_TEXT, gap.as_bytes()));
                }
                WorkerStats::add(&self.stats.messages_out, since.msgs.len() as u64);
                first.extend(since.msgs.iter().map(|m| m.ws_envelope().clone()));
                // Messages at or below the cursor may still be on their way to this worker
                // (in its inbox or this turn's pending): this turn's fan-out skips them.
                let generation = self.conns[idx].generation;
                self.resumed.insert((idx as u32, generation), since.cursor);
            }
        } else {
            WorkerStats::add(&self.stats.conns_ws_echo, 1);
        }
        self.ws_activity(idx);
        if self.send(idx, &first[..1], false).is_err() {
            return self.remove(idx);
        }
        if first.len() > 1 {
            if self.send(idx, &first[1..], true).is_err() {
                return self.remove(idx);
            }
            self.over_backlog(idx);
        }
    }

    /// Checks an upgrade request: the `101` answer to send (the connection leaves the HTTP
    /// gauge), or `None` when it was refused (answered and closing).
    fn accept_upgrade(&mut self, idx: usize, head: &http::Head<'_>) -> Option<Vec<u8>> {
        match handshake::accept(head) {
            Ok(r) => {
                WorkerStats::sub(&self.stats.conns_http, 1);
                Some(r)
            }
            Err(e) => {
                WorkerStats::add(&self.stats.http_errors, 1);
                self.respond(idx, e.response(), false);
                None
            }
        }
    }

    fn bad_request(&mut self, idx: usize, body: &str, keep_alive: bool) {
        self.respond_error(idx, 400, "Bad Request", "", body, keep_alive);
    }

    fn respond_error(
        &mut self,
        idx: usize,
        status: u16,
        reason: &str,
        extra: &str,
        body: &str,
        keep_alive: bool,
    ) {
        WorkerStats::add(&self.stats.http_errors, 1);
        let resp = http::response(
            status,
            reason,
            "text/plain; charset=utf-8",
            extra,
            body.as_bytes(),
            keep_alive,
        );
        self.respond(idx, resp, keep_alive);
    }

    fn http_refuse(&mut self, idx: usize, e: HttpError) {
        WorkerStats::add(&self.stats.http_errors, 1);
        match e {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders | HttpError::UriTooLong => {
                WorkerStats::add(&self.stats.head_too_large, 1)
            }
            HttpError::BodyTooLarge => WorkerStats::add(&self.stats.body_too_large, 1),
            _ => {}
        }
        self.respond(idx, http::error_response(e), false);
    }

    fn respond(&mut self, idx: usize, resp: Vec<u8>, keep_alive: bool) {
        if self.send(idx, &[Bytes::from(resp)], false).is_err() {
            return self.remove(idx);
        }
        if self.over_backlog(idx) {
            return;
        }
        if !keep_alive {
            self.begin_close(idx, None);
        }
    }

    /// Bounds what a client that does not read can make us queue (pipelined requests, echoes,
    /// pongs): past `--max-queued-bytes` it is treated as a slow consumer. A WebSocket client
    /// gets 1008 after its unsent data is dropped; an HTTP client is disconnected. Returns
    /// whether the connection was closed or is closing.
    fn over_backlog(&mut self, idx: usize) -> bool {
        let Some(conn) = self.conns.get(idx) else {
            return true;
        };
        if conn.queued() <= self.cfg.max_queued_bytes {
            return false;
        }
        match conn.phase {
            Phase::WsSub | Phase::WsEcho | Phase::BayeuxWs | Phase::Sse | Phase::Stream => {
                self.slow_consumer(idx)
            }
            Phase::Http | Phase::Closing | Phase::Poll | Phase::BayeuxPoll => {
                WorkerStats::add(&self.stats.slow_consumers, 1);
                self.remove(idx);
            }
        }
        true
    }

    // ---- WebSocket --------------------------------------------------------------------------

    /// Any input from a WebSocket client proves it alive: push the ping back.
    fn ws_activity(&mut self, idx: usize) {
        if self.conns[idx].phase == Phase::BayeuxWs {
            // The Bayeux connect cycle is its liveness check (see `bayeux_ws_arm`).
            return self.bayeux_ws_arm(idx);
        }
        let conn = &mut self.conns[idx];
        conn.clear(flag::PING_OUT);
        if self.cfg.ws_ping_interval == 0 {
            conn.deadline = 0;
        } else {
            let at = self.after(self.cfg.ws_ping_interval);
            self.set_deadline(idx, at);
        }
    }

    fn ws_input(&mut self, idx: usize, buf: &mut [u8]) -> usize {
        self.ws_activity(idx);
        let max = self.cfg.max_message_bytes;
        let stats = &*self.stats;
        let client_publish = self.cfg.client_publish;
        let conn = &mut self.conns[idx];
        let echo = conn.phase == Phase::WsEcho;
        let bayeux = conn.phase == Phase::BayeuxWs;
        // Echo, Bayeux and (with --client-publish) subscribers assemble what the client sends.
        let keep = echo || bayeux || client_publish;
        // Replies are collected first and sent after the reader returns (control frames are
        // tiny; an echoed message is one buffer). The flag marks data (droppable) frames.
        let mut replies: Vec<(Bytes, bool)> = Vec::new();
        let mut close: Option<Bytes> = None;
        // Complete text messages of a subscriber, to publish once the reader returns.
        let mut to_publish: Vec<Vec<u8>> = Vec::new();
        // Complete Bayeux messages (JSON arrays), processed once the reader returns.
        let mut bayeux_in: Vec<Vec<u8>> = Vec::new();
        let ext = &mut conn.ext;
        let Proto::Ws(reader) = &mut conn.proto else {
            return buf.len();
        };
        let res = reader.feed(buf, max, |ev| match ev {
            Event::Data { chunk, .. } => {
                if keep {
                    match ext
                        .get_or_insert_with(|| Box::new(Ext::Msg(Vec::new())))
                        .as_mut()
                    {
                        Ext::Msg(m) => m.extend_from_slice(chunk),
                        Ext::BayeuxWs(s) => s.msg.extend_from_slice(chunk),
                        _ => {}
                    }
                }
            }
            Event::End { text } => {
                WorkerStats::add(&stats.ws_messages_in, 1);
                let payload = if bayeux {
                    match ext.as_deref_mut() {
                        Some(Ext::BayeuxWs(s)) => std::mem::take(&mut s.msg),
                        _ => Vec::new(),
                    }
                } else {
                    match ext.take().map(|b| *b) {
                        Some(Ext::Msg(m)) => m,
                        _ => Vec::new(),
                    }
                };
                if bayeux {
                    if !text {
                        close.get_or_insert_with(|| {
                            frame::close_frame(
                                close_code::UNSUPPORTED,
                                "Bayeux messages are JSON in text frames",
                            )
                        });
                    } else if close.is_none() {
                        bayeux_in.push(payload);
                    }
                } else if echo {
                    let op = if text { OP_TEXT } else { OP_BINARY };
                    replies.push((frame::frame(op, &payload), true));
                } else if close.is_none() {
                    // A subscriber speaks: a message from the client.
                    if !text {
                        close = Some(frame::close_frame(
                            close_code::UNSUPPORTED,
                            "binary messages are not accepted",
                        ));
                    } else if !client_publish {
                        WorkerStats::add(&stats.client_publish_refused, 1);
                        close = Some(frame::close_frame(
                            close_code::POLICY,
                            "client publish disabled",
                        ));
                    } else {
                        to_publish.push(payload);
                    }
                }
            }
            Event::Ping(p) => replies.push((frame::frame(OP_PONG, p), false)),
            Event::Pong(_) => {}
            Event::Close { code, .. } => {
                close = Some(match code {
                    Some(c) => frame::close_frame(c, ""),
                    None => frame::frame(frame::OP_CLOSE, &[]),
                });
            }
        });
        let consumed = match res {
            Ok(n) => n,
            Err(Fail { code, reason }) => {
                let counter = if code == close_code::TOO_BIG {
                    &self.stats.ws_too_big
                } else {
                    &self.stats.ws_protocol_errors
                };
                WorkerStats::add(counter, 1);
                close = Some(frame::close_frame(code, reason));
                buf.len()
            }
        };
        for (reply, data) in replies {
            if self.send(idx, &[reply], data).is_err() {
                self.remove(idx);
                return buf.len();
            }
        }
        for payload in bayeux_in {
            if close.is_some() {
                break;
            }
            close = self.bayeux_ws_message(idx, payload);
            if !self.conns.contains(idx) {
                return buf.len();
            }
            if self.conns[idx].phase != Phase::BayeuxWs {
                // Closed as a slow consumer while answering: the rest is not processed.
                return buf.len();
            }
        }
        if !to_publish.is_empty() {
            let chan = self.conns[idx].chan;
            if let Some(name) = self.channels.name(chan).cloned() {
                for payload in to_publish {
                    // Text frames are UTF-8 (checked by the reader).
                    match self.publish_message(&name, Bytes::from(payload), None) {
                        Ok(_) => WorkerStats::add(&self.stats.client_messages, 1),
                        Err(PubError::Inbox(_)) => WorkerStats::add(&self.stats.client_messages, 1),
                        Err(PubError::Channels) => {
                            WorkerStats::add(&self.stats.channel_limit, 1);
                            close = Some(frame::close_frame(
                                close_code::TRY_AGAIN_LATER,
                                "channel limit reached",
                            ));
                            break;
                        }
                        Err(PubError::Broker(_)) => {
                            // Counted (broker_publish_refused); the client is told rather
                            // than losing what it sends silently.
                            close = Some(frame::close_frame(
                                close_code::TRY_AGAIN_LATER,
                                "broker unavailable",
                            ));
                            break;
                        }
                        Err(PubError::Draining) => {
                            // Counted (refused_draining): not published, and the client is
                            // told so by the close.
                            close = Some(frame::close_frame(
                                close_code::GOING_AWAY,
                                "server shutting down",
                            ));
                            break;
                        }
                    }
                }
            }
        }
        if self.over_backlog(idx) {
            return buf.len();
        }
        if let Some(c) = close {
            self.begin_close(idx, Some(c));
            return buf.len();
        }
        consumed
    }

    // ---- writing ----------------------------------------------------------------------------

    /// Sends `bufs` in order: straight to the socket when nothing is queued, else behind the
    /// queue. `data` marks droppable data messages, subject to `--max-queued-bytes`; control
    /// frames and HTTP responses are never dropped.
    fn send(&mut self, idx: usize, bufs: &[Bytes], data: bool) -> Result<(), Dead> {
        let conn = &mut self.conns[idx];
        send_on(conn, bufs, data, &self.stats)
    }

    /// Starts an orderly close: `last` (a close frame) is queued, the subscription ends, and
    /// once everything queued has gone the write side is shut down.
    fn begin_close(&mut self, idx: usize, last: Option<Bytes>) {
        self.release_poll(idx);
        self.bayeux_release(idx);
        self.unsubscribe(idx);
        let conn = &mut self.conns[idx];
        if conn.phase == Phase::Closing {
            return;
        }
        WorkerStats::sub(self.stats.phase_gauge(conn.phase), 1);
        if matches!(conn.phase, Phase::WsSub | Phase::WsEcho | Phase::BayeuxWs) {
            conn.set(flag::WAS_WS);
        }
        conn.phase = Phase::Closing;
        conn.ext = None;
        WorkerStats::add(&self.stats.conns_closing, 1);
        if let Some(frame) = last
            && self.send(idx, &[frame], false).is_err()
        {
            return self.remove(idx);
        }
        if self.conns[idx].out.is_none() {
            self.after_drained(idx);
        }
        let at = self.after(self.cfg.close_timeout);
        self.conns[idx].deadline = 0;
        self.set_deadline(idx, at);
    }

    /// Slow consumer: unsent data is dropped (counted); a WebSocket client gets 1008, an event
    /// stream just ends (the client resumes from the history with its last id).
    fn slow_consumer(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        if let Some(q) = conn.out.as_mut() {
            let (msgs, bytes) = q.drop_unsent_data();
            WorkerStats::add(&self.stats.drops, msgs);
            WorkerStats::sub(&self.stats.bytes_queued, bytes as u64);
        }
        WorkerStats::add(&self.stats.slow_consumers, 1);
        let last = matches!(conn.phase, Phase::WsSub | Phase::WsEcho | Phase::BayeuxWs)
            .then(|| frame::close_frame(close_code::POLICY, "slow consumer: queue limit exceeded"));
        self.begin_close(idx, last);
    }

    fn unsubscribe(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        if conn.chan == NO_CHANNEL {
            return;
        }
        let (chan, pos) = (conn.chan, conn.chan_pos);
        conn.chan = NO_CHANNEL;
        if let Some(moved) = self.channels.unsubscribe(chan, pos)
            && let Some(m) = self.conns.get_mut(moved as usize)
        {
            m.chan_pos = pos;
        }
    }

    /// Drops a connection now.
    fn remove(&mut self, idx: usize) {
        if !self.conns.contains(idx) {
            return;
        }
        self.release_poll(idx);
        self.bayeux_release(idx);
        self.unsubscribe(idx);
        let conn = self.conns.remove(idx);
        WorkerStats::sub(self.stats.phase_gauge(conn.phase), 1);
        WorkerStats::sub(&self.stats.bytes_queued, conn.queued() as u64);
        self.shared.conns.fetch_sub(1, Ordering::Relaxed);
        // Dropping the socket closes it, which also removes it from the epoll set.
    }

    // ---- mailbox and fan-out ----------------------------------------------------------------

    fn drain_mailbox(&mut self) {
        loop {
            match self.inbox.try_recv() {
                Ok(Mail::Publish(msg)) => {
                    if let Some(chan) = self.channels.lookup(&msg.channel) {
                        self.pending.push((chan, msg));
                    }
                }
                Ok(Mail::BayeuxWake { idx, generation }) => {
                    self.bayeux_wakes.push((idx, generation));
                }
                Ok(Mail::PublishAck {
                    idx,
                    generation,
                    receivers,
                }) => {
                    // Gone, or answered at its timeout already: nobody waits any more.
                    if self.is_live(idx as usize, generation)
                        && self.conns[idx as usize].has(flag::ACK_WAIT)
                    {
                        self.publish_acked(idx as usize, receivers, false);
                    }
                }
                Ok(Mail::Quiesce) => {
                    // Every publish this worker accepted is in its peers' inboxes already (a
                    // publish posts them before it is answered); later ones see `draining`.
                    self.shared.quiesced.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Mail::Shutdown { until }) => self.shutdown_asked = Some(until),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    // The server handle is gone; shut down.
                    if self.drain_deadline.is_none() {
                        self.shutdown_asked = Some(Instant::now() + self.cfg.shutdown_timeout());
                    }
                    return;
                }
            }
        }
    }

    /// Delivers this turn's messages: per channel, each subscriber gets everything for it in
    /// one `writev` (or one queue append when it is backlogged), in its transport's encoding.
    /// Held polls are answered after the walk (answering unsubscribes them).
    fn fan_out(&mut self) {
        if self.pending.is_empty() {
            self.resumed.clear();
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Per channel in id order. Arrival order is not enough: a local publish (id 5) is
        // pending before the mailbox is drained, while a peer's earlier one (id 4, posted
        // before our publish took the channel lock) is drained after it. Both are here in the
        // same turn — the lock orders the post before our publish — so sorting suffices.
        pending.sort_unstable_by_key(|(chan, m)| (*chan, m.id));
        let mut slow: Vec<usize> = Vec::new();
        let mut dead: Vec<usize> = Vec::new();
        // Held polls to answer: (connection, range of `pending` for its channel).
        let mut polls: Vec<(usize, usize, usize)> = Vec::new();
        let mut ws: Vec<Bytes> = Vec::new();
        let mut env: Vec<Bytes> = Vec::new();
        let mut sse: Vec<Bytes> = Vec::new();
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        let mut i = 0;
        while i < pending.len() {
            let chan = pending[i].0;
            let start = i;
            while i < pending.len() && pending[i].0 == chan {
                i += 1;
            }
            let batch = &pending[start..i];
            ws.clear();
            env.clear();
            sse.clear();
            chunks.clear();
            ids.clear();
            ids.extend(batch.iter().map(|(_, m)| m.id));
            for &sub in self.channels.subscribers(chan) {
                let conn = &mut self.conns[sub as usize];
                let frames: &[Bytes] = match conn.phase {
                    Phase::WsSub if conn.has(flag::ENVELOPE) => {
                        if env.is_empty() {
                            env.extend(batch.iter().map(|(_, m)| m.ws_envelope().clone()));
                        }
                        // A subscriber that resumed this turn has what is at or below its
                        // cursor already.
                        let from = match self.resumed.get(&(sub, conn.generation)) {
                            Some(&c) => ids.partition_point(|&id| id <= c),
                            None => 0,
                        };
                        if from == ids.len() {
                            continue;
                        }
                        &env[from..]
                    }
                    Phase::WsSub => {
                        if ws.is_empty() {
                            ws.extend(batch.iter().map(|(_, m)| m.ws_frame().clone()));
                        }
                        &ws
                    }
                    Phase::Sse | Phase::Stream => {
                        let mut st = conn.sub();
                        // Skip what the subscriber already has (sent from the history when it
                        // subscribed while these were in flight).
                        let from = ids.partition_point(|&id| id <= st.cursor());
                        if from == ids.len() {
                            continue;
                        }
                        st.set_cursor(ids[ids.len() - 1]);
                        conn.proto = Proto::Sub(st);
                        let v = if conn.phase == Phase::Sse {
                            if sse.is_empty() {
                                sse.extend(batch.iter().map(|(_, m)| m.sse_event().clone()));
                            }
                            &sse
                        } else {
                            if chunks.is_empty() {
                                chunks.extend(batch.iter().map(|(_, m)| m.stream_chunk().clone()));
                            }
                            &chunks
                        };
                        &v[from..]
                    }
                    Phase::Poll => {
                        polls.push((sub as usize, start, i));
                        continue;
                    }
                    _ => continue,
                };
                WorkerStats::add(&self.stats.messages_out, frames.len() as u64);
                for group in frames.chunks(outq::MAX_IOV) {
                    if send_on(conn, group, true, &self.stats).is_err() {
                        dead.push(sub as usize);
                        break;
                    }
                }
                if conn.queued() > self.cfg.max_queued_bytes {
                    slow.push(sub as usize);
                }
            }
        }
        self.resumed.clear();
        for (idx, start, end) in polls {
            self.wake_poll(idx, &pending[start..end]);
        }
        pending.clear();
        self.pending = pending;
        for idx in slow {
            if self
                .conns
                .get(idx)
                .is_some_and(|c| matches!(c.phase, Phase::WsSub | Phase::Sse | Phase::Stream))
            {
                self.slow_consumer(idx);
            }
        }
        for idx in dead {
            self.remove(idx);
        }
    }

    // ---- timers -----------------------------------------------------------------------------

    /// The wheel tick by which `secs` whole seconds have surely passed: a timeout armed now
    /// fires after more than `secs` and at most `secs + 1` seconds (the wheel's resolution).
    /// `tick` is the current second plus one, so now lies anywhere in `[tick - 1, tick)`, and
    /// tick `t` is processed once `t - 1` seconds have elapsed: `tick + secs + 1` is the first
    /// tick that cannot come early.
    fn after(&self, secs: u32) -> u32 {
        self.tick.saturating_add(secs).saturating_add(1)
    }

    /// Sets the connection's deadline to `at` and makes sure a wheel entry fires by then.
    fn set_deadline(&mut self, idx: usize, at: u32) {
        let conn = &mut self.conns[idx];
        conn.deadline = at;
        if conn.timer_at == 0 || at < conn.timer_at {
            conn.timer_at = self.wheel.arm(at, (idx as u32, conn.generation));
        }
    }

    fn fire_timers(&mut self) {
        let mut due: Vec<Key> = Vec::new();
        let conns = &mut self.conns;
        let tick = self.tick;
        let wheel = &mut self.wheel;
        let mut rearm: Vec<(Key, u32)> = Vec::new();
        wheel.advance(tick, |at, (idx, generation)| {
            let Some(c) = conns.get_mut(idx as usize) else {
                return;
            };
            if c.generation != generation || c.timer_at != at {
                return; // stale entry
            }
            c.timer_at = 0;
            if c.deadline == 0 {
                return;
            }
            if c.deadline > tick {
                rearm.push(((idx, generation), c.deadline));
            } else {
                due.push((idx, generation));
            }
        });
        for ((idx, generation), at) in rearm {
            let c = &mut self.conns[idx as usize];
            c.timer_at = self.wheel.arm(at, (idx, generation));
        }
        for (idx, generation) in due {
            let idx = idx as usize;
            if self.is_live(idx, generation) {
                self.on_timeout(idx);
            }
        }
    }

    fn on_timeout(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        conn.deadline = 0;
        match conn.phase {
            Phase::Http => {
                if conn.has(flag::ACK_WAIT) {
                    self.publish_acked(idx, None, true);
                } else if conn.has(flag::IN_REQUEST) {
                    WorkerStats::add(&self.stats.head_timeouts, 1);
                    WorkerStats::add(&self.stats.http_errors, 1);
                    let resp = http::response(
                        408,
                        "Request Timeout",
                        "text/plain; charset=utf-8",
                        "",
                        b"request head not completed in time\n",
                        false,
                    );
                    self.respond(idx, resp, false);
                } else {
                    self.remove(idx); // idle keep-alive connection
                }
            }
            Phase::WsSub | Phase::WsEcho => {
                if conn.has(flag::PING_OUT) {
                    WorkerStats::add(&self.stats.ws_pong_timeouts, 1);
                    self.begin_close(
                        idx,
                        Some(frame::close_frame(close_code::GOING_AWAY, "ping timeout")),
                    );
                } else {
                    conn.set(flag::PING_OUT);
                    let at = self.after(self.cfg.ws_pong_timeout);
                    self.set_deadline(idx, at);
                    if self
                        .send(idx, &[frame::frame(OP_PING, b"")], false)
                        .is_err()
                    {
                        self.remove(idx);
                    }
                }
            }
            Phase::Sse | Phase::Stream => self.heartbeat(idx),
            Phase::Poll => {
                WorkerStats::add(&self.stats.poll_timeouts, 1);
                self.answer_held(idx, &[], Gap::None);
            }
            Phase::BayeuxPoll => self.bayeux_end_hold(idx, None),
            Phase::BayeuxWs => self.bayeux_ws_timeout(idx),
            Phase::Closing => {
                if conn.has(flag::WAS_WS) {
                    WorkerStats::add(&self.stats.close_timeouts, 1);
                }
                self.remove(idx);
            }
        }
    }

    // ---- end of turn and shutdown -----------------------------------------------------------

    fn end_turn(&mut self) {
        if self.id == 0 && self.swept != self.tick {
            self.swept = self.tick;
            self.shared.hub.sweep();
            self.bayeux_sweep();
        }
        for (i, w) in self.wake.iter_mut().enumerate() {
            if std::mem::take(w) {
                self.shared.mailboxes[i].wake();
            }
        }
        self.channels.collect_empty();
        self.stats
            .channels
            .store(self.channels.len() as u64, Ordering::Relaxed);
        if self.accept_more {
            self.accept();
        }
    }

    /// Stops accepting and ends every client's session (this turn's fan-out has run): 1001 to
    /// WebSockets, streams ended, held polls answered, idle HTTP connections closed. A request
    /// in progress is read to its end and refused (503); a publish waiting for the broker is
    /// answered. The worker exits once every connection is gone, or at `until`.
    fn begin_shutdown(&mut self, until: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        self.drain_deadline = Some(until);
        if let Some(mut l) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.accept_more = false;
        let idxs: Vec<usize> = self.conns.iter().map(|(i, _)| i).collect();
        for idx in idxs {
            match self.conns[idx].phase {
                Phase::WsSub | Phase::WsEcho | Phase::BayeuxWs => self.begin_close(
                    idx,
                    Some(frame::close_frame(
                        close_code::GOING_AWAY,
                        "server shutting down",
                    )),
                ),
                Phase::Http => {
                    let c = &self.conns[idx];
                    if c.has(flag::IN_REQUEST) || c.has(flag::ACK_WAIT) || c.tail.is_some() {
                        // Answered when complete (see `http_input`, `publish_acked`).
                    } else if c.out.is_none() {
                        self.remove(idx);
                    } else {
                        self.begin_close(idx, None);
                    }
                }
                // The stream ends (chunked: with its last chunk); clients reconnect and resume.
                Phase::Sse => self.begin_close(idx, None),
                Phase::Stream => self.begin_close(idx, Some(Bytes::from_static(b"0\r\n\r\n"))),
                // Answered now (empty) and closed: the client polls again elsewhere or later.
                Phase::Poll => {
                    self.conns[idx].clear(flag::KEEP_ALIVE);
                    self.answer_held(idx, &[], Gap::None);
                }
                Phase::BayeuxPoll => {
                    self.conns[idx].clear(flag::KEEP_ALIVE);
                    self.bayeux_end_hold(idx, None);
                }
                Phase::Closing => {}
            }
        }
    }
}

/// Reads once, retrying on EINTR.
fn read_some(sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sock.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Keeps `rest` as the connection's leftover: the existing box is reused, a new one is made only
/// when needed, and it is freed when nothing is left.
fn keep_leftover(conn: &mut Conn, rest: &[u8]) {
    if rest.is_empty() {
        conn.tail = None;
        return;
    }
    let t = conn.tail.get_or_insert_with(Default::default);
    t.clear();
    t.extend_from_slice(rest);
    if t.capacity() > 4 * SMALL_TAIL && t.len() <= SMALL_TAIL {
        t.shrink_to_fit();
    }
}

/// [`Worker::send`] on a connection borrowed directly (the fan-out loop holds the channel table).
/// Slow-consumer limits are the caller's business: this only writes and queues.
fn send_on(conn: &mut Conn, bufs: &[Bytes], data: bool, stats: &WorkerStats) -> Result<(), Dead> {
    let total: usize = bufs.iter().map(Bytes::len).sum();
    if let Some(q) = conn.out.as_mut() {
        // Backlogged (the last write hit WouldBlock): keep order, append behind what waits;
        // the writable event will flush it all in one writev.
        for b in bufs {
            q.push(b.clone(), data);
        }
        WorkerStats::add(&stats.bytes_queued, total as u64);
        return Ok(());
    }
    let written = outq::write_direct(&mut conn.sock, bufs).map_err(|_| Dead)?;
    WorkerStats::add(&stats.bytes_out, written as u64);
    if written < total {
        let mut q = Box::<OutQueue>::default();
        outq::queue_rest(&mut q, bufs, written, data);
        // Write until WouldBlock (edge-triggered readiness only reports a change after it),
        // which also covers more than MAX_IOV buffers.
        let more = q.flush(&mut conn.sock).map_err(|_| Dead)?;
        WorkerStats::add(&stats.bytes_out, more as u64);
        if !q.is_empty() {
            WorkerStats::add(&stats.bytes_queued, q.bytes() as u64);
            conn.out = Some(q);
        }
    }
    Ok(())
}
