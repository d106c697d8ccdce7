//! Per-worker counters, readable from any thread for `/stats`.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer, so updates are a relaxed load
//! and store (no locked read-modify-write on the hot path); readers on other threads may see a
//! value a few events old, which is fine for monitoring.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Counters of one worker. Gauges (current values) and totals (since start) side by side.
        #[derive(Debug, Default)]
        pub struct WorkerStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        impl WorkerStats {
            /// `(name, value)` for every counter, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (stringify!($name), self.$name.load(Ordering::Relaxed)), )*]
            }
        }
    };
}

counters! {
    /// Gauge: open connections still speaking HTTP (requests, keep-alive).
    conns_http,
    /// Gauge: WebSocket subscribers (`/sub/{channel}`).
    conns_ws_sub,
    /// Gauge: WebSocket echo connections (`/echo`).
    conns_ws_echo,
    /// Gauge: Server-Sent Events subscribers.
    conns_sse,
    /// Gauge: HTTP-streaming subscribers.
    conns_stream,
    /// Gauge: long-polls being held.
    conns_poll,
    /// Gauge: Bayeux `/meta/connect`s being held (long-polling, callback-polling).
    conns_bayeux_poll,
    /// Gauge: Bayeux WebSocket connections.
    conns_bayeux_ws,
    /// Gauge: connections in a closing handshake or lingering close.
    conns_closing,
    /// Gauge: channels with subscribers in this worker.
    channels,
    /// Gauge: bytes waiting in outbound queues (what the kernel has not taken yet).
    bytes_queued,
    /// Connections accepted.
    accepted,
    /// Connections refused because `--max-connections` was reached (503, then closed).
    refused,
    /// accept(2) errors; EMFILE/ENFILE/ENOBUFS/ENOMEM also pause accepting.
    accept_errors,
    /// Messages published through `POST /pub/{channel}` on this worker.
    messages_in,
    /// Messages handed to subscribers (one per subscriber per message).
    messages_out,
    /// Data messages received from WebSocket clients.
    ws_messages_in,
    /// Bytes written to sockets.
    bytes_out,
    /// Messages discarded from slow consumers' queues.
    drops,
    /// Subscribers closed with 1008 because their queue passed `--max-queued-bytes`.
    slow_consumers,
    /// HTTP requests answered.
    http_requests,
    /// HTTP requests refused with a 4xx/5xx status.
    http_errors,
    /// Request heads over `--max-head-bytes` or `--max-headers` (414/431).
    head_too_large,
    /// Bodies over `--max-body-bytes` (413).
    body_too_large,
    /// Requests whose head did not complete within `--head-timeout` (408).
    head_timeouts,
    /// WebSocket connections failed with 1002 or 1007.
    ws_protocol_errors,
    /// WebSocket messages over `--max-message-bytes` (1009).
    ws_too_big,
    /// WebSocket connections closed for not answering a ping in time.
    ws_pong_timeouts,
    /// Closing handshakes that did not finish within `--close-timeout`.
    close_timeouts,
    /// Subscriptions refused because `--max-channels` was reached (503).
    channel_limit,
    /// Long-polls answered because `--poll-timeout` passed.
    poll_timeouts,
    /// Gap reports sent to subscribers (messages after their cursor were gone).
    gaps_reported,
    /// Messages from subscribers (POST body to /sub, WebSocket frame) published.
    client_messages,
    /// Messages from subscribers refused (no `--client-publish`: 403 / close 1008).
    client_publish_refused,
    /// Requests refused for an Origin not in `--allow-origin` (403).
    origin_refused,
    /// Long-polls with an unknown or expired `Client-Id` session (410).
    sessions_unknown,
    /// Bayeux messages received (all channels, meta included).
    bayeux_messages_in,
    /// Bayeux requests refused as a whole (not JSON, not messages, too many: 400).
    bayeux_bad_requests,
    /// Bayeux WebSocket messages naming another client than the one the connection acts for
    /// (answered `402`).
    bayeux_wrong_connection,
    /// Bayeux WebSocket connections closed after `--bayeux-max-interval` without a message.
    bayeux_ws_idle,
}

impl WorkerStats {
    /// The connection gauge of `phase`.
    pub fn phase_gauge(&self, phase: crate::runtime::conn::Phase) -> &AtomicU64 {
        use crate::runtime::conn::Phase;
        match phase {
            Phase::Http => &self.conns_http,
            Phase::WsSub => &self.conns_ws_sub,
            Phase::WsEcho => &self.conns_ws_echo,
            Phase::Sse => &self.conns_sse,
            Phase::Stream => &self.conns_stream,
            Phase::Poll => &self.conns_poll,
            Phase::BayeuxPoll => &self.conns_bayeux_poll,
            Phase::BayeuxWs => &self.conns_bayeux_ws,
            Phase::Closing => &self.conns_closing,
        }
    }

    /// Adds `n` to a counter this worker owns.
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Subtracts `n` from a gauge this worker owns.
    #[inline]
    pub fn sub(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed).wrapping_sub(n), Ordering::Relaxed);
    }
}

/// The `/stats` document: the process id, every worker, then the totals, then process-wide `extra` values
/// (the hub: history and sessions) under `"hub"`.
pub fn render_json(workers: &[&WorkerStats], extra: &[(&str, u64)]) -> String {
    let snaps: Vec<_> = workers.iter().map(|w| w.snapshot()).collect();
    // The pid tells processes sharing one port (SO_REUSEPORT) apart.
    let mut out = format!("{{\"pid\":{},\"workers\":[", std::process::id());
    for (i, s) in snaps.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"worker\":{i}");
        for (k, v) in s {
            let _ = write!(out, ",\"{k}\":{v}");
        }
        out.push('}');
    }
    out.push_str("],\"total\":{");
    if let Some(first) = snaps.first() {
        for (j, (k, _)) in first.iter().enumerate() {
            let sum: u64 = snaps.iter().map(|s| s[j].1).fold(0, u64::wrapping_add);
            if j > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{k}\":{sum}");
        }
    }
    out.push_str("},\"hub\":{");
    for (j, (k, v)) in extra.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        let _ = write!(out, "\"{k}\":{v}");
    }
    out.push_str("}}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_workers() {
        let a = WorkerStats::default();
        let b = WorkerStats::default();
        WorkerStats::add(&a.accepted, 2);
        WorkerStats::add(&b.accepted, 3);
        WorkerStats::add(&b.conns_ws_sub, 5);
        WorkerStats::sub(&b.conns_ws_sub, 1);
        let j = render_json(&[&a, &b], &[("sessions", 2)]);
        assert!(j.contains("\"hub\":{\"sessions\":2}"));
        assert!(j.starts_with(&format!("{{\"pid\":{},\"workers\":[", std::process::id())));
        assert!(j.contains("\"total\":{"));
        assert!(j.contains("\"worker\":1,"));
        let total = j.split("\"total\":").nth(1).unwrap();
        assert!(total.contains("\"accepted\":5"));
        assert!(total.contains("\"conns_ws_sub\":4"));
    }
}
