//! Bayeux clients, shared by all workers: who is subscribed to what, what waits for each
//! client between its `/meta/connect`s, which connection holds its connect, and when an idle
//! client expires. Sans-IO: the caller passes `now` (seconds on one monotonic clock for every
//! caller) and the random bits of new ids; the store hands out message bytes, "wake this
//! connection" tokens and changes of interest ([`Interest`]). It must never read a clock, draw
//! a random number, touch a socket or call the broker.
//!
//! Requests of one client may arrive on any connection and so on any worker (long-polling uses
//! two connections), hence one store behind a mutex rather than per-worker state. A publish
//! reaches it from the hub's deliver step (still under the channel lock, so each client's queue
//! is in id order; lock order: hub shard, then this store, never the reverse); the delivery
//! JSON is built once per publish, only if some client matches, and shared by every queue.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::client::{Client, Out};
use super::ids::{Id, browser_of, hex, parse_id};
use crate::auth::{Grant, push};
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

crate::stats::counters! {
    /// Gauges and counters for `/stats` and `/metrics`.
    pub struct BayeuxStats {
        /// Gauge: Bayeux clients (handshaken, not yet disconnected or expired).
        clients as "bayeux_clients",
        /// Gauge: Bayeux subscriptions over all clients.
        subscriptions as "bayeux_subscriptions",
        /// Gauge: messages queued for Bayeux clients between connects.
        queued as "bayeux_queued",
        /// Gauge: messages sent to ack-extension clients and not acknowledged yet.
        unacked as "bayeux_unacked",
        /// Messages dropped from full Bayeux client queues (`--bayeux-max-queue`).
        dropped as "bayeux_dropped",
        /// Requests refused because their `BAYEUX_BROWSER` cookie did not match the session's.
        wrong_browser as "bayeux_wrong_browser",
        /// Bayeux clients expired (no connect within `--bayeux-max-interval`).
        expired as "bayeux_expired",
    }
}

/// A subscription (as written: `/a`, `/a/*`, `/a/**`) got its first client in this store, or
/// lost its last: what `--broker` must follow. Reported to the caller's callback while the
/// store is locked, so that the changes of one subscription reach the broker in the order they
/// happened (a "last" overtaking the "first" before it would leave the broker's count wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest<'a> {
    First(&'a str),
    Last(&'a str),
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
    pub stats: BayeuxStats,
}

impl Clients {
    pub fn new(limits: BayeuxLimits) -> Clients {
        Clients {
            inner: Mutex::new(Inner::default()),
            limits,
            nsubs: AtomicUsize::new(0),
            stats: BayeuxStats::default(),
        }
    }

    pub fn limits(&self) -> &BayeuxLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new client at `now`: its id (128 bits from `random`, drawn again while taken; hex).
    /// `ack`: the client asked for the ack extension. `browser`: the `BAYEUX_BROWSER` cookie its
    /// requests should carry.
    pub fn handshake(
        &self,
        now: u32,
        ack: bool,
        browser: Option<&str>,
        grant: Option<Grant>,
        random: &mut dyn FnMut() -> u128,
    ) -> Result<String, Refusal> {
        let mut g = self.lock();
        if g.clients.len() >= self.limits.max_clients {
            return Err(Refusal::TooManyClients);
        }
        let mut id = random();
        while g.clients.contains_key(&id) {
            id = random();
        }
        g.clients.insert(
            id,
            Client {
                last_seen: now,
                ack: ack.then(Box::default),
                browser: browser_of(browser).unwrap_or_default(),
                grant: grant.map(Box::new),
                ..Client::default()
            },
        );
        self.stats.clients.fetch_add(1, Ordering::Relaxed);
        Ok(hex(id))
    }

    /// `f` of the client's token grant (`None`: no such client, or tokens are off).
    pub fn with_grant<R>(&self, client: &str, f: impl FnOnce(Option<&Grant>) -> R) -> R {
        let g = self.lock();
        let c = parse_id(client).and_then(|id| g.clients.get(&id));
        f(c.and_then(|c| c.grant.as_deref()))
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

    /// A `/meta/connect` at `now`: with the ack extension it first acknowledges batches up to
    /// `ack`. Anything to deliver (queued, unacknowledged, or a drop to report) goes now; with
    /// nothing and `hold`, `waiter` holds the connect (replacing, and returning, an earlier
    /// one).
    pub fn connect(
        &self,
        now: u32,
        client: &str,
        hold: Option<Waiter>,
        ack: Option<i64>,
    ) -> Result<Connect, Refusal> {
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
    pub fn take(&self, now: u32, client: &str, waiter: Waiter) -> Option<Out> {
        self.end_hold(now, client, waiter, false)
    }

    /// The held connect of `waiter` times out: what its reply carries (anything queued since a
    /// wake was sent, and the batch number with the ack extension).
    pub fn finish(&self, now: u32, client: &str, waiter: Waiter) -> Out {
        self.end_hold(now, client, waiter, true).unwrap_or_default()
    }

    fn end_hold(&self, now: u32, client: &str, waiter: Waiter, always: bool) -> Option<Out> {
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
    pub fn release(&self, now: u32, client: &str, waiter: Waiter) {
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
    /// returned with the reason. Subscribing twice is not an error. A subscription's first
    /// client goes to `interest`.
    pub fn subscribe_all<'s>(
        &self,
        client: &str,
        subs: &'s [String],
        interest: &mut dyn FnMut(Interest<'_>),
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
            self.add(&mut g, id, s, interest);
        }
        Ok(())
    }

    /// Unsubscribes `client` from each of `subs` (not subscribed: not an error). A
    /// subscription's last client goes to `interest`.
    pub fn unsubscribe_all<'s>(
        &self,
        client: &str,
        subs: &'s [String],
        interest: &mut dyn FnMut(Interest<'_>),
    ) -> Result<(), (Refusal, &'s str)> {
        for s in subs {
            self.unsubscribe(client, s, interest)
                .map_err(|e| (e, s.as_str()))?;
        }
        Ok(())
    }

    /// Subscribes `client` to `sub` (checked with [`Clients::check_subscription`], within
    /// `--bayeux-max-subscriptions`); subscribing twice is not an error.
    pub fn subscribe(
        &self,
        client: &str,
        sub: &str,
        interest: &mut dyn FnMut(Interest<'_>),
    ) -> Result<(), Refusal> {
        self.subscribe_all(client, &[sub.to_string()], interest)
            .map_err(|(e, _)| e)
    }

    /// Records `sub` for `client` (both checked by the caller, under the lock).
    fn add(&self, g: &mut Inner, client: Id, sub: &str, interest: &mut dyn FnMut(Interest<'_>)) {
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
        if set.is_empty() {
            interest(Interest::First(sub));
        }
        set.insert(client);
        self.nsubs.fetch_add(1, Ordering::Relaxed);
        self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
    }

    /// Unsubscribes (not subscribed: not an error).
    pub fn unsubscribe(
        &self,
        client: &str,
        sub: &str,
        interest: &mut dyn FnMut(Interest<'_>),
    ) -> Result<(), Refusal> {
        let id = parse_id(client).ok_or(Refusal::UnknownClient)?;
        let mut g = self.lock();
        let c = g.clients.get_mut(&id).ok_or(Refusal::UnknownClient)?;
        let Some(i) = c.subs.iter().position(|s| &**s == sub) else {
            return Ok(());
        };
        c.subs.swap_remove(i);
        Self::unindex(&mut g, id, sub, interest);
        self.nsubs.fetch_sub(1, Ordering::Relaxed);
        self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    fn unindex(g: &mut Inner, client: Id, sub: &str, interest: &mut dyn FnMut(Interest<'_>)) {
        if let Some(set) = g.subs.get_mut(sub) {
            set.remove(&client);
            if set.is_empty() {
                g.subs.remove(sub);
                interest(Interest::Last(sub));
            }
        }
    }

    /// Removes `client` and everything it holds; returns its held connect to release.
    pub fn disconnect(
        &self,
        client: &str,
        interest: &mut dyn FnMut(Interest<'_>),
    ) -> Result<Option<Waiter>, Refusal> {
        let id = parse_id(client).ok_or(Refusal::UnknownClient)?;
        let mut g = self.lock();
        let c = g.clients.remove(&id).ok_or(Refusal::UnknownClient)?;
        Ok(self.forget(&mut g, id, c, interest))
    }

    fn forget(
        &self,
        g: &mut Inner,
        client: Id,
        c: Client,
        interest: &mut dyn FnMut(Interest<'_>),
    ) -> Option<Waiter> {
        for s in &c.subs {
            Self::unindex(g, client, s, interest);
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
        // A private push channel is matched by its exact name only.
        while let Some(cut) = prefix.rfind('/').filter(|_| !push::is_private(native)) {
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
    /// `max_interval` seconds before `now`, freeing everything they hold (subscriptions that
    /// lose their last client go to `interest`). About once a second.
    pub fn sweep(&self, now: u32, interest: &mut dyn FnMut(Interest<'_>)) {
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
                self.forget(&mut g, id, c, interest);
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
