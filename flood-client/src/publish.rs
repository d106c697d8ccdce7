//! The publish load: `--publish-rate` messages per second over keep-alive `POST /pub/{channel}`
//! connections. Each publisher thread owns a disjoint set of channels and their sequence
//! counters, so numbers on one channel are strictly increasing in publish order.
//!
//! A publisher keeps a schedule: message `i` of a thread is due at `start + i / rate`, and its
//! payload carries that scheduled time (not the time it left), so delivery latency is measured
//! from when the message should have been published and a publisher held up by a busy server
//! shows in the latency instead of hiding it (coordinated omission). Requests are pipelined up
//! to `--publish-pipeline` per connection: a publish is sent when it is due without waiting for
//! the answers to the ones before it (a server busy with a fan-out answers late, which must not
//! delay the next publish); only when that many are unanswered does the next wait. How well the
//! schedule was kept ([`Schedule`]: lag of each send behind its due time, late sends, waits for
//! a free pipeline slot) goes in the report.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::http::{self, HttpConn};
use crate::msg;
use crate::plan::channel_name;
use crate::tls::TlsClient;

/// A send more than this behind its due time counts as late: a millisecond is a tenth of the
/// interval at 100 messages/s and well above the sleep's overshoot on an idle machine (tens of
/// microseconds), so a late send is the publisher being held up, not timer jitter.
pub const LATE_US: u64 = 1_000;

/// The longest a publisher sleeps or waits for an answer before looking at the stop flag again.
const POLL: Duration = Duration::from_millis(50);

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    pub target: SocketAddr,
    pub host: String,
    /// e.g. `/pub/`.
    pub path_prefix: String,
    pub channel: String,
    pub channels: u32,
    /// Messages per second over all channels.
    pub rate: f64,
    /// Payload bytes per message.
    pub size: usize,
    /// Pad payloads with JSON rather than dots (`--json-payload`).
    pub json: bool,
    /// Publisher connections (threads).
    pub connections: usize,
    /// Requests sent and not yet answered, at most, per connection (1: one at a time).
    pub pipeline: usize,
    /// Sequence number of the first message on each channel (the broadcasts before the load
    /// took the lower ones).
    pub first_seq: u32,
    /// `https://`: publish over TLS with these settings (shared by the publisher threads).
    pub tls: Option<TlsClient>,
}

/// A running publish load.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Schedule>>,
    /// Messages accepted (2xx) per channel.
    published: Arc<Vec<AtomicU64>>,
    errors: Arc<AtomicU64>,
}

/// How well the publishers kept their schedule: each send's lag behind its due time.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Requests sent.
    pub sent: u64,
    /// Sent more than [`LATE_US`] after they were due.
    pub late: u64,
    /// Sent late because `pipeline` requests were unanswered when they were due.
    pub waited_for_pipeline: u64,
    /// Lag of each send behind its due time, in microseconds.
    pub lag_us: Histogram<u64>,
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule {
            sent: 0,
            late: 0,
            waited_for_pipeline: 0,
            // Up to 100 s, 3 significant digits.
            lag_us: Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds"),
        }
    }
}

impl Schedule {
    fn record(&mut self, lag: Duration) {
        let us = lag.as_micros().min(u128::from(u64::MAX)) as u64;
        self.sent += 1;
        if us > LATE_US {
            self.late += 1;
        }
        self.lag_us.saturating_record(us.max(1));
    }

    /// Adds `other`'s sends to these.
    pub fn add(&mut self, other: &Schedule) {
        self.sent += other.sent;
        self.late += other.late;
        self.waited_for_pipeline += other.waited_for_pipeline;
        let _ = self.lag_us.add(&other.lag_us);
    }

    /// The largest lag, in microseconds (0 with no sends).
    pub fn max_lag_us(&self) -> u64 {
        if self.lag_us.is_empty() {
            0
        } else {
            self.lag_us.max()
        }
    }

    /// The lag at quantile `q`, in microseconds (0 with no sends).
    pub fn lag_quantile_us(&self, q: f64) -> u64 {
        if self.lag_us.is_empty() {
            0
        } else {
            self.lag_us.value_at_quantile(q)
        }
    }
}

/// What was published.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub per_channel: Vec<u64>,
    pub errors: u64,
    /// The publish load's schedule (empty for the broadcasts, sent one at a time).
    pub schedule: Schedule,
}

impl Published {
    pub fn total(&self) -> u64 {
        self.per_channel.iter().sum()
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Published) {
        if self.per_channel.len() < other.per_channel.len() {
            self.per_channel.resize(other.per_channel.len(), 0);
        }
        for (a, b) in self.per_channel.iter_mut().zip(&other.per_channel) {
            *a += b;
        }
        self.errors += other.errors;
        self.schedule.add(&other.schedule);
    }
}

impl Publisher {
    pub fn start(plan: PublishPlan) -> Publisher {
        let channels = plan.channels.max(1) as usize;
        let threads_n = plan.connections.clamp(1, channels);
        let stop = Arc::new(AtomicBool::new(false));
        let published: Arc<Vec<AtomicU64>> =
            Arc::new((0..channels).map(|_| AtomicU64::new(0)).collect());
        let errors = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for t in 0..threads_n {
            let mine: Vec<usize> = (t..channels).step_by(threads_n).collect();
            let rate = plan.rate * mine.len() as f64 / channels as f64;
            let (plan, stop, published, errors) = (
                plan.clone(),
                stop.clone(),
                published.clone(),
                errors.clone(),
            );
            threads.push(std::thread::spawn(move || {
                publish_loop(&plan, &mine, rate, &stop, &published, &errors)
            }));
        }
        Publisher {
            stop,
            threads,
            published,
            errors,
        }
    }

    /// Stops publishing, waits for the answers to what was sent, and returns what was
    /// published.
    pub fn finish(self) -> Published {
        self.stop.store(true, Ordering::Relaxed);
        let mut schedule = Schedule::default();
        for t in self.threads {
            if let Ok(s) = t.join() {
                schedule.add(&s);
            }
        }
        Published {
            per_channel: self
                .published
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .collect(),
            errors: self.errors.load(Ordering::Relaxed),
            schedule,
        }
    }
}

/// One publisher thread: sends each message when it is due, up to `plan.pipeline` unanswered,
/// reading answers while it waits for the next due time. At the stop, waits for the answers to
/// what it sent (each counted as published only once answered 2xx).
fn publish_loop(
    plan: &PublishPlan,
    mine: &[usize],
    rate: f64,
    stop: &AtomicBool,
    published: &[AtomicU64],
    errors: &AtomicU64,
) -> Schedule {
    let depth = plan.pipeline.max(1);
    let mut conn: Option<HttpConn> = None;
    // The channel of each request sent and not yet answered, in order.
    let mut waiting: VecDeque<usize> = VecDeque::with_capacity(depth);
    let mut seq = vec![plan.first_seq; mine.len()];
    let mut schedule = Schedule::default();
    let start = Instant::now();
    let start_ns = msg::now_ns();
    let mut i: u64 = 0;
    // The message due now found the pipeline full.
    let mut held = false;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if stopping && waiting.is_empty() {
            break;
        }
        let offset = Duration::from_secs_f64(i as f64 / rate);
        let due = start + offset;
        let now = Instant::now();
        if !stopping && due <= now && waiting.len() < depth {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match connect(plan) {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                },
            };
            let k = (i % mine.len() as u64) as usize;
            let chan = mine[k];
            // The scheduled time, on the clock the subscribers read.
            let body = msg::encode(
                seq[k],
                start_ns + offset.as_nanos() as u64,
                plan.size,
                plan.json,
            );
            let path = format!(
                "{}{}",
                plan.path_prefix,
                channel_name(&plan.channel, chan as u32, plan.channels)
            );
            let req = http::request_bytes("POST", &plan.host, &path, &body);
            schedule.record(Instant::now() - due);
            if std::mem::take(&mut held) {
                schedule.waited_for_pipeline += 1;
            }
            i += 1;
            seq[k] += 1;
            if c.send_raw(&req).is_err() {
                // This one and every unanswered one before it.
                errors.fetch_add(1 + waiting.len() as u64, Ordering::Relaxed);
                waiting.clear();
                conn = None;
                continue;
            }
            waiting.push_back(chan);
            continue;
        }
        let Some(c) = conn.as_mut().filter(|_| !waiting.is_empty()) else {
            if due > now {
                std::thread::sleep((due - now).min(POLL));
            }
            continue;
        };
        // Wait for an answer: until the next one is due, or (pipeline full, or stopping) as
        // long as an answer may take.
        let full = waiting.len() >= depth;
        held |= full && due <= now && !stopping;
        let wait = if stopping || full {
            ANSWER_TIMEOUT
        } else if due > now {
            (due - now).min(POLL)
        } else {
            continue;
        };
        match c.read_response_within(wait) {
            Ok(Some((status, _))) => {
                let chan = waiting
                    .pop_front()
                    .expect("an answer is read only while one waits");
                if (200..300).contains(&status) {
                    published[chan].fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(None) if !(stopping || full) => {}
            Ok(None) | Err(_) => {
                // No answer within ANSWER_TIMEOUT, or the connection failed: every unanswered
                // request counts as failed (although some may have been published).
                errors.fetch_add(waiting.len() as u64, Ordering::Relaxed);
                waiting.clear();
                conn = None;
            }
        }
    }
    schedule
}

/// One broadcast: message `seq` on every channel, one after another on one connection. Adds
/// what was accepted (2xx) to `published` and returns the number of failed posts.
pub fn broadcast(plan: &PublishPlan, seq: u32, published: &mut Published) -> u64 {
    let channels = plan.channels.max(1);
    published.per_channel.resize(channels as usize, 0);
    let mut conn: Option<HttpConn> = None;
    let mut failed = 0;
    for chan in 0..channels {
        let path = format!(
            "{}{}",
            plan.path_prefix,
            channel_name(&plan.channel, chan, plan.channels)
        );
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(plan) {
                Ok(c) => conn.insert(c),
                Err(_) => {
                    failed += 1;
                    continue;
                }
            },
        };
        let body = msg::encode(seq, msg::now_ns(), plan.size, plan.json);
        match post(c, &path, &body) {
            Ok(s) if (200..300).contains(&s) => published.per_channel[chan as usize] += 1,
            Ok(_) => failed += 1,
            Err(_) => {
                failed += 1;
                conn = None;
            }
        }
    }
    published.errors += failed;
    failed
}

/// How long an answer may take. Long: on a machine saturated by the load itself (a million
/// subscribers on two cores) a server process busy fanning out can take over 10 s to read the
/// next POST; a publish that timed out is counted as an error although it may have been
/// published.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A publisher's keep-alive connection (answers wait up to [`ANSWER_TIMEOUT`]).
fn connect(plan: &PublishPlan) -> io::Result<HttpConn> {
    let timeout = ANSWER_TIMEOUT;
    match &plan.tls {
        Some(t) => HttpConn::connect_tls(plan.target, &plan.host, timeout, t),
        None => HttpConn::connect(plan.target, &plan.host, timeout),
    }
}

/// POSTs `body` to `path`; returns the status.
fn post(c: &mut HttpConn, path: &str, body: &[u8]) -> io::Result<u16> {
    c.request("POST", path, body).map(|(status, _)| status)
}
