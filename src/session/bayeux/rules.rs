//! The Bayeux rules per message: what a handshake, connect, subscribe, unsubscribe,
//! disconnect, publish or `/service/echo` does to the store and what it answers. Every decision
//! of the protocol is here; the caller carries them out (see the module documentation of
//! [`super`]).
//!
//! Who may act for a clientId: over long- and callback-polling the handshake sets a
//! `BAYEUX_BROWSER` cookie (the caller writes it, HttpOnly) and the session is bound to it once
//! a request brings it back ([`Clients::check`]); a WebSocket connection acts for one client
//! only (the one it handshook, or the first one it names, [`Link::client`]); anything else is
//! answered `402` with advice `handshake`.
//!
//! Holds: a `/meta/connect` with nothing to deliver is held until its client has messages, the
//! connect is replaced by a newer one, or its timeout: the client's advised `timeout` if it
//! gave one, at most `--bayeux-timeout`; `advice.timeout: 0` (a client's first connect) is
//! answered at once. Over HTTP only the last message of a request may be held (its reply must
//! come last); a WebSocket holds one connect at a time and answers the previous one first.
//! Deliveries travel in connect replies only, which is what lets the ack extension number them
//! as batches.

use bytes::Bytes;

use super::reply::{TRANSPORTS, connect_reply, unknown_client, with_timesync};
use super::{
    Batch, ClientId, Clients, Connect, Ctx, Env, HeldConnect, Link, Now, Out, PublishRefusal,
    Refusal, Step, Via, Waiter,
};
use crate::auth::{Auth, Grant, TokenError, pattern, push};
use crate::proto::bayeux::{self, AckField, Reply, Request};

/// With subscribe tokens, a client whose token has less than this left (ms) is done: its hold
/// would have to end within a second, and every connect would come straight back.
const TOKEN_MIN_LEFT_MS: i64 = 2000;

/// The longest hold (seconds) that still ends before the token does, or `None` when the token
/// has (all but) ended. A hold of S seconds ends after more than S and at most S + 1 seconds.
fn hold_within(ends: u64, now_ms: i64) -> Option<u32> {
    let left = (ends as i64).saturating_mul(1000).saturating_sub(now_ms);
    (left >= TOKEN_MIN_LEFT_MS).then(|| (left / 1000 - 1).clamp(1, i64::from(u32::MAX)) as u32)
}

/// The rules over one store, with the settings they answer with.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub store: &'a Clients,
    /// The full advice of successful handshake and connect replies ([`super::advice`]).
    pub advice: &'a str,
    /// `--bayeux-timeout`: the longest hold of a connect, seconds (at least 1).
    pub timeout: u32,
    /// With subscribe tokens configured: the keys. A handshake then needs `ext.auth.token`, and
    /// what the client does is bounded by the token's grant and its end.
    pub auth: Option<&'a Auth>,
}

/// The messages of a request that take effect: a handshake goes alone (Bayeux 1.0: the other
/// messages of its request are ignored), else all of them, in order.
pub fn in_effect(reqs: &[Request]) -> &[Request] {
    match reqs.iter().find(|r| r.channel == "/meta/handshake") {
        Some(h) => std::slice::from_ref(h),
        None => reqs,
    }
}

impl Rules<'_> {
    /// One message of a batch (of [`in_effect`]); `last`: it is the batch's last. Its reply
    /// joins `b.out` unless it is a publish to perform ([`Step::Publish`]).
    pub fn message<'r>(
        &self,
        b: &mut Batch,
        link: &mut Link,
        r: &'r Request,
        last: bool,
        ctx: &Ctx<'_>,
        env: &mut dyn Env,
    ) -> Step<'r> {
        let reply = match r.channel.as_str() {
            "/meta/handshake" => {
                let (reply, cookie) = self.handshake(b, link, r, ctx, env);
                b.set_cookie = cookie;
                reply
            }
            "/meta/connect" => {
                // Two connects in one frame: the first is answered (empty) before the second
                // is held, so that every id gets its reply.
                if let Some((prev, _)) = b.hold.take() {
                    let reply = connect_reply(prev, &Out::default(), self.advice, ctx.now.unix_ms);
                    b.out.push(Bytes::from(reply));
                }
                // Over HTTP a connect is held only when it is the last message of the request
                // (its reply must come last); over WebSocket replies travel on their own.
                let may_hold = ctx.via == Via::WebSocket || last;
                self.connect(b, link, r, ctx, env, may_hold);
                return Step::Done;
            }
            "/meta/subscribe" | "/meta/unsubscribe" => self.subscribe(b, link, r, ctx, env),
            "/meta/disconnect" => {
                // A connect held on this WebSocket (or just now in this frame) is answered
                // before the disconnect: the client closes its socket only when the
                // disconnect's reply finds no connect outstanding.
                let held = b.hold.take().map(|(h, _)| h).or_else(|| link.held.take());
                if let Some(h) = held {
                    self.store.release(ctx.now.secs, h.client, ctx.waiter);
                    let reply = connect_reply(h, &Out::default(), self.advice, ctx.now.unix_ms);
                    b.out.push(Bytes::from(reply));
                }
                self.disconnect(b, link, r, ctx, env)
            }
            c if bayeux::is_meta(c) => Reply::to(r, false)
                .error(400, c, "unknown meta channel")
                .finish(),
            "/service/echo" => match self.authorize(b, link, r, ctx, env) {
                // A remote call: the answer (same id, with data) and the plain publish reply
                // (same id, no data), which the client needs to clear its timer.
                Ok(_) => {
                    let data = r.data.as_deref().unwrap_or("null");
                    b.out
                        .push(Bytes::from(Reply::to(r, true).raw("data", data).finish()));
                    Reply::to(r, true).finish()
                }
                Err(reply) => reply,
            },
            _ => return self.publish(b, link, r, ctx, env),
        };
        b.out.push(Bytes::from(reply));
        Step::Done
    }

    /// The outcome of a [`Step::Publish`] of `r`: its reply joins the batch.
    pub fn published(&self, b: &mut Batch, r: &Request, res: Result<(), PublishRefusal>) {
        let reply = match res {
            Ok(()) => Reply::to(r, true).finish(),
            Err(e) => {
                let why = match e {
                    PublishRefusal::ChannelLimit => "channel limit reached",
                    PublishRefusal::BrokerUnavailable => "broker unavailable",
                    PublishRefusal::Draining => "server shutting down",
                };
                Reply::to(r, false).error(503, &r.channel, why).finish()
            }
        };
        b.out.push(Bytes::from(reply));
    }

    /// The end of a connect held by `waiter`: `woken` (what [`Clients::take`] gave), else what
    /// the store has for it at `now` (timeout, interrupted, shutdown). Returns what its reply
    /// carries (the deliveries, to send first) and the reply.
    pub fn end_hold(
        &self,
        held: HeldConnect,
        waiter: Waiter,
        woken: Option<Out>,
        now: Now,
    ) -> (Out, Bytes) {
        let out = woken.unwrap_or_else(|| self.store.finish(now.secs, held.client, waiter));
        let reply = connect_reply(held, &out, self.advice, now.unix_ms);
        (out, Bytes::from(reply))
    }

    /// The client `r` acts for, if it may (see the module documentation); else the reply.
    fn authorize(
        &self,
        b: &mut Batch,
        link: &mut Link,
        r: &Request,
        ctx: &Ctx<'_>,
        env: &mut dyn Env,
    ) -> Result<String, String> {
        let client = self.authorize_client(b, link, r, ctx)?;
        // With tokens: a client whose token has ended is removed, and told so; it handshakes
        // again with a fresh token.
        if self.auth.is_some() {
            let ends = self.store.with_grant(&client, |g| g.map(|g| g.ends));
            if ends.is_none_or(|e| hold_within(e, ctx.now.unix_ms).is_none()) {
                if let Ok(w) = self.store.disconnect(&client, &mut |i| env.interest(i)) {
                    b.wake.extend(w);
                }
                b.tokens.expired += 1;
                return Err(Reply::to(r, false)
                    .error(401, "", TokenError::Expired.message())
                    .raw("advice", "{\"reconnect\":\"handshake\",\"interval\":0}")
                    .finish());
            }
        }
        Ok(client)
    }

    /// [`Rules::authorize`] without the token's end.
    fn authorize_client(
        &self,
        b: &mut Batch,
        link: &mut Link,
        r: &Request,
        ctx: &Ctx<'_>,
    ) -> Result<String, String> {
        let Some(client) = r.client_id.as_deref() else {
            return Err(unknown_client(r));
        };
        let mut bind = false;
        if ctx.via == Via::WebSocket {
            match link.client {
                Some(bound) if Some(bound) != ClientId::parse(client) => {
                    b.wrong_connection += 1;
                    return Err(unknown_client(r));
                }
                Some(_) => {}
                None => bind = true,
            }
        }
        if self.store.check(client, ctx.browser).is_err() {
            return Err(unknown_client(r));
        }
        if bind {
            link.client = ClientId::parse(client);
        }
        Ok(client.to_string())
    }

    /// The handshake reply, and the cookie to set (long- and callback-polling).
    fn handshake(
        &self,
        b: &mut Batch,
        link: &mut Link,
        r: &Request,
        ctx: &Ctx<'_>,
        env: &mut dyn Env,
    ) -> (String, Option<String>) {
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
        let grant = match self.auth {
            None => None,
            Some(auth) => match self.verify_token(auth, r, ctx) {
                Ok(g) => Some(g),
                Err(e) => {
                    b.tokens.refused = Some(e);
                    let reply = Reply::to(r, false)
                        .error(401, "", e.message())
                        .raw("advice", "{\"reconnect\":\"none\"}")
                        .finish();
                    return (reply, None);
                }
            },
        };
        let ack = r.ext_ack == Some(AckField::Enabled);
        let (browser, set_cookie) = match (ctx.via, ctx.browser) {
            (_, Some(b)) => (Some(b.to_string()), None),
            (Via::WebSocket, None) => (None, None),
            (_, None) => {
                let b = super::ids::hex(env.random());
                (Some(b.clone()), Some(b))
            }
        };
        let mut random = || env.random();
        let accepted = grant.is_some();
        match self
            .store
            .handshake(ctx.now.secs, ack, browser.as_deref(), grant, &mut random)
        {
            Ok(id) => {
                if accepted {
                    b.tokens.accepted += 1;
                }
                if ctx.via == Via::WebSocket {
                    link.client = ClientId::parse(&id);
                }
                let rep = Reply::to(r, true)
                    .str("clientId", &id)
                    .raw("version", "\"1.0\"")
                    .raw("minimumVersion", "\"1.0\"")
                    .raw("supportedConnectionTypes", TRANSPORTS)
                    .raw("advice", self.advice);
                (
                    with_timesync(rep, r, ctx.now.unix_ms, ack).finish(),
                    set_cookie,
                )
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

    /// The handshake's `ext.auth.token`, checked at the request's time: its grant, or why not.
    fn verify_token(&self, auth: &Auth, r: &Request, ctx: &Ctx<'_>) -> Result<Grant, TokenError> {
        let token = r.ext_auth_token.as_deref().unwrap_or("");
        let now_ms = ctx.now.unix_ms;
        let g = auth.verify(token, u64::try_from(now_ms / 1000).unwrap_or(0))?;
        // A token about to end would end the session at once (see `hold_within`).
        if hold_within(g.ends, now_ms).is_none() {
            return Err(TokenError::Expired);
        }
        Ok(g)
    }

    fn connect(
        &self,
        b: &mut Batch,
        link: &mut Link,
        r: &Request,
        ctx: &Ctx<'_>,
        env: &mut dyn Env,
        may_hold: bool,
    ) {
        let client = match self.authorize(b, link, r, ctx, env) {
            Ok(c) => c,
            Err(reply) => return b.out.push(Bytes::from(reply)),
        };
        let now = ctx.now;
        // Over WebSocket a connect while another is held on the same connection ends that one
        // first (one outstanding connect per client).
        if ctx.via == Via::WebSocket
            && let Some(prev) = link.held.take()
        {
            let (out, reply) = self.end_hold(prev, ctx.waiter, None, now);
            b.out.extend(out.msgs);
            b.out.push(reply);
        }
        // `advice.timeout: 0` (the client's first connect) is answered at once; another
        // advised timeout shortens the hold (never beyond `--bayeux-timeout`).
        let mut secs = match r.advice_timeout {
            Some(ms) if ms > 0 => (ms.div_ceil(1000) as u32).clamp(1, self.timeout.max(1)),
            _ => self.timeout,
        };
        // With a token, the hold ends before the token does (`authorize` made sure there is
        // time for one).
        if self.auth.is_some()
            && let Some(within) = self.store.with_grant(&client, |g| {
                g.and_then(|g| hold_within(g.ends, now.unix_ms))
            })
        {
            secs = secs.min(within);
        }
        let hold = may_hold && r.advice_timeout != Some(0) && secs > 0;
        let ack = match r.ext_ack {
            Some(AckField::Batch(n)) => Some(n),
            _ => None,
        };
        // `authorize` found the client, so `client` is an id.
        let Some(id) = ClientId::parse(&client) else {
            return b.out.push(Bytes::from(unknown_client(r)));
        };
        let held = HeldConnect {
            id: r.id.as_deref().map(Box::from),
            client: id,
            timesync: r.ext_timesync.map(|t| Box::new((t, now.unix_ms))),
        };
        let waiter = ctx.waiter;
        match self
            .store
            .connect(now.secs, &client, hold.then_some(waiter), ack)
        {
            Err(_) => b.out.push(Bytes::from(unknown_client(r))),
            Ok(Connect::Now(out)) => {
                b.out.extend(out.msgs.iter().cloned());
                let reply = connect_reply(held, &out, self.advice, now.unix_ms);
                b.out.push(Bytes::from(reply));
            }
            Ok(Connect::Held(previous)) => {
                if let Some(p) = previous.filter(|p| *p != waiter) {
                    b.wake.push(p);
                }
                b.hold = Some((held, secs));
            }
        }
    }

    fn subscribe(
        &self,
        b: &mut Batch,
        link: &mut Link,
        r: &Request,
        ctx: &Ctx<'_>,
        env: &mut dyn Env,
    ) -> String {
        let client = match self.authorize(b, link, r, ctx, env) {
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
        // With tokens, a subscription the token does not cover is refused (an unsubscribe
        // never is).
        if subscribe && self.auth.is_some() {
            let denied = self.store.with_grant(&client, |g| {
                subs.iter()
                    .find(|s| !g.is_some_and(|g| grant_covers(g, s)))
                    .cloned()
            });
            if let Some(s) = denied {
                b.tokens.channel += 1;
                return Reply::to(r, false)
                    .str("clientId", &client)
                    .raw("subscription", subs_json)
                    .error(403, &s, TokenError::Channel.message())
                    .finish();
            }
        }
        let mut interest = |i: super::Interest<'_>| env.interest(i);
        let res = if subscribe {
            self.store.subscribe_all(&client, &subs, &mut interest)
        } else {
            self.store.unsubscribe_all(&client, &subs, &mut interest)
        };
        if let Err((e, s)) = res {
            let (code, why) = match e {
                Refusal::UnknownClient | Refusal::WrongBrowser => return unknown_client(r),
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
        with_timesync(rep, r, ctx.now.unix_ms, false).finish()
    }

    fn disconnect(
        &self,
        b: &mut Batch,
        link: &mut Link,
        r: &Request,
        ctx: &Ctx<'_>,
        env: &mut dyn Env,
    ) -> String {
        let client = match self.authorize_client(b, link, r, ctx) {
            Ok(c) => c,
            Err(reply) => return reply,
        };
        match self.store.disconnect(&client, &mut |i| env.interest(i)) {
            Ok(waiter) => {
                b.wake.extend(waiter);
                let rep = Reply::to(r, true).str("clientId", &client);
                with_timesync(rep, r, ctx.now.unix_ms, false).finish()
            }
            Err(_) => unknown_client(r),
        }
    }

    /// A message on a broadcast or service channel: the publish to perform, or its reply.
    fn publish<'r>(
        &self,
        b: &mut Batch,
        link: &mut Link,
        r: &'r Request,
        ctx: &Ctx<'_>,
        env: &mut dyn Env,
    ) -> Step<'r> {
        let reply = match self.authorize(b, link, r, ctx, env) {
            Err(reply) => reply,
            // With tokens, a broadcast publish needs the channel in the token's `publish`
            // (a private push channel: knowing it is enough; `/service/**` is not broadcast).
            Ok(client)
                if self.auth.is_some()
                    && !bayeux::is_service(&r.channel)
                    && !push::valid_private(bayeux::native_name(&r.channel))
                    && !self.store.with_grant(&client, |g| {
                        g.is_some_and(|g| g.may_publish(bayeux::native_name(&r.channel)))
                    }) =>
            {
                b.tokens.channel += 1;
                Reply::to(r, false)
                    .error(
                        403,
                        &r.channel,
                        "the token does not allow publishing to this channel",
                    )
                    .finish()
            }
            Ok(_) if !bayeux::valid_channel(&r.channel, self.store.limits().max_channel_len) => {
                Reply::to(r, false)
                    .error(400, &r.channel, "invalid channel")
                    .finish()
            }
            // Bayeux 1.0 §5.1: a publish carries `data` (JSON `null` is data; no field is none).
            Ok(_) => match r.data.as_deref() {
                None => Reply::to(r, false)
                    .error(400, &r.channel, "publish without data")
                    .finish(),
                // Not broadcast (`/service/echo` is answered in `message`).
                Some(_) if bayeux::is_service(&r.channel) => Reply::to(r, true).finish(),
                Some(data) => {
                    return Step::Publish {
                        native: bayeux::native_name(&r.channel),
                        data,
                    };
                }
            },
        };
        b.out.push(Bytes::from(reply));
        Step::Done
    }
}

/// Whether a grant covers a Bayeux subscription: a private push channel by its exact name
/// needs no grant (knowing it is the permission); anything else must be covered by one of the
/// token's `channels` patterns.
fn grant_covers(g: &Grant, sub: &str) -> bool {
    push::valid_private(bayeux::native_name(sub))
        || g.channel_patterns()
            .any(|p| pattern::covers_subscription(p, sub))
}
