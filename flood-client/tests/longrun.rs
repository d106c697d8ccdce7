//! flood for long capacity runs, against a real edgecomet started in this test process: the
//! report on SIGTERM, `--jsonl` rows while running, `--stages`, and `--plot`'s time series.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("flood-long-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The `--jsonl` rows written so far (every line whole: a line is one write).
fn rows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect()
}

/// Waits until `cond` holds for the rows, or fails after `limit` (flood exiting early too).
fn wait_for_rows(
    flood: &mut Child,
    path: &Path,
    limit: Duration,
    cond: impl Fn(&[serde_json::Value]) -> bool,
) {
    let start = Instant::now();
    loop {
        if cond(&rows(path)) {
            return;
        }
        assert!(
            flood.try_wait().unwrap().is_none(),
            "flood exited before the rows showed it"
        );
        assert!(start.elapsed() < limit, "rows: {:?}", rows(path));
        // Polls the file flood writes: the condition is the rows, not the time.
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_writes_the_report_and_says_it_was_interrupted() {
    let srv = server();
    let d = dir("term");
    let (report, jsonl) = (d.join("report.json"), d.join("rows.jsonl"));
    let mut flood = Command::new(env!("CARGO_BIN_EXE_flood"))
        .args(["--url", &format!("ws://{}/sub/term", srv.local_addr())])
        .args(["--conns", "300", "--rate", "max", "--procs", "2"])
        // Until a signal.
        .args(["--duration", "0"])
        .args(["--server-pid", &std::process::id().to_string()])
        .arg("--json")
        .arg(&report)
        .arg("--jsonl")
        .arg(&jsonl)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_rows(&mut flood, &jsonl, Duration::from_secs(30), |r| {
        let held = r
            .iter()
            .filter(|r| r["phase"] == "hold" && r["open"] == 300);
        held.count() >= 2
    });
    // SAFETY: kill with a pid of our own child and a valid signal.
    assert_eq!(unsafe { libc::kill(flood.id() as i32, libc::SIGTERM) }, 0);
    let mut out = String::new();
    flood
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = flood.wait().unwrap();
    print!("{out}");
    // The run ended by the signal, as it does with Ctrl-C: a report, and a clean one.
    assert!(status.success(), "{status:?}");
    assert!(out.contains("== flood summary"), "{out}");
    assert!(out.contains("interrupted by SIGTERM"), "{out}");
    let r = json(&report);
    assert_eq!(r["interrupted"], "SIGTERM");
    assert_eq!(r["conns_established"], 300);
    // The progress lines (not a terminal: whole lines) name no error kind that did not occur.
    let progress: Vec<&str> = out.lines().filter(|l| l.contains("] hold:")).collect();
    assert!(!progress.is_empty(), "{out}");
    for l in progress {
        assert!(l.contains("errors 0,") && !l.contains("refused"), "{l}");
    }
    // A row a second, each whole, time going forward, the fields documented.
    let rows = rows(&jsonl);
    assert!(rows.len() >= 2, "{rows:?}");
    for w in rows.windows(2) {
        assert!(w[1]["t"].as_f64() > w[0]["t"].as_f64(), "{w:?}");
    }
    for r in &rows {
        for k in [
            "t",
            "phase",
            "open",
            "connects_per_sec",
            "closes_per_sec",
            "deliveries_per_sec",
            "latency_us",
            "errors",
            "errors_total",
            "server_pss_bytes",
            "kernel_bytes",
        ] {
            assert!(r.get(k).is_some(), "no {k} in {r}");
        }
        assert_eq!(r["errors"], serde_json::json!({}), "{r}");
        // This process is the server: flood reads its PSS.
        assert!(r["server_pss_bytes"].as_u64().unwrap() > 0, "{r}");
    }
    // The connections opened in the first rows: 300 in all.
    let opened: f64 = rows
        .windows(2)
        .map(|w| {
            w[1]["connects_per_sec"].as_f64().unwrap()
                * (w[1]["t"].as_f64().unwrap() - w[0]["t"].as_f64().unwrap())
        })
        .sum::<f64>()
        + rows[0]["connects_per_sec"].as_f64().unwrap() * rows[0]["t"].as_f64().unwrap();
    assert!((opened - 300.0).abs() < 30.0, "opened {opened}: {rows:?}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn rows_and_the_plot_show_deliveries_and_latency() {
    let srv = server();
    let d = dir("rows");
    let (jsonl, plot) = (d.join("rows.jsonl"), d.join("run.svg"));
    let url = format!("ws://{}/sub/rows", srv.local_addr());
    let (status, out, r) = flood_url(
        &url,
        "rows",
        &[
            "--conns",
            "500",
            "--rate",
            "max",
            "--procs",
            "2",
            "--channels",
            "2",
            "--duration",
            "3s",
            "--drain",
            "3000ms",
            "--publish-rate",
            "100",
            "--size",
            "1KiB",
            "--jsonl",
            jsonl.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{out}");
    assert_eq!(r["params"]["size"], 1024);
    assert_eq!(r["params"]["duration"], 3.0);
    assert_eq!(r["interrupted"], serde_json::Value::Null);
    let rows = rows(&jsonl);
    let hold: Vec<_> = rows.iter().filter(|r| r["phase"] == "hold").collect();
    assert!(hold.len() >= 2, "{rows:?}");
    // 100 messages/s on 2 channels of 250: about 25,000 deliveries a second.
    let busy: Vec<_> = hold
        .iter()
        .filter(|r| r["deliveries_per_sec"].as_f64().unwrap() > 10_000.0)
        .collect();
    assert!(!busy.is_empty(), "{hold:?}");
    for r in busy {
        let l = &r["latency_us"];
        assert!(l["count"].as_u64().unwrap() > 0, "{r}");
        assert!(l["p50"].as_u64().unwrap() > 0, "{r}");
        assert!(l["p50"].as_u64() <= l["p99"].as_u64(), "{r}");
    }
    // The deliveries of the rows add up to the report's (each row covers its own interval).
    let delivered: f64 = rows
        .windows(2)
        .map(|w| {
            w[1]["deliveries_per_sec"].as_f64().unwrap()
                * (w[1]["t"].as_f64().unwrap() - w[0]["t"].as_f64().unwrap())
        })
        .sum();
    let total = r["deliveries"].as_f64().unwrap();
    assert!(delivered <= total * 1.01, "{delivered} of {total}");
    assert!(delivered >= total * 0.5, "{delivered} of {total}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    for title in [
        "flood: the run over time",
        "Open connections",
        "Delivery latency of each second",
        "Memory per open connection (log axis)",
        "Memory per connection during the ramp",
        "publish_rate 100",
    ] {
        assert!(svg.contains(title), "no {title:?} in the plot");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn stages_ramp_up_hold_and_close_down() {
    let srv = server();
    let d = dir("stages");
    let jsonl = d.join("rows.jsonl");
    let url = format!("ws://{}/sub/stages", srv.local_addr());
    let (status, out, r) = flood_url(
        &url,
        "stages",
        &[
            "--stages",
            "600:1s,1000:1s,1000:1500ms,0:1s",
            "--procs",
            "2",
            "--jsonl",
            jsonl.to_str().unwrap(),
        ],
    );
    assert!(status.success(), "{out}");
    let st = &r["stages"];
    assert_eq!(st["spec"], "600:1s,1000:1s,1000:1500ms,0:1s");
    assert_eq!(st["peak_target"], 1000);
    assert_eq!(st["peak_open"], 1000);
    assert_eq!(st["open_at_end"], 0);
    assert_eq!(st["closed_by_client"], 1000);
    assert_eq!(r["conns_target"], 1000);
    assert_eq!(r["params"]["stages"], "600:1s,1000:1s,1000:1500ms,0:1s");
    // Memory was read with the most connections open.
    assert_eq!(st["memory_open"], 1000, "{st}");
    assert_eq!(r["conns_established"], 1000);
    // Read (its size is not checked: the other tests' servers share this process's PSS).
    assert!(r["server_pss_bytes_per_conn"].is_f64(), "{r:#}");
    let errors = r["errors"].as_object().unwrap();
    assert!(errors.values().all(|v| v == 0), "errors: {errors:?}");
    assert!(out.contains("stages 600:1s,1000:1s,1000:1500ms,0:1s: at most 1000 of 1000 open"));
    // Up, never above the plan, then down through the closes.
    let rows = rows(&jsonl);
    let open: Vec<u64> = rows.iter().map(|r| r["open"].as_u64().unwrap()).collect();
    assert!(open.iter().all(|&n| n <= 1000), "{open:?}");
    let top = open
        .iter()
        .position(|&n| n == 1000)
        .expect("1000 open in a row");
    assert!(
        open[..top].iter().any(|&n| n > 0 && n < 1000),
        "a ramp: {open:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r["closes_per_sec"].as_f64().unwrap() > 0.0),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r["phase"] == "stages" || r["phase"] == "drain" || r["phase"] == "close")
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn stages_refuse_a_bad_plan_and_the_flags_they_replace() {
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_flood"))
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--stages", "1000:30s,oops"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("stage 2") && err.contains("TARGET:DURATION"),
        "{err}"
    );
    let (code, err) = run(&["--stages", "1000:30s", "--conns", "5"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--conns") && err.contains("--stages"), "{err}");
}
