//! `flood` against a real edgecomet (started in this test process): 5,000 connections with a
//! publish load; every message received, and the JSON report consistent.

mod common;

use std::process::Command;

use common::*;

#[test]
fn five_thousand_connections_with_a_publish_load() {
    let srv = server();
    let dir = std::env::temp_dir().join(format!("flood-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    let status = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", &format!("ws://{}/sub/ft", srv.local_addr())])
        .args([
            "--conns",
            "5000",
            "--rate",
            "max",
            "--procs",
            "2",
            "--channels",
            "4",
        ])
        .args(["--duration", "3", "--publish-rate", "200", "--size", "100"])
        .args(["--server-pid", &std::process::id().to_string()])
        .arg("--json")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "flood reported a failure: {status:?}");
    let r = json(&out);
    assert_eq!(r["conns_established"], 5000);
    let published = r["published"].as_u64().unwrap();
    assert!(published >= 400, "published {published}");
    // 4 channels, 1,250 subscribers each: every message reaches its 1,250.
    assert_eq!(r["deliveries"].as_u64().unwrap(), published * 1250);
    assert_eq!(r["expected_deliveries"], r["deliveries"]);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["reordered"], 0);
    for k in [
        "server_pss_bytes_per_conn",
        "server_rss_bytes_per_conn",
        "kernel_bytes_per_conn",
    ] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k} = {}", r[k]);
    }
    // flood's own cost is 40 bytes per connection in pages its workers mostly had already: the
    // PSS delta of 2,500 connections per worker is often less than a page (0 is a fair
    // reading), so only the bound is checked.
    assert!(r["client_bytes_per_conn"].as_f64().unwrap() < 1024.0);
    let l = &r["latency_us"];
    assert!(l["p50"].as_u64().unwrap() > 0);
    assert!(l["p50"].as_u64() <= l["p99"].as_u64());
    assert!(l["p99"].as_u64() <= l["max"].as_u64());
    assert_eq!(l["count"].as_u64().unwrap(), published * 1250);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn broadcasts_then_a_publish_load() {
    let srv = server();
    let dir = std::env::temp_dir().join(format!("flood-bcast-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    let status = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", &format!("ws://{}/sub/bc", srv.local_addr())])
        .args(["--conns", "1000", "--rate", "max", "--procs", "2"])
        .args(["--channels", "2", "--broadcasts", "3"])
        .args(["--duration", "2", "--publish-rate", "50"])
        .args(["--server-pid", &std::process::id().to_string()])
        .arg("--json")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "flood reported a failure: {status:?}");
    let r = json(&out);
    assert_eq!(r["conns_established"], 1000);
    // Each broadcast is one message on each of the 2 channels: every connection gets one.
    let each = r["broadcasts"]["each"].as_array().unwrap();
    assert_eq!(each.len(), 3);
    for (i, b) in each.iter().enumerate() {
        assert_eq!(b["seq"], i);
        assert_eq!(b["deliveries"], 1000, "{b}");
        let t = b["secs_to_all"].as_f64().unwrap();
        assert!(t > 0.0 && t < 10.0, "{b}");
    }
    assert!(r["broadcasts"]["secs_to_all_median"].as_f64().unwrap() > 0.0);
    // The load follows, numbered after the broadcasts, and is measured apart.
    let published = r["published"].as_u64().unwrap();
    let load = &r["load"];
    assert_eq!(load["published"].as_u64().unwrap(), published - 6);
    assert!(load["published"].as_u64().unwrap() >= 50, "{load}");
    assert_eq!(
        load["deliveries"].as_u64().unwrap(),
        load["published"].as_u64().unwrap() * 500
    );
    assert_eq!(
        r["deliveries"].as_u64().unwrap(),
        3000 + load["deliveries"].as_u64().unwrap()
    );
    let secs = load["secs_to_last_delivery"].as_f64().unwrap();
    assert!(secs > 1.5 && secs < 10.0, "{load}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["reordered"], 0);
    assert_eq!(r["duplicated"], 0);
    std::fs::remove_dir_all(&dir).ok();
}
