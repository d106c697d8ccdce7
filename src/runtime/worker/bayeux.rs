//! CometD/Bayeux on the worker: the glue between the sockets and the Bayeux rules
//! ([`crate::session::bayeux`]), over three transports on `{bayeux_path}` and every path under
//! it (the CometD client appends the message type: `/cometd/connect`):
//!
//! - **long-polling**: a `POST` of a JSON array of messages, answered with a JSON array;
//! - **callback-polling**: a `GET` with `message=` (the array, URL-encoded) and `jsonp=` (a
//!   validated callback name), answered with `/**/callback([...]);`;
//! - **websocket**: `GET {bayeux_path}` upgraded; arrays of messages in text frames both ways.
//!
//! What is here: HTTP/JSONP/WebSocket framing, CORS and `Referer` answers, the
//! `BAYEUX_BROWSER` cookie header (read, and set when the rules ask), the clock and the random
//! bits the rules are given, each publish the rules ask for (through the hub or the broker),
//! telling the broker of first and last interest, and the hold on the connection: a held
//! connect puts an HTTP connection in `Phase::BayeuxPoll` (a WebSocket keeps it in its
//! `Ext::BayeuxWs` and goes on reading), arms its timer, and writes its reply when it is woken,
//! replaced, times out or is interrupted. What is not here: any Bayeux decision (meta channels,
//! who may act for a clientId, advice, ack batches, timesync), which the rules return as
//! values.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::auth::Auth;

use super::conn_io::{Dead, Handled};
use super::transports::valid_callback;
use super::{PubError, Worker};
use crate::broker::{Broker, Key};
use crate::proto::bayeux::{self, Request};
use crate::proto::http;
use crate::proto::ws::deflate;
use crate::proto::ws::frame::{self, OP_TEXT, close_code};
use crate::runtime::conn::{
    BayeuxAnswer, BayeuxWs, Ext, Format, ORIGIN_ANY, Phase, SubState, flag,
};
use crate::session::bayeux::{
    Batch, ClientId, Ctx, Env, Interest, Link, Now, Out, PublishRefusal, Rules, Step, Via, Waiter,
    bad_request, in_effect,
};
use crate::stats::WorkerStats;

/// The session cookie of long- and callback-polling.
const COOKIE: &str = "BAYEUX_BROWSER";

/// 128 random bits from the kernel's CSPRNG: client ids and `BAYEUX_BROWSER` cookies.
pub(super) fn random_u128() -> u128 {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: getrandom writes at most the given length into the valid buffer.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    u128::from_be_bytes(b)
}

/// What the rules get from the process: the kernel's random bits, and `--broker`, which
/// follows the store's first and last interest in a subscription.
struct Process<'a> {
    broker: Option<&'a Broker>,
}

impl Env for Process<'_> {
    fn random(&mut self) -> u128 {
        random_u128()
    }

    fn interest(&mut self, change: Interest<'_>) {
        if let Some(b) = self.broker {
            match change {
                Interest::First(sub) => b.add(Key::of_bayeux(sub)),
                Interest::Last(sub) => b.remove(&Key::of_bayeux(sub)),
            }
        }
    }
}

/// A cookie value we would have set: 32 hex digits.
fn browser_cookie(head: &http::Head<'_>) -> Option<String> {
    let v = http::cookie(head.cookie?, COOKIE)?;
    (v.len() == 32 && v.iter().all(u8::is_ascii_hexdigit))
        .then(|| String::from_utf8_lossy(v).into_owned())
}

/// `[a,b,...]`.
fn json_array(parts: &[Bytes], prefix: &str, suffix: &str) -> Vec<u8> {
    let size = parts.iter().map(|p| p.len() + 1).sum::<usize>() + prefix.len() + suffix.len() + 2;
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(prefix.as_bytes());
    body.push(b'[');
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(p);
    }
    body.push(b']');
    body.extend_from_slice(suffix.as_bytes());
    body
}

impl Worker {
    /// The reply frame of a Bayeux WebSocket client that agreed to permessage-deflate. A
    /// delivery of at least `--deflate-min-bytes` is compressed once per turn for every such
    /// client of this worker (`bayeux_pieces`: the JSON of a delivery is the same bytes in every
    /// client's queue) and the frame is stitched from those pieces and the rest (brackets,
    /// commas, the client's own replies) in stored blocks; with no such delivery, the whole
    /// reply is compressed for this client ([`ws::outgoing`](super::ws::outgoing)).
    fn bayeux_ws_deflated(&mut self, idx: usize, parts: &[Bytes], plain: Bytes) -> Bytes {
        let min = self.cfg.deflate_min_bytes as usize;
        let pieces = &mut self.bayeux_pieces;
        let zs: Vec<Option<Bytes>> = parts
            .iter()
            .map(|p| {
                if p.len() < min {
                    return None;
                }
                let key = (p.as_ptr() as usize, p.len());
                let e = pieces
                    .entry(key)
                    .or_insert_with(|| (p.clone(), deflate::compress_piece(p)));
                e.1.clone()
            })
            .collect();
        if zs.iter().all(Option::is_none) {
            return self.ws_out(idx, plain);
        }
        // Raw runs between the compressed deliveries, each one buffer (one stored block).
        let mut runs: Vec<Vec<u8>> = vec![b"[".to_vec()];
        for (i, (p, z)) in parts.iter().zip(&zs).enumerate() {
            let run = runs.last_mut().expect("one run at least");
            if i > 0 {
                run.push(b',');
            }
            match z {
                Some(_) => runs.push(Vec::new()),
                None => run.extend_from_slice(p),
            }
        }
        runs.last_mut().expect("one run at least").push(b']');
        let mut seq = Vec::with_capacity(2 * runs.len());
        let mut z = zs.iter().flatten();
        for (k, run) in runs.iter().enumerate() {
            if !run.is_empty() {
                seq.push(deflate::Piece::Raw(run));
            }
            if k + 1 < runs.len() {
                let piece = z
                    .next()
                    .expect("a compressed delivery after every run but the last");
                seq.push(deflate::Piece::Compressed(piece));
            }
        }
        let f = deflate::frame_from_pieces(OP_TEXT, seq);
        if f.len() >= plain.len() {
            return plain;
        }
        WorkerStats::add(&self.stats.ws_deflated_out, 1);
        f
    }
}

/// The full advice of every successful connect and handshake reply, built once per worker
/// from the flags.
pub(super) fn advice(cfg: &crate::config::Config) -> String {
    crate::session::bayeux::advice(cfg.bayeux_timeout, cfg.bayeux_max_interval)
}

impl Worker {
    /// The time for the Bayeux rules: the process's clock ([`Shared::now`]
    /// (crate::runtime::shared::Shared::now)), one for every worker, since a client's requests
    /// may arrive on any of them.
    fn bayeux_now(&self) -> Now {
        let n = self.shared.now();
        Now {
            secs: n.secs,
            unix_ms: (n.unix_micros / 1000) as i64,
        }
    }

    /// A request on `{bayeux_path}`: long-polling, callback-polling or a WebSocket upgrade.
    pub(super) fn bayeux_http(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        body: &[u8],
    ) -> Handled {
        let keep_alive = head.keep_alive();
        let Some(origin) = self.check_origin(idx, head)? else {
            return Ok(());
        };
        // The CometD client's long-polling sends credentials (`withCredentials`), so answers
        // to a browser name the origin and allow credentials.
        let cors = self.bayeux_cors(origin, head.origin);
        if head.method_raw == "OPTIONS" {
            return self.preflight_with(idx, head, origin, cors);
        }
        let (mut raw, callback) = match head.method() {
            http::Method::Get if head.upgrade_websocket => {
                return self.bayeux_upgrade(idx, head);
            }
            http::Method::Post => (body.to_vec(), None),
            http::Method::Get => {
                let cb = http::query_param(head.path, "jsonp");
                let msg = http::query_param(head.path, "message").and_then(http::percent_decode);
                if !self.referer_allowed(head) {
                    WorkerStats::add(&self.stats.origin_refused, 1);
                    return self.respond_error(
                        idx,
                        403,
                        "Forbidden",
                        "",
                        "referer's origin not allowed (see --allow-origin)\n",
                        keep_alive,
                    );
                }
                match (cb, msg) {
                    (Some(cb), Some(m)) if valid_callback(cb) => (m, Some(cb)),
                    _ => {
                        return self.respond_error(
                            idx,
                            400,
                            "Bad Request",
                            &cors,
                            "Bayeux callback-polling: GET with message=<URL-encoded JSON array> \
                             and jsonp=<callback: identifiers joined by '.', at most 64 bytes>\n",
                            keep_alive,
                        );
                    }
                }
            }
            _ => {
                return self.respond_error(
                    idx,
                    405,
                    "Method Not Allowed",
                    &format!("Allow: GET, POST, OPTIONS\r\n{cors}"),
                    "Bayeux: POST a JSON array of messages (long-polling), GET with message= and \
                     jsonp= (callback-polling), or upgrade to WebSocket\n",
                    keep_alive,
                );
            }
        };
        let reqs = match bayeux::parse(&mut raw, self.cfg.bayeux_max_batch) {
            Ok(r) => r,
            Err(e) => {
                WorkerStats::add(&self.stats.bayeux_bad_requests, 1);
                let reply = bad_request(e);
                let resp = http::response(
                    &self.date,
                    400,
                    "Bad Request",
                    "application/json;charset=UTF-8",
                    &cors,
                    reply.as_bytes(),
                    keep_alive,
                );
                return self.respond(idx, resp, keep_alive);
            }
        };
        WorkerStats::add(&self.stats.bayeux_messages_in, reqs.len() as u64);
        let via = if callback.is_some() {
            Via::CallbackPolling
        } else {
            Via::LongPolling
        };
        let browser = browser_cookie(head);
        let batch = self.bayeux_batch(idx, &reqs, via, browser.as_deref(), &mut Link::default());
        let Some((held, secs)) = batch.hold else {
            let mut extra = cors;
            if let Some(c) = &batch.set_cookie {
                let _ = write!(extra, "Set-Cookie: {COOKIE}={c}; Path=/; HttpOnly\r\n");
            }
            return self.bayeux_answer(idx, &batch.out, callback, &extra, keep_alive);
        };
        let before = batch
            .out
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect::<Vec<_>>()
            .join(",");
        let answer = (!before.is_empty() || callback.is_some() || !cors.is_empty()).then(|| {
            Box::new(BayeuxAnswer {
                before,
                callback: callback.map(Box::from),
                cors,
            })
        });
        let ext = Box::new(Ext::Bayeux { held, answer });
        let st = SubState::new(0, origin, Format::Json);
        let conn = &mut self.conns[idx];
        conn.hold(Phase::BayeuxPoll, st, Some(ext), keep_alive, &self.stats);
        conn.deadline = 0;
        let at = self.after(secs);
        self.set_deadline(idx, at);
        Ok(())
    }

    /// The rules over the messages of one request or frame, in order, with the publishes they
    /// ask for performed; the wakes they ask for are posted and their counts added here.
    fn bayeux_batch(
        &mut self,
        idx: usize,
        reqs: &[Request],
        via: Via,
        browser: Option<&str>,
        link: &mut Link,
    ) -> Batch {
        let shared = self.shared.clone();
        let mut env = Process {
            broker: shared.broker.get().map(|b| &**b),
        };
        let ctx = Ctx {
            via,
            browser,
            now: self.bayeux_now(),
            waiter: self.waiter(idx),
        };
        let reqs = in_effect(reqs);
        // With subscribe tokens, the keys in effect for this batch.
        let auth = if self.cfg.tokens_configured() {
            shared.auth()
        } else {
            None
        };
        let mut b = Batch::default();
        for (i, r) in reqs.iter().enumerate() {
            let last = i + 1 == reqs.len();
            let step = self
                .bayeux_rules(auth.as_deref())
                .message(&mut b, link, r, last, &ctx, &mut env);
            if let Step::Publish { native, data } = step {
                let payload = Bytes::copy_from_slice(data.as_bytes());
                let res = match self.publish_message(native, payload, None) {
                    Ok(_) | Err(PubError::Inbox(_)) => Ok(()),
                    Err(PubError::Channels) => Err(PublishRefusal::ChannelLimit),
                    Err(PubError::Broker(_)) => Err(PublishRefusal::BrokerUnavailable),
                    Err(PubError::Draining) => Err(PublishRefusal::Draining),
                };
                self.bayeux_rules(None).published(&mut b, r, res);
            }
        }
        WorkerStats::add(&self.stats.bayeux_wrong_connection, b.wrong_connection);
        let t = b.tokens;
        WorkerStats::add(&self.stats.auth_tokens_accepted, t.accepted);
        WorkerStats::add(&self.stats.auth_token_channel, t.channel);
        WorkerStats::add(&self.stats.auth_expired_closes, t.expired);
        if let Some(e) = t.refused {
            self.count_token_error(e);
        }
        for w in std::mem::take(&mut b.wake) {
            self.bayeux_wake(w);
        }
        b
    }

    /// The Bayeux rules over the process's store, with this worker's settings.
    fn bayeux_rules<'a>(&'a self, auth: Option<&'a Auth>) -> Rules<'a> {
        Rules {
            store: &self.shared.bayeux,
            advice: &self.bayeux_advice,
            timeout: self.cfg.bayeux_timeout,
            auth,
        }
    }

    fn waiter(&self, idx: usize) -> Waiter {
        Waiter {
            worker: self.id as u32,
            idx: idx as u32,
            generation: self.conns[idx].generation,
        }
    }

    fn ws_state(&mut self, idx: usize) -> Option<&mut BayeuxWs> {
        match self.conns.get_mut(idx)?.ext.as_deref_mut()? {
            Ext::BayeuxWs(s) => Some(s),
            _ => None,
        }
    }

    /// Asks the worker holding `w` to look at its client again.
    pub(super) fn bayeux_wake(&mut self, w: Waiter) {
        let worker = w.worker as usize;
        if worker == self.id {
            self.bayeux_wakes.push((w.idx, w.generation));
        } else if let Some(mb) = self.shared.mailboxes.get(worker) {
            let mail = crate::runtime::mailbox::Mail::BayeuxWake {
                idx: w.idx,
                generation: w.generation,
            };
            if mb.post(mail).is_ok() {
                self.wake[worker] = true;
            }
            // A full inbox: the held connect ends at its timeout, with what is queued.
        }
    }

    /// The client of the connect held on `idx`, if one is.
    fn held_client(&self, idx: usize) -> Option<ClientId> {
        let conn = self.conns.get(idx)?;
        match (conn.phase, conn.ext.as_deref()?) {
            (Phase::BayeuxPoll, Ext::Bayeux { held, .. }) => Some(held.client),
            (Phase::BayeuxWs, Ext::BayeuxWs(s)) => s.held.as_ref().map(|(h, _)| h.client),
            _ => None,
        }
    }

    /// Serves this turn's wakes of held connects.
    pub(super) fn bayeux_wakes(&mut self) {
        while let Some((idx, generation)) = self.bayeux_wakes.pop() {
            let idx = idx as usize;
            if !self.is_live(idx, generation) {
                continue;
            }
            let Some(client) = self.held_client(idx) else {
                continue;
            };
            if let Some(out) =
                self.shared
                    .bayeux
                    .take(self.shared.now().secs, client, self.waiter(idx))
            {
                let r = self.bayeux_end_hold(idx, Some(out));
                self.settle(idx, r);
            }
        }
    }

    /// Ends the connect held on `idx`: with `out` (woken), or with whatever the store has for
    /// it now (timeout, interrupted, shutdown).
    pub(super) fn bayeux_end_hold(&mut self, idx: usize, out: Option<Out>) -> Handled {
        let waiter = self.waiter(idx);
        let now = self.bayeux_now();
        let conn = &mut self.conns[idx];
        if conn.phase == Phase::BayeuxWs {
            let Some((held, _)) = self.ws_state(idx).and_then(|s| s.held.take()) else {
                return Ok(());
            };
            let (out, reply) = self.bayeux_rules(None).end_hold(held, waiter, out, now);
            WorkerStats::add(&self.stats.messages_out, out.msgs.len() as u64);
            let mut parts = out.msgs;
            parts.push(reply);
            self.bayeux_ws_send(idx, &parts)?;
            if self.conns[idx].phase == Phase::BayeuxWs {
                self.bayeux_ws_arm(idx);
            }
            return Ok(());
        }
        let keep_alive = conn.has(flag::KEEP_ALIVE);
        let Some(Ext::Bayeux { held, answer }) = conn.ext.take().map(|b| *b) else {
            return Ok(());
        };
        let BayeuxAnswer {
            before,
            callback,
            cors,
        } = answer.map(|a| *a).unwrap_or_default();
        let (out, reply) = self.bayeux_rules(None).end_hold(held, waiter, out, now);
        self.back_to_http(idx);
        let mut parts: Vec<Bytes> = Vec::with_capacity(out.msgs.len() + 2);
        if !before.is_empty() {
            parts.push(Bytes::from(before));
        }
        WorkerStats::add(&self.stats.messages_out, out.msgs.len() as u64);
        parts.extend(out.msgs);
        parts.push(reply);
        self.bayeux_answer(idx, &parts, callback.as_deref(), &cors, keep_alive)?;
        self.keepalive_again(idx);
        Ok(())
    }

    /// Expires idle Bayeux clients (worker 0, once a tick).
    pub(super) fn bayeux_sweep(&mut self) {
        let mut env = Process {
            broker: self.shared.broker.get().map(|b| &**b),
        };
        self.shared
            .bayeux
            .sweep(self.shared.now().secs, &mut |i| env.interest(i));
    }

    /// A held connect's connection is closing or gone: the store forgets it.
    pub(super) fn bayeux_release(&mut self, idx: usize) {
        if let Some(client) = self.held_client(idx) {
            let waiter = self.waiter(idx);
            self.shared
                .bayeux
                .release(self.shared.now().secs, client, waiter);
        }
    }

    /// CORS headers for a Bayeux answer: the allowed origin (echoed when `--allow-origin *`,
    /// since credentialed requests may not get `*`) and `Access-Control-Allow-Credentials`.
    fn bayeux_cors(&self, origin: u16, request_origin: Option<&[u8]>) -> String {
        match origin {
            0 => String::new(),
            ORIGIN_ANY => match request_origin.filter(|o| o.iter().all(u8::is_ascii_graphic)) {
                Some(o) => format!(
                    "Access-Control-Allow-Origin: {}\r\nVary: Origin\r\n\
                     Access-Control-Allow-Credentials: true\r\n",
                    String::from_utf8_lossy(o)
                ),
                None => String::new(),
            },
            _ => {
                let mut c = self.cors_headers(origin);
                c.push_str("Access-Control-Allow-Credentials: true\r\n");
                c
            }
        }
    }

    /// A script load (callback-polling) carries no `Origin`; with `--allow-origin` set, its
    /// `Referer`, when present, must come from an allowed origin. (Without a `Referer` it is
    /// let through: JSONP cannot be held to CORS; see docs/bayeux.md.)
    fn referer_allowed(&self, head: &http::Head<'_>) -> bool {
        let list = &self.cfg.allow_origin;
        if list.is_empty() || head.origin.is_some() || list.iter().any(|o| o == "*") {
            return true;
        }
        match head.referer.and_then(http::referer_origin) {
            Some(o) => list.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(o)),
            None => true,
        }
    }

    /// Writes `parts` as the HTTP answer: a JSON array, or a JavaScript call of `callback`.
    fn bayeux_answer(
        &mut self,
        idx: usize,
        parts: &[Bytes],
        callback: Option<&str>,
        extra: &str,
        keep_alive: bool,
    ) -> Handled {
        let resp = match callback {
            None => http::response(
                &self.date,
                200,
                "OK",
                "application/json;charset=UTF-8",
                extra,
                &json_array(parts, "", ""),
                keep_alive,
            ),
            Some(cb) => http::response(
                &self.date,
                200,
                "OK",
                "text/javascript;charset=UTF-8",
                &format!("{extra}X-Content-Type-Options: nosniff\r\n"),
                &json_array(parts, &format!("/**/{cb}("), ");"),
                keep_alive,
            ),
        };
        self.respond(idx, resp, keep_alive)
    }

    // ---- WebSocket --------------------------------------------------------------------------

    /// `GET {bayeux_path}` with an upgrade: the connection speaks Bayeux in text frames.
    fn bayeux_upgrade(&mut self, idx: usize, head: &http::Head<'_>) -> Handled {
        let Some(resp) = self.accept_upgrade(idx, head)? else {
            return Ok(());
        };
        let ext = Box::new(Ext::BayeuxWs(BayeuxWs {
            browser: browser_cookie(head).map(String::into_boxed_str),
            ..BayeuxWs::default()
        }));
        self.conns[idx].upgrade(Phase::BayeuxWs, Some(ext), &self.stats);
        self.bayeux_ws_arm(idx);
        self.send(idx, &[Bytes::from(resp)], false)
    }

    /// The connection's deadline: the end of its held connect, else `--bayeux-max-interval`
    /// (plus a second) of silence, after which it is closed: a client that keeps its session
    /// sends a connect well before.
    pub(super) fn bayeux_ws_arm(&mut self, idx: usize) {
        let idle = self.after(self.cfg.bayeux_max_interval + 1);
        let at = self
            .ws_state(idx)
            .and_then(|s| s.held.as_ref().map(|(_, until)| *until))
            .unwrap_or(idle);
        self.conns[idx].deadline = 0;
        self.set_deadline(idx, at);
    }

    /// The deadline passed: a held connect ends, or a silent connection is closed.
    pub(super) fn bayeux_ws_timeout(&mut self, idx: usize) -> Handled {
        if self.held_client(idx).is_some() {
            return self.bayeux_end_hold(idx, None);
        }
        WorkerStats::add(&self.stats.bayeux_ws_idle, 1);
        self.begin_close(
            idx,
            Some(frame::close_frame(
                close_code::POLICY,
                "no Bayeux message within maxInterval",
            )),
        )
    }

    /// One complete text message from a Bayeux WebSocket client. Returns a close frame when
    /// the connection must end.
    pub(super) fn bayeux_ws_message(
        &mut self,
        idx: usize,
        mut payload: Vec<u8>,
    ) -> Result<Option<Bytes>, Dead> {
        let reqs = match bayeux::parse(&mut payload, self.cfg.bayeux_max_batch) {
            Ok(r) => r,
            Err(e) => {
                WorkerStats::add(&self.stats.bayeux_bad_requests, 1);
                return Ok(Some(frame::close_frame(close_code::POLICY, e.message())));
            }
        };
        WorkerStats::add(&self.stats.bayeux_messages_in, reqs.len() as u64);
        // The connection's Bayeux state goes to the rules for the batch and comes back.
        let (browser, mut link, until) = match self.ws_state(idx) {
            Some(s) => {
                let (held, until) = s.held.take().unzip();
                let link = Link {
                    client: s.client.take(),
                    held,
                };
                (s.browser.as_deref().map(str::to_string), link, until)
            }
            None => (None, Link::default(), None),
        };
        let batch = self.bayeux_batch(idx, &reqs, Via::WebSocket, browser.as_deref(), &mut link);
        let held = match (batch.hold, link.held, until) {
            (Some((held, secs)), _, _) => Some((held, self.after(secs))),
            (None, Some(held), Some(until)) => Some((held, until)),
            _ => None,
        };
        if let Some(s) = self.ws_state(idx) {
            s.client = link.client;
            s.held = held;
        }
        if self.conns[idx].phase != Phase::BayeuxWs {
            return Ok(None);
        }
        if !batch.out.is_empty() {
            self.bayeux_ws_send(idx, &batch.out)?;
        }
        if self.conns[idx].phase == Phase::BayeuxWs {
            self.bayeux_ws_arm(idx);
        }
        Ok(None)
    }

    /// Sends `parts` as one text frame holding a JSON array.
    fn bayeux_ws_send(&mut self, idx: usize, parts: &[Bytes]) -> Handled {
        let plain = frame::frame(OP_TEXT, &json_array(parts, "", ""));
        let f = match self.conns[idx].deflate() {
            Some(a) if deflate::may_compress(a, &plain) => {
                self.bayeux_ws_deflated(idx, parts, plain)
            }
            _ => plain,
        };
        self.send(idx, &[f], false)?;
        self.over_backlog(idx)?;
        Ok(())
    }
}
