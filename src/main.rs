//! The `edgecomet` binary: parse flags, start the workers (or, with `--processes P`, P server
//! processes: `launcher`), wait for SIGTERM/SIGINT, drain.

use std::process::ExitCode;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use edgecomet::{Config, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cfg = Config::parse();
    if !cfg.transparent_huge_pages
        && let Err(e) = edgecomet::server::disable_transparent_huge_pages()
    {
        eprintln!("edgecomet: cannot disable transparent huge pages: {e}");
    }
    let deadline = cfg.shutdown_timeout();
    let workers = cfg.worker_count();
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgecomet: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cfg.processes > 1 {
        if let Err(e) = cfg.validate() {
            eprintln!("edgecomet: cannot start: {e}");
            return ExitCode::FAILURE;
        }
        return edgecomet::launcher::run(&cfg, signals);
    }
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("edgecomet: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "edgecomet: listening on {} with {workers} worker(s)",
        server.local_addr()
    );
    edgecomet::launcher::child(server.shared());
    let Some(sig) = signals.forever().next() else {
        return ExitCode::FAILURE;
    };
    eprintln!(
        "edgecomet: signal {sig}: draining (up to {} ms)",
        deadline.as_millis()
    );
    // A second signal during the drain exits at once.
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("edgecomet: second signal: exiting now");
            std::process::exit(1);
        }
    });
    if server.shutdown(deadline + std::time::Duration::from_millis(500)) {
        ExitCode::SUCCESS
    } else {
        eprintln!("edgecomet: drain deadline passed; exiting with connections still open");
        ExitCode::SUCCESS
    }
}
