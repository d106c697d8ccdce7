//! `--slow-readers`: a fraction of the connections reads slowly or not at all. The server lets
//! stalled ones go as slow consumers; flood counts them apart, and loss and latency cover the
//! others, which must still receive everything.

mod common;

use common::*;

fn server_total(srv: &edgecomet::Server, key: &str) -> u64 {
    let j: serde_json::Value = serde_json::from_str(&srv.stats_json()).unwrap();
    j["total"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no total.{key} in {j}"))
}

#[test]
fn stalled_readers_are_closed_as_slow_consumers_and_the_others_get_everything() {
    // 64 KiB per subscriber may wait in the server: what the kernel buffers do not hold.
    let srv = server_with(|c| c.max_queued_bytes = 64 * 1024);
    let r = flood(
        &srv,
        "stall",
        &[
            "--conns",
            "20",
            "--rate",
            "max",
            "--procs",
            "1",
            "--slow-readers",
            "0.5",
            // 64 KiB x 50/s x 4 s = 12.8 MB per subscriber: more than the kernel buffers of a
            // stalled one (receive buffer + send buffer up to tcp_wmem's max, 4 MiB by default)
            // and the server's 64 KiB.
            "--publish-rate",
            "50",
            "--size",
            "65536",
            "--duration",
            "4",
        ],
    );
    assert_eq!(r["conns_established"], 20);
    let errors = r["errors"].as_object().unwrap();
    assert!(errors.values().all(|v| v == 0), "errors: {errors:?}");
    assert_eq!(server_total(&srv, "slow_consumers"), 10);
    let slow = &r["slow_readers"];
    assert_eq!(slow["deliveries"], 0, "a stalled reader reads nothing");
    assert_eq!(slow["open_at_end"], 0, "{slow}");
    assert_eq!(slow["closed_by_server"], 10, "{slow}");
    // The 10 others: every message, in order.
    check_exact(&r, 10);
    let loaded = &r["loaded"];
    assert!(loaded["samples"].as_u64().unwrap() >= 2, "{loaded}");
    assert!(
        loaded["kernel_peak_bytes_per_conn"].as_f64().unwrap()
            >= loaded["kernel_bytes_per_conn"].as_f64().unwrap(),
        "{loaded}"
    );
}

#[test]
fn slow_readers_read_at_their_rate_and_stay_open() {
    let srv = server();
    let r = flood(
        &srv,
        "slow",
        &[
            "--conns",
            "100",
            "--rate",
            "max",
            "--procs",
            "2",
            "--slow-readers",
            "0.1",
            "--slow-read-rate",
            "4000",
            // 40 messages of ~100 bytes: a slow reader keeps up at 4,000 B/s.
            "--publish-rate",
            "20",
            "--size",
            "100",
            "--duration",
            "2",
        ],
    );
    assert_eq!(r["conns_established"], 100);
    let slow = &r["slow_readers"];
    assert_eq!(slow["open_at_end"], 10, "{slow}");
    assert_eq!(slow["closed_by_server"], 0, "{slow}");
    let read = slow["deliveries"].as_u64().unwrap();
    let published = r["published"].as_u64().unwrap();
    assert!(
        read > 0 && read <= published * 10,
        "slow readers read {read} of {published} x 10"
    );
    // 90 others over one channel.
    check_exact(&r, 90);
}
