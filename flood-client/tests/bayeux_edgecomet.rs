//! `flood --transport bayeux` against a real edgecomet (started in this test process), over
//! long-polling and websocket: through held connects that time out, messages larger than one
//! read, and a handshake the server refuses (its client limit) counted as an error. (1,000
//! clients with a publish load: `bayeux_long_polling.rs`, `bayeux_websocket.rs`.) The tests of
//! this binary run one at a time.

mod common;

use std::sync::Mutex;

use common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const TRANSPORTS: [&str; 2] = ["long-polling", "websocket"];

/// Held connects answered empty at `--bayeux-timeout` are followed by the next connect at once:
/// nothing published meanwhile is missed (the server queues it for the client).
#[test]
fn bayeux_through_connect_timeouts() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for t in TRANSPORTS {
        through_connect_timeouts(t);
    }
}

fn through_connect_timeouts(t: &str) {
    let srv = server_with(|c| c.bayeux_timeout = 1);
    let r = flood(
        &srv,
        &format!("bxt{t}"),
        &[
            "--transport",
            "bayeux",
            "--bayeux-transport",
            t,
            "--conns",
            "50",
            "--rate",
            "max",
            "--duration",
            "6",
            "--publish-rate",
            "0.5",
        ],
    );
    assert_eq!(r["conns_established"], 50);
    let published = check_exact(&r, 50);
    assert!(published >= 2, "published {published}");
    // Held connects did time out. `bayeux_messages_in` counts every message of every request:
    // per client 4 for the handshake, the subscribe and the first two connects, then one
    // connect per reply; a publish ends at most one held connect per client, so connects
    // beyond `published` were sent after timeouts (a hold of 1 s ends after 1 to 2 s and the
    // run holds for about 7 s: expect about 3 per client, ask for 2).
    let stats: serde_json::Value = serde_json::from_str(&srv.stats_json()).unwrap();
    let msgs_in = stats["total"]["bayeux_messages_in"].as_u64().unwrap();
    assert!(
        msgs_in >= 50 * (4 + published + 2),
        "{t}: bayeux_messages_in {msgs_in}, published {published}"
    );
}

/// Messages larger than one read: a 200 KB connect reply (or frame) split across reads.
#[test]
fn bayeux_messages_larger_than_a_read() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let srv = server();
    for t in TRANSPORTS {
        let r = flood(
            &srv,
            &format!("bxbig{t}"),
            &[
                "--transport",
                "bayeux",
                "--bayeux-transport",
                t,
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
        assert!(published > 0, "{t}");
    }
}

/// Past `--bayeux-max-clients` the handshake fails (503): counted as Bayeux errors, the run
/// fails, and the clients that did handshake are open.
#[test]
fn bayeux_refused_handshakes_are_errors() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for t in TRANSPORTS {
        let srv = server_with(|c| c.bayeux_max_clients = 30);
        let (status, r) = flood_status(
            &srv,
            &format!("bxmax{t}"),
            &[
                "--transport",
                "bayeux",
                "--bayeux-transport",
                t,
                "--conns",
                "50",
                "--rate",
                "max",
                "--duration",
                "1",
            ],
        );
        assert!(!status.success(), "{r:#}");
        assert_eq!(r["conns_established"], 30, "{r:#}");
        assert_eq!(r["errors"]["bayeux"], 20, "{r:#}");
        assert_eq!(r["errors"]["protocol"], 0, "{r:#}");
    }
}
