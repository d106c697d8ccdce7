//! What the coordinator and a worker process say to each other: the [`WorkerPlan`] a worker is
//! started with (JSON on its command line) and the [`Line`]s it writes back (JSON lines on its
//! stdout: [`Progress`] every 250 ms, one [`Final`] at the end), with the [`Errors`] they count.
//! Data only: the coordinator ([`crate::coordinator`]) and the worker ([`crate::engine`]) both
//! depend on this module, never the other way round.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::bayeux::ConnType;
use crate::socketio::SioTransport;
use crate::tls::TlsPlan;

/// How a connection subscribes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// WebSocket: `GET /sub/{channel}` with an upgrade; each message is a text frame.
    #[default]
    Ws,
    /// Server-Sent Events: `GET /sub/{channel}` with `Accept: text/event-stream`.
    Sse,
    /// JSON long-poll: `GET /sub/{channel}?cursor=ID` with `Accept: application/json`, again and
    /// again on one keep-alive connection.
    Longpoll,
    /// CometD/Bayeux 1.0 on the Bayeux endpoint: `/meta/handshake`, `/meta/subscribe` to the
    /// channel, then `/meta/connect` again and again, over long-polling (one keep-alive
    /// connection) or a WebSocket (`--bayeux-transport`). Messages arrive in connect replies.
    Bayeux,
    /// Socket.IO v5 over Engine.IO v4 on `--socketio-path`: the handshake, a CONNECT to the main
    /// namespace asking for the channel (`auth.channels`), then events, over a WebSocket or
    /// long-polling (`--socketio-transport`).
    Socketio,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Longpoll => "longpoll",
            Transport::Bayeux => "bayeux",
            Transport::Socketio => "socketio",
        }
    }
}

/// What the coordinator tells a worker to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub index: u32,
    pub conns: u64,
    /// Global index of this worker's first connection (channel = global index % channels).
    pub offset: u64,
    /// Connections per second for this worker; `None` = as fast as possible.
    pub rate: Option<f64>,
    /// Server addresses; connection g goes to `targets[g % len]`.
    pub targets: Vec<SocketAddr>,
    pub host: String,
    /// Path prefix without the channel, e.g. `/sub/`.
    pub path_prefix: String,
    pub channel: String,
    pub channels: u32,
    pub sources: Vec<Ipv4Addr>,
    pub connect_timeout_ms: u64,
    /// Connections in progress at once (connect + handshake).
    pub max_in_flight: usize,
    pub transport: Transport,
    /// Bayeux: long-polling or websocket.
    #[serde(default)]
    pub bayeux: ConnType,
    /// Bayeux: the endpoint's path (`/cometd`).
    #[serde(default)]
    pub bayeux_path: String,
    /// Socket.IO: websocket or polling.
    #[serde(default)]
    pub socketio: SioTransport,
    /// Socket.IO: the endpoint's path (`/socket.io/`).
    #[serde(default)]
    pub socketio_path: String,
    /// Socket.IO: the name of the event that carries a message (`message`).
    #[serde(default)]
    pub socketio_event: String,
    /// A subscribe token (`--token`): `Authorization: Bearer` for WebSocket, SSE and long-poll,
    /// `ext.auth.token` in the Bayeux handshake, `auth.token` in the Socket.IO CONNECT.
    #[serde(default)]
    pub token: Option<String>,
    /// Fraction of the connections that read slowly once open (which ones: [`is_slow`]).
    #[serde(default)]
    pub slow_fraction: f64,
    /// Bytes per second each slow reader reads; 0 = nothing once open.
    #[serde(default)]
    pub slow_read_rate: u64,
    /// Once every connection has been attempted: open connections closed by this client per
    /// second, each replaced by a new one (`--churn`).
    #[serde(default)]
    pub churn_rate: f64,
    /// Messages with a sequence number below this are broadcasts (`--broadcasts`): their
    /// deliveries and latest latency are kept per number; later numbers are the publish load.
    #[serde(default)]
    pub broadcasts: u32,
    /// `wss://` or `https://`: how to verify the server and whether to resume sessions; `None`:
    /// plaintext.
    #[serde(default)]
    pub tls: Option<TlsPlan>,
    /// `--deflate`: every WebSocket upgrade offers permessage-deflate ([`crate::deflate`]).
    #[serde(default)]
    pub deflate: bool,
}

/// Whether connection `g` (global index) is a slow reader when a fraction `f` of them are:
/// every time the running count `floor(g * f)` steps up, so that slow readers are spread evenly
/// (f = 0.1: connections 9, 19, 29, ...) and the total is `floor(N * f)` whatever the split into
/// processes.
pub fn is_slow(g: u64, f: f64) -> bool {
    f > 0.0 && ((g + 1) as f64 * f).floor() > (g as f64 * f).floor()
}

/// Errors by kind, as the summary names them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Errors {
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    pub eaddrnotavail: u64,
    pub emfile: u64,
    /// The server answered the upgrade with something other than 101 (WebSocket), the stream
    /// or a poll with something other than 200 (SSE, long-poll).
    pub http_status: u64,
    /// The server sent something this client cannot parse (a malformed response, a long-poll
    /// answer that is not the documented JSON, a frame or event over 64 MiB).
    #[serde(default)]
    pub protocol: u64,
    /// The server closed an established connection (close frame or EOF) before the end.
    pub closed_by_server: u64,
    /// A Bayeux meta reply failed (`successful` not true: `402::Unknown client`, a refused
    /// handshake or subscribe) or advised `reconnect: handshake` / `none`. A real client would
    /// handshake again and lose what was queued for the old one; flood counts it and closes the
    /// connection instead, so that the loss is never silent.
    #[serde(default)]
    pub bayeux: u64,
    /// The Socket.IO server refused the CONNECT (`44{"message":…}`: a refused token or
    /// channel, an unknown namespace).
    #[serde(default)]
    pub socketio: u64,
    /// TLS: the handshake failed (an alert from the server, no common version or cipher suite,
    /// a malformed message, a bad record afterwards).
    #[serde(default)]
    pub tls_handshake: u64,
    /// TLS: the server's certificate was refused (not signed by `--ca`, another name, expired).
    #[serde(default)]
    pub tls_cert: u64,
    /// The WebSocket upgrade's answer named an extension flood did not offer (any, without
    /// `--deflate`), or accepted permessage-deflate with a parameter unknown, repeated or out
    /// of range: RFC 6455 has the client fail the connection.
    #[serde(default)]
    pub ws_extension: u64,
    /// A compressed message (permessage-deflate) that did not inflate: not DEFLATE data, or
    /// over 64 MiB inflated.
    #[serde(default)]
    pub inflate: u64,
    pub other: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.refused
            + self.reset
            + self.timeout
            + self.eaddrnotavail
            + self.emfile
            + self.http_status
            + self.protocol
            + self.bayeux
            + self.socketio
            + self.tls_handshake
            + self.tls_cert
            + self.ws_extension
            + self.inflate
            + self.other
    }

    pub fn add(&mut self, o: &Errors) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.eaddrnotavail += o.eaddrnotavail;
        self.emfile += o.emfile;
        self.http_status += o.http_status;
        self.protocol += o.protocol;
        self.closed_by_server += o.closed_by_server;
        self.bayeux += o.bayeux;
        self.socketio += o.socketio;
        self.tls_handshake += o.tls_handshake;
        self.tls_cert += o.tls_cert;
        self.ws_extension += o.ws_extension;
        self.inflate += o.inflate;
        self.other += o.other;
    }

    /// Every kind with its count, named as in the JSON report (`closed_by_server` too, which
    /// [`Errors::total`] leaves out: a close of an open connection, not a failure to open).
    pub fn kinds(&self) -> [(&'static str, u64); 15] {
        [
            ("refused", self.refused),
            ("reset", self.reset),
            ("timeout", self.timeout),
            ("eaddrnotavail", self.eaddrnotavail),
            ("emfile", self.emfile),
            ("http_status", self.http_status),
            ("protocol", self.protocol),
            ("bayeux", self.bayeux),
            ("socketio", self.socketio),
            ("tls_handshake", self.tls_handshake),
            ("tls_cert", self.tls_cert),
            ("ws_extension", self.ws_extension),
            ("inflate", self.inflate),
            ("other", self.other),
            ("closed_by_server", self.closed_by_server),
        ]
    }

    /// The kinds that occurred (count above 0), in [`Errors::kinds`] order.
    pub fn occurred(&self) -> Vec<(&'static str, u64)> {
        self.kinds().into_iter().filter(|&(_, n)| n > 0).collect()
    }

    /// What was counted since `before` (an earlier reading of the same counters).
    pub fn since(&self, before: &Errors) -> Errors {
        Errors {
            refused: self.refused.saturating_sub(before.refused),
            reset: self.reset.saturating_sub(before.reset),
            timeout: self.timeout.saturating_sub(before.timeout),
            eaddrnotavail: self.eaddrnotavail.saturating_sub(before.eaddrnotavail),
            emfile: self.emfile.saturating_sub(before.emfile),
            http_status: self.http_status.saturating_sub(before.http_status),
            protocol: self.protocol.saturating_sub(before.protocol),
            closed_by_server: self
                .closed_by_server
                .saturating_sub(before.closed_by_server),
            bayeux: self.bayeux.saturating_sub(before.bayeux),
            socketio: self.socketio.saturating_sub(before.socketio),
            tls_handshake: self.tls_handshake.saturating_sub(before.tls_handshake),
            tls_cert: self.tls_cert.saturating_sub(before.tls_cert),
            ws_extension: self.ws_extension.saturating_sub(before.ws_extension),
            inflate: self.inflate.saturating_sub(before.inflate),
            other: self.other.saturating_sub(before.other),
        }
    }

    /// Counts a socket error under its kind.
    pub fn count(&mut self, e: &io::Error) {
        let slot = match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => &mut self.refused,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) => &mut self.reset,
            Some(libc::ETIMEDOUT) => &mut self.timeout,
            Some(libc::EADDRNOTAVAIL) | Some(libc::EADDRINUSE) => &mut self.eaddrnotavail,
            Some(libc::EMFILE) | Some(libc::ENFILE) => &mut self.emfile,
            _ => &mut self.other,
        };
        *slot += 1;
    }
}

/// Progress line, sent every 250 ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub index: u32,
    pub established: u64,
    /// Connections that became open since the start (`established` is those open now).
    #[serde(default)]
    pub opened: u64,
    /// Open connections this worker closed for a lower `target` (`--stages`).
    #[serde(default)]
    pub stage_closed: u64,
    /// Latencies (microseconds, count) recorded since the previous progress line.
    #[serde(default)]
    pub latency_tick: Vec<(u64, u64)>,
    pub attempted: u64,
    pub errors: Errors,
    pub deliveries: u64,
    /// Every connection has been attempted and is either open or failed.
    pub ramp_done: bool,
    /// Seconds from the first connect to the last connection settled.
    pub ramp_secs: f64,
    /// Connections this client closed to replace them (`--churn`).
    #[serde(default)]
    pub churned: u64,
    /// Seconds from the first of those closes to the last.
    #[serde(default)]
    pub churn_secs: f64,
    /// TLS handshakes completed, those that resumed a session, and those completed before the
    /// ramp ended (for the handshake rate of the ramp).
    #[serde(default)]
    pub tls_handshakes: u64,
    #[serde(default)]
    pub tls_resumed: u64,
    #[serde(default)]
    pub tls_ramp_handshakes: u64,
    /// WebSocket frames, bytes and permessage-deflate (zero for the other transports).
    #[serde(default)]
    pub ws: WsWire,
}

/// What a worker's WebSocket connections received, and whether permessage-deflate was agreed:
/// running totals, summed over workers ([`WsWire::add`]).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WsWire {
    /// Upgrades whose answer accepted permessage-deflate, and (`--deflate`) answers without it.
    pub deflate_negotiated: u64,
    pub deflate_declined: u64,
    /// Of those accepted, the ones without `server_no_context_takeover`: each such connection
    /// keeps an inflater of its own (43 KB: miniz_oxide's state, its 32 KiB window
    /// included) for as long as it is open.
    pub deflate_takeover: u64,
    /// Data frames (text, binary, continuation) of compressed messages, and of the others.
    pub frames_compressed: u64,
    pub frames_uncompressed: u64,
    /// Those frames' bytes as received (headers and payloads), and their messages' payload
    /// bytes once inflated (the same for uncompressed ones).
    pub wire_bytes: u64,
    pub payload_bytes: u64,
}

impl WsWire {
    pub fn add(&mut self, o: &WsWire) {
        self.deflate_negotiated += o.deflate_negotiated;
        self.deflate_declined += o.deflate_declined;
        self.deflate_takeover += o.deflate_takeover;
        self.frames_compressed += o.frames_compressed;
        self.frames_uncompressed += o.frames_uncompressed;
        self.wire_bytes += o.wire_bytes;
        self.payload_bytes += o.payload_bytes;
    }
}

/// The final report of one worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Final {
    pub progress: Progress,
    /// Per channel: (channel index, connections on it that were open at the end, unique
    /// messages they received in total).
    pub per_channel: Vec<(u32, u64, u64)>,
    pub duplicated: u64,
    pub reordered: u64,
    /// Frames whose payload did not carry our sequence header (not counted for loss).
    pub foreign: u64,
    /// Gaps the server reported (SSE `gap` events, long-poll `gap` fields): messages it could
    /// no longer deliver.
    #[serde(default)]
    pub gaps: u64,
    /// Slow readers (`--slow-readers`) still open at the end, closed by the server meanwhile
    /// (a slow consumer let go: not an error), and the messages they read. They are left out of
    /// `per_channel`, loss, latency and `deliveries`.
    #[serde(default)]
    pub slow_open: u64,
    #[serde(default)]
    pub slow_closed: u64,
    #[serde(default)]
    pub slow_deliveries: u64,
    /// Per broadcast (sequence number below [`WorkerPlan::broadcasts`]): (deliveries, latest
    /// latency in microseconds).
    #[serde(default)]
    pub broadcasts: Vec<(u64, u64)>,
    /// Deliveries of the publish load (numbers from [`WorkerPlan::broadcasts`] on), and when
    /// the last of them arrived (CLOCK_MONOTONIC ns, 0 = none).
    #[serde(default)]
    pub load_deliveries: u64,
    #[serde(default)]
    pub load_last_ns: u64,
    /// Latency histogram, as (microseconds, count) pairs.
    pub latency: Vec<(u64, u64)>,
    /// This process's PSS before connecting and with every connection open.
    pub pss_before: u64,
    pub pss_open: u64,
    /// The first TLS failure's text (rustls'), to say what went wrong.
    #[serde(default)]
    pub tls_first_error: Option<String>,
    /// The first failed WebSocket extension answer, as [`crate::deflate::answer`] says why.
    #[serde(default)]
    pub ws_extension_first_error: Option<String>,
}

/// The lines a worker writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
// A few lines a second pass through a channel: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Line {
    Progress(Progress),
    Final(Box<Final>),
}

/// The channel name of channel index `c` of `k` (`name` itself when k = 1).
pub fn channel_name(name: &str, c: u32, k: u32) -> String {
    if k <= 1 {
        name.to_string()
    } else {
        format!("{name}-{c}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_readers_are_spread_evenly_and_counted_exactly() {
        let slow = |n: u64, f: f64| (0..n).filter(|&g| is_slow(g, f)).count() as u64;
        assert_eq!(slow(1000, 0.0), 0);
        assert_eq!(slow(1000, 1.0), 1000);
        assert_eq!(slow(1000, 0.1), 100);
        assert_eq!(slow(1000, 0.5), 500);
        assert_eq!(slow(10, 0.25), 2);
        let first: Vec<u64> = (0..40).filter(|&g| is_slow(g, 0.1)).collect();
        assert_eq!(first, [9, 19, 29, 39]);
        // The split into processes does not matter: the index is global.
        assert_eq!(
            slow(500, 0.1) + (500..1000).filter(|&g| is_slow(g, 0.1)).count() as u64,
            100
        );
    }
    #[test]
    fn error_kinds_are_named_as_in_the_json_and_only_occurred_ones_listed() {
        let e = Errors {
            refused: 2,
            closed_by_server: 1,
            tls_cert: 5,
            ..Errors::default()
        };
        let json = serde_json::to_value(&e).unwrap();
        let obj = json.as_object().unwrap();
        assert_eq!(obj.len(), e.kinds().len());
        for (name, n) in e.kinds() {
            assert_eq!(obj[name], n, "{name}");
        }
        assert_eq!(
            e.occurred(),
            [("refused", 2), ("tls_cert", 5), ("closed_by_server", 1)]
        );
        assert!(Errors::default().occurred().is_empty());
        let later = Errors {
            refused: 7,
            ..e.clone()
        };
        assert_eq!(later.since(&e).occurred(), [("refused", 5)]);
    }

    #[test]
    fn channel_names() {
        assert_eq!(channel_name("bench", 0, 1), "bench");
        assert_eq!(channel_name("bench", 3, 8), "bench-3");
    }
}
