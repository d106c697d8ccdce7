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

#[derive(Debug, Default)]
pub(super) struct Client {
    pub(super) subs: Vec<Box<str>>,
    pub(super) queue: VecDeque<Bytes>,
    /// Messages dropped from the queue since the last connect reply.
    pub(super) dropped: u32,
    /// When its last connect arrived or ended, in the caller's seconds (expiry).
    pub(super) last_seen: u32,
    pub(super) waiter: Option<Waiter>,
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
    pub(super) fn drain(&mut self, stats: &BayeuxStats) -> Out {
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
        !self.queue.is_empty() || self.unacked() > 0 || self.dropped > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_record_stays_small() {
        // Kept inline in the client table (which also holds empty buckets): every byte here is
        // paid about twice per client. Measured per parked client: bench/RESULTS.md, Memory per parked Bayeux client.
        // 120: the token grant's pointer (issue 17) added 8 to the 112 before; it is `None`
        // without subscribe tokens, and the grant itself (sub, end, patterns) is on the heap
        // only for clients that handshook with a token.
        assert_eq!(std::mem::size_of::<Client>(), 120);
    }
}
