//! Socket.IO requests on `--socketio-path`: the handshake (polling or WebSocket), the long-poll
//! GET and POST of a session, the upgrade request, and the error answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::*;
use crate::proto::http::{self, Method};
use crate::proto::socketio as wire;
use crate::proto::ws::frame::{self, OP_TEXT};
use crate::runtime::conn::{Format, NO_CHANNEL, ORIGIN_ANY, Phase, SubState};
use crate::runtime::worker::Worker;
use crate::runtime::worker::conn_io::Handled;
use crate::session::socketio::sid::Sid;
use crate::session::socketio::{Closed, Env, Out, Session, Settings, Transport};
use crate::stats::WorkerStats;

impl Worker {
    /// A request on `--socketio-path` (for a session of this worker, or a new one).
    pub(in crate::runtime::worker) fn sio_http(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        body: &[u8],
    ) -> Handled {
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
            // Closed after: a connection naming sessions nobody has is not moved on and on.
            return self.sio_error(idx, 1, origin, false);
        };
        let s = &self.sio.sessions[slot];
        if websocket {
            if s.transport != Transport::Polling || s.probe().is_some() {
                return self.sio_error(idx, 3, origin, false);
            }
            let Some(resp) = self.accept_upgrade(idx, head)? else {
                return Ok(());
            };
            self.sio_ws_phase(idx, slot);
            // The probe and `5` must come within --socketio-upgrade-timeout (10 s, as the
            // reference server's upgradeTimeout); then the WebSocket is closed and polling
            // goes on.
            let at = self.after(self.cfg.socketio_upgrade_timeout);
            self.set_deadline(idx, at);
            let key = (idx as u32, self.conns[idx].generation);
            self.sio.sessions[slot].set_probe(Some(key));
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
    pub(in crate::runtime::worker) fn sio_find(&self, sid: &str) -> Option<usize> {
        let d = Sid::decode(sid)?;
        if usize::from(d.worker) != self.id {
            return None;
        }
        let s = self.sio.sessions.get(d.slot as usize)?;
        (s.generation == d.generation && s.secret == d.secret).then_some(d.slot as usize)
    }

    pub(in crate::runtime::worker) fn sio_error(
        &mut self,
        idx: usize,
        code: u8,
        origin: u16,
        keep_alive: bool,
    ) -> Handled {
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
    pub(in crate::runtime::worker) fn sio_open(
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
        let open = self.shared.sio_sessions.fetch_add(1, Ordering::Relaxed);
        // The slot must fit below the namespace bits of a channel entry (67 million per
        // worker), whatever the flag says.
        if open >= self.cfg.socketio_max_sessions || self.sio.sessions.vacant_key() >= MAX_SESSIONS
        {
            self.shared.sio_sessions.fetch_sub(1, Ordering::Relaxed);
            WorkerStats::add(&self.stats.sio_sessions_refused, 1);
            return self.respond_error(
                idx,
                503,
                "Service Unavailable",
                "Retry-After: 1\r\n",
                "too many Socket.IO sessions (--socketio-max-sessions)\n",
                false,
            );
        }
        let now = self.sio_now();
        let generation = self.sio.next_generation;
        self.sio.next_generation = generation.wrapping_add(1).max(1);
        let secret = random_id();
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
            s.set_query(query.into_boxed_str());
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
    pub(in crate::runtime::worker) fn sio_ws_phase(&mut self, idx: usize, slot: usize) {
        let conn = &mut self.conns[idx];
        conn.upgrade(Phase::SioWs, None, &self.stats);
        conn.chan = NO_CHANNEL;
        conn.chan_pos = slot as u32;
        // The session's heartbeat is the liveness check: no WebSocket pings.
        conn.deadline = 0;
    }

    /// A long-poll GET: answered at once when packets wait, else held.
    pub(in crate::runtime::worker) fn sio_get(
        &mut self,
        idx: usize,
        slot: usize,
        origin: u16,
        keep_alive: bool,
    ) -> Handled {
        if self.sio.sessions[slot].conn.is_some() {
            // Two GETs at once: the session ends (the held one gets the close packet), the
            // second is refused.
            self.sio_close(slot, Closed::Protocol("two polls at once"));
            return self.sio_error(idx, 3, origin, false);
        }
        let s = &mut self.sio.sessions[slot];
        if s.has_out() {
            let body = payload(s.take_outbox());
            return self.sio_answer(idx, origin, keep_alive, body);
        }
        if s.transport == Transport::Probed {
            // The upgrade is under way: a noop, so that the client stops polling.
            return self.sio_answer(idx, origin, keep_alive, b"6".to_vec());
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
    pub(in crate::runtime::worker) fn sio_post(
        &mut self,
        idx: usize,
        slot: usize,
        body: &[u8],
        origin: u16,
        keep_alive: bool,
    ) -> Handled {
        if body.len() > self.sio.settings.max_payload {
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
    pub(in crate::runtime::worker) fn sio_answer(
        &mut self,
        idx: usize,
        origin: u16,
        keep_alive: bool,
        body: Vec<u8>,
    ) -> Handled {
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
    pub(in crate::runtime::worker) fn sio_rules(
        &mut self,
        slot: usize,
        f: impl FnOnce(&mut Session, &Settings, u64, &mut dyn Env) -> Result<(), Closed>,
    ) -> Result<(), Closed> {
        let now = self.sio_now();
        // The session leaves its slot while the rules run, so the worker can be their Env.
        let placeholder = Session::new(0, 0, Transport::Polling, 0, &self.sio.settings);
        let mut s = std::mem::replace(&mut self.sio.sessions[slot], placeholder);
        let settings = Arc::clone(&self.sio.settings);
        let grant = s.take_grant();
        let mut env = SioEnv {
            w: self,
            query: s.query().map(Box::from),
            grant: grant.as_ref(),
            asked: Asked::default(),
        };
        let r = f(&mut s, &settings, now, &mut env);
        let asked = std::mem::take(&mut env.asked);
        s.set_grant(grant);
        self.sio.sessions[slot] = s;
        for nsp in asked.leave {
            self.sio_leave(slot, Some(nsp));
        }
        if let Some((nsp, channels, grant)) = asked.join {
            self.sio_leave(slot, Some(nsp));
            self.sio_join(slot, nsp, &channels);
            if let Some((pid, sock)) = asked.ids {
                let joined_at = match (&asked.recovered, channels.first()) {
                    (Some((at, _, _)), _) => *at,
                    (None, Some(c)) if channels.len() == 1 => self.shared.hub.since(c, None).cursor,
                    _ => 0,
                };
                let s = &mut self.sio.sessions[slot];
                s.pid = pid;
                s.sock = sock;
                s.joined_at = joined_at;
            }
            if let Some((_, msgs, cursor)) = asked.recovered {
                // What it missed, after the CONNECT reply; this turn's fan-out skips it.
                for m in &msgs {
                    let t = self.sio.text(m).clone();
                    self.sio.sessions[slot].push(Out::Text(t));
                }
                WorkerStats::add(&self.stats.messages_out, msgs.len() as u64);
                // The recovered channel is the session's one entry in `/`.
                let chan = self.sio.sessions[slot]
                    .channels
                    .iter()
                    .find(|e| e.2 == 0)
                    .map(|e| e.0);
                if let Some(chan) = chan {
                    self.sio.resumed.insert((slot as u32, chan), cursor);
                }
            }
            if let Some(g) = grant {
                // A session lives no longer than the first token to end; it publishes with the
                // first token it was granted (a later CONNECT's token extends nothing).
                let left_ms = g.left(self.shared.unix_secs()).saturating_mul(1_000);
                let end = now.saturating_add(left_ms.max(1));
                let s = &mut self.sio.sessions[slot];
                let ends = match s.ends() {
                    0 => end,
                    e => e.min(end),
                };
                s.set_ends(ends);
                if s.grant().is_none() {
                    s.set_grant(Some(g));
                }
            }
        }
        if r.is_ok() {
            self.sio_arm(slot);
        }
        r
    }

    /// Whether session `slot` is still there (a rule may have ended it).
    pub(in crate::runtime::worker) fn sio_alive(&self, slot: usize) -> bool {
        self.sio
            .sessions
            .get(slot)
            .is_some_and(|s| s.generation != 0)
    }
}
