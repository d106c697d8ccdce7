//! One Bayeux client's record in the store: its subscriptions, the deliveries waiting for its
//! next `/meta/connect`, the connection holding its connect, the ack extension's batches, and
//! its `BAYEUX_BROWSER` binding. Plain data and the transitions of a connect reply; the store
//! ([`super::store`]) owns the records, the index and the locking.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::store::{BayeuxStats, Waiter};
use crate::auth::Grant;

/// The ack extension's state of a client (boxed: most clients do not use it).
#[derive(Debug, Default)]
pub(super) struct Ack {
    /// Number of the last batch sent.
    pub(super) batch: u64,
    /// Messages sent and not acknowledged, with their batch numbers, oldest first.
    pub(super) unacked: VecDeque<(u64, Bytes)>,
}

/// One record of the store's client table (kept in fixed chunks, so every byte here is paid once
/// per client slot: `bench/RESULTS.md`, "Bayeux idle cost (issue 20)").
#[derive(Debug)]
pub(super) struct Client {
    /// Its id as two halves ([`super::ids::halves`]: a `u128` would align the record to 16):
    /// the store's id index finds the record by it.
    pub(super) id: [u64; 2],
    /// Its subscriptions, as keys of the store's subscription table.
    pub(super) subs: Subs,
    /// Deliveries waiting for its next connect; `None` while there are none, so that an idle
    /// client keeps no buffer (boxed: 8 bytes here instead of a `VecDeque`'s 32).
    #[allow(clippy::box_collection)] // the point: a thin pointer, not the 32-byte header
    pub(super) queue: Option<Box<VecDeque<Bytes>>>,
    /// Messages dropped from the queue since the last connect reply.
    pub(super) dropped: u32,
    /// When its last connect arrived or ended, in the caller's seconds (expiry).
    pub(super) last_seen: u32,
    /// The connection holding its connect, or [`NO_WAITER`] (an `Option` would take 4 bytes
    /// more, and the record 8 with its alignment): see [`Client::waiter`].
    pub(super) held: Waiter,
    /// The ack extension is on: every connect reply is a numbered batch, kept until a connect
    /// acknowledges it.
    pub(super) ack: Option<Box<Ack>>,
    /// The `BAYEUX_BROWSER` cookie the session was handshaken with, as two halves (so the
    /// record keeps 8-byte alignment); zero: none.
    pub(super) browser: [u64; 2],
    /// A request has come back with that cookie: from now on requests must carry it.
    pub(super) bound: bool,
    /// With subscribe tokens: what the handshake's token allows, and when it ends (boxed: a
    /// pointer when tokens are off).
    pub(super) grant: Option<Box<Grant>>,
}

/// A client's subscriptions, as keys of the store's subscription table (at most
/// `--bayeux-max-subscriptions`). Most clients hold one: it is kept inline, with no allocation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) enum Subs {
    #[default]
    None,
    One(u32),
    /// Two or more (a thin box: the enum stays 16 bytes).
    #[allow(clippy::box_collection)]
    Many(Box<Vec<u32>>),
}

impl Subs {
    pub(super) fn as_slice(&self) -> &[u32] {
        match self {
            Subs::None => &[],
            Subs::One(k) => std::slice::from_ref(k),
            Subs::Many(ks) => ks,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub(super) fn contains(&self, key: u32) -> bool {
        self.as_slice().contains(&key)
    }

    /// Adds `key` (the caller has checked that it is not there).
    pub(super) fn push(&mut self, key: u32) {
        *self = match std::mem::take(self) {
            Subs::None => Subs::One(key),
            Subs::One(k) => Subs::Many(Box::new(vec![k, key])),
            Subs::Many(mut ks) => {
                ks.push(key);
                Subs::Many(ks)
            }
        };
    }

    /// Removes `key`; whether it was there.
    pub(super) fn remove(&mut self, key: u32) -> bool {
        if !self.contains(key) {
            return false;
        }
        let rest: Vec<u32> = self
            .as_slice()
            .iter()
            .copied()
            .filter(|&k| k != key)
            .collect();
        *self = match rest[..] {
            [] => Subs::None,
            [k] => Subs::One(k),
            _ => Subs::Many(Box::new(rest)),
        };
        true
    }
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

/// [`Client::held`] of a client whose connect is not held: no worker has this index.
pub(super) const NO_WAITER: Waiter = Waiter {
    worker: u32::MAX,
    idx: u32::MAX,
    generation: u32::MAX,
};

impl Default for Client {
    fn default() -> Self {
        Client {
            id: [0; 2],
            subs: Subs::None,
            queue: None,
            dropped: 0,
            last_seen: 0,
            held: NO_WAITER,
            ack: None,
            browser: [0; 2],
            bound: false,
            grant: None,
        }
    }
}

impl Client {
    /// The connection holding its connect, if one does.
    pub(super) fn waiter(&self) -> Option<Waiter> {
        (self.held != NO_WAITER).then_some(self.held)
    }

    /// Sets (or with `None` clears) the connection holding its connect; the previous one.
    pub(super) fn set_waiter(&mut self, w: Option<Waiter>) -> Option<Waiter> {
        let previous = self.waiter();
        self.held = w.unwrap_or(NO_WAITER);
        previous
    }

    /// Empties the queue into a connect reply. With the ack extension the reply is a new batch:
    /// what earlier batches left unacknowledged goes again, first, and the queue joins them.
    pub(super) fn drain(&mut self, stats: &BayeuxStats) -> Out {
        let queue: Vec<Bytes> = self.queue.take().map_or_else(Vec::new, |q| Vec::from(*q));
        let queued = queue.len() as u64;
        stats.queued.fetch_sub(queued, Ordering::Relaxed);
        let dropped = u64::from(std::mem::take(&mut self.dropped));
        let Some(ack) = self.ack.as_deref_mut() else {
            return Out {
                msgs: queue,
                dropped,
                batch: None,
            };
        };
        ack.batch += 1;
        let mut msgs: Vec<Bytes> = Vec::with_capacity(ack.unacked.len() + queue.len());
        msgs.extend(ack.unacked.iter().map(|(_, m)| m.clone()));
        for m in queue {
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

    /// Messages waiting for the next connect.
    pub(super) fn queued(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.len())
    }

    /// Queues a delivery.
    pub(super) fn enqueue(&mut self, m: Bytes) {
        self.queue.get_or_insert_default().push_back(m);
    }

    /// Drops the oldest queued delivery; whether there was one.
    pub(super) fn drop_oldest(&mut self) -> bool {
        self.queue.as_mut().and_then(|q| q.pop_front()).is_some()
    }

    pub(super) fn unacked(&self) -> usize {
        self.ack.as_ref().map_or(0, |a| a.unacked.len())
    }

    /// A connect acknowledged every batch up to `n`: those are delivered.
    pub(super) fn acknowledge(&mut self, n: i64, stats: &BayeuxStats) {
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
    pub(super) fn has_output(&self) -> bool {
        self.queued() > 0 || self.unacked() > 0 || self.dropped > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_record_stays_small() {
        // Kept in the client table's chunks: every byte here is paid once per client slot.
        // Measured per parked client: bench/RESULTS.md, "Bayeux idle cost (issue 20)". 96: id
        // 16 + cookie 16 + subscriptions 16 + three boxes (queue, ack, grant) 24 + waiter 12 +
        // dropped 4 + last seen 4 + bound 1 = 93, rounded up by alignment. The table's entry
        // (free or taken) is no larger: the free entry's index fits beside `bound`'s niche.
        assert_eq!(std::mem::size_of::<Client>(), 96);
        assert_eq!(std::mem::size_of::<Subs>(), 16);
        #[allow(dead_code)]
        enum Entry {
            Vacant(usize),
            Occupied(Client),
        }
        assert_eq!(std::mem::size_of::<Entry>(), 96);
    }

    #[test]
    fn subscription_lists_stay_inline_for_one() {
        let mut s = Subs::default();
        assert_eq!(s.len(), 0);
        s.push(3);
        assert_eq!(s, Subs::One(3));
        s.push(5);
        s.push(7);
        assert_eq!(s.as_slice(), [3, 5, 7]);
        assert!(s.remove(5) && !s.remove(5));
        assert_eq!(s.as_slice(), [3, 7]);
        assert!(s.remove(3));
        assert_eq!(s, Subs::One(7));
        assert!(s.remove(7));
        assert_eq!(s, Subs::None);
    }
}
