//! `GET /metrics`: everything `/stats` shows, in the Prometheus text exposition format 0.0.4
//! ([`stats::Exposition`]), plus the two histograms of every worker, the process's own figures
//! read from `/proc/self`, and under `--processes` the launcher's sums.
//!
//! Names: `edgecomet_NAME` for a gauge, `edgecomet_NAME_total` for a counter (NAME as in
//! `/stats`), each worker's figure labelled `worker="N"`; the `conns_*` gauges are one family,
//! `edgecomet_connections{worker,phase}`; the hub's process-wide values have no label; the sums
//! over all processes of `--processes` are `edgecomet_processes_NAME[_total]` (their own names, so
//! that summing a family never counts a process twice). Help texts are the figures' doc comments
//! (`stats::counters!`).
//!
//! Built on the worker that got the request, from relaxed loads of the counters, one read of
//! `/proc/self/stat` (and of `/proc/stat` once, for the start time), a `stat(2)` and a
//! `getrlimit(2)`: its cost does not depend on the number of connections (the open file count is
//! `st_size` of `/proc/self/fd`, which Linux ≥ 6.2 gives without listing the directory). About
//! 23 KB and 70–90 µs with 2 workers (bench/RESULTS.md, "Metrics").

use std::sync::OnceLock;

use crate::runtime::shared::Shared;
use crate::stats::{self, Exposition, Histogram, Kind, Meta, WorkerStats};

const PREFIX: &str = "edgecomet_";

/// The `/metrics` document.
pub fn render(shared: &Shared) -> String {
    let mut x = Exposition::new();
    let workers: Vec<&WorkerStats> = shared.stats.iter().map(|s| &**s).collect();
    let labels: Vec<String> = (0..workers.len()).map(|i| i.to_string()).collect();
    let snaps: Vec<Vec<(&str, u64)>> = workers.iter().map(|w| w.snapshot()).collect();

    x.family(
        "edgecomet_info",
        "gauge",
        "Always 1: the process id (processes sharing a port answer in turn) and the version.",
    );
    x.sample(
        "edgecomet_info",
        &[
            ("pid", &std::process::id().to_string()),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    x.family(
        "edgecomet_workers",
        "gauge",
        "Worker threads (event loops).",
    );
    x.sample("edgecomet_workers", &[], workers.len());

    // The connection gauges, one family labelled by phase.
    x.family(
        "edgecomet_connections",
        "gauge",
        "Open connections by phase (what the connection is doing now: http, ws_sub, ws_echo, \
         sse, stream, poll, bayeux_poll, bayeux_ws, closing); each is in exactly one.",
    );
    for (w, snap) in snaps.iter().enumerate() {
        for (name, v) in snap {
            if let Some(phase) = name.strip_prefix("conns_") {
                x.sample(
                    "edgecomet_connections",
                    &[("worker", &labels[w]), ("phase", phase)],
                    v,
                );
            }
        }
    }
    // Every other per-worker figure, one family each.
    for (j, meta) in WorkerStats::META.iter().enumerate() {
        if meta.name.starts_with("conns_") {
            continue;
        }
        let name = family(&mut x, PREFIX, meta.name, meta, "");
        for (w, snap) in snaps.iter().enumerate() {
            x.sample(&name, &[("worker", &labels[w])], snap[j].1);
        }
    }
    // The histograms.
    histogram(
        &mut x,
        &workers,
        &labels,
        (
            &WorkerStats::HISTOGRAMS[0],
            "edgecomet_publish_write_seconds",
        ),
        |w| &w.publish_write,
        1_000_000,
    );
    histogram(
        &mut x,
        &workers,
        &labels,
        (
            &WorkerStats::HISTOGRAMS[1],
            "edgecomet_queued_at_close_bytes",
        ),
        |w| &w.queued_at_close,
        1,
    );
    // The hub's process-wide values.
    for (k, v) in shared.extra_stats() {
        let name = family(&mut x, PREFIX, k, &lookup(k), "");
        x.sample(&name, &[], v);
    }
    process(&mut x);
    // `--processes`: the launcher's sums.
    let sums = shared
        .processes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_deref()
        .and_then(stats::parse_sums);
    if let Some(s) = sums {
        processes(&mut x, &s);
    }
    x.finish()
}

/// One histogram family, a histogram per worker; values divided by `scale` (see
/// [`Exposition::histogram`]).
fn histogram(
    x: &mut Exposition,
    workers: &[&WorkerStats],
    labels: &[String],
    (meta, name): (&Meta, &str),
    get: impl Fn(&WorkerStats) -> &Histogram,
    scale: u64,
) {
    x.family(name, "histogram", &meta.help());
    for (w, ws) in workers.iter().enumerate() {
        x.histogram(name, &[("worker", &labels[w])], &get(ws).snapshot(), scale);
    }
}

/// `# HELP` and `# TYPE` of the family of figure `figure`; returns the family's name.
fn family(
    x: &mut Exposition,
    prefix: &str,
    figure: &str,
    meta: &Meta,
    help_prefix: &str,
) -> String {
    let kind = meta.kind();
    let name = stats::metric_name(prefix, figure, kind);
    let t = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    x.family(&name, t, &format!("{help_prefix}{}", meta.help()));
    name
}

/// The meta of a `/stats` name (a per-worker figure or a hub value); a name nothing declares
/// (a newer process's, under the launcher) is a gauge without help.
fn lookup(name: &str) -> Meta {
    WorkerStats::META
        .iter()
        .chain(Shared::extra_meta())
        .find(|m| m.name == name)
        .copied()
        .unwrap_or(Meta {
            name: "",
            doc: " Gauge: (not documented)",
        })
}

/// The sums over all processes of `--processes` (`/stats`' `"processes"`).
fn processes(x: &mut Exposition, s: &stats::Sums) {
    x.family(
        "edgecomet_processes",
        "gauge",
        "--processes: processes the launcher started.",
    );
    x.sample("edgecomet_processes", &[], s.count);
    x.family(
        "edgecomet_processes_reporting",
        "gauge",
        "--processes: processes whose figures are in the edgecomet_processes_* sums (each \
         reports once a second).",
    );
    x.sample("edgecomet_processes_reporting", &[], s.reporting);
    x.family(
        "edgecomet_processes_connections",
        "gauge",
        "--processes: open connections of all processes by phase.",
    );
    for (k, v) in &s.total {
        if let Some(phase) = k.strip_prefix("conns_") {
            x.sample("edgecomet_processes_connections", &[("phase", phase)], v);
        }
    }
    let prefix = "edgecomet_processes_";
    for (k, v) in s.total.iter().chain(&s.hub) {
        if k.starts_with("conns_") {
            continue;
        }
        let name = family(x, prefix, k, &lookup(k), "All processes: ");
        x.sample(&name, &[], v);
    }
}

/// The process's own figures, with the names every Prometheus client library uses.
fn process(x: &mut Exposition) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces and parentheses): field 3 on.
    let f: Vec<&str> = stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| {
        rest.split_ascii_whitespace().collect()
    });
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    // SAFETY: sysconf with a valid name reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;

    if let (Some(u), Some(s)) = (field(14), field(15)) {
        x.family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
        );
        x.sample("process_cpu_seconds_total", &[], (u + s) as f64 / hz as f64);
    }
    if let Some(rss) = field(24) {
        x.family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        x.sample("process_resident_memory_bytes", &[], rss * page);
    }
    if let Some(vsize) = field(23) {
        x.family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
        );
        x.sample("process_virtual_memory_bytes", &[], vsize);
    }
    if let Some(start) = start_time(field(22), hz) {
        x.family(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
        );
        x.sample("process_start_time_seconds", &[], start);
    }
    if let Some(n) = open_fds() {
        x.family(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
        );
        x.sample("process_open_fds", &[], n);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        x.family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
        );
        x.sample("process_max_fds", &[], lim.rlim_cur);
    }
}

/// Seconds since the epoch at which the process started: its start in clock ticks after boot
/// (`/proc/self/stat` field 22) plus the boot time (`btime` of `/proc/stat`). It never changes,
/// so it is read once.
fn start_time(ticks: Option<u64>, hz: u64) -> Option<f64> {
    static START: OnceLock<Option<f64>> = OnceLock::new();
    *START.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let btime: u64 = stat
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        Some(btime as f64 + ticks? as f64 / hz as f64)
    })
}

/// Open file descriptors: `st_size` of `/proc/self/fd` (Linux ≥ 6.2: the count, without listing
/// a million entries); older kernels say 0 there, and the directory is counted instead.
fn open_fds() -> Option<u64> {
    let n = std::fs::metadata("/proc/self/fd").ok()?.len();
    if n > 0 {
        return Some(n);
    }
    // The listing's own descriptor is counted too: one less.
    Some((std::fs::read_dir("/proc/self/fd").ok()?.count() as u64).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Every family name is a valid Prometheus name and none is written twice (a hub value and
    /// a worker figure of the same name would make two `# TYPE` lines of one family).
    #[test]
    fn family_names_are_valid_and_unique() {
        let valid = |n: &str| {
            n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
        };
        let mut seen = HashSet::new();
        let fixed = [
            "edgecomet_info",
            "edgecomet_workers",
            "edgecomet_connections",
            "edgecomet_publish_write_seconds",
            "edgecomet_queued_at_close_bytes",
            "edgecomet_processes",
            "edgecomet_processes_reporting",
            "edgecomet_processes_connections",
        ];
        let figures = WorkerStats::META
            .iter()
            .filter(|m| !m.name.starts_with("conns_"))
            .chain(Shared::extra_meta());
        let mut names: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
        for m in figures {
            assert!(!m.help().is_empty(), "{} has no doc", m.name);
            names.push(stats::metric_name(PREFIX, m.name, m.kind()));
            names.push(stats::metric_name("edgecomet_processes_", m.name, m.kind()));
        }
        for n in names {
            assert!(valid(&n), "{n}");
            assert!(seen.insert(n.clone()), "{n} twice");
        }
        // The figures declared as gauges are exactly those /stats documents as gauges.
        let gauges: Vec<&str> = Shared::extra_meta()
            .filter(|m| m.kind() == Kind::Gauge)
            .map(|m| m.name)
            .collect();
        assert!(gauges.contains(&"broker_connected") && gauges.contains(&"history_bytes"));
        assert!(!gauges.contains(&"tls_reloads") && !gauges.contains(&"session_drops"));
    }
}
