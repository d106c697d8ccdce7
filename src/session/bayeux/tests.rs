//! The Bayeux meta flow driven through the rules without a socket or a sleep: the tests pass
//! the time, the random bits and a stand-in for the hub (a publish goes straight to the store's
//! `deliver`, as the hub's deliver step does), and read the replies as JSON.

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use crate::proto::bayeux::{delivery, parse};

const ADVICE: &str = r#"{"reconnect":"retry","interval":0,"timeout":30000,"maxInterval":10000}"#;

/// Random bits 1, 2, 3, ...; the changes of interest as `+sub` / `-sub`.
#[derive(Default)]
struct TestEnv {
    drawn: u128,
    interest: Vec<String>,
}

impl Env for TestEnv {
    fn random(&mut self) -> u128 {
        self.drawn += 1;
        self.drawn
    }

    fn interest(&mut self, change: Interest<'_>) {
        self.interest.push(match change {
            Interest::First(s) => format!("+{s}"),
            Interest::Last(s) => format!("-{s}"),
        });
    }
}

/// One store, its rules, and everything the caller would keep: the clock, the env, the hub's
/// message ids and the wakes the hub's deliver step returned.
struct World {
    store: Clients,
    env: TestEnv,
    now: Now,
    next_id: u64,
    woken: Vec<Waiter>,
    /// Subscribe tokens (`None`: open).
    auth: Option<crate::auth::Auth>,
}

fn world() -> World {
    World {
        store: Clients::new(BayeuxLimits {
            max_queue: 100,
            max_interval: 10,
            max_clients: 100,
            max_channel_len: 256,
            root_wildcards: false,
            max_subscriptions: 10,
        }),
        env: TestEnv::default(),
        now: Now {
            secs: 0,
            unix_ms: 1_000_000,
        },
        next_id: 1,
        woken: Vec::new(),
        auth: None,
    }
}

/// A connection: its transport, cookie, slot, and (WebSocket) what it carries between frames.
struct Conn {
    via: Via,
    browser: Option<String>,
    waiter: Waiter,
    link: Link,
}

fn conn(via: Via, idx: u32) -> Conn {
    Conn {
        via,
        browser: None,
        waiter: Waiter {
            worker: 0,
            idx,
            generation: 1,
        },
        link: Link::default(),
    }
}

impl World {
    fn rules(&self) -> Rules<'_> {
        Rules {
            store: &self.store,
            advice: ADVICE,
            timeout: 30,
            auth: self.auth.as_ref(),
        }
    }

    /// The caller's loop: the messages in effect, in order; publishes delivered to the store
    /// as the hub would, once, with the next id.
    fn send(&mut self, c: &mut Conn, json: Value) -> Batch {
        let mut body = json.to_string().into_bytes();
        let reqs = parse(&mut body, 100).unwrap();
        let ctx = Ctx {
            via: c.via,
            browser: c.browser.as_deref(),
            now: self.now,
            waiter: c.waiter,
        };
        let rules = Rules {
            store: &self.store,
            advice: ADVICE,
            timeout: 30,
            auth: self.auth.as_ref(),
        };
        let reqs = in_effect(&reqs);
        let mut b = Batch::default();
        for (i, r) in reqs.iter().enumerate() {
            let last = i + 1 == reqs.len();
            if let Step::Publish { native, data } =
                rules.message(&mut b, &mut c.link, r, last, &ctx, &mut self.env)
            {
                let id = self.next_id;
                self.next_id += 1;
                let d = delivery(&format!("/{native}"), data, id);
                let woken = self.store.deliver(native, || Bytes::from(d));
                self.woken.extend(woken);
                rules.published(&mut b, r, Ok(()));
            }
        }
        b
    }

    /// The caller's wake of a held connect: the store says whether it ends, the rules write
    /// the reply.
    fn wake(&self, held: HeldConnect, waiter: Waiter) -> Vec<Value> {
        let out = self.store.take(self.now.secs, held.client, waiter);
        assert!(out.is_some(), "woken with something to deliver");
        let (out, reply) = self.rules().end_hold(held, waiter, out, self.now);
        json_of(&out.msgs)
            .into_iter()
            .chain([one(&reply)])
            .collect()
    }

    fn handshake(&mut self, c: &mut Conn, ext: Value) -> String {
        let b = self.send(
            c,
            json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
                "supportedConnectionTypes": ["long-polling", "websocket"], "ext": ext}]),
        );
        if let Some(cookie) = b.set_cookie.clone() {
            c.browser = Some(cookie);
        }
        let r = replies(&b);
        assert_eq!(r[0]["successful"], true, "{r:?}");
        r[0]["clientId"].as_str().unwrap().to_string()
    }
}

fn one(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap()
}

fn json_of(parts: &[Bytes]) -> Vec<Value> {
    parts.iter().map(one).collect()
}

fn replies(b: &Batch) -> Vec<Value> {
    json_of(&b.out)
}

fn connect(client: &str, ext: Value) -> Value {
    json!({"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling",
        "id": "c", "ext": ext})
}

fn first_connect(client: &str) -> Value {
    json!({"channel": "/meta/connect", "clientId": client, "connectionType": "long-polling",
        "advice": {"timeout": 0}})
}

#[test]
fn meta_flow_handshake_subscribe_held_connect_publish_release() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    let b = w.send(
        &mut c,
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
            "supportedConnectionTypes": ["long-polling"]},
            {"channel": "/meta/connect", "clientId": "ignored"}]),
    );
    // The cookie and the id are the first two random draws; the connect in the same request
    // is ignored (a handshake goes alone).
    assert_eq!(b.set_cookie.as_deref(), Some(&*ids::hex(1)));
    let r = replies(&b);
    assert_eq!(r.len(), 1);
    let id = ids::hex(2);
    assert_eq!(r[0]["clientId"], id.as_str());
    assert_eq!(
        r[0]["advice"],
        serde_json::from_str::<Value>(ADVICE).unwrap()
    );
    assert_eq!(
        r[0]["supportedConnectionTypes"].as_array().unwrap().len(),
        3
    );
    c.browser = b.set_cookie;

    let b = w.send(
        &mut c,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/chat/*",
            "id": "s"}]),
    );
    assert_eq!(replies(&b)[0]["successful"], true);
    assert_eq!(
        w.env.interest,
        ["+/chat/*"],
        "the broker hears of the first client"
    );

    // The first connect (advice timeout 0) is answered at once; the next one is held.
    let b = w.send(&mut c, json!([first_connect(&id)]));
    assert!(b.hold.is_none());
    assert_eq!(replies(&b)[0]["successful"], true);
    let b = w.send(&mut c, json!([connect(&id, json!({}))]));
    assert!(b.out.is_empty());
    let (held, secs) = b.hold.unwrap();
    assert_eq!(secs, 30, "--bayeux-timeout without an advised timeout");

    // A publish from another connection of the same browser: delivered to the store, which
    // names the held connect to wake.
    let mut p = conn(Via::LongPolling, 2);
    p.browser = c.browser.clone();
    let b = w.send(
        &mut p,
        json!([{"channel": "/chat/room", "clientId": id, "data": {"text": "hi"}, "id": "p"}]),
    );
    assert_eq!(
        replies(&b)[0],
        json!({"channel": "/chat/room", "successful": true, "id": "p"})
    );
    assert_eq!(w.woken, [c.waiter]);

    // The wake ends the hold with the delivery, then the connect's reply.
    let out = w.wake(held, c.waiter);
    assert_eq!(
        out[0],
        json!({"channel": "/chat/room", "data": {"text": "hi"}, "id": "1"})
    );
    assert_eq!(out[1]["channel"], "/meta/connect");
    assert_eq!(out[1]["id"], "c");
    assert_eq!(out[1]["successful"], true);
    assert_eq!(out[1]["clientId"], id.as_str());

    // Disconnect: gone from the index, the broker hears of the last client.
    let b = w.send(
        &mut c,
        json!([{"channel": "/meta/disconnect", "clientId": id}]),
    );
    assert_eq!(replies(&b)[0]["successful"], true);
    assert_eq!(w.env.interest, ["+/chat/*", "-/chat/*"]);
    assert!(!w.store.exists(&id));
}

#[test]
fn a_connect_is_held_over_http_only_as_the_last_message() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    let id = w.handshake(&mut c, json!({}));
    let b = w.send(
        &mut c,
        json!([connect(&id, json!({})), {"channel": "/meta/subscribe", "clientId": id,
            "subscription": "/a"}]),
    );
    assert!(b.hold.is_none());
    let r = replies(&b);
    assert_eq!(
        (r[0]["channel"].as_str(), r[1]["channel"].as_str()),
        (Some("/meta/connect"), Some("/meta/subscribe"))
    );
}

#[test]
fn ack_batches_go_again_until_acknowledged() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    let id = w.handshake(&mut c, json!({"ack": true}));
    w.send(
        &mut c,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/x"}]),
    );
    let b = w.send(&mut c, json!([connect(&id, json!({"ack": 0}))]));
    let (held, _) = b.hold.unwrap();
    w.send(
        &mut c,
        json!([{"channel": "/x", "clientId": id, "data": 1}]),
    );
    let out = w.wake(held, c.waiter);
    assert_eq!(out[0]["data"], 1);
    assert_eq!(out[1]["ext"]["ack"], 1, "batch 1");

    // Batch 1 never arrived: the client acknowledges 0, and gets it again with what is new.
    w.send(
        &mut c,
        json!([{"channel": "/x", "clientId": id, "data": 2}]),
    );
    let b = w.send(&mut c, json!([connect(&id, json!({"ack": 0}))]));
    assert!(b.hold.is_none(), "something to deliver: answered at once");
    let r = replies(&b);
    let data: Vec<&Value> = r[..2].iter().map(|m| &m["data"]).collect();
    assert_eq!(data, [&json!(1), &json!(2)]);
    assert_eq!(r[2]["ext"]["ack"], 2);

    // Once acknowledged, nothing goes twice: the connect is held.
    let b = w.send(&mut c, json!([connect(&id, json!({"ack": 2}))]));
    assert!(b.out.is_empty() && b.hold.is_some());
    assert_eq!(
        w.store
            .stats
            .unacked
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_client_that_does_not_connect_for_max_interval_expires() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    let id = w.handshake(&mut c, json!({}));
    w.send(
        &mut c,
        json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": ["/a", "/b/**"]}]),
    );
    w.now.secs = 5;
    w.send(&mut c, json!([first_connect(&id)]));
    // maxInterval is 10 s from the last connect (at 5): not yet at 15, gone at 16.
    w.store.sweep(15, &mut |i| w.env.interest(i));
    assert!(w.store.exists(&id));
    w.store.sweep(16, &mut |i| w.env.interest(i));
    assert!(!w.store.exists(&id));
    assert_eq!(w.env.interest, ["+/a", "+/b/**", "-/a", "-/b/**"]);
    assert_eq!(
        w.store
            .stats
            .subscriptions
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Its next connect is told to handshake again.
    w.now.secs = 16;
    let r = replies(&w.send(&mut c, json!([connect(&id, json!({}))])));
    assert_eq!(r[0]["error"], "402::Unknown client");
    assert_eq!(r[0]["advice"]["reconnect"], "handshake");
    // A publish reaches no one.
    assert!(
        w.store
            .deliver("a", || unreachable!("nobody subscribed"))
            .is_empty()
    );
}

#[test]
fn a_held_connect_keeps_its_client_alive() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    let id = w.handshake(&mut c, json!({}));
    assert!(
        w.send(&mut c, json!([connect(&id, json!({}))]))
            .hold
            .is_some()
    );
    w.store.sweep(100, &mut |i| w.env.interest(i));
    assert!(w.store.exists(&id));
}

fn is_refused(r: &Value) {
    assert_eq!(r["successful"], false, "{r}");
    assert_eq!(r["error"], "402::Unknown client", "{r}");
    assert_eq!(r["advice"]["reconnect"], "handshake", "{r}");
}

#[test]
fn another_browser_cannot_act_for_a_client() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    let id = w.handshake(&mut c, json!({}));
    let sub = json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": "/a"}]);
    // Another cookie is refused at once, even before the session is bound.
    let mut other = conn(Via::LongPolling, 2);
    other.browser = Some(ids::hex(0xbad));
    is_refused(&replies(&w.send(&mut other, sub.clone()))[0]);
    // The cookie comes back: bound; from now on a request without it is refused too.
    assert_eq!(replies(&w.send(&mut c, sub.clone()))[0]["successful"], true);
    let mut bare = conn(Via::LongPolling, 3);
    is_refused(&replies(&w.send(&mut bare, sub.clone()))[0]);
    is_refused(&replies(&w.send(&mut bare, json!([connect(&id, json!({}))])))[0]);
    assert_eq!(
        w.store
            .stats
            .wrong_browser
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[test]
fn a_websocket_acts_for_one_client() {
    let mut w = world();
    let mut a = conn(Via::WebSocket, 1);
    let mut b = conn(Via::WebSocket, 2);
    let x = w.handshake(&mut a, json!({}));
    let y = w.handshake(&mut b, json!({}));
    assert!(a.browser.is_none(), "no cookie over WebSocket");
    assert_eq!(a.link.client, ClientId::parse(&x));
    // b handshook y: a message for x on it is refused and counted.
    let batch = w.send(&mut b, json!([connect(&x, json!({}))]));
    is_refused(&replies(&batch)[0]);
    assert_eq!(batch.wrong_connection, 1);
    // A new connection naming x (a reconnect without a handshake) acts for x from then on.
    let mut c = conn(Via::WebSocket, 3);
    let batch = w.send(&mut c, json!([first_connect(&x)]));
    assert_eq!(replies(&batch)[0]["successful"], true);
    assert_eq!(c.link.client, ClientId::parse(&x));
    let batch = w.send(&mut c, json!([first_connect(&y)]));
    is_refused(&replies(&batch)[0]);
}

#[test]
fn a_websocket_answers_its_held_connect_before_the_next() {
    let mut w = world();
    let mut c = conn(Via::WebSocket, 1);
    let id = w.handshake(&mut c, json!({}));
    let b = w.send(&mut c, json!([connect(&id, json!({}))]));
    // The caller keeps the hold in the connection's link between frames.
    c.link.held = b.hold.map(|(h, _)| h);
    let b = w.send(&mut c, json!([connect(&id, json!({}))]));
    let r = replies(&b);
    assert_eq!(r.len(), 1, "the earlier connect answered, empty");
    assert_eq!(r[0]["channel"], "/meta/connect");
    assert!(b.hold.is_some() && c.link.held.is_none());
    assert!(b.wake.is_empty(), "the same connection: nothing to wake");
    // A disconnect answers the held connect first.
    c.link.held = b.hold.map(|(h, _)| h);
    let b = w.send(
        &mut c,
        json!([{"channel": "/meta/disconnect", "clientId": id}]),
    );
    let r = replies(&b);
    assert_eq!(r[0]["channel"], "/meta/connect");
    assert_eq!(r[1]["channel"], "/meta/disconnect");
}

#[test]
fn a_newer_connect_on_another_connection_wakes_the_held_one() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    let id = w.handshake(&mut c, json!({}));
    assert!(
        w.send(&mut c, json!([connect(&id, json!({}))]))
            .hold
            .is_some()
    );
    let mut d = conn(Via::LongPolling, 2);
    d.browser = c.browser.clone();
    let b = w.send(&mut d, json!([connect(&id, json!({}))]));
    assert_eq!(b.wake, [c.waiter]);
    // The replaced hold ends empty.
    assert_eq!(
        w.store.take(0, ClientId::parse(&id).unwrap(), c.waiter),
        Some(Out::default())
    );
}

#[test]
fn timesync_is_computed_from_the_given_now() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    w.now.unix_ms = 2_000;
    let ts = json!({"timesync": {"tc": 1_000, "l": 20, "o": 5}});
    let b = w.send(
        &mut c,
        json!([{"channel": "/meta/handshake", "version": "1.0",
            "supportedConnectionTypes": ["long-polling"], "ext": ts}]),
    );
    let r = replies(&b);
    // a = tc + o + l - ts = 1000 + 5 + 20 - 2000
    assert_eq!(
        r[0]["ext"]["timesync"],
        json!({"tc": 1_000, "ts": 2_000, "p": 0, "a": -975})
    );
    c.browser = b.set_cookie;
    let id = r[0]["clientId"].as_str().unwrap().to_string();
    // A held connect: `ts` is its arrival, `p` the time it was held.
    let b = w.send(&mut c, json!([connect(&id, ts)]));
    let (held, _) = b.hold.unwrap();
    w.now = Now {
        secs: 1,
        unix_ms: 2_750,
    };
    let (_, reply) = w.rules().end_hold(held, c.waiter, None, w.now);
    assert_eq!(
        one(&reply)["ext"]["timesync"],
        json!({"tc": 1_000, "ts": 2_000, "p": 750, "a": -975})
    );
}

#[test]
fn publishes_are_refused_as_the_caller_reports() {
    let mut w = world();
    let mut c = conn(Via::LongPolling, 1);
    let id = w.handshake(&mut c, json!({}));
    let mut body = json!([{"channel": "/a", "clientId": id, "data": "x", "id": 5},
        {"channel": "/a", "clientId": id},
        {"channel": "/service/other", "clientId": id, "data": 1},
        {"channel": "/service/echo", "clientId": id, "data": {"k": 1}, "id": 6}])
    .to_string()
    .into_bytes();
    let reqs = parse(&mut body, 10).unwrap();
    let ctx = Ctx {
        via: c.via,
        browser: c.browser.as_deref(),
        now: w.now,
        waiter: c.waiter,
    };
    let rules = Rules {
        store: &w.store,
        advice: ADVICE,
        timeout: 30,
        auth: None,
    };
    let mut b = Batch::default();
    let step = rules.message(&mut b, &mut c.link, &reqs[0], false, &ctx, &mut w.env);
    assert_eq!(
        step,
        Step::Publish {
            native: "a",
            data: "\"x\""
        }
    );
    rules.published(&mut b, &reqs[0], Err(PublishRefusal::BrokerUnavailable));
    for r in &reqs[1..] {
        assert_eq!(
            rules.message(&mut b, &mut c.link, r, false, &ctx, &mut w.env),
            Step::Done
        );
    }
    let r = replies(&b);
    assert_eq!(r[0]["error"], "503:/a:broker unavailable");
    assert_eq!(r[0]["id"], 5);
    assert_eq!(r[1]["error"], "400:/a:publish without data");
    assert_eq!(r[2]["successful"], true, "a service channel: not broadcast");
    assert_eq!(r[3]["data"], json!({"k": 1}), "echoed");
    assert_eq!(
        r[4],
        json!({"channel": "/service/echo", "successful": true, "id": 6})
    );
}

/// Subscribe tokens: the handshake's `ext.auth.token` is required and checked at the request's
/// time; subscribes and publishes stay inside the grant; the hold ends before the token; a
/// client whose token ended is removed and told 401.
#[test]
fn tokens_bound_what_a_client_may_do_and_for_how_long() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    const SECRET: &str = "bayeux-token-secret-0123456789abcdef";
    let mut w = world();
    w.auth = Some(
        crate::auth::Auth::load(&crate::auth::Sources {
            token_secrets: vec![SECRET.into()],
            ..Default::default()
        })
        .unwrap(),
    );
    let now_s = (w.now.unix_ms / 1000) as u64;
    let token = |claims: Value| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let mut c = conn(Via::WebSocket, 1);
    let hs = |tok: Option<String>| {
        let ext = match tok {
            Some(t) => json!({"auth": {"token": t}}),
            None => json!({}),
        };
        json!([{"channel": "/meta/handshake", "version": "1.0", "id": "1",
            "supportedConnectionTypes": ["websocket"], "ext": ext}])
    };
    // Refused handshakes: none, expired, bad signature. Nothing is made.
    for (tok, why) in [
        (None, "a token is required"),
        (
            Some(token(json!({"exp": now_s - 1, "channels": ["a"]}))),
            "token expired",
        ),
        (
            Some(format!("{}x", token(json!({"exp": now_s + 60})))),
            "bad token signature",
        ),
    ] {
        let b = w.send(&mut c, hs(tok));
        let r = &replies(&b)[0];
        assert_eq!(r["successful"], false);
        assert!(r["error"].as_str().unwrap().starts_with("401::"), "{r}");
        assert!(r["error"].as_str().unwrap().contains(why), "{r}");
        assert_eq!(r["advice"]["reconnect"], "none");
        assert!(b.tokens.refused.is_some());
    }
    assert_eq!(w.store.stats.snapshot()[0], ("bayeux_clients", 0));
    // A token for chat/* that may publish on chat/room, ending in 10 s.
    let b = w.send(
        &mut c,
        hs(Some(token(json!({"exp": now_s + 10, "sub": "u1",
            "channels": ["chat/*"], "publish": "chat/room"})))),
    );
    let id = replies(&b)[0]["clientId"].as_str().unwrap().to_string();
    assert_eq!(b.tokens.accepted, 1);
    let sub = |id: &str, s: &str| json!([{"channel": "/meta/subscribe", "clientId": id, "subscription": s, "id": "s"}]);
    for ok in ["/chat/room", "/chat/*"] {
        assert_eq!(
            replies(&w.send(&mut c, sub(&id, ok)))[0]["successful"],
            true,
            "{ok}"
        );
    }
    for no in ["/chat/**", "/other", "/chat/a/b"] {
        let b = w.send(&mut c, sub(&id, no));
        let r = &replies(&b)[0];
        assert_eq!(r["successful"], false, "{no}");
        assert_eq!(
            r["error"],
            format!("403:{no}:the token does not grant this channel")
        );
        assert_eq!(b.tokens.channel, 1);
    }
    // A private push channel by its exact name needs no grant.
    let private = "/~push/0123456789abcdef0123456789abcdef";
    assert_eq!(
        replies(&w.send(&mut c, sub(&id, private)))[0]["successful"],
        true
    );
    // Publishing: only chat/room.
    let publish = |ch: &str| json!([{"channel": ch, "clientId": id, "data": 1, "id": "p"}]);
    assert_eq!(
        replies(&w.send(&mut c, publish("/chat/room")))[0]["successful"],
        true
    );
    let b = w.send(&mut c, publish("/chat/other"));
    assert!(
        replies(&b)[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("403:/chat/other:")
    );
    // A connect is held at most until just before the token ends: 10 s left → 9 s (the
    // first connect takes what the publish queued).
    let b = w.send(&mut c, json!([connect(&id, json!({}))]));
    assert!(
        b.hold.is_none() && replies(&b).len() == 2,
        "{:?}",
        replies(&b)
    );
    let b = w.send(&mut c, json!([connect(&id, json!({}))]));
    assert_eq!(b.hold.as_ref().unwrap().1, 9);
    // 8.5 s later, less than 2 s are left: the client is done.
    w.now.unix_ms += 8_500;
    w.now.secs += 8;
    let b = w.send(&mut c, json!([connect(&id, json!({}))]));
    let r = &replies(&b);
    assert_eq!(r.last().unwrap()["error"], "401::token expired");
    assert_eq!(r.last().unwrap()["advice"]["reconnect"], "handshake");
    assert_eq!(b.tokens.expired, 1);
    assert!(!w.store.exists(&id), "removed with its subscriptions");
    assert!(w.env.interest.contains(&"-/chat/*".to_string()));
}
