//! Command-line flags and the limits they set. Every limit the server enforces is here, with its
//! default and the reason for it; `edgecomet --help` prints the same text.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

pub mod file;
pub mod units;

pub use file::{LoadError, Loaded, command, env_name, example};

/// A Comet server for a million concurrent long-lived connections: WebSocket pub/sub on named
/// channels, shard-per-core mio event loops, zero-copy fan-out.
///
/// Every flag can also be given in a TOML file (--config FILE; the key is the flag's long name:
/// `max-connections = 50_000`) and as an environment variable (EDGECOMET_ and the long name in
/// capitals, `-` as `_`: EDGECOMET_MAX_CONNECTIONS=50000; lists separated by commas). A flag
/// wins over the environment, which wins over the file. Durations take units (500ms, 30s, 2m,
/// 1h), sizes too (512KiB, 64MiB, 1GB); a bare number is in the flag's own unit (seconds, or
/// milliseconds for --shutdown-timeout, --accept-pause, --broker-linger, --sse-retry; bytes
/// for sizes). --print-config shows the result. `-h` is the short list, `--help` the long one.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "edgecomet",
    version,
    about,
    long_about,
    args_override_self = true
)]
pub struct Config {
    /// Read settings from this TOML file (one key per flag; see edgecomet.example.toml).
    ///
    /// Flags and EDGECOMET_* environment variables override its values. An unknown key or a
    /// bad value stops the start with the file's name, the line and the key. The processes
    /// that --processes starts read the same file.
    #[arg(long, value_name = "FILE", help_heading = "Configuration")]
    pub config: Option<std::path::PathBuf>,

    /// Print the effective configuration as TOML (file < environment < flags) and exit.
    ///
    /// Every key, with where its value came from; secrets (--publish-key, --token-secret) are
    /// printed as "(redacted)". Without the secrets the output is a valid --config file.
    #[arg(long, help_heading = "Configuration")]
    pub print_config: bool,

    /// Address to listen on.
    ///
    /// Every worker binds it with SO_REUSEPORT.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8080",
        help_heading = "Listen"
    )]
    pub listen: SocketAddr,

    /// Also serve TLS (https://, wss://) on this address, with --tls-cert and --tls-key.
    ///
    /// Every transport, as on --listen. Both are served at once; --listen stays plaintext (bind
    /// it to 127.0.0.1 to keep it for local publishers and /stats). Every worker binds it with
    /// SO_REUSEPORT, like --listen.
    #[arg(long, value_name = "ADDR", help_heading = "TLS")]
    pub tls_listen: Option<SocketAddr>,

    /// Certificate chain for --tls-listen: PEM, the server's certificate first.
    ///
    /// Read again on SIGHUP (new handshakes use the new chain; a file that does not load is
    /// refused with a log line and the old chain stays; counted in tls_reloads /
    /// tls_reload_errors).
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Private key for --tls-listen: PEM (PKCS#8, PKCS#1 or SEC1).
    ///
    /// It matches --tls-cert's certificate. Read again on SIGHUP with the chain.
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub tls_key: Option<std::path::PathBuf>,

    /// TLS sessions remembered for resumption by session id.
    ///
    /// For TLS 1.2, and TLS 1.3 clients that do not take tickets; TLS 1.3 clients resume with
    /// tickets, which cost the server no memory. The least recently used session is forgotten
    /// beyond it.
    #[arg(long, value_name = "N", default_value_t = 20_000, help_heading = "TLS")]
    pub tls_session_cache: usize,

    /// Worker threads (one event loop each). 0 = one per core.
    #[arg(long, value_name = "N", default_value_t = 0, help_heading = "Listen")]
    pub workers: usize,

    /// Most open client connections, over all workers.
    ///
    /// Beyond it new connections get a 503 and are closed (counted as `refused`). Each one is an
    /// open file: at start the open-files limit is raised to its hard limit, and a warning says
    /// when that is too low for this many.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1_000_000,
        help_heading = "Limits"
    )]
    pub max_connections: usize,

    /// Scale out through Redis pub/sub: `redis[s]://[[USER]:PASS@]HOST[:PORT][/DB]`.
    ///
    /// `:PASS@` or `USER:PASS@` before the host (AUTH; percent-encoded) and `/DB` after it
    /// (SELECT); `rediss://` for TLS (see --broker-ca). A refused password stops the start. Each
    /// process subscribes on Redis to the channels its clients use (patterns for Bayeux
    /// wildcards) and publishes there; a local publish reaches local subscribers through Redis,
    /// once. Without it: in-process fan-out only. While Redis is unreachable clients stay
    /// connected and publishes get 503.
    #[arg(long, value_name = "URL", help_heading = "Broker")]
    pub broker: Option<String>,

    /// How long a channel stays subscribed on the broker after its last local subscriber left.
    ///
    /// Long-poll and EventSource clients come back between requests. A bare number is
    /// milliseconds (the flag was --broker-linger-ms, still accepted).
    #[arg(
        long = "broker-linger",
        visible_alias = "broker-linger-ms",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = units::millis::<u64>(0, u64::MAX),
        help_heading = "Broker"
    )]
    pub broker_linger_ms: u64,

    /// How long an HTTP publish waits for Redis's answer (1s to 1h).
    ///
    /// It is answered when Redis has the message, so that publishes through different processes
    /// keep their order. Past it: 504 (counted in `broker_ack_timeouts`); the message may or may
    /// not have been published. Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::secs(1, 3600), help_heading = "Broker")]
    pub broker_ack_timeout: u32,

    /// Payload bytes of publishes waiting to be sent to the broker.
    ///
    /// More: 503 (counted in `broker_publish_refused`), nothing sent.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = units::bytes::<usize>(0, u64::MAX), help_heading = "Broker")]
    pub broker_max_queued_bytes: usize,

    /// Server processes (1 to 1024); more than 1 needs --broker.
    ///
    /// More than 1: this process starts P processes on --listen (sharing the port through
    /// SO_REUSEPORT; each has its own open-files limit, --workers and --max-connections) and
    /// supervises them: SIGTERM or Ctrl-C is passed on to all, and the `/stats` of every one of
    /// them carries the sums over all under `"processes"` (refreshed every second). Needs
    /// --broker: processes reach each other's subscribers only through it.
    #[arg(long, value_name = "P", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = "Listen")]
    pub processes: u32,

    /// Join the processes already listening on --listen (needs --broker).
    ///
    /// SO_REUSEPORT: the kernel spreads connections over all of them. Needs --broker, which is
    /// how a publish taken by one of them reaches the subscribers of the others. Without it
    /// edgecomet refuses to start on an address something else already listens on, rather than
    /// take a share of its clients unseen. (--processes passes it to the processes it starts.)
    #[arg(long, help_heading = "Listen")]
    pub share_port: bool,

    /// Listen backlog of each worker's socket (the kernel caps it at net.core.somaxconn).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4096,
        help_heading = "Listen"
    )]
    pub backlog: i32,

    /// Longest HTTP request head (request line + headers).
    ///
    /// Longer: 431 (414 if the request line alone is longer).
    #[arg(long, value_name = "SIZE", default_value = "8KiB", value_parser = units::bytes::<usize>(0, u64::MAX), help_heading = "Limits")]
    pub max_head_bytes: usize,

    /// Most header fields in one request (at most 128). More: 431.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=128), help_heading = "Limits")]
    pub max_headers: u16,

    /// Largest request body (a published message). Larger: 413.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = units::bytes::<u32>(0, u64::MAX), help_heading = "Limits")]
    pub max_body_bytes: u32,

    /// Time a client has to finish a request head once it started one (slowloris guard).
    ///
    /// Expired: 408, then close. Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::secs(0, u32::MAX), help_heading = "Timeouts")]
    pub head_timeout: u32,

    /// How long an idle keep-alive HTTP connection is kept between requests.
    ///
    /// Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = units::secs(0, u32::MAX), help_heading = "Timeouts")]
    pub keepalive_timeout: u32,

    /// Largest WebSocket message a client may send (all fragments together).
    ///
    /// Larger: close 1009, decided from the frame header before the payload is read.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = units::bytes::<u32>(0, u64::MAX), help_heading = "Limits")]
    pub max_message_bytes: u32,

    /// Bytes that may wait in one subscriber's outbound queue (what the kernel did not take).
    ///
    /// Past it the subscriber is a slow consumer: its unsent messages are dropped, it gets close
    /// 1008 "slow consumer" and is counted (an event stream is closed and resumes from the
    /// history); the others keep receiving. Also the most payload one long-poll answer carries.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = units::bytes::<usize>(0, u64::MAX), help_heading = "Limits")]
    pub max_queued_bytes: usize,

    /// permessage-deflate (RFC 7692) on every WebSocket endpoint: on or off.
    ///
    /// On: a client's offer is agreed with server_no_context_takeover and
    /// client_no_context_takeover, so a connection keeps no compression state: a published
    /// message is compressed once and the same frame goes to every subscriber that agreed, and a
    /// client's compressed message is inflated by the worker's one inflater, within
    /// --max-message-bytes. Off: offers are declined (never refused).
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On, help_heading = "Transports")]
    pub deflate: OnOff,

    /// Messages shorter than this go uncompressed even to clients that agreed to
    /// permessage-deflate (small messages gain little and cost a compression).
    #[arg(long, value_name = "SIZE", default_value = "256", value_parser = units::bytes::<u32>(0, u64::MAX), help_heading = "Transports")]
    pub deflate_min_bytes: u32,

    /// Silence from a WebSocket client before the server pings it. 0 = never ping.
    ///
    /// With 0, dead peers are found only by TCP. Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::secs(0, u32::MAX), help_heading = "Timeouts")]
    pub ws_ping_interval: u32,

    /// Wait for any frame after a ping before closing the connection (1001).
    ///
    /// Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::secs(0, u32::MAX), help_heading = "Timeouts")]
    pub ws_pong_timeout: u32,

    /// Wait for the peer to finish closing before the socket is dropped.
    ///
    /// The WebSocket closing handshake, or a lingering HTTP close. Whole seconds; a bare number
    /// is seconds.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = units::secs(0, u32::MAX), help_heading = "Timeouts")]
    pub close_timeout: u32,

    /// Longest channel name, bytes.
    ///
    /// Names use A-Z a-z 0-9 and `-_.:@~`. Longer or other: 400.
    #[arg(long, value_name = "N", default_value_t = 255, help_heading = "Limits")]
    pub max_channel_len: usize,

    /// Most distinct channels with subscribers in one worker. More: the subscribe gets 503.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1_000_000,
        help_heading = "Limits"
    )]
    pub max_channels: usize,

    /// Pause in accepting after EMFILE/ENFILE/ENOBUFS/ENOMEM from accept(2).
    ///
    /// A bare number is milliseconds (the flag was --accept-pause-ms, still accepted).
    #[arg(
        long = "accept-pause",
        visible_alias = "accept-pause-ms",
        value_name = "DURATION",
        default_value = "500ms",
        value_parser = units::millis::<u64>(0, u64::MAX),
        help_heading = "Timeouts"
    )]
    pub accept_pause_ms: u64,

    /// Let the kernel back the heap with transparent huge pages.
    ///
    /// Off by default: the server's memory is many small per-connection pieces, and huge pages
    /// make the heap grow in 2 MiB steps (PR_SET_THP_DISABLE). Turn on to trade memory for
    /// fewer TLB misses.
    #[arg(long, help_heading = "Limits")]
    pub transparent_huge_pages: bool,

    /// Messages kept per channel for clients that come back with a cursor or `Last-Event-ID`.
    ///
    /// Shared by all transports and workers. 0 = no history: nothing can be resumed.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 64,
        help_heading = "Transports"
    )]
    pub history: usize,

    /// How long a message stays in the history; 0 = until pushed out by newer ones.
    ///
    /// A channel without session whose newest message is older than this is forgotten (its ids
    /// too). Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = units::secs(0, u32::MAX), help_heading = "Transports")]
    pub history_age: u32,

    /// How long a long-poll is held when nothing is pending (1s to 1h).
    ///
    /// Then it is answered empty (the client polls again). Keep it under intermediaries' idle
    /// timeouts (often 60 s). Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::secs(1, 3600), help_heading = "Transports")]
    pub poll_timeout: u32,

    /// Time between comment heartbeats on Server-Sent Events and HTTP streams (1s to 1h).
    ///
    /// Keeps proxies from closing idle streams. Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = units::secs(1, 3600), help_heading = "Transports")]
    pub sse_heartbeat: u32,

    /// Reconnect delay suggested to EventSource clients (`retry:`).
    ///
    /// A bare number is milliseconds.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = units::millis::<u32>(0, u64::MAX), help_heading = "Transports")]
    pub sse_retry: u32,

    /// How long a `Client-Id` long-poll session outlives its last poll.
    ///
    /// Then its queue is freed and the client must start a new series. Must exceed
    /// `--poll-timeout`. Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = units::secs(0, u32::MAX), help_heading = "Transports")]
    pub session_ttl: u32,

    /// Messages a `Client-Id` session queues between polls.
    ///
    /// When full the oldest is dropped, counted (`session_drops`) and reported to the client as
    /// a gap.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Transports")]
    pub session_queue: u32,

    /// Most `Client-Id` sessions at once, over all workers. More: 503.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100_000,
        help_heading = "Transports"
    )]
    pub max_sessions: usize,

    /// Publish messages that subscribers send to the channel.
    ///
    /// A POST body to `/sub/{channel}`, a WebSocket text frame. Off: the POST gets 403, the
    /// WebSocket is closed with 1008.
    #[arg(long, help_heading = "Transports")]
    pub client_publish: bool,

    /// Origins allowed to use `/sub` and `/pub` from a browser; `*` allows any.
    ///
    /// CORS, preflight, WebSocket Origin check. Repeat or separate with commas. Unset: no CORS
    /// headers and Origin is not checked.
    #[arg(
        long,
        value_name = "ORIGIN",
        value_delimiter = ',',
        help_heading = "Transports"
    )]
    pub allow_origin: Vec<String>,

    /// Path of the CometD/Bayeux endpoint and every path under it.
    ///
    /// Long-polling (`POST` a JSON array of messages), callback-polling (`GET ?jsonp=&message=`),
    /// WebSocket (upgrade).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/cometd",
        help_heading = "Bayeux"
    )]
    pub bayeux_path: String,

    /// How long a Bayeux `/meta/connect` is held when nothing is queued (1s to 1h).
    ///
    /// Advice `timeout`; a shorter `advice.timeout` sent by the client is honoured. Whole
    /// seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = units::secs(1, 3600), help_heading = "Bayeux")]
    pub bayeux_timeout: u32,

    /// How long a Bayeux client lives without a `/meta/connect` (`maxInterval`).
    ///
    /// Then it is removed with everything it holds and gets `402::Unknown client`. A Bayeux
    /// WebSocket that sends nothing for this long + 1 s (with no connect held) is closed (1008).
    /// Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::secs(1, u32::MAX), help_heading = "Bayeux")]
    pub bayeux_max_interval: u32,

    /// Messages queued per Bayeux client between connects, unacknowledged ones included.
    ///
    /// Unacknowledged: the ack extension. Beyond, the oldest are dropped, counted
    /// (`bayeux_dropped`) and the next connect reply says how many (`ext.dropped`).
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Bayeux")]
    pub bayeux_max_queue: u32,

    /// Most Bayeux clients at once. More: the handshake fails (`503::too many clients`).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100_000,
        help_heading = "Bayeux"
    )]
    pub bayeux_max_clients: usize,

    /// Most messages in one Bayeux request or WebSocket frame.
    ///
    /// More: the request is refused (400; WebSocket: close 1008).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        help_heading = "Bayeux"
    )]
    pub bayeux_max_batch: usize,

    /// Where Socket.IO clients connect (Engine.IO v4, Socket.IO v5).
    ///
    /// HTTP long-polling (GET/POST) and WebSocket, with the upgrade from one to the other. The
    /// official `socket.io-client` connects with `io(url, { path })`.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/socket.io/",
        help_heading = "Socket.IO"
    )]
    pub socketio_path: String,

    /// Socket.IO namespaces besides `/`. Repeat or separate with commas.
    ///
    /// A CONNECT to another namespace gets CONNECT_ERROR "Invalid namespace". A socket of any
    /// namespace joins the channels its CONNECT asks for, and gets their messages in its
    /// namespace.
    #[arg(
        long,
        value_name = "NSP",
        value_delimiter = ',',
        help_heading = "Socket.IO"
    )]
    pub socketio_namespaces: Vec<String>,

    /// Time between the server's pings (Engine.IO `pingInterval`) [default: 25s].
    ///
    /// 300ms with --socketio-conformance unless given. A bare number is milliseconds.
    #[arg(long, value_name = "DURATION", value_parser = units::millis::<u64>(10, 3_600_000), help_heading = "Socket.IO")]
    pub socketio_ping_interval: Option<u64>,

    /// How long a pong may take (`pingTimeout`); then the session is closed [default: 20s].
    ///
    /// 200ms with --socketio-conformance unless given. A bare number is milliseconds.
    #[arg(long, value_name = "DURATION", value_parser = units::millis::<u64>(10, 3_600_000), help_heading = "Socket.IO")]
    pub socketio_ping_timeout: Option<u64>,

    /// How long a session may go without a Socket.IO CONNECT; then it is closed [default: 45s].
    ///
    /// 1s with --socketio-conformance unless given. A bare number is milliseconds.
    #[arg(long, value_name = "DURATION", value_parser = units::millis::<u64>(10, 3_600_000), help_heading = "Socket.IO")]
    pub socketio_connect_timeout: Option<u64>,

    /// Largest Engine.IO payload accepted (`maxPayload`): a POST body, or a WebSocket message.
    ///
    /// More: the POST is answered 413, the WebSocket closed with 1009; the session ends.
    #[arg(long, value_name = "SIZE", default_value = "1000000", value_parser = units::bytes::<usize>(16, 1 << 30), help_heading = "Socket.IO")]
    pub socketio_max_payload: usize,

    /// How long a lost Socket.IO connection can be recovered: the client reconnecting within
    /// this gets the messages it missed (connection state recovery); 0 = off [default: 2m].
    ///
    /// While on, each event carries the message's id as a last argument (the offset the client
    /// sends back). Only a connection on one channel (no pattern) can be recovered exactly;
    /// others are told they were not. Off with --socketio-conformance unless given (the test
    /// suite's server has none). A bare number is milliseconds.
    #[arg(long, value_name = "DURATION", value_parser = units::millis::<u64>(0, 86_400_000), help_heading = "Socket.IO")]
    pub socketio_recovery: Option<u64>,

    /// Lost Socket.IO connections kept for recovery at once, per process.
    ///
    /// Beyond, a lost connection keeps nothing (counted in `sio_recovery_full`) and its client
    /// is told it was not recovered.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 100_000,
        help_heading = "Socket.IO"
    )]
    pub socketio_recovery_max: usize,

    /// How long an upgrade from long-polling to WebSocket may take, from the WebSocket's opening
    /// to its `5` (1s to 1h).
    ///
    /// Then the WebSocket is closed (1008, counted in `sio_protocol_errors`) and the session
    /// goes on polling. Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = units::secs(1, 3600), help_heading = "Socket.IO")]
    pub socketio_upgrade_timeout: u32,

    /// Most channels (and patterns) one Socket.IO CONNECT may join.
    ///
    /// More: the CONNECT is refused (CONNECT_ERROR, counted in `sio_connect_errors`).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..), help_heading = "Socket.IO")]
    pub socketio_max_channels: u16,

    /// Most binary attachments in one Socket.IO packet (their bytes together are bounded by
    /// --socketio-max-payload).
    ///
    /// More: the session ends (counted in `sio_protocol_errors`).
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=100_000), help_heading = "Socket.IO")]
    pub socketio_max_attachments: u32,

    /// Most Socket.IO sessions at once, over all workers of the process.
    ///
    /// A polling session lives between its requests, so one connection can open many: beyond
    /// this, a handshake is answered 503 (counted in `sio_sessions_refused`).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1_000_000,
        help_heading = "Socket.IO"
    )]
    pub socketio_max_sessions: usize,

    /// The event a published message is emitted as: `socket.on("message", (data) => ...)`.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "message",
        help_heading = "Socket.IO"
    )]
    pub socketio_event: String,

    /// Behave as the Socket.IO protocol's test-suite server: on connect the `auth` payload is
    /// emitted back as `auth`, `message` is emitted back as `message-back`, `message-with-ack`
    /// is acknowledged with its arguments; namespaces `/` and `/custom`; CORS open to any origin.
    ///
    /// For conformance testing, like `/echo` is for Autobahn; off by default. Also makes the
    /// test suite's timings the defaults (ping 300ms/200ms, connect timeout 1s).
    #[arg(long, help_heading = "Socket.IO")]
    pub socketio_conformance: bool,

    /// Subscriptions one Bayeux client may hold. More: the subscribe fails (403).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 1000,
        help_heading = "Bayeux"
    )]
    pub bayeux_max_subscriptions: usize,

    /// Allow Bayeux subscriptions to `/*` and `/**` (every channel).
    #[arg(long, help_heading = "Bayeux")]
    pub bayeux_root_wildcards: bool,

    /// A key that `POST /pub` must carry as `Authorization: Bearer KEY` (401 otherwise).
    ///
    /// Repeat or separate with commas for several at once (rotation: add the new key, move
    /// publishers over, drop the old one). At least 16 characters. Also from the environment
    /// variable EDGECOMET_PUBLISH_KEY, which keeps keys out of `ps`. No key: anyone may publish.
    #[arg(
        long,
        value_name = "KEY",
        env = "EDGECOMET_PUBLISH_KEY",
        hide_env_values = true,
        value_delimiter = ',',
        help_heading = "Authorization"
    )]
    pub publish_key: Vec<String>,

    /// A file of publish keys, one per line (`#` comments), added to --publish-key.
    ///
    /// Read again on SIGHUP, so keys rotate without a restart.
    #[arg(long, value_name = "FILE", help_heading = "Authorization")]
    pub publish_key_file: Option<std::path::PathBuf>,

    /// HMAC secret (at least 32 bytes) for HS256/HS384/HS512 subscribe tokens (JWT).
    ///
    /// With a token key configured, every subscription needs a token that names its channel.
    /// Repeat or separate with commas for rotation. Also from EDGECOMET_TOKEN_SECRET.
    #[arg(
        long,
        value_name = "SECRET",
        env = "EDGECOMET_TOKEN_SECRET",
        hide_env_values = true,
        value_delimiter = ',',
        help_heading = "Authorization"
    )]
    pub token_secret: Vec<String>,

    /// A file of HMAC token secrets, one per line (`#` comments), added to --token-secret.
    ///
    /// Read again on SIGHUP.
    #[arg(long, value_name = "FILE", help_heading = "Authorization")]
    pub token_secret_file: Option<std::path::PathBuf>,

    /// PEM public key for ES*, RS*/PS* or EdDSA subscribe tokens; repeatable.
    ///
    /// ES256/ES384 (EC), RS256/PS256 and their larger sizes (RSA) or EdDSA (Ed25519). Repeat or
    /// separate with commas for several (rotation). Read again on SIGHUP.
    #[arg(
        long,
        value_name = "FILE",
        value_delimiter = ',',
        help_heading = "Authorization"
    )]
    pub token_public_key: Vec<std::path::PathBuf>,

    /// Clock skew allowed on a token's `exp` and `nbf` (at most 1h).
    ///
    /// A connection ends at `exp` + this. Whole seconds; a bare number is seconds.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = units::secs(0, 3600), help_heading = "Authorization")]
    pub token_leeway: u32,

    /// A token must carry this `aud` (audience). Unset: `aud` is not checked.
    #[arg(long, value_name = "AUD", help_heading = "Authorization")]
    pub token_audience: Option<String>,

    /// A token must carry this `iss` (issuer). Unset: `iss` is not checked.
    #[arg(long, value_name = "ISS", help_heading = "Authorization")]
    pub token_issuer: Option<String>,

    /// Largest message sent to a private push address (`/push/{address}`; at most 16MiB).
    ///
    /// More: 413.
    #[arg(long, value_name = "SIZE", default_value = "4KiB", value_parser = units::bytes::<u32>(1, 16 << 20), help_heading = "Authorization")]
    pub push_max_bytes: u32,

    /// Sends to push addresses per second per source IP address (0 = no limit).
    ///
    /// A token bucket. More: 429 with Retry-After. Per process.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10,
        help_heading = "Authorization"
    )]
    pub push_rate: u32,

    /// Burst of the per-source push rate: sends a source may make at once after a pause.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Authorization")]
    pub push_burst: u32,

    /// Source addresses the push rate limit remembers.
    ///
    /// A bounded table; beyond it, sources whose bucket has refilled are forgotten first.
    #[arg(long, value_name = "N", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Authorization")]
    pub push_max_sources: u32,

    /// How long a shutdown (SIGTERM/SIGINT) may take, from the signal to the exit.
    ///
    /// Messages already accepted are delivered, every client is told (WebSocket 1001, streams
    /// ended, held polls answered) and their closes are awaited until then; past it the process
    /// exits with the connections still open. SIGHUP does not stop the server. A bare number
    /// is milliseconds (the flag was --shutdown-timeout-ms, still accepted).
    #[arg(
        long = "shutdown-timeout",
        visible_alias = "shutdown-timeout-ms",
        value_name = "DURATION",
        default_value = "5s",
        value_parser = units::millis::<u64>(0, u64::MAX),
        help_heading = "Timeouts"
    )]
    pub shutdown_timeout_ms: u64,

    /// Least severe log lines written (stderr): error, warn, info or debug. Events that can
    /// repeat per connection are summarised once a second per worker with their counts.
    #[arg(long, value_enum, value_name = "LEVEL", default_value_t = LogLevel::Info, help_heading = "Logs")]
    pub log_level: LogLevel,

    /// Log line format: plain text, or json (one object per line: time, level, target,
    /// message, pid, fields). The "listening on" line stays plain in both (scripts read it).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Plain, help_heading = "Logs")]
    pub log_format: LogFormat,

    /// CA certificate(s) (PEM) that a `rediss://` broker's certificate must chain to. Unset:
    /// the Mozilla root certificates built into the binary (webpki-roots).
    #[arg(long, value_name = "FILE", help_heading = "Broker")]
    pub broker_ca: Option<std::path::PathBuf>,
}

/// A switch flag that takes its value (`--deflate on|off`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

impl OnOff {
    pub fn on(self) -> bool {
        self == OnOff::On
    }
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

impl Config {
    /// Defaults as if run with no flags (tests and benches adjust fields from here).
    pub fn defaults() -> Self {
        Config::parse_from(["edgecomet"])
    }

    /// The worker count after resolving 0 to the number of cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Checks flag combinations that clap cannot (called before the server starts).
    pub fn validate(&self) -> Result<(), String> {
        // Checked here rather than by clap, so that a file, the environment and flags are held
        // to the same rule (clap does not apply `requires` to values from a file).
        if self.tls_listen.is_some() && (self.tls_cert.is_none() || self.tls_key.is_none()) {
            return Err("--tls-listen needs --tls-cert and --tls-key".to_string());
        }
        if self.tls_listen.is_none() && (self.tls_cert.is_some() || self.tls_key.is_some()) {
            return Err("--tls-cert and --tls-key need --tls-listen".to_string());
        }
        if let Some(url) = &self.broker {
            redis_addr(url)?;
        }
        if self.worker_count() > 256 {
            return Err(format!(
                "--workers {}: at most 256 (a Socket.IO session id names its worker in one byte)",
                self.worker_count()
            ));
        }
        if self.processes > 1 && self.broker.is_none() {
            return Err(format!(
                "--processes {} needs --broker redis://HOST:PORT: without it a publish reaches only \
                 the subscribers of the one process that took it",
                self.processes
            ));
        }
        if self.share_port && self.broker.is_none() {
            return Err(
                "--share-port needs --broker redis://HOST:PORT: without it a publish reaches only \
                 the subscribers of the one process that took it"
                    .to_string(),
            );
        }
        if self.session_ttl <= self.poll_timeout {
            return Err(format!(
                "--session-ttl ({}) must be longer than --poll-timeout ({}): a session must \
                 outlive the gap between two polls",
                self.session_ttl, self.poll_timeout
            ));
        }
        if !self.socketio_path.starts_with('/') || self.socketio_path.contains(['?', '#', ' ']) {
            return Err(format!(
                "--socketio-path {:?}: expected a path such as /socket.io/",
                self.socketio_path
            ));
        }
        for n in &self.socketio_namespaces {
            if !n.starts_with('/')
                || n.len() < 2
                || !n[1..]
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.:@~/".contains(&c))
            {
                return Err(format!(
                    "--socketio-namespaces {n:?}: expected a namespace such as /chat"
                ));
            }
        }
        if self.socketio_namespaces.len() > 30 {
            return Err("--socketio-namespaces: at most 30 namespaces besides /".to_string());
        }
        if self.socketio_event.is_empty() || self.socketio_event.len() > 255 {
            return Err("--socketio-event: 1 to 255 characters".to_string());
        }
        for o in &self.allow_origin {
            if o != "*" && !(o.starts_with("http://") || o.starts_with("https://")) {
                return Err(format!(
                    "--allow-origin {o:?}: expected `*` or an origin like https://example.com"
                ));
            }
            if o.len() > 1 && o.ends_with('/') {
                return Err(format!(
                    "--allow-origin {o:?}: an origin has no path; drop the trailing /"
                ));
            }
        }
        Ok(())
    }

    /// Whether any publish key or token key is configured (without one, no request takes the
    /// authorization path at all).
    pub fn auth_configured(&self) -> bool {
        !self.publish_key.is_empty()
            || self.publish_key_file.is_some()
            || !self.token_secret.is_empty()
            || self.token_secret_file.is_some()
            || !self.token_public_key.is_empty()
    }

    /// Whether a token key is configured: subscriptions need a token.
    pub fn tokens_configured(&self) -> bool {
        !self.token_secret.is_empty()
            || self.token_secret_file.is_some()
            || !self.token_public_key.is_empty()
    }

    pub fn accept_pause(&self) -> Duration {
        Duration::from_millis(self.accept_pause_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}

/// Checks a `--broker` URL (`redis[s]://[[USER]:PASS@]HOST[:PORT][/DB]`, see
/// [`crate::broker::url`]) and returns its `HOST:PORT`.
pub fn redis_addr(url: &str) -> Result<String, String> {
    crate::broker::url::BrokerUrl::parse(url).map(|u| u.addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let c = Config::defaults();
        assert_eq!(c.listen.port(), 8080);
        assert!(c.worker_count() >= 1);
        assert_eq!(c.max_head_bytes, 8192);
    }

    #[test]
    fn validation() {
        assert!(Config::defaults().validate().is_ok());
        let c = Config::parse_from(["edgecomet", "--processes", "4"]);
        assert!(c.validate().unwrap_err().contains("needs --broker"));
        let c = Config::parse_from([
            "edgecomet",
            "--processes",
            "4",
            "--broker",
            "redis://127.0.0.1:6379",
        ]);
        assert!(c.validate().is_ok());
        // A later flag wins (the launcher appends --listen and --processes 1 for its children).
        let c = Config::parse_from(["edgecomet", "--processes", "4", "--processes", "1"]);
        assert_eq!(c.processes, 1);
        let c = Config::parse_from(["edgecomet", "--share-port"]);
        assert!(
            c.validate()
                .unwrap_err()
                .contains("--share-port needs --broker")
        );
        let c = Config::parse_from(["edgecomet", "--session-ttl", "30"]);
        assert!(c.validate().unwrap_err().contains("--session-ttl"));
        let c = Config::parse_from([
            "edgecomet",
            "--allow-origin",
            "http://a.test,https://b.test",
        ]);
        assert_eq!(c.allow_origin.len(), 2);
        assert!(c.validate().is_ok());
        for bad in ["a.test", "http://a.test/"] {
            let c = Config::parse_from(["edgecomet", "--allow-origin", bad]);
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_with_units_are_the_numbers_they_always_were() {
        let c = Config::defaults();
        assert_eq!(
            (c.broker_linger_ms, c.accept_pause_ms, c.shutdown_timeout_ms),
            (5000, 500, 5000)
        );
        assert_eq!(
            (c.sse_retry, c.history_age, c.keepalive_timeout),
            (2000, 3600, 60)
        );
        assert_eq!(
            (
                c.broker_max_queued_bytes,
                c.max_head_bytes,
                c.max_queued_bytes
            ),
            (64 << 20, 8192, 1 << 20)
        );
        assert_eq!(
            (c.max_body_bytes, c.max_message_bytes, c.push_max_bytes),
            (1 << 20, 1 << 20, 4096)
        );
        let c = Config::parse_from([
            "edgecomet",
            "--head-timeout",
            "2m",
            "--max-body-bytes",
            "1GB",
        ]);
        assert_eq!((c.head_timeout, c.max_body_bytes), (120, 1_000_000_000));
        assert!(Config::try_parse_from(["edgecomet", "--head-timeout", "1500ms"]).is_err());
        assert!(Config::try_parse_from(["edgecomet", "--max-body-bytes", "4GiB"]).is_err());
    }

    #[test]
    fn tls_flags_go_together() {
        let c = Config::parse_from(["edgecomet", "--tls-listen", "127.0.0.1:0"]);
        assert!(c.validate().unwrap_err().contains("needs --tls-cert"));
        let c = Config::parse_from(["edgecomet", "--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        assert!(c.validate().unwrap_err().contains("need --tls-listen"));
    }

    #[test]
    fn header_limit_is_bounded() {
        assert!(Config::try_parse_from(["edgecomet", "--max-headers", "129"]).is_err());
        assert!(Config::try_parse_from(["edgecomet", "--max-headers", "128"]).is_ok());
    }

    #[test]
    fn urls() {
        assert_eq!(
            redis_addr("redis://127.0.0.1:7000").unwrap(),
            "127.0.0.1:7000"
        );
        assert_eq!(redis_addr("redis://127.0.0.1/").unwrap(), "127.0.0.1:6379");
        assert_eq!(redis_addr("redis://localhost:1").unwrap(), "localhost:1");
        for bad in [
            "http://x:1",
            "redis://",
            "redis://h:1/x",
            "redis://h:1?db=2",
            "redis://h:x",
        ] {
            assert!(redis_addr(bad).is_err(), "{bad}");
        }
    }
}
