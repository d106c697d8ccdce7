//! Unit tests of the client store: `now` and the random bits are the tests' own.

use super::*;
use crate::session::bayeux::ids::hex;

/// Records the changes of interest.
#[derive(Default)]
struct Seen(Vec<String>);

impl Seen {
    fn f(&mut self) -> impl FnMut(Interest<'_>) + '_ {
        |i| {
            self.0.push(match i {
                Interest::First(s) => format!("+{s}"),
                Interest::Last(s) => format!("-{s}"),
            })
        }
    }
}

fn none(_: Interest<'_>) {}

/// The id written as `s`.
fn id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

/// A handshake at second 0, its id drawn from a per-thread counter.
fn hs(c: &Clients, ack: bool, browser: Option<&str>) -> Result<String, Refusal> {
    thread_local!(static N: std::cell::Cell<u128> = const { std::cell::Cell::new(0) });
    let mut random = || {
        N.with(|n| {
            n.set(n.get() + 1);
            n.get()
        })
    };
    c.handshake(0, ack, browser, None, &mut random)
}

fn clients() -> Clients {
    Clients::new(BayeuxLimits {
        max_queue: 3,
        max_interval: 10,
        max_clients: 4,
        max_channel_len: 255,
        root_wildcards: false,
        max_subscriptions: 3,
    })
}

const W: Waiter = Waiter {
    worker: 0,
    idx: 1,
    generation: 1,
};

fn msg(s: &'static str) -> impl FnOnce() -> Bytes {
    move || Bytes::from_static(s.as_bytes())
}

#[test]
fn ids_are_the_given_random_bits_drawn_again_while_taken() {
    let c = clients();
    let mut random = {
        let mut v = [5, 5, 9].into_iter();
        move || v.next().unwrap()
    };
    let a = c.handshake(0, false, None, None, &mut random).unwrap();
    let b = c.handshake(0, false, None, None, &mut random).unwrap();
    assert_eq!(a, hex(5));
    assert_eq!(b, hex(9), "5 was taken: drawn again");
    assert!(c.exists(&a) && c.exists(&b));
    assert!(!c.exists("not an id"));
    assert_eq!(
        c.connect(0, "nope", None, None).err(),
        Some(Refusal::UnknownClient)
    );
}

#[test]
fn wildcards_route_and_queue_between_connects() {
    let c = clients();
    let a = hs(&c, false, None).unwrap();
    let b = hs(&c, false, None).unwrap();
    c.subscribe(&a, "/x/*", &mut none).unwrap();
    c.subscribe(&b, "/x/**", &mut none).unwrap();
    c.subscribe(&b, "/x/y", &mut none).unwrap();
    assert!(c.deliver("x/y", msg("1")).is_empty());
    c.deliver("x/y/z", msg("2"));
    c.deliver("other", msg("3"));
    let Connect::Now(qa) = c.connect(0, &a, Some(W), None).unwrap() else {
        panic!()
    };
    assert_eq!(qa.msgs, [Bytes::from_static(b"1")]);
    // b is subscribed twice over for /x/y but gets it once.
    let Connect::Now(qb) = c.connect(0, &b, Some(W), None).unwrap() else {
        panic!()
    };
    assert_eq!(
        qb.msgs,
        [Bytes::from_static(b"1"), Bytes::from_static(b"2")]
    );
}

#[test]
fn held_connect_is_woken_and_replaced() {
    let c = clients();
    let a = hs(&c, false, None).unwrap();
    c.subscribe(&a, "/x", &mut none).unwrap();
    assert!(matches!(
        c.connect(0, &a, Some(W), None),
        Ok(Connect::Held(None))
    ));
    let w2 = Waiter { idx: 2, ..W };
    // A second connect releases the first.
    assert!(matches!(c.connect(0, &a, Some(w2), None), Ok(Connect::Held(Some(w))) if w == W));
    assert_eq!(c.take(0, id(&a), w2), None, "nothing queued: keep holding");
    assert_eq!(c.deliver("x", msg("m")), [w2]);
    assert_eq!(
        c.take(0, id(&a), W),
        Some(Out::default()),
        "the replaced waiter ends, empty"
    );
    assert_eq!(
        c.take(0, id(&a), w2).unwrap().msgs,
        [Bytes::from_static(b"m")]
    );
    assert_eq!(c.take(0, id(&hex(77)), w2), Some(Out::default()));
}

fn now(c: &Clients, client: &str, ack: i64) -> Out {
    match c.connect(0, client, Some(W), Some(ack)).unwrap() {
        Connect::Now(out) => out,
        Connect::Held(_) => Out::default(),
    }
}

#[test]
fn ack_batches_are_sent_again_until_acknowledged() {
    let c = clients();
    let a = hs(&c, true, None).unwrap();
    c.subscribe(&a, "/x", &mut none).unwrap();
    // The first connect (ack 0) is answered at once by the caller; here it is held.
    assert!(matches!(
        c.connect(0, &a, Some(W), Some(0)),
        Ok(Connect::Held(None))
    ));
    c.deliver("x", msg("1"));
    let b1 = c.take(0, id(&a), W).unwrap();
    assert_eq!((b1.msgs.len(), b1.batch), (1, Some(1)));
    // That reply was lost: the client comes back acknowledging batch 0.
    c.deliver("x", msg("2"));
    let b2 = now(&c, &a, 0);
    assert_eq!(
        b2.msgs,
        [Bytes::from_static(b"1"), Bytes::from_static(b"2")]
    );
    assert_eq!(b2.batch, Some(2));
    assert_eq!(c.stats.unacked.load(Ordering::Relaxed), 2);
    // Acknowledged: held again, nothing sent twice.
    assert!(matches!(
        c.connect(0, &a, Some(W), Some(2)),
        Ok(Connect::Held(_))
    ));
    assert_eq!(c.stats.unacked.load(Ordering::Relaxed), 0);
    // A timed-out hold still numbers its (empty) batch.
    assert_eq!(c.finish(0, id(&a), W).batch, Some(3));
    // The bound covers unacknowledged messages too: the oldest go first, counted.
    for _ in 0..5 {
        c.deliver("x", msg("m"));
    }
    let out = now(&c, &a, 3);
    assert_eq!((out.msgs.len(), out.dropped), (3, 2));
    let again = now(&c, &a, 3);
    assert_eq!(
        (again.msgs.len(), again.dropped),
        (3, 0),
        "not acked: sent again"
    );
    c.disconnect(&a, &mut none).unwrap();
    assert_eq!(c.stats.unacked.load(Ordering::Relaxed), 0);
}

#[test]
fn without_ack_nothing_is_kept() {
    let c = clients();
    let a = hs(&c, false, None).unwrap();
    c.subscribe(&a, "/x", &mut none).unwrap();
    c.deliver("x", msg("1"));
    let out = now(&c, &a, 0);
    assert_eq!((out.msgs.len(), out.batch), (1, None));
    assert!(matches!(
        c.connect(0, &a, Some(W), Some(0)),
        Ok(Connect::Held(_))
    ));
}

const B1: &str = "0123456789abcdef0123456789abcdef";
const B2: &str = "ffffffffffffffffffffffffffffffff";

#[test]
fn browser_cookie_binds_the_session() {
    let c = clients();
    let a = hs(&c, false, Some(B1)).unwrap();
    // Not bound yet: the clientId alone is enough; another cookie never is.
    assert_eq!(c.check(&a, None), Ok(()));
    assert_eq!(c.check(&a, Some(B2)), Err(Refusal::WrongBrowser));
    // The cookie came back: bound.
    assert_eq!(c.check(&a, Some(B1)), Ok(()));
    assert_eq!(c.check(&a, None), Err(Refusal::WrongBrowser));
    assert_eq!(c.check(&a, Some(B1)), Ok(()));
    assert_eq!(c.stats.wrong_browser.load(Ordering::Relaxed), 2);
    // A session without a cookie: any request with its clientId.
    let n = hs(&c, false, None).unwrap();
    assert_eq!(c.check(&n, Some(B1)), Ok(()));
    assert_eq!(c.check(&n, None), Ok(()));
    assert_eq!(c.check("ghost", None), Err(Refusal::UnknownClient));
}

#[test]
fn queue_is_bounded_and_counts_drops() {
    let c = clients();
    let a = hs(&c, false, None).unwrap();
    c.subscribe(&a, "/x", &mut none).unwrap();
    for _ in 0..5 {
        c.deliver("x", msg("m"));
    }
    let Connect::Now(q) = c.connect(0, &a, None, None).unwrap() else {
        panic!()
    };
    assert_eq!((q.msgs.len(), q.dropped), (3, 2));
    assert_eq!(c.stats.dropped.load(Ordering::Relaxed), 2);
}

#[test]
fn subscription_rules() {
    let c = clients();
    let a = hs(&c, false, None).unwrap();
    assert_eq!(
        c.subscribe(&a, "/meta/**", &mut none),
        Err(Refusal::Forbidden)
    );
    assert_eq!(
        c.subscribe(&a, "/meta/connect", &mut none),
        Err(Refusal::Forbidden)
    );
    assert_eq!(c.subscribe(&a, "/**", &mut none), Err(Refusal::Forbidden));
    assert_eq!(c.subscribe(&a, "/*", &mut none), Err(Refusal::Forbidden));
    assert_eq!(c.subscribe(&a, "nope", &mut none), Err(Refusal::BadChannel));
    assert_eq!(
        c.subscribe("ghost", "/x", &mut none),
        Err(Refusal::UnknownClient)
    );
    let mut open = clients();
    open.limits.root_wildcards = true;
    let b = hs(&open, false, None).unwrap();
    assert!(open.subscribe(&b, "/**", &mut none).is_ok());
    assert_eq!(open.deliver("any/thing", msg("m")).len(), 0);
    assert!(matches!(open.connect(0, &b, None, None), Ok(Connect::Now(q)) if q.msgs.len() == 1));
}

#[test]
fn disconnect_and_expiry_free_everything() {
    let c = clients();
    let a = hs(&c, false, None).unwrap();
    let b = hs(&c, false, None).unwrap();
    c.subscribe(&a, "/x", &mut none).unwrap();
    c.subscribe(&b, "/x", &mut none).unwrap();
    c.deliver("x", msg("m"));
    assert_eq!(c.disconnect(&a, &mut none), Ok(None));
    assert_eq!(c.disconnect(&a, &mut none), Err(Refusal::UnknownClient));
    // Whole seconds: 10 may be a little less than 10 real seconds, so only more than 10 expires.
    c.sweep(10, &mut none);
    assert!(c.exists(&b));
    c.sweep(11, &mut none);
    assert!(!c.exists(&b));
    for (k, v) in c.stats.snapshot() {
        if k != "bayeux_expired" && k != "bayeux_dropped" {
            assert_eq!(v, 0, "{k}");
        }
    }
    assert_eq!(c.stats.expired.load(Ordering::Relaxed), 1);
    assert!(c.lock().subs.is_empty() && c.lock().sub_keys.is_empty());
    assert!(c.lock().ids.is_empty() && c.lock().clients.is_empty());
    // A held connect keeps a client alive.
    let d = hs(&c, false, None).unwrap();
    assert!(matches!(
        c.connect(0, &d, Some(W), None),
        Ok(Connect::Held(None))
    ));
    c.sweep(100, &mut none);
    assert!(c.exists(&d));
}

#[test]
fn subscriptions_per_client_are_bounded_all_or_nothing() {
    let c = clients();
    let a = hs(&c, false, None).unwrap();
    let subs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    c.subscribe_all(&a, &subs(&["/a", "/b"]), &mut none)
        .unwrap();
    // Again: not new, no room needed.
    c.subscribe_all(&a, &subs(&["/a", "/b"]), &mut none)
        .unwrap();
    let two = subs(&["/c", "/d"]);
    assert_eq!(
        c.subscribe_all(&a, &two, &mut none),
        Err((Refusal::TooManySubscriptions, "/d"))
    );
    assert_eq!(
        c.stats.subscriptions.load(Ordering::Relaxed),
        2,
        "nothing added"
    );
    let bad = subs(&["/e", "/meta/x"]);
    assert_eq!(
        c.subscribe_all(&a, &bad, &mut none),
        Err((Refusal::Forbidden, "/meta/x"))
    );
    c.subscribe(&a, "/c", &mut none).unwrap();
}

#[test]
fn client_limit() {
    let c = clients();
    for _ in 0..4 {
        hs(&c, false, None).unwrap();
    }
    assert_eq!(hs(&c, false, None), Err(Refusal::TooManyClients));
}

#[test]
fn first_and_last_interest_go_to_the_caller_in_order() {
    let c = clients();
    let a = hs(&c, false, None).unwrap();
    let b = hs(&c, false, None).unwrap();
    let mut seen = Seen::default();
    c.subscribe(&a, "/x", &mut seen.f()).unwrap();
    c.subscribe(&b, "/x", &mut seen.f()).unwrap();
    c.subscribe(&b, "/y/*", &mut seen.f()).unwrap();
    c.unsubscribe(&a, "/x", &mut seen.f()).unwrap();
    assert_eq!(seen.0, ["+/x", "+/y/*"], "/x keeps b");
    c.disconnect(&b, &mut seen.f()).unwrap();
    assert_eq!(seen.0[2..].len(), 2);
    assert!(seen.0.contains(&"-/x".to_string()) && seen.0.contains(&"-/y/*".to_string()));
    let d = hs(&c, false, None).unwrap();
    c.subscribe(&d, "/z/**", &mut seen.f()).unwrap();
    c.sweep(11, &mut seen.f());
    assert_eq!(
        seen.0[4..],
        ["+/z/**", "-/z/**"],
        "expired: the last client went"
    );
}

/// A private push channel (`~push/…`) reaches only its exact subscribers, never a wildcard.
#[test]
fn private_channels_match_no_wildcard() {
    let c = clients();
    let exact = hs(&c, false, None).unwrap();
    let wild = hs(&c, false, None).unwrap();
    let addr = "~push/0123456789abcdef0123456789abcdef";
    c.subscribe(&exact, &format!("/{addr}"), &mut none).unwrap();
    c.subscribe(&wild, "/~push/*", &mut none).unwrap();
    c.subscribe(&wild, "/~push/**", &mut none).unwrap();
    let queued = |id: &str| match c.connect(0, id, None, None).unwrap() {
        Connect::Now(out) => out.msgs.len(),
        Connect::Held(_) => unreachable!("no waiter given"),
    };
    c.deliver(addr, msg("m"));
    assert_eq!(queued(&exact), 1);
    assert_eq!(queued(&wild), 0);
    // Wildcards under another first segment still match.
    c.subscribe(&wild, "/~pushy/*", &mut none).unwrap();
    c.deliver("~pushy/x", msg("n"));
    assert_eq!(queued(&wild), 1);
}
