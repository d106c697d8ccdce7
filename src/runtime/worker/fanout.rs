//! The mailbox and the fan-out: mail from peers and the broker (publishes, Bayeux wakes,
//! publish acknowledgements, quiesce, shutdown), then this turn's messages delivered per
//! channel in id order, each subscriber getting everything for it in one `writev` in its
//! transport's encoding (the encodings are built once per message, for everyone).

use std::sync::atomic::Ordering;
use std::sync::mpsc::TryRecvError;
use std::time::Instant;

use bytes::Bytes;

use super::Worker;
use super::conn_io::{Dead, send_on};
use super::socketio::{SIO_BIT, sio_of_entry};
use super::tls::send_tls;
use crate::proto::ws::deflate;
use crate::pubsub::hub::Message;
use crate::runtime::conn::{Phase, Proto, flag};
use crate::runtime::mailbox::Mail;
use crate::runtime::outq;
use crate::session::socketio::Transport;
use crate::stats::WorkerStats;

/// Channels posted here for nobody that one turn unwatches at most.
const MAX_STRAYS: usize = 64;

impl Worker {
    pub(super) fn drain_mailbox(&mut self) {
        loop {
            match self.inbox.try_recv() {
                Ok(Mail::Publish(msg)) => {
                    WorkerStats::add(&self.stats.peer_messages, 1);
                    let pending = &mut self.pending;
                    let before = pending.len();
                    self.channels
                        .targets(&msg.channel, |chan| pending.push((chan, msg.clone())));
                    // Posted for nobody: a watch left from a request that did not subscribe.
                    // (A worker with patterns is posted everything: nothing to undo. A few per
                    // turn: the others come again with their channel's next message.)
                    if pending.len() == before
                        && !self.watching_patterns
                        && self.strays.len() < MAX_STRAYS
                        && !self.strays.contains(&msg.channel)
                    {
                        self.strays.push(msg.channel.clone());
                    }
                }
                Ok(Mail::SioAdopt(a)) => self.sio_adopt(*a),
                Ok(Mail::BayeuxWake { idx, generation }) => {
                    self.bayeux_wakes.push((idx, generation));
                }
                Ok(Mail::PublishAck {
                    idx,
                    generation,
                    receivers,
                }) => {
                    // Gone, or answered at its timeout already: nobody waits any more.
                    if self.is_live(idx as usize, generation)
                        && self.conns[idx as usize].has(flag::ACK_WAIT)
                    {
                        let r = self.publish_acked(idx as usize, receivers, false);
                        self.settle(idx as usize, r);
                    }
                }
                Ok(Mail::Quiesce) => {
                    // Every publish this worker accepted is in its peers' inboxes already (a
                    // publish posts them before it is answered); later ones see `draining`.
                    self.shared.quiesced.fetch_add(1, Ordering::SeqCst);
                }
                Ok(Mail::Shutdown { until }) => self.shutdown_asked = Some(until),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    // The server handle is gone; shut down.
                    if self.drain_deadline.is_none() {
                        self.shutdown_asked = Some(Instant::now() + self.cfg.shutdown_timeout());
                    }
                    return;
                }
            }
        }
    }

    /// Delivers this turn's messages: per channel, each subscriber gets everything for it in
    /// one `writev` (or one queue append when it is backlogged), in its transport's encoding.
    /// Held polls are answered after the walk (answering unsubscribes them).
    pub(super) fn fan_out(&mut self) {
        if self.pending.is_empty() {
            self.resumed.clear();
            self.sio.resumed.clear();
            self.sio.ns_texts.clear();
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        // Per channel in id order. Arrival order is not enough: a local publish (id 5) is
        // pending before the mailbox is drained, while a peer's earlier one (id 4, posted
        // before our publish took the channel lock) is drained after it. Both are here in the
        // same turn — the lock orders the post before our publish — so sorting suffices.
        pending.sort_unstable_by_key(|(chan, m)| (*chan, m.id));
        let mut slow: Vec<usize> = Vec::new();
        let mut dead: Vec<usize> = Vec::new();
        // Held polls to answer: (connection, range of `pending` for its channel).
        let mut polls: Vec<(usize, usize, usize)> = Vec::new();
        let mut ws: Vec<Bytes> = Vec::new();
        let mut env: Vec<Bytes> = Vec::new();
        // The same, compressed, for subscribers that agreed to permessage-deflate (made on the
        // first such subscriber, from each message's one compressed form); `own`: the frames
        // of a subscriber whose window is too small for some of them.
        let mut wsz: Vec<Bytes> = Vec::new();
        let mut envz: Vec<Bytes> = Vec::new();
        let mut own: Vec<Bytes> = Vec::new();
        let min = self.cfg.deflate_min_bytes as usize;
        let mut sse: Vec<Bytes> = Vec::new();
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        // Socket.IO frames of this batch per namespace.
        let mut sio_ns: Vec<(usize, Vec<Bytes>)> = Vec::new();
        let mut sio_nsz: Vec<(usize, Vec<Bytes>)> = Vec::new();
        // Socket.IO sessions on long-polling: (session slot, namespace, range of `pending`).
        let mut sio_polls: Vec<(usize, usize, usize, usize)> = Vec::new();
        let mut i = 0;
        while i < pending.len() {
            let chan = pending[i].0;
            let start = i;
            while i < pending.len() && pending[i].0 == chan {
                i += 1;
            }
            let batch = &pending[start..i];
            ws.clear();
            env.clear();
            wsz.clear();
            envz.clear();
            sio_nsz.clear();
            sse.clear();
            chunks.clear();
            sio_ns.clear();
            ids.clear();
            ids.extend(batch.iter().map(|(_, m)| m.id));
            let mut wrote = false;
            for &sub in self.channels.subscribers(chan) {
                // A Socket.IO session: written here when it is on a WebSocket, else queued
                // for its poll after the walk.
                let mut nsp = 0;
                let sub = if sub & SIO_BIT != 0 {
                    let (slot, n) = sio_of_entry(sub);
                    nsp = n;
                    match self.sio.sessions.get(slot) {
                        Some(s) if s.transport == Transport::WebSocket => match s.conn {
                            Some((idx, _)) => idx,
                            None => continue,
                        },
                        Some(_) => {
                            sio_polls.push((slot, nsp, start, i));
                            continue;
                        }
                        None => continue,
                    }
                } else {
                    sub
                };
                let conn = &mut self.conns[sub as usize];
                let agreed = conn.deflate();
                // Whether every message of the batch may go compressed to this subscriber
                // (always, unless it asked for a window under 32 KiB).
                let fits = |a: deflate::Agreed, plain: &dyn Fn(&Message) -> usize| {
                    a.server_max_window_bits >= 15
                        || batch.iter().all(|(_, m)| a.fits_window(plain(m)))
                };
                let largest = deflate::largest_payload;
                let frames: &[Bytes] = match conn.phase {
                    Phase::SioWs => {
                        // The frames of the entry's namespace, made once per batch (and once
                        // compressed, for sessions that agreed to permessage-deflate).
                        let sio = match agreed {
                            None => match sio_ns.iter().position(|(n, _)| *n == nsp) {
                                Some(k) => &sio_ns[k].1,
                                None => {
                                    let f = batch.iter().map(|(_, m)| self.sio.frame_in(m, nsp));
                                    sio_ns.push((nsp, f.collect()));
                                    &sio_ns[sio_ns.len() - 1].1
                                }
                            },
                            Some(a) if fits(a, &|m| largest(&self.sio.frame_in(m, nsp))) => {
                                match sio_nsz.iter().position(|(n, _)| *n == nsp) {
                                    Some(k) => &sio_nsz[k].1,
                                    None => {
                                        let f = batch
                                            .iter()
                                            .map(|(_, m)| self.sio.frame_in_deflated(m, nsp, min));
                                        sio_nsz.push((nsp, f.collect()));
                                        &sio_nsz[sio_nsz.len() - 1].1
                                    }
                                }
                            }
                            Some(_) => {
                                // A window too small: this one gets them plain.
                                own.clear();
                                own.extend(batch.iter().map(|(_, m)| self.sio.frame_in(m, nsp)));
                                &own
                            }
                        };
                        // A session recovered this turn has what is at or below its cursor.
                        let from = match self.sio.resumed.get(&(conn.chan_pos, chan)) {
                            Some(&c) => ids.partition_point(|&id| id <= c),
                            None => 0,
                        };
                        if from == ids.len() {
                            continue;
                        }
                        &sio[from..]
                    }
                    Phase::WsSub if conn.has(flag::ENVELOPE) => {
                        let env = match agreed {
                            None => {
                                if env.is_empty() {
                                    env.extend(batch.iter().map(|(_, m)| m.ws_envelope().clone()));
                                }
                                &env
                            }
                            Some(a) if fits(a, &|m| largest(m.ws_envelope())) => {
                                if envz.is_empty() {
                                    envz.extend(
                                        batch
                                            .iter()
                                            .map(|(_, m)| m.ws_envelope_deflated(min).clone()),
                                    );
                                }
                                &envz
                            }
                            Some(a) => {
                                own.clear();
                                own.extend(batch.iter().map(|(_, m)| {
                                    deflate::choose(Some(a), m.ws_envelope(), || {
                                        m.ws_envelope_deflated(min)
                                    })
                                    .clone()
                                }));
                                &own
                            }
                        };
                        // A subscriber that resumed this turn has what is at or below its
                        // cursor already.
                        let from = match self.resumed.get(&(sub, conn.generation)) {
                            Some(&c) => ids.partition_point(|&id| id <= c),
                            None => 0,
                        };
                        if from == ids.len() {
                            continue;
                        }
                        &env[from..]
                    }
                    Phase::WsSub => match agreed {
                        None => {
                            if ws.is_empty() {
                                ws.extend(batch.iter().map(|(_, m)| m.ws_frame().clone()));
                            }
                            &ws
                        }
                        Some(a) if fits(a, &|m| largest(m.ws_frame())) => {
                            if wsz.is_empty() {
                                wsz.extend(
                                    batch.iter().map(|(_, m)| m.ws_frame_deflated(min).clone()),
                                );
                            }
                            &wsz
                        }
                        Some(a) => {
                            own.clear();
                            own.extend(batch.iter().map(|(_, m)| {
                                deflate::choose(Some(a), m.ws_frame(), || m.ws_frame_deflated(min))
                                    .clone()
                            }));
                            &own
                        }
                    },
                    Phase::Sse | Phase::Stream => {
                        let mut st = conn.sub();
                        // Skip what the subscriber already has (sent from the history when it
                        // subscribed while these were in flight).
                        let from = ids.partition_point(|&id| id <= st.cursor());
                        if from == ids.len() {
                            continue;
                        }
                        st.set_cursor(ids[ids.len() - 1]);
                        conn.proto = Proto::Sub(st);
                        let v = if conn.phase == Phase::Sse {
                            if sse.is_empty() {
                                sse.extend(batch.iter().map(|(_, m)| m.sse_event().clone()));
                            }
                            &sse
                        } else {
                            if chunks.is_empty() {
                                chunks.extend(batch.iter().map(|(_, m)| m.stream_chunk().clone()));
                            }
                            &chunks
                        };
                        &v[from..]
                    }
                    Phase::Poll => {
                        polls.push((sub as usize, start, i));
                        continue;
                    }
                    _ => continue,
                };
                WorkerStats::add(&self.stats.messages_out, frames.len() as u64);
                if agreed.is_some() {
                    let z = deflate::count_compressed(frames);
                    WorkerStats::add(&self.stats.ws_deflated_out, z as u64);
                }
                wrote = true;
                if let Some(tls) = self
                    .tls
                    .get_mut(sub as usize)
                    .and_then(|t| t.as_deref_mut())
                {
                    // Everything due to it this turn in as few records as possible.
                    if send_tls(
                        conn,
                        tls,
                        frames,
                        &self.stats,
                        &mut self.tls_plain,
                        &mut self.tls_out,
                    )
                    .is_err()
                    {
                        dead.push(sub as usize);
                    }
                } else {
                    for group in frames.chunks(outq::MAX_IOV) {
                        if send_on(conn, group, true, &self.stats).is_err() {
                            dead.push(sub as usize);
                            break;
                        }
                    }
                }
                if conn.queued() > self.cfg.max_queued_bytes {
                    slow.push(sub as usize);
                }
            }
            if wrote {
                // This worker's last write of these messages is done (written, or queued behind
                // a backlog): one clock reading per channel, one observation per message, none
                // per subscriber. Held polls, answered after the walk, are not in it.
                let now = self.shared.micros();
                for (_, m) in batch {
                    self.stats
                        .publish_write
                        .observe(now.saturating_sub(m.entered_us));
                }
            }
        }
        self.resumed.clear();
        for (idx, start, end) in polls {
            let r = self.wake_poll(idx, &pending[start..end]);
            self.settle(idx, r);
        }
        for (slot, nsp, start, end) in sio_polls {
            self.sio_deliver(slot, nsp, &pending[start..end]);
        }
        self.sio.resumed.clear();
        pending.clear();
        self.pending = pending;
        for idx in slow {
            if self.conns.get(idx).is_some_and(|c| {
                matches!(
                    c.phase,
                    Phase::WsSub | Phase::SioWs | Phase::Sse | Phase::Stream
                )
            }) {
                let r = self.slow_consumer(idx);
                self.settle(idx, r);
            }
        }
        // (One that was also slow may be gone already: removing it again does nothing.)
        for idx in dead {
            self.settle(idx, Err(Dead));
        }
    }
}
