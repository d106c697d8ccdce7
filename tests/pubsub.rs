//! Publish/subscribe over real sockets with the tungstenite client: across workers, fan-out to
//! 1,000 subscribers exactly once and in order, and a slow consumer that must not hold back the
//! others.

mod common;

use std::io::Read;
use std::time::Duration;

use common::*;

#[test]
fn publish_reaches_subscribers_on_every_worker() {
    let srv = server(2, |_| {});
    let addr = srv.local_addr();
    let mut subs: Vec<Ws> = (0..40).map(|_| ws(addr, "/sub/news")).collect();
    assert!(wait_until(5, || total(&srv, "conns_ws_sub") == 40));
    // SO_REUSEPORT spreads 40 connections over both workers (the odds of all 40 on one are 2^-39).
    assert!(per_worker(&srv, 0, "conns_ws_sub") > 0);
    assert!(per_worker(&srv, 1, "conns_ws_sub") > 0);
    let mut publisher = Publisher::new(addr);
    for i in 0..10 {
        let (st, body) = publisher.publish("news", format!("hello {i} ✓").as_bytes());
        assert_eq!(st, 200);
        assert!(body.contains("\"ok\":true"), "{body}");
    }
    for s in &mut subs {
        for i in 0..10 {
            assert_eq!(recv_text(s), format!("hello {i} ✓"));
        }
    }
    // Another channel's subscriber gets nothing from "news".
    let mut other = ws(addr, "/sub/sports");
    publisher.publish("sports", b"goal");
    assert_eq!(recv_text(&mut other), "goal");
}

/// A publish is posted only to the workers with subscribers of its channel: with nobody
/// subscribed (and after a poll answered at once, which watched the channel for a moment) no
/// worker gets mail; with one subscriber, only its worker gets the publishes the other worker
/// took, and the subscriber gets every message in order.
#[test]
fn a_publish_is_posted_only_to_workers_with_subscribers() {
    let srv = server(2, |_| {});
    let addr = srv.local_addr();
    // A cursor on a channel with no state: answered at once (a gap), nothing subscribed.
    // (Plain text: 204 with `Edgecomet-Gap: unknown`.)
    let (st, body) = Publisher::new(addr).get("/sub/ghost?cursor=5");
    assert_eq!(st, 204, "{body}");
    // Publishes over new connections: SO_REUSEPORT spreads them over both workers (the odds of
    // all 30 on one are 2^-29).
    for i in 0..30 {
        let ch = if i % 2 == 0 { "nobody" } else { "ghost" };
        assert_eq!(Publisher::new(addr).publish(ch, b"x").0, 200);
    }
    assert!(per_worker(&srv, 0, "messages_in") > 0);
    assert!(per_worker(&srv, 1, "messages_in") > 0);
    assert_eq!(total(&srv, "peer_messages"), 0);

    let mut sub = ws(addr, "/sub/news");
    assert!(wait_until(5, || total(&srv, "conns_ws_sub") == 1));
    let (home, other) = if per_worker(&srv, 0, "conns_ws_sub") == 1 {
        (0, 1)
    } else {
        (1, 0)
    };
    let mut news_by_other = 0;
    for i in 0..30 {
        let before = per_worker(&srv, other, "messages_in");
        assert_eq!(
            Publisher::new(addr)
                .publish("news", format!("m{i}").as_bytes())
                .0,
            200
        );
        news_by_other += per_worker(&srv, other, "messages_in") - before;
        // Another channel on the way: posted to nobody.
        assert_eq!(Publisher::new(addr).publish("nobody", b"x").0, 200);
    }
    for i in 0..30 {
        assert_eq!(recv_text(&mut sub), format!("m{i}"));
    }
    assert!(
        news_by_other > 0,
        "no publish went through the other worker"
    );
    // Exactly the other worker's publishes on "news" were posted home.
    assert_eq!(per_worker(&srv, home, "peer_messages"), news_by_other);
    assert_eq!(per_worker(&srv, other, "peer_messages"), 0);
}

#[test]
fn fanout_to_1000_subscribers_exactly_once_in_order() {
    const SUBS: usize = 1000;
    const MSGS: usize = 100;
    let srv = server(2, |_| {});
    let addr = srv.local_addr();
    let mut subs: Vec<Ws> = (0..SUBS).map(|_| ws(addr, "/sub/fan")).collect();
    assert!(wait_until(5, || total(&srv, "conns_ws_sub") == SUBS as u64));
    let mut publisher = Publisher::new(addr);
    for i in 0..MSGS {
        assert_eq!(publisher.publish("fan", format!("{i}").as_bytes()).0, 200);
    }
    for (n, s) in subs.iter_mut().enumerate() {
        for i in 0..MSGS {
            assert_eq!(recv_text(s), i.to_string(), "subscriber {n}");
        }
    }
    // Exactly once: nothing more arrives.
    for s in subs.iter_mut().take(50) {
        s.get_mut()
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        assert!(s.read().is_err(), "an extra message arrived");
    }
    assert_eq!(total(&srv, "messages_out"), (SUBS * MSGS) as u64);
    assert_eq!(total(&srv, "drops"), 0);
}

#[test]
fn slow_consumer_is_closed_and_the_others_keep_receiving() {
    let srv = server(2, |c| c.max_queued_bytes = 64 * 1024);
    let addr = srv.local_addr();
    // Never reads, tiny receive window.
    let mut slow = raw_subscriber(addr, "/sub/slow", Some(4096));
    let good_addr = addr;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut good = ws(good_addr, "/sub/slow");
    assert!(wait_until(5, || total(&srv, "conns_ws_sub") == 2));
    const N: usize = 600;
    let reader = std::thread::spawn(move || {
        for i in 0..N {
            let m = recv_text(&mut good);
            assert!(
                m.starts_with(&format!("{i}:")),
                "good subscriber lost message {i}"
            );
        }
        tx.send(()).unwrap();
    });
    let publisher = std::thread::spawn(move || {
        let mut publisher = Publisher::new(addr);
        let body = "z".repeat(16_000);
        for i in 0..N {
            // 600 × 16 kB is more than the kernel's send buffer (tcp_wmem max 4 MiB) can absorb.
            assert_eq!(
                publisher
                    .publish("slow", format!("{i}:{body}").as_bytes())
                    .0,
                200
            );
        }
    });
    // Once it is declared slow, the slow subscriber reads: it must find whole frames, then the
    // close (it has --close-timeout = 5 s to take it before the socket is dropped).
    assert!(wait_until(30, || total(&srv, "slow_consumers") == 1));
    let mut data = Vec::new();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.read_to_end(&mut data).unwrap();
    publisher.join().unwrap();
    rx.recv_timeout(Duration::from_secs(30))
        .expect("the healthy subscriber received everything");
    reader.join().unwrap();
    assert_eq!(total(&srv, "slow_consumers"), 1);
    assert!(total(&srv, "drops") > 0);
    let f = frames(&data);
    let (op, payload) = f.last().expect("frames");
    assert_eq!(*op, 0x8, "last frame is a close");
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
    assert!(f[..f.len() - 1].iter().all(|(op, _)| *op == 0x1));
}

#[test]
fn echo_round_trips_text_and_binary() {
    let srv = server(1, |_| {});
    let mut e = ws(srv.local_addr(), "/echo");
    e.send(tungstenite::Message::text("κόσμε")).unwrap();
    assert_eq!(recv_text(&mut e), "κόσμε");
    let big = vec![7u8; 200_000];
    e.send(tungstenite::Message::binary(big.clone())).unwrap();
    match e.read().unwrap() {
        tungstenite::Message::Binary(b) => assert_eq!(&b[..], &big[..]),
        other => panic!("{other:?}"),
    }
    e.close(None).unwrap();
    loop {
        match e.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(err) => panic!("unclean close: {err}"),
        }
    }
}
