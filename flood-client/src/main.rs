//! `flood`: opens N subscriber connections (WebSocket, Server-Sent Events or long-poll, all on
//! `GET /sub/{channel}`, or CometD/Bayeux clients of the channel `/{channel}`) to a server that
//! publishes on `POST /pub/{channel}`, holds them, drives a publish load through them, and reports what each connection costs the server (PSS, RSS), the
//! kernel and this client, with connect rate, delivery latency and loss/duplication/reordering.
//!
//! The coordinator (this process) checks the machine's limits, forks worker processes (each below
//! its own open-files limit), samples memory during the ramp, runs the publisher, and gathers the
//! workers' JSON lines into the report. Workers are this same binary run with `--worker-plan`.

mod bayeux;
mod engine;
mod kcheck;
mod longpoll;
mod memory;
mod msg;
mod plot;
mod preflight;
mod publish;
mod report;
mod sse;

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use clap::Parser;

use crate::bayeux::ConnType;
use crate::engine::{Errors, Final, Line, Progress, Transport, WorkerPlan};
use crate::report::{Report, Sample};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// flood: a C10k-style load generator for WebSocket, Server-Sent Events, long-poll and
/// CometD/Bayeux subscribers that reports what each connection costs.
#[derive(Debug, Clone, Parser)]
#[command(name = "flood", version, about)]
pub struct Args {
    /// Subscribe URL: ws://HOST:PORT/PREFIX/{channel} (http:// is the same: --transport says how
    /// to subscribe). The publish URL is the same with the last `/sub/` replaced by `/pub/` (see
    /// --pub-path).
    #[arg(long, default_value = "ws://127.0.0.1:8080/sub/flood")]
    pub url: String,

    /// How each connection subscribes: `ws` (WebSocket upgrade, a text frame per message), `sse`
    /// (GET with `Accept: text/event-stream`, an event per message; `event: gap` counted as a
    /// gap) or `longpoll` (GET with `Accept: application/json` again and again on a keep-alive
    /// connection, `?cursor=` of the previous answer; a long-poll connection counts as open once
    /// its first poll is sent, since no answer comes before a message), or `bayeux` (a
    /// CometD/Bayeux 1.0 client per connection on --bayeux-path: `/meta/handshake`,
    /// `/meta/subscribe` to `/{channel}`, then `/meta/connect` again and again, the first with
    /// `advice.timeout` 0; open once that first connect is answered; messages arrive in connect
    /// replies; a failed meta reply or `reconnect: handshake` counts as an error and closes the
    /// connection).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,

    /// With --transport bayeux: `long-polling` (each request a POST of a JSON array, answered by
    /// a JSON array; handshake, subscribe and every connect one after another on ONE keep-alive
    /// connection per client, where the official client uses two) or `websocket` (one upgrade
    /// to the bare --bayeux-path per client, JSON arrays in text frames both ways).
    #[arg(long, value_enum, default_value_t = ConnType::LongPolling)]
    pub bayeux_transport: ConnType,

    /// With --transport bayeux: the Bayeux endpoint on the URL's host. The channel is still
    /// the URL's last segment (Bayeux `/{channel}`) and publishing still goes to the native
    /// `POST /pub/{channel}`.
    #[arg(long, default_value = "/cometd")]
    pub bayeux_path: String,

    /// More targets of the same server (HOST:PORT, comma-separated, e.g. 127.0.0.2:8080 for a
    /// server listening on 0.0.0.0): connections are spread over the URL's address and these,
    /// each pair of source and target address giving another set of ephemeral ports. Publishing
    /// goes to the URL's address.
    #[arg(long, value_delimiter = ',')]
    pub also_target: Vec<String>,

    /// Path prefix for publishing (the channel name is appended).
    #[arg(long)]
    pub pub_path: Option<String>,

    /// Connections to open (up to 1,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns: u64,

    /// New connections per second over all processes, or `max` (as fast as the server accepts;
    /// the report gives the rate reached).
    #[arg(long, default_value = "5000")]
    pub rate: String,

    /// Seconds to hold the connections once all are open (publishing meanwhile if
    /// --publish-rate is set). 0 = until Ctrl-C.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,

    /// Worker processes. Default: enough that each stays below its open-files limit (with a
    /// margin of 64).
    #[arg(long)]
    pub procs: Option<u32>,

    /// Source addresses, e.g. 127.0.0.2-127.0.0.40 (each gives another set of ephemeral
    /// ports). Default: the kernel chooses.
    #[arg(long)]
    pub source: Option<String>,

    /// Spread connections over K channels named {channel}-0 … {channel}-(K-1) (K = 1: {channel}).
    #[arg(long, default_value_t = 1)]
    pub channels: u32,

    /// Messages per second published (over all channels) while holding. 0 = no publishing.
    #[arg(long, default_value_t = 0.0)]
    pub publish_rate: f64,

    /// Bytes per published message (at least 32: sequence number and timestamp).
    #[arg(long, default_value_t = 64)]
    pub size: usize,

    /// Fraction (0 to 1) of the connections that read slowly once open: every
    /// round(1/FRACTION)-th connection, spread evenly over channels and processes. A slow reader
    /// reads --slow-read-rate bytes per second (0: nothing at all), so the server's and the
    /// kernel's buffers fill behind it. Slow readers are reported apart: their deliveries, and
    /// how many the server closed, are not loss or errors; loss and latency cover the others.
    #[arg(long, default_value_t = 0.0)]
    pub slow_readers: f64,

    /// Bytes per second each slow reader reads (see --slow-readers). 0 = it never reads again
    /// once open (a stalled client).
    #[arg(long, default_value_t = 0)]
    pub slow_read_rate: u64,

    /// Connections per second (over all processes) that the client closes and replaces with new
    /// ones while holding: connection turnover, as long-poll clients without keep-alive or
    /// page reloads cause. The client closes first, so TIME-WAIT sockets (and their ports) are
    /// on this side; the report gives the turnover reached, TIME-WAIT peak and the connect errors
    /// (EADDRNOTAVAIL when the ports run out). Not with --publish-rate (a new connection misses
    /// what was published before it).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,

    /// Broadcasts before the hold: once every connection is open, publish one message on every
    /// channel and wait until it has reached every subscriber (or deliveries stop for --drain
    /// seconds), N times. The report gives each one's time to reach all (from the publish to
    /// the last delivery). Then the hold, with --publish-rate if set.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub broadcasts: u32,

    /// Keep-alive publisher connections.
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,

    /// Seconds to wait for deliveries after the last publish.
    #[arg(long, default_value_t = 3)]
    pub drain: u64,

    /// Server process ids (comma-separated) for the memory figures. Default: the processes that
    /// listen on the target port (local targets only).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// Seconds before a connection that has not completed its handshake counts as a timeout.
    #[arg(long, default_value_t = 10)]
    pub connect_timeout: u64,

    /// Connections in progress at once per process.
    #[arg(long, default_value_t = 1000)]
    pub max_in_flight: usize,

    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<String>,

    /// Write an SVG: memory per connection during the ramp, and the latency distribution.
    #[arg(long)]
    pub plot: Option<String>,

    /// Allow a target outside 127.0.0.0/8 and ::1 (a load test of somebody else's machine).
    #[arg(long)]
    pub allow_remote: bool,

    /// Start even if the preflight check says a limit stops the run.
    #[arg(long)]
    pub force: bool,

    /// Internal: run as a worker with this plan (JSON).
    #[arg(long, hide = true)]
    pub worker_plan: Option<String>,
}

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("check") {
        return ExitCode::from(kcheck::main(std::env::args().skip(1)));
    }
    let args = Args::parse();
    if let Some(plan) = &args.worker_plan {
        // Workers share the terminal's process group: Ctrl-C is the coordinator's to handle.
        // SAFETY: setting a signal disposition to SIG_IGN has no handler to be unsafe about.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_IGN);
        }
        let plan: WorkerPlan = match serde_json::from_str(plan) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("flood worker: bad plan: {e}");
                return ExitCode::from(2);
            }
        };
        raise_nofile();
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
    match coordinate(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("flood: {e}");
            ExitCode::from(2)
        }
    }
}

/// Raises the soft open-files limit to the hard limit.
fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
    r.rlim_cur
}

/// Parsed target.
struct Target {
    addr: SocketAddr,
    host: String,
    sub_prefix: String,
    pub_prefix: String,
    channel: String,
}

fn parse_url(args: &Args) -> Result<Target, String> {
    let rest = args
        .url
        .strip_prefix("ws://")
        .or_else(|| args.url.strip_prefix("http://"))
        .ok_or("--url must start with ws:// or http:// (TLS is not supported)")?;
    let (host, path) = rest
        .split_once('/')
        .ok_or("--url needs a path: /sub/{channel}")?;
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    let path = format!("/{path}");
    let cut = path.rfind('/').unwrap_or(0) + 1;
    let (sub_prefix, channel) = path.split_at(cut);
    if channel.is_empty() {
        return Err("--url must end with a channel name".into());
    }
    let pub_prefix = match &args.pub_path {
        Some(p) => p.clone(),
        None => match sub_prefix.rfind("/sub/") {
            Some(i) => format!("{}/pub/{}", &sub_prefix[..i], &sub_prefix[i + 5..]),
            None => return Err("cannot derive the publish path: give --pub-path".into()),
        },
    };
    Ok(Target {
        addr,
        host: host.to_string(),
        sub_prefix: sub_prefix.to_string(),
        pub_prefix,
        channel: channel.to_string(),
    })
}

/// `127.0.0.2-127.0.0.40` or `127.0.0.2` or a comma list of either.
fn parse_sources(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("bad address {b:?}"))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a || b - a > 1 << 16 {
            return Err(format!("bad range {part:?}"));
        }
        out.extend((a..=b).map(Ipv4Addr::from));
    }
    Ok(out)
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
}

fn coordinate(args: &Args) -> Result<ExitCode, String> {
    let target = parse_url(args)?;
    if !is_loopback(target.addr.ip()) && !args.allow_remote {
        return Err(format!(
            "{} is not a loopback address; pass --allow-remote to load another machine",
            target.addr.ip()
        ));
    }
    let rate: Option<f64> = if args.rate == "max" {
        None
    } else {
        let r: f64 = args
            .rate
            .parse()
            .map_err(|_| "--rate takes a number or `max`")?;
        if r <= 0.0 {
            return Err("--rate must be positive".into());
        }
        Some(r)
    };
    if args.churn < 0.0 || !args.churn.is_finite() {
        return Err("--churn is connections per second, 0 or more".into());
    }
    if args.churn > 0.0 && (args.publish_rate > 0.0 || args.broadcasts > 0) {
        return Err(
            "--churn does not go with --publish-rate or --broadcasts: a replacement connection \
                    misses what was published before it, so loss could not be counted"
                .into(),
        );
    }
    if !(0.0..=1.0).contains(&args.slow_readers) {
        return Err("--slow-readers is a fraction from 0 to 1".into());
    }
    if (args.publish_rate > 0.0 || args.broadcasts > 0) && args.size < msg::MIN_SIZE {
        return Err(format!("--size must be at least {}", msg::MIN_SIZE));
    }
    let sources = match &args.source {
        Some(s) => parse_sources(s)?,
        None => Vec::new(),
    };
    let nofile = raise_nofile();
    let limits = preflight::read_limits().map_err(|e| format!("reading limits: {e}"))?;
    let procs = args
        .procs
        .unwrap_or_else(|| preflight::procs_needed(args.conns, limits.nofile_soft))
        .max(1);
    let mut targets = vec![target.addr];
    for t in &args.also_target {
        let a = t
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve --also-target {t}: {e}"))?
            .next()
            .ok_or_else(|| format!("--also-target {t} resolves to nothing"))?;
        if !is_loopback(a.ip()) && !args.allow_remote {
            return Err(format!(
                "{} is not a loopback address; pass --allow-remote to load another machine",
                a.ip()
            ));
        }
        targets.push(a);
    }
    let server_local = is_loopback(target.addr.ip());
    let server_pids: Vec<u32> = if !args.server_pid.is_empty() {
        args.server_pid.clone()
    } else if server_local {
        memory::pids_listening_on(target.addr.port()).unwrap_or_default()
    } else {
        Vec::new()
    };
    let plan = preflight::Plan {
        conns: args.conns,
        procs,
        sources: sources.len().max(1) as u32,
        targets: targets.len() as u32,
        server_local,
        client_here: true,
        // Processes sharing the port (SO_REUSEPORT) split the connections between them.
        server_procs: (server_pids.len() as u32).max(1),
        server_strict: false,
        client_bytes_per_conn: 1024,
        server_bytes_per_conn: 1024,
    };
    let findings = preflight::check(&plan, &limits);
    let text = preflight::render(&findings);
    if !text.trim().is_empty() {
        eprintln!("{text}");
    }
    let stop = findings
        .iter()
        .any(|f| matches!(f.verdict, preflight::Verdict::Stop(_)));
    if stop && !args.force {
        return Err("a limit stops this run (above); change it, or pass --force".into());
    }

    let server_before = memory::proc_mem(&server_pids).ok();
    let kernel_before = memory::kernel_mem().ok();

    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        let _ = ctrlc_flag(flag);
    }

    // Fork the workers.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel::<(u32, Line)>();
    let mut workers = Vec::new();
    let per = args.conns / u64::from(procs);
    let extra = args.conns % u64::from(procs);
    let mut offset = 0;
    for i in 0..procs {
        let n = per + u64::from(u64::from(i) < extra);
        let wp = WorkerPlan {
            index: i,
            conns: n,
            offset,
            rate: rate.map(|r| r * n as f64 / args.conns as f64),
            targets: targets.clone(),
            host: target.host.clone(),
            path_prefix: target.sub_prefix.clone(),
            channel: target.channel.clone(),
            channels: args.channels.max(1),
            sources: sources.clone(),
            connect_timeout_ms: args.connect_timeout * 1000,
            max_in_flight: args.max_in_flight.max(1),
            transport: args.transport,
            bayeux: args.bayeux_transport,
            bayeux_path: args.bayeux_path.clone(),
            slow_fraction: args.slow_readers,
            slow_read_rate: args.slow_read_rate,
            churn_rate: args.churn * n as f64 / args.conns as f64,
            broadcasts: args.broadcasts,
        };
        offset += n;
        let mut child = Command::new(&exe)
            .arg("--worker-plan")
            .arg(serde_json::to_string(&wp).map_err(|e| e.to_string())?)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start worker {i}: {e}"))?;
        let out = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(l) = serde_json::from_str::<Line>(&line) {
                    let _ = tx.send((i, l));
                }
            }
        });
        let stdin = child.stdin.take();
        workers.push(WorkerProc { child, stdin });
    }
    drop(tx);

    let started = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut progress: Vec<Progress> = (0..procs).map(|_| Progress::default()).collect();
    let mut finals: Vec<Option<Final>> = (0..procs).map(|_| None).collect();
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_sample = Instant::now() - Duration::from_secs(1);
    let mut last_print = Instant::now();
    let sample = |established: u64, at: f64| -> Sample {
        Sample {
            secs: at,
            established,
            server: memory::proc_mem(&server_pids).ok(),
            kernel: memory::kernel_mem().ok(),
        }
    };

    // Ramp: until every worker has settled all its connections.
    let mut ramp_secs = 0.0;
    loop {
        for (i, line) in pump(&rx, Duration::from_millis(50)) {
            match line {
                Line::Progress(p) => progress[i as usize] = p,
                Line::Final(f) => finals[i as usize] = Some(*f),
            }
        }
        let est: u64 = progress.iter().map(|p| p.established).sum();
        if last_sample.elapsed() >= Duration::from_millis(200) {
            last_sample = Instant::now();
            samples.push(sample(est, started.elapsed().as_secs_f64()));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            print_progress(tty, "ramp", &progress, args.conns, started, &samples, 0.0);
        }
        if progress.iter().all(|p| p.ramp_done) {
            ramp_secs = progress.iter().map(|p| p.ramp_secs).fold(0.0, f64::max);
            break;
        }
        if interrupted.load(Ordering::Relaxed) || any_worker_gone(&mut workers) {
            break;
        }
    }
    // Let the server settle, then read memory with every connection open.
    std::thread::sleep(Duration::from_secs(1));
    let established: u64 = progress.iter().map(|p| p.established).sum();
    let server_open = memory::proc_mem(&server_pids).ok();
    let kernel_open = memory::kernel_mem().ok();
    samples.push(sample(established, started.elapsed().as_secs_f64()));
    if tty {
        println!();
    }
    println!(
        "flood: {established} of {} connections open after {ramp_secs:.2} s",
        args.conns
    );

    let publish_plan = publish::PublishPlan {
        target: target.addr,
        host: target.host.clone(),
        path_prefix: target.pub_prefix.clone(),
        channel: target.channel.clone(),
        channels: args.channels.max(1),
        rate: args.publish_rate,
        size: args.size,
        connections: args.publishers,
        first_seq: args.broadcasts,
    };
    // Broadcasts, one at a time.
    let mut published = publish::Published::default();
    for b in 0..args.broadcasts {
        if interrupted.load(Ordering::Relaxed) || workers_gone(&mut workers) {
            break;
        }
        let before: u64 = progress.iter().map(|p| p.deliveries).sum();
        let open: u64 = progress.iter().map(|p| p.established).sum();
        // Slow readers' deliveries are not counted, so they are not waited for.
        let expect = open.saturating_sub((open as f64 * args.slow_readers).floor() as u64);
        let failed = publish::broadcast(&publish_plan, b, &mut published);
        let (mut last, mut last_change) = (before, Instant::now());
        loop {
            for (i, line) in pump(&rx, Duration::from_millis(50)) {
                if let Line::Progress(p) = line {
                    progress[i as usize] = p;
                }
            }
            let d: u64 = progress.iter().map(|p| p.deliveries).sum();
            if d != last {
                (last, last_change) = (d, Instant::now());
            }
            if d - before >= expect
                || last_change.elapsed() >= Duration::from_secs(args.drain.max(1))
                || interrupted.load(Ordering::Relaxed)
            {
                break;
            }
        }
        println!(
            "flood: broadcast {}/{}: {} of {expect} delivered{}",
            b + 1,
            args.broadcasts,
            last - before,
            if failed > 0 {
                format!(" ({failed} publish(es) failed)")
            } else {
                String::new()
            }
        );
    }

    // Hold (and publish).
    let load_start_ns = msg::now_ns();
    let publisher =
        (args.publish_rate > 0.0).then(|| publish::Publisher::start(publish_plan.clone()));
    let hold_start = Instant::now();
    // Memory while holding (and publishing), once a second and at the end of the publishing:
    // what buffers fill behind slow readers.
    let mut hold: Vec<Sample> = Vec::new();
    let mut last_deliveries = 0u64;
    let mut last_rate_at = Instant::now();
    let mut rate_now = 0.0;
    while (args.duration == 0 || hold_start.elapsed() < Duration::from_secs(args.duration))
        && !interrupted.load(Ordering::Relaxed)
        && !workers_gone(&mut workers)
    {
        for (i, line) in pump(&rx, Duration::from_millis(100)) {
            if let Line::Progress(p) = line {
                progress[i as usize] = p;
            }
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            last_sample = Instant::now();
            let est: u64 = progress.iter().map(|p| p.established).sum();
            hold.push(sample(est, started.elapsed().as_secs_f64()));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            let d: u64 = progress.iter().map(|p| p.deliveries).sum();
            rate_now = (d - last_deliveries.min(d)) as f64 / last_rate_at.elapsed().as_secs_f64();
            last_deliveries = d;
            last_rate_at = Instant::now();
            last_print = Instant::now();
            print_progress(
                tty, "hold", &progress, args.conns, started, &samples, rate_now,
            );
        }
    }
    let _ = rate_now;
    let load_published = publisher.map(|p| p.finish()).unwrap_or_default();
    let broadcasts_published = published.total();
    published.add(&load_published);
    let publish_secs = hold_start.elapsed().as_secs_f64();
    {
        let est: u64 = progress.iter().map(|p| p.established).sum();
        hold.push(sample(est, started.elapsed().as_secs_f64()));
    }
    // Drain: wait until deliveries stop growing (or the drain time passes).
    if load_published.total() > 0 {
        let until = Instant::now() + Duration::from_secs(args.drain);
        let mut last = u64::MAX;
        let mut still = 0;
        // Two seconds without a new delivery: all arrived (or they will not).
        while Instant::now() < until && still < 20 {
            for (i, line) in pump(&rx, Duration::from_millis(100)) {
                if let Line::Progress(p) = line {
                    progress[i as usize] = p;
                }
            }
            let d: u64 = progress.iter().map(|p| p.deliveries).sum();
            still = if d == last { still + 1 } else { 0 };
            last = d;
        }
    }
    if tty {
        println!();
    }

    // Close: tell every worker, collect the finals.
    for w in &mut workers {
        if let Some(mut s) = w.stdin.take() {
            let _ = s.write_all(b"close\n");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while finals.iter().any(Option::is_none) && Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok((i, Line::Final(f))) => finals[i as usize] = Some(*f),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    for w in &mut workers {
        let _ = w.child.wait();
    }
    let finals: Vec<Final> = finals.into_iter().flatten().collect();
    if finals.len() < procs as usize {
        eprintln!(
            "flood: only {} of {procs} workers reported; figures cover those",
            finals.len()
        );
    }
    let report = Report::build(report::Inputs {
        args,
        procs,
        nofile,
        ramp_secs,
        publish_secs,
        rate_limited: rate.is_some(),
        finals: &finals,
        published: &published,
        broadcasts_published,
        load_start_ns,
        server_pids: &server_pids,
        server_before,
        server_open,
        kernel_before,
        kernel_open,
        samples: &samples,
        hold: &hold,
        server_local,
    });
    print!("{}", report.summary());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json()).map_err(|e| format!("writing {path}: {e}"))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg()).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Waits up to `wait` for the first worker line, then takes whatever else is already there.
/// Bounded, so that a steady stream of lines cannot hold up the caller's own clock.
fn pump(rx: &mpsc::Receiver<(u32, Line)>, wait: Duration) -> Vec<(u32, Line)> {
    let mut out = Vec::new();
    if let Ok(first) = rx.recv_timeout(wait) {
        out.push(first);
        out.extend(rx.try_iter());
    }
    out
}

/// Whether some worker has exited (crashed or killed): the ramp cannot complete.
fn any_worker_gone(workers: &mut [WorkerProc]) -> bool {
    let mut gone = 0;
    for w in workers.iter_mut() {
        if matches!(w.child.try_wait(), Ok(Some(_))) {
            gone += 1;
        }
    }
    if gone > 0 {
        eprintln!("flood: {gone} worker process(es) exited during the ramp");
    }
    gone > 0
}

/// Whether every worker has exited (e.g. killed).
fn workers_gone(workers: &mut [WorkerProc]) -> bool {
    workers
        .iter_mut()
        .all(|w| matches!(w.child.try_wait(), Ok(Some(_))))
}

/// Installs a SIGINT handler that sets `flag` (the second Ctrl-C exits at once).
fn ctrlc_flag(flag: Arc<AtomicBool>) -> std::io::Result<()> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = FLAG.set(flag);
    extern "C" fn on_sigint(_: libc::c_int) {
        if let Some(f) = FLAG.get()
            && f.swap(true, Ordering::SeqCst)
        {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(130) };
        }
    }
    // SAFETY: installs an async-signal-safe handler (an atomic swap and _exit only).
    let r = unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    if r == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn print_progress(
    tty: bool,
    phase: &str,
    progress: &[Progress],
    target: u64,
    started: Instant,
    samples: &[Sample],
    deliveries_per_sec: f64,
) {
    let est: u64 = progress.iter().map(|p| p.established).sum();
    let mut errs = Errors::default();
    for p in progress {
        errs.add(&p.errors);
    }
    let secs = started.elapsed().as_secs_f64();
    let server = samples.last().and_then(|s| s.server.as_ref()).map_or_else(
        || "-".to_string(),
        |m| format!("{:.1} MiB", m.pss as f64 / 1048576.0),
    );
    let line = format!(
        "[{secs:7.1}s] {phase}: {est}/{target} open{}, errors {} (refused {} reset {} \
         timeout {} eaddrnotavail {} emfile {} http {} protocol {} bayeux {} closed {}), server \
         PSS {server}, {deliveries_per_sec:.0} deliveries/s",
        if phase == "ramp" {
            format!(" ({:.0}/s)", est as f64 / secs.max(0.001))
        } else {
            String::new()
        },
        errs.total(),
        errs.refused,
        errs.reset,
        errs.timeout,
        errs.eaddrnotavail,
        errs.emfile,
        errs.http_status,
        errs.protocol,
        errs.bayeux,
        errs.closed_by_server,
    );
    if tty {
        print!("\r\x1b[2K{line}");
        let _ = std::io::stdout().flush();
    } else {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> Args {
        Args::parse_from(["flood", "--url", url])
    }

    #[test]
    fn urls() {
        let t = parse_url(&args("ws://127.0.0.1:9000/sub/news")).unwrap();
        assert_eq!(t.addr.port(), 9000);
        assert_eq!(t.sub_prefix, "/sub/");
        assert_eq!(t.pub_prefix, "/pub/");
        assert_eq!(t.channel, "news");
        let t = parse_url(&args("ws://localhost:9000/app/sub/x")).unwrap();
        assert_eq!(t.pub_prefix, "/app/pub/");
        let t = parse_url(&args("http://127.0.0.1:9000/sub/x")).unwrap();
        assert_eq!((t.addr.port(), t.channel.as_str()), (9000, "x"));
        assert!(parse_url(&args("https://127.0.0.1/sub/x")).is_err());
        assert!(parse_url(&args("wss://127.0.0.1/sub/x")).is_err());
        assert!(parse_url(&args("ws://127.0.0.1:1/sub/")).is_err());
    }

    #[test]
    fn transports() {
        assert_eq!(args("ws://127.0.0.1/sub/x").transport, Transport::Ws);
        for (t, want) in [
            ("ws", Transport::Ws),
            ("sse", Transport::Sse),
            ("longpoll", Transport::Longpoll),
            ("bayeux", Transport::Bayeux),
        ] {
            let a = Args::parse_from(["flood", "--transport", t]);
            assert_eq!(a.transport, want);
            assert_eq!(want.name(), t);
        }
        assert!(Args::try_parse_from(["flood", "--transport", "stream"]).is_err());
        let a = Args::parse_from(["flood", "--transport", "bayeux"]);
        assert_eq!(a.bayeux_transport, ConnType::LongPolling);
        assert_eq!(a.bayeux_path, "/cometd");
        for (t, want) in [
            ("long-polling", ConnType::LongPolling),
            ("websocket", ConnType::WebSocket),
        ] {
            let a = Args::parse_from(["flood", "--transport", "bayeux", "--bayeux-transport", t]);
            assert_eq!(a.bayeux_transport, want);
            assert_eq!(want.name(), t);
        }
        assert!(Args::try_parse_from(["flood", "--bayeux-transport", "ws"]).is_err());
    }

    #[test]
    fn sources() {
        let s = parse_sources("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[3], Ipv4Addr::new(127, 0, 0, 9));
        assert!(parse_sources("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_sources("x").is_err());
    }
}
