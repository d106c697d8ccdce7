//! The hub's rules, with the time passed in.

use super::*;

fn hub(history: usize) -> Hub {
    Hub::new(HubLimits {
        history,
        history_age: 0,
        session_queue: 4,
        session_ttl: 60,
        max_sessions: 10,
        max_channels: 100,
    })
}

/// The time the tests run at (the hub reads no clock).
const T0: Now = Now {
    secs: 100,
    unix_micros: 1_750_000_000_000_000,
    micros: 100_000_000,
};

/// `secs` seconds after [`T0`].
fn later(secs: u32) -> Now {
    Now {
        secs: T0.secs + secs,
        unix_micros: T0.unix_micros + u64::from(secs) * 1_000_000,
        micros: T0.micros + u64::from(secs) * 1_000_000,
    }
}

fn publish(h: &Hub, ch: &str, s: &str) -> u64 {
    h.publish(ch, Bytes::copy_from_slice(s.as_bytes()), T0, |_| {})
        .unwrap()
        .id
}

fn payloads(s: &Since) -> Vec<String> {
    s.msgs
        .iter()
        .map(|m| String::from_utf8(m.payload.to_vec()).unwrap())
        .collect()
}

#[test]
fn ids_are_consecutive_and_time_based() {
    let h = hub(8);
    let a = publish(&h, "x", "a");
    let b = publish(&h, "x", "b");
    assert_eq!(b, a + 1);
    assert_eq!(a, T0.unix_micros, "microseconds since the epoch");
    // Another channel starts above every id issued so far.
    assert!(publish(&h, "y", "c") > b);
}

#[test]
fn resume_after_a_cursor() {
    let h = hub(8);
    let ids: Vec<u64> = (0..5).map(|i| publish(&h, "x", &i.to_string())).collect();
    let s = h.since("x", Some(ids[1]));
    assert_eq!(payloads(&s), ["2", "3", "4"]);
    assert_eq!(s.gap, Gap::None);
    assert_eq!(s.cursor, ids[4]);
    let s = h.since("x", Some(ids[4]));
    assert!(s.msgs.is_empty());
    assert_eq!(s.cursor, ids[4]);
    let s = h.since("x", Some(0));
    assert_eq!(payloads(&s).len(), 5);
    assert_eq!(s.gap, Gap::None);
    let s = h.since("x", None);
    assert!(s.msgs.is_empty());
    assert_eq!(s.cursor, ids[4]);
}

#[test]
fn gaps_are_reported() {
    let h = hub(3);
    let ids: Vec<u64> = (0..6).map(|i| publish(&h, "x", &i.to_string())).collect();
    // History holds 3, 4, 5: a client at 0 missed 1 and 2.
    let s = h.since("x", Some(ids[0]));
    assert_eq!(payloads(&s), ["3", "4", "5"]);
    assert_eq!(s.gap, Gap::Missed(2));
    // Older than the channel's state, or from the future: unknown.
    assert_eq!(h.since("x", Some(ids[0] - 10)).gap, Gap::Unknown);
    assert_eq!(h.since("x", Some(ids[5] + 1)).gap, Gap::Unknown);
    // A channel without state, with a cursor: unknown (history or not); cursor 0: none.
    assert_eq!(h.since("nope", Some(5)).gap, Gap::Unknown);
    assert_eq!(hub(0).since("nope", Some(5)).gap, Gap::Unknown);
    assert_eq!(hub(0).since("nope", Some(0)).gap, Gap::None);
}

#[test]
fn history_off_still_reports_missed_messages() {
    let h = hub(0);
    let a = publish(&h, "x", "a");
    publish(&h, "x", "b");
    let s = h.since("x", Some(a));
    assert!(s.msgs.is_empty());
    assert_eq!(s.gap, Gap::Missed(1));
}

#[test]
fn sessions_queue_between_polls_and_bound_it() {
    let h = hub(8);
    h.session_start("x", "c1", None, T0).unwrap();
    publish(&h, "x", "a");
    publish(&h, "x", "b");
    let s = h.session_take("x", "c1", 0, T0).unwrap();
    assert_eq!(payloads(&s), ["a"]);
    let s = h.session_take("x", "c1", usize::MAX, T0).unwrap();
    assert_eq!(payloads(&s), ["b"]);
    for i in 0..6 {
        publish(&h, "x", &i.to_string());
    }
    let s = h.session_take("x", "c1", usize::MAX, T0).unwrap();
    assert_eq!(payloads(&s), ["2", "3", "4", "5"]);
    assert_eq!(s.gap, Gap::Missed(2));
    assert_eq!(h.stats.session_drops.load(Ordering::Relaxed), 2);
    assert_eq!(
        h.session_take("x", "other", usize::MAX, T0).err(),
        Some(Refused::NoSession)
    );
    // A byte budget leaves the rest queued, in order.
    for s in ["aaaa", "bbbb", "cccc"] {
        publish(&h, "x", s);
    }
    assert_eq!(
        payloads(&h.session_take("x", "c1", 9, T0).unwrap()),
        ["aaaa", "bbbb"]
    );
    assert_eq!(
        payloads(&h.session_take("x", "c1", 1, T0).unwrap()),
        ["cccc"]
    );
}

#[test]
fn session_limit_and_restart() {
    let h = hub(8);
    for i in 0..10 {
        h.session_start("x", &i.to_string(), None, T0).unwrap();
    }
    assert_eq!(
        h.session_start("x", "new", None, T0),
        Err(Refused::Sessions)
    );
    // Restarting an existing one is not a new session.
    h.session_start("x", "3", None, T0).unwrap();
    assert_eq!(h.stats.sessions.load(Ordering::Relaxed), 10);
}

#[test]
fn without_history_ids_are_kept_for_the_history_age() {
    let mut h = hub(0);
    h.limits.history_age = 10;
    let a = publish(&h, "x", "a");
    publish(&h, "x", "b");
    h.sweep(later(10));
    // Still known: the client is told exactly what it missed.
    assert_eq!(h.since("x", Some(a)).gap, Gap::Missed(1));
    h.sweep(later(11));
    assert_eq!(h.stats.channel_states.load(Ordering::Relaxed), 0);
    // Forgotten: still a gap, of unknown size.
    assert_eq!(h.since("x", Some(a)).gap, Gap::Unknown);
}

#[test]
fn sweep_expires_sessions_and_drops_empty_states() {
    let mut h = hub(0);
    h.limits.session_ttl = 0;
    h.limits.history_age = 1;
    h.session_start("x", "c", None, T0).unwrap();
    publish(&h, "x", "a");
    assert_eq!(h.stats.session_queued.load(Ordering::Relaxed), 1);
    h.session_hold("x", "c", true, T0);
    h.sweep(later(5));
    assert_eq!(
        h.stats.sessions.load(Ordering::Relaxed),
        1,
        "held poll keeps it"
    );
    h.session_hold("x", "c", false, later(5));
    h.sweep(later(7));
    assert_eq!(h.stats.sessions.load(Ordering::Relaxed), 0);
    assert_eq!(h.stats.session_queued.load(Ordering::Relaxed), 0);
    assert_eq!(h.stats.channel_states.load(Ordering::Relaxed), 0);
    assert_eq!(
        h.session_take("x", "c", usize::MAX, T0).err(),
        Some(Refused::NoSession)
    );
}

#[test]
fn given_ids_are_taken_stale_ones_dropped_and_holes_reported() {
    let h = hub(8);
    let at = |id: u64, p: &'static str| {
        h.publish_at(
            "x",
            Some(id),
            Bytes::from_static(p.as_bytes()),
            T0,
            |_, _| {},
        )
        .unwrap()
    };
    // A state a session made first takes the first given id as its base.
    h.session_start("x", "c", None, T0).unwrap();
    assert_eq!(at(100, "a").unwrap().gap_before, Gap::None);
    assert_eq!(at(101, "b").unwrap().id, 101);
    // Redis sent one twice: not again.
    assert!(at(101, "b").is_none());
    assert_eq!(h.stats.stale.load(Ordering::Relaxed), 1);
    assert_eq!(h.since("x", Some(100)).msgs.len(), 1);
    // 102..104 never came: the message says so in every encoding, the history restarts.
    let m = at(105, "f").unwrap();
    assert_eq!(m.gap_before, Gap::Missed(3));
    assert!(
        m.sse_event()
            .starts_with(b"event: gap\ndata: {\"missed\":3}\n\n")
    );
    assert_eq!(h.stats.missed_ids.load(Ordering::Relaxed), 3);
    assert_eq!(h.since("x", Some(100)).gap, Gap::Unknown);
    assert_eq!(payloads(&h.since("x", Some(104))), ["f"]);
    // The session queue has a, b and f, and the gap of 3.
    let s = h.session_take("x", "c", usize::MAX, T0).unwrap();
    assert_eq!(payloads(&s), ["a", "b", "f"]);
    assert_eq!(s.gap, Gap::Missed(3));
    // After the link to Redis is remade a hole has no count (Redis may have renumbered).
    h.new_link_epoch();
    let m = at(2_000_000, "g").unwrap();
    assert_eq!(m.gap_before, Gap::Unknown);
    assert!(
        m.sse_event()
            .starts_with(b"event: gap\ndata: {\"missed\":null}\n\n")
    );
    assert_eq!(at(2_000_001, "h").unwrap().gap_before, Gap::None);
}

#[test]
fn channel_state_limit() {
    let mut h = hub(4);
    h.limits.max_channels = 1;
    publish(&h, "a", "1");
    assert_eq!(
        h.publish("b", Bytes::from_static(b"x"), T0, |_| {}).err(),
        Some(Refused::Channels)
    );
}

#[test]
fn a_session_expires_past_its_ttl_never_before() {
    let h = hub(8);
    h.session_start("x", "c", None, T0).unwrap();
    h.session_take("x", "c", 0, later(10)).unwrap();
    // The TTL (60 s) runs from the last poll: at 60 s after it the session is still there.
    h.sweep(later(70));
    assert_eq!(h.stats.sessions.load(Ordering::Relaxed), 1);
    h.sweep(later(71));
    assert_eq!(h.stats.sessions.load(Ordering::Relaxed), 0);
    assert_eq!(h.stats.sessions_expired.load(Ordering::Relaxed), 1);
}

#[test]
fn history_ages_out_at_the_history_age() {
    let mut h = hub(8);
    h.limits.history_age = 30;
    let a = publish(&h, "x", "a");
    h.publish("x", Bytes::from_static(b"b"), later(20), |_| {})
        .unwrap();
    h.sweep(later(29));
    assert_eq!(payloads(&h.since("x", Some(a - 1))), ["a", "b"]);
    // "a" is 30 s old: gone, and a client before it is told it missed one.
    h.sweep(later(30));
    let s = h.since("x", Some(a - 1));
    assert_eq!(payloads(&s), ["b"]);
    assert_eq!(s.gap, Gap::Missed(1));
}

/// The workers a publish on `channel` goes to.
fn posted_to(h: &Hub, channel: &str) -> Workers {
    let mut to = None;
    h.publish_at(channel, None, Bytes::from_static(b"m"), T0, |_, w| {
        to = Some(w)
    })
    .unwrap();
    to.expect("deliver is called")
}

#[test]
fn a_publish_goes_to_the_workers_that_watch_its_channel() {
    let h = hub(4);
    assert!(posted_to(&h, "x").is_empty());
    h.watch("x", 1);
    h.watch("x", 200);
    h.watch("y", 3);
    let w = posted_to(&h, "x");
    assert!(w.contains(1) && w.contains(200));
    assert!(!w.contains(0) && !w.contains(3) && !w.contains(72));
    h.unwatch("x", 1);
    assert!(!posted_to(&h, "x").contains(1));
    // A worker with pattern subscribers gets every publish.
    h.watch_patterns(5, true);
    assert!(posted_to(&h, "z").contains(5));
    h.watch_patterns(5, false);
    h.unwatch("x", 200);
    h.unwatch("x", 9); // not watching: nothing happens
    assert!(posted_to(&h, "x").is_empty());
    h.unwatch("y", 3);
    // Nothing is left behind.
    assert!(h.shards.iter().all(|s| lock(s).watched.is_empty()));
}
