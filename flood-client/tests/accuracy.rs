//! The server bytes per connection that `flood` reports agree within 10% with an independent
//! reading of the server's PSS taken in the same test. A test binary of its own, so that no other
//! test shares the process whose memory is measured.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn server_memory_agrees_with_an_independent_reading() {
    let srv = server();
    let dir = std::env::temp_dir().join(format!("flood-acc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    // Settle the allocator with a first round of connections, so both readings see the same
    // steady state.
    let warm = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", &format!("ws://{}/sub/acc", srv.local_addr())])
        .args(["--conns", "2000", "--rate", "max", "--duration", "1"])
        .args(["--server-pid", &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(warm.success());
    std::thread::sleep(Duration::from_secs(1));
    let mut child = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", &format!("ws://{}/sub/acc", srv.local_addr())])
        .args(["--conns", "15000", "--rate", "max", "--duration", "3"])
        .args(["--server-pid", &std::process::id().to_string()])
        .arg("--json")
        .arg(&out)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out_lines = BufReader::new(child.stdout.take().unwrap());
    // Our reading before any connection: flood takes its own now too, before it starts its
    // workers (the spawn and the reader above are already paid for in both).
    let before = pss_of_self();
    // Take our own reading while flood holds the connections.
    let mut during = None;
    for line in out_lines.lines().map_while(Result::ok) {
        if line.contains("connections open after") {
            // flood printed this right after its own reading: take ours at the same moment.
            during = Some(pss_of_self());
        }
    }
    assert!(child.wait().unwrap().success());
    let during = during.expect("flood printed the ramp line");
    let r = json(&out);
    let n = r["conns_established"].as_f64().unwrap();
    assert_eq!(n, 15000.0);
    let ours = during.saturating_sub(before) as f64 / n;
    let flood = r["server_pss_bytes_per_conn"].as_f64().unwrap();
    assert!(ours > 0.0 && flood > 0.0, "ours {ours}, flood {flood}");
    let diff = (flood - ours).abs() / ours;
    eprintln!(
        "flood {flood:.1} B/conn, independent {ours:.1} B/conn, {:.1}% apart",
        diff * 100.0
    );
    assert!(
        diff <= 0.10,
        "flood says {flood:.1} B/conn, independent reading {ours:.1} B/conn ({:.1}% apart)",
        diff * 100.0
    );
    std::fs::remove_dir_all(&dir).ok();
}
