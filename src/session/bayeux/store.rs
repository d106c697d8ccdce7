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
use hashbrown::HashTable;
use slab::Slab;

use super::client::{Client, Out};
use super::ids::{ClientId, Id, browser_of, halves, hex, parse_id};
use crate::auth::{Grant, push};
use crate::chunks::{CHUNK, Chunked};
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

/// The clients and the subscription index. Sized for hundreds of thousands of idle clients: a
/// client is one fixed-size record in chunks that never move, 5 bytes in the id index, one key
/// in its subscription's set and, for its first subscription, nothing more (`bench/RESULTS.md`,
/// "Bayeux idle cost (issue 20)": a `HashMap<Id, Client>` that doubles cost ~450 B a client).
#[derive(Debug, Default)]
struct Inner {
    /// The client records by slot ([`Chunked`]: growing adds a chunk of 1,024; nothing is
    /// copied and no old table is left to the allocator).
    clients: Chunked<Client>,
    /// Client id → slot in `clients`: only the 4-byte slot per bucket, hashed by the id the
    /// record keeps ([`hash_id`]).
    ids: HashTable<u32>,
    /// Subscriptions (as written: `/a`, `/a/*`, `/a/**`) with the slots of their clients, by the
    /// key clients keep in [`Client::subs`]. One entry per subscription, not per client.
    subs: Slab<Sub>,
    /// Subscription → its key in `subs`.
    sub_keys: HashMap<Box<str>, u32>,
}

/// A subscription and its clients.
#[derive(Debug)]
struct Sub {
    name: Box<str>,
    /// Slots of the subscribed clients.
    clients: HashSet<u32>,
}

/// The id index's hash of a client id: the ids are 128 random bits drawn by us (a request can
/// look one up but never add one), so folding them is enough; the multiply spreads ids that
/// differ in a few bits (the tests' counters) over the buckets.
fn hash_id(id: [u64; 2]) -> u64 {
    let m = u128::from(id[0] ^ id[1].rotate_left(32)) * 0x9e37_79b9_7f4a_7c15;
    (m as u64) ^ ((m >> 64) as u64)
}

impl Inner {
    /// The slot of client `id`.
    fn slot(&self, id: Id) -> Option<usize> {
        let id = halves(id);
        let clients = &self.clients;
        self.ids
            .find(hash_id(id), |&s| clients[s as usize].id == id)
            .map(|&s| s as usize)
    }

    /// The client written as `client` (a string that is no id names no client).
    fn client_mut(&mut self, client: &str) -> Option<&mut Client> {
        let slot = self.slot(parse_id(client)?)?;
        self.clients.get_mut(slot)
    }

    fn client_by_id(&mut self, client: ClientId) -> Option<&mut Client> {
        let slot = self.slot(client.id())?;
        self.clients.get_mut(slot)
    }

    fn insert(&mut self, c: Client) -> usize {
        let id = c.id;
        let slot = self.clients.insert(c);
        let clients = &self.clients;
        self.ids.insert_unique(hash_id(id), slot as u32, |&s| {
            hash_id(clients[s as usize].id)
        });
        slot
    }

    /// Takes the record at `slot` out of the table and the id index.
    fn remove(&mut self, slot: usize) -> Option<Client> {
        let c = self.clients.try_remove(slot)?;
        if let Ok(e) = self.ids.find_entry(hash_id(c.id), |&s| s as usize == slot) {
            e.remove();
        }
        Some(c)
    }
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
        // Slots are `u32`s in the id index and the subscription sets.
        let most = self.limits.max_clients.min(u32::MAX as usize - CHUNK);
        if g.clients.len() >= most {
            return Err(Refusal::TooManyClients);
        }
        // Drawn again while taken, or while its low half is zero (see `ClientId`).
        let mut id = random();
        while g.slot(id).is_some() || id as u64 == 0 {
            id = random();
        }
        g.insert(Client {
            id: halves(id),
            last_seen: now,
            ack: ack.then(Box::default),
            browser: browser_of(browser).unwrap_or_default(),
            grant: grant.map(Box::new),
            ..Client::default()
        });
        self.stats.clients.fetch_add(1, Ordering::Relaxed);
        Ok(hex(id))
    }

    /// `f` of the client's token grant (`None`: no such client, or tokens are off).
    pub fn with_grant<R>(&self, client: &str, f: impl FnOnce(Option<&Grant>) -> R) -> R {
        let mut g = self.lock();
        let c = g.client_mut(client);
        f(c.and_then(|c| c.grant.as_deref()))
    }

    pub fn exists(&self, client: &str) -> bool {
        parse_id(client).is_some_and(|id| self.lock().slot(id).is_some())
    }

    /// Whether a request with `browser` (its `BAYEUX_BROWSER` cookie) may act for `client`.
    /// The rule: a session handshaken with a cookie is bound to it once a request brings that
    /// cookie back (the client has shown that it carries cookies); from then on a request with
    /// another cookie or none is refused. Before that, and for sessions handshaken without a
    /// cookie (WebSocket clients outside browsers, cross-origin XHR without credentials), the
    /// clientId alone identifies the session; a request with a different cookie is refused
    /// either way.
    pub fn check(&self, client: &str, browser: Option<&str>) -> Result<(), Refusal> {
        let mut g = self.lock();
        let c = g.client_mut(client).ok_or(Refusal::UnknownClient)?;
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
        let mut g = self.lock();
        let c = g.client_mut(client).ok_or(Refusal::UnknownClient)?;
        c.last_seen = now;
        if let Some(n) = ack {
            c.acknowledge(n, &self.stats);
        }
        if c.has_output() || hold.is_none() {
            return Ok(Connect::Now(c.drain(&self.stats)));
        }
        Ok(Connect::Held(c.set_waiter(hold)))
    }

    /// The held connect of `waiter` was woken. `Some(out)`: answer it with `out` (the hold is
    /// over); an empty `out` also when the client is gone or another connect replaced this
    /// one. `None`: still this client's connect and nothing is queued (a wake that an earlier
    /// one already served): keep holding.
    pub fn take(&self, now: u32, client: ClientId, waiter: Waiter) -> Option<Out> {
        self.end_hold(now, client, waiter, false)
    }

    /// The held connect of `waiter` times out: what its reply carries (anything queued since a
    /// wake was sent, and the batch number with the ack extension).
    pub fn finish(&self, now: u32, client: ClientId, waiter: Waiter) -> Out {
        self.end_hold(now, client, waiter, true).unwrap_or_default()
    }

    fn end_hold(&self, now: u32, client: ClientId, waiter: Waiter, always: bool) -> Option<Out> {
        let mut g = self.lock();
        let Some(c) = g.client_by_id(client) else {
            return Some(Out::default());
        };
        if c.waiter() != Some(waiter) {
            return Some(Out::default());
        }
        if !always && !c.has_output() {
            return None;
        }
        c.set_waiter(None);
        c.last_seen = now;
        Some(c.drain(&self.stats))
    }

    /// The held connect of `waiter` ended some other way (timeout, connection closed).
    pub fn release(&self, now: u32, client: ClientId, waiter: Waiter) {
        let mut g = self.lock();
        if let Some(c) = g.client_by_id(client)
            && c.waiter() == Some(waiter)
        {
            c.set_waiter(None);
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
        let slot = g.slot(id).ok_or((Refusal::UnknownClient, ""))?;
        let c = &g.clients[slot];
        let new = subs
            .iter()
            .filter(|s| {
                !g.sub_keys
                    .get(s.as_str())
                    .is_some_and(|&k| c.subs.contains(k))
            })
            .count();
        // Subscription keys are `u32`s.
        if c.subs.len() + new > self.limits.max_subscriptions
            || g.subs.len() + new > u32::MAX as usize
        {
            let last = subs.last().map_or("", String::as_str);
            return Err((Refusal::TooManySubscriptions, last));
        }
        for s in subs {
            self.add(&mut g, slot, s, interest);
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

    /// Records `sub` for the client in `slot` (both checked by the caller, under the lock).
    fn add(&self, g: &mut Inner, slot: usize, sub: &str, interest: &mut dyn FnMut(Interest<'_>)) {
        let key = match g.sub_keys.get(sub) {
            Some(&k) => k,
            None => {
                let k = g.subs.insert(Sub {
                    name: Box::from(sub),
                    clients: HashSet::new(),
                });
                // `subscribe_all` keeps the subscriptions within `u32` keys (a slab's keys
                // stay below its largest length).
                let k = u32::try_from(k).expect("subscribe_all bounds the keys");
                g.sub_keys.insert(Box::from(sub), k);
                k
            }
        };
        let Some(c) = g.clients.get_mut(slot) else {
            return;
        };
        if c.subs.contains(key) {
            return;
        }
        c.subs.push(key);
        let set = &mut g.subs[key as usize].clients;
        if set.is_empty() {
            interest(Interest::First(sub));
        }
        set.insert(slot as u32);
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
        let slot = g.slot(id).ok_or(Refusal::UnknownClient)?;
        let Some(&key) = g.sub_keys.get(sub) else {
            return Ok(());
        };
        if !g.clients[slot].subs.remove(key) {
            return Ok(());
        }
        Self::unindex(&mut g, slot, key, interest);
        self.nsubs.fetch_sub(1, Ordering::Relaxed);
        self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the client in `slot` out of subscription `key`; the subscription goes with its
    /// last client.
    fn unindex(g: &mut Inner, slot: usize, key: u32, interest: &mut dyn FnMut(Interest<'_>)) {
        let Some(sub) = g.subs.get_mut(key as usize) else {
            return;
        };
        sub.clients.remove(&(slot as u32));
        if sub.clients.is_empty() {
            let sub = g.subs.remove(key as usize);
            g.sub_keys.remove(&sub.name);
            interest(Interest::Last(&sub.name));
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
        let slot = g.slot(id).ok_or(Refusal::UnknownClient)?;
        let c = g.remove(slot).ok_or(Refusal::UnknownClient)?;
        Ok(self.forget(&mut g, slot, c, interest))
    }

    /// Frees what the client taken out of `slot` held.
    fn forget(
        &self,
        g: &mut Inner,
        slot: usize,
        c: Client,
        interest: &mut dyn FnMut(Interest<'_>),
    ) -> Option<Waiter> {
        for &key in c.subs.as_slice() {
            Self::unindex(g, slot, key, interest);
        }
        self.nsubs.fetch_sub(c.subs.len(), Ordering::Relaxed);
        self.stats
            .subscriptions
            .fetch_sub(c.subs.len() as u64, Ordering::Relaxed);
        self.stats
            .queued
            .fetch_sub(c.queued() as u64, Ordering::Relaxed);
        self.stats
            .unacked
            .fetch_sub(c.unacked() as u64, Ordering::Relaxed);
        self.stats.clients.fetch_sub(1, Ordering::Relaxed);
        c.waiter()
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
        let Inner {
            clients,
            subs,
            sub_keys,
            ..
        } = &mut *g;
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
        let mut targets: Vec<u32> = Vec::new();
        for k in &keys {
            if let Some(sub) = sub_keys.get(k.as_str()).and_then(|&k| subs.get(k as usize)) {
                targets.extend(sub.clients.iter());
            }
        }
        if targets.is_empty() {
            return Vec::new();
        }
        targets.sort_unstable();
        targets.dedup();
        let bytes = delivery();
        let mut wake = Vec::new();
        for slot in targets {
            let Some(c) = clients.get_mut(slot as usize) else {
                continue;
            };
            c.enqueue(bytes.clone());
            self.stats.queued.fetch_add(1, Ordering::Relaxed);
            // The bound covers what waits for a connect and what waits for an ack.
            if c.queued() + c.unacked() > self.limits.max_queue {
                if c.ack
                    .as_deref_mut()
                    .and_then(|a| a.unacked.pop_front())
                    .is_some()
                {
                    self.stats.unacked.fetch_sub(1, Ordering::Relaxed);
                } else if c.drop_oldest() {
                    self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                }
                c.dropped = c.dropped.saturating_add(1);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(w) = c.waiter() {
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
        let dead: Vec<usize> = g
            .clients
            .iter()
            .filter(|(_, c)| c.waiter().is_none() && now.saturating_sub(c.last_seen) > max)
            .map(|(slot, _)| slot)
            .collect();
        for slot in dead {
            if let Some(c) = g.remove(slot) {
                self.forget(&mut g, slot, c, interest);
                self.stats.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests;
