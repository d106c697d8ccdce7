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

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mio::Interest;
use mio::unix::SourceFd;
use slab::Slab;

use super::conn_io::{Dead, Handled, keep_leftover};
use super::publish::PubError;
use super::{WAKER, Worker, token};
use crate::broker::Key;
use crate::config::Config;
use crate::proto::http::{self, Method};
use crate::proto::socketio as wire;
use crate::proto::ws::frame::{self, OP_BINARY, OP_TEXT, close_code};
use crate::proto::ws::reader::{Event, Fail};
use crate::pubsub::hub::Message;
use crate::pubsub::{valid_channel, valid_pattern};
use crate::runtime::conn::{Conn, Ext, Format, NO_CHANNEL, ORIGIN_ANY, Phase, Proto, SubState};
use crate::runtime::mailbox::Mail;
use crate::runtime::outq::OutQueue;
use crate::session::socketio::recovery::{self, Record};
use crate::session::socketio::sid::Sid;
use crate::session::socketio::{Closed, Env, Granted, Out, Session, Settings, Transport};
use crate::stats::WorkerStats;

/// Marks a channel-table entry that is a Socket.IO session's slot, not a connection's.
pub const SIO_BIT: u32 = 1 << 31;

/// Channels one session may join.
const MAX_SESSION_CHANNELS: usize = 64;

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
    pub sessions: Slab<Session>,
    pub settings: Settings,
    /// Session deadlines: (ms, slot, generation), earliest first; stale entries are skipped.
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    next_generation: u32,
    event: Box<str>,
    /// `--socketio-path` and the same without its last `/`.
    path: String,
    path_trimmed: String,
    /// Sessions recovered this turn, with their cursor: this turn's fan-out skips what is at or
    /// below it (it was sent from the history), as for a native subscriber that resumed.
    pub resumed: std::collections::HashMap<u32, u64>,
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
            sessions: Slab::new(),
            settings: Settings {
                ping_interval_ms: pick(cfg.socketio_ping_interval, 25_000, 300),
                ping_timeout_ms: pick(cfg.socketio_ping_timeout, 20_000, 200),
                connect_timeout_ms: pick(cfg.socketio_connect_timeout, 45_000, 1_000),
                max_payload: cfg.socketio_max_payload,
                namespaces,
                conformance: conf,
                client_publish: cfg.client_publish,
                recovery_ms: pick(cfg.socketio_recovery, 120_000, 0),
                max_attachments: 64,
            },
            heap: BinaryHeap::new(),
            next_generation: 1,
            event: cfg.socketio_event.as_str().into(),
            path: cfg.socketio_path.clone(),
            path_trimmed: cfg.socketio_path.trim_end_matches('/').to_string(),
            resumed: std::collections::HashMap::new(),
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

/// 120 random bits as 20 URL-safe characters: Socket.IO socket ids.
fn random_id() -> String {
    use base64::Engine as _;
    let r = super::bayeux::random_u128().to_le_bytes();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&r[..15])
}

/// What a call into the rules asked of the worker, carried out once the session is back in
/// its slot.
#[derive(Default)]
struct Asked {
    /// A CONNECT to `/` was granted: join these channels (normalized), with this grant.
    join: Option<(Vec<Box<str>>, Option<crate::auth::Grant>)>,
    /// With state recovery: the CONNECT's private id and socket id, and, when the session
    /// was recovered, the channel's last id when it was first joined and what it missed (and
    /// the cursor after it).
    ids: Option<(Box<str>, Box<str>)>,
    recovered: Option<(u64, Vec<Arc<Message>>, u64)>,
    /// `/` was left.
    leave: bool,
}

/// The rules' [`Env`]: the worker, while the session is out of its slot.
struct SioEnv<'w> {
    w: &'w mut Worker,
    query: Option<Box<str>>,
    grant: Option<&'w crate::auth::Grant>,
    asked: Asked,
}

impl Env for SioEnv<'_> {
    fn connect(&mut self, nsp: usize, auth: &str) -> Result<Granted, String> {
        if nsp != 0 {
            return Ok(Granted {
                sid: random_id(),
                pid: None,
            });
        }
        let (channels, grant) = self.w.sio_channels(auth, self.query.as_deref())?;
        let mut granted = Granted {
            sid: random_id(),
            pid: None,
        };
        if self.w.sio.settings.recovery_ms > 0 {
            let field = |k| {
                (!auth.is_empty())
                    .then(|| wire::member(auth, k).and_then(wire::string_value))
                    .flatten()
            };
            if let Some(pid) = field("pid") {
                match self
                    .w
                    .sio_recover(&pid, &channels, field("offset").as_deref())
                {
                    Some((sid, joined_at, msgs, cursor)) => {
                        WorkerStats::add(&self.w.stats.sio_recovered, 1);
                        granted.sid = sid;
                        granted.pid = Some(pid);
                        self.asked.recovered = Some((joined_at, msgs, cursor));
                    }
                    None => WorkerStats::add(&self.w.stats.sio_not_recovered, 1),
                }
            }
            let pid = granted.pid.get_or_insert_with(random_id);
            self.asked.ids = Some((pid.as_str().into(), granted.sid.as_str().into()));
        }
        self.asked.join = Some((channels, grant));
        Ok(granted)
    }

    fn disconnect(&mut self, nsp: usize) {
        if nsp == 0 {
            self.asked.leave = true;
        }
    }

    fn publish(&mut self, channel: &str, data: &str) -> Result<(), String> {
        if !valid_channel(channel, self.w.cfg.max_channel_len) {
            return Err("invalid channel name".to_string());
        }
        if self.w.cfg.tokens_configured() {
            let granted = self.asked.join.as_ref().and_then(|(_, g)| g.as_ref());
            let g = granted.or(self.grant);
            if !g.is_some_and(|g| g.may_publish(channel)) {
                WorkerStats::add(&self.w.stats.auth_token_channel, 1);
                return Err("the token does not allow publishing to this channel".to_string());
            }
        }
        // A JSON string is published as its text; anything else as the JSON it is.
        let payload = match wire::string_value(data) {
            Some(s) => s,
            None => data.to_string(),
        };
        match self.w.publish_message(channel, Bytes::from(payload), None) {
            Ok(_) | Err(PubError::Inbox(_)) => {
                WorkerStats::add(&self.w.stats.client_messages, 1);
                Ok(())
            }
            Err(PubError::Channels) => {
                WorkerStats::add(&self.w.stats.channel_limit, 1);
                Err("channel limit reached".to_string())
            }
            Err(PubError::Broker(_)) => Err("broker unavailable".to_string()),
            Err(PubError::Draining) => Err("server shutting down".to_string()),
        }
    }
}

/// A CONNECT_ERROR's data.
fn connect_error(message: &str, channel: Option<&str>) -> String {
    let mut s = String::from("{\"message\":");
    crate::proto::bayeux::json_str(&mut s, message);
    if let Some(c) = channel {
        s.push_str(",\"data\":{\"channel\":");
        crate::proto::bayeux::json_str(&mut s, c);
        s.push('}');
    }
    s.push('}');
    s
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
        WorkerStats::add(&self.stats.sio_handoffs, 1);
        if self.shared.mailboxes[to].post(mail).is_ok() {
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

    // ---- requests -----------------------------------------------------------------------------

    /// A request on `--socketio-path` (for a session of this worker, or a new one).
    pub(super) fn sio_http(&mut self, idx: usize, head: &http::Head<'_>, body: &[u8]) -> Handled {
        // Deadlines that passed are settled first: a session whose pong is overdue is gone
        // for a request that comes after the deadline, even in the same loop turn.
        self.sio_timers();
        let keep_alive = head.keep_alive();
        let upgrade = head.upgrade_present || head.connection_upgrade;
        let origin = if self.sio.settings.conformance {
            if head.origin.is_some() { ORIGIN_ANY } else { 0 }
        } else {
            match self.check_origin(idx, head)? {
                Some(o) => o,
                None => return Ok(()),
            }
        };
        if head.method_raw == "OPTIONS" {
            return self.preflight(idx, head, origin);
        }
        let q = |k| http::query_param(head.path, k);
        if q("EIO") != Some("4") {
            return self.sio_error(idx, 5, origin, keep_alive && !upgrade);
        }
        let websocket = match q("transport") {
            Some("polling") => false,
            Some("websocket") => true,
            _ => return self.sio_error(idx, 0, origin, keep_alive && !upgrade),
        };
        if websocket && !upgrade {
            return self.sio_error(idx, 3, origin, keep_alive);
        }
        let Some(sid) = q("sid") else {
            if !websocket && head.method() != Method::Get {
                return self.sio_error(idx, 2, origin, keep_alive);
            }
            return self.sio_open(idx, head, websocket, origin);
        };
        let Some(slot) = self.sio_find(sid) else {
            WorkerStats::add(&self.stats.sio_unknown_sid, 1);
            return self.sio_error(idx, 1, origin, keep_alive && !upgrade);
        };
        let s = &self.sio.sessions[slot];
        if websocket {
            if s.transport != Transport::Polling || s.probe.is_some() {
                return self.sio_error(idx, 3, origin, false);
            }
            let Some(resp) = self.accept_upgrade(idx, head)? else {
                return Ok(());
            };
            self.sio_ws_phase(idx, slot);
            let key = (idx as u32, self.conns[idx].generation);
            self.sio.sessions[slot].probe = Some(key);
            self.sio.sessions[slot].transport = Transport::Upgrading;
            return self.send(idx, &[Bytes::from(resp)], false);
        }
        if s.transport == Transport::WebSocket {
            return self.sio_error(idx, 3, origin, keep_alive);
        }
        match head.method() {
            Method::Get => self.sio_get(idx, slot, origin, keep_alive),
            Method::Post => self.sio_post(idx, slot, body, origin, keep_alive),
            _ => self.sio_error(idx, 3, origin, keep_alive),
        }
    }

    /// The session slot `sid` names in this worker.
    fn sio_find(&self, sid: &str) -> Option<usize> {
        let d = Sid::decode(sid)?;
        if usize::from(d.worker) != self.id {
            return None;
        }
        let s = self.sio.sessions.get(d.slot as usize)?;
        (s.generation == d.generation && s.secret == d.secret).then_some(d.slot as usize)
    }

    fn sio_error(&mut self, idx: usize, code: u8, origin: u16, keep_alive: bool) -> Handled {
        let status = if code == 4 { 403 } else { 400 };
        let reason = if code == 4 {
            "Forbidden"
        } else {
            "Bad Request"
        };
        WorkerStats::add(&self.stats.http_errors, 1);
        self.note_status(status, reason);
        let resp = http::response(
            &self.date,
            status,
            reason,
            "application/json",
            &self.cors_headers(origin),
            error_body(code).as_bytes(),
            keep_alive,
        );
        self.respond(idx, resp, keep_alive)
    }

    /// A new session: the open packet, as the answer of a polling GET or the first frame of
    /// a WebSocket.
    fn sio_open(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        websocket: bool,
        origin: u16,
    ) -> Handled {
        let resp = if websocket {
            match self.accept_upgrade(idx, head)? {
                Some(r) => Some(r),
                None => return Ok(()),
            }
        } else {
            None
        };
        let now = self.sio_now();
        let generation = self.sio.next_generation;
        self.sio.next_generation = generation.wrapping_add(1).max(1);
        let secret = super::bayeux::random_u128() as u64;
        let transport = if websocket {
            Transport::WebSocket
        } else {
            Transport::Polling
        };
        let mut s = Session::new(generation, secret, transport, now, &self.sio.settings);
        // What the `/` CONNECT also reads from the handshake's query.
        let mut query = String::new();
        for k in ["channels", "token"] {
            if let Some(v) = http::query_param(head.path, k) {
                query.push_str(&format!("{k}={v}&"));
            }
        }
        if !query.is_empty() {
            s.query = Some(query.into_boxed_str());
        }
        let slot = self.sio.sessions.insert(s);
        let sid = Sid {
            worker: self.id as u8,
            slot: slot as u32,
            generation,
            secret,
        }
        .encode();
        WorkerStats::add(&self.stats.sio_opened, 1);
        WorkerStats::add(&self.stats.sio_sessions, 1);
        let st = &self.sio.settings;
        let open = wire::open_packet(
            &sid,
            !websocket,
            st.ping_interval_ms,
            st.ping_timeout_ms,
            st.max_payload as u64,
        );
        self.sio_arm(slot);
        if let Some(resp) = resp {
            self.sio_ws_phase(idx, slot);
            let key = (idx as u32, self.conns[idx].generation);
            self.sio.sessions[slot].conn = Some(key);
            return self.send(
                idx,
                &[Bytes::from(resp), frame::frame(OP_TEXT, open.as_bytes())],
                false,
            );
        }
        self.sio_answer(idx, origin, head.keep_alive(), open.into_bytes())
    }

    /// Connection `idx` (just upgraded) becomes the WebSocket of session `slot`.
    fn sio_ws_phase(&mut self, idx: usize, slot: usize) {
        let conn = &mut self.conns[idx];
        conn.upgrade(Phase::SioWs, None, &self.stats);
        conn.chan = NO_CHANNEL;
        conn.chan_pos = slot as u32;
        // The session's heartbeat is the liveness check: no WebSocket pings.
        conn.deadline = 0;
    }

    /// A long-poll GET: answered at once when packets wait, else held.
    fn sio_get(&mut self, idx: usize, slot: usize, origin: u16, keep_alive: bool) -> Handled {
        if self.sio.sessions[slot].conn.is_some() {
            // Two GETs at once: the session ends (the held one gets the close packet).
            self.sio_close(slot, Closed::Protocol("two polls at once"));
            WorkerStats::add(&self.stats.http_errors, 1);
            self.note_status(500, "Internal Server Error");
            let resp = http::response(
                &self.date,
                500,
                "Internal Server Error",
                "application/json",
                &self.cors_headers(origin),
                error_body(3).as_bytes(),
                false,
            );
            return self.respond(idx, resp, false);
        }
        let s = &mut self.sio.sessions[slot];
        if !s.outbox.is_empty() {
            let body = payload(s.take_outbox());
            return self.sio_answer(idx, origin, keep_alive, body);
        }
        let conn = &mut self.conns[idx];
        conn.hold(
            Phase::SioPoll,
            SubState::new(0, origin, Format::Text),
            None,
            keep_alive,
            &self.stats,
        );
        conn.chan_pos = slot as u32;
        conn.deadline = 0;
        let key = (idx as u32, conn.generation);
        self.sio.sessions[slot].conn = Some(key);
        Ok(())
    }

    /// A long-poll POST: its packets, in order; `ok`, or 400 and the session ends.
    fn sio_post(
        &mut self,
        idx: usize,
        slot: usize,
        body: &[u8],
        origin: u16,
        keep_alive: bool,
    ) -> Handled {
        if body.len() > self.sio.settings.max_payload {
            WorkerStats::add(&self.stats.sio_protocol_errors, 1);
            self.sio_close(
                slot,
                Closed::Protocol("payload over --socketio-max-payload"),
            );
            WorkerStats::add(&self.stats.http_errors, 1);
            let resp = http::response(
                &self.date,
                413,
                "Payload Too Large",
                "application/json",
                &self.cors_headers(origin),
                error_body(3).as_bytes(),
                false,
            );
            return self.respond(idx, resp, false);
        }
        let mut result = Ok(());
        if std::str::from_utf8(body).is_err() {
            result = Err(Closed::Protocol("not UTF-8"));
        } else {
            for p in wire::split_payload(body) {
                if p.first() == Some(&b'4') {
                    WorkerStats::add(&self.stats.sio_packets_in, 1);
                }
                result = self.sio_rules(slot, |s, st, now, env| s.on_text(p, true, now, st, env));
                if result.is_err() || !self.sio_alive(slot) {
                    break;
                }
            }
        }
        match result {
            Ok(()) => {
                let cors = self.cors_headers(origin);
                let resp =
                    http::response(&self.date, 200, "OK", "text/html", &cors, b"ok", keep_alive);
                self.respond(idx, resp, keep_alive)?;
                self.sio_flush(slot);
                Ok(())
            }
            Err(why) => {
                let client_close = why == Closed::ByClient;
                self.sio_close(slot, why);
                if client_close {
                    let resp = http::response(
                        &self.date,
                        200,
                        "OK",
                        "text/html",
                        &self.cors_headers(origin),
                        b"ok",
                        keep_alive,
                    );
                    return self.respond(idx, resp, keep_alive);
                }
                self.sio_error(idx, 3, origin, false)
            }
        }
    }

    /// Answers a polling request with `body` (packets).
    fn sio_answer(&mut self, idx: usize, origin: u16, keep_alive: bool, body: Vec<u8>) -> Handled {
        let cors = self.cors_headers(origin);
        let resp = http::response(
            &self.date,
            200,
            "OK",
            "text/plain; charset=UTF-8",
            &cors,
            &body,
            keep_alive,
        );
        self.respond(idx, resp, keep_alive)
    }

    /// Runs a rule on session `slot` with the worker as its [`Env`], then carries out what it
    /// asked (joining or leaving channels) and re-arms its timer. A failure leaves the
    /// session in place: the caller closes it.
    fn sio_rules(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut Session, &Settings, u64, &mut dyn Env) -> Result<(), Closed>,
    ) -> Result<(), Closed> {
        let now = self.sio_now();
        // The session leaves its slot while the rules run, so the worker can be their Env.
        let placeholder = Session::new(0, 0, Transport::Polling, 0, &self.sio.settings);
        let mut s = std::mem::replace(&mut self.sio.sessions[slot], placeholder);
        let settings = self.sio.settings.clone();
        let grant = s.grant.take();
        let mut env = SioEnv {
            w: self,
            query: s.query.clone(),
            grant: grant.as_deref(),
            asked: Asked::default(),
        };
        let r = f(&mut s, &settings, now, &mut env);
        let asked = std::mem::take(&mut env.asked);
        s.grant = grant;
        self.sio.sessions[slot] = s;
        if asked.leave {
            self.sio_leave(slot);
        }
        if let Some((channels, grant)) = asked.join {
            self.sio_leave(slot);
            self.sio_join(slot, &channels);
            if let Some((pid, sock)) = asked.ids {
                let joined_at = match (&asked.recovered, channels.first()) {
                    (Some((at, _, _)), _) => *at,
                    (None, Some(c)) if channels.len() == 1 => self.shared.hub.since(c, None).cursor,
                    _ => 0,
                };
                let s = &mut self.sio.sessions[slot];
                s.pid = Some(pid);
                s.sock = Some(sock);
                s.joined_at = joined_at;
            }
            if let Some((_, msgs, cursor)) = asked.recovered {
                // What it missed, after the CONNECT reply; this turn's fan-out skips it.
                for m in &msgs {
                    let t = self.sio.text(m).clone();
                    self.sio.sessions[slot].push(Out::Text(t));
                }
                WorkerStats::add(&self.stats.messages_out, msgs.len() as u64);
                self.sio.resumed.insert(slot as u32, cursor);
            }
            if let Some(g) = grant {
                let left_ms = g.left(self.shared.unix_secs()).saturating_mul(1_000);
                let s = &mut self.sio.sessions[slot];
                s.ends = now + left_ms.max(1);
                s.grant = Some(Box::new(g));
            }
        }
        if r.is_ok() {
            self.sio_arm(slot);
        }
        r
    }

    /// Whether session `slot` is still there (a rule may have ended it).
    fn sio_alive(&self, slot: usize) -> bool {
        self.sio
            .sessions
            .get(slot)
            .is_some_and(|s| s.generation != 0)
    }

    // ---- state recovery -------------------------------------------------------------------------

    /// Whether the session whose private id is `pid` can be recovered for a CONNECT asking for
    /// `channels`, with the client's `offset`: its socket id, the channel's id when it was
    /// first joined, what it missed and the cursor after it.
    fn sio_recover(
        &mut self,
        pid: &str,
        channels: &[Box<str>],
        offset: Option<&str>,
    ) -> Option<(String, u64, Vec<Arc<Message>>, u64)> {
        let now = self.sio_now();
        let rec = self
            .shared
            .sio_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(pid, now)?;
        match (&rec.channel, channels) {
            (None, []) => Some((rec.sid.into(), 0, Vec::new(), 0)),
            (Some(c), [asked]) if c == asked => {
                let cursor = match offset {
                    Some(o) => recovery::parse_offset(o)?,
                    None => rec.joined_at,
                };
                let since = self.shared.hub.since(c, Some(cursor));
                if since.gap.is_gap() {
                    return None;
                }
                Some((rec.sid.into(), rec.joined_at, since.msgs, since.cursor))
            }
            _ => None,
        }
    }

    /// A session lost its connection: what its client needs to recover it, when it can be.
    fn sio_keep_record(&mut self, slot: usize) {
        let window = self.sio.settings.recovery_ms;
        let s = &self.sio.sessions[slot];
        if window == 0 || !s.joined(0) {
            return;
        }
        let (Some(pid), Some(sid)) = (&s.pid, &s.sock) else {
            return;
        };
        let channel = match s.channels.as_slice() {
            [] => None,
            [(chan, _)] => match self.channels.name(*chan) {
                Some(n) if !n.ends_with('*') => Some(Box::from(&**n)),
                _ => return,
            },
            _ => return,
        };
        let rec = Record {
            sid: sid.clone(),
            channel,
            joined_at: s.joined_at,
            until: self.sio_now() + window,
        };
        let kept = self
            .shared
            .sio_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keep(pid, rec);
        if kept.is_err() {
            WorkerStats::add(&self.stats.sio_recovery_full, 1);
        }
    }

    // ---- channels -----------------------------------------------------------------------------

    /// The channels a CONNECT to `/` asks for (its `auth.channels`, the handshake's
    /// `?channels=`), checked against the names and, with tokens, against the token (its
    /// `auth.token` or `?token=`); normalized: no duplicates, nothing a pattern of the list
    /// already covers. `Err`: the CONNECT_ERROR's data.
    fn sio_channels(
        &mut self,
        auth: &str,
        query: Option<&str>,
    ) -> Result<(Vec<Box<str>>, Option<crate::auth::Grant>), String> {
        let mut asked: Vec<String> = Vec::new();
        let mut token: Option<String> = None;
        if !auth.is_empty() {
            if let Some(list) = wire::member(auth, "channels") {
                if list.starts_with('[') {
                    for e in wire::elements(list) {
                        match wire::string_value(e) {
                            Some(c) => asked.push(c),
                            None => {
                                return Err(connect_error("channels must be strings", None));
                            }
                        }
                    }
                } else if let Some(c) = wire::string_value(list) {
                    asked.extend(c.split(',').map(str::to_string));
                } else {
                    return Err(connect_error("channels must be a list of names", None));
                }
            }
            token = wire::member(auth, "token").and_then(wire::string_value);
        }
        if let Some(q) = query {
            let path = format!("?{q}");
            if let Some(v) = http::query_param(&path, "channels")
                && let Some(d) = http::percent_decode(v)
            {
                asked.extend(
                    String::from_utf8_lossy(&d)
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string),
                );
            }
            if token.is_none()
                && let Some(v) = http::query_param(&path, "token")
            {
                token = http::percent_decode(v).map(|d| String::from_utf8_lossy(&d).into_owned());
            }
        }
        let max_len = self.cfg.max_channel_len;
        for c in &asked {
            if !valid_channel(c, max_len) && !valid_pattern(c, max_len) {
                WorkerStats::add(&self.stats.sio_connect_errors, 1);
                return Err(connect_error("invalid channel name", Some(c)));
            }
        }
        asked.sort();
        asked.dedup();
        let patterns: Vec<String> = asked.iter().filter(|c| c.ends_with('*')).cloned().collect();
        asked.retain(|c| !patterns.iter().any(|p| p != c && covers(p, c)));
        if asked.len() > MAX_SESSION_CHANNELS {
            WorkerStats::add(&self.stats.sio_connect_errors, 1);
            return Err(connect_error(
                &format!("at most {MAX_SESSION_CHANNELS} channels per connection"),
                None,
            ));
        }
        let mut grant = None;
        if let Some(a) = self.shared.auth().filter(|a| a.tokens()) {
            let now = self.shared.unix_secs();
            let verdict = a.verify(token.as_deref().unwrap_or(""), now).and_then(|g| {
                for c in &asked {
                    let private = crate::auth::push::is_private(c);
                    if private && !crate::auth::push::valid_private(c) {
                        return Err(crate::auth::TokenError::Channel);
                    }
                    let ok = private
                        || if c.ends_with('*') {
                            g.channel_patterns().any(|p| {
                                crate::auth::pattern::covers_subscription(p, &format!("/{c}"))
                            })
                        } else {
                            g.may_subscribe(c)
                        };
                    if !ok {
                        return Err(crate::auth::TokenError::Channel);
                    }
                }
                if g.ends <= now {
                    return Err(crate::auth::TokenError::Expired);
                }
                Ok(g)
            });
            match verdict {
                Ok(g) => {
                    WorkerStats::add(&self.stats.auth_tokens_accepted, 1);
                    grant = Some(g);
                }
                Err(e) => {
                    self.count_token_error(e);
                    WorkerStats::add(&self.stats.sio_connect_errors, 1);
                    return Err(connect_error(e.message(), None));
                }
            }
        }
        for c in &asked {
            if !self.channels.admits(c) {
                WorkerStats::add(&self.stats.channel_limit, 1);
                WorkerStats::add(&self.stats.sio_connect_errors, 1);
                return Err(connect_error("channel limit reached", Some(c)));
            }
        }
        Ok((
            asked.into_iter().map(String::into_boxed_str).collect(),
            grant,
        ))
    }

    /// Session `slot` joins `channels` (checked).
    fn sio_join(&mut self, slot: usize, channels: &[Box<str>]) {
        for c in channels {
            let Ok(j) = self.channels.subscribe(c, SIO_BIT | slot as u32) else {
                continue; // admitted in this turn: cannot happen
            };
            self.sio.sessions[slot].channels.push((j.chan, j.pos));
            if j.first
                && let Some(b) = self.shared.broker.get()
            {
                b.add(Key::of_bayeux(c));
            }
        }
    }

    /// Session `slot` leaves every channel.
    fn sio_leave(&mut self, slot: usize) {
        let joined = std::mem::take(&mut self.sio.sessions[slot].channels);
        for (chan, pos) in joined {
            if let Some(moved) = self.channels.unsubscribe(chan, pos) {
                self.moved_in_channel(chan, pos, moved);
            }
        }
    }

    /// The channel table moved entry `moved` to `pos` of `chan`: its owner learns the new
    /// position.
    pub(super) fn moved_in_channel(&mut self, chan: u32, pos: u32, moved: u32) {
        if moved & SIO_BIT != 0 {
            if let Some(s) = self.sio.sessions.get_mut((moved & !SIO_BIT) as usize)
                && let Some(e) = s.channels.iter_mut().find(|e| e.0 == chan)
            {
                e.1 = pos;
            }
        } else if let Some(m) = self.conns.get_mut(moved as usize) {
            m.chan_pos = pos;
        }
    }

    // ---- sending ------------------------------------------------------------------------------

    /// Sends what waits in session `slot`'s outbox: written to its WebSocket, or the answer
    /// of its held GET.
    pub(super) fn sio_flush(&mut self, slot: usize) {
        let Some(s) = self.sio.sessions.get_mut(slot) else {
            return;
        };
        if s.outbox.is_empty() {
            return;
        }
        match (s.transport, s.conn) {
            (Transport::WebSocket, Some((idx, _))) => {
                let frames: Vec<Bytes> = s
                    .take_outbox()
                    .into_iter()
                    .map(|o| match o {
                        Out::Text(t) => frame::frame(OP_TEXT, &t),
                        Out::Binary(b) => frame::frame(OP_BINARY, &b),
                    })
                    .collect();
                let idx = idx as usize;
                let r = self
                    .send(idx, &frames, true)
                    .and_then(|()| self.over_backlog(idx).map(|_| ()));
                self.settle(idx, r);
            }
            (_, Some((idx, _))) => {
                let body = payload(s.take_outbox());
                s.conn = None;
                let idx = idx as usize;
                let r = self.sio_answer_held(idx, body);
                self.settle(idx, r);
            }
            _ => {
                if s.outbox_bytes > self.cfg.max_queued_bytes {
                    // Nobody polls for it: the client is gone or stuck.
                    let n = s.outbox.len() as u64;
                    WorkerStats::add(&self.stats.drops, n);
                    WorkerStats::add(&self.stats.slow_consumers, 1);
                    self.sio_close(slot, Closed::Protocol("slow consumer"));
                }
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

    /// Delivers `msgs` (one channel's, in order) to session `slot` when it polls (over a
    /// WebSocket the fan-out writes the frames itself).
    pub(super) fn sio_deliver(&mut self, slot: usize, msgs: &[(u32, Arc<Message>)]) {
        let Some(s) = self.sio.sessions.get_mut(slot) else {
            return;
        };
        let from = self.sio.resumed.get(&(slot as u32)).copied();
        let mut n = 0;
        for (_, m) in msgs {
            if from.is_some_and(|c| m.id <= c) {
                continue;
            }
            s.push(Out::Text(
                m.sio_text(&self.sio.event, self.sio.settings.recovery_ms > 0)
                    .clone(),
            ));
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
                if s.outbox.is_empty() {
                    b"6".to_vec()
                } else {
                    payload(s.take_outbox())
                }
            }
            _ => b"6".to_vec(),
        };
        self.sio_answer_held(idx, body)
    }

    /// Shutdown: the session of connection `idx` ends (1001 / the close packet).
    pub(super) fn sio_shutdown(&mut self, idx: usize) {
        let slot = self.conns[idx].chan_pos as usize;
        let key = (idx as u32, self.conns[idx].generation);
        let ours = self
            .sio
            .sessions
            .get(slot)
            .is_some_and(|s| s.conn == Some(key) || s.probe == Some(key));
        if ours {
            self.sio_close(slot, Closed::Shutdown);
        } else if self.conns[idx].phase == Phase::SioWs {
            let r = self.begin_close(
                idx,
                Some(frame::close_frame(
                    close_code::GOING_AWAY,
                    "server shutting down",
                )),
            );
            self.settle(idx, r);
        }
    }

    // ---- the end of a session -----------------------------------------------------------------

    /// Ends session `slot`: its channels left, its held GET answered (the close packet, or a
    /// noop when the client closed), its WebSocket closed.
    pub(super) fn sio_close(&mut self, slot: usize, why: Closed) {
        if !self.sio_alive(slot) {
            return;
        }
        if matches!(why, Closed::PingTimeout | Closed::Transport) {
            self.sio_keep_record(slot);
        }
        self.sio_leave(slot);
        let s = self.sio.sessions.remove(slot);
        WorkerStats::sub(&self.stats.sio_sessions, 1);
        match why {
            Closed::PingTimeout => WorkerStats::add(&self.stats.sio_ping_timeouts, 1),
            Closed::ConnectTimeout => WorkerStats::add(&self.stats.sio_connect_timeouts, 1),
            Closed::Protocol(_) => WorkerStats::add(&self.stats.sio_protocol_errors, 1),
            Closed::TokenExpired => WorkerStats::add(&self.stats.auth_expired_closes, 1),
            Closed::ByClient | Closed::Transport | Closed::Shutdown => {}
        }
        for key in [s.conn, s.probe].into_iter().flatten() {
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
            self.settle(idx, r);
        }
    }

    /// Connection `idx` is going (closed, or removed): its session learns it. A session's
    /// WebSocket gone ends the session; a probe gone leaves it on polling; a held GET gone
    /// leaves it waiting for the next.
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
        if s.probe == Some(key) {
            s.probe = None;
            s.transport = Transport::Polling;
        } else if s.conn == Some(key) {
            s.conn = None;
            if s.transport == Transport::WebSocket {
                // The connection is closing already: the session just goes.
                self.sio_close(slot, Closed::Transport);
            }
        }
    }

    // ---- WebSocket input -----------------------------------------------------------------------

    /// Frames from a Socket.IO WebSocket: the session's packets, or the upgrade probe.
    pub(super) fn sio_ws_input(&mut self, idx: usize, buf: &mut [u8]) -> Result<usize, Dead> {
        let payload_max = u32::try_from(self.sio.settings.max_payload).unwrap_or(u32::MAX);
        let max = self.cfg.max_message_bytes.min(payload_max);
        let stats = &*self.stats;
        let conn = &mut self.conns[idx];
        let key = (idx as u32, conn.generation);
        let slot = conn.chan_pos as usize;
        let mut msgs: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut replies: Vec<Bytes> = Vec::new();
        let mut close: Option<Bytes> = None;
        let ext = &mut conn.ext;
        let Proto::Ws(reader) = &mut conn.proto else {
            return Ok(buf.len());
        };
        let res = reader.feed(buf, max, |ev| match ev {
            Event::Data { chunk, .. } => {
                if let Ext::Msg(m) = ext
                    .get_or_insert_with(|| Box::new(Ext::Msg(Vec::new())))
                    .as_mut()
                {
                    m.extend_from_slice(chunk);
                }
            }
            Event::End { text } => {
                WorkerStats::add(&stats.ws_messages_in, 1);
                let m = match ext.take().map(|b| *b) {
                    Some(Ext::Msg(m)) => m,
                    _ => Vec::new(),
                };
                msgs.push((text, m));
            }
            Event::Ping(p) => replies.push(frame::frame(frame::OP_PONG, p)),
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
        if !replies.is_empty() {
            self.send(idx, &replies, false)?;
        }
        let probing = self
            .sio
            .sessions
            .get(slot)
            .is_some_and(|s| s.probe == Some(key));
        for (text, m) in msgs {
            if close.is_some() {
                break;
            }
            if !self
                .sio
                .sessions
                .get(slot)
                .is_some_and(|s| s.conn == Some(key) || s.probe == Some(key))
            {
                break;
            }
            if probing && self.sio.sessions[slot].probe == Some(key) {
                // The upgrade: `2probe` → `3probe` (and the held GET answered with a noop so
                // the client's polling pauses), then `5`.
                match (text, m.as_slice()) {
                    (true, b"2probe") => {
                        self.send(idx, &[frame::frame(OP_TEXT, b"3probe")], false)?;
                        if let Some((held, generation)) = self.sio.sessions[slot].conn
                            && self.is_live(held as usize, generation)
                        {
                            self.sio.sessions[slot].conn = None;
                            let r = self.sio_answer_held(held as usize, b"6".to_vec());
                            self.settle(held as usize, r);
                        }
                    }
                    (true, b"5") => {
                        let s = &mut self.sio.sessions[slot];
                        if let Some((held, generation)) = s.conn.take()
                            && self.is_live(held as usize, generation)
                        {
                            let r = self.sio_answer_held(held as usize, b"6".to_vec());
                            self.settle(held as usize, r);
                        }
                        let s = &mut self.sio.sessions[slot];
                        s.probe = None;
                        s.conn = Some(key);
                        s.transport = Transport::WebSocket;
                        WorkerStats::add(&self.stats.sio_upgrades, 1);
                        self.sio_flush(slot);
                    }
                    _ => {
                        WorkerStats::add(&self.stats.sio_protocol_errors, 1);
                        close = Some(frame::close_frame(close_code::POLICY, "bad upgrade"));
                    }
                }
                continue;
            }
            if text && m.first() == Some(&b'4') {
                WorkerStats::add(&self.stats.sio_packets_in, 1);
            }
            let r = if text {
                self.sio_rules(slot, |s, st, now, env| s.on_text(&m, false, now, st, env))
            } else {
                let b = Bytes::from(m);
                self.sio_rules(slot, |s, st, _now, env| s.on_binary(b, st, env))
            };
            match r {
                Ok(()) => self.sio_flush(slot),
                Err(why) => {
                    self.sio_close(slot, why);
                    return Ok(buf.len());
                }
            }
        }
        if let Some(c) = close {
            if self.conns.get(idx).is_some_and(|c| c.phase == Phase::SioWs) {
                self.begin_close(idx, Some(c))?;
            }
            return Ok(buf.len());
        }
        if self.conns.get(idx).is_none_or(|c| c.phase != Phase::SioWs) {
            return Ok(buf.len());
        }
        Ok(consumed)
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

/// Whether pattern `p` (`a/*`, `a/**`, `*`, `**`) covers channel or pattern `c`: every
/// channel `c` matches, `p` matches too.
fn covers(p: &str, c: &str) -> bool {
    #[derive(PartialEq)]
    enum K {
        Exact,
        One,
        All,
    }
    fn split(x: &str) -> (&str, K) {
        match x {
            "**" => ("", K::All),
            "*" => ("", K::One),
            _ => match x.strip_suffix("/**") {
                Some(b) => (b, K::All),
                None => match x.strip_suffix("/*") {
                    Some(b) => (b, K::One),
                    None => (x, K::Exact),
                },
            },
        }
    }
    let (pb, pk) = split(p);
    let (cb, ck) = split(c);
    match pk {
        K::Exact => false,
        K::One => ck == K::Exact && cb.rsplit_once('/').map_or("", |(parent, _)| parent) == pb,
        K::All => {
            pb.is_empty()
                || (cb.len() > pb.len() && cb.starts_with(pb) && cb.as_bytes()[pb.len()] == b'/')
                || (cb == pb && ck != K::Exact)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn patterns_cover() {
        assert!(covers("**", "a"));
        assert!(covers("*", "a"));
        assert!(!covers("*", "a/b"));
        assert!(covers("a/*", "a/b"));
        assert!(!covers("a/*", "a/b/c"));
        assert!(!covers("a/*", "a"));
        assert!(covers("a/**", "a/b/c"));
        assert!(covers("a/**", "a/*"));
        assert!(covers("a/**", "a/b/**"));
        assert!(!covers("a/**", "a"));
        assert!(!covers("a/**", "ab/c"));
        assert!(covers("**", "a/*"));
        assert!(!covers("*", "a/*"));
        assert!(!covers("a/*", "a/*"));
    }
}
