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
    /// `--broker`: HTTP publishes answered 504 because Redis did not answer within
    /// `--broker-ack-timeout` (they may or may not have been published).
    broker_ack_timeouts,
    /// Publishes and requests refused because a shutdown had begun (503 / close 1001): not
    /// accepted, so nothing of them is lost.
    refused_draining,
    /// Gauge: open connections on `--tls-listen` (also counted in their phase's `conns_*`).
    tls_conns,
    /// TLS handshakes completed (full and resumed).
    tls_handshakes,
    /// Of those, resumed (by ticket or session id).
    tls_resumed,
    /// TLS handshakes refused: no common version or cipher suite, a malformed or unexpected
    /// message, a renegotiation attempt. The client gets an alert and the connection ends.
    tls_handshake_errors,
    /// Bytes on the TLS port that were not TLS (plaintext HTTP is answered 400, plaintext).
    tls_not_tls,
    /// TLS handshakes not completed within `--head-timeout` (slow or stalled clients).
    tls_handshake_timeouts,
    /// Records after the handshake that did not decrypt or were otherwise bad (connection ended).
    tls_record_errors,
    /// TLS peers that closed the TCP connection without a close_notify alert.
    tls_no_close_notify,
    /// `POST /pub` refused for a missing or wrong publish key (`--publish-key`: 401).
    auth_publish_refused,
    /// Subscribe tokens accepted (a subscription, a push address, a Bayeux handshake).
    auth_tokens_accepted,
    /// Subscriptions refused: no token (401).
    auth_token_missing,
    /// Subscriptions refused: a malformed token, or one with an `alg` no key is configured for
    /// (`none`, an HS token with only public keys...) (401).
    auth_token_malformed,
    /// Subscriptions refused: the token's signature did not verify (401).
    auth_token_bad_signature,
    /// Subscriptions refused: the token had expired (401).
    auth_token_expired,
    /// Subscriptions refused: the token's `nbf` had not come (401).
    auth_token_not_yet_valid,
    /// Subscriptions refused: the token's `aud`/`iss` were not the configured ones (401).
    auth_token_claims,
    /// Subscriptions and client publishes refused: the token does not name the channel (403).
    auth_token_channel,
    /// Connections ended because their token expired (WebSocket close 4001, streams ended,
    /// held polls answered 401).
    auth_expired_closes,
    /// Private push addresses made (`POST /push/new`).
    push_addresses,
    /// Messages sent to push addresses (`/push/{address}`).
    push_messages,
    /// Sends to push addresses refused by the per-source rate limit (429).
    push_rate_limited,
    /// Sends to push addresses over `--push-max-bytes` (413).
    push_too_large,
    /// Gauge: `/dashboard/events` streams (at most `MAX_DASHBOARDS` per process).
    conns_dashboard,
}

impl WorkerStats {
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

/// This process's memory as `(rss, pss)` in bytes, from `/proc/self/smaps_rollup` (`Rss:`,
/// `Pss:`), read at most once per 500 ms and shared by every caller in between: the kernel walks
/// the page tables for it (1.96 ms per reading with 400 MiB resident on the 2-core test box; a
/// million idle subscribers are about 180 MB), and the caller is a worker answering `/stats`, so
/// `/stats`, the launcher's line and every dashboard stream share one reading. `(0, 0)` where it
/// cannot be read.
pub fn process_memory() -> (u64, u64) {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    static LAST: Mutex<Option<(Instant, (u64, u64))>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, v)) = *last
        && at.elapsed() < Duration::from_millis(500)
    {
        return v;
    }
    let v = std::fs::read_to_string("/proc/self/smaps_rollup")
        .map(|t| parse_rollup(&t))
        .unwrap_or((0, 0));
    *last = Some((Instant::now(), v));
    v
}

/// `(Rss, Pss)` in bytes from the text of `smaps_rollup` (values in kB).
fn parse_rollup(text: &str) -> (u64, u64) {
    let mut v = (0, 0);
    for line in text.lines() {
        let mut w = line.split_ascii_whitespace();
        let (Some(k), Some(n)) = (w.next(), w.next().and_then(|n| n.parse::<u64>().ok())) else {
            continue;
        };
        match k {
            "Rss:" => v.0 = n * 1024,
            "Pss:" => v.1 = n * 1024,
            _ => {}
        }
    }
    v
}

/// The `/stats` document: the process id, every worker, then the totals, then process-wide `extra` values
/// (the hub: history and sessions) under `"hub"`.
pub fn render_json(
    workers: &[&WorkerStats],
    extra: &[(&str, u64)],
    processes: Option<&str>,
) -> String {
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
    out.push('}');
    if let Some(p) = processes {
        let _ = write!(out, ",\"processes\":{p}");
    }
    out.push_str("}\n");
    out
}

/// This process's totals as one line for the launcher (`--processes`):
/// `PID total k=v … hub k=v …`.
pub fn render_line(workers: &[&WorkerStats], extra: &[(&str, u64)]) -> String {
    let snaps: Vec<_> = workers.iter().map(|w| w.snapshot()).collect();
    let mut out = format!("{} total", std::process::id());
    if let Some(first) = snaps.first() {
        for (j, (k, _)) in first.iter().enumerate() {
            let sum: u64 = snaps.iter().map(|s| s[j].1).fold(0, u64::wrapping_add);
            let _ = write!(out, " {k}={sum}");
        }
    }
    out.push_str(" hub");
    for (k, v) in extra {
        let _ = write!(out, " {k}={v}");
    }
    out.push('\n');
    out
}

/// The sum of several processes' [`render_line`]s, as the `"processes"` object of `/stats`:
/// `{"count":N,"reporting":R,"pids":[…],"open_per_process":[…],"rss_per_process":[…],`
/// `"pss_per_process":[…],"total":{…},"hub":{…}}`
/// (`open_per_process`, `rss_per_process`, `pss_per_process`: each process's open connections
/// and memory in bytes, in `pids` order; keys in the first line's order; a line that does not
/// parse is left out).
pub fn aggregate(count: usize, lines: &[&str]) -> String {
    let mut pids = Vec::new();
    // Open connections of each process (its `conns_*` gauges), in `pids` order.
    let mut open = Vec::new();
    // Each process's memory (`memory_rss_bytes`, `memory_pss_bytes` of its hub), in `pids` order.
    let (mut rss, mut pss) = (Vec::new(), Vec::new());
    let mut sums: [Vec<(String, u64)>; 2] = [Vec::new(), Vec::new()];
    for line in lines {
        let mut words = line.split_ascii_whitespace();
        let Some(pid) = words.next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let mut part = None;
        let mut parsed: [Vec<(&str, u64)>; 2] = [Vec::new(), Vec::new()];
        let mut ok = true;
        for w in words {
            match (w, w.split_once('=')) {
                ("total", _) => part = Some(0),
                ("hub", _) => part = Some(1),
                (_, Some((k, v))) if part.is_some() => match v.parse() {
                    Ok(v) => parsed[part.unwrap_or(0)].push((k, v)),
                    Err(_) => ok = false,
                },
                _ => ok = false,
            }
        }
        if !ok {
            continue;
        }
        pids.push(pid);
        let hub = |key: &str| parsed[1].iter().find(|(k, _)| *k == key).map_or(0, |e| e.1);
        rss.push(hub("memory_rss_bytes"));
        pss.push(hub("memory_pss_bytes"));
        open.push(
            parsed[0]
                .iter()
                .filter(|(k, _)| k.starts_with("conns_"))
                .map(|(_, v)| v)
                .fold(0u64, |a, v| a.wrapping_add(*v)),
        );
        for (sum, part) in sums.iter_mut().zip(parsed) {
            for (k, v) in part {
                match sum.iter_mut().find(|(n, _)| n == k) {
                    Some(e) => e.1 = e.1.wrapping_add(v),
                    None => sum.push((k.to_string(), v)),
                }
            }
        }
    }
    let mut out = format!(
        "{{\"count\":{count},\"reporting\":{},\"pids\":[",
        pids.len()
    );
    for (i, p) in pids.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{p}");
    }
    out.push_str("],\"open_per_process\":[");
    for (i, n) in open.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{n}");
    }
    out.push(']');
    for (name, per) in [("rss_per_process", &rss), ("pss_per_process", &pss)] {
        let _ = write!(out, ",\"{name}\":[");
        for (i, n) in per.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{n}");
        }
        out.push(']');
    }
    for (name, sum) in ["total", "hub"].iter().zip(&sums) {
        let _ = write!(out, ",\"{name}\":{{");
        for (i, (k, v)) in sum.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{k}\":{v}");
        }
        out.push('}');
    }
    out.push('}');
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
        let j = render_json(&[&a, &b], &[("sessions", 2)], None);
        assert!(j.contains("\"hub\":{\"sessions\":2}"));
        assert!(j.starts_with(&format!("{{\"pid\":{},\"workers\":[", std::process::id())));
        assert!(j.contains("\"total\":{"));
        assert!(j.contains("\"worker\":1,"));
        let total = j.split("\"total\":").nth(1).unwrap();
        assert!(total.contains("\"accepted\":5"));
        assert!(total.contains("\"conns_ws_sub\":4"));
    }

    #[test]
    fn processes_are_summed() {
        let a = WorkerStats::default();
        WorkerStats::add(&a.accepted, 2);
        WorkerStats::add(&a.conns_ws_sub, 7);
        let line = render_line(&[&a, &a], &[("sessions", 1), ("broker_connected", 1)]);
        assert!(line.ends_with('\n'));
        let other = "99 total accepted=10 conns_ws_sub=3 hub sessions=4 broker_connected=1";
        let agg = aggregate(
            3,
            &[line.trim_end(), other, "garbage", "7 total accepted=x"],
        );
        assert!(
            agg.starts_with(&format!(
                "{{\"count\":3,\"reporting\":2,\"pids\":[{},99],\"open_per_process\":[14,3],\
                 \"rss_per_process\":[0,0],\"pss_per_process\":[0,0],\"total\":{{",
                std::process::id()
            )),
            "{agg}"
        );
        assert!(agg.contains("\"accepted\":14,"), "{agg}");
        assert!(agg.contains("\"conns_ws_sub\":17,"), "{agg}");
        assert!(
            agg.ends_with("\"hub\":{\"sessions\":5,\"broker_connected\":2}}"),
            "{agg}"
        );
        let j = render_json(&[&a], &[], Some(&agg));
        assert!(j.ends_with(&format!(",\"processes\":{agg}}}\n")), "{j}");
    }

    #[test]
    fn memory_per_process_follows_pids() {
        let agg = aggregate(
            2,
            &[
                "98 total conns_sse=2 hub memory_rss_bytes=4096 memory_pss_bytes=2048",
                "97 total conns_sse=1 hub memory_rss_bytes=100 memory_pss_bytes=50",
            ],
        );
        assert!(
            agg.contains(
                "\"pids\":[98,97],\"open_per_process\":[2,1],\"rss_per_process\":[4096,100],\
                 \"pss_per_process\":[2048,50],"
            ),
            "{agg}"
        );
        assert!(agg.contains("\"memory_pss_bytes\":2098"), "{agg}");
    }

    #[test]
    fn smaps_rollup_is_read_in_bytes() {
        let text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:  1200 kB\nPss:  1000 kB\n\
                    Pss_Anon:  800 kB\nSwapPss: 0 kB\n";
        assert_eq!(parse_rollup(text), (1200 * 1024, 1000 * 1024));
        let (rss, pss) = process_memory();
        assert!(rss > 0 && pss > 0 && pss <= rss, "{rss} {pss}");
    }
}
