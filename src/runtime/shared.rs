//! What the workers of one process share: their inboxes and statistics, the hub (ids, history,
//! sessions), the Bayeux store, the broker link, the shutdown state — and the one path by which
//! a message enters the process ([`Shared::enter`]), for a local publish and a broker message
//! alike.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::auth::{Auth, push};
use crate::broker::{Broker, BrokerStats};
use crate::pubsub::hub::{Hub, HubStats, Message, Now, Refused};
use crate::runtime::mailbox::{Mail, Mailbox};
use crate::session::bayeux::BayeuxStats;
use crate::session::bayeux::Waiter;
use crate::session::bayeux::store::Clients;
use crate::stats::{self, WorkerStats};

/// State shared by all workers of one server.
#[derive(Debug)]
pub struct Shared {
    pub mailboxes: Vec<Mailbox>,
    pub stats: Vec<Arc<WorkerStats>>,
    /// Open connections over all workers (checked against `--max-connections` at accept).
    pub conns: AtomicUsize,
    /// Socket.IO sessions over all workers (checked against `--socketio-max-sessions` at the
    /// handshake).
    pub sio_sessions: AtomicUsize,
    /// Message ids, history and long-poll sessions of every channel.
    pub hub: Hub,
    /// Bayeux clients: subscriptions, queues, held connects.
    pub bayeux: Clients,
    /// The Redis link (`--broker`), set once at start.
    pub broker: OnceLock<Arc<Broker>>,
    /// Under the launcher (`--processes`): the sums over all its processes, as the launcher last
    /// sent them (`"processes"` in `/stats`).
    pub processes: Mutex<Option<String>>,
    /// A shutdown has begun: no publish is accepted any more (503, counted in
    /// `refused_draining`); see `Server::begin_shutdown`.
    pub draining: AtomicBool,
    /// Workers that have confirmed `draining` (`Mail::Quiesce`).
    pub quiesced: AtomicUsize,
    /// Workers with their listeners registered (counted in when the worker is made, out when it
    /// stops accepting): `/readyz` wants all of them.
    pub listening: AtomicUsize,
    /// When the process started: the hub's and the Bayeux store's seconds count from here.
    pub start: Instant,
    /// `--tls-listen`: the certificate new handshakes use (replaced on SIGHUP).
    pub tls: Option<Arc<crate::tls::Certs>>,
    /// The publish and token keys (read again on SIGHUP); `None` when no flag names a key: the
    /// server is open and no request takes the authorization path.
    pub auth: Option<RwLock<Arc<Auth>>>,
    /// The per-source rate limit of sends to private push addresses.
    pub push_limit: Mutex<push::Limiter>,
    /// What lost Socket.IO sessions left for their clients' recovery (`--socketio-recovery`).
    pub sio_recovery: Mutex<crate::session::socketio::recovery::Records>,
}

impl Shared {
    /// The time for the hub: seconds since [`Shared::start`] and the wall clock (the one place
    /// the process's shared state reads the clocks).
    pub fn now(&self) -> Now {
        let since = self.start.elapsed();
        Now {
            secs: since.as_secs() as u32,
            unix_micros: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_micros() as u64),
            micros: since.as_micros() as u64,
        }
    }

    /// Microseconds since [`Shared::start`] (as `Now::micros`): the end of a fan-out, for the
    /// publish-to-write histogram.
    pub fn micros(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The keys in effect, when any is configured.
    pub fn auth(&self) -> Option<Arc<Auth>> {
        self.auth
            .as_ref()
            .map(|a| a.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// SIGHUP: the key files are read again; on an error the old keys stay. What happened, for
    /// the log (`None`: no key is configured).
    pub fn reload_auth(&self, cfg: &crate::Config) -> Option<String> {
        let slot = self.auth.as_ref()?;
        Some(match Auth::load(&crate::auth::Sources::of(cfg)) {
            Ok(a) => {
                *slot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(a);
                "publish and token keys reloaded".to_string()
            }
            Err(e) => format!("keys NOT reloaded, the old ones stay in use: {e}"),
        })
    }

    /// Wall-clock seconds since the epoch (token times).
    pub fn unix_secs(&self) -> u64 {
        self.now().unix_micros / 1_000_000
    }

    /// The `/stats` document.
    pub fn stats_json(&self) -> String {
        let workers: Vec<&WorkerStats> = self.stats.iter().map(|s| &**s).collect();
        let processes = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        stats::render_json(&workers, &self.extra_stats(), processes.as_deref())
    }

    /// This process's totals as one line for the launcher ([`stats::render_line`]).
    pub fn stats_line(&self) -> String {
        let workers: Vec<&WorkerStats> = self.stats.iter().map(|s| &**s).collect();
        stats::render_line(&workers, &self.extra_stats())
    }

    /// Whether this process should be sent clients (`/readyz`): every worker listening, no
    /// shutdown begun and, with `--broker`, both connections to Redis up. `Err`: why not, for
    /// the 503's body.
    pub fn readiness(&self) -> Result<(), String> {
        if self.draining.load(Ordering::Relaxed) {
            return Err("draining: a shutdown has begun".into());
        }
        let (up, n) = (self.listening.load(Ordering::Relaxed), self.mailboxes.len());
        if up < n {
            return Err(format!("{up} of {n} workers listening"));
        }
        if let Some(b) = self.broker.get()
            && b.stats.connected.load(Ordering::Relaxed) == 0
        {
            return Err(
                "broker not connected: Redis is unreachable (publishes are refused)".into(),
            );
        }
        Ok(())
    }

    /// Process-wide values for `/stats` (`"hub"`): history, sessions, Bayeux clients, the
    /// process's memory.
    pub fn extra_stats(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.hub.stats.snapshot();
        v.extend(self.bayeux.stats.snapshot());
        if let Some(b) = self.broker.get() {
            v.extend(b.stats.snapshot());
        }
        if let Some(t) = &self.tls {
            v.push((TLS_META[0].name, t.reloads.load(Ordering::Relaxed)));
            v.push((TLS_META[1].name, t.reload_errors.load(Ordering::Relaxed)));
        }
        let (rss, pss) = stats::process_memory();
        v.push(("memory_rss_bytes", rss));
        v.push(("memory_pss_bytes", pss));
        v
    }

    /// Name and doc of every value of [`Shared::extra_stats`] (`/metrics`' help and type).
    pub fn extra_meta() -> impl Iterator<Item = &'static stats::Meta> {
        HubStats::META
            .iter()
            .chain(BayeuxStats::META)
            .chain(BrokerStats::META)
            .chain(TLS_META)
    }

    /// A message enters the process — the one path for a local publish and a message from the
    /// broker. Under the channel's lock (hub shard): the hub gives it its id (`given`: the id
    /// Redis gave it with `--broker`; a repeat is `Ok(None)`, see [`Hub::publish_at`]) and
    /// records it (history, `Client-Id` sessions); `here` is called (the publishing worker
    /// records its own subscribers' fan-out); it is posted to the inbox of every other worker
    /// that watches the channel ([`Hub::watch`](crate::pubsub::hub::Hub::watch))
    /// (`from`: the publishing worker, which gets no mail; `posted(i)` is told which inboxes took
    /// it, to wake them once per turn); and it is queued for every matching Bayeux client.
    /// Posting under the lock is what makes every worker see one channel's messages in id order.
    /// Lock order: hub shard, then the Bayeux store; never the other way.
    pub fn enter(
        &self,
        channel: &str,
        given: Option<u64>,
        payload: Bytes,
        from: Option<usize>,
        here: impl FnOnce(&Arc<Message>),
        mut posted: impl FnMut(usize),
    ) -> Result<Option<Entered>, Refused> {
        let mut refused = 0;
        let mut woken = Vec::new();
        let msg = self
            .hub
            .publish_at(channel, given, payload, self.now(), |msg, watchers| {
                here(msg);
                let one = self.mailboxes.len() == 1;
                for (i, mb) in self.mailboxes.iter().enumerate() {
                    // A worker with no subscriber of the channel gets nothing. (A lone worker
                    // watches nothing: it gets every message from the broker.)
                    if Some(i) == from || !(one || watchers.contains(i)) {
                        continue;
                    }
                    if mb.post(Mail::Publish(msg.clone())).is_ok() {
                        posted(i);
                    } else {
                        refused += 1;
                    }
                }
                woken = self.bayeux.deliver(&msg.channel, || msg.bayeux().clone());
            })?;
        Ok(msg.map(|msg| Entered {
            msg,
            refused,
            woken,
        }))
    }

    /// A message from the broker enters the process ([`Shared::enter`], with the id Redis gave
    /// it: the same in every process), from outside any worker. Nobody is woken here: the
    /// broker wakes every worker once per batch it read (`broker::Sink::flush`). A full inbox
    /// drops it for that worker's live subscribers, counted in `broker_inbox_drops` (it is in
    /// the history).
    pub fn deliver_from_broker(&self, channel: &str, id: u64, payload: Bytes) {
        if !crate::pubsub::valid_channel(channel, usize::MAX)
            || std::str::from_utf8(&payload).is_err()
        {
            // Not something an edgecomet process publishes: left alone.
            return;
        }
        let refused = match self.enter(channel, Some(id), payload, None, |_| {}, |_| {}) {
            Ok(None) => 0,
            Ok(Some(e)) => {
                for w in e.woken {
                    if let Some(mb) = self.mailboxes.get(w.worker as usize) {
                        // A full inbox: the held connect ends at its timeout, with what is
                        // queued.
                        let _ = mb.post(Mail::BayeuxWake {
                            idx: w.idx,
                            generation: w.generation,
                        });
                    }
                }
                e.refused
            }
            Err(_) => self.mailboxes.len() as u64,
        };
        if refused > 0
            && let Some(b) = self.broker.get()
        {
            b.stats.inbox_drops.fetch_add(refused, Ordering::Relaxed);
        }
    }
}

/// The certificate reload counts of `--tls-listen` (kept in `tls::Certs`).
const TLS_META: &[stats::Meta] = &[
    stats::Meta {
        name: "tls_reloads",
        doc: " Certificate reloads (SIGHUP) that took effect.",
    },
    stats::Meta {
        name: "tls_reload_errors",
        doc: " Certificate reloads (SIGHUP) refused: a file did not load; the old chain stays.",
    },
];

/// A message that entered the process ([`Shared::enter`]).
#[derive(Debug)]
pub struct Entered {
    pub msg: Arc<Message>,
    /// Inboxes that were full: those workers' live subscribers miss it (it is in the history).
    pub refused: u64,
    /// Held Bayeux connects that now have something to deliver.
    pub woken: Vec<Waiter>,
}
