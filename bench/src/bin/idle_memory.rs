//! `idle_memory`: server memory per idle subscriber (WebSocket, SSE stream, held long-poll, or a
//! Bayeux client parked in `/meta/connect` over long-polling or a WebSocket).
//!
//! Per repetition, with a fresh server process: start `edgecomet --workers 2 --ws-ping-interval 0
//! --listen 127.0.0.1:0` (for SSE and long-poll also heartbeat and poll timeout at an hour, for
//! Bayeux `--bayeux-timeout 3600`, so that they stay idle), warm up (open and close a few
//! subscribers; Bayeux: wait until the server has expired those clients; settle), read PSS/RSS
//! from `/proc/PID/smaps_rollup`, open N subscribers from this process, wait until `/stats`
//! `total.conns_ws_sub` (`conns_sse`, `conns_poll`, `conns_bayeux_poll`, …) `== N`, settle, read
//! PSS/RSS again. Prints (PSS growth) / N and (RSS growth) / N per repetition and their medians;
//! exits 1 if the PSS median is over `--max-bytes-per-conn`.
//!
//! A Bayeux client is one connection (long-polling: handshake, subscribe, the first connect and
//! the held connect one after another on it; websocket: one upgrade), so "per connection" is
//! also "per Bayeux client": the figure includes the server's client record, its subscription
//! and the held connect.
//!
//! The server disables transparent huge pages for itself by default (its allocator would otherwise
//! grow the heap in 2 MiB steps); `--thp` starts it with `--transparent-huge-pages` to measure
//! that mode. The `AnonHugePages` growth is printed alongside.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use edgecomet_bench::{Args, Handshake, Pool, ServerProc, die, median, sources, total, wait_stat};
use flood::memory::proc_mem;
use flood::sys::raise_nofile;

/// The gauge of WebSocket connections carrying a Bayeux client.
const BAYEUX_WS_GAUGE: &str = "conns_bayeux_ws";

const HELP: &str = "\
idle_memory: server memory per idle subscriber (PSS growth / N)

  --transport T              ws (WebSocket), sse (Server-Sent Events), longpoll (held
                             JSON long-poll), bayeux-lp (Bayeux client parked in
                             /meta/connect over long-polling), bayeux-ws (the same over
                             a WebSocket) or socketio (a Socket.IO client over WebSocket,
                             connected to / and joined to its channel) [ws]

  --server-bin PATH          server binary [target/release/edgecomet]
  --conns N                  subscribers to open [15000]
  --channels N               spread them over N channels [1]
  --workers N                server workers [2]
  --repeat R                 repetitions, each with a fresh server [3]
  --warmup-conns N           subscribers opened and closed before the baseline reading [100]
  --settle-secs S            sleep before each reading [2]
  --sources N                client source addresses 127.0.0.1.. [4]
  --max-bytes-per-conn B     fail if the median PSS growth per connection exceeds B [256 for
                             ws, sse and longpoll; 400 for bayeux-lp and bayeux-ws; 512 for
                             socketio (the targets in bench/RESULTS.md)]
  --thp                      start the server with --transparent-huge-pages (heap growth in
                             2 MiB steps instead of 4 KiB pages)
  --token-secret S           start the server with --token-secret S and subscribe with a
                             token (?token=, an HS256 JWT for every channel, valid an hour):
                             what authorization costs an idle subscriber (ws, sse, longpoll)
  --json FILE                also write the results as JSON
";

struct Rep {
    huge0: u64,
    huge1: u64,
    pss0: u64,
    pss1: u64,
    rss0: u64,
    rss1: u64,
    pss_per_conn: f64,
    rss_per_conn: f64,
    connect_secs: f64,
}

fn main() -> ExitCode {
    let mut a = Args::from_env();
    if a.flag("--help") || a.flag("-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let bin: String = a.get("--server-bin", "target/release/edgecomet".to_string());
    let n: usize = a.get("--conns", 15_000);
    let channels: usize = a.get("--channels", 1).max(1);
    let workers: usize = a.get("--workers", 2);
    let repeat: usize = a.get("--repeat", 3).max(1);
    let warm: usize = a.get("--warmup-conns", 100);
    let settle = Duration::from_secs_f64(a.get("--settle-secs", 2.0));
    let nsrc: usize = a.get("--sources", 4).max(1);
    let max_bpc: Option<f64> = a.opt("--max-bytes-per-conn");
    let thp = a.flag("--thp");
    let json: Option<String> = a.opt("--json");
    let transport: String = a.get("--transport", "ws".to_string());
    let token_secret: Option<String> = a.opt("--token-secret");
    // `?token=…` on every subscription when the server needs one.
    let query: String = token_secret.as_deref().map_or(String::new(), |s| {
        format!("?token={}", edgecomet_bench::token(s))
    });
    a.finish();
    let max_bpc = max_bpc.unwrap_or(match transport.as_str() {
        t if t.starts_with("bayeux") => 400.0,
        "socketio" => 512.0,
        _ => 256.0,
    });
    let (gauge, what) = match transport.as_str() {
        "ws" => ("conns_ws_sub", "WebSocket subscribers"),
        "sse" => ("conns_sse", "Server-Sent Events subscribers"),
        "longpoll" => ("conns_poll", "held long-polls"),
        "bayeux-lp" => (
            "conns_bayeux_poll",
            "Bayeux clients parked in /meta/connect (long-polling)",
        ),
        "bayeux-ws" => (
            BAYEUX_WS_GAUGE,
            "Bayeux clients parked in /meta/connect (websocket)",
        ),
        "socketio" => (
            "conns_sio_ws",
            "Socket.IO clients over WebSocket (a CONNECT to / joining the channel)",
        ),
        other => die(&format!(
            "--transport {other}: expected ws, sse, longpoll, bayeux-lp, bayeux-ws or socketio"
        )),
    };

    let nofile = raise_nofile();
    if (n + 64) as u64 > nofile {
        die(&format!(
            "--conns {n} needs about {} open files; the limit is {nofile}",
            n + 64
        ));
    }
    let srcs = sources(0, nsrc);
    let q = query.clone();
    let path = move |i: usize| format!("/sub/idle-{}{q}", i % channels);
    let accept = if transport == "sse" {
        "text/event-stream"
    } else {
        "application/json"
    };
    let request = move |i: usize| {
        format!(
            "GET /sub/idle-{}{query} HTTP/1.1\r\nHost: b\r\nAccept: {accept}\r\n\r\n",
            i % channels
        )
    };
    // The Bayeux channel of the native `idle-K`.
    let bayeux_channel = move |i: usize| format!("/idle-{}", i % channels);
    let sio_channel = move |i: usize| format!("idle-{}", i % channels);
    let started = Instant::now();
    println!(
        "idle_memory: {n} idle {what} on {channels} channel(s), \
         server {bin} --workers {workers}, {repeat} repetition(s){}",
        if thp {
            ", server with --transparent-huge-pages"
        } else {
            ""
        }
    );

    let opts = Opts {
        bin: &bin,
        workers,
        n,
        warm,
        settle,
        srcs: &srcs,
        path: &path,
        request: &request,
        bayeux_channel: &bayeux_channel,
        sio_channel: &sio_channel,
        transport: &transport,
        gauge,
        thp,
        token_secret: token_secret.as_deref(),
    };
    let mut reps = Vec::new();
    for r in 0..repeat {
        match one(&opts) {
            Ok(rep) => {
                println!(
                    "  run {}: PSS {:.1} -> {:.1} MiB: {:.1} bytes/conn; RSS {:.1} -> {:.1} MiB: \
                     {:.1} bytes/conn; AnonHugePages {:.0} -> {:.0} MiB (connect {:.2} s)",
                    r + 1,
                    mib(rep.pss0),
                    mib(rep.pss1),
                    rep.pss_per_conn,
                    mib(rep.rss0),
                    mib(rep.rss1),
                    rep.rss_per_conn,
                    mib(rep.huge0),
                    mib(rep.huge1),
                    rep.connect_secs
                );
                reps.push(rep);
            }
            Err(e) => {
                eprintln!("idle_memory: run {} failed: {e}", r + 1);
                return ExitCode::from(2);
            }
        }
    }
    let pss: Vec<f64> = reps.iter().map(|r| r.pss_per_conn).collect();
    let rss: Vec<f64> = reps.iter().map(|r| r.rss_per_conn).collect();
    let (pm, rm) = (median(&pss), median(&rss));
    let pass = pm <= max_bpc;
    println!(
        "idle_memory: median PSS growth {pm:.1} bytes/conn (RSS {rm:.1}); limit {} -> {}  \
         [{:.1} s]",
        if max_bpc.is_finite() {
            max_bpc.to_string()
        } else {
            "none".to_string()
        },
        if pass { "PASS" } else { "FAIL" },
        started.elapsed().as_secs_f64()
    );
    if let Some(file) = json {
        let doc = serde_json::json!({
            "tool": "idle_memory",
            "transport": transport,
            "server_bin": bin,
            "conns": n,
            "channels": channels,
            "workers": workers,
            "server_transparent_huge_pages": thp,
            "tokens": token_secret.is_some(),
            "runs": reps.iter().map(|r| serde_json::json!({
                "pss_before": r.pss0, "pss_after": r.pss1,
                "rss_before": r.rss0, "rss_after": r.rss1,
                "anon_huge_before": r.huge0, "anon_huge_after": r.huge1,
                "pss_bytes_per_conn": r.pss_per_conn, "rss_bytes_per_conn": r.rss_per_conn,
                "connect_secs": r.connect_secs,
            })).collect::<Vec<_>>(),
            "median_pss_bytes_per_conn": pm,
            "median_rss_bytes_per_conn": rm,
            "max_bytes_per_conn": max_bpc,
            "pass": pass,
            "elapsed_secs": started.elapsed().as_secs_f64(),
        });
        if let Err(e) = std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap() + "\n") {
            eprintln!("idle_memory: cannot write {file}: {e}");
            return ExitCode::from(2);
        }
    }
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// What one repetition needs.
struct Opts<'a> {
    bin: &'a str,
    workers: usize,
    n: usize,
    warm: usize,
    settle: Duration,
    srcs: &'a [std::net::Ipv4Addr],
    path: &'a dyn Fn(usize) -> String,
    request: &'a dyn Fn(usize) -> String,
    bayeux_channel: &'a dyn Fn(usize) -> String,
    sio_channel: &'a dyn Fn(usize) -> String,
    transport: &'a str,
    gauge: &'a str,
    thp: bool,
    token_secret: Option<&'a str>,
}

fn one(o: &Opts<'_>) -> std::io::Result<Rep> {
    let Opts {
        bin,
        workers,
        n,
        warm,
        settle,
        srcs,
        path,
        request,
        bayeux_channel,
        sio_channel,
        transport,
        gauge,
        thp,
        token_secret,
    } = *o;
    let bayeux = transport.starts_with("bayeux");
    let mut cmd = Command::new(bin);
    if thp {
        cmd.arg("--transparent-huge-pages");
    }
    if let Some(secret) = token_secret {
        cmd.args(["--token-secret", secret]);
    }
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        &workers.to_string(),
        "--ws-ping-interval",
        "0",
    ]);
    if bayeux {
        // Held connects answered only after an hour.
        cmd.args(["--bayeux-timeout", "3600"]);
    } else if transport == "socketio" {
        // Idle: no heartbeat during the measurement (as --ws-ping-interval 0 for the others).
        cmd.args([
            "--socketio-ping-interval",
            "1h",
            "--socketio-ping-timeout",
            "1h",
        ]);
    } else if transport != "ws" {
        cmd.args([
            "--sse-heartbeat",
            "3600",
            "--poll-timeout",
            "3600",
            "--session-ttl",
            "3601",
        ]);
    }
    let hs = match transport {
        "ws" => Handshake::WebSocket(path),
        "bayeux-lp" | "bayeux-ws" => Handshake::Bayeux {
            ws: transport == "bayeux-ws",
            path: "/cometd",
            channel: bayeux_channel,
        },
        "socketio" => Handshake::SocketIo {
            channel: sio_channel,
        },
        _ => Handshake::Request(request),
    };
    let mut srv = ServerProc::spawn(cmd, "edgecomet", Duration::from_secs(10))?;
    let addr = srv.addr;
    let t = Duration::from_secs(60);

    // Warm-up: exercise accept, upgrade, subscribe, unsubscribe and close once.
    if warm > 0 {
        let mut p = Pool::new()?;
        p.connect(addr, warm, hs, srcs, 256, t)?;
        wait_stat(addr, gauge, warm as u64, t)?;
        p.close_all(true);
        wait_stat(addr, gauge, 0, t)?;
        if bayeux {
            // The clients outlive their connections by --bayeux-max-interval (10 s): wait until
            // the server has removed them, so that the baseline holds none.
            wait_stat(addr, "hub.bayeux_clients", 0, t)?;
        }
    }
    std::thread::sleep(settle);
    let m0 = proc_mem(&[srv.pid])?;

    let mut pool = Pool::new()?;
    let c0 = Instant::now();
    pool.connect(addr, n, hs, srcs, 512, t)?;
    let stats = wait_stat(addr, gauge, n as u64, t)?;
    let connect_secs = c0.elapsed().as_secs_f64();
    if total(&stats, "accepted") < n as u64 {
        return Err(std::io::Error::other(
            "server accepted fewer connections than opened",
        ));
    }
    if bayeux {
        // One client per connection, each subscribed once.
        for k in ["hub.bayeux_clients", "hub.bayeux_subscriptions"] {
            wait_stat(addr, k, n as u64, Duration::from_secs(1))?;
        }
    }
    std::thread::sleep(settle);
    let m1 = proc_mem(&[srv.pid])?;
    // Still all there after the settle?
    wait_stat(addr, gauge, n as u64, Duration::from_secs(1))?;

    pool.close_all(true);
    srv.stop(Duration::from_secs(10));
    let per = |a: u64, b: u64| (b as f64 - a as f64) / n as f64;
    Ok(Rep {
        huge0: m0.anon_huge,
        huge1: m1.anon_huge,
        pss0: m0.pss,
        pss1: m1.pss,
        rss0: m0.rss,
        rss1: m1.rss,
        pss_per_conn: per(m0.pss, m1.pss),
        rss_per_conn: per(m0.rss, m1.rss),
        connect_secs,
    })
}
