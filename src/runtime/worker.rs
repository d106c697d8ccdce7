//! One worker: one thread, one `mio::Poll`, one SO_REUSEPORT listener, one slab of connections,
//! one subscription table, one timing wheel. Nothing here is shared with other workers except
//! what is in [`Shared`] (the inboxes, the hub, the Bayeux store, the statistics).
//!
//! # The loop turn ([`Worker::run`])
//!
//! 1. **poll** — wait for readiness, at most until the next one-second tick (zero when work was
//!    left over from the previous turn; at the drain deadline when shutting down).
//! 2. **dispatch** — for each event (at most 1,024): a listener event only notes that accepts
//!    are waiting (they are taken in step 7); for a connection, flush its queue if writable, then
//!    read until `WouldBlock` or [`READ_BUDGET`] bytes, parsing HTTP or WebSocket from the
//!    per-worker scratch buffer (`conn_io.rs`, `http.rs`, `ws.rs`, `transports.rs`, `bayeux.rs`).
//!    Connections that used up their budget last turn are read again here. Publishes are not
//!    delivered here: they are recorded as pending fan-out (`publish.rs`).
//! 3. **mailbox** — publishes from other workers and the broker join the pending fan-out;
//!    Bayeux wakes, broker acknowledgements, `Quiesce` and `Shutdown` are taken (`fanout.rs`).
//! 4. **fan-out** — pending messages grouped by channel in id order; each subscriber gets one
//!    `writev` of everything for it this turn, or an append to its queue if it is backlogged;
//!    then the held Bayeux connects that were woken are answered.
//! 5. **shutdown** — a `Shutdown` taken in step 3 starts the drain now, after the fan-out has
//!    delivered everything that came before it.
//! 6. **timers** — wheel slots up to now: head, keep-alive and broker-ack timeouts, pings, pong
//!    and close timeouts, heartbeats, poll and Bayeux holds (armed with [`Worker::after`]: never
//!    early, at most a second late; `timers.rs`).
//! 7. **end of turn** — once a second the dashboard streams get the figures (`dashboard.rs`);
//!    worker 0 sweeps the hub and the Bayeux store once a second; wake each
//!    peer that was sent mail this turn (once); drop emptied channels; accept new connections
//!    (at most [`accept::ACCEPT_BATCH`], unless paused after an accept error; `accept.rs`).
//!
//! One concept per file under `worker/`; this file keeps the turn, construction and shutdown.
//! Network errors close that connection and bump a counter; nothing reachable from peer input
//! panics.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::chunks::Chunked;
use bytes::Bytes;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use crate::broker;
use crate::config::Config;
use crate::logging::{Event, Summary};
use crate::proto::http::{HeadLimits, HttpDate};
use crate::proto::ws::frame::{self, close_code};
use crate::pubsub::Channels;
use crate::pubsub::hub::{Gap, Message};
use crate::runtime::conn::{Conn, Phase, flag};
use crate::runtime::mailbox::Inbox;
use crate::runtime::timer::{Key, Wheel};
use crate::stats::WorkerStats;

/// Token of the worker's listener.
pub const LISTENER: Token = Token(u32::MAX as usize);
/// Token of the worker's TLS listener (`--tls-listen`).
pub const TLS_LISTENER: Token = Token(u32::MAX as usize - 2);

/// A worker's listening sockets: plaintext (`--listen`) and TLS (`--tls-listen`).
#[derive(Debug)]
pub struct Listeners {
    pub plain: TcpListener,
    pub tls: Option<TcpListener>,
}
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
/// Readiness events handled per poll.
const EVENTS: usize = 1024;

mod accept;
mod auth;
mod bayeux;
mod conn_io;
mod dashboard;
mod fanout;
mod http;
mod publish;
mod socketio;
mod timers;
mod tls;
mod transports;
mod ws;

use crate::runtime::shared::Shared;
pub use socketio::Adopt as SioAdopt;
// The Bayeux glue names it from here.
use conn_io::{Dead, Handled};
use publish::PubError;

pub struct Worker {
    id: usize,
    cfg: Arc<Config>,
    poll: Poll,
    listener: Option<TcpListener>,
    /// `--tls-listen`: connections accepted here speak TLS (`tls.rs`).
    tls_listener: Option<TcpListener>,
    /// TLS sessions by connection slot (empty without `--tls-listen`): beside the slab, so that
    /// a plaintext connection's entry does not grow.
    tls: Vec<Option<Box<crate::proto::tls::Tls>>>,
    /// TLS: plaintext gathered for one encryption, and the records made from it (or from a
    /// read: handshake messages, alerts) before they are written.
    tls_plain: Vec<u8>,
    tls_out: Vec<u8>,
    inbox: Inbox,
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    conns: Chunked<Conn>,
    next_generation: u32,
    channels: Channels,
    wheel: Wheel,
    scratch: Box<[u8]>,
    /// Messages to deliver at the end of this turn: (channel index, message).
    pending: Vec<(u32, Arc<Message>)>,
    /// Channels of messages posted here this turn that no local entry wanted (the worker still
    /// watched them in the hub): unwatched at the end of the turn if still unsubscribed.
    strays: Vec<Arc<str>>,
    /// This worker told the hub it has pattern subscribers ([`Hub::watch_patterns`]).
    ///
    /// [`Hub::watch_patterns`]: crate::pubsub::hub::Hub::watch_patterns
    watching_patterns: bool,
    /// Connections that stopped reading at their budget, to be read again next turn.
    retry: Vec<Key>,
    /// Peers that were sent mail this turn and must be woken.
    wake: Vec<bool>,
    /// Listener work left over (batch limit or pause).
    accept_more: bool,
    accept_more_tls: bool,
    accept_paused_until: Option<Instant>,
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
    /// permessage-deflate: this turn's Bayeux deliveries compressed once for every Bayeux
    /// WebSocket client here that agreed (keyed by the delivery's shared bytes, held so that
    /// the address stays theirs; emptied at the end of the turn).
    bayeux_pieces: std::collections::HashMap<(usize, usize), (Bytes, Option<Bytes>)>,
    /// The Bayeux advice JSON (from the flags), shared by every connect reply.
    bayeux_advice: String,
    head_limits: HeadLimits,
    /// Events that can repeat per connection (slow consumers, refusals at
    /// --max-connections, 4xx/5xx answers, accept errors, authorization refusals), counted
    /// here and logged in one line per kind at most once a second (`end_turn`), never a line
    /// per request.
    notes: Summary,
    /// The `Date` of every answer, formatted again when the tick changes (so at most about a
    /// second old), and the tick it was formatted at.
    date: HttpDate,
    date_tick: u32,
    /// `/dashboard/events` streams of this worker (slot, generation), each sent the figures once
    /// per tick (`dashboard.rs`); entries of closed connections are dropped at the next tick.
    dashboards: Vec<(u32, u32)>,
    /// The tick the dashboard streams were last sent the figures.
    dashboard_at: u32,
    /// Socket.IO sessions owned by this worker, their timers and settings (`socketio.rs`).
    sio: socketio::Sio,
}

/// The wall clock in whole seconds since the Unix epoch (the `Date` header).
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
        listeners: Listeners,
        inbox: Inbox,
        shared: Arc<Shared>,
    ) -> io::Result<Worker> {
        let Listeners {
            plain: mut listener,
            tls: mut tls_listener,
        } = listeners;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(l) = tls_listener.as_mut() {
            poll.registry()
                .register(l, TLS_LISTENER, Interest::READABLE)?;
        }
        let stats = shared.stats[id].clone();
        let n = shared.mailboxes.len();
        let head_limits = HeadLimits {
            max_head_bytes: cfg.max_head_bytes,
            max_headers: usize::from(cfg.max_headers),
        };
        let bayeux_advice = bayeux::advice(&cfg);
        let cfg_sio = cfg.clone();
        // Listening (bound, registered): counted until it stops accepting (`/readyz`).
        shared.listening.fetch_add(1, Ordering::Relaxed);
        Ok(Worker {
            id,
            channels: Channels::new(cfg.max_channels),
            cfg,
            poll,
            listener: Some(listener),
            tls_listener,
            tls: Vec::new(),
            tls_plain: Vec::new(),
            tls_out: Vec::new(),
            inbox,
            shared,
            stats,
            conns: Chunked::new(),
            next_generation: 1,
            wheel: Wheel::new(1),
            scratch: vec![0u8; SCRATCH + SMALL_TAIL].into_boxed_slice(),
            pending: Vec::new(),
            strays: Vec::new(),
            watching_patterns: false,
            retry: Vec::new(),
            wake: vec![false; n],
            accept_more: false,
            accept_more_tls: false,
            accept_paused_until: None,
            drain_deadline: None,
            shutdown_asked: None,
            start: Instant::now(),
            tick: 1,
            swept: 0,
            resumed: std::collections::HashMap::new(),
            bayeux_wakes: Vec::new(),
            bayeux_pieces: std::collections::HashMap::new(),
            bayeux_advice,
            head_limits,
            notes: Summary::default(),
            date: HttpDate::from_unix(unix_secs()),
            date_tick: 1,
            dashboards: Vec::new(),
            dashboard_at: 0,
            sio: socketio::Sio::new(&cfg_sio),
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
                log::error!(
                    target: "edgecomet::worker",
                    worker = self.id;
                    "worker {}: poll failed: {e}; the worker stops", self.id
                );
                if self.listener.is_some() {
                    self.shared.listening.fetch_sub(1, Ordering::Relaxed);
                }
                return;
            }
            self.tick = (self.start.elapsed().as_secs() as u32).saturating_add(1);
            if self.tick != self.date_tick {
                self.date_tick = self.tick;
                self.date = HttpDate::from_unix(unix_secs());
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_more = true,
                    TLS_LISTENER => self.accept_more_tls = true,
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
            self.sio_timers();
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
            || (self.accept_paused_until.is_none()
                && ((self.accept_more && self.listener.is_some())
                    || (self.accept_more_tls && self.tls_listener.is_some())));
        if busy {
            return Duration::ZERO;
        }
        // Until the next whole-second tick.
        let elapsed = self.start.elapsed();
        let mut t = Duration::from_secs(elapsed.as_secs() + 1).saturating_sub(elapsed);
        if let Some(until) = self.accept_paused_until {
            t = t.min(until.saturating_duration_since(Instant::now()));
        }
        if let Some(sio) = self.sio_wait() {
            // Socket.IO heartbeats are in milliseconds (the wheel has seconds).
            t = t.min(sio);
        }
        if let Some(until) = self.drain_deadline {
            // Wake at the drain deadline itself, not at the tick after it.
            return t.min(until.saturating_duration_since(Instant::now()));
        }
        t.max(Duration::from_millis(1))
    }

    /// Counts an error answer for the summary line: 4xx as client errors, 5xx as refusals at
    /// a limit or with the broker down.
    pub(super) fn note_status(&mut self, status: u16, reason: &str) {
        let e = if status >= 500 {
            Event::Unavailable
        } else {
            Event::ClientError
        };
        self.notes.note(e, || format!("{status} {reason}"));
    }

    fn end_turn(&mut self) {
        self.notes.flush(self.id, self.tick);
        if !self.bayeux_pieces.is_empty() {
            self.bayeux_pieces = std::collections::HashMap::new();
        }
        self.dashboard_tick();
        if self.id == 0 && self.swept != self.tick {
            self.swept = self.tick;
            self.shared.hub.sweep(self.shared.now());
            self.bayeux_sweep();
            self.sio_sweep();
        }
        for (i, w) in self.wake.iter_mut().enumerate() {
            if std::mem::take(w) {
                self.shared.mailboxes[i].wake();
            }
        }
        let broker = self.shared.broker.get();
        let (hub, id, peers) = (&self.shared.hub, self.id, self.shared.mailboxes.len() > 1);
        self.channels.collect_empty(|name| {
            // The last local interest: the broker unsubscribes after its linger. (A pattern
            // of a Socket.IO session is a Redis pattern.)
            if let Some(b) = broker {
                b.remove(&broker::Key::of_bayeux(name));
            }
            if peers && !crate::pubsub::is_pattern(name) {
                hub.unwatch(name, id);
            }
        });
        for name in self.strays.drain(..) {
            if self.channels.lookup(&name).is_none() {
                hub.unwatch(&name, id);
            }
        }
        if self.watching_patterns && self.channels.patterns() == 0 {
            self.watching_patterns = false;
            hub.watch_patterns(id, false);
        }
        self.stats
            .channels
            .store(self.channels.len() as u64, Ordering::Relaxed);
        if self.accept_more || self.accept_more_tls {
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
            self.shared.listening.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(mut l) = self.tls_listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        self.accept_more = false;
        self.accept_more_tls = false;
        let idxs: Vec<usize> = self.conns.iter().map(|(i, _)| i).collect();
        for idx in idxs {
            // Ending one connection's session may have removed another (a Socket.IO session's
            // probe or held poll whose last write failed).
            if !self.conns.contains(idx) {
                continue;
            }
            let r = self.end_session(idx);
            self.settle(idx, r);
        }
    }

    /// One connection's part of [`Worker::begin_shutdown`].
    fn end_session(&mut self, idx: usize) -> Handled {
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
                    Ok(())
                } else if c.out.is_none() {
                    Err(Dead) // idle: nothing to finish
                } else {
                    self.begin_close(idx, None)
                }
            }
            // The stream ends (chunked: with its last chunk); clients reconnect and resume.
            Phase::Sse | Phase::Dashboard => self.begin_close(idx, None),
            Phase::Stream => self.begin_close(idx, Some(Bytes::from_static(b"0\r\n\r\n"))),
            // Answered now (empty) and closed: the client polls again elsewhere or later.
            Phase::Poll => {
                self.conns[idx].clear(flag::KEEP_ALIVE);
                self.answer_held(idx, &[], Gap::None)
            }
            Phase::BayeuxPoll => {
                self.conns[idx].clear(flag::KEEP_ALIVE);
                self.bayeux_end_hold(idx, None)
            }
            // The session ends: its WebSocket gets 1001, its held GET the close packet.
            Phase::SioWs | Phase::SioPoll => self.sio_shutdown(idx),
            Phase::Closing => Ok(()),
        }
    }
}
