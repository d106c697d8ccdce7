//! `broadcast`: one message to 10,000 subscribers, edgecomet against a baseline, same run.
//!
//! Receiver (this process, one thread, `mio`): N sockets; per socket it counts the bytes
//! received; round r is complete when every socket has received r+1 whole frames (a fixed,
//! known size). t0 = just before the trigger is written, t1 = when the last socket completed;
//! deliveries/s = N / (t1 - t0).
//!
//! - edgecomet: `edgecomet --workers W --ws-ping-interval 0`, N WebSocket subscribers on one
//!   channel; the trigger is a `POST /pub/{channel}` on a kept-alive publisher connection.
//! - baseline: this binary with `--baseline-server` as a child process: it accepts N plain TCP
//!   connections (non-blocking, TCP_NODELAY) and, per trigger byte on a control connection,
//!   writes the same pre-framed WebSocket frame to each socket with one write(2) each in a tight
//!   loop (no epoll between writes): the cost of the bare syscalls.
//!
//! Only one side is connected at a time (the receiver would otherwise hold 2N fds): rounds run in
//! blocks, edgecomet and baseline alternately, each segment with a fresh server, a few uncounted
//! warm-up rounds, then the measured rounds.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use edgecomet::proto::ws::frame::{OP_TEXT, frame};
use edgecomet_bench::{
    Args, Handshake, Pool, ServerProc, die, get_stats, http_conn, median, percentile, pub_request,
    sources, thread_cpu, token_after, total, wait_stat,
};
use flood::http::HttpConn;
use flood::sys::raise_nofile;
use flood::ws::server_frame_len;

const HELP: &str = "\
broadcast: deliveries/s of one message to N subscribers, edgecomet vs. a write(2)-loop baseline

  --server-bin PATH    server binary [target/release/edgecomet]
  --subscribers N      subscribers [10000]
  --size B             message payload bytes [64]
  --rounds R           measured rounds per side [30]
  --blocks K           split them in K alternating blocks [3]
  --warmup W           uncounted rounds at the start of every segment [3]
  --workers N          edgecomet workers: 1 or 2 [1]
  --sources N          client source addresses 127.0.x.y per segment [4]
  --min-ratio X        fail if median(edgecomet) / median(baseline) < X [0.90]
  --token-secret S     start edgecomet with --token-secret S; subscribers bring a token
                       (?token=, an HS256 JWT for every channel, valid an hour); the
                       native WebSocket side only, the --socketio side runs without
  --socketio           a third side: the same edgecomet with Socket.IO clients over WebSocket
                       (a CONNECT to / joining the channel; recovery off, so every frame
                       is the same); fail if median(socketio) / median(edgecomet) < the
                       --min-socketio-ratio [0.90]
  --json FILE          also write the results as JSON
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Edge,
    Base,
    /// edgecomet with Socket.IO subscribers (`--socketio`).
    Sio,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Edge => "edgecomet",
            Side::Base => "baseline",
            Side::Sio => "socketio",
        }
    }
}

struct Cfg {
    bin: String,
    n: usize,
    size: usize,
    warmup: usize,
    workers: usize,
    nsrc: usize,
    /// `--token-secret`: the server needs a token, the subscribers bring one.
    token_secret: Option<String>,
    socketio: bool,
}

/// Bytes of the frame each side's subscribers receive for a `size`-byte payload of `x`s.
fn frame_len(side: Side, size: usize) -> usize {
    match side {
        // `42["message","xx…"]`: the payload is not JSON, so it goes as a string.
        Side::Sio => server_frame_len(size + "42[\"message\",\"\"]".len()),
        _ => server_frame_len(size),
    }
}

/// One measured round.
#[derive(Clone, Copy)]
struct Round {
    wall: Duration,
    cpu: Duration,
}

impl Round {
    fn rate(&self, n: usize) -> f64 {
        n as f64 / self.wall.as_secs_f64()
    }
}

struct Seg {
    rounds: Vec<Round>,
    connect_secs: f64,
    /// edgecomet only: /stats totals after the segment.
    stats: Option<serde_json::Value>,
}

const CHANNEL: &str = "bcast";

fn main() -> ExitCode {
    let mut a = Args::from_env();
    if a.flag("--baseline-server") {
        return baseline_server(a);
    }
    if a.flag("--help") || a.flag("-h") {
        print!("{HELP}");
        return ExitCode::SUCCESS;
    }
    let cfg = Cfg {
        bin: a.get("--server-bin", "target/release/edgecomet".to_string()),
        n: a.get("--subscribers", 10_000),
        size: a.get("--size", 64),
        warmup: a.get("--warmup", 3),
        workers: a.get("--workers", 1),
        nsrc: a.get("--sources", 4).max(1),
        token_secret: a.opt("--token-secret"),
        socketio: a.flag("--socketio"),
    };
    let rounds: usize = a.get("--rounds", 30).max(1);
    let blocks: usize = a.get("--blocks", 3).clamp(1, rounds);
    let min_ratio: f64 = a.get("--min-ratio", 0.90);
    let min_sio_ratio: f64 = a.get("--min-socketio-ratio", 0.90);
    let json: Option<String> = a.opt("--json");
    a.finish();
    if cfg.workers == 0 || cfg.workers > 2 {
        die("--workers must be 1 or 2");
    }
    let nofile = raise_nofile();
    if (cfg.n + 64) as u64 > nofile {
        die(&format!(
            "--subscribers {} needs about {} open files; the limit is {nofile}",
            cfg.n,
            cfg.n + 64
        ));
    }
    let started = Instant::now();
    let flen = server_frame_len(cfg.size);
    println!(
        "broadcast: {} subscribers, {}-byte payload ({flen}-byte frame), {rounds} rounds per side \
         in {blocks} alternating blocks (+{} warm-up rounds per segment), edgecomet --workers {}",
        cfg.n, cfg.size, cfg.warmup, cfg.workers
    );

    let mut edge: Vec<Round> = Vec::new();
    let mut base: Vec<Round> = Vec::new();
    let mut sio: Vec<Round> = Vec::new();
    let mut segs_json = Vec::new();
    let mut seg_no = 0u32;
    let mut last_stats = None;
    for b in 0..blocks {
        let k = rounds / blocks + usize::from(b < rounds % blocks);
        let mut order = if cfg.socketio {
            vec![Side::Edge, Side::Sio, Side::Base]
        } else {
            vec![Side::Edge, Side::Base]
        };
        if b % 2 == 1 {
            order.reverse();
        }
        for side in order {
            // Fresh source addresses per segment: no 4-tuple of an earlier segment is reused.
            let srcs = sources(seg_no * cfg.nsrc as u32, cfg.nsrc);
            seg_no += 1;
            let seg = match segment(&cfg, side, k, &srcs) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("broadcast: block {} {}: {e}", b + 1, side.name());
                    return ExitCode::from(2);
                }
            };
            let rates: Vec<f64> = seg.rounds.iter().map(|r| r.rate(cfg.n)).collect();
            let cpu: Vec<f64> = seg
                .rounds
                .iter()
                .map(|r| r.cpu.as_secs_f64() / r.wall.as_secs_f64())
                .collect();
            let mut extra = String::new();
            if let Some(s) = &seg.stats {
                extra = format!(
                    "; server messages_out {} bytes_queued {} drops {}",
                    total(s, "messages_out"),
                    total(s, "bytes_queued"),
                    total(s, "drops")
                );
                last_stats = Some(s.clone());
            }
            println!(
                "  block {} {:<9}: {k} rounds, median {:>9.0} deliveries/s ({:.2} ms/round), \
                 receiver CPU/wall {:.2} (connect {:.2} s{extra})",
                b + 1,
                side.name(),
                median(&rates),
                1e3 * cfg.n as f64 / median(&rates),
                median(&cpu),
                seg.connect_secs
            );
            segs_json.push(serde_json::json!({
                "block": b + 1,
                "side": side.name(),
                "deliveries_per_sec": rates,
                "receiver_cpu_secs": seg.rounds.iter().map(|r| r.cpu.as_secs_f64()).collect::<Vec<_>>(),
                "wall_secs": seg.rounds.iter().map(|r| r.wall.as_secs_f64()).collect::<Vec<_>>(),
                "connect_secs": seg.connect_secs,
                "server_stats_total": seg.stats.as_ref().map(|s| s["total"].clone()),
            }));
            match side {
                Side::Edge => edge.extend(seg.rounds),
                Side::Base => base.extend(seg.rounds),
                Side::Sio => sio.extend(seg.rounds),
            }
        }
    }

    let summary = |v: &[Round]| {
        let rates: Vec<f64> = v.iter().map(|r| r.rate(cfg.n)).collect();
        let cpu_ms: Vec<f64> = v.iter().map(|r| r.cpu.as_secs_f64() * 1e3).collect();
        let wall_ms: Vec<f64> = v.iter().map(|r| r.wall.as_secs_f64() * 1e3).collect();
        let share: Vec<f64> = v
            .iter()
            .map(|r| r.cpu.as_secs_f64() / r.wall.as_secs_f64())
            .collect();
        (
            median(&rates),
            percentile(&rates, 0.1),
            percentile(&rates, 0.9),
            median(&cpu_ms),
            median(&wall_ms),
            median(&share),
        )
    };
    let e = summary(&edge);
    let bs = summary(&base);
    let ratio = e.0 / bs.0;
    let so = cfg.socketio.then(|| summary(&sio));
    let sio_ratio = so.map(|s| s.0 / e.0);
    let pass = ratio >= min_ratio && sio_ratio.is_none_or(|r| r >= min_sio_ratio);
    let mut sides = vec![("edgecomet", e), ("baseline", bs)];
    if let Some(s) = so {
        sides.push(("socketio", s));
    }
    for (name, s) in sides {
        println!(
            "  {name:<9}: median {:>9.0} deliveries/s (p10 {:.0}, p90 {:.0}); per round: wall \
             {:.2} ms, receiver CPU {:.2} ms ({:.0}% of wall)",
            s.0,
            s.1,
            s.2,
            s.4,
            s.3,
            100.0 * s.5
        );
    }
    let sio_line = sio_ratio.map_or(String::new(), |r| {
        format!("; ratio socketio/edgecomet {r:.3}, min {min_sio_ratio}")
    });
    println!(
        "broadcast: ratio edgecomet/baseline (medians) {ratio:.3}; min {min_ratio}{sio_line} -> {}  \
         [{:.1} s]",
        if pass { "PASS" } else { "FAIL" },
        started.elapsed().as_secs_f64()
    );
    if let Some(file) = json {
        let side_json = |s: (f64, f64, f64, f64, f64, f64)| {
            serde_json::json!({
                "median_deliveries_per_sec": s.0, "p10": s.1, "p90": s.2,
                "median_receiver_cpu_ms": s.3, "median_wall_ms": s.4,
                "median_receiver_cpu_share": s.5,
            })
        };
        let doc = serde_json::json!({
            "tool": "broadcast",
            "server_bin": cfg.bin,
            "subscribers": cfg.n,
            "payload_bytes": cfg.size,
            "frame_bytes": flen,
            "rounds": rounds,
            "blocks": blocks,
            "warmup_rounds_per_segment": cfg.warmup,
            "workers": cfg.workers,
            "edgecomet": side_json(e),
            "baseline": side_json(bs),
            "ratio": ratio,
            "min_ratio": min_ratio,
            "socketio": so.map(side_json),
            "socketio_ratio": sio_ratio,
            "min_socketio_ratio": min_sio_ratio,
            "pass": pass,
            "segments": segs_json,
            "last_server_stats": last_stats,
            "elapsed_secs": started.elapsed().as_secs_f64(),
        });
        if let Err(e) = std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap() + "\n") {
            eprintln!("broadcast: cannot write {file}: {e}");
            return ExitCode::from(2);
        }
    }
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// How a round is started and finished on each side.
enum Trigger {
    Publish { conn: HttpConn, req: Vec<u8> },
    Byte { ctl: std::net::TcpStream },
}

impl Trigger {
    fn fire(&mut self) -> io::Result<()> {
        match self {
            Trigger::Publish { conn, req } => conn.send_raw(req),
            Trigger::Byte { ctl } => ctl.write_all(b"T"),
        }
    }

    /// After the round: read the publish response.
    fn finish(&mut self) -> io::Result<()> {
        match self {
            Trigger::Publish { conn, .. } => {
                let (status, body) = conn.read_response()?;
                if status != 200 {
                    return Err(io::Error::other(format!(
                        "publish answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    )));
                }
                Ok(())
            }
            Trigger::Byte { .. } => Ok(()),
        }
    }
}

fn segment(cfg: &Cfg, side: Side, rounds: usize, srcs: &[Ipv4Addr]) -> io::Result<Seg> {
    let timeout = Duration::from_secs(60);
    let payload = vec![b'x'; cfg.size];
    let flen = frame_len(side, cfg.size) as u64;
    let mut pool = Pool::new()?;
    let (mut srv, mut trig, connect_secs) = match side {
        Side::Edge | Side::Sio => {
            let sio = side == Side::Sio;
            let mut cmd = Command::new(&cfg.bin);
            cmd.args([
                "--listen",
                "127.0.0.1:0",
                "--workers",
                &cfg.workers.to_string(),
                "--ws-ping-interval",
                "0",
            ]);
            if sio {
                // Recovery off: every event frame is the same size.
                cmd.args([
                    "--socketio-recovery",
                    "0",
                    "--socketio-ping-interval",
                    "1h",
                    "--socketio-ping-timeout",
                    "1h",
                ]);
            }
            let query = match &cfg.token_secret {
                Some(secret) if !sio => {
                    cmd.args(["--token-secret", secret]);
                    format!("?token={}", edgecomet_bench::token(secret))
                }
                _ => String::new(),
            };
            let srv = ServerProc::spawn(cmd, "edgecomet", Duration::from_secs(10))?;
            let path = |_: usize| format!("/sub/{CHANNEL}{query}");
            let channel = |_: usize| CHANNEL.to_string();
            let (hs, gauge) = if sio {
                (Handshake::SocketIo { channel: &channel }, "conns_sio_ws")
            } else {
                (Handshake::WebSocket(&path), "conns_ws_sub")
            };
            let c0 = Instant::now();
            pool.connect(srv.addr, cfg.n, hs, srcs, 512, timeout)?;
            wait_stat(srv.addr, gauge, cfg.n as u64, timeout)?;
            let secs = c0.elapsed().as_secs_f64();
            let conn = http_conn(srv.addr)?;
            let req = pub_request(CHANNEL, &payload);
            (srv, Trigger::Publish { conn, req }, secs)
        }
        Side::Base => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args([
                "--baseline-server",
                "--subscribers",
                &cfg.n.to_string(),
                "--size",
                &cfg.size.to_string(),
            ]);
            let srv = ServerProc::spawn(cmd, "baseline", Duration::from_secs(10))?;
            let ctl_addr: SocketAddr = token_after(&srv.line, " control ")
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| io::Error::other(format!("bad baseline line {:?}", srv.line)))?;
            let mut ctl = std::net::TcpStream::connect(ctl_addr)?;
            ctl.set_nodelay(true)?;
            ctl.set_read_timeout(Some(timeout))?;
            let c0 = Instant::now();
            pool.connect(srv.addr, cfg.n, Handshake::Raw, srcs, 512, timeout)?;
            let mut r = [0u8; 1];
            ctl.read_exact(&mut r)?;
            if r[0] != b'R' {
                return Err(io::Error::other("baseline server not ready"));
            }
            let secs = c0.elapsed().as_secs_f64();
            (srv, Trigger::Byte { ctl }, secs)
        }
    };
    pool.set_frame_len(flen as usize);

    let mut out = Vec::with_capacity(rounds);
    for k in 0..cfg.warmup + rounds {
        let target = (k as u64 + 1) * flen;
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        trig.fire()?;
        let t1 = pool.wait_all(target, Duration::from_secs(30))?;
        let cpu1 = thread_cpu();
        trig.finish()?;
        if k >= cfg.warmup {
            out.push(Round {
                wall: t1 - t0,
                cpu: cpu1.saturating_sub(cpu0),
            });
        }
    }
    let want = (cfg.warmup + rounds) as u64 * flen;
    let (lo, hi) = pool.rx_range();
    if lo != want || hi != want || pool.bad_frames != 0 {
        return Err(io::Error::other(format!(
            "{}: received {lo}..{hi} bytes per subscriber, want {want}; {} bad frame starts",
            side.name(),
            pool.bad_frames
        )));
    }
    let stats = match side {
        Side::Edge | Side::Sio => {
            let s = get_stats(srv.addr)?;
            let want_out = cfg.n as u64 * (cfg.warmup + rounds) as u64;
            if total(&s, "messages_out") != want_out {
                eprintln!(
                    "broadcast: server messages_out {} != {want_out}",
                    total(&s, "messages_out")
                );
            }
            Some(s)
        }
        Side::Base => None,
    };
    pool.close_all(true);
    drop(trig);
    srv.stop(Duration::from_secs(10));
    Ok(Seg {
        rounds: out,
        connect_secs,
        stats,
    })
}

/// The baseline server (hidden `--baseline-server`): N plain TCP connections, one write(2) of
/// the frame per socket per trigger byte.
fn baseline_server(mut a: Args) -> ExitCode {
    let n: usize = a.get("--subscribers", 10_000);
    let size: usize = a.get("--size", 64);
    a.finish();
    raise_nofile();
    let run = || -> io::Result<(u64, u64)> {
        let data = TcpListener::bind("127.0.0.1:0")?;
        // std listens with a small backlog; widen it like the server's (capped by somaxconn).
        // SAFETY: listen(2) on the listener's open fd, integer arguments only.
        unsafe {
            libc::listen(data.as_raw_fd(), 4096);
        }
        let ctl_l = TcpListener::bind("127.0.0.1:0")?;
        eprintln!(
            "baseline: listening on {} control {}",
            data.local_addr()?,
            ctl_l.local_addr()?
        );
        let (mut ctl, _) = ctl_l.accept()?;
        ctl.set_nodelay(true)?;
        let mut socks = Vec::with_capacity(n);
        for _ in 0..n {
            let (s, _) = data.accept()?;
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            socks.push(s);
        }
        let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
        let frame = frame(OP_TEXT, &vec![b'x'; size]);
        ctl.write_all(b"R")?;
        let (mut rounds, mut short) = (0u64, 0u64);
        let mut b = [0u8; 64];
        loop {
            let got = match ctl.read(&mut b) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for _ in 0..got {
                for &fd in &fds {
                    // SAFETY: write(2) from a live buffer of the stated length to an open fd.
                    let w = unsafe {
                        libc::write(fd, frame.as_ptr() as *const libc::c_void, frame.len())
                    };
                    if w != frame.len() as isize {
                        short += 1;
                    }
                }
                rounds += 1;
            }
        }
        Ok((rounds, short))
    };
    match run() {
        Ok((_, 0)) => ExitCode::SUCCESS,
        Ok((rounds, short)) => {
            eprintln!("baseline: {short} short or failed writes in {rounds} rounds");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("baseline: {e}");
            ExitCode::from(2)
        }
    }
}
