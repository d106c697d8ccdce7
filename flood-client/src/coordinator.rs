//! The coordinator: the `flood` process the user started. [`coordinate`] runs a load test as
//! one step per phase, in this order:
//!
//! 1. `Setup::new`: check the flags, raise the open-files limit, resolve the targets, find the
//!    server's processes, and let [`crate::preflight`] say whether a limit stops the run;
//! 2. `Run::spawn`: fork the worker processes (this binary with `--worker-plan`), each with
//!    its share of the connections and below its own open-files limit;
//! 3. `Run::ramp`: until every worker has settled its connections, sampling memory; then
//!    memory with every connection open (with `--stages`, `Run::stages` instead of 3 to 5: the
//!    workers are told each 100 ms how many connections to keep open);
//! 4. `Run::broadcasts`: `--broadcasts`, one at a time, each waited for;
//! 5. `Run::hold`: hold the connections for `--duration` while the publish load runs;
//! 6. `Run::drain`: wait for the last deliveries;
//! 7. `Run::close`: tell the workers to close, gather their finals;
//! 8. `finish`: the report (summary, JSON, SVG) and the exit code.
//!
//! Workers talk back in JSON lines ([`crate::plan::Line`]), read by one thread per worker into
//! one channel; the coordinator never touches a subscriber connection itself. Whatever the
//! phase, each second of it becomes a [`crate::live::Row`] (`--jsonl`, `--plot`). SIGINT and
//! SIGTERM end the phase in progress and go on to the close and the report, which says it was
//! interrupted; a second one exits at once.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::cli::{Args, Stages, Target, is_loopback, parse_sources, parse_url};
use crate::live::{self, Row, Tick, Totals};
use crate::memory::{self, KernelMem, ProcMem};
use crate::plan::{Errors, Final, Line, Progress, WorkerPlan, WsWire};
use crate::publish::{self, PublishPlan, Published, Publisher};
use crate::report::{self, Report, Sample};
use crate::sys::raise_nofile;
use crate::tls::{TlsClient, TlsPlan};
use crate::{msg, preflight};

/// Runs a whole load test as the coordinator; the exit code says whether the report is clean.
pub fn coordinate(args: &Args) -> Result<ExitCode, String> {
    // With --stages, the largest target is the run's connection count.
    let staged;
    let args = match &args.stages {
        Some(st) => {
            staged = Args {
                conns: st.peak(),
                ..args.clone()
            };
            &staged
        }
        None => args,
    };
    let setup = Setup::new(args)?;
    let server_before = memory::proc_mem(&setup.server_pids).ok();
    let kernel_before = memory::kernel_mem().ok();
    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_flag(interrupted.clone());
    let jsonl = match &args.jsonl {
        Some(path) => Some(File::create(path).map_err(|e| format!("creating {path}: {e}"))?),
        None => None,
    };

    let mut run = Run::spawn(args, &setup, interrupted, jsonl, kernel_before.clone())?;
    if let Some(stages) = &args.stages {
        let st = run.stages(stages);
        run.drain(0);
        let samples = std::mem::take(&mut run.samples);
        let (rows, finals) = run.close();
        return finish(
            report::Inputs {
                args,
                procs: setup.procs,
                nofile: setup.nofile,
                ramp_secs: st.ramp.secs,
                publish_secs: 0.0,
                rate_limited: true,
                finals: &finals,
                published: &Published::default(),
                broadcasts_published: 0,
                load_start_ns: 0,
                server_pids: &setup.server_pids,
                server_before,
                server_open: st.ramp.server_open,
                kernel_before,
                kernel_open: st.ramp.kernel_open,
                samples: &samples,
                hold: &[],
                server_local: setup.server_local,
                tls: setup.tls.as_ref().map(|(p, _)| p),
                interrupted: interrupted_by(),
                stages: Some(st.outcome),
            },
            &rows,
        );
    }
    let ramp = run.ramp();
    let publish_plan = PublishPlan {
        target: setup.target.addr,
        host: setup.target.host.clone(),
        path_prefix: setup.target.pub_prefix.clone(),
        channel: setup.target.channel.clone(),
        channels: args.channels.max(1),
        rate: args.publish_rate,
        size: args.size,
        json: args.json_payload,
        connections: args.publishers,
        pipeline: args.publish_pipeline as usize,
        first_seq: args.broadcasts,
        tls: setup.tls.as_ref().map(|(_, c)| c.clone()),
    };
    let mut published = run.broadcasts(&publish_plan);
    let hold = run.hold(&publish_plan);
    let broadcasts_published = published.total();
    published.add(&hold.published);
    run.drain(hold.published.total());
    let samples = std::mem::take(&mut run.samples);
    let (rows, finals) = run.close();
    finish(
        report::Inputs {
            args,
            procs: setup.procs,
            nofile: setup.nofile,
            ramp_secs: ramp.secs,
            publish_secs: hold.secs,
            rate_limited: setup.rate.is_some(),
            finals: &finals,
            published: &published,
            broadcasts_published,
            load_start_ns: hold.start_ns,
            server_pids: &setup.server_pids,
            server_before,
            server_open: ramp.server_open,
            kernel_before,
            kernel_open: ramp.kernel_open,
            samples: &samples,
            hold: &hold.samples,
            server_local: setup.server_local,
            tls: setup.tls.as_ref().map(|(p, _)| p),
            interrupted: interrupted_by(),
            stages: None,
        },
        &rows,
    )
}

/// What the run is, once the flags are checked and the machine's limits allow it.
struct Setup {
    target: Target,
    /// New connections per second over all processes; `None` = `--rate max`.
    rate: Option<f64>,
    sources: Vec<Ipv4Addr>,
    /// The URL's address, then `--also-target`'s.
    targets: Vec<SocketAddr>,
    /// This process's open-files limit, after raising it.
    nofile: u64,
    /// Worker processes.
    procs: u32,
    server_local: bool,
    /// The server's processes, for its memory figures (empty: not known).
    server_pids: Vec<u32>,
    /// `wss://`, `https://`: what the workers are told, and the settings of the publishers.
    tls: Option<(TlsPlan, TlsClient)>,
}

impl Setup {
    /// Phase 1: checks the flags, raises the open-files limit, resolves the targets, finds the
    /// server's processes, and runs the preflight check (printing what it finds). A limit that
    /// stops the run is an error unless `--force`.
    fn new(args: &Args) -> Result<Setup, String> {
        let (target, rate) = check_flags(args)?;
        let tls = match target.tls {
            true => {
                let plan = TlsPlan {
                    server_name: target.host.clone(),
                    ca: args.ca.clone(),
                    insecure: args.insecure,
                    resume: args.tls_resume,
                };
                // Built here too (for the publishers), so that a bad --ca stops the run now.
                let client = TlsClient::new(&plan)?;
                Some((plan, client))
            }
            false => None,
        };
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
        let targets = resolve_targets(args, &target)?;
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
            client_bytes_per_conn: preflight::client_bytes_per_conn(target.tls),
            server_bytes_per_conn: preflight::server_bytes_per_conn(target.tls),
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
        Ok(Setup {
            target,
            rate,
            sources,
            targets,
            nofile,
            procs,
            server_local,
            server_pids,
            tls,
        })
    }
}

/// The URL (loopback unless `--allow-remote`), the connect rate (`None` = `max`), and the
/// flags that must agree with each other.
fn check_flags(args: &Args) -> Result<(Target, Option<f64>), String> {
    let target = parse_url(args)?;
    if !target.tls && (args.ca.is_some() || args.insecure) {
        return Err("--ca and --insecure are for wss:// and https:// URLs".into());
    }
    if args.ca.is_some() && args.insecure {
        return Err("--ca and --insecure do not go together: verify, or do not".into());
    }
    if target.tls && args.ca.is_none() && !args.insecure {
        return Err(format!(
            "{} is TLS: give --ca FILE (the PEM certificate of the CA that signed the server's \
             certificate) or --insecure (no certificate verification)",
            args.url
        ));
    }
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
    if args.deflate && !args.websocket() {
        return Err(
            "--deflate is WebSocket compression: it needs --transport ws, or bayeux or \
                    socketio over a websocket"
                .into(),
        );
    }
    if !(0.0..=1.0).contains(&args.slow_readers) {
        return Err("--slow-readers is a fraction from 0 to 1".into());
    }
    if (args.publish_rate > 0.0 || args.broadcasts > 0) && args.size < msg::MIN_SIZE {
        return Err(format!("--size must be at least {}", msg::MIN_SIZE));
    }
    Ok((target, rate))
}

/// The URL's address and each `--also-target`, resolved; loopback only unless `--allow-remote`.
fn resolve_targets(args: &Args, target: &Target) -> Result<Vec<SocketAddr>, String> {
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
    Ok(targets)
}

struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// The running workers and what they have said.
struct Run<'a> {
    args: &'a Args,
    server_pids: &'a [u32],
    workers: Vec<WorkerProc>,
    /// Every worker's lines, tagged with its index.
    rx: mpsc::Receiver<(u32, Line)>,
    /// Set by the first Ctrl-C.
    interrupted: Arc<AtomicBool>,
    /// When the workers were started: the clock of the samples and the progress line.
    started: Instant,
    tty: bool,
    /// The latest progress line of each worker.
    progress: Vec<Progress>,
    finals: Vec<Option<Final>>,
    /// Memory during the ramp: every 200 ms, and once with every connection open.
    samples: Vec<Sample>,
    last_sample: Instant,
    last_print: Instant,
    /// The phase in progress, for the rows and the progress line.
    phase: &'static str,
    /// One row a second (`--jsonl`, `--plot`), the state between two, and `--jsonl`'s file
    /// (dropped after a write fails, said once).
    tick: Tick,
    rows: Vec<Row>,
    jsonl: Option<File>,
    /// Kernel memory before the first connection: the rows' `kernel_bytes` are grown from it.
    kernel_before: Option<KernelMem>,
    /// The progress line's width: the terminal's, `None` when stdout is not one (plain lines,
    /// nothing cut).
    width: Option<usize>,
    /// `--stages`: the connections the workers are told to keep open now.
    stage_target: Option<u64>,
}

/// The end of `--stages`: the ramp's figures (memory read when the most connections were open)
/// and the report's `stages`.
struct StagesRun {
    ramp: Ramp,
    outcome: report::StagesOutcome,
}

/// The end of the ramp: how long it took, and memory with every connection open.
struct Ramp {
    secs: f64,
    server_open: Option<ProcMem>,
    kernel_open: Option<KernelMem>,
}

/// The hold: what the publish load published, when it started, how long it ran, and memory
/// during it.
struct Hold {
    published: Published,
    /// CLOCK_MONOTONIC ns.
    start_ns: u64,
    secs: f64,
    samples: Vec<Sample>,
}

impl<'a> Run<'a> {
    /// Phase 2: forks the workers, each with its share of the connections (the first
    /// `conns % procs` take one more), of the rate and of the churn, and a thread per worker
    /// that forwards its JSON lines.
    fn spawn(
        args: &'a Args,
        setup: &'a Setup,
        interrupted: Arc<AtomicBool>,
        jsonl: Option<File>,
        kernel_before: Option<KernelMem>,
    ) -> Result<Self, String> {
        let procs = setup.procs;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel::<(u32, Line)>();
        let mut workers = Vec::new();
        let per = args.conns / u64::from(procs);
        let extra = args.conns % u64::from(procs);
        let mut offset = 0;
        let staged = args.stages.is_some();
        for i in 0..procs {
            let n = per + u64::from(u64::from(i) < extra);
            // --stages: nothing to open at first; the coordinator paces by `target N`.
            let (n, rate) = match staged {
                true => (0, None),
                false => (n, setup.rate.map(|r| r * n as f64 / args.conns as f64)),
            };
            let wp = WorkerPlan {
                index: i,
                conns: n,
                offset,
                rate,
                targets: setup.targets.clone(),
                host: setup.target.host.clone(),
                path_prefix: setup.target.sub_prefix.clone(),
                channel: setup.target.channel.clone(),
                channels: args.channels.max(1),
                sources: setup.sources.clone(),
                connect_timeout_ms: args.connect_timeout.as_millis() as u64,
                max_in_flight: args.max_in_flight.max(1),
                transport: args.transport,
                bayeux: args.bayeux_transport,
                bayeux_path: args.bayeux_path.clone(),
                socketio: args.socketio_transport,
                socketio_path: args.socketio_path.clone(),
                socketio_event: args.socketio_event.clone(),
                token: args.token.clone(),
                slow_fraction: args.slow_readers,
                slow_read_rate: args.slow_read_rate,
                churn_rate: args.churn * n as f64 / args.conns as f64,
                broadcasts: args.broadcasts,
                tls: setup.tls.as_ref().map(|(p, _)| p.clone()),
                deflate: args.deflate,
            };
            offset += per + u64::from(u64::from(i) < extra);
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
        Ok(Run {
            args,
            server_pids: &setup.server_pids,
            workers,
            rx,
            interrupted,
            started: Instant::now(),
            tty: std::io::stdout().is_terminal(),
            progress: (0..procs).map(|_| Progress::default()).collect(),
            finals: (0..procs).map(|_| None).collect(),
            samples: Vec::new(),
            last_sample: Instant::now() - Duration::from_secs(1),
            last_print: Instant::now(),
            phase: "ramp",
            tick: Tick::new(Instant::now()),
            rows: Vec::new(),
            jsonl,
            kernel_before,
            width: live::terminal_width(),
            stage_target: None,
        })
    }

    /// `--stages` (instead of the ramp, the broadcasts and the hold): every 100 ms, the target
    /// of the moment ([`Stages::target_at`]) split over the workers as the connections were
    /// (`target N` on each one's stdin); memory sampled every second and at the end of each
    /// stage. The per-connection figures are read from the sample with the most connections
    /// open. Ends after the last stage, or on SIGINT/SIGTERM, or when every worker is gone.
    fn stages(&mut self, stages: &Stages) -> StagesRun {
        self.phase = "stages";
        let start = Instant::now();
        let total = stages.total();
        let mut ends: Vec<Duration> = stages
            .0
            .iter()
            .scan(Duration::ZERO, |at, s| {
                *at += s.duration;
                Some(*at)
            })
            .collect();
        ends.reverse();
        let mut peak_open = 0u64;
        loop {
            let at = start.elapsed();
            let target = stages.target_at(at);
            self.tell_target(target);
            self.receive(Duration::from_millis(100));
            peak_open = peak_open.max(self.established());
            let stage_ended = ends.last().is_some_and(|&e| start.elapsed() >= e);
            if stage_ended {
                ends.pop();
            }
            if stage_ended || self.last_sample.elapsed() >= Duration::from_secs(1) {
                self.last_sample = Instant::now();
                let s = self.sample();
                self.samples.push(s);
            }
            if self.last_print.elapsed() >= Duration::from_secs(1) {
                self.last_print = Instant::now();
                self.print(0.0);
            }
            if at >= total || self.interrupted() || workers_gone(&mut self.workers) {
                break;
            }
        }
        // The last target may take the workers a moment (their progress comes every 250 ms):
        // wait for it, up to --connect-timeout.
        let last = stages.target_at(stages.total());
        let waited = Instant::now();
        while self.established() != last
            && waited.elapsed() < self.args.connect_timeout
            && !self.interrupted()
            && !workers_gone(&mut self.workers)
        {
            self.receive(Duration::from_millis(100));
        }
        if self.tty {
            println!();
        }
        let secs = start.elapsed().as_secs_f64();
        let open_at_end = self.established();
        let closed: u64 = self.progress.iter().map(|p| p.stage_closed).sum();
        // The sample with the most connections open (the first of equals): the memory figures.
        let best = self
            .samples
            .iter()
            .rev()
            .max_by_key(|s| s.established)
            .cloned();
        println!(
            "flood: stages {} done after {secs:.2} s: at most {peak_open} of {} open, {open_at_end} \
             open at the end, {closed} closed by flood",
            stages.spec(),
            stages.peak()
        );
        StagesRun {
            ramp: Ramp {
                secs,
                server_open: best.as_ref().and_then(|s| s.server),
                kernel_open: best.as_ref().and_then(|s| s.kernel.clone()),
            },
            outcome: report::StagesOutcome {
                spec: stages.spec(),
                peak_target: stages.peak(),
                peak_open,
                memory_open: best.map_or(0, |s| s.established),
                open_at_end,
                closed_by_client: closed,
            },
        }
    }

    /// `--stages`: tells each worker its share of `target` (split as the connections were:
    /// the first `target % procs` take one more), when it changed.
    fn tell_target(&mut self, target: u64) {
        if self.stage_target == Some(target) {
            return;
        }
        self.stage_target = Some(target);
        let procs = self.workers.len() as u64;
        let (per, extra) = (target / procs, target % procs);
        for (i, w) in self.workers.iter_mut().enumerate() {
            let n = per + u64::from((i as u64) < extra);
            if let Some(s) = &mut w.stdin {
                let _ = writeln!(s, "target {n}");
            }
        }
    }

    /// Phase 3: waits until every worker has settled all its connections (or one exits, or
    /// Ctrl-C), sampling memory every 200 ms and printing progress every second. Then lets the
    /// server settle for a second and reads memory with every connection open.
    fn ramp(&mut self) -> Ramp {
        let mut secs = 0.0;
        loop {
            self.receive(Duration::from_millis(50));
            if self.last_sample.elapsed() >= Duration::from_millis(200) {
                self.last_sample = Instant::now();
                let s = self.sample();
                self.samples.push(s);
            }
            if self.last_print.elapsed() >= Duration::from_secs(1) {
                self.last_print = Instant::now();
                self.print(0.0);
            }
            if self.progress.iter().all(|p| p.ramp_done) {
                secs = self
                    .progress
                    .iter()
                    .map(|p| p.ramp_secs)
                    .fold(0.0, f64::max);
                break;
            }
            if self.interrupted() || any_worker_gone(&mut self.workers) {
                break;
            }
        }
        // Let the server settle, then read memory with every connection open (the workers' lines
        // still taken meanwhile, so that the rows go on).
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(1) {
            self.receive(Duration::from_millis(50));
        }
        let established = self.established();
        let server_open = memory::proc_mem(self.server_pids).ok();
        let kernel_open = memory::kernel_mem().ok();
        let s = self.sample();
        self.samples.push(s);
        if self.tty {
            println!();
        }
        println!(
            "flood: {established} of {} connections open after {secs:.2} s",
            self.args.conns
        );
        Ramp {
            secs,
            server_open,
            kernel_open,
        }
    }

    /// Phase 4: `--broadcasts`, one at a time: a message on every channel, then wait until it
    /// has reached every subscriber but the slow readers, or deliveries stop for `--drain`
    /// seconds (at least one). Returns what was published.
    fn broadcasts(&mut self, plan: &PublishPlan) -> Published {
        self.phase = "broadcasts";
        let mut published = Published::default();
        for b in 0..self.args.broadcasts {
            if self.interrupted() || workers_gone(&mut self.workers) {
                break;
            }
            let before = self.deliveries();
            let open = self.established();
            // Slow readers' deliveries are not counted, so they are not waited for.
            let expect = open.saturating_sub((open as f64 * self.args.slow_readers).floor() as u64);
            let failed = publish::broadcast(plan, b, &mut published);
            let (mut last, mut last_change) = (before, Instant::now());
            loop {
                self.receive(Duration::from_millis(50));
                let d = self.deliveries();
                if d != last {
                    (last, last_change) = (d, Instant::now());
                }
                if d - before >= expect
                    || last_change.elapsed() >= self.args.drain.max(Duration::from_secs(1))
                    || self.interrupted()
                {
                    break;
                }
            }
            println!(
                "flood: broadcast {}/{}: {} of {expect} delivered{}",
                b + 1,
                self.args.broadcasts,
                last - before,
                if failed > 0 {
                    format!(" ({failed} publish(es) failed)")
                } else {
                    String::new()
                }
            );
        }
        published
    }

    /// Phase 5: holds the connections for `--duration` seconds (0: until Ctrl-C), or until
    /// every worker is gone, with the publish load running if `--publish-rate` is set. Memory
    /// is sampled once a second and at the end of the publishing: what buffers fill behind
    /// slow readers.
    fn hold(&mut self, plan: &PublishPlan) -> Hold {
        self.phase = "hold";
        let start_ns = msg::now_ns();
        let publisher = (self.args.publish_rate > 0.0).then(|| Publisher::start(plan.clone()));
        let hold_start = Instant::now();
        let mut samples: Vec<Sample> = Vec::new();
        let mut last_deliveries = 0u64;
        let mut last_rate_at = Instant::now();
        let duration = self.args.duration;
        while (duration.is_zero() || hold_start.elapsed() < duration)
            && !self.interrupted()
            && !workers_gone(&mut self.workers)
        {
            self.receive(Duration::from_millis(100));
            if self.last_sample.elapsed() >= Duration::from_secs(1) {
                self.last_sample = Instant::now();
                samples.push(self.sample());
            }
            if self.last_print.elapsed() >= Duration::from_secs(1) {
                let d = self.deliveries();
                let rate_now =
                    (d - last_deliveries.min(d)) as f64 / last_rate_at.elapsed().as_secs_f64();
                last_deliveries = d;
                last_rate_at = Instant::now();
                self.last_print = Instant::now();
                self.print(rate_now);
            }
        }
        let published = publisher.map(|p| p.finish()).unwrap_or_default();
        let secs = hold_start.elapsed().as_secs_f64();
        samples.push(self.sample());
        Hold {
            published,
            start_ns,
            secs,
            samples,
        }
    }

    /// Phase 6: after a publish load (`load_published` > 0), waits until deliveries stop
    /// growing for two seconds, or `--drain` seconds pass.
    fn drain(&mut self, load_published: u64) {
        self.phase = "drain";
        if load_published > 0 {
            let until = Instant::now() + self.args.drain;
            let mut last = u64::MAX;
            let mut still = 0;
            // Two seconds without a new delivery: all arrived (or they will not).
            while Instant::now() < until && still < 20 {
                self.receive(Duration::from_millis(100));
                let d = self.deliveries();
                still = if d == last { still + 1 } else { 0 };
                last = d;
            }
        }
        if self.tty {
            println!();
        }
    }

    /// Phase 7: tells every worker to close, collects the finals (for up to 30 s) and reaps
    /// the processes. A worker that did not report is said on stderr; the figures cover the
    /// others. Returns the rows of the run, and the finals.
    fn close(mut self) -> (Vec<Row>, Vec<Final>) {
        self.phase = "close";
        for w in &mut self.workers {
            if let Some(mut s) = w.stdin.take() {
                let _ = s.write_all(b"close\n");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.finals.iter().any(Option::is_none) && Instant::now() < deadline {
            match self.rx.recv_timeout(Duration::from_millis(200)) {
                Ok((i, Line::Final(f))) => self.finals[i as usize] = Some(*f),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        for w in &mut self.workers {
            let _ = w.child.wait();
        }
        let procs = self.workers.len();
        let finals: Vec<Final> = self.finals.into_iter().flatten().collect();
        if finals.len() < procs {
            eprintln!(
                "flood: only {} of {procs} workers reported; figures cover those",
                finals.len()
            );
        }
        (self.rows, finals)
    }

    /// Takes the workers' lines that arrive within `wait` (see [`pump`]).
    fn receive(&mut self, wait: Duration) {
        for (i, line) in pump(&self.rx, wait) {
            match line {
                Line::Progress(p) => {
                    self.tick.record(&p.latency_tick);
                    self.progress[i as usize] = p;
                }
                Line::Final(f) => {
                    self.tick.record(&f.progress.latency_tick);
                    self.finals[i as usize] = Some(*f);
                }
            }
        }
        if self.tick.at().elapsed() >= Duration::from_secs(1) {
            self.row();
        }
    }

    /// The row of the second just past: pushed, and written to `--jsonl` (one `write` a line,
    /// so that what was written survives a crash).
    fn row(&mut self) {
        let totals = Totals {
            open: self.established(),
            opened: self.progress.iter().map(|p| p.opened).sum(),
            closed: self.progress.iter().map(|p| p.stage_closed).sum(),
            deliveries: self.deliveries(),
            errors: self.errors(),
            ws: self.args.websocket().then(|| {
                let mut w = WsWire::default();
                self.progress.iter().for_each(|p| w.add(&p.ws));
                w
            }),
        };
        let server = memory::proc_mem(self.server_pids).ok().map(|m| m.pss);
        let kernel = match (&self.kernel_before, memory::kernel_mem()) {
            (Some(b), Ok(k)) => Some(k.growth_since(b)),
            _ => None,
        };
        let t = self.started.elapsed().as_secs_f64();
        let row = self
            .tick
            .row(Instant::now(), t, self.phase, totals, server, kernel);
        if let Some(f) = &mut self.jsonl
            && let Err(e) = f.write_all(row.line().as_bytes())
        {
            eprintln!("flood: writing --jsonl: {e}; no more lines");
            self.jsonl = None;
        }
        self.rows.push(row);
    }

    /// Errors so far, over all workers.
    fn errors(&self) -> Errors {
        let mut e = Errors::default();
        for p in &self.progress {
            e.add(&p.errors);
        }
        e
    }

    fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Connections open now, over all workers.
    fn established(&self) -> u64 {
        self.progress.iter().map(|p| p.established).sum()
    }

    /// Deliveries so far, over all workers.
    fn deliveries(&self) -> u64 {
        self.progress.iter().map(|p| p.deliveries).sum()
    }

    /// Memory now, with the connections open now.
    fn sample(&self) -> Sample {
        Sample {
            secs: self.started.elapsed().as_secs_f64(),
            established: self.established(),
            server: memory::proc_mem(self.server_pids).ok(),
            kernel: memory::kernel_mem().ok(),
        }
    }

    fn print(&self, deliveries_per_sec: f64) {
        let line = progress_line(
            self.phase,
            &self.progress,
            self.args,
            self.stage_target.unwrap_or(self.args.conns),
            self.started,
            &self.samples,
            deliveries_per_sec,
        );
        if self.tty {
            print!("\r\x1b[2K{}", live::fit(&line, self.width));
            let _ = std::io::stdout().flush();
        } else {
            println!("{line}");
        }
    }
}

/// Phase 8: the report: the summary on stdout, `--json` and `--plot` written. Success when the
/// report finds nothing wrong.
fn finish(inputs: report::Inputs<'_>, rows: &[Row]) -> Result<ExitCode, String> {
    let args = inputs.args;
    let report = Report::build(inputs, rows);
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

/// The first SIGINT or SIGTERM received (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Installs a SIGINT and SIGTERM handler that sets `flag` (the second signal exits at once,
/// status 128 + its number).
fn signal_flag(flag: Arc<AtomicBool>) -> std::io::Result<()> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    let _ = FLAG.set(flag);
    extern "C" fn on_signal(sig: libc::c_int) {
        let _ = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
        if let Some(f) = FLAG.get()
            && f.swap(true, Ordering::SeqCst)
        {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(128 + sig) };
        }
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs an async-signal-safe handler (atomics and _exit only).
        let r = unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
        if r == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal that interrupted the run, by name (`None`: it was not).
fn interrupted_by() -> Option<&'static str> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => Some("a signal"),
    }
}

/// The progress line, whole (the caller fits it to the terminal): time, phase, open of the
/// target (with the connect rate during the ramp), errors (only the kinds that occurred),
/// server PSS, deliveries/s; TLS handshakes over TLS.
fn progress_line(
    phase: &str,
    progress: &[Progress],
    args: &Args,
    target: u64,
    started: Instant,
    samples: &[Sample],
    deliveries_per_sec: f64,
) -> String {
    // TLS takes one of --ca and --insecure, plaintext neither (`check_flags`).
    let tls = args.ca.is_some() || args.insecure;
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
        "[{secs:7.1}s] {phase}: {est}/{target} open{}, {}, server PSS {server}, \
         {deliveries_per_sec:.0} deliveries/s",
        if phase == "ramp" {
            format!(" ({:.0}/s)", est as f64 / secs.max(0.001))
        } else {
            String::new()
        },
        live::errors_text(&errs),
    );
    if tls {
        let hs: u64 = progress.iter().map(|p| p.tls_handshakes).sum();
        let resumed: u64 = progress.iter().map(|p| p.tls_resumed).sum();
        let rate = if phase == "ramp" {
            format!(" ({:.0}/s)", hs as f64 / secs.max(0.001))
        } else {
            String::new()
        };
        format!("{line}, TLS {hs} handshakes{rate}, {resumed} resumed")
    } else {
        line
    }
}
