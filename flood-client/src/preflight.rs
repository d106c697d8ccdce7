//! Preflight: say, before starting, which limit stops the run from reaching N connections.
//!
//! [`read_limits`] reads the limits of this machine (file descriptors, ephemeral ports, memory,
//! TCP buffer pages, listen backlog); [`check`] compares a [`Plan`] with them and returns one
//! [`Finding`] per limit; [`render`] turns the findings into lines for the user. Every `Stop`
//! says which limit is hit, the numbers, and what to change.
//!
//! The checks are arithmetic on the plan and the limits, so they are tested with hand-built
//! [`Limits`] at each boundary.

use std::fmt::Write as _;
use std::fs;
use std::io;

pub mod ehash;

/// File descriptors each process keeps for itself beyond its connections (stdio, epoll, pipes,
/// the binary's own files).
pub const FD_MARGIN: u64 = 64;

/// Kernel slab memory per loopback connection, both ends (two sockets), measured on the
/// development machine: about 10.2 KiB.
pub const KERNEL_BYTES_PER_LOOPBACK_CONN: u64 = 10_445;

/// A value [`read_limits`] could not read; [`check`] skips the limit and warns.
pub const UNKNOWN: u64 = u64::MAX;

/// The port range the kernel uses by default, assumed when `ip_local_port_range` is unreadable.
pub const DEFAULT_PORT_RANGE: (u16, u16) = (32768, 60999);

/// The widest ephemeral port range Linux allows without colliding with privileged ports.
const WIDEST_PORT_RANGE: (u16, u16) = (1024, 65535);

/// What the run intends to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Connections wanted.
    pub conns: u64,
    /// Client processes planned (0 is treated as 1).
    pub procs: u32,
    /// Distinct client source IPs (0 is treated as 1: the kernel's choice).
    pub sources: u32,
    /// Distinct (server ip, port) targets (0 is treated as 1).
    pub targets: u32,
    /// The server runs on this machine: its fds, sockets and memory count here too.
    pub server_local: bool,
    /// The client (flood) runs on this machine. False for `check --role server`.
    pub client_here: bool,
    /// Server processes sharing the connections (each needs its share of open files).
    pub server_procs: u32,
    /// The server's open files are checked as a hard requirement (`check`); flood only warns,
    /// since it cannot see the server's own limit.
    pub server_strict: bool,
    /// Estimate of this client's own memory per connection, bytes (use 1024).
    pub client_bytes_per_conn: u64,
    /// Estimate of the server's memory per connection, bytes (use 1024 unless told).
    pub server_bytes_per_conn: u64,
}

/// The limits of this machine and process. A field [`read_limits`] could not read is
/// [`UNKNOWN`] (for `port_range`: [`DEFAULT_PORT_RANGE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Soft `RLIMIT_NOFILE` of this process (inherited by the client processes).
    pub nofile_soft: u64,
    /// Hard `RLIMIT_NOFILE`: how far the soft limit can be raised without privileges.
    pub nofile_hard: u64,
    /// `fs.nr_open`: the most any process's `RLIMIT_NOFILE` can be.
    pub nr_open: u64,
    /// `fs.file-max`: open files system-wide.
    pub file_max: u64,
    /// Open files system-wide now (`fs.file-nr`, allocated minus free).
    pub file_nr_used: u64,
    /// `net.ipv4.ip_local_port_range`, inclusive.
    pub port_range: (u16, u16),
    /// `MemAvailable` from `/proc/meminfo`, bytes.
    pub mem_available: u64,
    /// Third value of `net.ipv4.tcp_mem`: pages all TCP sockets may hold before the kernel
    /// refuses buffer memory.
    pub tcp_mem_max_pages: u64,
    /// `net.core.somaxconn`: cap on a listen backlog.
    pub somaxconn: u64,
    /// `vm.max_map_count`: memory mappings per process.
    pub max_map_count: u64,
    /// This process may raise its hard `RLIMIT_NOFILE` (it has `CAP_SYS_RESOURCE`). Without
    /// it, not even root can go above the hard limit it was given.
    pub can_raise_nofile: bool,
    /// `net.ipv4.tcp_max_syn_backlog`: half-open connections queued per listener.
    pub syn_backlog: u64,
    /// `net.netfilter.nf_conntrack_max`, or [`UNKNOWN`] when conntrack is not loaded (then
    /// nothing is tracked and there is no limit).
    pub conntrack_max: u64,
    /// `net.netfilter.nf_conntrack_count`: entries in use.
    pub conntrack_used: u64,
    /// Conntrack tracks this network namespace's loopback connections: a probe connection
    /// raised the count. (A loaded module tracks nothing until a rule needs it.)
    pub conntrack_active: bool,
    /// `fs.epoll.max_user_watches`: fds one user may watch with epoll, over all its processes.
    pub epoll_watches: u64,
    /// Kernel bytes per idle TCP socket: the sizes of the slab objects each socket owns (TCP,
    /// sock_inode_cache, filp, dentry, eventpoll_epi) read from `/proc/slabinfo`, or
    /// [`UNKNOWN`].
    pub socket_slab_bytes: u64,
    /// Buckets of the established-connections hash this network namespace uses
    /// (`net.ipv4.tcp_ehash_entries`, see [`ehash`]), or [`UNKNOWN`].
    pub ehash_buckets: u64,
}

/// Slab caches a TCP socket owns one object of: the socket, its inode, its file, its dentry,
/// its epoll registration.
pub const SOCKET_SLABS: [&str; 5] = ["TCP", "sock_inode_cache", "filp", "dentry", "eventpoll_epi"];

/// Whether a loopback connection made now shows up in `nf_conntrack_count`.
fn conntrack_probe() -> bool {
    const COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";
    let count = || {
        fs::read_to_string(COUNT)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
    };
    let Some(before) = count() else {
        return false;
    };
    let Ok(listener) = std::net::TcpListener::bind("127.0.0.1:0") else {
        return false;
    };
    let Ok(addr) = listener.local_addr() else {
        return false;
    };
    let Ok(_conn) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    count().is_some_and(|after| after > before)
}

/// Sum of the object sizes of [`SOCKET_SLABS`] in a `/proc/slabinfo` text; `None` when one
/// is missing.
pub fn socket_slab_bytes(slabinfo: &str) -> Option<u64> {
    SOCKET_SLABS
        .iter()
        .map(|name| {
            slabinfo.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some(*name))
                    .then(|| w.nth(2).and_then(|v| v.parse::<u64>().ok()))
                    .flatten()
            })
        })
        .sum()
}

/// Whether `CapEff` in a `/proc/self/status` text has `CAP_SYS_RESOURCE` (bit 24).
pub fn has_cap_sys_resource(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

/// Reads [`Limits`] from `getrlimit(RLIMIT_NOFILE)`, `/proc/sys/fs/{nr_open,file-max,file-nr}`,
/// `/proc/sys/net/ipv4/ip_local_port_range`, `MemAvailable` in `/proc/meminfo`,
/// `/proc/sys/net/ipv4/tcp_mem` (third value), `/proc/sys/net/core/somaxconn` and
/// `/proc/sys/vm/max_map_count`. Fails only if `getrlimit` fails; a file that is missing or not
/// understood leaves its field [`UNKNOWN`] and [`check`] says so.
pub fn read_limits() -> io::Result<Limits> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the valid, owned struct and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let words = |path: &str| -> Vec<u64> {
        fs::read_to_string(path)
            .map(|t| t.split_whitespace().map_while(|w| w.parse().ok()).collect())
            .unwrap_or_default()
    };
    let one = |path: &str| words(path).first().copied().unwrap_or(UNKNOWN);
    let file_nr = words("/proc/sys/fs/file-nr");
    let port_range = match words("/proc/sys/net/ipv4/ip_local_port_range")[..] {
        [lo, hi, ..] => match (u16::try_from(lo), u16::try_from(hi)) {
            (Ok(lo), Ok(hi)) => (lo, hi),
            _ => DEFAULT_PORT_RANGE,
        },
        _ => DEFAULT_PORT_RANGE,
    };
    let mem_available = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            crate::memory::meminfo_field(&t, "MemAvailable")
                .ok()
                .flatten()
        })
        .unwrap_or(UNKNOWN);
    Ok(Limits {
        nofile_soft: rlim(r.rlim_cur),
        nofile_hard: rlim(r.rlim_max),
        nr_open: one("/proc/sys/fs/nr_open"),
        file_max: one("/proc/sys/fs/file-max"),
        file_nr_used: match file_nr[..] {
            [allocated, free, ..] => allocated.saturating_sub(free),
            [allocated] => allocated,
            _ => 0,
        },
        port_range,
        mem_available,
        tcp_mem_max_pages: words("/proc/sys/net/ipv4/tcp_mem")
            .get(2)
            .copied()
            .unwrap_or(UNKNOWN),
        somaxconn: one("/proc/sys/net/core/somaxconn"),
        max_map_count: one("/proc/sys/vm/max_map_count"),
        can_raise_nofile: fs::read_to_string("/proc/self/status")
            .is_ok_and(|t| has_cap_sys_resource(&t)),
        syn_backlog: one("/proc/sys/net/ipv4/tcp_max_syn_backlog"),
        conntrack_max: one("/proc/sys/net/netfilter/nf_conntrack_max"),
        conntrack_used: words("/proc/sys/net/netfilter/nf_conntrack_count")
            .first()
            .copied()
            .unwrap_or(0),
        conntrack_active: conntrack_probe(),
        epoll_watches: one("/proc/sys/fs/epoll/max_user_watches"),
        socket_slab_bytes: fs::read_to_string("/proc/slabinfo")
            .ok()
            .and_then(|t| socket_slab_bytes(&t))
            .unwrap_or(UNKNOWN),
        ehash_buckets: fs::read_to_string("/proc/sys/net/ipv4/tcp_ehash_entries")
            .map_or(UNKNOWN, |t| ehash::parse_buckets(&t)),
    })
}

/// `rlim_t` is `u64` on Linux; `RLIM_INFINITY` is `u64::MAX`, which reads as "no limit".
#[allow(clippy::unnecessary_cast)]
fn rlim(v: libc::rlim_t) -> u64 {
    v as u64
}

/// How a limit compares with the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Enough room.
    Ok,
    /// The run can start, but this may hurt it (or could not be checked); the text says why.
    Warn(String),
    /// The run cannot reach the planned connections; the text says the numbers and the fix.
    Stop(String),
}

/// The verdict on one limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Short name of the limit: "open files", "fs.file-max", "ports", "memory", ...
    pub limit: &'static str,
    /// What the plan meets there.
    pub verdict: Verdict,
}

/// flood's own memory per plaintext connection, as the coordinator plans it: its 40-byte entry
/// and the buffers of the few connections that have a partial unit, rounded up generously.
pub const CLIENT_BYTES_PER_CONN: u64 = 1024;

/// What a TLS session adds to a flood connection (`wss://`, `https://`): rustls' unbuffered
/// client state after the handshake (keys, record layer, the state machine, the server's
/// certificate it keeps) on the heap, its box and the 8-byte slot that points to it. Measured:
/// flood's own PSS grew by 4,225–4,344 B per open wss connection (5,000 connections, TLS 1.3,
/// P-256 certificate, release build, against 9–48 B in plaintext); rounded up.
pub const TLS_CLIENT_BYTES_PER_CONN: u64 = 4608;

/// What TLS adds to an edgecomet connection (its session after the handshake: keys, IVs,
/// sequence numbers, rustls' key schedule). Measured: 990–1,056 B more server PSS per idle
/// subscriber over TLS than in plaintext (wss, SSE, held long-poll; bench/RESULTS.md); rounded
/// up.
pub const TLS_SERVER_BYTES_PER_CONN: u64 = 1152;

/// The server's memory per connection for the memory check: 1,024 B (an idle edgecomet
/// subscriber measures about 180–215 B; the rest is margin), plus
/// [`TLS_SERVER_BYTES_PER_CONN`] over TLS.
pub fn server_bytes_per_conn(tls: bool) -> u64 {
    1024 + if tls { TLS_SERVER_BYTES_PER_CONN } else { 0 }
}

/// flood's memory per connection for the memory check: [`CLIENT_BYTES_PER_CONN`], plus
/// [`TLS_CLIENT_BYTES_PER_CONN`] over TLS.
pub fn client_bytes_per_conn(tls: bool) -> u64 {
    CLIENT_BYTES_PER_CONN + if tls { TLS_CLIENT_BYTES_PER_CONN } else { 0 }
}

/// Processes needed so each stays below its soft `RLIMIT_NOFILE` with the margin of
/// [`FD_MARGIN`] fds. At least 1; `u32::MAX` if the limit leaves no room at all.
pub fn procs_needed(conns: u64, nofile_soft: u64) -> u32 {
    let per = nofile_soft.saturating_sub(FD_MARGIN);
    if per == 0 {
        return u32::MAX;
    }
    u32::try_from(conns.div_ceil(per).max(1)).unwrap_or(u32::MAX)
}

/// Checks the plan against the limits, one finding per limit in this order: open files (client
/// processes), server open files (local server only), fs.file-max, ports, memory, tcp_mem,
/// somaxconn (local server only), epoll watches, the established hash, conntrack (when loaded),
/// vm.max_map_count. Every `Stop` says in plain words which
/// limit is hit, the numbers, and what to change.
pub fn check(plan: &Plan, limits: &Limits) -> Vec<Finding> {
    let mut out = Vec::new();
    if plan.client_here {
        out.push(open_files(plan, limits));
    }
    if plan.server_local {
        out.push(server_open_files(plan, limits));
    }
    out.push(file_max(plan, limits));
    if plan.client_here {
        out.push(ports(plan, limits));
    }
    out.push(memory(plan, limits));
    out.push(tcp_mem(plan, limits));
    if plan.server_local {
        out.push(somaxconn(limits));
        out.push(syn_backlog(limits));
    }
    out.push(epoll_watches(plan, limits));
    out.push(ehash::check(plan, limits));
    if limits.conntrack_max != UNKNOWN {
        out.push(conntrack(plan, limits));
    }
    out.push(max_map_count(limits));
    out
}

/// Sockets this machine holds for the plan: one per connection per end that runs here.
fn sockets(plan: &Plan) -> u64 {
    plan.conns
        .saturating_mul(u64::from(plan.client_here) + u64::from(plan.server_local))
}

fn finding(limit: &'static str, verdict: Verdict) -> Finding {
    Finding { limit, verdict }
}

fn unknown(limit: &'static str, what: &str) -> Finding {
    finding(
        limit,
        Verdict::Warn(format!("{limit}: could not read {what}; not checked")),
    )
}

/// Client fds: each process holds its share of the connections plus the margin.
fn open_files(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "open files";
    let procs = plan.procs.max(1);
    let per_proc = plan.conns.div_ceil(u64::from(procs));
    let need = per_proc.saturating_add(FD_MARGIN);
    if need <= l.nofile_soft {
        return finding(NAME, Verdict::Ok);
    }
    let each = if procs == 1 {
        "1 process".to_string()
    } else {
        format!("each of {procs} processes")
    };
    let mut msg = format!(
        "{NAME}: {each} may open {} files but needs {need} ({per_proc} connections + {FD_MARGIN} \
         spare): use --procs {}",
        l.nofile_soft,
        procs_needed(plan.conns, l.nofile_soft),
    );
    if need <= l.nofile_hard {
        let _ = write!(
            msg,
            " or raise `ulimit -n` to {need} (hard limit {})",
            fmt_limit(l.nofile_hard)
        );
    } else if l.nr_open == UNKNOWN || need <= l.nr_open {
        let _ = write!(
            msg,
            " or raise the hard limit to {need} (now {}: `ulimit -Hn` as root, LimitNOFILE= or \
             /etc/security/limits.conf) and then `ulimit -n`",
            fmt_limit(l.nofile_hard)
        );
    } else {
        let _ = write!(
            msg,
            " or raise fs.nr_open (now {}, `sysctl -w fs.nr_open={}`), then the hard limit \
             (now {}) and `ulimit -n`",
            l.nr_open,
            need,
            fmt_limit(l.nofile_hard)
        );
    }
    finding(NAME, Verdict::Stop(msg))
}

/// A local server holds one fd per connection in its own process(es), under its own limits,
/// which this process cannot see: warn when this shell's limits would not be enough for one
/// server process.
fn server_open_files(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "server open files";
    if plan.server_strict {
        return server_open_files_strict(plan, l);
    }
    // Processes sharing the port (found listening on it) split the connections.
    let procs = plan.server_procs.max(1);
    let need = plan
        .conns
        .div_ceil(u64::from(procs))
        .saturating_add(FD_MARGIN);
    if need <= l.nofile_soft {
        return finding(NAME, Verdict::Ok);
    }
    let each = if procs == 1 {
        "one server process".to_string()
    } else {
        format!("each of {procs} server processes")
    };
    let mut msg = format!(
        "{NAME}: {each} needs {need} fds for {} connections, more than this shell's \
         `ulimit -n` {}: check the server's own limit (`grep files /proc/<pid>/limits`) and start \
         it with `ulimit -n {need}`",
        plan.conns,
        fmt_limit(l.nofile_soft)
    );
    if l.nr_open != UNKNOWN && need > l.nr_open {
        let _ = write!(
            msg,
            "; that is above fs.nr_open {}, so raise it first (`sysctl -w fs.nr_open={need}`) or \
             run several server processes",
            l.nr_open
        );
    }
    finding(NAME, Verdict::Warn(msg))
}

/// The server's own processes (`check --role server|both`): each holds its share of the
/// connections under a `RLIMIT_NOFILE` that can go up to the hard limit without privileges,
/// and beyond it only with `CAP_SYS_RESOURCE` (and never beyond `fs.nr_open`). When the hard
/// limit is a cap that cannot be raised here, the fix is more processes.
fn server_open_files_strict(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "server open files";
    let procs = plan.server_procs.max(1);
    let per_proc = plan.conns.div_ceil(u64::from(procs));
    let need = per_proc.saturating_add(FD_MARGIN);
    let each = if procs == 1 {
        "one server process".to_string()
    } else {
        format!("each of {procs} server processes")
    };
    if need <= l.nofile_soft {
        return finding(NAME, Verdict::Ok);
    }
    if need <= l.nofile_hard {
        return finding(
            NAME,
            Verdict::Warn(format!(
                "{NAME}: {each} needs {need} fds ({per_proc} connections + {FD_MARGIN} spare), above the soft limit {} but within the hard limit {}: start it after `ulimit -n {need}`",
                l.nofile_soft,
                fmt_limit(l.nofile_hard)
            )),
        );
    }
    let procs_fit = procs_needed(plan.conns, l.nofile_hard);
    let more = format!(
        "run {procs_fit} server processes of at most {} connections each (SO_REUSEPORT on one port)",
        l.nofile_hard.saturating_sub(FD_MARGIN)
    );
    let why = if !l.can_raise_nofile {
        format!(
            "the hard limit {} is a cap this process cannot raise (no CAP_SYS_RESOURCE, not even as root): {more}",
            fmt_limit(l.nofile_hard)
        )
    } else if l.nr_open != UNKNOWN && need > l.nr_open {
        format!(
            "that is above fs.nr_open {}: raise it (`sysctl -w fs.nr_open={need}`), then the hard limit (LimitNOFILE= or `ulimit -Hn {need}` as root), or {more}",
            l.nr_open
        )
    } else {
        format!(
            "raise the hard limit (LimitNOFILE={need} in the unit, or `ulimit -Hn {need}` as root), or {more}"
        )
    };
    finding(
        NAME,
        Verdict::Stop(format!(
            "{NAME}: {each} needs {need} fds ({per_proc} connections + {FD_MARGIN} spare) > hard limit {}: {why}",
            fmt_limit(l.nofile_hard)
        )),
    )
}

/// System-wide open files: what is open now, plus both ends if the server is local.
fn file_max(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "fs.file-max";
    if l.file_max == UNKNOWN {
        return unknown(NAME, "/proc/sys/fs/file-max");
    }
    let server = if plan.server_local { plan.conns } else { 0 };
    let client = if plan.client_here { plan.conns } else { 0 };
    let margin = u64::from(plan.procs.max(1)).saturating_mul(FD_MARGIN);
    let total = l
        .file_nr_used
        .saturating_add(client)
        .saturating_add(server)
        .saturating_add(margin);
    if total <= l.file_max {
        return finding(NAME, Verdict::Ok);
    }
    let server_part = if plan.server_local {
        format!(" + {server} server sockets")
    } else {
        String::new()
    };
    finding(
        NAME,
        Verdict::Stop(format!(
            "{NAME}: {} files open now + {client} client sockets{server_part} + {margin} spare = \
             {total} > fs.file-max {}: raise it (`sysctl -w fs.file-max={}`)",
            l.file_nr_used,
            l.file_max,
            total.saturating_add(total / 4),
        )),
    )
}

/// Ephemeral ports: one connection per (source address, port, target).
fn ports(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "ports";
    let sources = u64::from(plan.sources.max(1));
    let targets = u64::from(plan.targets.max(1));
    let (lo, hi) = l.port_range;
    let nports = if hi >= lo { u64::from(hi - lo) + 1 } else { 0 };
    let per_target = plan.conns.div_ceil(targets);
    let capacity = sources * nports;
    // connect(2) takes ports of one parity first; once those are all used, every connect scans
    // them all (an established-table lookup each) before trying the others, so past half the
    // range the connect rate collapses (RESULTS.md: 16,000/s fell to ~130/s at 31,400
    // connections per address of 64,512 ports). Suggestions keep every address under half.
    let fast = nports / 2;
    let list = |n: u64| {
        if plan.server_local {
            loopback_range(n)
        } else {
            format!("{n} addresses")
        }
    };
    if per_target <= capacity {
        if per_target <= sources * fast || fast == 0 {
            return finding(NAME, Verdict::Ok);
        }
        let need = per_target.div_ceil(fast);
        return finding(
            NAME,
            Verdict::Warn(format!(
                "{NAME}: {per_target} connections per target over {sources} source address(es) \
                 is more than half of their {capacity} ephemeral ports: connect(2) takes ports of \
                 one parity first and, once those are used, scans them all on every connect, so \
                 the connect rate collapses; use --source {} ({need} source addresses)",
                list(need)
            )),
        );
    }
    let s = if sources == 1 { "" } else { "es" };
    let mut msg = format!(
        "{NAME}: {sources} source address{s} x {nports} ephemeral ports ({lo}-{hi}) = {capacity} \
         connections per target < {per_target}"
    );
    if targets > 1 {
        let _ = write!(msg, " ({} connections over {targets} targets)", plan.conns);
    }
    if nports == 0 {
        let _ = write!(
            msg,
            ": net.ipv4.ip_local_port_range is empty; set it (`sysctl -w \
             net.ipv4.ip_local_port_range=\"{} {}\"`)",
            WIDEST_PORT_RANGE.0, WIDEST_PORT_RANGE.1
        );
        return finding(NAME, Verdict::Stop(msg));
    }
    let need_sources = per_target.div_ceil(fast.max(1));
    let _ = write!(
        msg,
        ": use --source {} ({need_sources} source addresses, each under half its ports)",
        list(need_sources)
    );
    let widest = u64::from(WIDEST_PORT_RANGE.1 - WIDEST_PORT_RANGE.0) + 1;
    if nports < widest {
        let with_widest = per_target.div_ceil(widest / 2);
        let _ = write!(
            msg,
            ", or widen net.ipv4.ip_local_port_range (`sysctl -w \
             net.ipv4.ip_local_port_range=\"{} {}\"` gives {widest} ports per address",
            WIDEST_PORT_RANGE.0, WIDEST_PORT_RANGE.1
        );
        if with_widest > 1 {
            let _ = write!(msg, "; then {with_widest} source addresses do");
        }
        msg.push(')');
    }
    msg.push_str(", or add server ports");
    finding(NAME, Verdict::Stop(msg))
}

/// `127.0.0.1-127.0.0.N` covering `n` loopback addresses (all of 127/8 is routed to `lo`).
fn loopback_range(n: u64) -> String {
    let first = u32::from(std::net::Ipv4Addr::new(127, 0, 0, 1));
    let last = first.saturating_add(u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX));
    format!("127.0.0.1-{}", std::net::Ipv4Addr::from(last))
}

/// Memory: kernel socket memory (both ends if the server is local) + client + server estimates.
fn memory(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "memory";
    if l.mem_available == UNKNOWN {
        return unknown(NAME, "MemAvailable in /proc/meminfo");
    }
    let ends_here = u64::from(plan.client_here) + u64::from(plan.server_local);
    let (kernel_per, ends) = (
        kernel_bytes_per_socket(l).saturating_mul(ends_here),
        match (plan.client_here, plan.server_local) {
            (true, true) => "both ends",
            (true, false) => "client end",
            _ => "server end",
        },
    );
    let server_per = if plan.server_local {
        plan.server_bytes_per_conn
    } else {
        0
    };
    let client_bytes = if plan.client_here {
        plan.client_bytes_per_conn
    } else {
        0
    };
    let per_conn = kernel_per
        .saturating_add(client_bytes)
        .saturating_add(server_per);
    let kernel = plan.conns.saturating_mul(kernel_per);
    let client = plan.conns.saturating_mul(client_bytes);
    let server = plan.conns.saturating_mul(server_per);
    let total = plan.conns.saturating_mul(per_conn);
    let mut msg = format!(
        "{NAME}: ~{} of kernel socket memory ({:.1} KiB per connection, {ends}) + {} client",
        gib(kernel),
        kernel_per as f64 / 1024.0,
        gib(client),
    );
    if plan.server_local {
        let _ = write!(msg, " + {} server", gib(server));
    }
    let _ = write!(
        msg,
        " (estimates) = {} > MemAvailable {}",
        gib(total),
        gib(l.mem_available)
    );
    if total > l.mem_available {
        let fit = l.mem_available.checked_div(per_conn).unwrap_or(0);
        let _ = write!(
            msg,
            ": about {fit} connections fit; free memory, plan fewer connections"
        );
        if plan.server_local {
            msg.push_str(", or run the server on another machine");
        }
        return finding(NAME, Verdict::Stop(msg));
    }
    if total > l.mem_available / 10 * 8 {
        let msg = msg.replace(" > MemAvailable", " is over 80% of MemAvailable");
        return finding(
            NAME,
            Verdict::Warn(msg + ": little room for buffered messages"),
        );
    }
    finding(NAME, Verdict::Ok)
}

/// TCP buffer pages: idle connections hold none, but a socket with data queued (sent and not
/// yet read) is charged at least one page, so a broadcast to every connection at once can need
/// a page per socket. Above `tcp_mem` max the kernel drops data ("TCP: out of memory").
fn tcp_mem(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "tcp_mem";
    if l.tcp_mem_max_pages == UNKNOWN {
        return unknown(NAME, "/proc/sys/net/ipv4/tcp_mem");
    }
    let sockets = sockets(plan);
    if sockets <= l.tcp_mem_max_pages {
        return finding(NAME, Verdict::Ok);
    }
    let page = crate::memory::page_size();
    finding(
        NAME,
        Verdict::Warn(format!(
            "{NAME}: a message queued on every socket at once (a broadcast the clients have not \
             read yet) takes at least one page each: {sockets} sockets > net.ipv4.tcp_mem max \
             {} pages ({}), and past it the kernel drops data (\"TCP: out of memory\"): raise \
             the third value of net.ipv4.tcp_mem to {} or more, or publish to fewer subscribers \
             at once",
            l.tcp_mem_max_pages,
            gib(l.tcp_mem_max_pages.saturating_mul(page)),
            sockets.saturating_add(sockets / 4),
        )),
    )
}

/// The backlog a local server can ask for: a ramp faster than it accepts overflows the queue,
/// and each dropped SYN is retried only after 1 s, 3 s, ...
fn somaxconn(l: &Limits) -> Finding {
    const NAME: &str = "somaxconn";
    const WANT: u64 = 4096;
    if l.somaxconn == UNKNOWN {
        return unknown(NAME, "/proc/sys/net/core/somaxconn");
    }
    if l.somaxconn >= WANT {
        return finding(NAME, Verdict::Ok);
    }
    finding(
        NAME,
        Verdict::Warn(format!(
            "{NAME}: listen backlogs are capped at {} (< {WANT}): a fast ramp may overflow it and \
             stall on 1 s SYN retries; lower --rate or `sysctl -w net.core.somaxconn=65535`",
            l.somaxconn
        )),
    )
}

/// Half-open connections per listener: a connect storm beyond it drops SYNs (retried after
/// 1 s, 3 s, ...), unless syncookies take over.
fn syn_backlog(l: &Limits) -> Finding {
    const NAME: &str = "tcp_max_syn_backlog";
    const WANT: u64 = 4096;
    if l.syn_backlog == UNKNOWN {
        return unknown(NAME, "/proc/sys/net/ipv4/tcp_max_syn_backlog");
    }
    if l.syn_backlog >= WANT {
        return finding(NAME, Verdict::Ok);
    }
    finding(
        NAME,
        Verdict::Warn(format!(
            "{NAME}: {} half-open connections per listener (< {WANT}): a connect storm may drop \
             SYNs and stall on 1 s retries; lower --rate or `sysctl -w \
             net.ipv4.tcp_max_syn_backlog=65535`",
            l.syn_backlog
        )),
    )
}

/// epoll watches are counted per user over all its processes: server and client both watch
/// one fd per connection.
fn epoll_watches(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "fs.epoll.max_user_watches";
    if l.epoll_watches == UNKNOWN {
        return unknown(NAME, "/proc/sys/fs/epoll/max_user_watches");
    }
    let need = sockets(plan);
    if need <= l.epoll_watches {
        return finding(NAME, Verdict::Ok);
    }
    finding(
        NAME,
        Verdict::Stop(format!(
            "{NAME}: {need} sockets watched by one user > {}: `sysctl -w \
             fs.epoll.max_user_watches={}`, or run the server and the client as different users",
            l.epoll_watches,
            need.saturating_add(need / 4)
        )),
    )
}

/// Connection tracking (only when the module is loaded): one entry per TCP connection, also on
/// loopback; a full table drops new connections ("nf_conntrack: table full").
fn conntrack(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "nf_conntrack_max";
    let need = l.conntrack_used.saturating_add(plan.conns);
    if !l.conntrack_active || need <= l.conntrack_max {
        return finding(NAME, Verdict::Ok);
    }
    finding(
        NAME,
        Verdict::Stop(format!(
            "{NAME}: {} entries in use + {} connections = {need} > {}: `sysctl -w \
             net.netfilter.nf_conntrack_max={}`, or exempt the port from tracking (`iptables -t \
             raw -A PREROUTING -p tcp --dport PORT -j NOTRACK` and the same in OUTPUT)",
            l.conntrack_used,
            plan.conns,
            l.conntrack_max,
            need.saturating_add(need / 4)
        )),
    )
}

/// Kernel bytes per socket for the memory projection: the slab objects each socket owns (from
/// `/proc/slabinfo`), or half of [`KERNEL_BYTES_PER_LOOPBACK_CONN`] when slabinfo is not
/// readable, whichever is larger (the slab objects leave out the socket's small kmalloc
/// allocations, which the measured figure includes).
pub fn kernel_bytes_per_socket(l: &Limits) -> u64 {
    let measured = KERNEL_BYTES_PER_LOOPBACK_CONN / 2;
    if l.socket_slab_bytes == UNKNOWN {
        measured
    } else {
        l.socket_slab_bytes.max(measured)
    }
}

/// Mappings per process: nothing here maps per connection, so only a value below the kernel
/// default (65530) is worth a word.
fn max_map_count(l: &Limits) -> Finding {
    const NAME: &str = "vm.max_map_count";
    const DEFAULT: u64 = 65530;
    if l.max_map_count == UNKNOWN {
        return unknown(NAME, "/proc/sys/vm/max_map_count");
    }
    if l.max_map_count >= DEFAULT {
        return finding(NAME, Verdict::Ok);
    }
    finding(
        NAME,
        Verdict::Warn(format!(
            "{NAME}: {} is below the kernel default {DEFAULT}; a large heap may fail to map: \
             `sysctl -w vm.max_map_count={DEFAULT}`",
            l.max_map_count
        )),
    )
}

fn fmt_limit(v: u64) -> String {
    if v == u64::MAX {
        "unlimited".to_string()
    } else {
        v.to_string()
    }
}

fn gib(bytes: u64) -> String {
    if bytes == UNKNOWN {
        return "unknown".to_string();
    }
    let g = bytes as f64 / (1u64 << 30) as f64;
    if g >= 10.0 {
        format!("{g:.0} GiB")
    } else if g >= 0.1 {
        format!("{g:.1} GiB")
    } else {
        format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// Renders findings as lines for the user: one `STOP` or `warn` line per problem, then one line
/// naming the limits that are fine. Empty input gives an empty string.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    let mut fine = Vec::new();
    let (mut stops, mut warns) = (0, 0);
    for f in findings {
        match &f.verdict {
            Verdict::Stop(m) => {
                stops += 1;
                let _ = writeln!(out, "preflight STOP  {m}");
            }
            Verdict::Warn(m) => {
                warns += 1;
                let _ = writeln!(out, "preflight warn  {m}");
            }
            Verdict::Ok => fine.push(f.limit),
        }
    }
    if !fine.is_empty() {
        let _ = writeln!(out, "preflight ok    {}", fine.join(", "));
    }
    if stops > 0 {
        let _ = writeln!(
            out,
            "preflight: {stops} limit(s) stop this run before it reaches its connections"
        );
    } else if warns > 0 {
        let _ = writeln!(out, "preflight: {warns} warning(s)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Roomy limits: nothing fires for the base plan.
    fn roomy() -> Limits {
        Limits {
            nofile_soft: 1 << 20,
            nofile_hard: 1 << 20,
            nr_open: 1 << 20,
            file_max: 1 << 40,
            file_nr_used: 1000,
            port_range: (1024, 65535),
            mem_available: 1 << 40,
            tcp_mem_max_pages: 1 << 30,
            somaxconn: 4096,
            max_map_count: 65530,
            can_raise_nofile: true,
            syn_backlog: 4096,
            conntrack_max: UNKNOWN,
            conntrack_used: 0,
            conntrack_active: true,
            epoll_watches: 1 << 30,
            socket_slab_bytes: 3712,
            ehash_buckets: 1 << 20,
        }
    }

    fn plan(conns: u64) -> Plan {
        Plan {
            conns,
            procs: 1,
            sources: 1,
            targets: 1,
            server_local: true,
            client_here: true,
            server_procs: 1,
            server_strict: false,
            client_bytes_per_conn: 1024,
            server_bytes_per_conn: 1024,
        }
    }

    fn verdict(findings: &[Finding], limit: &str) -> Verdict {
        findings
            .iter()
            .find(|f| f.limit == limit)
            .map(|f| f.verdict.clone())
            .unwrap_or_else(|| panic!("no finding for {limit}: {findings:?}"))
    }

    fn stop_text(findings: &[Finding], limit: &str) -> String {
        match verdict(findings, limit) {
            Verdict::Stop(m) => m,
            v => panic!("{limit}: expected Stop, got {v:?}"),
        }
    }

    fn warn_text(findings: &[Finding], limit: &str) -> String {
        match verdict(findings, limit) {
            Verdict::Warn(m) => m,
            v => panic!("{limit}: expected Warn, got {v:?}"),
        }
    }

    #[test]
    fn roomy_plan_is_all_ok() {
        let f = check(&plan(10_000), &roomy());
        assert!(f.iter().all(|f| f.verdict == Verdict::Ok), "{f:?}");
        let text = render(&f);
        assert!(
            text.starts_with("preflight ok    open files, server open files"),
            "{text}"
        );
        assert!(!text.contains("STOP") && !text.contains("warn"));
        assert_eq!(render(&[]), "");
    }

    #[test]
    fn established_hash_boundary() {
        let mut l = roomy();
        l.ehash_buckets = 262_144;
        // Both ends here: two sockets a connection, at most two a bucket.
        let mut p = plan(262_144);
        assert_eq!(verdict(&check(&p, &l), "tcp_ehash_entries"), Verdict::Ok);
        p.conns += 1;
        let m = warn_text(&check(&p, &l), "tcp_ehash_entries");
        assert!(m.contains("524290 sockets in 262144 buckets"), "{m}");
        assert!(m.contains("tcp_child_ehash_entries=1048576"), "{m}");
        p.server_local = false;
        assert_eq!(verdict(&check(&p, &l), "tcp_ehash_entries"), Verdict::Ok);
        l.ehash_buckets = UNKNOWN;
        assert!(warn_text(&check(&p, &l), "tcp_ehash_entries").contains("not checked"));
    }

    #[test]
    fn open_files_boundary() {
        let mut l = roomy();
        l.nofile_soft = 20_000;
        l.nofile_hard = 20_000;
        let mut p = plan(2 * (20_000 - FD_MARGIN));
        p.procs = 2;
        assert_eq!(verdict(&check(&p, &l), "open files"), Verdict::Ok);
        p.conns += 1;
        let m = stop_text(&check(&p, &l), "open files");
        assert!(
            m.contains("each of 2 processes may open 20000 files but needs 20001"),
            "{m}"
        );
        assert!(m.contains("--procs 3"), "{m}");
        assert!(m.contains("raise the hard limit"), "{m}");

        // Soft below hard: raising `ulimit -n` is enough.
        l.nofile_soft = 10_000;
        l.nofile_hard = 30_000;
        let m = stop_text(&check(&p, &l), "open files");
        assert!(
            m.contains("raise `ulimit -n` to 20001 (hard limit 30000)"),
            "{m}"
        );

        // Past fs.nr_open: that must go up first.
        let mut p = plan(2_000_000);
        p.server_local = false;
        let m = stop_text(&check(&p, &l), "open files");
        assert!(m.contains("fs.nr_open"), "{m}");
    }

    #[test]
    fn procs_needed_keeps_margin() {
        assert_eq!(procs_needed(0, 20_000), 1);
        assert_eq!(procs_needed(19_936, 20_000), 1);
        assert_eq!(procs_needed(19_937, 20_000), 2);
        assert_eq!(procs_needed(1_000_000, 20_000), 51);
        assert_eq!(procs_needed(10, 64), u32::MAX);
        assert_eq!(procs_needed(u64::MAX, 65), u32::MAX);
        assert_eq!(procs_needed(1_000_000, u64::MAX), 1);
        // What procs_needed gives always passes the open-files check.
        for conns in [1, 19_936, 19_937, 1_000_000, 3_333_333] {
            let mut l = roomy();
            l.nofile_soft = 20_000;
            let mut p = plan(conns);
            p.procs = procs_needed(conns, l.nofile_soft);
            assert_eq!(
                verdict(&check(&p, &l), "open files"),
                Verdict::Ok,
                "{conns}"
            );
        }
    }

    #[test]
    fn file_max_boundary() {
        let mut l = roomy();
        let p = plan(100_000);
        // used + client + server + margin
        l.file_max = 1000 + 100_000 + 100_000 + FD_MARGIN;
        assert_eq!(verdict(&check(&p, &l), "fs.file-max"), Verdict::Ok);
        l.file_max -= 1;
        let m = stop_text(&check(&p, &l), "fs.file-max");
        assert!(m.contains("> fs.file-max 201063"), "{m}");
        assert!(m.contains("sysctl -w fs.file-max="), "{m}");
        // A remote server's sockets are not counted here.
        let mut p = p;
        p.server_local = false;
        assert_eq!(verdict(&check(&p, &l), "fs.file-max"), Verdict::Ok);
    }

    #[test]
    fn ports_boundary() {
        let mut l = roomy();
        l.port_range = (32768, 60999); // 28232 ports
        // Up to half the ports of an address: fast; up to all of them: slow (a warning).
        let mut p = plan(14_116);
        assert_eq!(verdict(&check(&p, &l), "ports"), Verdict::Ok);
        p.conns += 1;
        let m = warn_text(&check(&p, &l), "ports");
        assert!(m.contains("more than half of their 28232"), "{m}");
        assert!(
            m.contains("--source 127.0.0.1-127.0.0.2 (2 source addresses)"),
            "{m}"
        );
        p.conns = 28_232;
        assert!(matches!(verdict(&check(&p, &l), "ports"), Verdict::Warn(_)));
        p.conns += 1;
        let m = stop_text(&check(&p, &l), "ports");
        assert!(
            m.starts_with("ports: 1 source address x 28232 ephemeral ports (32768-60999) = 28232 connections per target < 28233"),
            "{m}"
        );
        assert!(m.contains("--source 127.0.0.1-127.0.0.3"), "{m}");
        assert!(m.contains("ip_local_port_range"), "{m}");

        // More sources and targets multiply the room.
        p.conns = 2 * 3 * 14_116;
        p.sources = 3;
        p.targets = 2;
        assert_eq!(verdict(&check(&p, &l), "ports"), Verdict::Ok);
        p.conns = 2 * 3 * 28_232 + 1;
        let m = stop_text(&check(&p, &l), "ports");
        assert!(m.contains("3 source addresses x 28232"), "{m}");
        assert!(m.contains("over 2 targets"), "{m}");

        // A million over one address: 71 loopback addresses, or 32 with the widest range.
        let p = plan(1_000_000);
        let m = stop_text(&check(&p, &l), "ports");
        assert!(
            m.contains("--source 127.0.0.1-127.0.0.71 (71 source addresses"),
            "{m}"
        );
        assert!(m.contains("then 32 source addresses do"), "{m}");
        // A remote server: no loopback suggestion.
        let mut p = p;
        p.server_local = false;
        let m = stop_text(&check(&p, &l), "ports");
        assert!(m.contains("--source 71 addresses"), "{m}");
        // Empty range.
        l.port_range = (5000, 4000);
        let m = stop_text(&check(&plan(1), &l), "ports");
        assert!(m.contains("is empty"), "{m}");
        assert_eq!(loopback_range(300), "127.0.0.1-127.0.1.44");
    }

    #[test]
    fn memory_boundary() {
        let mut l = roomy();
        let p = plan(100_000);
        let per = 2 * kernel_bytes_per_socket(&l) + 1024 + 1024;
        l.mem_available = 100_000 * per;
        assert!(!matches!(
            verdict(&check(&p, &l), "memory"),
            Verdict::Stop(_)
        ));
        l.mem_available -= 1;
        let m = stop_text(&check(&p, &l), "memory");
        assert!(
            m.contains("kernel socket memory (10.2 KiB per connection, both ends)"),
            "{m}"
        );
        assert!(m.contains("> MemAvailable"), "{m}");
        assert!(m.contains("about 99999 connections fit"), "{m}");
        assert!(m.contains("server on another machine"), "{m}");
        // Comfortably below: Ok; between 80% and 100%: Warn.
        l.mem_available = 100_000 * per * 2;
        assert_eq!(verdict(&check(&p, &l), "memory"), Verdict::Ok);
        l.mem_available = 100_000 * per * 11 / 10;
        assert!(matches!(
            verdict(&check(&p, &l), "memory"),
            Verdict::Warn(_)
        ));
        // Remote server: half the kernel cost, no server estimate.
        let mut p = p;
        p.server_local = false;
        l.mem_available = 100_000 * (kernel_bytes_per_socket(&l) + 1024);
        assert!(!matches!(
            verdict(&check(&p, &l), "memory"),
            Verdict::Stop(_)
        ));
        l.mem_available -= 1;
        let m = stop_text(&check(&p, &l), "memory");
        assert!(m.contains("client end") && !m.contains("server"), "{m}");
    }

    #[test]
    fn tcp_mem_boundary() {
        let mut l = roomy();
        let p = plan(100_000);
        l.tcp_mem_max_pages = 200_000; // two sockets per loopback connection
        assert_eq!(verdict(&check(&p, &l), "tcp_mem"), Verdict::Ok);
        l.tcp_mem_max_pages -= 1;
        match verdict(&check(&p, &l), "tcp_mem") {
            Verdict::Warn(m) => {
                assert!(
                    m.contains("200000 sockets > net.ipv4.tcp_mem max 199999 pages"),
                    "{m}"
                );
                assert!(
                    m.contains("raise the third value of net.ipv4.tcp_mem"),
                    "{m}"
                );
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn server_processes_split_the_connections() {
        let mut l = roomy();
        l.nofile_soft = 20_000;
        let mut p = plan(1_000_000);
        p.server_procs = 60; // 16,667 each
        assert_eq!(verdict(&check(&p, &l), "server open files"), Verdict::Ok);
        p.server_procs = 50; // 20,000 each + the margin
        let m = warn_text(&check(&p, &l), "server open files");
        assert!(
            m.contains("each of 50 server processes needs 20064 fds"),
            "{m}"
        );
    }

    #[test]
    fn warnings_and_unknowns() {
        let mut l = roomy();
        l.somaxconn = 128;
        l.max_map_count = 1000;
        l.file_max = UNKNOWN;
        l.mem_available = UNKNOWN;
        l.tcp_mem_max_pages = UNKNOWN;
        let mut p = plan(100_000);
        p.conns = 2_000_000; // beyond this shell's nofile for one server process
        p.procs = 4;
        p.sources = 80; // 25,000 per address: under half of its ports
        l.nofile_soft = 600_000;
        let f = check(&p, &l);
        for name in [
            "server open files",
            "somaxconn",
            "vm.max_map_count",
            "fs.file-max",
            "memory",
            "tcp_mem",
            "tcp_ehash_entries",
        ] {
            assert!(
                matches!(verdict(&f, name), Verdict::Warn(_)),
                "{name}: {f:?}"
            );
        }
        let text = render(&f);
        assert!(
            text.contains("could not read /proc/sys/fs/file-max"),
            "{text}"
        );
        assert!(text.contains("fs.nr_open"), "{text}");
        assert!(text.ends_with("preflight: 7 warning(s)\n"), "{text}");
        // Remote server: no server checks.
        p.server_local = false;
        let f = check(&p, &l);
        assert!(
            f.iter()
                .all(|f| f.limit != "somaxconn" && f.limit != "server open files")
        );
    }

    #[test]
    fn reads_this_machine() {
        let l = read_limits().expect("getrlimit");
        assert!(l.nofile_soft > 0 && l.nofile_soft <= l.nofile_hard);
        assert!(l.port_range.0 <= l.port_range.1);
        assert!(l.mem_available > 0 && l.mem_available != UNKNOWN);
        assert_ne!(l.nr_open, UNKNOWN);
        assert_ne!(l.file_max, UNKNOWN);
        assert!(l.file_nr_used > 0);
        assert_ne!(l.tcp_mem_max_pages, UNKNOWN);
    }
}
