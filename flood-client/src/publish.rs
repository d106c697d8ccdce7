//! The publish load: `--publish-rate` messages per second over keep-alive `POST /pub/{channel}`
//! connections. Each publisher thread owns a disjoint set of channels and their sequence
//! counters, so numbers on one channel are strictly increasing in publish order.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::HttpConn;
use crate::msg;
use crate::plan::channel_name;
use crate::tls::TlsClient;

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
    /// Publisher connections (threads).
    pub connections: usize,
    /// Sequence number of the first message on each channel (the broadcasts before the load
    /// took the lower ones).
    pub first_seq: u32,
    /// `https://`: publish over TLS with these settings (shared by the publisher threads).
    pub tls: Option<TlsClient>,
}

/// A running publish load.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Messages accepted (2xx) per channel.
    published: Arc<Vec<AtomicU64>>,
    errors: Arc<AtomicU64>,
}

/// What was published.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub per_channel: Vec<u64>,
    pub errors: u64,
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

    pub fn finish(self) -> Published {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Published {
            per_channel: self
                .published
                .iter()
                .map(|a| a.load(Ordering::Relaxed))
                .collect(),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

fn publish_loop(
    plan: &PublishPlan,
    mine: &[usize],
    rate: f64,
    stop: &AtomicBool,
    published: &[AtomicU64],
    errors: &AtomicU64,
) {
    let mut conn: Option<HttpConn> = None;
    let mut seq = vec![plan.first_seq; mine.len()];
    let start = Instant::now();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        // Paced: message i leaves at start + i / rate (no catching up in a burst beyond that).
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
            continue;
        }
        let k = (i % mine.len() as u64) as usize;
        i += 1;
        let chan = mine[k];
        let body = msg::encode(seq[k], msg::now_ns(), plan.size);
        seq[k] += 1;
        let path = format!(
            "{}{}",
            plan.path_prefix,
            channel_name(&plan.channel, chan as u32, plan.channels)
        );
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
        match post(c, &path, &body) {
            Ok(s) if (200..300).contains(&s) => {
                published[chan].fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
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
        let body = msg::encode(seq, msg::now_ns(), plan.size);
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

/// A publisher's keep-alive connection. The read timeout is long: on a machine saturated by the
/// load itself (a million subscribers on two cores) a server process busy fanning out can take
/// over 10 s to read the next POST; a publish that timed out is counted as an error although it
/// may have been published.
fn connect(plan: &PublishPlan) -> io::Result<HttpConn> {
    let timeout = Duration::from_secs(60);
    match &plan.tls {
        Some(t) => HttpConn::connect_tls(plan.target, &plan.host, timeout, t),
        None => HttpConn::connect(plan.target, &plan.host, timeout),
    }
}

/// POSTs `body` to `path`; returns the status.
fn post(c: &mut HttpConn, path: &str, body: &[u8]) -> io::Result<u16> {
    c.request("POST", path, body).map(|(status, _)| status)
}
