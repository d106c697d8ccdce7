//! `flood`: opens N subscriber connections (WebSocket, Server-Sent Events or long-poll, all on
//! `GET /sub/{channel}`, or CometD/Bayeux clients of the channel `/{channel}`) to a server that
//! publishes on `POST /pub/{channel}`, holds them, drives a publish load through them, and reports what each connection costs the server (PSS, RSS), the
//! kernel and this client, with connect rate, delivery latency and loss/duplication/reordering.
//!
//! The coordinator (this process) checks the machine's limits, forks worker processes (each below
//! its own open-files limit), samples memory during the ramp, runs the publisher, and gathers the
//! workers' JSON lines into the report. Workers are this same binary run with `--worker-plan`.

use std::process::ExitCode;

use clap::Parser;

use flood::cli::{Args, Command};
use flood::engine;
use flood::plan::WorkerPlan;
use flood::{coordinator, kcheck, sys};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Command::Check(c)) = &args.command {
        return ExitCode::from(kcheck::run(c));
    }
    if let Some(plan) = &args.worker_plan {
        // Workers share the terminal's process group: Ctrl-C (and a SIGTERM sent to the group)
        // is the coordinator's to handle; it tells the workers to close, and a worker whose
        // coordinator is gone ends when its stdin closes.
        // SAFETY: setting a signal disposition to SIG_IGN has no handler to be unsafe about.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
        let plan: WorkerPlan = match serde_json::from_str(plan) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("flood worker: bad plan: {e}");
                return ExitCode::from(2);
            }
        };
        sys::raise_nofile();
        // Many small per-connection pieces: 4 KiB pages keep our own figure honest (with
        // transparent huge pages the heap grows in 2 MiB steps).
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
        return match engine::run(plan) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flood worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match coordinator::coordinate(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flood: {e}");
            ExitCode::from(2)
        }
    }
}
