//! `flood check` (and `kernel-tuning/check`): what stops this machine from holding N
//! connections, as a table — limit | now | needed for N | OK, WARN or BLOCKS | how to fix — from
//! the same checks flood runs before every run ([`crate::preflight`]). Exit status 1 when
//! anything blocks N.

use std::fmt::Write as _;
use std::fs;

use clap::{Parser, ValueEnum};

use crate::preflight::{
    self, FD_MARGIN, Finding, Limits, Plan, UNKNOWN, Verdict, kernel_bytes_per_socket, procs_needed,
};

/// Which side of a test runs on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The edgecomet server only.
    Server,
    /// The flood client only.
    Client,
    /// Both (a loopback test: every connection has two sockets here).
    Both,
}

/// flood check: what stops this machine from holding N connections.
#[derive(Debug, Clone, Parser)]
#[command(name = "flood check")]
pub struct CheckArgs {
    /// Connections to hold.
    #[arg(long)]
    pub conns: u64,
    /// What runs here: the server, the client (flood), or both.
    #[arg(long, value_enum, default_value_t = Role::Both)]
    pub role: Role,
    /// Client source addresses (each gives the ephemeral port range again per target).
    #[arg(long, default_value_t = 1)]
    pub sources: u32,
    /// Server addresses (ip:port) the clients spread over.
    #[arg(long, default_value_t = 1)]
    pub targets: u32,
    /// Server processes sharing the connections.
    #[arg(long, default_value_t = 1)]
    pub server_procs: u32,
    /// Client processes (default: as many as the open-files limit needs; flood forks them).
    #[arg(long)]
    pub procs: Option<u32>,
    /// Server bytes per connection for the memory projection (default: the flood report's
    /// `server_pss_bytes_per_conn` with --flood-report, else 1024, plus 1,152 with --tls).
    #[arg(long)]
    pub server_bytes: Option<u64>,
    /// A flood JSON report (`flood --json`) to take the server's bytes per connection from.
    #[arg(long)]
    pub flood_report: Option<String>,
    /// The connections are TLS (wss://, https://): each connection adds its TLS session to the
    /// client's memory estimate and to the server's default one (see
    /// `preflight::TLS_CLIENT_BYTES_PER_CONN`, `preflight::TLS_SERVER_BYTES_PER_CONN`).
    #[arg(long)]
    pub tls: bool,
}

/// The server's bytes per connection in a flood JSON report.
pub fn report_server_bytes(json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let b = v.get("server_pss_bytes_per_conn")?.as_f64()?;
    (b.is_finite() && b > 0.0).then(|| b.ceil() as u64)
}

/// The plan `check` judges.
pub fn plan(a: &CheckArgs, limits: &Limits, server_bytes: u64) -> Plan {
    Plan {
        conns: a.conns,
        procs: a
            .procs
            .unwrap_or_else(|| procs_needed(a.conns, limits.nofile_hard.max(limits.nofile_soft))),
        sources: a.sources.max(1),
        targets: a.targets.max(1),
        server_local: a.role != Role::Client,
        client_here: a.role != Role::Server,
        server_procs: a.server_procs.max(1),
        server_strict: true,
        // The 40-byte entry, rounded up; plus the session over TLS.
        client_bytes_per_conn: 64
            + if a.tls {
                preflight::TLS_CLIENT_BYTES_PER_CONN
            } else {
                0
            },
        server_bytes_per_conn: server_bytes,
    }
}

fn v(x: u64) -> String {
    if x == UNKNOWN {
        "unknown".into()
    } else {
        x.to_string()
    }
}

/// The "now" and "needed for N" columns of a finding.
pub fn columns(f: &Finding, p: &Plan, l: &Limits) -> (String, String) {
    let sockets = p
        .conns
        .saturating_mul(u64::from(p.client_here) + u64::from(p.server_local));
    match f.limit {
        "open files" => {
            let procs = p.procs.max(1);
            (
                format!("soft {} / hard {}", v(l.nofile_soft), v(l.nofile_hard)),
                format!(
                    "{} per client process x {procs}",
                    p.conns.div_ceil(u64::from(procs)) + FD_MARGIN
                ),
            )
        }
        "server open files" => {
            let procs = p.server_procs.max(1);
            let cap = if l.can_raise_nofile {
                ""
            } else {
                " (hard is a cap here)"
            };
            (
                format!("soft {} / hard {}{cap}", v(l.nofile_soft), v(l.nofile_hard)),
                format!(
                    "{} per server process x {procs}",
                    p.conns.div_ceil(u64::from(procs)) + FD_MARGIN
                ),
            )
        }
        "fs.file-max" => (
            format!("{} ({} open)", v(l.file_max), l.file_nr_used),
            format!("{}", l.file_nr_used.saturating_add(sockets)),
        ),
        "ports" => {
            let (lo, hi) = l.port_range;
            let n = if hi >= lo { u64::from(hi - lo) + 1 } else { 0 };
            (
                format!(
                    "{n} ports x {} source(s) x {} target(s)",
                    p.sources.max(1),
                    p.targets.max(1)
                ),
                format!("{} connections", p.conns),
            )
        }
        "memory" => {
            let per_socket = kernel_bytes_per_socket(l);
            let server = if p.server_local {
                p.server_bytes_per_conn
            } else {
                0
            };
            let client = if p.client_here {
                p.client_bytes_per_conn
            } else {
                0
            };
            let total = sockets
                .saturating_mul(per_socket)
                .saturating_add(p.conns.saturating_mul(server + client));
            let slab = if l.socket_slab_bytes == UNKNOWN {
                "slabinfo unreadable".to_string()
            } else {
                format!("slab objects {} B", l.socket_slab_bytes)
            };
            (
                format!("MemAvailable {} MiB", l.mem_available / (1 << 20)),
                format!(
                    "{} MiB (kernel {per_socket} B per socket [{slab}], {server} B server + \
                     {client} B client per connection)",
                    total / (1 << 20)
                ),
            )
        }
        "tcp_mem" => (
            format!("{} pages", v(l.tcp_mem_max_pages)),
            format!("{sockets} pages (a page per socket with data queued)"),
        ),
        "somaxconn" => (v(l.somaxconn), ">= 4096".into()),
        "tcp_max_syn_backlog" => (v(l.syn_backlog), ">= 4096".into()),
        "fs.epoll.max_user_watches" => (v(l.epoll_watches), format!("{sockets}")),
        "tcp_ehash_entries" => (
            format!("{} buckets", v(l.ehash_buckets)),
            format!(
                "{} buckets for {sockets} sockets",
                sockets.div_ceil(preflight::ehash::MAX_SOCKETS_PER_BUCKET)
            ),
        ),
        "nf_conntrack_max" => (
            if l.conntrack_active {
                format!("{} ({} in use)", v(l.conntrack_max), l.conntrack_used)
            } else {
                format!(
                    "{} (loaded, not tracking loopback here: probed)",
                    v(l.conntrack_max)
                )
            },
            format!("{}", l.conntrack_used.saturating_add(p.conns)),
        ),
        "vm.max_map_count" => (v(l.max_map_count), ">= 65530".into()),
        _ => (String::new(), String::new()),
    }
}

/// The table, one row per limit, and a last line with the verdict.
pub fn table(findings: &[Finding], p: &Plan, l: &Limits) -> String {
    let rows: Vec<[String; 5]> = findings
        .iter()
        .map(|f| {
            let (now, need) = columns(f, p, l);
            let (status, fix) = match &f.verdict {
                Verdict::Ok => ("OK", String::new()),
                Verdict::Warn(m) => ("WARN", m.clone()),
                Verdict::Stop(m) => ("BLOCKS", m.clone()),
            };
            [f.limit.to_string(), now, need, status.to_string(), fix]
        })
        .collect();
    let head = ["limit", "now", "needed for N", "verdict", "how to fix"];
    let mut w = [0usize; 4];
    for r in rows
        .iter()
        .map(|r| &r[..4])
        .chain(std::iter::once(&head.map(String::from)[..4]))
    {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, r: [&str; 5]| {
        let _ = writeln!(
            out,
            "{:<w0$} | {:<w1$} | {:<w2$} | {:<w3$} | {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
    };
    line(&mut out, head);
    let _ = writeln!(
        out,
        "{}-|-{}-|-{}-|-{}-|-{}",
        "-".repeat(w[0]),
        "-".repeat(w[1]),
        "-".repeat(w[2]),
        "-".repeat(w[3]),
        "-".repeat(10)
    );
    for r in &rows {
        line(&mut out, [&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    let blocks: Vec<&str> = findings
        .iter()
        .filter(|f| matches!(f.verdict, Verdict::Stop(_)))
        .map(|f| f.limit)
        .collect();
    if blocks.is_empty() {
        let _ = writeln!(out, "\n{} connections: nothing blocks them", p.conns);
    } else {
        let _ = writeln!(
            out,
            "\n{} connections: BLOCKED by {}",
            p.conns,
            blocks.join(", ")
        );
    }
    out
}

/// `flood check ARGS`: prints the table; exit status 0 (nothing blocks), 1 (something does),
/// 2 (bad arguments or unreadable limits).
pub fn main(args: impl IntoIterator<Item = String>) -> u8 {
    match CheckArgs::try_parse_from(args) {
        Ok(a) => run(&a),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() { 2 } else { 0 }
        }
    }
}

/// `flood check` once its arguments are parsed (by [`main`] or as the `check` subcommand of
/// `flood`'s own flags): prints the table; the exit status as [`main`]'s.
pub fn run(a: &CheckArgs) -> u8 {
    let limits = match preflight::read_limits() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flood check: reading limits: {e}");
            return 2;
        }
    };
    let from_report = match &a.flood_report {
        Some(path) => match fs::read_to_string(path) {
            Ok(t) => match report_server_bytes(&t) {
                Some(b) => Some(b),
                None => {
                    eprintln!("flood check: {path}: no server_pss_bytes_per_conn");
                    return 2;
                }
            },
            Err(e) => {
                eprintln!("flood check: {path}: {e}");
                return 2;
            }
        },
        None => None,
    };
    let server_bytes = a
        .server_bytes
        .or(from_report)
        .unwrap_or(preflight::server_bytes_per_conn(a.tls));
    let p = plan(a, &limits, server_bytes);
    let findings = preflight::check(&p, &limits);
    print!("{}", table(&findings, &p, &limits));
    u8::from(
        findings
            .iter()
            .any(|f| matches!(f.verdict, Verdict::Stop(_))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine as the issue describes it: 20,000 open files per process as a hard cap
    /// that cannot be raised, everything else roomy.
    fn capped() -> Limits {
        Limits {
            nofile_soft: 20_000,
            nofile_hard: 20_000,
            nr_open: 1 << 20,
            file_max: 1 << 40,
            file_nr_used: 300,
            port_range: (32768, 60999),
            mem_available: 24 << 30,
            tcp_mem_max_pages: 1 << 30,
            somaxconn: 4096,
            max_map_count: 65530,
            can_raise_nofile: false,
            syn_backlog: 4096,
            conntrack_max: UNKNOWN,
            conntrack_used: 0,
            conntrack_active: false,
            epoll_watches: 1 << 30,
            socket_slab_bytes: 3712,
            ehash_buckets: 262_144,
        }
    }

    fn args(conns: u64, role: Role) -> CheckArgs {
        CheckArgs {
            conns,
            role,
            sources: 40,
            targets: 1,
            server_procs: 1,
            procs: None,
            server_bytes: None,
            flood_report: None,
            tls: false,
        }
    }

    #[test]
    fn tls_adds_the_session_to_the_client_estimate() {
        let l = capped();
        let plain = plan(&args(1000, Role::Client), &l, 1024);
        let tls = plan(
            &CheckArgs {
                tls: true,
                ..args(1000, Role::Client)
            },
            &l,
            1024,
        );
        assert_eq!(
            tls.client_bytes_per_conn - plain.client_bytes_per_conn,
            preflight::TLS_CLIENT_BYTES_PER_CONN
        );
    }

    #[test]
    fn tls_adds_edgecomets_session_to_the_servers_default_estimate() {
        assert_eq!(
            preflight::server_bytes_per_conn(true) - preflight::server_bytes_per_conn(false),
            preflight::TLS_SERVER_BYTES_PER_CONN
        );
        assert_eq!(preflight::server_bytes_per_conn(false), 1024);
    }

    fn run(a: &CheckArgs, l: &Limits) -> (Vec<Finding>, Plan) {
        let p = plan(a, l, 1024);
        (preflight::check(&p, l), p)
    }

    fn verdict<'f>(f: &'f [Finding], limit: &str) -> Option<&'f Verdict> {
        f.iter().find(|x| x.limit == limit).map(|x| &x.verdict)
    }

    #[test]
    fn a_million_here_names_the_cap_and_the_processes_it_takes() {
        let l = capped();
        let (f, p) = run(&args(1_000_000, Role::Both), &l);
        let Some(Verdict::Stop(m)) = verdict(&f, "server open files") else {
            panic!("{f:?}")
        };
        assert!(m.contains("hard limit 20000 is a cap"), "{m}");
        assert!(m.contains("no CAP_SYS_RESOURCE"), "{m}");
        assert!(
            m.contains("run 51 server processes of at most 19936"),
            "{m}"
        );
        // The client side forks enough processes by itself.
        assert_eq!(verdict(&f, "open files"), Some(&Verdict::Ok));
        let t = table(&f, &p, &l);
        assert!(t.contains("BLOCKED by server open files"), "{t}");
        assert!(t.contains("(hard is a cap here)"), "{t}");
        // With 51 processes it fits.
        let mut a = args(1_000_000, Role::Server);
        a.server_procs = 51;
        let (f, p) = run(&a, &l);
        assert_eq!(verdict(&f, "server open files"), Some(&Verdict::Ok));
        assert!(table(&f, &p, &l).contains("nothing blocks them"));
        a.server_procs = 50;
        let (f, _) = run(&a, &l);
        assert!(matches!(
            verdict(&f, "server open files"),
            Some(Verdict::Stop(_))
        ));
    }

    #[test]
    fn where_the_hard_limit_can_be_raised_it_says_so() {
        let mut l = capped();
        l.can_raise_nofile = true;
        let (f, _) = run(&args(100_000, Role::Server), &l);
        let Some(Verdict::Stop(m)) = verdict(&f, "server open files") else {
            panic!("{f:?}")
        };
        assert!(m.contains("LimitNOFILE=100064"), "{m}");
        l.nr_open = 50_000;
        let (f, _) = run(&args(100_000, Role::Server), &l);
        let Some(Verdict::Stop(m)) = verdict(&f, "server open files") else {
            panic!("{f:?}")
        };
        assert!(m.contains("fs.nr_open 50000"), "{m}");
        // Soft below hard: a warning, `ulimit -n`.
        l.nofile_soft = 1024;
        let (f, _) = run(&args(10_000, Role::Server), &l);
        assert!(
            matches!(verdict(&f, "server open files"), Some(Verdict::Warn(m)) if m.contains("ulimit -n 10064"))
        );
    }

    #[test]
    fn roles_choose_the_rows() {
        let l = capped();
        let (f, _) = run(&args(10_000, Role::Server), &l);
        assert!(verdict(&f, "ports").is_none() && verdict(&f, "open files").is_none());
        assert!(verdict(&f, "somaxconn").is_some() && verdict(&f, "tcp_max_syn_backlog").is_some());
        let (f, _) = run(&args(10_000, Role::Client), &l);
        assert!(verdict(&f, "server open files").is_none() && verdict(&f, "somaxconn").is_none());
        assert!(verdict(&f, "ports").is_some());
        // Without conntrack loaded, no row; loaded and tracking, a row.
        assert!(verdict(&f, "nf_conntrack_max").is_none());
    }

    #[test]
    fn conntrack_epoll_and_syn_backlog_boundaries() {
        let mut l = capped();
        l.conntrack_max = 262_144;
        l.conntrack_used = 144;
        let mut a = args(262_000, Role::Both);
        a.server_procs = 20;
        let (f, _) = run(&a, &l);
        assert_eq!(
            verdict(&f, "nf_conntrack_max"),
            Some(&Verdict::Ok),
            "not tracking"
        );
        l.conntrack_active = true;
        let (f, _) = run(&a, &l);
        assert_eq!(
            verdict(&f, "nf_conntrack_max"),
            Some(&Verdict::Ok),
            "exactly full"
        );
        a.conns += 1;
        let (f, _) = run(&a, &l);
        assert!(
            matches!(verdict(&f, "nf_conntrack_max"), Some(Verdict::Stop(m)) if m.contains("NOTRACK"))
        );
        // epoll watches: two sockets per connection when both ends run here.
        let mut l = capped();
        l.epoll_watches = 20_000;
        let (f, _) = run(&args(10_000, Role::Both), &l);
        assert_eq!(verdict(&f, "fs.epoll.max_user_watches"), Some(&Verdict::Ok));
        let (f, _) = run(&args(10_001, Role::Both), &l);
        assert!(matches!(
            verdict(&f, "fs.epoll.max_user_watches"),
            Some(Verdict::Stop(_))
        ));
        let (f, _) = run(&args(20_000, Role::Client), &l);
        assert_eq!(verdict(&f, "fs.epoll.max_user_watches"), Some(&Verdict::Ok));
        l.syn_backlog = 1024;
        let (f, _) = run(&args(10, Role::Server), &l);
        assert!(matches!(
            verdict(&f, "tcp_max_syn_backlog"),
            Some(Verdict::Warn(_))
        ));
    }

    #[test]
    fn memory_uses_the_slab_sizes_and_the_report() {
        let mut l = capped();
        l.socket_slab_bytes = 8000;
        assert_eq!(kernel_bytes_per_socket(&l), 8000);
        l.socket_slab_bytes = UNKNOWN;
        assert_eq!(
            kernel_bytes_per_socket(&l),
            preflight::KERNEL_BYTES_PER_LOOPBACK_CONN / 2
        );
        // 1M both ends at 8 KiB kernel per socket: 16 GiB + server bytes; 24 GiB is enough
        // with 1 KiB per connection, not with 10 KiB.
        l.socket_slab_bytes = 8192;
        let mut a = args(1_000_000, Role::Both);
        a.server_procs = 51;
        let p = plan(&a, &l, 1024);
        assert_eq!(
            verdict(&preflight::check(&p, &l), "memory"),
            Some(&Verdict::Ok)
        );
        let p = plan(&a, &l, 10 * 1024);
        assert!(matches!(
            verdict(&preflight::check(&p, &l), "memory"),
            Some(Verdict::Stop(_))
        ));
        assert_eq!(
            report_server_bytes(r#"{"server_pss_bytes_per_conn": 187.9}"#),
            Some(188)
        );
        assert_eq!(report_server_bytes(r#"{"other": 1}"#), None);
        assert_eq!(report_server_bytes("nope"), None);
    }

    #[test]
    fn slabinfo_and_capabilities_parse() {
        let slab = "slabinfo - version: 2.1\n\
            # name <active_objs> <num_objs> <objsize> ...\n\
            TCPv6 26 26 2496 13 8 : tunables 0 0 0 : slabdata 2 2 0\n\
            TCP 78 130 2368 13 8 : tunables 0 0 0 : slabdata 10 10 0\n\
            eventpoll_epi 625 1120 128 32 1 : tunables 0 0 0 : slabdata 35 35 0\n\
            sock_inode_cache 210 228 832 19 4 : tunables 0 0 0 : slabdata 12 12 0\n\
            filp 381 504 192 21 1 : tunables 0 0 0 : slabdata 24 24 0\n\
            dentry 367138 367227 192 21 1 : tunables 0 0 0 : slabdata 17487 17487 0\n";
        assert_eq!(
            preflight::socket_slab_bytes(slab),
            Some(2368 + 128 + 832 + 192 + 192)
        );
        assert_eq!(preflight::socket_slab_bytes("TCP 1 1 2368"), None);
        assert!(preflight::has_cap_sys_resource(
            "Name:\tx\nCapEff:\t000001ffffffffff\n"
        ));
        assert!(!preflight::has_cap_sys_resource(
            "CapEff:\t00000000a80425fb\n"
        ));
        assert!(!preflight::has_cap_sys_resource(""));
    }
}
