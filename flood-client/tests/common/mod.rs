//! Helpers shared by the flood integration tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use edgecomet::{Config, Server};

/// An edgecomet server in this test process (its PSS is this process's).
pub fn server() -> Server {
    server_with(|_| {})
}

/// The same, with `f` applied to the configuration.
pub fn server_with(f: impl FnOnce(&mut Config)) -> Server {
    let mut cfg = Config::defaults();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.workers = 2;
    cfg.ws_ping_interval = 0;
    f(&mut cfg);
    Server::start(cfg).unwrap()
}

pub fn json(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// This process's PSS in bytes, read directly from /proc (independent of flood's code).
pub fn pss_of_self() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Runs flood with `args` against `srv` on `/sub/{channel}`; returns the JSON report (flood must
/// report success).
pub fn flood(srv: &Server, channel: &str, args: &[&str]) -> serde_json::Value {
    let (status, r) = flood_status(srv, channel, args);
    assert!(
        status.success(),
        "flood reported a failure: {status:?}\n{r:#}"
    );
    r
}

/// Runs flood; its exit status and JSON report.
pub fn flood_status(srv: &Server, channel: &str, args: &[&str]) -> (ExitStatus, serde_json::Value) {
    let url = format!("http://{}/sub/{channel}", srv.local_addr());
    let (status, _, r) = flood_url(&url, channel, args);
    (status, r)
}

/// Runs flood on `url` (the server is this process); its exit status, what it printed on
/// stdout, and its JSON report.
pub fn flood_url(url: &str, name: &str, args: &[&str]) -> (ExitStatus, String, serde_json::Value) {
    let dir: PathBuf = std::env::temp_dir().join(format!("flood-tr-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    let o = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", url])
        .args(["--server-pid", &std::process::id().to_string()])
        .args(args)
        .arg("--json")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    print!("{stdout}");
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    let r = json(&out);
    std::fs::remove_dir_all(&dir).ok();
    (o.status, stdout, r)
}

/// Every message reached each of `per_channel` subscribers once, in order, with no gap.
pub fn check_exact(r: &serde_json::Value, per_channel: u64) -> u64 {
    let published = r["published"].as_u64().unwrap();
    assert_eq!(r["publish_errors"], 0);
    assert_eq!(r["deliveries"].as_u64().unwrap(), published * per_channel);
    assert_eq!(r["expected_deliveries"], r["deliveries"]);
    assert_eq!(r["lost"], 0);
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["reordered"], 0);
    assert_eq!(r["gaps_reported"], 0);
    assert_eq!(r["foreign_frames"], 0);
    assert_eq!(
        r["latency_us"]["count"].as_u64().unwrap(),
        published * per_channel
    );
    published
}

/// 1,000 connections of `transport` over 4 channels and 2 worker processes with 200 messages/s:
/// every message reaches each of its 250 subscribers once and in order, and the report is whole.
pub fn thousand_connections(transport: &str) {
    thousand_connections_with(transport, &[]);
}

/// The same, with `extra` flags (e.g. `--bayeux-transport websocket`); returns the report.
pub fn thousand_connections_with(transport: &str, extra: &[&str]) -> serde_json::Value {
    let srv = server();
    let mut args = vec![
        "--transport",
        transport,
        "--conns",
        "1000",
        "--rate",
        "max",
        "--procs",
        "2",
        "--channels",
        "4",
        "--duration",
        "2",
        "--publish-rate",
        "200",
        "--size",
        "100",
    ];
    args.extend_from_slice(extra);
    let r = flood(&srv, &format!("t{transport}"), &args);
    assert_eq!(r["transport"], transport);
    assert_eq!(r["params"]["transport"], transport);
    assert_eq!(r["conns_established"], 1000);
    let errors = r["errors"].as_object().unwrap();
    assert!(errors.values().all(|v| v == 0), "errors: {errors:?}");
    // 4 channels, 250 subscribers each.
    let published = check_exact(&r, 250);
    assert!(published >= 200, "published {published}");
    // This process is the server and runs nothing else: its memory grew with the connections.
    for k in ["server_pss_bytes_per_conn", "server_rss_bytes_per_conn"] {
        assert!(r[k].as_f64().unwrap() > 0.0, "{k} = {}", r[k]);
    }
    // The kernel figure is machine-wide (other processes' sockets come and go): only present.
    assert!(r["kernel_bytes_per_conn"].is_f64(), "{r:#}");
    assert!(r["client_bytes_per_conn"].as_f64().unwrap() < 1024.0);
    let l = &r["latency_us"];
    assert!(l["p50"].as_u64().unwrap() > 0);
    assert!(l["p50"].as_u64() <= l["p99"].as_u64());
    assert!(l["p99"].as_u64() <= l["max"].as_u64());
    r
}
