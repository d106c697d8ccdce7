//! Chaos (issue 14): a server process SIGKILLed under `--processes 4`, Redis SIGKILLed and
//! restarted, Redis paused past `--broker-ack-timeout`, the open-files limit hit by a reconnect
//! storm — each under a publish load, with subscribers of every transport that check every
//! message by id and by the sequence number in its payload: each message answered 2xx arrives
//! once and in order, or the subscriber was told of a gap. Never a silent hole.
//!
//! Real processes (the edgecomet binary, redis-server) on loopback, killed on drop. The tests
//! take turns (one lock): each loads the 2-core machine on its own. Each prints one line of
//! numbers (`chaos[...]`; run with `--nocapture` to see them).

#[path = "common/chaos.rs"]
mod chaos;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chaos::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes warm-up messages on every channel until every subscriber has one (so each
/// subscriber's process is subscribed on Redis before the load starts). Panics with the
/// subscribers' errors if one of them gave up.
fn warm_up(
    publisher: &mut Http,
    channels: &[String],
    ctl: &Ctl,
    n: usize,
    handles: &mut Vec<JoinHandle<SubLog>>,
) -> Duration {
    let t = Instant::now();
    let ok = wait_for(25.0, || {
        if ctl.ready.load(SeqCst) >= n || ctl.ended.load(SeqCst) > 0 {
            return true;
        }
        for c in channels {
            publisher.publish(c, WARM);
        }
        false
    });
    if !ok || ctl.ended.load(SeqCst) > 0 {
        ctl.stop.store(true, SeqCst);
        let logs = join(handles);
        let fatal: Vec<String> = logs
            .iter()
            .filter_map(|l| {
                l.fatal
                    .as_ref()
                    .map(|f| format!("{} on {}: {f}", l.kind.name(), l.channel))
            })
            .collect();
        panic!(
            "warm-up: {} of {n} subscribers ready after {:?}; errors: {fatal:?}",
            ctl.ready.load(SeqCst),
            t.elapsed()
        );
    }
    t.elapsed()
}

fn join(handles: &mut Vec<JoinHandle<SubLog>>) -> Vec<SubLog> {
    handles
        .drain(..)
        .map(|h| h.join().expect("subscriber thread"))
        .collect()
}

/// One last message per channel, published until answered 2xx: the subscribers stop once they
/// have it (or at the drain deadline).
fn finals(publisher: &mut Http, channels: &[String], outcomes: &mut [Vec<Pub>], ctl: &Ctl) {
    for (ch, c) in channels.iter().enumerate() {
        let mut tries = 0;
        loop {
            let seq = outcomes[ch].len() as u64;
            let (o, _) = publisher.publish(c, &payload(seq, c));
            let ok = o.accepted();
            outcomes[ch].push(o);
            if ok {
                ctl.target[ch].store(seq, SeqCst);
                break;
            }
            tries += 1;
            assert!(tries < 50, "the final publish on {c} was never accepted");
            // Back-off before the next try.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn report(v: &Verdict) -> String {
    format!(
        "delivered {} (+{} of uncertain publishes), cuts {}, resumed {} (longest reconnect {:?}), \
         gaps reported {} covering {} messages, silent losses {}, duplicates {}, reordered {}, \
         ids backwards {}, id mismatches across processes {}, refused-but-delivered {}, \
         plain ws cut {} (missing {} after the cut)",
        v.delivered_line(),
        v.maybe_delivered,
        v.cuts,
        v.resumes,
        v.max_reconnect,
        v.gaps_reported,
        v.gap_covered,
        v.silent_losses,
        v.duplicates,
        v.reordered,
        v.ids_backwards,
        v.id_mismatches,
        v.refused_delivered,
        v.ws_cut,
        v.ws_cut_missing,
    )
}

fn assert_clean(name: &str, v: &Verdict) {
    // Resuming on another process works only if the cursor means the same message there.
    let hint = if v.id_mismatches > 0 && v.resumes > 0 {
        format!(
            " (note: {} messages had different ids in different processes, e.g. {:?}; a cursor \
             from the killed process does not name the same message on a survivor)",
            v.id_mismatches,
            v.id_examples.first()
        )
    } else {
        String::new()
    };
    assert!(
        v.fatal.is_empty(),
        "{name}: subscribers gave up: {:#?}",
        v.fatal
    );
    assert!(
        v.violations.is_empty(),
        "{name}: {} silent losses, {} duplicates, {} reordered, {} ids backwards, {} \
         refused-but-delivered{hint}; subscribers that broke the rule: {:#?}",
        v.silent_losses,
        v.duplicates,
        v.reordered,
        v.ids_backwards,
        v.refused_delivered,
        v.violations
    );
}

// ---- 1. kill -9 one of four processes ---------------------------------------------------------

const KILL_CHANNELS: usize = 4;
const KILL_RATE: f64 = 200.0;
const KILL_LOAD: usize = 1600; // 8 s at 200/s
const KILL_AT: usize = 600; // 3 s in

/// `--processes 4` with a broker, subscribers of `kinds` (each `n` per channel) over the shared
/// port, 200 publishes/s over four channels for 8 s; 3 s in, the process holding the most
/// connections is SIGKILLed. Its clients reconnect to the port (landing on the survivors) and
/// resume with their cursor.
fn kill_one_of_four(name: &str, kinds: &[(Kind, usize)]) {
    let _serial = serial();
    let t0 = Instant::now();
    let redis = Redis::start();
    let url = redis.url();
    let launcher = Launcher::start(
        4,
        &["--broker", &url, "--history", "1000", "--poll-timeout", "5"],
    );
    let addr = launcher.addr;
    let channels: Vec<String> = (0..KILL_CHANNELS).map(|i| format!("{name}-{i}")).collect();
    let ctl = Ctl::new(KILL_CHANNELS, 120);
    let mut handles = Vec::new();
    for (ch, c) in channels.iter().enumerate() {
        for &(kind, n) in kinds {
            for _ in 0..n {
                handles.push(spawn_sub(kind, addr, ch, c, ctl.clone()));
            }
        }
    }
    let nsubs = handles.len();
    let mut publisher = Http::new(addr);
    let warm = warm_up(&mut publisher, &channels, &ctl, nsubs, &mut handles);

    // The victim: the process holding the most connections (once the sums, up to 2 s old,
    // show them all).
    let mut s = serde_json::Value::Null;
    let counted = |s: &serde_json::Value| {
        s["processes"]["open_per_process"]
            .as_array()
            .map_or(0, |a| a.iter().map(|n| n.as_u64().unwrap()).sum::<u64>())
    };
    assert!(
        wait_for(10.0, || {
            s = Http::new(addr).stats().unwrap_or_default();
            counted(&s) >= nsubs as u64
        }),
        "the sums never showed the {nsubs} subscribers: {s}"
    );
    let pids = pids_of(&s);
    let open: Vec<u64> = s["processes"]["open_per_process"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    let (vi, _) = open.iter().enumerate().max_by_key(|(_, n)| **n).unwrap();
    let victim = pids[vi];
    assert_eq!(
        parent_of(victim),
        Some(launcher.pid()),
        "{victim} is not the launcher's"
    );
    let survivors: Vec<u32> = pids.iter().copied().filter(|&p| p != victim).collect();

    let mut outcomes: Vec<Vec<Pub>> = vec![Vec::new(); KILL_CHANNELS];
    let load_start = Instant::now();
    let mut killed_at: Option<Instant> = None;
    let (mut late_published, mut late_failed) = (0u64, Vec::new());
    for i in 0..KILL_LOAD {
        let due = load_start + Duration::from_secs_f64(i as f64 / KILL_RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait); // the publish rate
        }
        if i == KILL_AT {
            sigkill(victim);
            killed_at = Some(Instant::now());
        }
        if i % 50 == 0 {
            publisher.reset(); // a new connection: publishes go through every process
        }
        let ch = i % KILL_CHANNELS;
        let seq = outcomes[ch].len() as u64;
        let (o, _) = publisher.publish(&channels[ch], &payload(seq, &channels[ch]));
        // From 1 s after the kill on, the survivors take everything.
        if killed_at.is_some_and(|k| k.elapsed() > Duration::from_secs(1)) {
            late_published += 1;
            if !o.accepted() {
                late_failed.push(format!("{o:?}"));
            }
        }
        outcomes[ch].push(o);
    }
    let load = load_start.elapsed();
    let killed_at = killed_at.unwrap();
    finals(&mut publisher, &channels, &mut outcomes, &ctl);
    ctl.drain_within(20);

    // The launcher reports the exit; the others keep serving and reporting.
    let needle = format!("(pid {victim}) exited");
    let mut line = None;
    wait_for(10.0, || {
        line = launcher.log_line(&needle);
        line.is_some()
    });
    let mut sums = serde_json::Value::Null;
    let sums_ok = wait_for(10.0, || {
        sums = Http::new(addr).stats().unwrap_or_default();
        let mut p = pids_of(&sums);
        p.sort();
        let mut want = survivors.clone();
        want.sort();
        sums["processes"]["reporting"] == 3 && p == want
    });
    let mut seen = std::collections::HashSet::new();
    let all_answer = wait_for(10.0, || {
        if let Some(s) = Http::new(addr).stats() {
            seen.insert(s["pid"].as_u64().unwrap() as u32);
        }
        survivors.iter().all(|p| seen.contains(p))
    });

    let logs = join(&mut handles);
    let v = check(&logs, &outcomes);
    let (published, accepted, refused, maybe) = tally(&outcomes);
    eprintln!(
        "chaos[{name}]: 4 processes, {nsubs} subscribers ({}), warm-up {warm:?}; killed pid \
         {victim} (held {} of {} connections) at {:?} into a {load:?} load; published {published} \
         (accepted {accepted}, refused {refused}, uncertain {maybe}); launcher reported the exit \
         after {:?}; {}; test {:?}",
        kinds
            .iter()
            .map(|(k, n)| format!("{}x{n}/channel", k.name()))
            .collect::<Vec<_>>()
            .join(" "),
        open[vi],
        open.iter().sum::<u64>(),
        killed_at - load_start,
        line.as_ref()
            .map(|(at, _)| at.saturating_duration_since(killed_at)),
        report(&v),
        t0.elapsed()
    );

    let (_, line) = line.unwrap_or_else(|| {
        panic!(
            "the launcher did not report the exit: {:?}",
            launcher.log.lock().unwrap()
        )
    });
    assert!(line.contains("signal: 9"), "{line}");
    assert!(line.contains("3 of 4 still running"), "{line}");
    assert!(sums_ok, "the survivors' sums: {sums}");
    assert!(
        all_answer,
        "survivors answering /stats: {seen:?} of {survivors:?}"
    );
    assert!(
        late_failed.is_empty(),
        "{} of {late_published} publishes from 1 s after the kill failed: {late_failed:?}",
        late_failed.len()
    );
    assert!(v.cuts > 0, "no subscriber was on the killed process");
    if kinds.iter().any(|(k, _)| *k != Kind::Ws) {
        assert!(v.resumes > 0, "no subscriber resumed");
    }
    assert_clean(name, &v);
    // What lets a client resume on another process: a message has the same id everywhere.
    assert_eq!(
        v.id_mismatches, 0,
        "{name}: messages with different ids in different processes, e.g. {:?}",
        v.id_examples
    );
}

/// Every HTTP transport (SSE with `Last-Event-ID`, NDJSON streaming and JSON long-poll with
/// `?cursor=`) and plain WebSocket subscribers (which cannot resume: a cut one must have had an
/// unbroken prefix).
#[test]
fn kill_9_one_of_four_processes_http_transports_resume() {
    kill_one_of_four(
        "k9",
        &[
            (Kind::Sse, 3),
            (Kind::Stream, 3),
            (Kind::Poll, 3),
            (Kind::Ws, 3),
        ],
    );
}

/// The same with WebSocket subscribers in the `?envelope=1` format (ids and gap frames),
/// resuming with `?cursor=` on the upgrade.
#[test]
fn kill_9_one_of_four_processes_ws_envelope_resumes() {
    kill_one_of_four("k9env", &[(Kind::WsEnvelope, 4)]);
}

// ---- 2. Redis SIGKILLed and restarted ---------------------------------------------------------

/// Subscribers of every transport on each of `servers`, on every channel.
fn subs_on(
    servers: &[SocketAddr],
    channels: &[String],
    kinds: &[Kind],
    ctl: &Arc<Ctl>,
) -> Vec<JoinHandle<SubLog>> {
    let mut handles = Vec::new();
    for &addr in servers {
        for (ch, c) in channels.iter().enumerate() {
            for &k in kinds {
                handles.push(spawn_sub(k, addr, ch, c, ctl.clone()));
            }
        }
    }
    handles
}

const ALL_KINDS: [Kind; 4] = [Kind::Sse, Kind::Stream, Kind::Poll, Kind::Ws];

fn hub_sum(stats: &mut [Http], key: &str) -> u64 {
    stats
        .iter_mut()
        .map(|h| stat(&h.stats().expect("stats"), "hub", key))
        .sum()
}

#[test]
fn redis_killed_and_restarted_under_load() {
    let _serial = serial();
    let t0 = Instant::now();
    let mut redis = Redis::start();
    let url = redis.url();
    let args = [
        "--workers",
        "1",
        "--broker",
        &url,
        "--history",
        "1000",
        "--poll-timeout",
        "5",
    ];
    let a = Edge::start(&args);
    let b = Edge::start(&args);
    let channels: Vec<String> = (0..2).map(|i| format!("rk-{i}")).collect();
    let ctl = Ctl::new(channels.len(), 120);
    let mut handles = subs_on(&[a.addr, b.addr], &channels, &ALL_KINDS, &ctl);
    let nsubs = handles.len();
    let mut pubs = [Http::new(a.addr), Http::new(b.addr)];
    let mut stats = [Http::new(a.addr), Http::new(b.addr)];
    warm_up(&mut pubs[0], &channels, &ctl, nsubs, &mut handles);

    #[derive(PartialEq)]
    enum Phase {
        Up,
        Down,
        Back,
    }
    let rate = 100.0;
    let mut phase = Phase::Up;
    let mut outcomes: Vec<Vec<Pub>> = vec![Vec::new(); channels.len()];
    let (mut killed, mut restarted, mut first_refusal, mut recovered) = (None, None, None, None);
    let (mut seen_down, mut refused_down, mut accepted_back, mut partial) = (false, 0, 0, 0);
    let start = Instant::now();
    let mut i = 0usize;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(25),
            "the load did not finish"
        );
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait); // the publish rate
        }
        match phase {
            Phase::Up if i == 200 => {
                redis.kill9();
                killed = Some(Instant::now());
                phase = Phase::Down;
            }
            Phase::Down if i % 10 == 0 && !seen_down => {
                seen_down = hub_sum(&mut stats, "broker_connected") == 0;
            }
            // Down long enough: both processes saw it and 200 publishes were refused.
            Phase::Down if seen_down && refused_down >= 200 => {
                redis.restart();
                restarted = Some(Instant::now());
                phase = Phase::Back;
            }
            Phase::Back if accepted_back >= 200 => break,
            _ => {}
        }
        let ch = i % channels.len();
        let seq = outcomes[ch].len() as u64;
        let (o, _) = pubs[i % 2].publish(&channels[ch], &payload(seq, &channels[ch]));
        match (&phase, &o) {
            (_, Pub::Accepted(Some(n))) if *n < 2 => partial += 1,
            _ => {}
        }
        match (&phase, &o) {
            (Phase::Down, Pub::Refused) => {
                refused_down += 1;
                first_refusal.get_or_insert_with(Instant::now);
            }
            (Phase::Back, Pub::Accepted(_)) => {
                accepted_back += 1;
                recovered.get_or_insert_with(Instant::now);
            }
            _ => {}
        }
        outcomes[ch].push(o);
        i += 1;
    }
    let load = start.elapsed();
    let reconnected = wait_for(10.0, || hub_sum(&mut stats, "broker_connected") == 2);
    finals(&mut pubs[0], &channels, &mut outcomes, &ctl);
    ctl.drain_within(20);
    let logs = join(&mut handles);
    let v = check(&logs, &outcomes);
    let (published, accepted, refused, maybe) = tally(&outcomes);
    let refused_stat = hub_sum(&mut stats, "broker_publish_refused");
    let lost_stat = hub_sum(&mut stats, "broker_publish_lost");
    let reconnects = [
        stat(&stats[0].stats().unwrap(), "hub", "broker_reconnects"),
        stat(&stats[1].stats().unwrap(), "hub", "broker_reconnects"),
    ];
    let (killed, restarted) = (killed.unwrap(), restarted.unwrap());
    eprintln!(
        "chaos[redis-kill]: 2 processes, {nsubs} subscribers; published {published} (accepted \
         {accepted}, refused 503 {refused}, uncertain {maybe}; accepted with broker_receivers < 2: \
         {partial}); Redis down {:?} (first 503 after {:?}), first 2xx {:?} after the restart; \
         /stats broker_publish_refused {refused_stat}, broker_publish_lost {lost_stat}, \
         broker_reconnects {reconnects:?}; {}; load {load:?}, test {:?}",
        restarted - killed,
        first_refusal.map(|f| f - killed),
        recovered.map(|r| r - restarted),
        report(&v),
        t0.elapsed()
    );
    assert!(
        refused_down > 0,
        "no publish was refused while Redis was down"
    );
    assert_eq!(
        refused_stat, refused as u64,
        "broker_publish_refused against the refusals seen"
    );
    assert!(
        recovered.is_some(),
        "publishing never resumed after the restart"
    );
    assert!(reconnected, "the processes did not both reconnect to Redis");
    assert!(reconnects.iter().all(|&n| n >= 1), "{reconnects:?}");
    assert_eq!(v.cuts, 0, "subscribers were cut while Redis was down");
    assert_clean("redis-kill", &v);
}

// ---- 3. Redis paused past --broker-ack-timeout ------------------------------------------------

/// A publisher thread's outcomes (by sequence number) and each publish's (sent, took, outcome).
type Published = (Vec<Pub>, Vec<(Instant, Duration, Pub)>);

#[test]
fn redis_paused_past_the_ack_timeout_under_load() {
    let _serial = serial();
    let t0 = Instant::now();
    let redis = Redis::start();
    let url = redis.url();
    let args = [
        "--workers",
        "1",
        "--broker",
        &url,
        "--broker-ack-timeout",
        "1",
        "--history",
        "1000",
        "--poll-timeout",
        "5",
    ];
    let a = Edge::start(&args);
    let b = Edge::start(&args);
    let channels: Vec<String> = (0..4).map(|i| format!("rp-{i}")).collect();
    let ctl = Ctl::new(channels.len(), 120);
    let mut handles = subs_on(&[a.addr, b.addr], &channels, &ALL_KINDS, &ctl);
    let nsubs = handles.len();
    warm_up(&mut Http::new(a.addr), &channels, &ctl, nsubs, &mut handles);

    // One publisher thread per channel (so each channel's order is its thread's), 25/s each,
    // alternating between the two processes.
    let stop = Arc::new(AtomicBool::new(false));
    let pause_end = Arc::new(Mutex::new(None::<Instant>));
    let accepted: Arc<Vec<AtomicU64>> =
        Arc::new((0..channels.len()).map(|_| AtomicU64::new(0)).collect());
    let after_pause: Arc<Vec<AtomicU64>> =
        Arc::new((0..channels.len()).map(|_| AtomicU64::new(0)).collect());
    let threads: Vec<JoinHandle<Published>> = channels
        .iter()
        .enumerate()
        .map(|(ch, c)| {
            let (c, stop, pause_end) = (c.clone(), stop.clone(), pause_end.clone());
            let (accepted, after_pause) = (accepted.clone(), after_pause.clone());
            let addrs = [a.addr, b.addr];
            std::thread::spawn(move || {
                let mut pubs = [Http::new(addrs[0]), Http::new(addrs[1])];
                let (mut out, mut timed) = (Vec::new(), Vec::new());
                let start = Instant::now();
                let mut i = 0usize;
                while !stop.load(SeqCst) {
                    let due = start + Duration::from_secs_f64(i as f64 / 25.0);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait); // the publish rate
                    }
                    let sent = Instant::now();
                    let (o, took) = pubs[i % 2].publish(&c, &payload(out.len() as u64, &c));
                    if o.accepted() {
                        accepted[ch].fetch_add(1, SeqCst);
                        if pause_end.lock().unwrap().is_some_and(|e| sent > e) {
                            after_pause[ch].fetch_add(1, SeqCst);
                        }
                    }
                    timed.push((sent, took, o.clone()));
                    out.push(o);
                    i += 1;
                }
                (out, timed)
            })
        })
        .collect();
    let n = channels.len();
    assert!(
        wait_for(15.0, || accepted.iter().all(|a| a.load(SeqCst) >= 25)),
        "no load"
    );
    let pause_ms = 3000;
    redis.pause_all(pause_ms);
    let paused = Instant::now();
    *pause_end.lock().unwrap() = Some(paused + Duration::from_millis(pause_ms));
    let resumed = wait_for(20.0, || after_pause.iter().all(|a| a.load(SeqCst) >= 20));
    stop.store(true, SeqCst);
    let mut outcomes = Vec::new();
    let mut timed = Vec::new();
    for t in threads {
        let (o, tm) = t.join().unwrap();
        outcomes.push(o);
        timed.extend(tm);
    }
    finals(&mut Http::new(a.addr), &channels, &mut outcomes, &ctl);
    ctl.drain_within(20);
    let logs = join(&mut handles);
    let v = check(&logs, &outcomes);
    let (published, ok, refused, maybe) = tally(&outcomes);
    let n504 = timed
        .iter()
        .filter(|(_, _, o)| matches!(o, Pub::Maybe(m) if m.starts_with("504")))
        .count() as u64;
    let is504 = |o: &Pub| matches!(o, Pub::Maybe(m) if m.starts_with("504"));
    let is503 = |o: &Pub| matches!(o, Pub::Maybe(m) if m.starts_with("503"));
    let n503 = timed.iter().filter(|(_, _, o)| is503(o)).count();
    // A broken connection to edgecomet, or anything but 2xx, 504, 503: never expected.
    let other_fail: Vec<String> = timed
        .iter()
        .filter(|(_, _, o)| !o.accepted() && !is504(o) && !is503(o) && *o != Pub::Refused)
        .map(|(_, _, o)| format!("{o:?}"))
        .collect();
    let slowest = timed.iter().map(|(_, d, _)| *d).max().unwrap();
    let t504: Vec<Duration> = timed
        .iter()
        .filter(|(_, _, o)| is504(o))
        .map(|(_, d, _)| *d)
        .collect();
    let during = timed
        .iter()
        .filter(|(s, _, _)| *s >= paused && *s < paused + Duration::from_millis(pause_ms))
        .count();
    let sum = |section: &str, key: &str| -> u64 {
        [a.addr, b.addr]
            .iter()
            .map(|&x| stat(&Http::new(x).stats().unwrap(), section, key))
            .sum()
    };
    let timeouts_stat = sum("total", "broker_ack_timeouts");
    let lost_stat = sum("hub", "broker_publish_lost");
    let reconnects_stat = sum("hub", "broker_reconnects");
    let first_ok_after = timed
        .iter()
        .filter(|(s, _, o)| *s > paused && o.accepted())
        .map(|(s, d, _)| *s + *d - paused)
        .min();
    eprintln!(
        "chaos[redis-pause]: 2 processes, {nsubs} subscribers, {n} publisher threads at 25/s; \
         CLIENT PAUSE {pause_ms} ALL, --broker-ack-timeout 1; published {published} (accepted \
         {ok}, refused {refused}, uncertain {maybe}: {n504} answered 504 after {:?}..{:?}, {n503} \
         answered 503 \"may or may not\"), {during} publishes sent during the pause, slowest \
         answer {slowest:?}; first 2xx {first_ok_after:?} after the pause began; /stats \
         broker_ack_timeouts {timeouts_stat}, broker_publish_lost {lost_stat}, broker_reconnects \
         {reconnects_stat}; {}; test {:?}",
        t504.iter().min(),
        t504.iter().max(),
        report(&v),
        t0.elapsed()
    );
    assert!(n504 >= n as u64, "only {n504} publishes answered 504");
    assert_eq!(timeouts_stat, n504, "broker_ack_timeouts");
    assert!(
        other_fail.is_empty(),
        "answers other than 2xx/503/504: {other_fail:?}"
    );
    // The timeout runs on the one-second wheel: answered within timeout + 1 s (plus a quarter
    // second for a busy machine).
    assert!(
        slowest <= Duration::from_millis(2250),
        "a publish took {slowest:?}"
    );
    assert!(
        resumed,
        "publishing did not resume after the pause: {after_pause:?}"
    );
    assert_clean("redis-pause", &v);
}

// ---- 4. the open-files limit hit by a reconnect storm -----------------------------------------

const NOFILE: u64 = 300;
const HEALTHY_WS: usize = 50;
const HEALTHY_SSE: usize = 50;
const STORM: usize = 600;

#[derive(Default)]
struct StormCounts {
    attempts: AtomicU64,
    established: AtomicU64,
    connect_failed: AtomicU64,
    timed_out: AtomicU64,
    reset: AtomicU64,
    /// Upgraded, then closed by the server before the storm ended.
    dropped: AtomicU64,
    open: AtomicI64,
    open_peak: AtomicI64,
}

/// One storm client: connect, upgrade, hold until `stop`; refused, reset or no answer: back off
/// (50 ms doubling to 1 s, jittered) and try again.
fn storm_client(
    addr: SocketAddr,
    k: usize,
    go: Arc<Barrier>,
    stop: Arc<AtomicBool>,
    c: Arc<StormCounts>,
) {
    let mut rng = (k as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut fails = 0u32;
    go.wait();
    let req = format!(
        "GET /sub/storm-{} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        k % 10
    );
    while !stop.load(SeqCst) {
        c.attempts.fetch_add(1, SeqCst);
        let ok = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(_) => {
                c.connect_failed.fetch_add(1, SeqCst);
                false
            }
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_millis(1500)))
                    .unwrap();
                let mut head = Vec::new();
                let mut b = [0u8; 512];
                let answered = s.write_all(req.as_bytes()).is_ok()
                    && loop {
                        match s.read(&mut b) {
                            Ok(0) => {
                                c.reset.fetch_add(1, SeqCst);
                                break false;
                            }
                            Ok(n) => {
                                head.extend_from_slice(&b[..n]);
                                if head.windows(4).any(|w| w == b"\r\n\r\n") {
                                    break head.starts_with(b"HTTP/1.1 101");
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) =>
                            {
                                c.timed_out.fetch_add(1, SeqCst);
                                break false;
                            }
                            Err(_) => {
                                c.reset.fetch_add(1, SeqCst);
                                break false;
                            }
                        }
                    };
                if answered {
                    c.established.fetch_add(1, SeqCst);
                    let now = c.open.fetch_add(1, SeqCst) + 1;
                    c.open_peak.fetch_max(now, SeqCst);
                    // Held until the storm ends (or the server closes it).
                    s.set_read_timeout(Some(Duration::from_millis(100)))
                        .unwrap();
                    while !stop.load(SeqCst) {
                        match s.read(&mut b) {
                            Ok(0) => {
                                c.dropped.fetch_add(1, SeqCst);
                                break;
                            }
                            Ok(_) => {}
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => {
                                c.dropped.fetch_add(1, SeqCst);
                                break;
                            }
                        }
                    }
                    c.open.fetch_sub(1, SeqCst);
                }
                answered
            }
        };
        if ok {
            fails = 0;
        } else if !stop.load(SeqCst) {
            fails += 1;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let base = (50u64 << fails.min(5)).min(1000);
            std::thread::sleep(Duration::from_millis(base / 2 + rng % base)); // back-off
        }
    }
}

#[test]
fn open_files_limit_hit_by_a_reconnect_storm() {
    let _serial = serial();
    let t0 = Instant::now();
    let mut cmd = edgecomet();
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let srv = Edge::start_cmd(
        cmd,
        addr,
        &[
            "--workers",
            "2",
            "--accept-pause-ms",
            "250",
            "--backlog",
            "128",
        ],
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", srv.pid())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.split_whitespace().nth(3) == Some("300")),
        "{limits}"
    );
    let channels = vec!["storm-healthy".to_string()];
    let ctl = Ctl::new(1, 120);
    let mut handles = Vec::new();
    for _ in 0..HEALTHY_WS {
        handles.push(spawn_sub(Kind::Ws, addr, 0, &channels[0], ctl.clone()));
    }
    for _ in 0..HEALTHY_SSE {
        handles.push(spawn_sub(Kind::Sse, addr, 0, &channels[0], ctl.clone()));
    }
    let nsubs = handles.len();
    // Publisher and /stats connections opened before descriptors run out (kept alive).
    let mut publisher = Http::new(addr);
    let mut stats = Http::new(addr).with_timeout(Duration::from_secs(2));
    publisher.connect().unwrap();
    stats.connect().unwrap();
    warm_up(&mut publisher, &channels, &ctl, nsubs, &mut handles);
    let errors_before = stat(&stats.stats().unwrap(), "total", "accept_errors");

    let counts = Arc::new(StormCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let go = Arc::new(Barrier::new(STORM + 1));
    let storm: Vec<JoinHandle<()>> = (0..STORM)
        .map(|k| {
            let (go, stop, c) = (go.clone(), stop.clone(), counts.clone());
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || storm_client(addr, k, go, stop, c))
                .unwrap()
        })
        .collect();
    let cpu0 = cpu_seconds(srv.pid());
    go.wait();
    let storm_start = Instant::now();
    // 6 s of storm under a 50/s publish load; /stats polled every 0.5 s on the kept connection.
    let mut outcomes: Vec<Vec<Pub>> = vec![Vec::new()];
    let (mut polls, mut answered, mut slowest_stats) = (0, 0, Duration::ZERO);
    let mut errors_during = 0;
    let mut i = 0usize;
    while storm_start.elapsed() < Duration::from_secs(6) {
        let due = storm_start + Duration::from_secs_f64(i as f64 / 50.0);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait); // the publish rate
        }
        let seq = outcomes[0].len() as u64;
        let (o, _) = publisher.publish(&channels[0], &payload(seq, &channels[0]));
        outcomes[0].push(o);
        if i % 25 == 0 {
            polls += 1;
            let t = Instant::now();
            if let Some(s) = stats.stats() {
                answered += 1;
                slowest_stats = slowest_stats.max(t.elapsed());
                errors_during = stat(&s, "total", "accept_errors") - errors_before;
            }
        }
        i += 1;
    }
    let storm_secs = storm_start.elapsed();
    let cpu = cpu_seconds(srv.pid()) - cpu0;
    let open_at_end = counts.open.load(SeqCst);
    stop.store(true, SeqCst);
    for t in storm {
        t.join().unwrap();
    }
    let storm_end = Instant::now();
    // Accepting again: a new connection gets /stats, a new subscriber gets a new message.
    let mut fresh = None;
    let accepting = wait_for(15.0, || {
        fresh = Http::new(addr)
            .with_timeout(Duration::from_millis(500))
            .stats();
        fresh.is_some()
    });
    let accepted_again = storm_end.elapsed();
    let mut late_ok = false;
    if accepting {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut ws, _) = tungstenite::client(format!("ws://{addr}/sub/storm-after"), s)
            .expect("upgrade after the storm");
        let (o, _) = publisher.publish("storm-after", "after");
        late_ok = o.accepted()
            && matches!(ws.read(), Ok(tungstenite::Message::Text(t)) if t.as_str() == "after");
    }
    finals(&mut publisher, &channels, &mut outcomes, &ctl);
    ctl.drain_within(20);
    let logs = join(&mut handles);
    let v = check(&logs, &outcomes);
    let (published, ok, _, _) = tally(&outcomes);
    let errors_total = stat(&stats.stats().unwrap(), "total", "accept_errors") - errors_before;
    let c = &counts;
    eprintln!(
        "chaos[emfile-storm]: RLIMIT_NOFILE {NOFILE}, 2 workers, {nsubs} healthy subscribers \
         ({HEALTHY_WS} ws + {HEALTHY_SSE} sse); storm of {STORM} clients for {storm_secs:?}: \
         {} attempts, {} upgraded (peak {} open at once, {open_at_end} at the end, {} closed by \
         the server), {} connects failed, {} timed out, {} reset; accept_errors {errors_during} \
         during the storm, \
         {errors_total} in all; server CPU {cpu:.2} s over {storm_secs:?} ({:.0}%); /stats on the \
         kept connection answered {answered}/{polls}, slowest {slowest_stats:?}; new connections \
         accepted {accepted_again:?} after the storm clients closed; published {published} \
         (accepted {ok}); {}; test {:?}",
        c.attempts.load(SeqCst),
        c.established.load(SeqCst),
        c.open_peak.load(SeqCst),
        c.dropped.load(SeqCst),
        c.connect_failed.load(SeqCst),
        c.timed_out.load(SeqCst),
        c.reset.load(SeqCst),
        100.0 * cpu / storm_secs.as_secs_f64(),
        report(&v),
        t0.elapsed()
    );
    assert!(errors_during >= 1, "no accept error during the storm");
    assert!(
        (c.open_peak.load(SeqCst) as u64) < NOFILE,
        "more storm connections open than the limit allows"
    );
    assert!(
        (c.established.load(SeqCst) as usize) < STORM,
        "every storm client got in: the limit did not bite"
    );
    assert_eq!(answered, polls, "/stats went unanswered during the storm");
    // Not spinning: a busy accept loop would burn a core per worker.
    assert!(
        cpu < 0.5 * storm_secs.as_secs_f64(),
        "server used {cpu:.2} s of CPU in {storm_secs:?}"
    );
    assert!(accepting, "no new connection accepted after the storm");
    assert!(
        late_ok,
        "a subscriber after the storm did not get its message"
    );
    assert_eq!(ok, published, "publishes on the kept connection failed");
    assert_eq!(v.cuts, 0, "healthy subscribers were cut");
    assert_clean("emfile-storm", &v);
}
