//! Publishing: `POST /pub/{channel}` and messages from clients enter the process through
//! [`Shared::enter`](crate::runtime::shared::Shared::enter) (an id, the history, every worker's
//! inbox, Bayeux queues) or, with `--broker`, go to Redis and come back from there; an HTTP
//! publish then waits for Redis's acknowledgement (`flag::ACK_WAIT`, answered by
//! `Mail::PublishAck` or at `--broker-ack-timeout`) before its connection reads on.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Worker;
use super::conn_io::{Dead, Handled};
use crate::broker::{AckTo, PublishError};
use crate::proto::http;
use crate::pubsub;
use crate::pubsub::hub::Message;
use crate::runtime::conn::{Ext, Phase, flag};
use crate::stats::WorkerStats;

/// `{"ok":true,"channel":..,WHAT,"bytes":..}`: the body of a publish's answer.
pub(super) fn publish_body(channel: &str, what: &str, len: usize) -> String {
    format!("{{\"ok\":true,\"channel\":\"{channel}\",{what},\"bytes\":{len}}}\n")
}

/// Why a publish was not done (or not done everywhere).
#[derive(Debug)]
pub(super) enum PubError {
    /// `--max-channels` channels have state (nothing delivered).
    Channels,
    /// A peer's inbox was full: its subscribers miss this message (id assigned, in history).
    Inbox(Arc<Message>),
    /// `--broker`: Redis is unreachable or the publish queue is full; nothing was sent.
    Broker(PublishError),
    /// A shutdown has begun: not published.
    Draining,
}

/// A publish that was done.
#[derive(Debug)]
pub(super) enum Published {
    /// Fanned out in this process, with its id.
    Here(Arc<Message>),
    /// Handed to the broker: it comes back (with an id of this process) like anyone's.
    Broker,
}

impl Worker {
    pub(super) fn publish(
        &mut self,
        idx: usize,
        channel: &str,
        body: &[u8],
        keep_alive: bool,
        origin: u16,
    ) -> Handled {
        if !pubsub::valid_channel(channel, self.cfg.max_channel_len) {
            return self.bad_request(idx, "invalid channel name\n", keep_alive);
        }
        if std::str::from_utf8(body).is_err() {
            return self.bad_request(idx, "message must be UTF-8 text\n", keep_alive);
        }
        // With --broker the answer waits for Redis's: a publish answered is in Redis, so one
        // sent after it (through any process) comes after it everywhere.
        let ack = self.shared.broker.get().map(|_| AckTo {
            worker: self.id as u32,
            idx: idx as u32,
            generation: self.conns[idx].generation,
        });
        let len = body.len();
        match self.publish_message(channel, Bytes::copy_from_slice(body), ack) {
            Ok(Published::Here(msg)) => {
                let body = publish_body(channel, &format!("\"id\":\"{}\"", msg.id), len);
                self.publish_answer(idx, 200, &body, origin, keep_alive)
            }
            Ok(Published::Broker) => {
                let at = self.after(self.cfg.broker_ack_timeout);
                let conn = &mut self.conns[idx];
                conn.set(flag::ACK_WAIT);
                if keep_alive {
                    conn.set(flag::KEEP_ALIVE);
                }
                conn.ext = Some(Box::new(Ext::PubAck {
                    channel: channel.into(),
                    bytes: len,
                    origin,
                }));
                conn.deadline = 0;
                self.set_deadline(idx, at);
                Ok(())
            }
            Err(e) => {
                let cors = self.cors_headers(origin);
                self.publish_refused(idx, e, &cors, keep_alive)
            }
        }
    }

    /// Answers a publish: 200 with the id of a local publish, 202 for one Redis has (each
    /// process gives it its own id when Redis sends it back). `body`: [`publish_body`].
    pub(super) fn publish_answer(
        &mut self,
        idx: usize,
        status: u16,
        body: &str,
        origin: u16,
        keep_alive: bool,
    ) -> Handled {
        let reason = if status == 200 { "OK" } else { "Accepted" };
        let cors = self.cors_headers(origin);
        let resp = http::response(
            &self.date,
            status,
            reason,
            "application/json",
            &cors,
            body.as_bytes(),
            keep_alive,
        );
        self.respond(idx, resp, keep_alive)
    }

    /// Redis answered the publish `idx` waits for (`Some(receivers)`), or it was lost
    /// (`None`), or the wait timed out (`timed_out`): answer it, then serve what the client
    /// sent behind it.
    pub(super) fn publish_acked(
        &mut self,
        idx: usize,
        receivers: Option<u64>,
        timed_out: bool,
    ) -> Handled {
        let conn = &mut self.conns[idx];
        // While shutting down the connection ends with this answer.
        let keep_alive = conn.has(flag::KEEP_ALIVE) && self.drain_deadline.is_none();
        conn.clear(flag::ACK_WAIT | flag::KEEP_ALIVE);
        conn.deadline = 0;
        let Some(Ext::PubAck {
            channel,
            bytes,
            origin,
        }) = conn.ext.take().map(|b| *b)
        else {
            return Err(Dead);
        };
        match receivers {
            Some(n) => {
                let what = format!("\"broker\":true,\"broker_receivers\":{n}");
                self.publish_answer(
                    idx,
                    202,
                    &publish_body(&channel, &what, bytes),
                    origin,
                    keep_alive,
                )?;
            }
            None => {
                let cors = self.cors_headers(origin);
                let (status, reason, body) = if timed_out {
                    WorkerStats::add(&self.stats.broker_ack_timeouts, 1);
                    (
                        504,
                        "Gateway Timeout",
                        "the broker (Redis) did not answer in time; the message may or may not \
                         have been published\n",
                    )
                } else {
                    (
                        503,
                        "Service Unavailable",
                        "the connection to the broker (Redis) failed before it answered; the \
                         message may or may not have been published\n",
                    )
                };
                self.respond_error(
                    idx,
                    status,
                    reason,
                    &("Retry-After: 1\r\n".to_string() + &cors),
                    body,
                    keep_alive,
                )?;
            }
        }
        if self.conns[idx].phase == Phase::Http {
            let at = self.after(self.cfg.keepalive_timeout);
            self.set_deadline(idx, at);
            self.resume(idx)?;
        }
        Ok(())
    }

    /// A connection that stopped reading (a publish waiting for the broker) goes on: the bytes
    /// read behind the publish are served, then whatever the kernel holds is read (its
    /// readiness edge may have passed meanwhile).
    pub(super) fn resume(&mut self, idx: usize) -> Handled {
        if let Some(mut tail) = self.conns[idx].tail.take() {
            let c = self.process(idx, &mut tail[..])?;
            tail.drain(..c.min(tail.len()));
            if !tail.is_empty() {
                self.conns[idx].tail = Some(tail);
            }
        }
        self.retry.push((idx as u32, self.conns[idx].generation));
        Ok(())
    }

    pub(super) fn publish_refused(
        &mut self,
        idx: usize,
        e: PubError,
        cors: &str,
        keep_alive: bool,
    ) -> Handled {
        let keep_alive = keep_alive && !matches!(e, PubError::Draining);
        let (extra, body) = match e {
            PubError::Channels => {
                WorkerStats::add(&self.stats.channel_limit, 1);
                (String::new(), "channel limit reached\n")
            }
            // The message has its id and is in the history; a worker's live subscribers miss
            // it. Said plainly so that a retry is a decision, not an accident.
            PubError::Inbox(msg) => (
                format!("Retry-After: 1\r\nEdgecomet-Id: {}\r\n", msg.id),
                "published, but the delivery queue of a worker is full: its live subscribers \
                 miss this message (it is in the history)\n",
            ),
            PubError::Broker(PublishError::Down) => (
                "Retry-After: 1\r\n".to_string(),
                "not published: the broker (Redis) is unreachable; nothing was sent\n",
            ),
            PubError::Broker(PublishError::Busy) => (
                "Retry-After: 1\r\n".to_string(),
                "not published: the broker's publish queue is full; nothing was sent\n",
            ),
            PubError::Draining => (
                "Retry-After: 1\r\n".to_string(),
                "not published: the server is shutting down\n",
            ),
        };
        self.respond_error(
            idx,
            503,
            "Service Unavailable",
            &(extra + cors),
            body,
            keep_alive,
        )
    }

    /// Publishes `payload` (UTF-8, checked by the caller) to `channel`: the hub gives it an id
    /// and records it; local subscribers get it in this turn's fan-out, other workers through
    /// their inboxes. With `--broker` it goes to Redis instead, and comes back from there.
    /// `ack`: with `--broker`, who waits for Redis's answer (an HTTP publish).
    pub(super) fn publish_message(
        &mut self,
        channel: &str,
        payload: Bytes,
        ack: Option<AckTo>,
    ) -> Result<Published, PubError> {
        if self.shared.draining.load(Ordering::SeqCst) {
            WorkerStats::add(&self.stats.refused_draining, 1);
            return Err(PubError::Draining);
        }
        if let Some(b) = self.shared.broker.get() {
            b.publish(Arc::from(channel), payload, ack)
                .map_err(PubError::Broker)?;
            WorkerStats::add(&self.stats.messages_in, 1);
            return Ok(Published::Broker);
        }
        let shared = self.shared.clone();
        let mut local: Vec<u32> = Vec::new();
        self.channels.targets(channel, |c| local.push(c));
        let pending = &mut self.pending;
        let wake = &mut self.wake;
        let here = |msg: &Arc<Message>| {
            for &chan in &local {
                pending.push((chan, msg.clone()));
            }
        };
        let entered = shared
            .enter(channel, None, payload, Some(self.id), here, |i| {
                wake[i] = true
            })
            .map_err(|_| PubError::Channels)?
            .expect("an id issued here is never stale");
        let (msg, refused) = (entered.msg, entered.refused);
        WorkerStats::add(&self.stats.messages_in, 1);
        for w in entered.woken {
            self.bayeux_wake(w);
        }
        if refused > 0 {
            // A peer's inbox is full (the peer is stuck): its subscribers miss this message
            // (resumable from the history).
            WorkerStats::add(&self.stats.drops, refused);
            return Err(PubError::Inbox(msg));
        }
        Ok(Published::Here(msg))
    }
}
