//! The coordinator: the `flood` process the user started. [`coordinate`] runs a load test as
//! one step per phase, in this order:
//!
//! 1. `Setup::new`: check the flags, raise the open-files limit, resolve the targets, find the
//!    server's processes, and let [`crate::preflight`] say whether a limit stops the run;
//! 2. `Run::spawn`: fork the worker processes (this binary with `--worker-plan`), each with
//!    its share of the connections and below its own open-files limit;
//! 3. `Run::ramp`: until every worker has settled its connections, sampling memory; then
//!    memory with every connection open;
//! 4. `Run::broadcasts`: `--broadcasts`, one at a time, each waited for;
//! 5. `Run::hold`: hold the connections for `--duration` while the publish load runs;
//! 6. `Run::drain`: wait for the last deliveries;
//! 7. `Run::close`: tell the workers to close, gather their finals;
//! 8. `finish`: the report (summary, JSON, SVG) and the exit code.
//!
//! Workers talk back in JSON lines ([`crate::plan::Line`]), read by one thread per worker into
//! one channel; the coordinator never touches a subscriber connection itself.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::cli::{Args, Target, is_loopback, parse_sources, parse_url};
use crate::memory::{self, KernelMem, ProcMem};
use crate::plan::{Errors, Final, Line, Progress, WorkerPlan};
use crate::publish::{self, PublishPlan, Published, Publisher};
use crate::report::{self, Report, Sample};
use crate::sys::raise_nofile;
use crate::tls::{TlsClient, TlsPlan};
use crate::{msg, preflight};

/// Runs a whole load test as the coordinator; the exit code says whether the report is clean.
pub fn coordinate(args: &Args) -> Result<ExitCode, String> {
    let setup = Setup::new(args)?;
    let server_before = memory::proc_mem(&setup.server_pids).ok();
    let kernel_before = memory::kernel_mem().ok();
    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = ctrlc_flag(interrupted.clone());

    let mut run = Run::spawn(args, &setup, interrupted)?;
    let ramp = run.ramp();
    let publish_plan = PublishPlan {
        target: setup.target.addr,
        host: setup.target.host.clone(),
        path_prefix: setup.target.pub_prefix.clone(),
        channel: setup.target.channel.clone(),
        channels: args.channels.max(1),
        rate: args.publish_rate,
        size: args.size,
        connections: args.publishers,
        first_seq: args.broadcasts,
        tls: setup.tls.as_ref().map(|(_, c)| c.clone()),
    };
    let mut published = run.broadcasts(&publish_plan);
    let hold = run.hold(&publish_plan);
    let broadcasts_published = published.total();
    published.add(&hold.published);
    run.drain(hold.published.total());
    let samples = std::mem::take(&mut run.samples);
    let finals = run.close();
    finish(report::Inputs {
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
    })
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
    ) -> Result<Self, String> {
        let procs = setup.procs;
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
                rate: setup.rate.map(|r| r * n as f64 / args.conns as f64),
                targets: setup.targets.clone(),
                host: setup.target.host.clone(),
                path_prefix: setup.target.sub_prefix.clone(),
                channel: setup.target.channel.clone(),
                channels: args.channels.max(1),
                sources: setup.sources.clone(),
                connect_timeout_ms: args.connect_timeout * 1000,
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
        })
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
                self.print("ramp", 0.0);
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
        // Let the server settle, then read memory with every connection open.
        std::thread::sleep(Duration::from_secs(1));
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
                    || last_change.elapsed() >= Duration::from_secs(self.args.drain.max(1))
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
        let start_ns = msg::now_ns();
        let publisher = (self.args.publish_rate > 0.0).then(|| Publisher::start(plan.clone()));
        let hold_start = Instant::now();
        let mut samples: Vec<Sample> = Vec::new();
        let mut last_deliveries = 0u64;
        let mut last_rate_at = Instant::now();
        let duration = Duration::from_secs(self.args.duration);
        while (self.args.duration == 0 || hold_start.elapsed() < duration)
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
                self.print("hold", rate_now);
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
        if load_published > 0 {
            let until = Instant::now() + Duration::from_secs(self.args.drain);
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
    /// others.
    fn close(mut self) -> Vec<Final> {
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
        finals
    }

    /// Takes the workers' lines that arrive within `wait` (see [`pump`]).
    fn receive(&mut self, wait: Duration) {
        for (i, line) in pump(&self.rx, wait) {
            match line {
                Line::Progress(p) => self.progress[i as usize] = p,
                Line::Final(f) => self.finals[i as usize] = Some(*f),
            }
        }
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

    fn print(&self, phase: &str, deliveries_per_sec: f64) {
        print_progress(
            self.tty,
            phase,
            &self.progress,
            self.args,
            self.started,
            &self.samples,
            deliveries_per_sec,
        );
    }
}

/// Phase 8: the report: the summary on stdout, `--json` and `--plot` written. Success when the
/// report finds nothing wrong.
fn finish(inputs: report::Inputs<'_>) -> Result<ExitCode, String> {
    let args = inputs.args;
    let report = Report::build(inputs);
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
    args: &Args,
    started: Instant,
    samples: &[Sample],
    deliveries_per_sec: f64,
) {
    let target = args.conns;
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
        "[{secs:7.1}s] {phase}: {est}/{target} open{}, errors {} (refused {} reset {} \
         timeout {} eaddrnotavail {} emfile {} http {} protocol {} bayeux {} socketio {} closed {}), server \
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
        errs.socketio,
        errs.closed_by_server,
    );
    let line = if tls {
        let hs: u64 = progress.iter().map(|p| p.tls_handshakes).sum();
        let resumed: u64 = progress.iter().map(|p| p.tls_resumed).sum();
        let rate = if phase == "ramp" {
            format!(" ({:.0}/s)", hs as f64 / secs.max(0.001))
        } else {
            String::new()
        };
        format!(
            "{line}, TLS {hs} handshakes{rate}, {resumed} resumed, failures cert {} handshake {}",
            errs.tls_cert, errs.tls_handshake
        )
    } else {
        line
    };
    if tty {
        print!("\r\x1b[2K{line}");
        let _ = std::io::stdout().flush();
    } else {
        println!("{line}");
    }
}
