//! Per-worker counters, readable from any thread for `/stats`.
//!
//! Each worker owns one [`WorkerStats`] and is its only writer, so updates are a relaxed load
//! and store (no locked read-modify-write on the hot path); readers on other threads may see a
//! value a few events old, which is fine for monitoring.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

mod exposition;

/// Declares a struct of `AtomicU64` figures for `/stats` and `/metrics`: each field's doc comment
/// is its help text (`# HELP`), written once. A doc that begins with `Gauge:` makes it a gauge
/// (a current value); any other is a counter (a total since start). `field as "name"` exposes
/// the field under another name (`stale as "stale_ids"`). After a `;`, histograms
/// (`name = Histogram::new(&BOUNDS)`, also with their doc) may follow.
///
/// Generates the struct, `Default`, `META` (name and doc of every figure, in declaration order),
/// `HISTOGRAMS` (the same of the histograms) and `snapshot()` (`(name, value)` in `META`'s order).
macro_rules! counters {
    (
        $(#[doc = $sdoc:literal])*
        pub struct $S:ident {
            $( $(#[doc = $doc:literal])* $field:ident $(as $name:literal)? ),* $(,)?
            $( ; $( $(#[doc = $hdoc:literal])* $hf:ident = $hinit:expr ),* $(,)? )?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug)]
        pub struct $S {
            $( $(#[doc = $doc])* pub $field: std::sync::atomic::AtomicU64, )*
            $($( $(#[doc = $hdoc])* pub $hf: $crate::stats::Histogram, )*)?
        }

        impl Default for $S {
            fn default() -> Self {
                $S {
                    $( $field: std::sync::atomic::AtomicU64::new(0), )*
                    $($( $hf: $hinit, )*)?
                }
            }
        }

        impl $S {
            /// Name and doc of every figure, in declaration order (what `/metrics` writes as
            /// `# HELP` and `# TYPE`).
            pub const META: &'static [$crate::stats::Meta] = &[
                $( $crate::stats::Meta {
                    name: $crate::stats::counters!(@name $field $($name)?),
                    doc: concat!($($doc),*),
                }, )*
            ];

            /// Name and doc of every histogram, in declaration order.
            pub const HISTOGRAMS: &'static [$crate::stats::Meta] = &[
                $($( $crate::stats::Meta { name: stringify!($hf), doc: concat!($($hdoc),*) }, )*)?
            ];

            /// `(name, value)` for every figure, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$( (
                    $crate::stats::counters!(@name $field $($name)?),
                    self.$field.load(std::sync::atomic::Ordering::Relaxed),
                ), )*]
            }
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $name:literal) => { $name };
}
pub(crate) use counters;

counters! {
    /// Counters of one worker. Gauges (current values) and totals (since start) side by side,
    /// then the two histograms.
    pub struct WorkerStats {
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
        /// Gauge: Socket.IO WebSocket connections (sessions on WebSocket, and upgrades being
        /// probed).
        conns_sio_ws,
        /// Gauge: Socket.IO long-poll GETs being held.
        conns_sio_poll,
        /// Gauge: Socket.IO (Engine.IO) sessions, on either transport.
        sio_sessions,
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
        /// Messages posted to this worker by its peers or the broker thread: only to the
        /// workers with subscribers of the channel (or of a pattern covering it).
        peer_messages,
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
        /// WebSocket upgrades that agreed to permessage-deflate (`--deflate on`).
        ws_deflate_agreed,
        /// Compressed (RSV1) messages received from WebSocket clients, inflated.
        ws_deflated_in,
        /// Frames sent compressed to WebSocket clients that agreed to permessage-deflate (a
        /// message is compressed once; this counts the deliveries of compressed frames).
        ws_deflated_out,
        /// Compressed client messages that inflated past `--max-message-bytes`: closed with
        /// 1009 once that many bytes were made (a decompression bomb).
        ws_inflate_too_big,
        /// Compressed client messages that were not valid DEFLATE data (corrupt, cut short
        /// inside a block, or with bytes after a final block): closed with 1007.
        ws_inflate_errors,
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
        /// Socket.IO sessions opened (Engine.IO handshakes).
        sio_opened,
        /// Socket.IO handshakes refused because `--socketio-max-sessions` sessions existed (503).
        sio_sessions_refused,
        /// Socket.IO sessions upgraded from long-polling to WebSocket.
        sio_upgrades,
        /// Socket.IO sessions closed for not answering a ping within the ping timeout.
        sio_ping_timeouts,
        /// Socket.IO sessions closed for sending no CONNECT within the connect timeout.
        sio_connect_timeouts,
        /// Socket.IO sessions closed for a packet that is not Engine.IO / Socket.IO, or not
        /// allowed in the session's state (bad JSON, bad ack id, attachment counts that lie, a
        /// payload over `--socketio-max-payload`, two GETs at once on one session).
        sio_protocol_errors,
        /// Socket.IO requests for a session that does not exist (any more): 400 "Session ID
        /// unknown".
        sio_unknown_sid,
        /// Socket.IO requests moved to the worker that owns their session.
        sio_handoffs,
        /// Socket.IO CONNECTs refused (CONNECT_ERROR: unknown namespace, channel, token).
        sio_connect_errors,
        /// Socket.IO connections recovered (`--socketio-recovery`): the client came back within
        /// the window and got what it had missed.
        sio_recovered,
        /// Socket.IO reconnections that asked for recovery and could not have it (no record:
        /// too late, several channels, another process; or the history no longer reaches back):
        /// the client is told (`socket.recovered` false).
        sio_not_recovered,
        /// Lost Socket.IO connections that kept no record because `--socketio-recovery-max`
        /// records existed.
        sio_recovery_full,
        /// Socket.IO packets (CONNECT, EVENT, ACK…) received from clients.
        sio_packets_in,
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
        conns_dashboard;
        /// Seconds from a message entering the process (`Shared::enter`: a local publish, or a
        /// message read from Redis) to the end of this worker's fan-out writes of it (each of its
        /// channel's WebSocket, SSE and streaming subscribers on this worker written to or
        /// queued); kept in microseconds, observed once per message per worker with subscribers.
        publish_write = Histogram::new(&PUBLISH_WRITE_US),
        /// Bytes still queued for a connection when it was removed (what the kernel never took:
        /// lost with it). Observed once per connection.
        queued_at_close = Histogram::new(&QUEUED_AT_CLOSE_BYTES),
    }
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

/// Whether a figure is a current value or a total since start (Prometheus `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A figure's name and doc comment, as [`counters!`] declared it.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub name: &'static str,
    /// The doc comment's lines, joined (each begins with the space after `///`).
    pub doc: &'static str,
}

impl Meta {
    /// A doc beginning with `Gauge:` declares a gauge.
    pub fn kind(&self) -> Kind {
        if self.doc.trim_start().starts_with("Gauge:") {
            Kind::Gauge
        } else {
            Kind::Counter
        }
    }

    /// The help text: the doc on one line, without the `Gauge:` mark.
    pub fn help(&self) -> String {
        let d = self.doc.trim();
        let d = d.strip_prefix("Gauge:").unwrap_or(d).trim_start();
        let mut out = String::with_capacity(d.len());
        for w in d.split_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(w);
        }
        // Sentence case, as the doc is written mid-sentence after `Gauge:`.
        match out.chars().next() {
            Some(c) if c.is_ascii_lowercase() => {
                out.replace_range(..1, &c.to_ascii_uppercase().to_string())
            }
            _ => {}
        }
        out
    }
}

/// Most buckets of a [`Histogram`] (bounds, plus the one above the last bound).
const MAX_BUCKETS: usize = 24;

/// Upper bounds of `publish_write`, in microseconds: 50 µs to 10 s. A local fan-out to a few
/// thousand subscribers lies in the first buckets; the broker's round trip, a busy loop turn or
/// a stuck worker in the later ones.
pub const PUBLISH_WRITE_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds of `queued_at_close`, in bytes: nothing queued (the usual close), then powers of
/// four from 256 B up to 16 MiB (past `--max-queued-bytes`' default of 1 MiB a connection is a
/// slow consumer).
pub const QUEUED_AT_CLOSE_BYTES: [u64; 11] = [
    0, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864,
];

/// A histogram with fixed bucket bounds, one writer (the worker owning it: a relaxed load and
/// store per update, like the counters), read by any thread. Each bucket counts the values that
/// fell in it (not cumulatively: the writer touches one bucket); the reader sums.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds (inclusive, ascending); values above the last go to the last bucket.
    bounds: &'static [u64],
    buckets: [AtomicU64; MAX_BUCKETS],
    sum: AtomicU64,
}

/// A [`Histogram`] read at one moment: cumulative counts per bound (`le`), then `+Inf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds: &'static [u64],
    /// `cumulative[i]`: observations ≤ `bounds[i]`; the last entry (one more than `bounds`) is
    /// the count of all of them.
    pub cumulative: Vec<u64>,
    pub sum: u64,
}

impl Histogram {
    /// `bounds`: ascending, fewer than `MAX_BUCKETS` (24).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        assert!(bounds.len() < MAX_BUCKETS && bounds.is_sorted());
        Histogram {
            bounds,
            buckets: Default::default(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records `v`: by the histogram's only writer.
    #[inline]
    pub fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|&b| b < v);
        WorkerStats::add(&self.buckets[i], 1);
        WorkerStats::add(&self.sum, v);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0u64;
        let cumulative = self.buckets[..=self.bounds.len()]
            .iter()
            .map(|b| {
                acc = acc.wrapping_add(b.load(Ordering::Relaxed));
                acc
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

pub use exposition::{
    EXPOSITION_CONTENT_TYPE, Exposition, escape_help, escape_label, metric_name, scaled,
};

/// The sums of `--processes` ([`aggregate`]'s document) read back for `/metrics`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub count: u64,
    pub reporting: u64,
    pub total: Vec<(String, u64)>,
    pub hub: Vec<(String, u64)>,
}

/// Reads [`aggregate`]'s document (flat objects of integers, written by us); `None` if it is not
/// one.
pub fn parse_sums(doc: &str) -> Option<Sums> {
    fn int(doc: &str, key: &str) -> Option<u64> {
        let rest = &doc[doc.find(&format!("\"{key}\":"))? + key.len() + 3..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    }
    fn object(doc: &str, key: &str) -> Option<Vec<(String, u64)>> {
        let start = doc.find(&format!("\"{key}\":{{"))? + key.len() + 4;
        let body = &doc[start..start + doc[start..].find('}')?];
        body.split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once(':')?;
                Some((k.trim_matches('"').to_string(), v.parse().ok()?))
            })
            .collect()
    }
    Some(Sums {
        count: int(doc, "count")?,
        reporting: int(doc, "reporting")?,
        total: object(doc, "total")?,
        hub: object(doc, "hub")?,
    })
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

    #[test]
    fn sums_read_back() {
        let line = "5 total accepted=2 conns_sse=1 hub sessions=4";
        let agg = aggregate(3, &[line, "6 total accepted=3 conns_sse=0 hub sessions=1"]);
        let s = parse_sums(&agg).unwrap();
        assert_eq!(s.count, 3);
        assert_eq!(s.reporting, 2);
        assert_eq!(
            s.total,
            vec![("accepted".to_string(), 5), ("conns_sse".to_string(), 1)]
        );
        assert_eq!(s.hub, vec![("sessions".to_string(), 5)]);
        assert_eq!(parse_sums("not json"), None);
        let empty = parse_sums(&aggregate(2, &[])).unwrap();
        assert_eq!((empty.reporting, empty.total.len()), (0, 0));
    }

    #[test]
    fn docs_are_help_and_kind() {
        let m = |name| WorkerStats::META.iter().find(|m| m.name == name).unwrap();
        assert_eq!(m("conns_http").kind(), Kind::Gauge);
        assert_eq!(
            m("conns_http").help(),
            "Open connections still speaking HTTP (requests, keep-alive)."
        );
        assert_eq!(m("accepted").kind(), Kind::Counter);
        // A doc over two lines is one line of help.
        assert_eq!(
            m("bayeux_wrong_connection").help(),
            "Bayeux WebSocket messages naming another client than the one the connection acts \
             for (answered `402`)."
        );
        // Every figure has a doc, and META follows snapshot's order.
        let snap = WorkerStats::default().snapshot();
        assert_eq!(snap.len(), WorkerStats::META.len());
        for ((name, _), meta) in snap.iter().zip(WorkerStats::META) {
            assert_eq!(*name, meta.name);
            assert!(!meta.help().is_empty(), "{name} has no doc");
        }
        assert_eq!(WorkerStats::HISTOGRAMS.len(), 2);
        assert!(
            WorkerStats::HISTOGRAMS[0]
                .help()
                .starts_with("Seconds from a message")
        );
    }

    #[test]
    fn exposition_format() {
        let mut x = Exposition::new();
        let meta = Meta {
            name: "odd",
            doc: " A help with a back\\slash,\n a \"quote\" and a line feed.",
        };
        x.family(
            &metric_name("edgecomet_", meta.name, meta.kind()),
            "counter",
            "line one\nline two \\ end",
        );
        x.sample("edgecomet_odd_total", &[("worker", "0")], 7);
        x.sample("edgecomet_odd_total", &[("path", "a\"b\\c\nd")], 8);
        x.family("edgecomet_plain", "gauge", &meta.help());
        x.sample("edgecomet_plain", &[], 1.5);
        let out = x.finish();
        assert_eq!(
            out,
            "# HELP edgecomet_odd_total line one\\nline two \\\\ end\n\
             # TYPE edgecomet_odd_total counter\n\
             edgecomet_odd_total{worker=\"0\"} 7\n\
             edgecomet_odd_total{path=\"a\\\"b\\\\c\\nd\"} 8\n\
             # HELP edgecomet_plain A help with a back\\\\slash, a \"quote\" and a line feed.\n\
             # TYPE edgecomet_plain gauge\n\
             edgecomet_plain 1.5\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_inf() {
        static BOUNDS: [u64; 3] = [10, 100, 1_000_000];
        let h = Histogram::new(&BOUNDS);
        for v in [0, 10, 11, 100, 5_000_000, 250] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![2, 4, 5, 6]);
        assert_eq!(s.sum, 5_000_371);
        let mut x = Exposition::new();
        x.family("t_seconds", "histogram", "h");
        x.histogram("t_seconds", &[("worker", "1")], &s, 1_000_000);
        assert_eq!(
            x.finish(),
            "# HELP t_seconds h\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{worker=\"1\",le=\"0.00001\"} 2\n\
             t_seconds_bucket{worker=\"1\",le=\"0.0001\"} 4\n\
             t_seconds_bucket{worker=\"1\",le=\"1\"} 5\n\
             t_seconds_bucket{worker=\"1\",le=\"+Inf\"} 6\n\
             t_seconds_sum{worker=\"1\"} 5.000371\n\
             t_seconds_count{worker=\"1\"} 6\n"
        );
        // Without labels, `le` alone.
        let mut x = Exposition::new();
        x.histogram("b", &[], &Histogram::new(&BOUNDS).snapshot(), 1);
        assert!(x.finish().starts_with("b_bucket{le=\"10\"} 0\n"));
    }

    #[test]
    fn scaled_is_exact() {
        assert_eq!(scaled(50, 1_000_000), "0.00005");
        assert_eq!(scaled(2_500_000, 1_000_000), "2.5");
        assert_eq!(scaled(3_000_000, 1_000_000), "3");
        assert_eq!(scaled(0, 1_000_000), "0");
        assert_eq!(scaled(1_234, 1), "1234");
    }
}
