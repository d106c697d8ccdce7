//! `flood --transport socketio` against a real edgecomet (started in this test process), over
//! websocket and polling: through many server pings (each answered, or the server would close
//! the session), without connection-state recovery (events with the payload alone), and a
//! CONNECT the server refuses counted as a `socketio` error. (1,000 clients with a publish load:
//! `socketio_websocket.rs`, `socketio_polling.rs`.) The tests of this binary run one at a time.

mod common;

use std::sync::Mutex;

use common::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const TRANSPORTS: [&str; 2] = ["websocket", "polling"];

/// A ping every 200 ms, 200 ms to answer it, for 4 s: every session answers every ping (none
/// closed for a missed pong) and receives every message.
#[test]
fn socketio_through_pings_without_recovery() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for t in TRANSPORTS {
        let srv = server_with(|c| {
            c.socketio_ping_interval = Some(200);
            c.socketio_ping_timeout = Some(200);
            c.socketio_recovery = Some(0);
        });
        let r = flood(
            &srv,
            &format!("sio{t}"),
            &[
                "--transport",
                "socketio",
                "--socketio-transport",
                t,
                "--conns",
                "50",
                "--rate",
                "max",
                "--duration",
                "4",
                "--publish-rate",
                "2",
            ],
        );
        assert_eq!(r["conns_established"], 50, "{t}: {r:#}");
        let published = check_exact(&r, 50);
        assert!(published >= 4, "{t}: published {published}");
        let stats: serde_json::Value = serde_json::from_str(&srv.stats_json()).unwrap();
        assert_eq!(stats["total"]["sio_ping_timeouts"], 0, "{t}: {stats:#}");
        assert_eq!(stats["total"]["sio_protocol_errors"], 0, "{t}: {stats:#}");
    }
}

/// A channel name the server refuses (`!` is not a channel character): every CONNECT gets a
/// CONNECT_ERROR, counted as a `socketio` error, and the run fails.
#[test]
fn socketio_refused_connect_is_an_error() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    for t in TRANSPORTS {
        let srv = server();
        let (status, r) = flood_status(
            &srv,
            "bad!",
            &[
                "--transport",
                "socketio",
                "--socketio-transport",
                t,
                "--conns",
                "20",
                "--rate",
                "max",
                "--duration",
                "1",
            ],
        );
        assert!(!status.success(), "{t}: {r:#}");
        assert_eq!(r["errors"]["socketio"], 20, "{t}: {r:#}");
        assert_eq!(r["conns_established"], 0);
    }
}
