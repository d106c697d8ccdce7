//! Scale-out through Redis pub/sub (`--broker redis://HOST:PORT`).
//!
//! Each edgecomet process keeps two connections to Redis, each served by a thread of its own
//! (blocking I/O: the traffic is one connection's worth, and the workers never wait on it):
//!
//! - the **subscriber**: `SUBSCRIBE`s to the channels its clients use and `PSUBSCRIBE`s to the
//!   patterns of Bayeux wildcard subscriptions. What the process wants is a reference count per
//!   key ([`Broker::add`] / [`Broker::remove`], called by the workers and the Bayeux index when
//!   a channel gets its first local subscriber or loses its last); the thread brings Redis's
//!   subscriptions in line with it, unsubscribing a key only after it has had no local interest
//!   for `--broker-linger` (long-poll and EventSource clients come back between requests). Each
//!   message it receives is handed to the [`Sink`], which enters it into the process exactly like a
//!   local publish (one id, one `Arc<Message>` framed once, in the inbox of every worker with
//!   subscribers of the channel).
//! - the **publisher**: a local publish is not fanned out locally but sent to Redis; it comes
//!   back through the subscriber like everyone else's, so a local subscriber gets it exactly
//!   once. Publishes are pipelined from a bounded queue. Each is one call of a Lua script
//!   ([`PUBLISH_SCRIPT`]) that takes the channel's next id from a counter in Redis and
//!   publishes `ID:PAYLOAD`: a message has the same id in every process, so a client that
//!   reconnects to another process resumes from its cursor there.
//!
//! Broker loss: clients stay connected. While the publisher is down, publishes are refused at
//! once (HTTP 503, counter `broker_publish_refused`); publishes already handed to a connection
//! that then fails are counted in `broker_publish_lost` (Redis may or may not have taken them).
//! Both threads reconnect with exponential back-off (100 ms to 5 s); the subscriber subscribes to
//! everything wanted again. Messages published on Redis while this process was not subscribed
//! are not seen by it (Redis pub/sub keeps nothing): its clients resume from the process's own
//! history only for what it received.

mod doorbell;
pub mod interest;
pub mod link;
mod publisher;
pub mod resp;
pub mod url;

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::TrySendError;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::bounded::{BoundedReceiver, BoundedSender, bounded};
use doorbell::{Doorbell, Woken};
pub use interest::Key;
use interest::{Interests, Subscribed, covers};
use link::Link;
use resp::Value;
pub use url::BrokerUrl;

/// Publishes queued for the publisher connection before further ones are refused.
pub const PUBLISH_QUEUE: usize = 65_536;
/// Back-off between reconnection attempts: from the first to the last, doubling.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection with nothing received for this long (a PING goes out every second) is dead.
const SILENCE: Duration = Duration::from_secs(3);
/// How often the subscriber connection PINGs Redis (its answer is what `SILENCE` waits for).
const PING_EVERY: Duration = Duration::from_secs(1);
/// Interest changes closer together than this are brought to Redis in one sync.
const SYNC_GAP: Duration = Duration::from_millis(20);
/// Without a doorbell (no eventfd), how often the subscriber thread looks for work.
const NO_BELL_STEP: Duration = Duration::from_millis(50);

/// Publishes with the channel's next id. KEYS[1]: the channel's id counter; ARGV: channel,
/// payload, counter lifetime in ms (0: none). A new counter starts at Redis's clock in
/// microseconds, so ids keep increasing when it expires or Redis restarts empty. The id is kept
/// as Redis's decimal string (Lua numbers are doubles). Returns `{id, receivers}`.
pub const PUBLISH_SCRIPT: &str = "\
local id = redis.call('INCR', KEYS[1])
if id == 1 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[1], t[1] .. string.format('%06d', tonumber(t[2])))
end
local s = redis.call('GET', KEYS[1])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return {s, redis.call('PUBLISH', ARGV[1], s .. ':' .. ARGV[2])}";

/// Prefix of the id counter key of a channel.
const ID_KEY: &str = "edgecomet:id:";

/// Splits a message from Redis into its id and payload (`ID:PAYLOAD`, as [`PUBLISH_SCRIPT`]
/// sends it). `None`: not an edgecomet message.
pub fn split_id(msg: &[u8]) -> Option<(u64, usize)> {
    let colon = msg.iter().take(21).position(|&b| b == b':')?;
    let digits = &msg[..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let id = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((id, colon + 1))
}

/// Prefix of the `PING` argument that marks a barrier ([`Broker::barrier`]).
const BARRIER: &str = "edgecomet-barrier-";

/// How the broker behaves.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where Redis is, how to log in (`AUTH`, `SELECT`), whether over TLS.
    pub url: BrokerUrl,
    /// The TLS client configuration for `rediss://` (None for `redis://`).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// How long a key without local interest stays subscribed.
    pub linger: Duration,
    /// Largest message accepted from Redis (larger: the connection is dropped and remade).
    pub max_message: usize,
    /// Payload bytes that may wait for the publisher connection; beyond, publishes are refused.
    pub max_queued_bytes: usize,
    /// How long a channel's id counter lives in Redis after its last publish (ms; 0: for
    /// ever): `--history-age`, as long as a process remembers a channel's ids.
    pub id_ttl_ms: u64,
    /// How long the publisher waits for Redis's replies before it takes the connection for
    /// dead (`--broker-ack-timeout` + 1 s; at least 2 s).
    pub reply_timeout: Duration,
}

crate::stats::counters! {
    /// Counters of the broker, for `/stats` and `/metrics` (`broker_*`).
    pub struct BrokerStats {
        /// `--broker`: publishes Redis acknowledged.
        published as "broker_published",
        /// `--broker`: publishes refused at once: broker down or queue full.
        publish_refused as "broker_publish_refused",
        /// `--broker`: publishes handed to a connection that failed before Redis acknowledged
        /// them.
        publish_lost as "broker_publish_lost",
        /// `--broker`: messages received from Redis and entered into the process.
        received as "broker_received",
        /// `--broker`: reconnections after a lost or refused connection (both connections).
        reconnects as "broker_reconnects",
        /// Gauge: `--broker`: channels and patterns subscribed on Redis now.
        subscriptions as "broker_subscriptions",
        /// Gauge: `--broker`: 1 while both connections to Redis are up.
        connected as "broker_connected",
        /// `--broker`: messages from Redis a worker's full inbox refused (its live subscribers
        /// miss them).
        inbox_drops as "broker_inbox_drops",
        /// `--broker`: messages on Redis without an edgecomet id (published by something
        /// else): ignored.
        foreign as "broker_foreign",
    }
}

/// Why a publish was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// No connection to Redis now.
    Down,
    /// [`PUBLISH_QUEUE`] publishes, or `max_queued_bytes` of payload, are waiting already.
    Busy,
}

/// The process's link to Redis.
pub struct Broker {
    cfg: BrokerConfig,
    interest: Mutex<Interests>,
    /// Interest changed: the subscriber thread should look.
    dirty: AtomicBool,
    /// Rung with `dirty`, a barrier or `stop`, so that the subscriber thread can sleep until
    /// Redis sends something or it has something to send. `None` (no eventfd): the thread
    /// looks every [`NO_BELL_STEP`].
    sub_bell: Option<Doorbell>,
    pub_tx: Mutex<Option<BoundedSender<Outgoing>>>,
    pub_up: AtomicBool,
    sub_up: AtomicBool,
    /// Payload bytes in the publish queue (bounded by `max_queued_bytes`).
    queued_bytes: AtomicUsize,
    stop: AtomicBool,
    /// Barriers asked for ([`Broker::barrier`]) and the last one the subscriber passed.
    barrier_asked: AtomicU64,
    barrier_passed: AtomicU64,
    pub stats: BrokerStats,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// The last connection error logged, per connection (0: subscriber, 1: publisher): a
    /// failing reconnection is logged when its reason changes, not at every attempt. 2: the
    /// last error Redis answered to a subscription command.
    last_error: Mutex<[Option<String>; 3]>,
}

/// The subscriber thread's doorbell; without one (no eventfd) the thread looks for work every
/// [`NO_BELL_STEP`], and the log says so.
fn doorbell_or_warn() -> Option<Doorbell> {
    match Doorbell::new() {
        Ok(b) => Some(b),
        Err(e) => {
            log::warn!(
                target: "edgecomet::broker",
                "broker: no eventfd ({e}); its subscriber thread looks for work every 50 ms instead"
            );
            None
        }
    }
}

/// Which of the two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Subscriber = 0,
    Publisher = 1,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Subscriber => "subscriber",
            Side::Publisher => "publisher",
        }
    }
}

/// Where the subscriber thread puts what it receives.
pub trait Sink: Send + Sync {
    /// A message from Redis, with the id Redis gave it: enter it into the process (without
    /// waking anyone yet).
    fn deliver(&self, channel: &str, id: u64, payload: Bytes);
    /// The messages of one read from Redis are in: wake whoever they are for (once per read,
    /// not once per message).
    fn flush(&self);
    /// Redis answered the publish that asked for `to` (`Some(receivers)`: the number of Redis
    /// subscribers it reached), or it was lost before Redis answered (`None`: it may or may not
    /// have been published). Called from the publisher thread; nobody is woken yet.
    fn ack(&self, to: AckTo, receivers: Option<u64>);
    /// Acknowledgements were given to `worker` ([`Sink::ack`]): wake it (once per batch).
    fn wake(&self, worker: u32);
    /// The subscriber connection was (re)made: what comes next may follow a gap of unknown
    /// size (messages published meanwhile, or a Redis that restarted and numbers anew).
    fn relinked(&self) {}
}

/// Who waits for a publish's acknowledgement: a connection (slot, generation) of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckTo {
    pub worker: u32,
    pub idx: u32,
    pub generation: u32,
}

/// A queued publish: channel, payload, and who waits for Redis's answer.
type Outgoing = (Arc<str>, Bytes, Option<AckTo>);

impl Broker {
    /// Starts the two connection threads. `sink` gets every message received (from the
    /// subscriber thread).
    ///
    /// One connection is tried first: a Redis that answers but refuses the password or the
    /// database stops the start (an error saying so); one that cannot be reached does not
    /// (the threads keep trying, and publishes get 503 meanwhile).
    pub fn start(cfg: BrokerConfig, sink: Box<dyn Sink>) -> io::Result<Arc<Broker>> {
        match link::open(&cfg.url, cfg.tls.as_ref(), true) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::PermissionDenied | io::ErrorKind::InvalidInput
                ) =>
            {
                return Err(io::Error::new(
                    e.kind(),
                    format!("--broker {}: {e}", cfg.url.redacted()),
                ));
            }
            Err(e) => log::warn!(
                target: "edgecomet::broker",
                broker = cfg.url.redacted().as_str();
                "broker {} unreachable at start: {e}; publishes get 503 until it is reached \
                 (retrying with back-off)",
                cfg.url.redacted()
            ),
            Ok(_) => {}
        }
        let (b, rx) = Broker::new(cfg);
        let sink: Arc<dyn Sink> = Arc::from(sink);
        let s = b.clone();
        let sub_sink = sink.clone();
        let sub = std::thread::Builder::new()
            .name("edgecomet-broker-sub".into())
            .spawn(move || s.subscriber(&*sub_sink))?;
        let p = b.clone();
        let publ = std::thread::Builder::new()
            .name("edgecomet-broker-pub".into())
            .spawn(move || p.publisher(rx, &*sink))?;
        b.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend([sub, publ]);
        Ok(b)
    }

    /// The broker without its threads, and the receiving end of its publish queue.
    fn new(cfg: BrokerConfig) -> (Arc<Broker>, BoundedReceiver<Outgoing>) {
        let (tx, rx) = bounded(PUBLISH_QUEUE);
        let b = Arc::new(Broker {
            cfg,
            interest: Mutex::new(Interests::default()),
            dirty: AtomicBool::new(false),
            sub_bell: doorbell_or_warn(),
            pub_tx: Mutex::new(Some(tx)),
            pub_up: AtomicBool::new(false),
            sub_up: AtomicBool::new(false),
            queued_bytes: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            barrier_asked: AtomicU64::new(0),
            barrier_passed: AtomicU64::new(0),
            stats: BrokerStats::default(),
            threads: Mutex::new(Vec::new()),
            last_error: Mutex::new([None, None, None]),
        });
        (b, rx)
    }

    /// Stops both threads and waits for them (at most about a second).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.ring();
        // Dropping the sender ends the publisher's wait.
        self.pub_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Waits (until `until` at most) for everything Redis sent this process before now to be
    /// handed to the sink: the subscriber sends `PING <marker>` on its connection, and Redis
    /// answers it after every message it pushed to that connection before (a publish Redis has
    /// acknowledged is among them). Used by a shutdown, so that the last messages accepted
    /// reach the inboxes before the workers close their clients. Returns at once while the
    /// subscriber is down (there is nothing in flight to wait for).
    pub fn barrier(&self, until: Instant) -> bool {
        if !self.sub_up.load(Ordering::SeqCst) {
            return false;
        }
        let n = self.barrier_asked.fetch_add(1, Ordering::SeqCst) + 1;
        self.ring();
        while self.barrier_passed.load(Ordering::SeqCst) < n {
            if Instant::now() >= until || !self.sub_up.load(Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Marks the interest changed; wakes the subscriber thread if it was not marked already
    /// (one ring per sync, however many changes come before it).
    fn mark_dirty(&self) {
        if !self.dirty.swap(true, Ordering::SeqCst) {
            self.ring();
        }
    }

    /// Wakes the subscriber thread (after `dirty`, a barrier or `stop` was set).
    fn ring(&self) {
        if let Some(b) = &self.sub_bell {
            b.ring();
        }
    }

    /// Whether both connections are up.
    pub fn is_up(&self) -> bool {
        self.pub_up.load(Ordering::Relaxed) && self.sub_up.load(Ordering::Relaxed)
    }

    /// One more local reference to `key` (subscribed on Redis at the first).
    pub fn add(&self, key: Key) {
        let added = self
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(key);
        if added {
            self.mark_dirty();
        }
    }

    /// One local reference to `key` fewer (unsubscribed on Redis `linger` after the last).
    pub fn remove(&self, key: &Key) {
        let removed = self
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key, Instant::now());
        match removed {
            // The subscriber thread notes when its linger ends.
            Some(true) => self.mark_dirty(),
            Some(false) => {}
            None => debug_assert!(
                false,
                "broker interest removed more often than added: {key:?}"
            ),
        }
    }

    /// Queues `payload` for `PUBLISH channel`. It reaches this process's subscribers (and every
    /// other process's) when Redis sends it back. Refused while either connection is down.
    /// With `ack`, Redis's answer (or the loss of the publish) is given to the sink
    /// ([`Sink::ack`]) for it.
    pub fn publish(
        &self,
        channel: Arc<str>,
        payload: Bytes,
        ack: Option<AckTo>,
    ) -> Result<(), PublishError> {
        let refuse = |e| {
            self.stats.publish_refused.fetch_add(1, Ordering::Relaxed);
            Err(e)
        };
        // Either connection down: refused (with the subscriber down, this process's own
        // subscribers would not get it back).
        if !self.is_up() {
            return refuse(PublishError::Down);
        }
        let len = payload.len();
        if self.queued_bytes.fetch_add(len, Ordering::Relaxed) + len > self.cfg.max_queued_bytes {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            return refuse(PublishError::Busy);
        }
        let tx = self.pub_tx.lock().unwrap_or_else(|e| e.into_inner());
        let sent = tx.as_ref().map(|t| t.try_send((channel, payload, ack)));
        if !matches!(sent, Some(Ok(()))) {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(TrySendError::Full(_))) => refuse(PublishError::Busy),
            Some(Err(TrySendError::Disconnected(_))) | None => refuse(PublishError::Down),
        }
    }

    /// A publish left the queue: its bytes no longer count against `max_queued_bytes`.
    fn dequeued(&self, payload: &Bytes) {
        self.queued_bytes
            .fetch_sub(payload.len(), Ordering::Relaxed);
    }

    /// Updates the `broker_connected` gauge; logs when it changes (up: both connections;
    /// down: either lost).
    fn set_connected(&self) {
        let both = u64::from(self.is_up());
        let was = self.stats.connected.swap(both, Ordering::Relaxed);
        if was == both || self.stop.load(Ordering::Relaxed) {
            return;
        }
        let url = self.cfg.url.redacted();
        if both == 1 {
            log::info!(
                target: "edgecomet::broker",
                broker = url.as_str(), connected = true;
                "broker {url} up: subscriber and publisher connected; publishes accepted"
            );
        } else {
            log::warn!(
                target: "edgecomet::broker",
                broker = url.as_str(), connected = false;
                "broker {url} down: publishes get 503 until both connections are back \
                 (clients stay connected)"
            );
        }
    }

    /// Opens a connection (TLS, AUTH, SELECT as the URL asks).
    fn connect(&self) -> io::Result<Link> {
        link::open(&self.cfg.url, self.cfg.tls.as_ref(), false)
    }

    /// Logs an error Redis answered on the subscriber connection, once per distinct reason.
    fn refused(&self, e: &str) {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if last[2].as_deref() == Some(e) {
            return;
        }
        log::warn!(
            target: "edgecomet::broker",
            broker = self.cfg.url.redacted().as_str(), connection = "subscriber";
            "broker {}: Redis refused a subscription command: {e} (does the user's ACL allow \
             the channels, &*?)",
            self.cfg.url.redacted()
        );
        last[2] = Some(e.to_string());
    }

    /// Logs a failed connection attempt when its reason differs from the last one logged for
    /// this side (a password changed on Redis is logged once, then retried quietly).
    fn connect_failed(&self, side: Side, e: &io::Error) {
        let text = e.to_string();
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        if last[side as usize].as_deref() == Some(text.as_str()) {
            return;
        }
        log::warn!(
            target: "edgecomet::broker",
            broker = self.cfg.url.redacted().as_str(), connection = side.name();
            "broker {}: {} connection failed: {text}; retrying with back-off (100 ms to 5 s)",
            self.cfg.url.redacted(),
            side.name()
        );
        last[side as usize] = Some(text);
    }

    /// Sleeps `backoff` (in short steps, so that `stop` is seen) and doubles it.
    fn back_off(&self, backoff: &mut Duration) {
        let until = Instant::now() + *backoff;
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
    }

    // ---- the subscriber connection -----------------------------------------------------------

    /// Connects, retrying with back-off until it works (counted as a reconnect unless `first`)
    /// or the broker stops (`None`).
    fn connect_retrying(
        &self,
        side: Side,
        backoff: &mut Duration,
        first: &mut bool,
    ) -> Option<Link> {
        while !self.stop.load(Ordering::Relaxed) {
            match self.connect() {
                Ok(s) => {
                    if !std::mem::take(first) {
                        self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    self.last_error.lock().unwrap_or_else(|e| e.into_inner())[side as usize] = None;
                    return Some(s);
                }
                Err(e) => {
                    self.connect_failed(side, &e);
                    self.back_off(backoff);
                }
            }
        }
        None
    }

    fn subscriber(&self, sink: &dyn Sink) {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        while let Some(sock) = self.connect_retrying(Side::Subscriber, &mut backoff, &mut first) {
            sink.relinked();
            if self.subscribed(sock, sink) {
                // It ran (and subscribed) before it failed: try again at once.
                backoff = BACKOFF_MIN;
            } else {
                self.back_off(&mut backoff);
            }
            self.sub_up.store(false, Ordering::Relaxed);
            self.stats.subscriptions.store(0, Ordering::Relaxed);
            self.set_connected();
        }
    }

    /// Serves one subscriber connection until it fails or `stop`; whether it got as far as
    /// subscribing.
    fn subscribed(&self, mut sock: Link, sink: &dyn Sink) -> bool {
        if sock
            .set_read_timeout(Some(Duration::from_millis(50)))
            .is_err()
        {
            return false;
        }
        let mut actual = Subscribed::default();
        let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
        let mut scratch = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        let mut synced = false;
        // When the first key without local interest has lingered long enough.
        let mut linger_ends: Option<Instant> = None;
        let mut last_rx = Instant::now();
        let mut last_ping = Instant::now();
        let mut barrier_sent = self.barrier_passed.load(Ordering::SeqCst);
        self.dirty.store(true, Ordering::Relaxed);
        // When Redis's subscriptions were last brought in line: a burst of interest changes
        // (channels made and dropped) is taken in one sync per SYNC_GAP at most.
        let mut last_sync: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            let lingered = linger_ends.is_some_and(|t| now >= t);
            let sync_due = last_sync.is_none_or(|t| now >= t + SYNC_GAP);
            let ping = last_ping.elapsed() >= PING_EVERY;
            out.clear();
            if (sync_due && self.dirty.swap(false, Ordering::SeqCst)) || lingered {
                linger_ends = self.sync(&mut actual, &mut out);
                last_sync = Some(now);
            }
            if ping {
                last_ping = Instant::now();
                resp::command(&mut out, &[b"PING"]);
            }
            let asked = self.barrier_asked.load(Ordering::SeqCst);
            if asked > barrier_sent {
                barrier_sent = asked;
                let marker = format!("{BARRIER}{asked}");
                resp::command(&mut out, &[b"PING", marker.as_bytes()]);
            }
            if !out.is_empty() && sock.write_all(&out).is_err() {
                return synced;
            }
            if !synced {
                synced = true;
                self.sub_up.store(true, Ordering::Relaxed);
                self.set_connected();
            }
            // Sleep until Redis sends something, the doorbell rings, the next PING is due or
            // a lingering key's time is up; bytes the TLS layer already holds are read at once.
            if !sock.buffered() {
                let mut next = last_ping + PING_EVERY;
                if let Some(t) = linger_ends {
                    next = next.min(t);
                }
                // A change that came within SYNC_GAP of the last sync waits for its end (no
                // doorbell comes for it: it was rung, and taken, already).
                if let Some(t) = last_sync
                    && self.dirty.load(Ordering::SeqCst)
                {
                    next = next.min(t + SYNC_GAP);
                }
                let mut timeout = next.saturating_duration_since(Instant::now());
                if self.sub_bell.is_none() {
                    timeout = timeout.min(NO_BELL_STEP);
                }
                match doorbell::wait(sock.sock().as_raw_fd(), self.sub_bell.as_ref(), timeout) {
                    Ok(Woken::Readable) => {}
                    Ok(Woken::Other) => {
                        if last_rx.elapsed() > SILENCE {
                            return synced;
                        }
                        continue;
                    }
                    Err(_) => return synced,
                }
            }
            match sock.read(&mut scratch) {
                Ok(0) => return synced,
                Ok(n) => {
                    last_rx = Instant::now();
                    buf.extend_from_slice(&scratch[..n]);
                    let mut at = 0;
                    let mut delivered = false;
                    loop {
                        match resp::parse(&buf[at..], self.cfg.max_message) {
                            Ok(Some((v, used))) => {
                                at += used;
                                delivered |= self.on_push(v, &actual, sink);
                            }
                            Ok(None) => break,
                            Err(_) => return synced,
                        }
                    }
                    if delivered {
                        sink.flush();
                    }
                    buf.drain(..at);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if last_rx.elapsed() > SILENCE {
                        return synced;
                    }
                }
                Err(_) => return synced,
            }
        }
        synced
    }

    /// Brings `actual` (what Redis has) in line with the wanted keys now ([`Interests::sync`]):
    /// commands into `out`; when the next lingering key is due.
    fn sync(&self, actual: &mut Subscribed, out: &mut Vec<u8>) -> Option<Instant> {
        let next = self
            .interest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sync(actual, out, Instant::now(), self.cfg.linger);
        self.stats
            .subscriptions
            .store(actual.len() as u64, Ordering::Relaxed);
        next
    }

    /// One push from Redis: a message is delivered once, however many of our subscriptions
    /// match its channel (Redis sends one `message` for the channel and one `pmessage` per
    /// matching pattern): the exact subscription wins, else the first matching pattern in order.
    /// Whether it delivered something.
    fn on_push(&self, v: Value, actual: &Subscribed, sink: &dyn Sink) -> bool {
        let mut items = match v {
            Value::Array(Some(items)) => items,
            Value::Error(e) => {
                // A SUBSCRIBE refused (an ACL user without the channel: NOPERM): logged once
                // per reason; the channel stays without messages from Redis.
                self.refused(&e);
                return false;
            }
            _ => return false,
        };
        let (at, via) = match (items.first().and_then(Value::bytes), items.len()) {
            (Some(b"message"), 3) => (1, None),
            (Some(b"pmessage"), 4) => (2, Some(1)),
            (Some(b"pong"), 2) => {
                // A barrier's marker: everything before it has been delivered.
                if let Some(n) = items[1]
                    .bytes()
                    .and_then(|b| b.strip_prefix(BARRIER.as_bytes()))
                    .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u64>().ok())
                {
                    self.barrier_passed.fetch_max(n, Ordering::SeqCst);
                }
                return false;
            }
            // Subscription confirmations and PING replies.
            _ => return false,
        };
        // The payload is moved out of the reply, not copied.
        let payload = match &mut items[at + 1] {
            Value::Bulk(Some(p)) => std::mem::take(p),
            _ => return false,
        };
        let Some((id, skip)) = split_id(&payload) else {
            // Published on Redis by something else than an edgecomet process: it has no id.
            self.stats.foreign.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        let Some(Ok(channel)) = items[at].bytes().map(std::str::from_utf8) else {
            return false;
        };
        if let Some(via) = via {
            let Some(pattern) = items[via].bytes() else {
                return false;
            };
            if actual.channels.contains(channel) {
                return false;
            }
            let first = actual.patterns.iter().find(|p| covers(p, channel));
            if first.is_none_or(|p| p.as_bytes() != pattern) {
                return false;
            }
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        sink.deliver(channel, id, Bytes::from(payload).slice(skip..));
        true
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.cfg.url)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_publish_queue_is_bounded_in_bytes() {
        let (b, rx) = Broker::new(BrokerConfig {
            url: BrokerUrl::parse("redis://127.0.0.1:1").unwrap(),
            tls: None,
            linger: Duration::ZERO,
            max_message: 1024,
            max_queued_bytes: 10,
            id_ttl_ms: 0,
            reply_timeout: Duration::ZERO,
        });
        let ch: Arc<str> = Arc::from("c");
        assert_eq!(
            b.publish(ch.clone(), Bytes::from_static(b"123456"), None),
            Err(PublishError::Down),
            "refused while not connected"
        );
        b.pub_up.store(true, Ordering::Relaxed);
        b.sub_up.store(true, Ordering::Relaxed);
        assert_eq!(
            b.publish(ch.clone(), Bytes::from_static(b"123456"), None),
            Ok(())
        );
        assert_eq!(
            b.publish(ch.clone(), Bytes::from_static(b"123456"), None),
            Err(PublishError::Busy),
            "12 bytes would wait: over 10"
        );
        assert_eq!(b.stats.publish_refused.load(Ordering::Relaxed), 2);
        // The publisher takes one: room again.
        let (_, payload, _) = rx.try_recv().unwrap();
        b.dequeued(&payload);
        assert_eq!(
            b.publish(ch, Bytes::from_static(b"1234567890"), None),
            Ok(())
        );
        assert!(rx.try_recv().is_ok());
    }

    /// Records what the subscriber hands over.
    #[derive(Default)]
    struct Got(Mutex<Vec<(String, Vec<u8>)>>);

    impl Sink for Got {
        fn deliver(&self, channel: &str, id: u64, payload: Bytes) {
            let mut m = id.to_string().into_bytes();
            m.push(b':');
            m.extend_from_slice(&payload);
            self.0.lock().unwrap().push((channel.into(), m));
        }
        fn flush(&self) {}
        fn ack(&self, _: AckTo, _: Option<u64>) {}
        fn wake(&self, _: u32) {}
    }

    fn broker(linger: Duration) -> Arc<Broker> {
        Broker::new(BrokerConfig {
            url: BrokerUrl::parse("redis://127.0.0.1:1").unwrap(),
            tls: None,
            linger,
            max_message: 1024,
            max_queued_bytes: 1024,
            id_ttl_ms: 0,
            reply_timeout: Duration::ZERO,
        })
        .0
    }

    fn push(items: &[&[u8]]) -> Value {
        Value::Array(Some(
            items
                .iter()
                .map(|i| Value::Bulk(Some(i.to_vec())))
                .collect(),
        ))
    }

    #[test]
    fn a_message_matching_several_subscriptions_is_delivered_once() {
        let b = broker(Duration::ZERO);
        let mut actual = Subscribed::default();
        for k in [
            Key::Channel("x/1".into()),
            Key::Pattern("x/*".into()),
            Key::Pattern("*".into()),
        ] {
            actual.insert(k);
        }
        let got = Got::default();
        // The channel's own message wins; the patterns' copies are dropped.
        assert!(b.on_push(push(&[b"message", b"x/1", b"7:m1"]), &actual, &got));
        assert!(!b.on_push(push(&[b"pmessage", b"x/*", b"x/1", b"7:m1"]), &actual, &got));
        assert!(!b.on_push(push(&[b"pmessage", b"*", b"x/1", b"7:m1"]), &actual, &got));
        // No channel subscription: the first pattern in order ("*" < "x/*") delivers.
        assert!(b.on_push(push(&[b"pmessage", b"*", b"x/2", b"8:m2"]), &actual, &got));
        assert!(!b.on_push(push(&[b"pmessage", b"x/*", b"x/2", b"8:m2"]), &actual, &got));
        // Confirmations and PING replies are not messages; neither is a message without an id
        // (published on Redis by something else), counted.
        assert!(!b.on_push(push(&[b"subscribe", b"x/1"]), &actual, &got));
        assert!(!b.on_push(push(&[b"message", b"x/1", b"no id"]), &actual, &got));
        assert_eq!(b.stats.foreign.load(Ordering::Relaxed), 1);
        assert_eq!(
            *got.0.lock().unwrap(),
            vec![
                ("x/1".into(), b"7:m1".to_vec()),
                ("x/2".into(), b"8:m2".to_vec())
            ]
        );
        assert_eq!(b.stats.received.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn ids_are_split_from_payloads() {
        assert_eq!(
            split_id(b"1795000000000007:hello"),
            Some((1795000000000007, 17))
        );
        assert_eq!(split_id(b"0:"), Some((0, 2)));
        assert_eq!(split_id(b"12:a:b"), Some((12, 3)));
        for bad in [
            &b""[..],
            b":x",
            b"x:1",
            b"12",
            b"1 2:x",
            b"99999999999999999999:x",
            b"123456789012345678901:x",
        ] {
            assert_eq!(split_id(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
