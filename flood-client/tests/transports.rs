//! `flood --transport sse|longpoll` against a real edgecomet (started in this test process):
//! long-poll through poll timeouts, gaps reported by the server counted, messages larger than one
//! read. (1,000 connections with a publish load: `sse.rs`, `longpoll.rs`, each a binary of its own
//! so that the server memory flood reads is that of one run.) The tests of this binary run one at
//! a time.

mod common;

use std::sync::Mutex;

use common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Polls that time out (empty answers) are followed by the next poll with the answer's cursor:
/// nothing published between polls is missed.
#[test]
fn longpoll_through_poll_timeouts() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let srv = server_with(|c| c.poll_timeout = 1);
    let r = flood(
        &srv,
        "tpt",
        &[
            "--transport",
            "longpoll",
            "--conns",
            "50",
            "--rate",
            "max",
            "--duration",
            "4",
            "--publish-rate",
            "0.7",
        ],
    );
    assert_eq!(r["conns_established"], 50);
    let published = check_exact(&r, 50);
    assert!(published >= 2, "published {published}");
    // Polls did time out (at least the first ones, held a second before publishing started).
    let stats: serde_json::Value = serde_json::from_str(&srv.stats_json()).unwrap();
    let timeouts = stats["total"]["poll_timeouts"].as_u64().unwrap();
    assert!(timeouts >= 50, "poll_timeouts {timeouts}");
}

/// Without history, every message published while a long-poll connection is between two polls
/// is reported as a gap on its next poll: flood counts the gaps (and the messages lost) and
/// fails the run.
#[test]
fn longpoll_gaps_are_counted() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let srv = server_with(|c| c.history = 0);
    let (status, r) = flood_status(
        &srv,
        "tgap",
        &[
            "--transport",
            "longpoll",
            "--conns",
            "200",
            "--rate",
            "max",
            "--duration",
            "2",
            "--publish-rate",
            "500",
        ],
    );
    assert!(!status.success(), "gaps must fail the run\n{r:#}");
    let gaps = r["gaps_reported"].as_u64().unwrap();
    assert!(gaps > 0, "{r:#}");
    assert!(r["lost"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["reordered"], 0);
    assert_eq!(r["conns_established"], 200);
}

/// Messages larger than one read: SSE events and long-poll answers split across reads.
#[test]
fn messages_larger_than_a_read() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let srv = server();
    for transport in ["sse", "longpoll"] {
        let r = flood(
            &srv,
            &format!("tbig{transport}"),
            &[
                "--transport",
                transport,
                "--conns",
                "20",
                "--rate",
                "max",
                "--duration",
                "1",
                "--publish-rate",
                "20",
                "--size",
                "200000",
            ],
        );
        let published = check_exact(&r, 20);
        assert!(published > 0);
    }
}
