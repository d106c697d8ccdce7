//! CometD/Bayeux on the worker, over three transports on `{bayeux_path}` and every path under
//! it (the CometD client appends the message type: `/cometd/connect`):
//!
//! - **long-polling**: a `POST` of a JSON array of messages, answered with a JSON array;
//! - **callback-polling**: a `GET` with `message=` (the array, URL-encoded) and `jsonp=` (a
//!   validated callback name), answered with `/**/callback([...]);`;
//! - **websocket**: `GET {bayeux_path}` upgraded; arrays of messages in text frames both ways.
//!
//! The messages of one request or frame are processed in order; a request carrying a handshake
//! is the handshake alone (Bayeux 1.0: other messages in it are ignored). A `/meta/connect`
//! with nothing to deliver is held — the HTTP connection goes to `Phase::BayeuxPoll`, a
//! WebSocket keeps reading other messages meanwhile — until its client has messages, the
//! connect is replaced by a newer one, or its timeout: the client's advised `timeout` if it
//! gave one, at most `--bayeux-timeout`. Deliveries travel in connect replies only, which is
//! what lets the ack extension number them as batches.
//!
//! Sessions live in [`crate::session::bayeux::store::Clients`]; publishes go through the hub like any
//! other, so native subscribers of `a/b` and Bayeux subscribers of `/a/b` see the same messages.
//!
//! Who may act for a clientId (documented in the README): over long- and callback-polling the
//! handshake sets an HttpOnly `BAYEUX_BROWSER` cookie and the session is bound to it once a
//! request brings it back; a WebSocket connection acts for one client only (the one it
//! handshook, or the first one it names); anything else is answered `402` with advice
//! `handshake`.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::transports::valid_callback;
use super::{PubError, Worker};
use crate::broker::{Broker, Key};
use crate::proto::bayeux::{self, AckField, Reply, Request};
use crate::proto::http;
use crate::proto::ws::frame::{self, OP_TEXT, close_code};
use crate::proto::ws::reader::WsReader;
use crate::runtime::conn::{
    BayeuxWs, Ext, Format, HeldConnect, ORIGIN_ANY, Phase, Proto, SubState, flag,
};
use crate::session::bayeux::Out;
use crate::session::bayeux::store::{Connect, Interest, Refusal, Waiter};
use crate::stats::WorkerStats;

/// What the handshake reply offers.
const TRANSPORTS: &str = r#"["websocket","long-polling","callback-polling"]"#;
/// The session cookie of long- and callback-polling.
const COOKIE: &str = "BAYEUX_BROWSER";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    LongPolling,
    CallbackPolling,
    WebSocket,
}

/// Where a batch came from.
struct Ctx {
    via: Via,
    /// The request's (or the upgrade's) `BAYEUX_BROWSER` cookie.
    browser: Option<String>,
    /// When it arrived, ms since the epoch (timesync).
    arrival: i64,
}

/// What processing a batch leaves to do.
#[derive(Default)]
struct Batch {
    /// Replies and deliveries so far, each a JSON object.
    out: Vec<Bytes>,
    /// A connect to hold, and for how many seconds.
    hold: Option<(HeldConnect, u32)>,
    /// A `Set-Cookie` value for the HTTP answer.
    set_cookie: Option<String>,
}

enum ConnectOutcome {
    /// Replies and deliveries to add now.
    Now(Vec<Bytes>),
    /// Hold the connect for this many seconds, after adding these (the answer to an earlier
    /// connect held on the same WebSocket).
    Hold(HeldConnect, u32, Vec<Bytes>),
}

/// Seconds on the monotonic clock the Bayeux store's `now` counts in: one clock for every
/// worker, since a client's requests may arrive on any of them.
fn secs() -> u32 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs() as u32
}

/// 128 random bits from the kernel's CSPRNG: client ids and `BAYEUX_BROWSER` cookies.
fn random_u128() -> u128 {
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

/// `--broker`: follows the Bayeux store's first and last interest in a subscription.
fn tell_broker(broker: Option<&Broker>) -> impl FnMut(Interest<'_>) + '_ {
    move |i| {
        if let Some(b) = broker {
            match i {
                Interest::First(sub) => b.add(Key::of_bayeux(sub)),
                Interest::Last(sub) => b.remove(&Key::of_bayeux(sub)),
            }
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A cookie value we would have set: 32 hex digits.
fn browser_cookie(head: &http::Head<'_>) -> Option<String> {
    let v = http::cookie(head.cookie?, COOKIE)?;
    (v.len() == 32 && v.iter().all(u8::is_ascii_hexdigit))
        .then(|| String::from_utf8_lossy(v).into_owned())
}

/// The reply to a held or answered connect: the full advice, then `ext` with the deliveries'
/// batch number (ack), drops, timesync.
fn finish_connect(held: HeldConnect, out: &Out, advice: &str) -> String {
    let mut s = Reply::new("/meta/connect", true, held.id.as_deref())
        .str("clientId", &held.client)
        .raw("advice", advice)
        .into_open();
    let mut ext = Vec::new();
    if let Some(b) = out.batch {
        ext.push(format!("\"ack\":{b}"));
    }
    if out.dropped > 0 {
        ext.push(format!("\"dropped\":{}", out.dropped));
    }
    if let Some((t, at)) = held.timesync.as_deref().copied() {
        ext.push(format!("\"timesync\":{}", t.reply(at, now_ms() - at)));
    }
    if !ext.is_empty() {
        let _ = write!(s, ",\"ext\":{{{}}}", ext.join(","));
    }
    s.push('}');
    s
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

/// The full advice of every successful connect and handshake reply (the client replaces its
/// advice with what a message carries), built once per worker from the flags.
pub(super) fn advice(cfg: &crate::config::Config) -> String {
    format!(
        "{{\"reconnect\":\"retry\",\"interval\":0,\"timeout\":{},\"maxInterval\":{}}}",
        u64::from(cfg.bayeux_timeout) * 1000,
        u64::from(cfg.bayeux_max_interval) * 1000
    )
}

impl Worker {
    /// A request on `{bayeux_path}`: long-polling, callback-polling or a WebSocket upgrade.
    pub(super) fn bayeux_http(&mut self, idx: usize, head: &http::Head<'_>, body: &[u8]) {
        let keep_alive = head.keep_alive();
        let Some(origin) = self.check_origin(idx, head) else {
            return;
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
                let reply = format!(
                    "[{{\"successful\":false,\"error\":\"400::{}\"}}]",
                    e.message()
                );
                let resp = http::response(
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
        let ctx = Ctx {
            via: if callback.is_some() {
                Via::CallbackPolling
            } else {
                Via::LongPolling
            },
            browser: browser_cookie(head),
            arrival: now_ms(),
        };
        let batch = self.bayeux_batch(idx, &reqs, &ctx);
        let Some((held, secs)) = batch.hold else {
            let mut extra = cors;
            if let Some(c) = &batch.set_cookie {
                let _ = write!(extra, "Set-Cookie: {COOKIE}={c}; Path=/; HttpOnly\r\n");
            }
            return self.bayeux_answer(idx, &batch.out, callback, &extra, keep_alive);
        };
        WorkerStats::sub(&self.stats.conns_http, 1);
        WorkerStats::add(&self.stats.conns_bayeux_poll, 1);
        let before = batch
            .out
            .iter()
            .map(|p| String::from_utf8_lossy(p))
            .collect::<Vec<_>>()
            .join(",");
        let conn = &mut self.conns[idx];
        conn.phase = Phase::BayeuxPoll;
        conn.proto = Proto::Sub(SubState::new(0, origin, Format::Json));
        if keep_alive {
            conn.set(flag::KEEP_ALIVE);
        }
        conn.ext = Some(Box::new(Ext::Bayeux {
            held,
            before,
            callback: callback.map(Box::from),
            cors,
        }));
        conn.deadline = 0;
        let at = self.after(secs);
        self.set_deadline(idx, at);
    }

    /// Processes the messages of one request or frame in order.
    fn bayeux_batch(&mut self, idx: usize, reqs: &[Request], ctx: &Ctx) -> Batch {
        let mut b = Batch::default();
        // A handshake goes alone: the other messages of its request are ignored.
        if let Some(h) = reqs.iter().find(|r| r.channel == "/meta/handshake") {
            let (reply, cookie) = self.bayeux_handshake(idx, h, ctx);
            b.out.push(Bytes::from(reply));
            b.set_cookie = cookie;
            return b;
        }
        for (i, r) in reqs.iter().enumerate() {
            // Over HTTP a connect is held only when it is the last message of the request (its
            // reply must come last); over WebSocket replies travel on their own.
            let may_hold = ctx.via == Via::WebSocket || i + 1 == reqs.len();
            let reply = match r.channel.as_str() {
                "/meta/connect" => {
                    // Two connects in one frame: the first is answered (empty) before the
                    // second is held, so that every id gets its reply.
                    if let Some((prev, _)) = b.hold.take() {
                        b.out.push(Bytes::from(finish_connect(
                            prev,
                            &Out::default(),
                            &self.bayeux_advice,
                        )));
                    }
                    match self.bayeux_connect(idx, r, ctx, may_hold) {
                        ConnectOutcome::Now(parts) => {
                            b.out.extend(parts);
                            continue;
                        }
                        ConnectOutcome::Hold(held, secs, parts) => {
                            b.out.extend(parts);
                            b.hold = Some((held, secs));
                            continue;
                        }
                    }
                }
                "/meta/subscribe" | "/meta/unsubscribe" => self.bayeux_subscribe(idx, r, ctx),
                "/meta/disconnect" => {
                    // A connect held on this WebSocket (or just now in this frame) is answered
                    // before the disconnect: the client closes its socket only when the
                    // disconnect's reply finds no connect outstanding.
                    let held = b.hold.take().map(|(h, _)| h).or_else(|| {
                        (ctx.via == Via::WebSocket)
                            .then(|| self.ws_state(idx).and_then(|s| s.held.take()))
                            .flatten()
                            .map(|(h, _)| h)
                    });
                    if let Some(h) = held {
                        self.shared
                            .bayeux
                            .release(secs(), &h.client, self.waiter(idx));
                        let reply = finish_connect(h, &Out::default(), &self.bayeux_advice);
                        b.out.push(Bytes::from(reply));
                    }
                    self.bayeux_disconnect(idx, r, ctx)
                }
                c if bayeux::is_meta(c) => Reply::to(r, false)
                    .error(400, c, "unknown meta channel")
                    .finish(),
                "/service/echo" => match self.authorize(idx, r, ctx) {
                    // A remote call: the answer (same id, with data) and the plain publish
                    // reply (same id, no data), which the client needs to clear its timer.
                    Ok(_) => {
                        let data = r.data.as_deref().unwrap_or("null");
                        b.out
                            .push(Bytes::from(Reply::to(r, true).raw("data", data).finish()));
                        Reply::to(r, true).finish()
                    }
                    Err(reply) => reply,
                },
                _ => self.bayeux_publish(idx, r, ctx),
            };
            b.out.push(Bytes::from(reply));
        }
        b
    }

    fn waiter(&self, idx: usize) -> Waiter {
        Waiter {
            worker: self.id as u32,
            idx: idx as u32,
            generation: self.conns[idx].generation,
        }
    }

    /// The unsuccessful reply for an unknown client: `402::Unknown client`, advice handshake.
    fn unknown_client(&self, r: &Request) -> String {
        Reply::to(r, false)
            .error(402, "", "Unknown client")
            .raw("advice", "{\"reconnect\":\"handshake\",\"interval\":0}")
            .finish()
    }

    /// The client `r` acts for, if it may (see the module documentation); else the reply.
    fn authorize(&mut self, idx: usize, r: &Request, ctx: &Ctx) -> Result<String, String> {
        let Some(client) = r.client_id.as_deref() else {
            return Err(self.unknown_client(r));
        };
        let mut bind = false;
        if ctx.via == Via::WebSocket {
            match self.ws_state(idx).and_then(|s| s.client.as_deref()) {
                Some(bound) if bound != client => {
                    WorkerStats::add(&self.stats.bayeux_wrong_connection, 1);
                    return Err(self.unknown_client(r));
                }
                Some(_) => {}
                None => bind = true,
            }
        }
        if self
            .shared
            .bayeux
            .check(client, ctx.browser.as_deref())
            .is_err()
        {
            return Err(self.unknown_client(r));
        }
        if bind && let Some(s) = self.ws_state(idx) {
            s.client = Some(Box::from(client));
        }
        Ok(client.to_string())
    }

    fn ws_state(&mut self, idx: usize) -> Option<&mut BayeuxWs> {
        match self.conns.get_mut(idx)?.ext.as_deref_mut()? {
            Ext::BayeuxWs(s) => Some(s),
            _ => None,
        }
    }

    /// `ext.timesync` for the reply to a meta message, when the client sent one.
    fn with_timesync(rep: Reply, r: &Request, ctx: &Ctx, ack: bool) -> Reply {
        let mut ext = Vec::new();
        if ack {
            ext.push("\"ack\":true".to_string());
        }
        if let Some(t) = r.ext_timesync {
            ext.push(format!(
                "\"timesync\":{}",
                t.reply(ctx.arrival, now_ms() - ctx.arrival)
            ));
        }
        if ext.is_empty() {
            rep
        } else {
            rep.raw("ext", &format!("{{{}}}", ext.join(",")))
        }
    }

    /// The handshake reply, and the cookie to set (long- and callback-polling).
    fn bayeux_handshake(&mut self, idx: usize, r: &Request, ctx: &Ctx) -> (String, Option<String>) {
        let common = r.supported_connection_types.iter().any(|t| {
            matches!(
                t.as_str(),
                "websocket" | "long-polling" | "callback-polling"
            )
        });
        if !common {
            let reply = Reply::to(r, false)
                .error(400, "", "no common connection type")
                .raw("supportedConnectionTypes", TRANSPORTS)
                .raw("version", "\"1.0\"")
                .raw("advice", "{\"reconnect\":\"none\"}")
                .finish();
            return (reply, None);
        }
        let ack = r.ext_ack == Some(AckField::Enabled);
        let (browser, set_cookie) = match (ctx.via, &ctx.browser) {
            (_, Some(b)) => (Some(b.clone()), None),
            (Via::WebSocket, None) => (None, None),
            (_, None) => {
                let b = format!("{:032x}", random_u128());
                (Some(b.clone()), Some(b))
            }
        };
        match self
            .shared
            .bayeux
            .handshake(secs(), ack, browser.as_deref(), &mut random_u128)
        {
            Ok(id) => {
                if let Some(s) = self.ws_state(idx) {
                    s.client = Some(Box::from(id.as_str()));
                }
                let rep = Reply::to(r, true)
                    .str("clientId", &id)
                    .raw("version", "\"1.0\"")
                    .raw("minimumVersion", "\"1.0\"")
                    .raw("supportedConnectionTypes", TRANSPORTS)
                    .raw("advice", &self.bayeux_advice);
                (Self::with_timesync(rep, r, ctx, ack).finish(), set_cookie)
            }
            Err(_) => {
                let reply = Reply::to(r, false)
                    .error(503, "", "too many clients")
                    .raw("advice", "{\"reconnect\":\"handshake\",\"interval\":1000}")
                    .finish();
                (reply, None)
            }
        }
    }

    fn bayeux_connect(
        &mut self,
        idx: usize,
        r: &Request,
        ctx: &Ctx,
        may_hold: bool,
    ) -> ConnectOutcome {
        let client = match self.authorize(idx, r, ctx) {
            Ok(c) => c,
            Err(reply) => return ConnectOutcome::Now(vec![Bytes::from(reply)]),
        };
        let mut parts = Vec::new();
        // Over WebSocket a connect while another is held on the same connection ends that one
        // first (one outstanding connect per client).
        if ctx.via == Via::WebSocket
            && let Some((prev, _)) = self.ws_state(idx).and_then(|s| s.held.take())
        {
            let out = self
                .shared
                .bayeux
                .finish(secs(), &prev.client, self.waiter(idx));
            parts.extend(out.msgs.iter().cloned());
            parts.push(Bytes::from(finish_connect(prev, &out, &self.bayeux_advice)));
        }
        // `advice.timeout: 0` (the client's first connect) is answered at once; another
        // advised timeout shortens the hold (never beyond `--bayeux-timeout`).
        let secs = match r.advice_timeout {
            Some(ms) if ms > 0 => (ms.div_ceil(1000) as u32).clamp(1, self.cfg.bayeux_timeout),
            _ => self.cfg.bayeux_timeout,
        };
        let hold = may_hold && r.advice_timeout != Some(0) && secs > 0;
        let waiter = self.waiter(idx);
        let ack = match r.ext_ack {
            Some(AckField::Batch(n)) => Some(n),
            _ => None,
        };
        let held = HeldConnect {
            id: r.id.as_deref().map(Box::from),
            client: client.into_boxed_str(),
            timesync: r.ext_timesync.map(|t| Box::new((t, ctx.arrival))),
        };
        match self
            .shared
            .bayeux
            .connect(self::secs(), &held.client, hold.then_some(waiter), ack)
        {
            Err(_) => {
                parts.push(Bytes::from(self.unknown_client(r)));
                ConnectOutcome::Now(parts)
            }
            Ok(Connect::Now(out)) => {
                parts.extend(out.msgs.iter().cloned());
                parts.push(Bytes::from(finish_connect(held, &out, &self.bayeux_advice)));
                ConnectOutcome::Now(parts)
            }
            Ok(Connect::Held(previous)) => {
                if let Some(p) = previous.filter(|p| *p != waiter) {
                    self.bayeux_wake(p);
                }
                ConnectOutcome::Hold(held, secs, parts)
            }
        }
    }

    fn bayeux_subscribe(&mut self, idx: usize, r: &Request, ctx: &Ctx) -> String {
        let client = match self.authorize(idx, r, ctx) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let subscribe = r.channel == "/meta/subscribe";
        let subs_json = r.subscription_json.as_deref().unwrap_or("null");
        if r.subscriptions.is_empty() {
            return Reply::to(r, false)
                .str("clientId", &client)
                .error(400, "", "no subscription")
                .finish();
        }
        // Nothing on /service/** is broadcast: such a subscription succeeds and is not kept.
        let subs: Vec<String> = r
            .subscriptions
            .iter()
            .filter(|s| !bayeux::is_service(s))
            .cloned()
            .collect();
        let store = &self.shared.bayeux;
        let res = if subscribe {
            store.subscribe_all(
                &client,
                &subs,
                &mut tell_broker(self.shared.broker.get().map(|b| &**b)),
            )
        } else {
            store.unsubscribe_all(
                &client,
                &subs,
                &mut tell_broker(self.shared.broker.get().map(|b| &**b)),
            )
        };
        if let Err((e, s)) = res {
            let (code, why) = match e {
                Refusal::UnknownClient | Refusal::WrongBrowser => return self.unknown_client(r),
                Refusal::Forbidden => (403, "subscription not allowed"),
                Refusal::TooManySubscriptions => (403, "too many subscriptions"),
                Refusal::BadChannel | Refusal::TooManyClients => (400, "invalid subscription"),
            };
            return Reply::to(r, false)
                .str("clientId", &client)
                .raw("subscription", subs_json)
                .error(code, s, why)
                .finish();
        }
        let rep = Reply::to(r, true)
            .str("clientId", &client)
            .raw("subscription", subs_json);
        Self::with_timesync(rep, r, ctx, false).finish()
    }

    fn bayeux_disconnect(&mut self, idx: usize, r: &Request, ctx: &Ctx) -> String {
        let client = match self.authorize(idx, r, ctx) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        let broker = self.shared.broker.get().map(|b| &**b);
        let gone = self
            .shared
            .bayeux
            .disconnect(&client, &mut tell_broker(broker));
        match gone {
            Ok(waiter) => {
                if let Some(w) = waiter {
                    self.bayeux_wake(w);
                }
                let rep = Reply::to(r, true).str("clientId", &client);
                Self::with_timesync(rep, r, ctx, false).finish()
            }
            Err(_) => self.unknown_client(r),
        }
    }

    /// A message on a broadcast or service channel.
    fn bayeux_publish(&mut self, idx: usize, r: &Request, ctx: &Ctx) -> String {
        if let Err(reply) = self.authorize(idx, r, ctx) {
            return reply;
        }
        if !bayeux::valid_channel(&r.channel, self.cfg.max_channel_len + 1) {
            return Reply::to(r, false)
                .error(400, &r.channel, "invalid channel")
                .finish();
        }
        // Bayeux 1.0 §5.1: a publish carries `data` (JSON `null` is data; no field is none).
        let Some(data) = r.data.as_deref() else {
            return Reply::to(r, false)
                .error(400, &r.channel, "publish without data")
                .finish();
        };
        if bayeux::is_service(&r.channel) {
            // Not broadcast (`/service/echo` is answered in `bayeux_batch`).
            return Reply::to(r, true).finish();
        }
        let native = bayeux::native_name(&r.channel).to_string();
        match self.publish_message(&native, Bytes::copy_from_slice(data.as_bytes()), None) {
            Ok(_) | Err(PubError::Inbox(_)) => Reply::to(r, true).finish(),
            Err(PubError::Channels) => Reply::to(r, false)
                .error(503, &r.channel, "channel limit reached")
                .finish(),
            Err(PubError::Broker(_)) => Reply::to(r, false)
                .error(503, &r.channel, "broker unavailable")
                .finish(),
            Err(PubError::Draining) => Reply::to(r, false)
                .error(503, &r.channel, "server shutting down")
                .finish(),
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
    fn held_client(&self, idx: usize) -> Option<String> {
        let conn = self.conns.get(idx)?;
        match (conn.phase, conn.ext.as_deref()?) {
            (Phase::BayeuxPoll, Ext::Bayeux { held, .. }) => Some(held.client.to_string()),
            (Phase::BayeuxWs, Ext::BayeuxWs(s)) => {
                s.held.as_ref().map(|(h, _)| h.client.to_string())
            }
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
            if let Some(out) = self.shared.bayeux.take(secs(), &client, self.waiter(idx)) {
                self.bayeux_end_hold(idx, Some(out));
            }
        }
    }

    /// Ends the connect held on `idx`: with `out` (woken), or with whatever the store has for
    /// it now (timeout, interrupted, shutdown).
    pub(super) fn bayeux_end_hold(&mut self, idx: usize, out: Option<Out>) {
        let waiter = self.waiter(idx);
        let conn = &mut self.conns[idx];
        if conn.phase == Phase::BayeuxWs {
            let Some((held, _)) = self.ws_state(idx).and_then(|s| s.held.take()) else {
                return;
            };
            let out =
                out.unwrap_or_else(|| self.shared.bayeux.finish(secs(), &held.client, waiter));
            let mut parts: Vec<Bytes> = out.msgs.clone();
            parts.push(Bytes::from(finish_connect(held, &out, &self.bayeux_advice)));
            WorkerStats::add(&self.stats.messages_out, out.msgs.len() as u64);
            self.bayeux_ws_send(idx, &parts);
            if self.conns.contains(idx) && self.conns[idx].phase == Phase::BayeuxWs {
                self.bayeux_ws_arm(idx);
            }
            return;
        }
        let keep_alive = conn.has(flag::KEEP_ALIVE);
        let Some(Ext::Bayeux {
            held,
            before,
            callback,
            cors,
        }) = conn.ext.take().map(|b| *b)
        else {
            return;
        };
        let out = out.unwrap_or_else(|| self.shared.bayeux.finish(secs(), &held.client, waiter));
        self.back_to_http(idx);
        let mut parts: Vec<Bytes> = Vec::with_capacity(out.msgs.len() + 2);
        if !before.is_empty() {
            parts.push(Bytes::from(before));
        }
        parts.extend(out.msgs.iter().cloned());
        parts.push(Bytes::from(finish_connect(held, &out, &self.bayeux_advice)));
        WorkerStats::add(&self.stats.messages_out, out.msgs.len() as u64);
        self.bayeux_answer(idx, &parts, callback.as_deref(), &cors, keep_alive);
        self.keepalive_again(idx);
    }

    /// Expires idle Bayeux clients (worker 0, once a tick).
    pub(super) fn bayeux_sweep(&mut self) {
        let broker = self.shared.broker.get().map(|b| &**b);
        self.shared.bayeux.sweep(secs(), &mut tell_broker(broker));
    }

    /// A held connect's connection is closing or gone: the store forgets it.
    pub(super) fn bayeux_release(&mut self, idx: usize) {
        if let Some(client) = self.held_client(idx) {
            let waiter = self.waiter(idx);
            self.shared.bayeux.release(secs(), &client, waiter);
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
    /// let through: JSONP cannot be held to CORS; see the README.)
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
    ) {
        let resp = match callback {
            None => http::response(
                200,
                "OK",
                "application/json;charset=UTF-8",
                extra,
                &json_array(parts, "", ""),
                keep_alive,
            ),
            Some(cb) => http::response(
                200,
                "OK",
                "text/javascript;charset=UTF-8",
                &format!("{extra}X-Content-Type-Options: nosniff\r\n"),
                &json_array(parts, &format!("/**/{cb}("), ");"),
                keep_alive,
            ),
        };
        self.respond(idx, resp, keep_alive);
    }

    // ---- WebSocket --------------------------------------------------------------------------

    /// `GET {bayeux_path}` with an upgrade: the connection speaks Bayeux in text frames.
    fn bayeux_upgrade(&mut self, idx: usize, head: &http::Head<'_>) {
        let Some(resp) = self.accept_upgrade(idx, head) else {
            return;
        };
        WorkerStats::add(&self.stats.conns_bayeux_ws, 1);
        let conn = &mut self.conns[idx];
        conn.phase = Phase::BayeuxWs;
        conn.clear(flag::IN_REQUEST | flag::HEAD_DONE);
        conn.proto = Proto::Ws(WsReader::default());
        conn.ext = Some(Box::new(Ext::BayeuxWs(BayeuxWs {
            browser: browser_cookie(head).map(String::into_boxed_str),
            ..BayeuxWs::default()
        })));
        self.bayeux_ws_arm(idx);
        if self.send(idx, &[Bytes::from(resp)], false).is_err() {
            self.remove(idx);
        }
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
    pub(super) fn bayeux_ws_timeout(&mut self, idx: usize) {
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
        );
    }

    /// One complete text message from a Bayeux WebSocket client. Returns a close frame when
    /// the connection must end.
    pub(super) fn bayeux_ws_message(&mut self, idx: usize, mut payload: Vec<u8>) -> Option<Bytes> {
        let reqs = match bayeux::parse(&mut payload, self.cfg.bayeux_max_batch) {
            Ok(r) => r,
            Err(e) => {
                WorkerStats::add(&self.stats.bayeux_bad_requests, 1);
                return Some(frame::close_frame(close_code::POLICY, e.message()));
            }
        };
        WorkerStats::add(&self.stats.bayeux_messages_in, reqs.len() as u64);
        let ctx = Ctx {
            via: Via::WebSocket,
            browser: self
                .ws_state(idx)
                .and_then(|s| s.browser.as_deref().map(str::to_string)),
            arrival: now_ms(),
        };
        let batch = self.bayeux_batch(idx, &reqs, &ctx);
        if !self.conns.contains(idx) || self.conns[idx].phase != Phase::BayeuxWs {
            return None;
        }
        if !batch.out.is_empty() {
            self.bayeux_ws_send(idx, &batch.out);
        }
        if let Some((held, secs)) = batch.hold {
            let until = self.after(secs);
            if let Some(s) = self.ws_state(idx) {
                s.held = Some((held, until));
            }
        }
        if self.conns.contains(idx) && self.conns[idx].phase == Phase::BayeuxWs {
            self.bayeux_ws_arm(idx);
        }
        None
    }

    /// Sends `parts` as one text frame holding a JSON array.
    fn bayeux_ws_send(&mut self, idx: usize, parts: &[Bytes]) {
        let f = frame::frame(OP_TEXT, &json_array(parts, "", ""));
        if self.send(idx, &[f], false).is_err() {
            return self.remove(idx);
        }
        self.over_backlog(idx);
    }
}
