//! flood with messages larger than one read: split frames must be carried whole across reads.
//! A test binary of its own so that it does not disturb the memory figures of the others.

mod common;

use std::process::Command;

use common::*;

/// Messages larger than one read arrive split across reads; the leftover must be carried whole.
#[test]
fn messages_larger_than_a_read_are_reassembled() {
    let srv = server();
    let dir = std::env::temp_dir().join(format!("flood-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    let status = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", &format!("ws://{}/sub/big", srv.local_addr())])
        .args(["--conns", "50", "--rate", "max", "--duration", "1"])
        .args(["--publish-rate", "20", "--size", "200000"])
        .arg("--json")
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let r = json(&out);
    let published = r["published"].as_u64().unwrap();
    assert!(published > 0);
    assert_eq!(r["deliveries"].as_u64().unwrap(), published * 50);
    assert_eq!(r["lost"], 0);
    std::fs::remove_dir_all(&dir).ok();
}
