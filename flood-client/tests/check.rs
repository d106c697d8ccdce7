//! `flood check` (kernel-tuning/check) on this machine's live limits: the table, and an exit
//! status that agrees with its verdict line.

use std::process::Command;

fn check(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flood"))
        .arg("check")
        .args(args)
        .output()
        .expect("run flood check");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn small_runs_pass_and_the_status_agrees_with_the_table() {
    let (rc, t) = check(&["--conns", "1000", "--role", "both"]);
    assert_eq!(rc, 0, "{t}");
    assert!(t.starts_with("limit "), "{t}");
    for row in [
        "server open files",
        "fs.file-max",
        "ports",
        "memory",
        "tcp_mem",
    ] {
        assert!(t.lines().any(|l| l.starts_with(row)), "no {row} row: {t}");
    }
    assert!(
        t.trim_end()
            .ends_with("1000 connections: nothing blocks them"),
        "{t}"
    );
    // A million in one server process: blocked here (open files are capped per process) or
    // not, but the exit status says the same as the table.
    let (rc, t) = check(&["--conns", "1000000", "--role", "server"]);
    let blocked = t.contains("BLOCKED by");
    assert_eq!(rc, i32::from(blocked), "{t}");
    assert!(
        !t.lines().any(|l| l.starts_with("ports ")),
        "no client rows for --role server"
    );
}

#[test]
fn bad_arguments_exit_2() {
    assert_eq!(check(&[]).0, 2);
    assert_eq!(check(&["--conns", "x"]).0, 2);
    assert_eq!(
        check(&["--conns", "10", "--flood-report", "/nonexistent"]).0,
        2
    );
}
