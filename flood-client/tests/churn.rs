//! `--churn`: while holding, the client closes connections and opens new ones in their place.

mod common;

use std::process::Command;

use common::*;

#[test]
fn churn_replaces_connections_and_keeps_the_count() {
    let srv = server();
    let r = flood(
        &srv,
        "churn",
        &[
            "--conns",
            "200",
            "--rate",
            "max",
            "--procs",
            "2",
            "--duration",
            "3",
            "--churn",
            "100",
        ],
    );
    // Every replacement opened: the run ends with all 200 open, no error.
    assert_eq!(r["conns_established"], 200);
    let errors = r["errors"].as_object().unwrap();
    assert!(errors.values().all(|v| v == 0), "errors: {errors:?}");
    let c = &r["churn"];
    let n = c["closed_by_client"].as_u64().unwrap();
    // 100/s from the end of the ramp: ~1 s of settling plus the 3 s hold.
    assert!((250..=600).contains(&n), "{c}");
    let rate = c["per_sec"].as_f64().unwrap();
    assert!((80.0..=120.0).contains(&rate), "{c}");
    assert!(c["tcp_tw_peak"].as_u64().is_some(), "{c}");
    // The server saw them come and go: none left behind.
    let open = || {
        let j: serde_json::Value = serde_json::from_str(&srv.stats_json()).unwrap();
        j["total"]["conns_ws_sub"].as_u64().unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while open() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(open(), 0);
}

#[test]
fn churn_with_a_publish_load_is_refused() {
    for publish in [["--publish-rate", "10"], ["--broadcasts", "1"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_flood"))
            .args(["--churn", "10", "--conns", "1"])
            .args(publish)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--churn does not go with --publish-rate or --broadcasts"),
            "{err}"
        );
    }
}
