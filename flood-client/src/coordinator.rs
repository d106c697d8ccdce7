//! The coordinator: the `flood` process the user started. It checks the machine's limits, forks
//! worker processes (each below its own open-files limit), samples memory during the ramp, runs
//! the publisher, and gathers the workers' JSON lines into the report.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::net::ToSocketAddrs;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::cli::{Args, is_loopback, parse_sources, parse_url};
use crate::plan::{Errors, Final, Line, Progress, WorkerPlan};
use crate::report::{self, Report, Sample};
use crate::sys::raise_nofile;
use crate::{memory, msg, preflight, publish};

struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// Runs a whole load test as the coordinator; the exit code says whether the report is clean.
pub fn coordinate(args: &Args) -> Result<ExitCode, String> {
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
