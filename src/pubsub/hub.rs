//! The hub: what all workers share about a channel — message ids, the history ring, and the
//! `Client-Id` sessions of the long-poll transport. Sans-IO: it hands out messages, workers
//! write them.
//!
//! A publish takes the channel's shard lock, gives the message the channel's next id, appends
//! it to the history and to every session queue of the channel, and — still under the lock —
//! calls the caller's `deliver`, which queues it for the local fan-out and posts it to the other
//! workers' inboxes — only those of the workers that watch the channel ([`Hub::watch`]: they have
//! subscribers of it or of a pattern). Holding the lock across the posting is what makes every
//! worker see one channel's messages in id order. Resumes (a cursor, `Last-Event-ID`, a session poll) read
//! under the same lock. Subscriber lists stay per worker ([`super::Channels`]); nothing here is
//! touched on the per-subscriber delivery path.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

pub(crate) use super::message::Wr;
pub use super::message::{BadCursor, Gap, Message, Since, chunked, fits, parse_cursor};

/// The time, as the hub's caller read it: the hub reads no clock, so that its rules are tested
/// by passing the time in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Whole seconds on the process's monotonic clock: message, channel and session ages.
    pub secs: u32,
    /// The wall clock in microseconds since the Unix epoch: a new channel's first id.
    pub unix_micros: u64,
    /// Microseconds on the process's monotonic clock (the same as `secs`): when a message
    /// entered the process ([`Message::entered_us`]).
    pub micros: u64,
}

/// Why the hub refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--max-channels` channels have state.
    Channels,
    /// `--max-sessions` sessions exist.
    Sessions,
    /// No such session (never started, expired or replaced).
    NoSession,
}

/// Limits of the hub (from the flags).
#[derive(Debug, Clone)]
pub struct HubLimits {
    pub history: usize,
    /// Seconds; 0 = no age limit.
    pub history_age: u32,
    pub session_queue: usize,
    pub session_ttl: u32,
    pub max_sessions: usize,
    pub max_channels: usize,
}

crate::stats::counters! {
    /// Hub-wide gauges and counters for `/stats` and `/metrics`.
    pub struct HubStats {
        /// Gauge: channels with state in the hub (history, sessions, remembered ids).
        channel_states,
        /// Gauge: messages kept in channel histories (for resume).
        history_messages,
        /// Gauge: payload bytes kept in channel histories.
        history_bytes,
        /// Gauge: `Client-Id` long-poll sessions.
        sessions,
        /// Gauge: messages waiting in `Client-Id` session queues.
        session_queued,
        /// Messages dropped from full `Client-Id` session queues (`--session-queue`).
        session_drops,
        /// `Client-Id` sessions expired (`--session-ttl` after their last poll).
        sessions_expired,
        /// `--broker`: messages delivered to this process twice by Redis (not delivered again).
        stale as "stale_ids",
        /// `--broker`: messages of a channel this process never received (holes in its ids).
        missed_ids,
    }
}

fn inc(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn dec(a: &AtomicU64, n: u64) {
    a.fetch_sub(n, Ordering::Relaxed);
}

#[derive(Debug)]
struct Session {
    queue: VecDeque<Arc<Message>>,
    gap: Gap,
    /// Hub second the last poll ended (or the session started).
    last_seen: u32,
    /// Polls of this session being held right now.
    polls: u32,
}

#[derive(Debug)]
struct ChanState {
    name: Arc<str>,
    /// First id this state issued.
    base: u64,
    /// Next id to issue.
    next: u64,
    /// No message yet (the state was made by a session or a subscriber): the first id given
    /// from outside (`--broker`) is taken as the base, not as a hole.
    fresh: bool,
    /// [`Hub::link_epoch`] when this state last took a given id: a hole across a new epoch
    /// (the link to Redis was remade: Redis may have restarted and renumbered) has no count.
    epoch: u64,
    /// Hub second of the newest message (or of the state's creation).
    last_at: u32,
    history: VecDeque<Arc<Message>>,
    sessions: HashMap<Box<str>, Session>,
}

impl ChanState {
    fn last(&self) -> u64 {
        self.next - 1
    }

    /// Messages after `cursor` still in the history, and what is missing before them.
    fn since(&self, cursor: u64) -> Since {
        let first = self.history.front().map_or(self.next, |m| m.id);
        let (from, gap) = if cursor == 0 {
            (first, Gap::None)
        } else if cursor + 1 < self.base || cursor > self.last() {
            (first, Gap::Unknown)
        } else if cursor + 1 < first {
            (first, Gap::Missed(first - cursor - 1))
        } else {
            (cursor + 1, Gap::None)
        };
        let skip = (from - first) as usize;
        let msgs: Vec<Arc<Message>> = self.history.iter().skip(skip).cloned().collect();
        let cursor = msgs.last().map_or(
            if gap.is_gap() || cursor == 0 {
                self.last()
            } else {
                cursor
            },
            |m| m.id,
        );
        Since { msgs, gap, cursor }
    }
}

/// Workers of one process, a bit each (`--workers` is at most 256).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workers([u64; 4]);

impl Workers {
    /// Every worker.
    pub const ALL: Workers = Workers([u64::MAX; 4]);

    pub fn insert(&mut self, w: usize) {
        self.0[w / 64 % 4] |= 1 << (w % 64);
    }

    pub fn remove(&mut self, w: usize) {
        self.0[w / 64 % 4] &= !(1 << (w % 64));
    }

    pub fn contains(&self, w: usize) -> bool {
        self.0[w / 64 % 4] & (1 << (w % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    fn union(self, o: Workers) -> Workers {
        Workers(std::array::from_fn(|i| self.0[i] | o.0[i]))
    }
}

/// One shard of the channel table.
#[derive(Debug, Default)]
struct Shard {
    chans: HashMap<Arc<str>, ChanState>,
    /// The workers with subscribers of each channel ([`Hub::watch`]): a publish is posted to
    /// them only. An entry exists while some worker watches the channel.
    watched: HashMap<Arc<str>, Workers>,
}

/// Shards of the channel table: a publish locks one.
const SHARDS: usize = 64;

/// See the module documentation.
#[derive(Debug)]
pub struct Hub {
    limits: HubLimits,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    /// Highest id issued by this process (a new channel state starts above it).
    high_water: AtomicU64,
    /// `--broker`: how many times the link to Redis has been (re)made. Ids before and after a
    /// new link cannot be compared for a count (see `ChanState::epoch`).
    link_epoch: AtomicU64,
    /// Workers with pattern subscribers (`a/*`): every publish is posted to them.
    pattern_workers: [AtomicU64; 4],
    pub stats: HubStats,
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock would be a bug; the data is still consistent enough to
    // serve (every update is a single push/pop), so keep going rather than poison every worker.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(limits: HubLimits) -> Hub {
        Hub {
            limits,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            pattern_workers: Default::default(),
            hasher: RandomState::new(),
            high_water: AtomicU64::new(0),
            link_epoch: AtomicU64::new(0),
            stats: HubStats::default(),
        }
    }

    pub fn limits(&self) -> &HubLimits {
        &self.limits
    }

    /// `--broker`: the subscriber's link to Redis was made again. A hole in a channel's ids
    /// after it is reported without a count (Redis may have restarted and numbered anew).
    pub fn new_link_epoch(&self) {
        self.link_epoch.fetch_add(1, Ordering::Relaxed);
    }

    fn shard(&self, channel: &str) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(channel) as usize;
        &self.shards[h % SHARDS]
    }

    /// The state of `channel`, created if it has none (within `--max-channels`). A new state's
    /// ids start at the current time in microseconds, or above every id issued so far.
    fn state<'s>(
        &self,
        shard: &'s mut HashMap<Arc<str>, ChanState>,
        channel: &str,
        first_id: Option<u64>,
        now: Now,
    ) -> Result<&'s mut ChanState, Refused> {
        if !shard.contains_key(channel) {
            if self.stats.channel_states.load(Ordering::Relaxed) as usize
                >= self.limits.max_channels
            {
                return Err(Refused::Channels);
            }
            let base = first_id.unwrap_or_else(|| {
                now.unix_micros
                    .max(self.high_water.load(Ordering::Relaxed) + 1)
            });
            let name: Arc<str> = Arc::from(channel);
            shard.insert(
                name.clone(),
                ChanState {
                    name,
                    base,
                    next: base,
                    fresh: true,
                    epoch: self.link_epoch.load(Ordering::Relaxed),
                    last_at: now.secs,
                    history: VecDeque::new(),
                    sessions: HashMap::new(),
                },
            );
            inc(&self.stats.channel_states, 1);
        }
        Ok(shard.get_mut(channel).expect("inserted just above"))
    }

    /// Publishes `payload` to `channel`: assigns the id, records it in the history and the
    /// channel's session queues, then calls `deliver` while the channel is still locked.
    pub fn publish(
        &self,
        channel: &str,
        payload: Bytes,
        now: Now,
        deliver: impl FnOnce(&Arc<Message>),
    ) -> Result<Arc<Message>, Refused> {
        self.publish_at(channel, None, payload, now, |m, _| deliver(m))
            .map(|m| m.expect("an id issued here is never stale"))
    }

    /// [`Hub::publish`] with the id given (`--broker`: Redis numbers a channel's messages for
    /// every process). `Ok(None)`: an id at or below one this process has, not delivered again
    /// (counted in `stale`). An id beyond the next expected means this process missed the ones
    /// between (it was not subscribed, or its Redis connection failed): they cannot be
    /// resumed here, so the history restarts at this one, the sessions are told of the gap,
    /// and the message carries it (`gap_before`) to its live subscribers (counted in
    /// `missed_ids`). `deliver` is also told which workers watch the channel (those with
    /// subscribers of it, or of a pattern: [`Hub::watch`]).
    pub fn publish_at(
        &self,
        channel: &str,
        given: Option<u64>,
        payload: Bytes,
        now: Now,
        deliver: impl FnOnce(&Arc<Message>, Workers),
    ) -> Result<Option<Arc<Message>>, Refused> {
        let mut shard = lock(self.shard(channel));
        let st = self.state(&mut shard.chans, channel, given, now)?;
        let name = st.name.clone();
        if st.fresh
            && let Some(id) = given
        {
            st.base = id;
            st.next = id;
        }
        st.fresh = false;
        let id = given.unwrap_or(st.next);
        let epoch = self.link_epoch.load(Ordering::Relaxed);
        let mut gap_before = Gap::None;
        if id < st.next {
            inc(&self.stats.stale, 1);
            return Ok(None);
        }
        if id > st.next {
            gap_before = if st.epoch == epoch {
                inc(&self.stats.missed_ids, id - st.next);
                Gap::Missed(id - st.next)
            } else {
                Gap::Unknown
            };
            for old in st.history.drain(..) {
                dec(&self.stats.history_messages, 1);
                dec(&self.stats.history_bytes, old.payload.len() as u64);
            }
            st.base = id;
            for s in st.sessions.values_mut() {
                s.gap = s.gap.and(gap_before);
            }
        }
        st.epoch = epoch;
        st.next = id + 1;
        st.last_at = now.secs;
        self.high_water.fetch_max(id, Ordering::Relaxed);
        let mut msg = Message::new(id, name, payload, now.secs);
        msg.gap_before = gap_before;
        msg.entered_us = now.micros;
        let msg = Arc::new(msg);
        let len = msg.payload.len() as u64;
        if self.limits.history > 0 {
            st.history.push_back(msg.clone());
            inc(&self.stats.history_messages, 1);
            inc(&self.stats.history_bytes, len);
            while st.history.len() > self.limits.history {
                let old = st.history.pop_front().expect("longer than the limit");
                dec(&self.stats.history_messages, 1);
                dec(&self.stats.history_bytes, old.payload.len() as u64);
            }
        }
        for s in st.sessions.values_mut() {
            s.queue.push_back(msg.clone());
            inc(&self.stats.session_queued, 1);
            if s.queue.len() > self.limits.session_queue {
                s.queue.pop_front();
                s.gap = s.gap.and(Gap::Missed(1));
                dec(&self.stats.session_queued, 1);
                inc(&self.stats.session_drops, 1);
            }
        }
        let watchers = shard.watched.get(channel).copied().unwrap_or_default();
        let patterns = Workers(std::array::from_fn(|i| {
            self.pattern_workers[i].load(Ordering::Relaxed)
        }));
        deliver(&msg, watchers.union(patterns));
        Ok(Some(msg))
    }

    /// Worker `w` has subscribers of `channel` (or is about to read its history for one): from
    /// now on every publish on it is posted to `w`. Called before the history is read, so that
    /// a message is either in what was read or in the worker's inbox (or both: the worker skips
    /// what its subscriber's cursor has).
    pub fn watch(&self, channel: &str, w: usize) {
        let mut shard = lock(self.shard(channel));
        match shard.watched.get_mut(channel) {
            Some(ws) => ws.insert(w),
            None => {
                let mut ws = Workers::default();
                ws.insert(w);
                shard.watched.insert(Arc::from(channel), ws);
            }
        }
    }

    /// Worker `w` has no subscriber of `channel` any more.
    pub fn unwatch(&self, channel: &str, w: usize) {
        let mut shard = lock(self.shard(channel));
        if let Some(ws) = shard.watched.get_mut(channel) {
            ws.remove(w);
            if ws.is_empty() {
                shard.watched.remove(channel);
            }
        }
    }

    /// Worker `w` has pattern subscribers (`on`), or none any more: while it has, every publish
    /// is posted to it.
    pub fn watch_patterns(&self, w: usize, on: bool) {
        let (word, bit) = (&self.pattern_workers[w / 64 % 4], 1u64 << (w % 64));
        if on {
            word.fetch_or(bit, Ordering::SeqCst);
        } else {
            word.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// What `channel` has after `cursor` (see [`Since`]); `None` = no cursor: nothing, and the
    /// cursor of "now".
    pub fn since(&self, channel: &str, cursor: Option<u64>) -> Since {
        let shard = lock(self.shard(channel));
        match (shard.chans.get(channel), cursor) {
            (Some(st), Some(c)) => st.since(c),
            (Some(st), None) => Since {
                cursor: st.last(),
                ..Since::default()
            },
            // No state: nothing was published within --history-age (or ever, or since a
            // restart). A cursor other than 0 may have had successors that are gone.
            (None, Some(c)) if c != 0 => Since {
                gap: Gap::Unknown,
                ..Since::default()
            },
            (None, _) => Since::default(),
        }
    }

    /// Starts (or restarts) the session `client` of `channel`: its queue begins with what is
    /// after `cursor` (nothing without one).
    pub fn session_start(
        &self,
        channel: &str,
        client: &str,
        cursor: Option<u64>,
        now: Now,
    ) -> Result<(), Refused> {
        let mut shard = lock(self.shard(channel));
        let exists = shard
            .chans
            .get(channel)
            .is_some_and(|st| st.sessions.contains_key(client));
        if !exists
            && self.stats.sessions.load(Ordering::Relaxed) as usize >= self.limits.max_sessions
        {
            return Err(Refused::Sessions);
        }
        let st = self.state(&mut shard.chans, channel, None, now)?;
        let since = match cursor {
            Some(c) => st.since(c),
            None => Since::default(),
        };
        let mut queue: VecDeque<Arc<Message>> = since.msgs.into();
        let mut gap = since.gap;
        while queue.len() > self.limits.session_queue {
            queue.pop_front();
            gap = gap.and(Gap::Missed(1));
        }
        inc(&self.stats.session_queued, queue.len() as u64);
        let new = Session {
            queue,
            gap,
            last_seen: now.secs,
            polls: 0,
        };
        if let Some(old) = st.sessions.insert(Box::from(client), new) {
            dec(&self.stats.session_queued, old.queue.len() as u64);
        } else {
            inc(&self.stats.sessions, 1);
        }
        Ok(())
    }

    /// Takes what the session has queued, in order, while the payloads add up to at most
    /// `max_bytes` (always at least one message; `max_bytes` 0 = exactly one). The rest stays
    /// queued for the next poll. The cursor is the last id taken, or the channel's newest id
    /// when nothing was.
    pub fn session_take(
        &self,
        channel: &str,
        client: &str,
        max_bytes: usize,
        now: Now,
    ) -> Result<Since, Refused> {
        let mut shard = lock(self.shard(channel));
        let st = shard.chans.get_mut(channel).ok_or(Refused::NoSession)?;
        let last = st.last();
        let s = st.sessions.get_mut(client).ok_or(Refused::NoSession)?;
        s.last_seen = now.secs;
        let n = fits(s.queue.iter(), max_bytes);
        let msgs: Vec<Arc<Message>> = s.queue.drain(..n).collect();
        dec(&self.stats.session_queued, n as u64);
        let gap = std::mem::take(&mut s.gap);
        let cursor = msgs.last().map_or(last, |m| m.id);
        Ok(Since { msgs, gap, cursor })
    }

    /// A poll of the session is being held (`true`) or has ended (`false`). A session with a
    /// held poll never expires; its TTL runs from the end of the last poll.
    pub fn session_hold(&self, channel: &str, client: &str, held: bool, now: Now) {
        let mut shard = lock(self.shard(channel));
        if let Some(s) = shard
            .chans
            .get_mut(channel)
            .and_then(|st| st.sessions.get_mut(client))
        {
            if held {
                s.polls += 1;
            } else {
                s.polls = s.polls.saturating_sub(1);
            }
            s.last_seen = now.secs;
        }
    }

    /// Ages out history, expires idle sessions, and drops the state of a channel that has no
    /// session and whose newest message is older than `--history-age` (never with 0): until
    /// then its ids are remembered, so that a cursor can be told exactly what it missed even
    /// with `--history 0`. Called about once a second (by one worker).
    pub fn sweep(&self, now: Now) {
        let now = now.secs;
        let age = self.limits.history_age;
        let ttl = self.limits.session_ttl;
        for m in self.shards.iter() {
            let mut shard = lock(m);
            shard.chans.retain(|_, st| {
                if age > 0 {
                    while st
                        .history
                        .front()
                        .is_some_and(|m| now.saturating_sub(m.at) >= age)
                    {
                        let old = st.history.pop_front().expect("checked");
                        dec(&self.stats.history_messages, 1);
                        dec(&self.stats.history_bytes, old.payload.len() as u64);
                    }
                }
                st.sessions.retain(|_, s| {
                    // Whole seconds: a difference of `ttl` may be a little less than `ttl`
                    // real seconds, so a session goes only past it (never early, at most a
                    // second late).
                    let keep = s.polls > 0 || now.saturating_sub(s.last_seen) <= ttl;
                    if !keep {
                        dec(&self.stats.sessions, 1);
                        dec(&self.stats.session_queued, s.queue.len() as u64);
                        inc(&self.stats.sessions_expired, 1);
                    }
                    keep
                });
                let keep = !st.history.is_empty()
                    || !st.sessions.is_empty()
                    || age == 0
                    || now.saturating_sub(st.last_at) <= age;
                if !keep {
                    dec(&self.stats.channel_states, 1);
                }
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests;
