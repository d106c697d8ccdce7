//! Socket.IO on the worker (Engine.IO v4, Socket.IO v5; the rules are `session::socketio`):
//! the requests on `--socketio-path` (handshake, long-polling GET and POST, the WebSocket with
//! or without an upgrade from polling), the session table and its millisecond timers, the
//! channels a session joins (the session, not a connection, is the subscriber: its entry in
//! the channel table is its slot with [`SIO_BIT`]), and the move of a request to the worker
//! that owns its session.
//!
//! A session lives in the worker that made it: its id names the worker and the slot
//! (`session::socketio::sid`). A request for it that reached another worker (SO_REUSEPORT
//! spreads connections, and a polling client opens several) is handed over: the connection
//! leaves this worker's poll and slab and goes, with the bytes read so far (and its TLS
//! session), through the owner's inbox (`Mail::SioAdopt`), where it continues as if it had
//! been accepted there. So a session's state is never shared and never locked.

mod channels;
mod requests;
mod ws;

use channels::{Asked, SioEnv};

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use crate::chunks::Chunked;
use bytes::Bytes;
use mio::Interest;
use mio::unix::SourceFd;

use super::conn_io::{Dead, Handled, keep_leftover};
use super::{WAKER, Worker, token};
use crate::config::Config;
use crate::proto::http::{self};
use crate::proto::socketio as wire;
use crate::proto::ws::deflate;
use crate::proto::ws::frame::{self, OP_BINARY, OP_TEXT, close_code};
use crate::pubsub::hub::Message;
use crate::runtime::conn::{Conn, Phase};
use crate::runtime::mailbox::Mail;
use crate::runtime::outq::OutQueue;
use crate::session::socketio::sid::Sid;
use crate::session::socketio::{Closed, Out, Session, Settings, Transport};
use crate::stats::WorkerStats;

/// Marks a channel-table entry that is a Socket.IO session's, not a connection's: the entry
/// is `SIO_BIT | namespace << NSP_SHIFT | slot` (a session is in a channel once per namespace
/// that joined it).
pub const SIO_BIT: u32 = 1 << 31;
const NSP_SHIFT: u32 = 26;
/// Most sessions per worker (slots must fit below the namespace bits): 67 million.
pub(super) const MAX_SESSIONS: usize = 1 << NSP_SHIFT;

/// The channel-table entry of session `slot` in namespace `nsp`.
pub fn sio_entry(slot: usize, nsp: usize) -> u32 {
    SIO_BIT | (nsp as u32) << NSP_SHIFT | slot as u32
}

/// (slot, namespace) of a channel-table entry with [`SIO_BIT`].
pub fn sio_of_entry(e: u32) -> (usize, usize) {
    (
        (e & (MAX_SESSIONS as u32 - 1)) as usize,
        ((e & !SIO_BIT) >> NSP_SHIFT) as usize,
    )
}

/// A connection moving to the worker that owns its Socket.IO session.
#[derive(Debug)]
pub struct Adopt {
    pub sock: std::net::TcpStream,
    pub tls: Option<Box<crate::proto::tls::Tls>>,
    pub out: Option<Box<OutQueue>>,
    /// Everything read and not yet handled, from the request for the session on.
    pub input: Vec<u8>,
}

/// The worker's Socket.IO state.
#[derive(Debug)]
pub struct Sio {
    pub sessions: Chunked<Session>,
    /// Shared with every call into the rules (one pointer copy, not the namespaces' list).
    pub settings: Arc<Settings>,
    /// Session deadlines: (ms, slot, generation), earliest first; stale entries are skipped.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    next_generation: u32,
    event: Box<str>,
    /// `--socketio-path` and the same without its last `/`.
    path: String,
    path_trimmed: String,
    /// Sessions recovered this turn, with their cursor: this turn's fan-out skips what is at or
    /// below it (it was sent from the history), as for a native subscriber that resumed.
    /// Keyed by (session slot, channel index): the cursor is the recovered channel's.
    pub resumed: std::collections::HashMap<(u32, u32), u64>,
    /// This turn's long-poll packets of messages for namespaces other than `/`: (channel, id,
    /// namespace) → packet, made once per turn for every polling session of that namespace.
    pub ns_texts: std::collections::HashMap<(u32, u64, usize), Bytes>,
}

impl Sio {
    pub fn new(cfg: &Config) -> Sio {
        let conf = cfg.socketio_conformance;
        let mut namespaces: Vec<Box<str>> = vec!["/".into()];
        if conf {
            namespaces.push("/custom".into());
        }
        for n in &cfg.socketio_namespaces {
            if !namespaces.iter().any(|x| **x == **n) {
                namespaces.push(n.as_str().into());
            }
        }
        let pick = |v: Option<u64>, normal: u64, conformance: u64| {
            v.unwrap_or(if conf { conformance } else { normal })
        };
        Sio {
            sessions: Chunked::new(),
            settings: Arc::new(Settings {
                ping_interval_ms: pick(cfg.socketio_ping_interval, 25_000, 300),
                ping_timeout_ms: pick(cfg.socketio_ping_timeout, 20_000, 200),
                connect_timeout_ms: pick(cfg.socketio_connect_timeout, 45_000, 1_000),
                max_payload: cfg.socketio_max_payload,
                namespaces,
                conformance: conf,
                client_publish: cfg.client_publish,
                recovery_ms: pick(cfg.socketio_recovery, 120_000, 0),
                max_attachments: cfg.socketio_max_attachments,
            }),
            heap: BinaryHeap::new(),
            next_generation: 1,
            event: cfg.socketio_event.as_str().into(),
            path: cfg.socketio_path.clone(),
            path_trimmed: cfg.socketio_path.trim_end_matches('/').to_string(),
            resumed: std::collections::HashMap::new(),
            ns_texts: std::collections::HashMap::new(),
        }
    }

    /// Whether a request path is Socket.IO's.
    pub fn is_path(&self, path: &str) -> bool {
        path == self.path || path == self.path_trimmed
    }

    /// The WebSocket frames of `m` for sessions on WebSocket (built once per message).
    pub fn frame<'m>(&self, m: &'m Message) -> &'m Bytes {
        m.sio_ws_frame(&self.event, self.settings.recovery_ms > 0)
    }

    /// The long-poll packet of `m`.
    pub fn text<'m>(&self, m: &'m Message) -> &'m Bytes {
        m.sio_text(&self.event, self.settings.recovery_ms > 0)
    }

    /// The long-poll packet of `m` in namespace `nsp` (`/`: the shared one; another: made from
    /// it, `42/chat,[…]`).
    pub fn text_in(&self, m: &Message, nsp: usize) -> Bytes {
        let shared = self.text(m);
        match self.settings.namespaces.get(nsp) {
            Some(name) if nsp != 0 => {
                let mut out = Vec::with_capacity(shared.len() + 2 * (name.len() + 1));
                for (i, p) in wire::split_payload(shared).enumerate() {
                    if i > 0 {
                        out.push(wire::SEPARATOR);
                    }
                    // Every packet here is `42…`: the namespace goes after the type.
                    out.extend_from_slice(&p[..2]);
                    out.extend_from_slice(name.as_bytes());
                    out.push(b',');
                    out.extend_from_slice(&p[2..]);
                }
                Bytes::from(out)
            }
            _ => shared.clone(),
        }
    }

    /// The WebSocket frames of `m` in namespace `nsp`.
    pub fn frame_in(&self, m: &Message, nsp: usize) -> Bytes {
        if nsp == 0 {
            return self.frame(m).clone();
        }
        let text = self.text_in(m, nsp);
        let mut out = Vec::with_capacity(text.len() + 16);
        for p in wire::split_payload(&text) {
            out.extend_from_slice(&frame::frame(OP_TEXT, p));
        }
        Bytes::from(out)
    }

    /// [`frame_in`](Self::frame_in) for a session whose WebSocket agreed to permessage-deflate
    /// (`/`: made once per message; another namespace: once per batch by the caller).
    pub fn frame_in_deflated(&self, m: &Message, nsp: usize, min: usize) -> Bytes {
        if nsp == 0 {
            let offset = self.settings.recovery_ms > 0;
            return m.sio_ws_frame_deflated(&self.event, offset, min).clone();
        }
        deflate::compress_frames(&self.frame_in(m, nsp), min)
    }

    /// The next session deadline, if any.
    pub fn next_due(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }
}

/// The JSON error answers of the reference server.
fn error_body(code: u8) -> &'static str {
    match code {
        0 => "{\"code\":0,\"message\":\"Transport unknown\"}",
        1 => "{\"code\":1,\"message\":\"Session ID unknown\"}",
        2 => "{\"code\":2,\"message\":\"Bad handshake method\"}",
        4 => "{\"code\":4,\"message\":\"Forbidden\"}",
        5 => "{\"code\":5,\"message\":\"Unsupported protocol version\"}",
        _ => "{\"code\":3,\"message\":\"Bad request\"}",
    }
}

/// 64 random bits, never 0 (0 means "none" in a session): socket ids and private ids.
fn random_id() -> u64 {
    (crate::runtime::worker::bayeux::random_u128() as u64).max(1)
}

impl Worker {
    fn sio_now(&self) -> u64 {
        self.shared.micros() / 1_000
    }

    // ---- the move to the owner --------------------------------------------------------------

    /// The worker owning the session a request names, when it is another one.
    pub(super) fn sio_elsewhere(&self, head: &http::Head<'_>) -> Option<usize> {
        let (path, _) = head.path.split_once('?')?;
        if !self.sio.is_path(path) {
            return None;
        }
        let sid = Sid::decode(http::query_param(head.path, "sid")?)?;
        let w = usize::from(sid.worker);
        (w != self.id && w < self.shared.mailboxes.len()).then_some(w)
    }

    /// Moves connection `idx` to worker `to` with `input` (everything read from the request
    /// on). The connection leaves this worker (the caller drops it with `Dead`): its socket
    /// is duplicated first, so closing this worker's copy keeps the connection open.
    pub(super) fn sio_hand_off(&mut self, idx: usize, to: usize, input: &[u8]) -> Dead {
        let conn = &mut self.conns[idx];
        let Ok(sock) = conn.sock.try_clone() else {
            return Dead;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&conn.sock.as_raw_fd()));
        let out = conn.out.take();
        if let Some(q) = &out {
            WorkerStats::sub(&self.stats.bytes_queued, q.bytes() as u64);
        }
        let tls = self.tls.get_mut(idx).and_then(Option::take);
        if tls.is_some() {
            WorkerStats::sub(&self.stats.tls_conns, 1);
        }
        let mail = Mail::SioAdopt(Box::new(Adopt {
            sock,
            tls,
            out,
            input: input.to_vec(),
        }));
        if self.shared.mailboxes[to].post(mail).is_ok() {
            WorkerStats::add(&self.stats.sio_handoffs, 1);
            self.wake[to] = true;
        }
        // The duplicate in the mail keeps the connection open: dropping this copy (the caller's
        // `Dead`) closes only ours, and takes it out of the open count, which the owner raises
        // again when it adopts it.
        Dead
    }

    /// A connection handed over by a peer: registered here and its input handled.
    pub(super) fn sio_adopt(&mut self, a: Adopt) {
        let Adopt {
            sock,
            tls,
            out,
            mut input,
        } = a;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        if idx >= WAKER.0 {
            return;
        }
        let mut conn = Conn::open(sock, generation, &self.stats);
        if self
            .poll
            .registry()
            .register(
                &mut SourceFd(&conn.sock.as_raw_fd()),
                token(idx, generation),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            conn.gone(&self.stats);
            return;
        }
        self.shared
            .conns
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(q) = out {
            WorkerStats::add(&self.stats.bytes_queued, q.bytes() as u64);
            conn.out = Some(q);
        }
        entry.insert(conn);
        if let Some(s) = tls {
            if self.tls.len() <= idx {
                self.tls.resize_with(idx + 1, || None);
            }
            self.tls[idx] = Some(s);
            WorkerStats::add(&self.stats.tls_conns, 1);
        }
        let at = self.after(self.cfg.head_timeout);
        self.set_deadline(idx, at);
        let r = self.process(idx, &mut input).map(|used| {
            if let Some(c) = self.conns.get_mut(idx) {
                keep_leftover(c, &input[used.min(input.len())..]);
            }
        });
        self.settle(idx, r);
    }

    // ---- sending ------------------------------------------------------------------------------

    /// Sends what waits in session `slot`'s outbox: written to its WebSocket, or the answer
    /// of its held GET.
    pub(super) fn sio_flush(&mut self, slot: usize) {
        let _ = self.sio_send_out(slot, None);
    }

    /// The result of handling connection `idx` from session code: settled here, unless `idx`
    /// is `current`, the connection the caller is handling (which gets the result, to pass up:
    /// a handler never removes its own connection under its caller).
    fn sio_settle(&mut self, idx: usize, r: Handled, current: Option<usize>) -> Handled {
        if current == Some(idx) {
            return r;
        }
        self.settle(idx, r);
        Ok(())
    }

    /// [`Worker::sio_flush`] from a handler of connection `current`.
    pub(super) fn sio_send_out(&mut self, slot: usize, current: Option<usize>) -> Handled {
        let Some(s) = self.sio.sessions.get_mut(slot) else {
            return Ok(());
        };
        if !s.has_out() {
            return Ok(());
        }
        match (s.transport, s.conn) {
            (Transport::WebSocket, Some((idx, _))) => {
                let idx = idx as usize;
                let (stats, min) = (&*self.stats, self.cfg.deflate_min_bytes);
                let agreed = self.conns.get(idx).and_then(|c| c.deflate());
                let frames: Vec<Bytes> = s
                    .take_outbox()
                    .into_iter()
                    .map(|o| match o {
                        Out::Text(t) => frame::frame(OP_TEXT, &t),
                        Out::Binary(b) => frame::frame(OP_BINARY, &b),
                    })
                    .map(|f| super::ws::outgoing(stats, agreed, min, f))
                    .collect();
                let r = self
                    .send(idx, &frames, true)
                    .and_then(|()| self.over_backlog(idx).map(|_| ()));
                self.sio_settle(idx, r, current)
            }
            (_, Some((idx, _))) => {
                let body = payload(s.take_outbox());
                s.conn = None;
                let idx = idx as usize;
                let r = self.sio_answer_held(idx, body);
                self.sio_settle(idx, r, current)
            }
            _ => {
                let (n, bytes) = s.out_size();
                if bytes > self.cfg.max_queued_bytes {
                    // Nobody polls for it: the client is gone or stuck.
                    let n = n as u64;
                    WorkerStats::add(&self.stats.drops, n);
                    WorkerStats::add(&self.stats.slow_consumers, 1);
                    return self.sio_end(slot, Closed::Protocol("slow consumer"), current);
                }
                Ok(())
            }
        }
    }

    /// Answers the held GET `idx` with `body`; the connection reads HTTP again.
    fn sio_answer_held(&mut self, idx: usize, body: Vec<u8>) -> Handled {
        let conn = &self.conns[idx];
        let origin = conn.sub().origin;
        let keep_alive = conn.has(crate::runtime::conn::flag::KEEP_ALIVE);
        self.back_to_http(idx);
        self.sio_answer(idx, origin, keep_alive, body)?;
        self.keepalive_again(idx);
        Ok(())
    }

    /// Delivers `msgs` (one channel's, in order) to session `slot`'s namespace `nsp` when it
    /// polls (over a WebSocket the fan-out writes the frames itself).
    pub(super) fn sio_deliver(&mut self, slot: usize, nsp: usize, msgs: &[(u32, Arc<Message>)]) {
        if !self.sio.sessions.contains(slot) {
            return;
        }
        let chan = msgs.first().map_or(u32::MAX, |(c, _)| *c);
        let from = self.sio.resumed.get(&(slot as u32, chan)).copied();
        let mut n = 0;
        for (_, m) in msgs {
            if from.is_some_and(|c| m.id <= c) {
                continue;
            }
            let t = if nsp == 0 {
                self.sio.text(m).clone()
            } else {
                match self.sio.ns_texts.get(&(chan, m.id, nsp)) {
                    Some(t) => t.clone(),
                    None => {
                        let t = self.sio.text_in(m, nsp);
                        self.sio.ns_texts.insert((chan, m.id, nsp), t.clone());
                        t
                    }
                }
            };
            self.sio.sessions[slot].push(Out::Text(t));
            n += 1;
        }
        WorkerStats::add(&self.stats.messages_out, n);
        self.sio_flush(slot);
    }

    /// A request arrived behind the held GET `idx`: the GET is answered now.
    pub(super) fn sio_poll_interrupted(&mut self, idx: usize) -> Handled {
        let slot = self.conns[idx].chan_pos as usize;
        let key = (idx as u32, self.conns[idx].generation);
        let body = match self.sio.sessions.get_mut(slot) {
            Some(s) if s.conn == Some(key) => {
                s.conn = None;
                if !s.has_out() {
                    b"6".to_vec()
                } else {
                    payload(s.take_outbox())
                }
            }
            _ => b"6".to_vec(),
        };
        self.sio_answer_held(idx, body)
    }

    /// A Socket.IO WebSocket's deadline: only a probe has one (the upgrade took too long).
    pub(super) fn sio_ws_timeout(&mut self, idx: usize) -> Handled {
        let slot = self.conns[idx].chan_pos as usize;
        let key = (idx as u32, self.conns[idx].generation);
        if self
            .sio
            .sessions
            .get(slot)
            .is_some_and(|s| s.probe() == Some(key))
        {
            WorkerStats::add(&self.stats.sio_protocol_errors, 1);
            return self.begin_close(
                idx,
                Some(frame::close_frame(close_code::POLICY, "upgrade timeout")),
            );
        }
        Ok(())
    }

    /// Shutdown: the session of connection `idx` ends (1001 / the close packet).
    pub(super) fn sio_shutdown(&mut self, idx: usize) -> Handled {
        let slot = self.conns[idx].chan_pos as usize;
        let key = (idx as u32, self.conns[idx].generation);
        let ours = self
            .sio
            .sessions
            .get(slot)
            .is_some_and(|s| s.conn == Some(key) || s.probe() == Some(key));
        if ours {
            self.sio_end(slot, Closed::Shutdown, Some(idx))
        } else if self.conns[idx].phase == Phase::SioWs {
            self.begin_close(
                idx,
                Some(frame::close_frame(
                    close_code::GOING_AWAY,
                    "server shutting down",
                )),
            )
        } else {
            Ok(())
        }
    }

    // ---- the end of a session -----------------------------------------------------------------

    /// Ends session `slot`: its channels left, its held GET answered (the close packet, or a
    /// noop when the client closed), its WebSocket closed.
    pub(super) fn sio_close(&mut self, slot: usize, why: Closed) {
        let _ = self.sio_end(slot, why, None);
    }

    /// [`Worker::sio_close`] from a handler of connection `current`.
    pub(super) fn sio_end(&mut self, slot: usize, why: Closed, current: Option<usize>) -> Handled {
        if !self.sio_alive(slot) {
            return Ok(());
        }
        if matches!(why, Closed::PingTimeout | Closed::Transport) {
            self.sio_keep_record(slot);
        }
        self.sio_leave(slot, None);
        let s = self.sio.sessions.remove(slot);
        WorkerStats::sub(&self.stats.sio_sessions, 1);
        self.shared
            .sio_sessions
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        match why {
            Closed::PingTimeout => WorkerStats::add(&self.stats.sio_ping_timeouts, 1),
            Closed::ConnectTimeout => WorkerStats::add(&self.stats.sio_connect_timeouts, 1),
            Closed::Protocol(_) => WorkerStats::add(&self.stats.sio_protocol_errors, 1),
            Closed::TokenExpired => WorkerStats::add(&self.stats.auth_expired_closes, 1),
            Closed::ByClient | Closed::Transport | Closed::Shutdown => {}
        }
        let mut mine = Ok(());
        for key in [s.conn, s.probe()].into_iter().flatten() {
            let idx = key.0 as usize;
            if !self.is_live(idx, key.1) {
                continue;
            }
            let r = match self.conns[idx].phase {
                Phase::SioPoll => {
                    let last: &[u8] = if why == Closed::ByClient { b"6" } else { b"1" };
                    self.conns[idx].clear(crate::runtime::conn::flag::KEEP_ALIVE);
                    self.sio_answer_held(idx, last.to_vec())
                }
                Phase::SioWs => {
                    let (code, reason) = match why {
                        Closed::ByClient | Closed::Transport => (close_code::NORMAL, ""),
                        Closed::TokenExpired => (4001, "token expired"),
                        Closed::Shutdown => (close_code::GOING_AWAY, "server shutting down"),
                        Closed::PingTimeout => (close_code::GOING_AWAY, "ping timeout"),
                        Closed::ConnectTimeout => (close_code::POLICY, "connect timeout"),
                        Closed::Protocol(r) => (close_code::POLICY, r),
                    };
                    let mut frames = Vec::new();
                    if why == Closed::TokenExpired {
                        frames.push(frame::frame(OP_TEXT, b"41"));
                    }
                    let r = if frames.is_empty() {
                        Ok(())
                    } else {
                        self.send(idx, &frames, false)
                    };
                    r.and_then(|()| self.begin_close(idx, Some(frame::close_frame(code, reason))))
                }
                _ => Ok(()),
            };
            if current == Some(idx) {
                mine = r;
            } else {
                self.settle(idx, r);
            }
        }
        mine
    }

    /// Connection `idx` is going (closed, or removed): its session learns it. A session's
    /// WebSocket gone ends the session; a probe gone leaves it on polling; a held GET whose
    /// connection goes before it was answered ends the session too (the client left, as the
    /// reference server decides; it can recover within `--socketio-recovery`).
    pub(super) fn sio_detach(&mut self, idx: usize) {
        let Some(conn) = self.conns.get(idx) else {
            return;
        };
        if !matches!(conn.phase, Phase::SioWs | Phase::SioPoll) {
            return;
        }
        let key = (idx as u32, conn.generation);
        let slot = conn.chan_pos as usize;
        let Some(s) = self.sio.sessions.get_mut(slot) else {
            return;
        };
        if s.probe() == Some(key) {
            s.set_probe(None);
            s.transport = Transport::Polling;
        } else if s.conn == Some(key) {
            s.conn = None;
            // The connection is closing already: the session just goes.
            self.sio_close(slot, Closed::Transport);
        }
    }

    // ---- timers -------------------------------------------------------------------------------

    /// Makes sure session `slot`'s earliest deadline is in the timer heap.
    fn sio_arm(&mut self, slot: usize) {
        let s = &mut self.sio.sessions[slot];
        let due = s.due();
        if s.armed == 0 || due < s.armed {
            s.armed = due;
            self.sio
                .heap
                .push(Reverse((due, slot as u32, s.generation)));
        }
    }

    /// Sessions whose deadline passed: pings sent, or the session ended.
    pub(super) fn sio_timers(&mut self) {
        let now = self.sio_now();
        while let Some(&Reverse((at, slot, generation))) = self.sio.heap.peek() {
            if at > now {
                break;
            }
            self.sio.heap.pop();
            let slot = slot as usize;
            let Some(s) = self.sio.sessions.get_mut(slot) else {
                continue;
            };
            if s.generation != generation || s.armed != at {
                continue; // stale
            }
            s.armed = 0;
            if s.due() <= now {
                let settings = &self.sio.settings;
                match s.timer(now, settings) {
                    Ok(()) => self.sio_flush(slot),
                    Err(why) => {
                        self.sio_close(slot, why);
                        continue;
                    }
                }
            }
            if self.sio_alive(slot) {
                self.sio_arm(slot);
            }
        }
    }

    /// Worker 0, once a second: records whose recovery window has passed are forgotten.
    pub(super) fn sio_sweep(&mut self) {
        let now = self.sio_now();
        self.shared
            .sio_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sweep(now);
    }

    /// How long until the next session deadline.
    pub(super) fn sio_wait(&self) -> Option<Duration> {
        let at = self.sio.next_due()?;
        Some(Duration::from_millis(at.saturating_sub(self.sio_now())))
    }
}

/// A polling answer: the packets joined by the record separator, binary ones as base64.
fn payload(out: std::collections::VecDeque<Out>) -> Vec<u8> {
    let mut body = Vec::with_capacity(out.iter().map(|o| o.len() + 1).sum());
    for (i, o) in out.into_iter().enumerate() {
        if i > 0 {
            body.push(wire::SEPARATOR);
        }
        match o {
            Out::Text(t) => body.extend_from_slice(&t),
            Out::Binary(b) => wire::push_binary(&mut body, &b),
        }
    }
    body
}
