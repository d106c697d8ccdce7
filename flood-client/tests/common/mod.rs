//! Helpers shared by the flood integration tests.

#![allow(dead_code)]

use edgecomet::{Config, Server};

/// An edgecomet server in this test process (its PSS is this process's).
pub fn server() -> Server {
    let mut cfg = Config::defaults();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.workers = 2;
    cfg.ws_ping_interval = 0;
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
