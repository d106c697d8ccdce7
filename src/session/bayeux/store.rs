//! Bayeux clients, shared by all workers: who is subscribed to what, what waits for each
//! client between its `/meta/connect`s, which connection holds its connect, and when an idle
//! client expires. Sans-IO: it hands out message bytes and "wake this connection" tokens; the
//! workers do the writing.
//!
//! Requests of one client may arrive on any connection and so on any worker (long-polling uses
//! two connections), hence one store behind a mutex rather than per-worker state. A publish
//! reaches it from the hub's deliver step (still under the channel lock, so each client's queue
//! is in id order); the delivery JSON is built once per publish and shared by every queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;

use crate::proto::bayeux::{Pattern, pattern};

/// A connection holding a client's `/meta/connect`: worker, slot, generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter {
    pub worker: u32,
    pub idx: u32,
    pub generation: u32,
}

/// Limits (from the flags).
#[derive(Debug, Clone)]
pub struct BayeuxLimits {
    /// Messages queued per client between connects; beyond, the oldest are dropped (counted,
    /// and the next connect reply says how many in `ext.dropped`).
    pub max_queue: usize,
    /// Seconds a client lives without a connect (`maxInterval`).
    pub max_interval: u32,
    /// Most clients at once.
    pub max_clients: usize,
    /// Longest channel name.
    pub max_channel_len: usize,
    /// Allow subscribing to `/*` and `/**`.
    pub root_wildcards: bool,
    /// Subscriptions one client may hold.
    pub max_subscriptions: usize,
}

/// Gauges and counters for `/stats`.
#[derive(Debug, Default)]
pub struct BayeuxStats {
    pub clients: AtomicU64,
    pub subscriptions: AtomicU64,
    pub queued: AtomicU64,
    /// Messages sent to ack-extension clients and not acknowledged yet.
    pub unacked: AtomicU64,
    pub dropped: AtomicU64,
    /// Requests refused because their `BAYEUX_BROWSER` cookie did not match the session's.
    pub wrong_browser: AtomicU64,
    pub expired: AtomicU64,
}

impl BayeuxStats {
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("bayeux_clients", l(&self.clients)),
            ("bayeux_subscriptions", l(&self.subscriptions)),
            ("bayeux_queued", l(&self.queued)),
            ("bayeux_unacked", l(&self.unacked)),
            ("bayeux_dropped", l(&self.dropped)),
            ("bayeux_wrong_browser", l(&self.wrong_browser)),
            ("bayeux_expired", l(&self.expired)),
        ]
    }
}

/// A client id: 128 random bits, written as 32 hex digits on the wire. Kept as a number, so
/// the client table and the subscription index hold 16 bytes per entry and no string.
type Id = u128;

/// The id written as `id` (32 hex digits, either case); `None` for anything else, which can
/// name no client.
pub fn parse_id(id: &str) -> Option<Id> {
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(id, 16).ok())
        .flatten()
}

/// A `BAYEUX_BROWSER` cookie value as stored: 32 hex digits, not zero.
fn browser_of(cookie: Option<&str>) -> Option<[u64; 2]> {
    let id = cookie.and_then(parse_id).filter(|&id| id != 0)?;
    Some([(id >> 64) as u64, id as u64])
}

/// The ack extension's state of a client (boxed: most clients do not use it).
#[derive(Debug, Default)]
struct Ack {
    /// Number of the last batch sent.
    batch: u64,
    /// Messages sent and not acknowledged, with their batch numbers, oldest first.
    unacked: VecDeque<(u64, Bytes)>,
}

#[derive(Debug, Default)]
struct Client {
    subs: Vec<Box<str>>,
    queue: VecDeque<Bytes>,
    /// Messages dropped from the queue since the last connect reply.
    dropped: u32,
    last_seen: u32,
    waiter: Option<Waiter>,
    /// The ack extension is on: every connect reply is a numbered batch, kept until a connect
    /// acknowledges it.
    ack: Option<Box<Ack>>,
    /// The `BAYEUX_BROWSER` cookie the session was handshaken with, as two halves (so the
    /// record keeps 8-byte alignment); zero: none.
    browser: [u64; 2],
    /// A request has come back with that cookie: from now on requests must carry it.
    bound: bool,
}

/// What a connect reply carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Out {
    /// Deliveries, in order: unacknowledged batches first (ack extension), then the queue.
    pub msgs: Vec<Bytes>,
    /// Messages dropped since the last connect reply.
    pub dropped: u64,
    /// The batch number of this reply (ack extension on).
    pub batch: Option<u64>,
}

impl Client {
    /// Empties the queue into a connect reply. With the ack extension the reply is a new batch:
    /// what earlier batches left unacknowledged goes again, first, and the queue joins them.
    fn drain(&mut self, stats: &BayeuxStats) -> Out {
        let queued = self.queue.len() as u64;
        stats.queued.fetch_sub(queued, Ordering::Relaxed);
        let dropped = u64::from(std::mem::take(&mut self.dropped));
        let Some(ack) = self.ack.as_deref_mut() else {
            return Out {
                msgs: self.queue.drain(..).collect(),
                dropped,
                batch: None,
            };
        };
        ack.batch += 1;
        let mut msgs: Vec<Bytes> = Vec::with_capacity(ack.unacked.len() + self.queue.len());
        msgs.extend(ack.unacked.iter().map(|(_, m)| m.clone()));
        for m in self.queue.drain(..) {
            msgs.push(m.clone());
            ack.unacked.push_back((ack.batch, m));
        }
        stats.unacked.fetch_add(queued, Ordering::Relaxed);
        Out {
            msgs,
            dropped,
            batch: Some(ack.batch),
        }
    }

    fn unacked(&self) -> usize {
        self.ack.as_ref().map_or(0, |a| a.unacked.len())
    }

    /// A connect acknowledged every batch up to `n`: those are delivered.
    fn acknowledge(&mut self, n: i64, stats: &BayeuxStats) {
        let Some(ack) = self.ack.as_deref_mut() else {
            return;
        };
        let mut freed = 0;
        while ack.unacked.front().is_some_and(|(b, _)| (*b as i64) <= n) {
            ack.unacked.pop_front();
            freed += 1;
        }
        stats.unacked.fetch_sub(freed, Ordering::Relaxed);
    }

    /// Whether a connect has something to answer with at once.
    fn has_output(&self) -> bool {
        !self.queue.is_empty() || self.unacked() > 0 || self.dropped > 0
    }
}

#[derive(Debug, Default)]
struct Inner {
    clients: HashMap<Id, Client>,
    /// Subscription (as written: `/a`, `/a/*`, `/a/**`) → subscribed clients.
    subs: HashMap<Box<str>, HashSet<Id>>,
}

/// Why a request about a client was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such client (never handshaken, disconnected or expired): `402::Unknown client`.
    UnknownClient,
    /// `--bayeux-max-clients` reached.
    TooManyClients,
    /// Not a valid subscription.
    BadChannel,
    /// `/meta/**`, or `/*` / `/**` without the flag.
    Forbidden,
    /// The client holds `--bayeux-max-subscriptions` already.
    TooManySubscriptions,
    /// The request's `BAYEUX_BROWSER` cookie is not the session's (or is missing once the
    /// session is bound to one): answered as an unknown client.
    WrongBrowser,
}

/// What a `/meta/connect` gets.
#[derive(Debug)]
pub enum Connect {
    /// Answer now with this.
    Now(Out),
    /// Held by the given waiter; a previous waiter of the same client (to be released) if any.
    Held(Option<Waiter>),
}

/// See the module documentation.
#[derive(Debug)]
pub struct Clients {
    inner: Mutex<Inner>,
    limits: BayeuxLimits,
    /// Subscriptions over all clients: a publish skips the lock while it is zero.
    nsubs: AtomicUsize,
    start: Instant,
    pub stats: BayeuxStats,
    /// `--broker`: told when a subscription (channel or wildcard) gets its first client and
    /// loses its last.
    broker: std::sync::OnceLock<Arc<crate::broker::Broker>>,
}

/// 128 random bits from the kernel's CSPRNG, as 32 hex digits.
pub fn random_id() -> String {
    format!("{:032x}", random_u128())
}

fn random_u128() -> u128 {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: getrandom writes at most the given length into the valid buffer.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    u128::from_be_bytes(b)
}

impl Clients {
    pub fn new(limits: BayeuxLimits) -> Clients {
        Clients {
            inner: Mutex::new(Inner::default()),
            limits,
            nsubs: AtomicUsize::new(0),
            start: Instant::now(),
            stats: BayeuxStats::default(),
            broker: std::sync::OnceLock::new(),
        }
    }

    /// Reports subscriptions to `broker` from now on (set once, before any client exists).
    pub fn set_broker(&self, broker: Arc<crate::broker::Broker>) {
        let _ = self.broker.set(broker);
    }

    pub fn limits(&self) -> &BayeuxLimits {
        &self.limits
    }

    fn now(&self) -> u32 {
        self.start.elapsed().as_secs() as u32
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new client: its id (128 random bits, hex). `ack`: the client asked for the ack
    /// extension. `browser`: the `BAYEUX_BROWSER` cookie its requests should carry.
    pub fn handshake(&self, ack: bool, browser: Option<&str>) -> Result<String, Refusal> {
        let mut g = self.lock();
        if g.clients.len() >= self.limits.max_clients {
            return Err(Refusal::TooManyClients);
        }
        let mut id = random_u128();
        while g.clients.contains_key(&id) {
            id = random_u128();
        }
        g.clients.insert(
            id,
            Client {
                last_seen: self.now(),
                ack: ack.then(Box::default),
                browser: browser_of(browser).unwrap_or_default(),
                ..Client::default()
            },
        );
        self.stats.clients.fetch_add(1, Ordering::Relaxed);
        Ok(format!("{id:032x}"))
    }

    pub fn exists(&self, client: &str) -> bool {
        parse_id(client).is_some_and(|id| self.lock().clients.contains_key(&id))
    }

    /// Whether a request with `browser` (its `BAYEUX_BROWSER` cookie) may act for `client`.
    /// The rule: a session handshaken with a cookie is bound to it once a request brings that
    /// cookie back (the client has shown that it carries cookies); from then on a request with
    /// another cookie or none is refused. Before that, and for sessions handshaken without a
    /// cookie (WebSocket clients outside browsers, cross-origin XHR without credentials), the
    /// clientId alone identifies the session; a request with a different cookie is refused
    /// either way.
    pub fn check(&self, client: &str, browser: Option<&str>) -> Result<(), Refusal> {
        let id = parse_id(client).ok_or(Refusal::UnknownClient)?;
        let mut g = self.lock();
        let c = g.clients.get_mut(&id).ok_or(Refusal::UnknownClient)?;
        let have = (c.browser != [0, 0]).then_some(c.browser);
        let ok = match (have, browser_of(browser)) {
            (Some(b), Some(x)) if b == x => {
                c.bound = true;
                true
            }
            (Some(_), Some(_)) => false,
            (Some(_), None) => !c.bound,
            (None, _) => true,
        };
        if ok {
            Ok(())
        } else {
            self.stats.wrong_browser.fetch_add(1, Ordering::Relaxed);
            Err(Refusal::WrongBrowser)
        }
    }

    /// A `/meta/connect`: with the ack extension it first acknowledges batches up to `ack`.
    /// Anything to deliver (queued, unacknowledged, or a drop to report) goes now; with
    /// nothing and `hold`, `waiter` holds the connect (replacing, and returning, an earlier
    /// one).
    pub fn connect(
        &self,
        client: &str,
        hold: Option<Waiter>,
        ack: Option<i64>,
    ) -> Result<Connect, Refusal> {
        let now = self.now();
        let id = parse_id(client).ok_or(Refusal::UnknownClient)?;
        let mut g = self.lock();
        let c = g.clients.get_mut(&id).ok_or(Refusal::UnknownClient)?;
        c.last_seen = now;
        if let Some(n) = ack {
            c.acknowledge(n, &self.stats);
        }
        if c.has_output() || hold.is_none() {
            return Ok(Connect::Now(c.drain(&self.stats)));
        }
        Ok(Connect::Held(std::mem::replace(&mut c.waiter, hold)))
    }

    /// The held connect of `waiter` was woken. `Some(out)`: answer it with `out` (the hold is
    /// over); an empty `out` also when the client is gone or another connect replaced this
    /// one. `None`: still this client's connect and nothing is queued (a wake that an earlier
    /// one already served): keep holding.
    pub fn take(&self, client: &str, waiter: Waiter) -> Option<Out> {
        self.end_hold(client, waiter, false)
    }

    /// The held connect of `waiter` times out: what its reply carries (anything queued since a
    /// wake was sent, and the batch number with the ack extension).
    pub fn finish(&self, client: &str, waiter: Waiter) -> Out {
        self.end_hold(client, waiter, true).unwrap_or_default()
    }

    fn end_hold(&self, client: &str, waiter: Waiter, always: bool) -> Option<Out> {
        let now = self.now();
        let mut g = self.lock();
        let Some(c) = parse_id(client).and_then(|id| g.clients.get_mut(&id)) else {
            return Some(Out::default());
        };
        if c.waiter != Some(waiter) {
            return Some(Out::default());
        }
        if !always && !c.has_output() {
            return None;
        }
        c.waiter = None;
        c.last_seen = now;
        Some(c.drain(&self.stats))
    }

    /// The held connect of `waiter` ended some other way (timeout, connection closed).
    pub fn release(&self, client: &str, waiter: Waiter) {
        let now = self.now();
        let mut g = self.lock();
        if let Some(c) = parse_id(client).and_then(|id| g.clients.get_mut(&id))
            && c.waiter == Some(waiter)
        {
            c.waiter = None;
            c.last_seen = now;
        }
    }

    /// Checks a subscription request: the pattern, and the rules on `/meta` and root wildcards.
    pub fn check_subscription(&self, sub: &str) -> Result<(), Refusal> {
        let p = pattern(sub, self.limits.max_channel_len).ok_or(Refusal::BadChannel)?;
        let prefix = match p {
            Pattern::Exact(c) => c,
            Pattern::Children(p) | Pattern::Descendants(p) => p,
        };
        if prefix == "/meta" || prefix.starts_with("/meta/") {
            return Err(Refusal::Forbidden);
        }
        if prefix.is_empty() && !self.limits.root_wildcards {
            return Err(Refusal::Forbidden);
        }
        Ok(())
    }

    /// Subscribes `client` to every one of `subs`, or to none: the first refused one is
    /// returned with the reason. Subscribing twice is not an error.
    pub fn subscribe_all<'s>(
        &self,
        client: &str,
        subs: &'s [String],
    ) -> Result<(), (Refusal, &'s str)> {
        for s in subs {
            self.check_subscription(s).map_err(|e| (e, s.as_str()))?;
        }
        let id = parse_id(client).ok_or((Refusal::UnknownClient, ""))?;
        let mut g = self.lock();
        let c = g.clients.get(&id).ok_or((Refusal::UnknownClient, ""))?;
        let new = subs
            .iter()
            .filter(|s| !c.subs.iter().any(|x| **x == ***s))
            .count();
        if c.subs.len() + new > self.limits.max_subscriptions {
            let last = subs.last().map_or("", String::as_str);
            return Err((Refusal::TooManySubscriptions, last));
        }
        for s in subs {
            self.add(&mut g, id, s);
        }
        Ok(())
    }

    /// Unsubscribes `client` from each of `subs` (not subscribed: not an error).
    pub fn unsubscribe_all<'s>(
        &self,
        client: &str,
        subs: &'s [String],
    ) -> Result<(), (Refusal, &'s str)> {
        for s in subs {
            self.unsubscribe(client, s).map_err(|e| (e, s.as_str()))?;
        }
        Ok(())
    }

    /// Subscribes `client` to `sub` (checked with [`Clients::check_subscription`], within
    /// `--bayeux-max-subscriptions`); subscribing twice is not an error.
    pub fn subscribe(&self, client: &str, sub: &str) -> Result<(), Refusal> {
        self.subscribe_all(client, &[sub.to_string()])
            .map_err(|(e, _)| e)
    }

    /// Records `sub` for `client` (both checked by the caller, under the lock).
    fn add(&self, g: &mut Inner, client: Id, sub: &str) {
        let Some(c) = g.clients.get_mut(&client) else {
            return;
        };
        if c.subs.iter().any(|s| &**s == sub) {
            return;
        }
        if c.subs.is_empty() {
            // Most clients hold one subscription: no room for four.
            c.subs.reserve_exact(1);
        }
        c.subs.push(Box::from(sub));
        let set = g.subs.entry(Box::from(sub)).or_default();
        if set.is_empty()
            && let Some(b) = self.broker.get()
        {
            b.add(crate::broker::Key::of_bayeux(sub));
        }
        set.insert(client);
        self.nsubs.fetch_add(1, Ordering::Relaxed);
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// Unsubscribes (not subscribed: not an error).
    pub fn unsubscribe(&self, client: &str, sub: &str) -> Result<(), Refusal> {
        let id = parse_id(client).ok_or(Refusal::UnknownClient)?;
        let mut g = self.lock();
        let c = g.clients.get_mut(&id).ok_or(Refusal::UnknownClient)?;
        let Some(i) = c.subs.iter().position(|s| &**s == sub) else {
            return Ok(());
        };
        c.subs.swap_remove(i);
        self.unindex(&mut g, id, sub);
        self.nsubs.fetch_sub(1, Ordering::Relaxed);
        self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    fn unindex(&self, g: &mut Inner, client: Id, sub: &str) {
        if let Some(set) = g.subs.get_mut(sub) {
            set.remove(&client);
            if set.is_empty() {
                g.subs.remove(sub);
                if let Some(b) = self.broker.get() {
                    b.remove(&crate::broker::Key::of_bayeux(sub));
                }
            }
        }
    }

    /// Removes `client` and everything it holds; returns its held connect to release.
    pub fn disconnect(&self, client: &str) -> Result<Option<Waiter>, Refusal> {
        let id = parse_id(client).ok_or(Refusal::UnknownClient)?;
        let mut g = self.lock();
        let c = g.clients.remove(&id).ok_or(Refusal::UnknownClient)?;
        Ok(self.forget(&mut g, id, c))
    }

    fn forget(&self, g: &mut Inner, client: Id, c: Client) -> Option<Waiter> {
        for s in &c.subs {
            self.unindex(g, client, s);
        }
        self.nsubs.fetch_sub(c.subs.len(), Ordering::Relaxed);
        self.stats
            .subscriptions
            .fetch_sub(c.subs.len() as u64, Ordering::Relaxed);
        self.stats
            .queued
            .fetch_sub(c.queue.len() as u64, Ordering::Relaxed);
        self.stats
            .unacked
            .fetch_sub(c.unacked() as u64, Ordering::Relaxed);
        self.stats.clients.fetch_sub(1, Ordering::Relaxed);
        c.waiter
    }

    /// A message on the native channel `native` (`a/b`, the Bayeux `/a/b`): queues
    /// `delivery()` (built at most once, only if someone is subscribed) for every matching
    /// client and returns the held connects to wake. Called under the hub's channel lock, so
    /// queues stay in id order. Without any Bayeux subscription it costs one atomic load.
    pub fn deliver(&self, native: &str, delivery: impl FnOnce() -> Bytes) -> Vec<Waiter> {
        if self.nsubs.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let channel = format!("/{native}");
        let channel = channel.as_str();
        let mut g = self.lock();
        let Inner { clients, subs } = &mut *g;
        // Every subscription that can match: the channel itself, `parent/*`, and `ancestor/**`
        // for each ancestor (the root included).
        let mut keys: Vec<String> = vec![channel.to_string()];
        let mut prefix = channel;
        let mut first = true;
        while let Some(cut) = prefix.rfind('/') {
            prefix = &prefix[..cut];
            if first {
                keys.push(format!("{prefix}/*"));
                first = false;
            }
            keys.push(format!("{prefix}/**"));
        }
        let mut targets: Vec<Id> = Vec::new();
        for k in &keys {
            if let Some(set) = subs.get(k.as_str()) {
                targets.extend(set.iter());
            }
        }
        if targets.is_empty() {
            return Vec::new();
        }
        targets.sort_unstable();
        targets.dedup();
        let bytes = delivery();
        let mut wake = Vec::new();
        for id in targets {
            let Some(c) = clients.get_mut(&id) else {
                continue;
            };
            c.queue.push_back(bytes.clone());
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            // The bound covers what waits for a connect and what waits for an ack.
            if c.queue.len() + c.unacked() > self.limits.max_queue {
                if c.ack
                    .as_deref_mut()
                    .and_then(|a| a.unacked.pop_front())
                    .is_some()
                {
                    self.stats.unacked.fetch_sub(1, Ordering::Relaxed);
                } else {
                    c.queue.pop_front();
                    self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                }
                c.dropped = c.dropped.saturating_add(1);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(w) = c.waiter {
                wake.push(w);
            }
        }
        wake
    }

    /// Expires clients without a held connect whose last connect ended more than
    /// `max_interval` seconds ago, freeing everything they hold. About once a second.
    pub fn sweep(&self) {
        self.sweep_at(self.now());
    }

    fn sweep_at(&self, now: u32) {
        let mut g = self.lock();
        let max = self.limits.max_interval;
        let dead: Vec<Id> = g
            .clients
            .iter()
            .filter(|(_, c)| c.waiter.is_none() && now.saturating_sub(c.last_seen) > max)
            .map(|(k, _)| *k)
            .collect();
        for id in dead {
            if let Some(c) = g.clients.remove(&id) {
                self.forget(&mut g, id, c);
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Clients {
        Clients::new(BayeuxLimits {
            max_queue: 3,
            max_interval: 10,
            max_clients: 4,
            max_channel_len: 255,
            root_wildcards: false,
            max_subscriptions: 3,
        })
    }

    const W: Waiter = Waiter {
        worker: 0,
        idx: 1,
        generation: 1,
    };

    fn msg(s: &'static str) -> impl FnOnce() -> Bytes {
        move || Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_client_record_stays_small() {
        // Kept inline in the client table (which also holds empty buckets): every byte here is
        // paid about twice per client. Measured per parked client: README, Numbers.
        assert_eq!(std::mem::size_of::<Client>(), 112);
    }

    #[test]
    fn ids_parse_only_as_32_hex_digits() {
        assert_eq!(parse_id(B1), Some(0x0123456789abcdef0123456789abcdef));
        assert_eq!(parse_id(&B1.to_uppercase()), parse_id(B1));
        for bad in [
            "",
            "0123",
            "+123456789abcdef0123456789abcdef",
            "g123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        assert_eq!(parse_id(&a).map(|n| format!("{n:032x}")), Some(a.clone()));
        assert!(!c.exists("not an id"));
        assert_eq!(
            c.connect("nope", None, None).err(),
            Some(Refusal::UnknownClient)
        );
    }

    #[test]
    fn ids_are_random_128_bits() {
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        let b = c.handshake(false, None).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(c.exists(&a));
    }

    #[test]
    fn wildcards_route_and_queue_between_connects() {
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        let b = c.handshake(false, None).unwrap();
        c.subscribe(&a, "/x/*").unwrap();
        c.subscribe(&b, "/x/**").unwrap();
        c.subscribe(&b, "/x/y").unwrap();
        assert!(c.deliver("x/y", msg("1")).is_empty());
        c.deliver("x/y/z", msg("2"));
        c.deliver("other", msg("3"));
        let Connect::Now(qa) = c.connect(&a, Some(W), None).unwrap() else {
            panic!()
        };
        assert_eq!(qa.msgs, [Bytes::from_static(b"1")]);
        // b is subscribed twice over for /x/y but gets it once.
        let Connect::Now(qb) = c.connect(&b, Some(W), None).unwrap() else {
            panic!()
        };
        assert_eq!(
            qb.msgs,
            [Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        );
    }

    #[test]
    fn held_connect_is_woken_and_replaced() {
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        c.subscribe(&a, "/x").unwrap();
        assert!(matches!(
            c.connect(&a, Some(W), None),
            Ok(Connect::Held(None))
        ));
        let w2 = Waiter { idx: 2, ..W };
        // A second connect releases the first.
        assert!(matches!(c.connect(&a, Some(w2), None), Ok(Connect::Held(Some(w))) if w == W));
        assert_eq!(c.take(&a, w2), None, "nothing queued: keep holding");
        assert_eq!(c.deliver("x", msg("m")), [w2]);
        assert_eq!(
            c.take(&a, W),
            Some(Out::default()),
            "the replaced waiter ends, empty"
        );
        assert_eq!(c.take(&a, w2).unwrap().msgs, [Bytes::from_static(b"m")]);
        assert_eq!(c.take("gone", w2), Some(Out::default()));
    }

    fn now(c: &Clients, client: &str, ack: i64) -> Out {
        match c.connect(client, Some(W), Some(ack)).unwrap() {
            Connect::Now(out) => out,
            Connect::Held(_) => Out::default(),
        }
    }

    #[test]
    fn ack_batches_are_sent_again_until_acknowledged() {
        let c = clients();
        let a = c.handshake(true, None).unwrap();
        c.subscribe(&a, "/x").unwrap();
        // The first connect (ack 0) is answered at once by the caller; here it is held.
        assert!(matches!(
            c.connect(&a, Some(W), Some(0)),
            Ok(Connect::Held(None))
        ));
        c.deliver("x", msg("1"));
        let b1 = c.take(&a, W).unwrap();
        assert_eq!((b1.msgs.len(), b1.batch), (1, Some(1)));
        // That reply was lost: the client comes back acknowledging batch 0.
        c.deliver("x", msg("2"));
        let b2 = now(&c, &a, 0);
        assert_eq!(
            b2.msgs,
            [Bytes::from_static(b"1"), Bytes::from_static(b"2")]
        );
        assert_eq!(b2.batch, Some(2));
        assert_eq!(c.stats.unacked.load(Ordering::Relaxed), 2);
        // Acknowledged: held again, nothing sent twice.
        assert!(matches!(
            c.connect(&a, Some(W), Some(2)),
            Ok(Connect::Held(_))
        ));
        assert_eq!(c.stats.unacked.load(Ordering::Relaxed), 0);
        // A timed-out hold still numbers its (empty) batch.
        assert_eq!(c.finish(&a, W).batch, Some(3));
        // The bound covers unacknowledged messages too: the oldest go first, counted.
        for _ in 0..5 {
            c.deliver("x", msg("m"));
        }
        let out = now(&c, &a, 3);
        assert_eq!((out.msgs.len(), out.dropped), (3, 2));
        let again = now(&c, &a, 3);
        assert_eq!(
            (again.msgs.len(), again.dropped),
            (3, 0),
            "not acked: sent again"
        );
        c.disconnect(&a).unwrap();
        assert_eq!(c.stats.unacked.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn without_ack_nothing_is_kept() {
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        c.subscribe(&a, "/x").unwrap();
        c.deliver("x", msg("1"));
        let out = now(&c, &a, 0);
        assert_eq!((out.msgs.len(), out.batch), (1, None));
        assert!(matches!(
            c.connect(&a, Some(W), Some(0)),
            Ok(Connect::Held(_))
        ));
    }

    const B1: &str = "0123456789abcdef0123456789abcdef";
    const B2: &str = "ffffffffffffffffffffffffffffffff";

    #[test]
    fn browser_cookie_binds_the_session() {
        let c = clients();
        let a = c.handshake(false, Some(B1)).unwrap();
        // Not bound yet: the clientId alone is enough; another cookie never is.
        assert_eq!(c.check(&a, None), Ok(()));
        assert_eq!(c.check(&a, Some(B2)), Err(Refusal::WrongBrowser));
        // The cookie came back: bound.
        assert_eq!(c.check(&a, Some(B1)), Ok(()));
        assert_eq!(c.check(&a, None), Err(Refusal::WrongBrowser));
        assert_eq!(c.check(&a, Some(B1)), Ok(()));
        assert_eq!(c.stats.wrong_browser.load(Ordering::Relaxed), 2);
        // A session without a cookie: any request with its clientId.
        let n = c.handshake(false, None).unwrap();
        assert_eq!(c.check(&n, Some(B1)), Ok(()));
        assert_eq!(c.check(&n, None), Ok(()));
        assert_eq!(c.check("ghost", None), Err(Refusal::UnknownClient));
    }

    #[test]
    fn queue_is_bounded_and_counts_drops() {
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        c.subscribe(&a, "/x").unwrap();
        for _ in 0..5 {
            c.deliver("x", msg("m"));
        }
        let Connect::Now(q) = c.connect(&a, None, None).unwrap() else {
            panic!()
        };
        assert_eq!((q.msgs.len(), q.dropped), (3, 2));
        assert_eq!(c.stats.dropped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn subscription_rules() {
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        assert_eq!(c.subscribe(&a, "/meta/**"), Err(Refusal::Forbidden));
        assert_eq!(c.subscribe(&a, "/meta/connect"), Err(Refusal::Forbidden));
        assert_eq!(c.subscribe(&a, "/**"), Err(Refusal::Forbidden));
        assert_eq!(c.subscribe(&a, "/*"), Err(Refusal::Forbidden));
        assert_eq!(c.subscribe(&a, "nope"), Err(Refusal::BadChannel));
        assert_eq!(c.subscribe("ghost", "/x"), Err(Refusal::UnknownClient));
        let mut open = clients();
        open.limits.root_wildcards = true;
        let b = open.handshake(false, None).unwrap();
        assert!(open.subscribe(&b, "/**").is_ok());
        assert_eq!(open.deliver("any/thing", msg("m")).len(), 0);
        assert!(matches!(open.connect(&b, None, None), Ok(Connect::Now(q)) if q.msgs.len() == 1));
    }

    #[test]
    fn disconnect_and_expiry_free_everything() {
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        let b = c.handshake(false, None).unwrap();
        c.subscribe(&a, "/x").unwrap();
        c.subscribe(&b, "/x").unwrap();
        c.deliver("x", msg("m"));
        assert_eq!(c.disconnect(&a), Ok(None));
        assert_eq!(c.disconnect(&a), Err(Refusal::UnknownClient));
        // Whole seconds: 10 may be a little less than 10 real seconds, so only 11 expires.
        c.sweep_at(c.now() + 10);
        assert!(c.exists(&b));
        c.sweep_at(c.now() + 11);
        assert!(!c.exists(&b));
        for (k, v) in c.stats.snapshot() {
            if k != "bayeux_expired" && k != "bayeux_dropped" {
                assert_eq!(v, 0, "{k}");
            }
        }
        assert_eq!(c.stats.expired.load(Ordering::Relaxed), 1);
        assert!(c.lock().subs.is_empty());
        // A held connect keeps a client alive.
        let d = c.handshake(false, None).unwrap();
        assert!(matches!(
            c.connect(&d, Some(W), None),
            Ok(Connect::Held(None))
        ));
        c.sweep_at(c.now() + 100);
        assert!(c.exists(&d));
    }

    #[test]
    fn subscriptions_per_client_are_bounded_all_or_nothing() {
        let c = clients();
        let a = c.handshake(false, None).unwrap();
        let subs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        c.subscribe_all(&a, &subs(&["/a", "/b"])).unwrap();
        // Again: not new, no room needed.
        c.subscribe_all(&a, &subs(&["/a", "/b"])).unwrap();
        let two = subs(&["/c", "/d"]);
        assert_eq!(
            c.subscribe_all(&a, &two),
            Err((Refusal::TooManySubscriptions, "/d"))
        );
        assert_eq!(
            c.stats.subscriptions.load(Ordering::Relaxed),
            2,
            "nothing added"
        );
        let bad = subs(&["/e", "/meta/x"]);
        assert_eq!(
            c.subscribe_all(&a, &bad),
            Err((Refusal::Forbidden, "/meta/x"))
        );
        c.subscribe(&a, "/c").unwrap();
    }

    #[test]
    fn client_limit() {
        let c = clients();
        for _ in 0..4 {
            c.handshake(false, None).unwrap();
        }
        assert_eq!(c.handshake(false, None), Err(Refusal::TooManyClients));
    }
}
