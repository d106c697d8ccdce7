//! Connection I/O: readiness events, reading into the worker's scratch buffer (keeping only the
//! unparsed rest per connection), handing bytes to the connection's phase, writing (straight to
//! the socket, queueing only what the kernel did not take), the slow-consumer bound, and
//! closing (orderly, with a last frame, or at once).

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use mio::Token;

use super::tls::send_tls;
use super::{READ_BUDGET, SCRATCH, SMALL_TAIL, Worker, split_token};
use crate::broker::Key;
use crate::logging::Event;
use crate::proto::ws::frame::{self, close_code};
use crate::runtime::conn::{Conn, NO_CHANNEL, Phase, flag};
use crate::runtime::outq::{self, OutQueue};
use crate::stats::WorkerStats;

/// Why a connection must go away at once (no further bytes to it).
#[derive(Debug)]
pub(super) struct Dead;

/// What a handler leaves behind: `Ok(())`, the connection stays (serving, holding, or closing
/// in order); `Err(Dead)`, it must go now. A handler only ever drops the connection it was
/// called for, and only by returning `Err(Dead)` up to the entry point of the loop turn that
/// called it, which hands it to [`Worker::settle`]: the one place a connection is removed.
/// So no handler finds its own connection gone under it.
pub(super) type Handled = Result<(), Dead>;

impl Worker {
    pub(super) fn conn_event(&mut self, t: Token, ev: &mio::event::Event) {
        let (idx, generation) = split_token(t);
        if !self.is_live(idx, generation) {
            return; // stale event for a previous occupant
        }
        let mut r = if ev.is_writable() {
            self.on_writable(idx)
        } else {
            Ok(())
        };
        // Edge-triggered: without a readable edge there is nothing new to read (a write-space
        // wake-up alone must not cost a read(2) that returns EAGAIN).
        if r.is_ok() && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
            r = self.on_readable(idx);
        }
        self.settle(idx, r);
    }

    /// Where every handler's result ends: a connection that must go is removed here, and
    /// nowhere else.
    pub(super) fn settle(&mut self, idx: usize, r: Handled) {
        if r.is_err() {
            self.remove(idx);
        }
    }

    /// Whether slot `idx` still holds the connection that had `generation`.
    pub(super) fn is_live(&self, idx: usize, generation: u32) -> bool {
        self.conns
            .get(idx)
            .is_some_and(|c| c.generation == generation)
    }

    pub(super) fn retry_reads(&mut self) {
        if self.retry.is_empty() {
            return;
        }
        let list = std::mem::take(&mut self.retry);
        for (idx, generation) in list {
            let idx = idx as usize;
            if self.is_live(idx, generation) {
                let r = self.on_readable(idx);
                self.settle(idx, r);
            }
        }
    }

    pub(super) fn on_writable(&mut self, idx: usize) -> Handled {
        let conn = &mut self.conns[idx];
        let Some(q) = conn.out.as_mut() else {
            return Ok(());
        };
        let before = q.bytes();
        let res = q.flush(&mut conn.sock);
        let after = q.bytes();
        WorkerStats::sub(&self.stats.bytes_queued, (before - after) as u64);
        WorkerStats::add(&self.stats.bytes_out, (before - after) as u64);
        if res.is_err() {
            return Err(Dead);
        }
        if after == 0 {
            conn.out = None;
            self.after_drained(idx);
        }
        Ok(())
    }

    /// Everything queued has gone: a closing connection now shuts its write side.
    pub(super) fn after_drained(&mut self, idx: usize) {
        let conn = &self.conns[idx];
        if conn.phase == Phase::Closing && !conn.has(flag::WRITE_SHUT) {
            self.tls_close_notify(idx);
            let conn = &mut self.conns[idx];
            conn.set(flag::WRITE_SHUT);
            let _ = conn.sock.shutdown(Shutdown::Write);
        }
    }

    pub(super) fn on_readable(&mut self, idx: usize) -> Handled {
        let mut scratch = std::mem::take(&mut self.scratch);
        let r = if self.is_tls(idx) {
            self.tls_read_loop(idx, &mut scratch)
        } else {
            self.read_loop(idx, &mut scratch)
        };
        self.scratch = scratch;
        r
    }

    /// Reads and handles until the socket is drained, the read budget is spent (retried next
    /// turn) or the connection waits for the broker.
    fn read_loop(&mut self, idx: usize, scratch: &mut [u8]) -> Handled {
        let mut budget = READ_BUDGET;
        loop {
            let conn = &mut self.conns[idx];
            if conn.has(flag::ACK_WAIT) {
                // Read again once the publish is answered (`resume`): meanwhile the kernel's
                // buffers hold what the client sends, bounded by TCP's window.
                break;
            }
            // Assemble [leftover | new bytes] in the scratch buffer, or in the leftover itself
            // when it is large (a request body in progress).
            let big_tail = conn.tail.as_ref().is_some_and(|t| t.len() > SMALL_TAIL);
            let result = if big_tail {
                let tail = conn.tail.as_mut().expect("checked above");
                let old = tail.len();
                tail.resize(old + SCRATCH, 0);
                let r = read_some(&mut conn.sock, &mut tail[old..]);
                tail.truncate(old + *r.as_ref().unwrap_or(&0));
                r.map(|n| (n, old + n))
            } else {
                let start = conn.tail.as_ref().map_or(0, |t| t.len());
                if let Some(t) = conn.tail.as_ref() {
                    scratch[..start].copy_from_slice(t);
                }
                read_some(&mut conn.sock, &mut scratch[start..start + SCRATCH])
                    .map(|n| (n, start + n))
            };
            match result {
                // Peer closed (or half-closed: we never serve a half-closed client).
                Ok((0, _)) => return Err(Dead),
                Ok((n, total)) => {
                    budget = budget.saturating_sub(n);
                    if big_tail {
                        let mut tail = self.conns[idx].tail.take().expect("big tail present");
                        let c = self.process(idx, &mut tail[..total])?;
                        tail.drain(..c.min(total));
                        if !tail.is_empty() {
                            self.conns[idx].tail = Some(tail);
                        }
                    } else {
                        let c = self.process(idx, &mut scratch[..total])?;
                        keep_leftover(&mut self.conns[idx], &scratch[c.min(total)..total]);
                    }
                    if budget == 0 {
                        let g = self.conns[idx].generation;
                        self.retry.push((idx as u32, g));
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Err(Dead),
            }
        }
        Ok(())
    }

    /// Handles `buf` (leftover + new bytes) for connection `idx`; returns bytes consumed.
    pub(super) fn process(&mut self, idx: usize, buf: &mut [u8]) -> Result<usize, Dead> {
        let mut pos = 0;
        loop {
            let conn = &self.conns[idx];
            match conn.phase {
                // Discarded: until the peer closes, or (streams) nothing is expected.
                Phase::Closing | Phase::Sse | Phase::Stream | Phase::Dashboard => {
                    return Ok(buf.len());
                }
                Phase::WsSub | Phase::WsEcho | Phase::BayeuxWs => {
                    return Ok(pos + self.ws_input(idx, &mut buf[pos..])?);
                }
                Phase::SioWs => {
                    return Ok(pos + self.sio_ws_input(idx, &mut buf[pos..])?);
                }
                Phase::SioPoll => {
                    if pos == buf.len() {
                        return Ok(pos);
                    }
                    // A request pipelined behind the held GET: the GET is answered (a noop
                    // when nothing waits), then the request is served.
                    self.sio_poll_interrupted(idx)?;
                }
                Phase::Poll | Phase::BayeuxPoll => {
                    if pos == buf.len() {
                        return Ok(pos);
                    }
                    // A request pipelined behind a held poll: finish the poll now, then serve
                    // the request (responses leave in request order).
                    if conn.phase == Phase::Poll {
                        self.poll_interrupted(idx)?;
                    } else {
                        self.bayeux_end_hold(idx, None)?;
                    }
                }
                Phase::Http => {
                    // Nothing more is served until the waiting publish is answered.
                    if pos == buf.len() || conn.has(flag::ACK_WAIT) {
                        return Ok(pos);
                    }
                    match self.http_input(idx, &buf[pos..])? {
                        Some(used) => pos += used,
                        None => return Ok(pos), // need more bytes
                    }
                }
            }
        }
    }

    /// Sends `bufs` in order: straight to the socket when nothing is queued, else behind the
    /// queue. `data` marks droppable data messages, subject to `--max-queued-bytes`; control
    /// frames and HTTP responses are never dropped.
    pub(super) fn send(&mut self, idx: usize, bufs: &[Bytes], data: bool) -> Handled {
        let conn = &mut self.conns[idx];
        if let Some(tls) = self.tls.get_mut(idx).and_then(|t| t.as_deref_mut()) {
            return send_tls(
                conn,
                tls,
                bufs,
                &self.stats,
                &mut self.tls_plain,
                &mut self.tls_out,
            );
        }
        send_on(conn, bufs, data, &self.stats)
    }

    /// Starts an orderly close: `last` (a close frame) is queued, the subscription ends, and
    /// once everything queued has gone the write side is shut down.
    pub(super) fn begin_close(&mut self, idx: usize, last: Option<Bytes>) -> Handled {
        self.sio_detach(idx);
        self.release_poll(idx);
        self.bayeux_release(idx);
        self.unsubscribe(idx);
        if !self.conns[idx].begin_closing(&self.stats) {
            return Ok(());
        }
        if let Some(frame) = last {
            self.send(idx, &[frame], false)?;
        }
        if self.conns[idx].out.is_none() {
            self.after_drained(idx);
        }
        let at = self.after(self.cfg.close_timeout);
        self.conns[idx].deadline = 0;
        self.set_deadline(idx, at);
        Ok(())
    }

    /// Slow consumer: unsent data is dropped (counted); a WebSocket client gets 1008, an event
    /// stream just ends (the client resumes from the history with its last id).
    pub(super) fn slow_consumer(&mut self, idx: usize) -> Handled {
        let conn = &mut self.conns[idx];
        if let Some(q) = conn.out.as_mut() {
            let (msgs, bytes) = q.drop_unsent_data();
            WorkerStats::add(&self.stats.drops, msgs);
            WorkerStats::sub(&self.stats.bytes_queued, bytes as u64);
        }
        WorkerStats::add(&self.stats.slow_consumers, 1);
        let phase = conn.phase;
        self.notes
            .note(Event::SlowConsumer, || format!("a {phase:?} connection"));
        let conn = &mut self.conns[idx];
        let last = matches!(
            conn.phase,
            Phase::WsSub | Phase::WsEcho | Phase::BayeuxWs | Phase::SioWs
        )
        .then(|| frame::close_frame(close_code::POLICY, "slow consumer: queue limit exceeded"));
        self.begin_close(idx, last)
    }

    /// Bounds what a client that does not read can make us queue (pipelined requests, echoes,
    /// pongs): past `--max-queued-bytes` it is treated as a slow consumer. A WebSocket client
    /// gets 1008 after its unsent data is dropped; an HTTP client is disconnected. Returns
    /// whether the connection is now closing (nothing more is to be served on it).
    pub(super) fn over_backlog(&mut self, idx: usize) -> Result<bool, Dead> {
        let conn = &self.conns[idx];
        if conn.queued() <= self.cfg.max_queued_bytes {
            return Ok(false);
        }
        match conn.phase {
            Phase::WsSub
            | Phase::WsEcho
            | Phase::BayeuxWs
            | Phase::SioWs
            | Phase::Sse
            | Phase::Stream => {
                self.slow_consumer(idx)?;
                Ok(true)
            }
            Phase::Http
            | Phase::Closing
            | Phase::Poll
            | Phase::BayeuxPoll
            | Phase::SioPoll
            | Phase::Dashboard => {
                WorkerStats::add(&self.stats.slow_consumers, 1);
                let phase = conn.phase;
                self.notes
                    .note(Event::SlowConsumer, || format!("a {phase:?} connection"));
                Err(Dead)
            }
        }
    }

    /// Subscribes connection `idx` to `channel` (admission was checked in this turn:
    /// [`Channels::admits`](crate::pubsub::Channels::admits)); the first local interest in the
    /// channel is told to the broker.
    pub(super) fn subscribe(&mut self, idx: usize, channel: &str) {
        let j = self
            .channels
            .subscribe(channel, idx as u32)
            .expect("admits() was checked in the same turn");
        let conn = &mut self.conns[idx];
        conn.chan = j.chan;
        conn.chan_pos = j.pos;
        if j.first {
            self.first_interest(channel);
        }
    }

    /// The first local subscriber of `name` (a channel or a Socket.IO pattern): the broker
    /// subscribes, and the hub posts this worker the channel's publishes.
    pub(super) fn first_interest(&mut self, name: &str) {
        if let Some(b) = self.shared.broker.get() {
            b.add(Key::of_bayeux(name));
        }
        if crate::pubsub::is_pattern(name) {
            if !self.watching_patterns && self.shared.mailboxes.len() > 1 {
                self.watching_patterns = true;
                self.shared.hub.watch_patterns(self.id, true);
            }
        } else if self.shared.mailboxes.len() > 1 {
            self.shared.hub.watch(name, self.id);
        }
    }

    /// Before the history of `channel` is read for a subscriber of this worker: the hub posts
    /// this worker every later publish on it (unless it has subscribers of it already; a lone
    /// worker is posted everything). Whether it was watched now: if the request then ends
    /// without subscribing, [`Worker::unwatch_unused`] undoes it (and the first message posted
    /// here for nobody would).
    pub(super) fn watch(&mut self, channel: &str) -> bool {
        let now = self.shared.mailboxes.len() > 1 && self.channels.lookup(channel).is_none();
        if now {
            self.shared.hub.watch(channel, self.id);
        }
        now
    }

    /// Undoes [`Worker::watch`] (`watched`: what it returned) when `channel` got no subscriber.
    pub(super) fn unwatch_unused(&mut self, channel: &str, watched: bool) {
        if watched && self.channels.lookup(channel).is_none() {
            self.shared.hub.unwatch(channel, self.id);
        }
    }

    pub(super) fn unsubscribe(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        if conn.chan == NO_CHANNEL {
            return;
        }
        let (chan, pos) = (conn.chan, conn.chan_pos);
        conn.chan = NO_CHANNEL;
        if let Some(moved) = self.channels.unsubscribe(chan, pos) {
            self.moved_in_channel(chan, pos, moved);
        }
    }

    /// Drops a connection now: only through [`Worker::settle`].
    fn remove(&mut self, idx: usize) {
        if !self.conns.contains(idx) {
            return;
        }
        self.sio_detach(idx);
        self.release_poll(idx);
        self.bayeux_release(idx);
        self.unsubscribe(idx);
        self.tls_forget(idx);
        // What the kernel never took goes with the connection: once per close.
        self.stats
            .queued_at_close
            .observe(self.conns[idx].queued() as u64);
        self.conns.remove(idx).gone(&self.stats);
        self.shared.conns.fetch_sub(1, Ordering::Relaxed);
        // Dropping the socket closes it, which also removes it from the epoll set.
    }
}

/// Reads once, retrying on EINTR.
fn read_some(sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sock.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Keeps `rest` as the connection's leftover: the existing box is reused, a new one is made only
/// when needed, and it is freed when nothing is left.
pub(super) fn keep_leftover(conn: &mut Conn, rest: &[u8]) {
    if rest.is_empty() {
        conn.tail = None;
        return;
    }
    let t = conn.tail.get_or_insert_with(Default::default);
    t.clear();
    t.extend_from_slice(rest);
    if t.capacity() > 4 * SMALL_TAIL && t.len() <= SMALL_TAIL {
        t.shrink_to_fit();
    }
}

/// [`Worker::send`] on a connection borrowed directly (the fan-out loop holds the channel table).
/// Slow-consumer limits are the caller's business: this only writes and queues.
pub(super) fn send_on(conn: &mut Conn, bufs: &[Bytes], data: bool, stats: &WorkerStats) -> Handled {
    let total: usize = bufs.iter().map(Bytes::len).sum();
    if let Some(q) = conn.out.as_mut() {
        // Backlogged (the last write hit WouldBlock): keep order, append behind what waits;
        // the writable event will flush it all in one writev.
        for b in bufs {
            q.push(b.clone(), data);
        }
        WorkerStats::add(&stats.bytes_queued, total as u64);
        return Ok(());
    }
    let written = outq::write_direct(&mut conn.sock, bufs).map_err(|_| Dead)?;
    WorkerStats::add(&stats.bytes_out, written as u64);
    if written < total {
        let mut q = Box::<OutQueue>::default();
        outq::queue_rest(&mut q, bufs, written, data);
        // Write until WouldBlock (edge-triggered readiness only reports a change after it),
        // which also covers more than MAX_IOV buffers.
        let more = q.flush(&mut conn.sock).map_err(|_| Dead)?;
        WorkerStats::add(&stats.bytes_out, more as u64);
        if !q.is_empty() {
            WorkerStats::add(&stats.bytes_queued, q.bytes() as u64);
            conn.out = Some(q);
        }
    }
    Ok(())
}
