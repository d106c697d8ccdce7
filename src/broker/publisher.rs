//! The publisher connection: publishes from the workers' bounded queue, pipelined to Redis as
//! calls of [`PUBLISH_SCRIPT`](super::PUBLISH_SCRIPT), each answered (`Sink::ack`) with Redis's
//! reply or its loss; reconnects with back-off.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use super::*;
use crate::bounded::BoundedReceiver;

impl Broker {
    pub(super) fn publisher(&self, rx: BoundedReceiver<Outgoing>, sink: &dyn Sink) {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        let mut acks = Acks::default();
        while let Some(sock) = self.connect_retrying(Side::Publisher, &mut backoff, &mut first) {
            self.pub_up.store(true, Ordering::Relaxed);
            self.set_connected();
            let ran = self.publishing(sock, &rx, sink, &mut acks);
            self.pub_up.store(false, Ordering::Relaxed);
            self.set_connected();
            if ran == Ran::Closed {
                return;
            }
            // What was queued while the connection failed cannot go out: refuse it, counted.
            let mut lost = 0;
            while let Ok((_, payload, ack)) = rx.try_recv() {
                self.dequeued(&payload);
                acks.give(sink, ack, None);
                lost += 1;
            }
            acks.wake(sink);
            self.stats.publish_lost.fetch_add(lost, Ordering::Relaxed);
            if ran == Ran::Worked {
                backoff = BACKOFF_MIN;
            } else {
                self.back_off(&mut backoff);
            }
        }
    }

    /// Serves one publisher connection: batches of queued publishes, pipelined, each batch's
    /// replies read before the next (and acknowledged to who waits for them); a PING each idle
    /// second.
    fn publishing(
        &self,
        mut sock: Link,
        rx: &BoundedReceiver<Outgoing>,
        sink: &dyn Sink,
        acks: &mut Acks,
    ) -> Ran {
        // Replies may take as long as a publish may wait for them: a Redis that stalls (a slow
        // command, CLIENT PAUSE) gets its publishes answered 504 at --broker-ack-timeout by
        // the workers, not the connection dropped and them lost (503) after a fixed time.
        if sock
            .set_read_timeout(Some(self.cfg.reply_timeout.max(Duration::from_secs(2))))
            .is_err()
        {
            return Ran::Failed;
        }
        let mut out = Vec::with_capacity(64 * 1024);
        let mut buf = Vec::with_capacity(4096);
        let mut scratch = vec![0u8; 16 * 1024];
        let mut waiting: Vec<Option<AckTo>> = Vec::with_capacity(1024);
        let mut ran = Ran::Failed;
        // The script is loaded on every new connection (Redis may have restarted empty).
        resp::command(&mut out, &[b"SCRIPT", b"LOAD", PUBLISH_SCRIPT.as_bytes()]);
        if sock.write_all(&out).is_err() {
            return ran;
        }
        let sha = loop {
            match resp::parse(&buf, 1 << 20) {
                Ok(Some((Value::Bulk(Some(sha)), used))) => {
                    buf.drain(..used);
                    break sha;
                }
                Ok(Some(_)) | Err(_) => return ran,
                Ok(None) => {}
            }
            match sock.read(&mut scratch) {
                Ok(0) | Err(_) => return ran,
                Ok(k) => buf.extend_from_slice(&scratch[..k]),
            }
        };
        let ttl = self.cfg.id_ttl_ms.to_string();
        let mut key = String::new();
        // The batch in flight is lost (counted; its waiters told): the connection failed.
        let lose = |waiting: &mut Vec<Option<AckTo>>, got: usize, acks: &mut Acks| {
            let n = waiting.len().saturating_sub(got);
            self.stats
                .publish_lost
                .fetch_add(n as u64, Ordering::Relaxed);
            for ack in waiting.drain(..).skip(got) {
                acks.give(sink, ack, None);
            }
            acks.wake(sink);
        };
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ran::Closed;
            }
            out.clear();
            waiting.clear();
            // Wait in short steps, looking at the socket in between: a Redis that went away
            // is noticed within 100 ms, not at the next publish (which would be lost).
            let mut waited = Duration::ZERO;
            let next = loop {
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Err(RecvTimeoutError::Timeout) if waited < Duration::from_secs(1) => {
                        waited += Duration::from_millis(100);
                        if !sock.peer_open() {
                            return ran;
                        }
                    }
                    other => break other,
                }
            };
            match next {
                Ok(first) => {
                    let mut item = Some(first);
                    while let Some((ch, payload, ack)) = item.take() {
                        self.dequeued(&payload);
                        key.clear();
                        key.push_str(ID_KEY);
                        key.push_str(&ch);
                        resp::command(
                            &mut out,
                            &[
                                b"EVALSHA",
                                &sha,
                                b"1",
                                key.as_bytes(),
                                ch.as_bytes(),
                                &payload,
                                ttl.as_bytes(),
                            ],
                        );
                        waiting.push(ack);
                        if waiting.len() < 1024 {
                            item = rx.try_recv().ok();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => resp::command(&mut out, &[b"PING"]),
                Err(RecvTimeoutError::Disconnected) => return Ran::Closed,
            }
            let n = waiting.len();
            let replies = n.max(1);
            if sock.write_all(&out).is_err() {
                lose(&mut waiting, 0, acks);
                return ran;
            }
            let mut got = 0;
            while got < replies {
                match resp::parse(&buf, 1 << 20) {
                    Ok(Some((v, used))) => {
                        buf.drain(..used);
                        if n > 0 {
                            let receivers = match v {
                                Value::Array(Some(ref a))
                                    if matches!(a.get(1), Some(Value::Int(_))) =>
                                {
                                    self.stats.published.fetch_add(1, Ordering::Relaxed);
                                    match a[1] {
                                        Value::Int(r) => Some(r.max(0) as u64),
                                        _ => None,
                                    }
                                }
                                _ => {
                                    self.stats.publish_lost.fetch_add(1, Ordering::Relaxed);
                                    None
                                }
                            };
                            acks.give(sink, waiting[got], receivers);
                        }
                        got += 1;
                        continue;
                    }
                    Ok(None) => {}
                    Err(_) => {
                        lose(&mut waiting, got, acks);
                        return ran;
                    }
                }
                match sock.read(&mut scratch) {
                    Ok(0) | Err(_) => {
                        lose(&mut waiting, got, acks);
                        return ran;
                    }
                    Ok(k) => buf.extend_from_slice(&scratch[..k]),
                }
            }
            acks.wake(sink);
            ran = Ran::Worked;
        }
    }
}

/// Acknowledgements given to the sink since the last wake, by worker.
#[derive(Default)]
struct Acks {
    workers: Vec<u32>,
}

impl Acks {
    fn give(&mut self, sink: &dyn Sink, to: Option<AckTo>, receivers: Option<u64>) {
        if let Some(to) = to {
            sink.ack(to, receivers);
            if !self.workers.contains(&to.worker) {
                self.workers.push(to.worker);
            }
        }
    }

    fn wake(&mut self, sink: &dyn Sink) {
        for w in self.workers.drain(..) {
            sink.wake(w);
        }
    }
}

/// How a publisher connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// It failed before a round trip worked.
    Failed,
    /// It worked for a while, then failed.
    Worked,
    /// The broker is stopping.
    Closed,
}
