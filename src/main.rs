//! The `edgecomet` binary: parse flags, start the workers (or, with `--processes P`, P server
//! processes: `launcher`), wait for SIGTERM/SIGINT, drain. SIGHUP reads the TLS certificate
//! (`--tls-listen`) and the publish and token key files again; without them it is logged and
//! changes nothing. It never drops the clients.

use std::process::ExitCode;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use edgecomet::config::LoadError;
use edgecomet::{Config, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// `MI_OPTION_ARENA_EAGER_COMMIT`, read by build.rs from the mimalloc.h that is compiled (4 in
// mimalloc v3; libmimalloc-sys does not export it).
include!(concat!(env!("OUT_DIR"), "/mi_options.rs"));

/// Commits the allocator's arena as it is used, not at once: with its arena eagerly
/// committed, an idle process held 8.5 MiB of touched anonymous memory, 1.3 MiB without
/// (bench/RESULTS.md, "Fixed cost per process"). The option is read when the first arena is
/// made, at the first allocation, which comes before `main` (the runtime's own): so it is set
/// from a constructor of high priority (a low number), which runs before every other one,
/// mimalloc's included.
extern "C" fn lazy_arena_commit() {
    // SAFETY: mi_option_set only stores a value in mimalloc's static option table; nothing
    // has allocated yet and no other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0) };
}

#[used]
#[unsafe(link_section = ".init_array.00101")]
static LAZY_ARENA_COMMIT: extern "C" fn() = lazy_arena_commit;

fn main() -> ExitCode {
    let loaded = match Config::load() {
        Ok(l) => l,
        Err(LoadError::Clap(e)) => e.exit(),
        Err(e @ LoadError::File(_)) => {
            eprintln!("edgecomet: {e}");
            return ExitCode::from(2);
        }
    };
    if loaded.config.print_config {
        for w in &loaded.warnings {
            eprintln!("{w}");
        }
        print!("{}", loaded.render());
        return ExitCode::SUCCESS;
    }
    edgecomet::logging::init(loaded.config.log_level, loaded.config.log_format);
    for w in &loaded.warnings {
        log::warn!(
            "{}",
            w.trim_start_matches("edgecomet: ")
                .trim_start_matches("warning: ")
        );
    }
    let cfg = loaded.config;
    // Every connection is an open file: the hard limit is the one that counts (a launcher's
    // processes inherit it raised).
    let open_files = edgecomet::server::raise_open_files_limit();
    let open_files_warning = match open_files {
        Ok(limit) => edgecomet::server::open_files_warning(&cfg, limit),
        Err(e) => Some(format!("edgecomet: cannot raise the open-files limit: {e}")),
    };
    if !cfg.transparent_huge_pages
        && let Err(e) = edgecomet::server::disable_transparent_huge_pages()
    {
        log::warn!("cannot disable transparent huge pages: {e}");
    }
    let deadline = cfg.shutdown_timeout();
    let workers = cfg.worker_count();
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cfg.processes > 1 {
        if let Err(e) = cfg.validate() {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
        return edgecomet::launcher::run(&cfg, signals);
    }
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // What starting allocated and freed (configuration, parsing) goes back to the system.
    // SAFETY: mi_collect only walks this thread's heap and the arenas.
    unsafe { libmimalloc_sys::mi_collect(true) };
    // Under --processes: which process said it (the parsers read up to "worker(s)").
    let who = edgecomet::logging::process_index()
        .map(|i| format!(" (process {i}, pid {})", std::process::id()))
        .unwrap_or_default();
    let line = match server.tls_addr() {
        Some(tls) => format!(
            "edgecomet: listening on {} and {tls} (TLS) with {workers} worker(s){who}\n",
            server.local_addr()
        ),
        None => format!(
            "edgecomet: listening on {} with {workers} worker(s){who}\n",
            server.local_addr()
        ),
    };
    // One write(2), plain in every --log-format: scripts wait for this line and read the
    // addresses from it (eprintln! on unbuffered stderr may write it in pieces).
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    server.log_started();
    // After the "listening on" line, which scripts read first.
    if let Some(w) = open_files_warning {
        log::warn!(
            "{}",
            w.trim_start_matches("edgecomet: ")
                .trim_start_matches("warning: ")
        );
    }
    edgecomet::launcher::child(server.shared());
    let Some(sig) = next_stop(&mut signals, &|| server.reload()) else {
        return ExitCode::FAILURE;
    };
    log::info!(
        signal = sig, deadline_ms = deadline.as_millis() as u64;
        "signal {sig}: draining (up to {} ms)",
        deadline.as_millis()
    );
    // A second SIGTERM/SIGINT during the drain exits at once.
    std::thread::spawn(move || {
        if next_stop(&mut signals, &|| "draining: nothing reloaded".to_string()).is_some() {
            log::warn!("second signal: exiting now");
            std::process::exit(1);
        }
    });
    let drain = edgecomet::server::Drain::begin(&server);
    let done = server.shutdown(deadline);
    drain.log(done);
    ExitCode::SUCCESS
}

/// The next SIGTERM or SIGINT; a SIGHUP on the way runs `reload` and logs what it says.
fn next_stop(signals: &mut Signals, reload: &dyn Fn() -> String) -> Option<i32> {
    for sig in signals.forever() {
        if sig == SIGHUP {
            log::info!(
                "SIGHUP: {}; still serving (SIGTERM or SIGINT drains and stops)",
                reload()
            );
            continue;
        }
        return Some(sig);
    }
    None
}
