//! Command-line flags and the limits they set. Every limit the server enforces is here, with its
//! default and the reason for it; `edgecomet --help` prints the same text.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// A Comet server for a million concurrent long-lived connections: WebSocket pub/sub on named
/// channels, shard-per-core mio event loops, zero-copy fan-out.
#[derive(Debug, Clone, Parser)]
#[command(name = "edgecomet", version, about, long_about = None, args_override_self = true)]
pub struct Config {
    /// Address to listen on. Every worker binds it with SO_REUSEPORT.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Also serve TLS (https://, wss://) on this address, with --tls-cert and --tls-key: every
    /// transport, as on --listen. Both are served at once; --listen stays plaintext (bind it to
    /// 127.0.0.1 to keep it for local publishers and /stats). Every worker binds it with
    /// SO_REUSEPORT, like --listen.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_listen: Option<SocketAddr>,

    /// Certificate chain for --tls-listen: PEM, the server's certificate first. Read again on
    /// SIGHUP (new handshakes use the new chain; a file that does not load is refused with a
    /// log line and the old chain stays; counted in tls_reloads / tls_reload_errors).
    #[arg(long, requires = "tls_listen")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// Private key for --tls-listen: PEM (PKCS#8, PKCS#1 or SEC1), matching --tls-cert's
    /// certificate. Read again on SIGHUP with the chain.
    #[arg(long, requires = "tls_listen")]
    pub tls_key: Option<std::path::PathBuf>,

    /// TLS sessions remembered for resumption by session id (TLS 1.2, and TLS 1.3 clients that
    /// do not take tickets); TLS 1.3 clients resume with tickets, which cost the server no
    /// memory. The least recently used session is forgotten beyond it.
    #[arg(long, default_value_t = 20_000)]
    pub tls_session_cache: usize,

    /// Worker threads (one event loop each). 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,

    /// Most open client connections, over all workers. Beyond it new connections get a 503 and
    /// are closed (counted as `refused`).
    #[arg(long, default_value_t = 1_000_000)]
    pub max_connections: usize,

    /// Scale out through Redis pub/sub: `redis://HOST[:PORT]`, with `:PASS@` or `USER:PASS@`
    /// before the host (AUTH; percent-encoded) and `/DB` after it (SELECT); `rediss://` for
    /// TLS (see --broker-ca). A refused password stops the start. Each process subscribes on Redis
    /// to the channels its clients use (patterns for Bayeux wildcards) and publishes there; a
    /// local publish reaches local subscribers through Redis, once. Without it: in-process
    /// fan-out only. While Redis is unreachable clients stay connected and publishes get 503.
    #[arg(long)]
    pub broker: Option<String>,

    /// Milliseconds a channel stays subscribed on the broker after its last local subscriber
    /// left (long-poll and EventSource clients come back between requests).
    #[arg(long, default_value_t = 5000)]
    pub broker_linger_ms: u64,

    /// Seconds an HTTP publish waits for Redis's answer (it is answered when Redis has the
    /// message, so that publishes through different processes keep their order). Past it: 504
    /// (counted in `broker_ack_timeouts`); the message may or may not have been published.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub broker_ack_timeout: u32,

    /// Payload bytes of publishes waiting to be sent to the broker. More: 503 (counted in
    /// `broker_publish_refused`), nothing sent.
    #[arg(long, default_value_t = 64 << 20)]
    pub broker_max_queued_bytes: usize,

    /// Server processes. More than 1: this process starts P processes on --listen (sharing the
    /// port through SO_REUSEPORT; each has its own open-files limit, --workers and
    /// --max-connections) and supervises them: SIGTERM or Ctrl-C is passed on to all, and the
    /// `/stats` of every one of them carries the sums over all under `"processes"` (refreshed
    /// every second). Needs --broker: processes reach each other's subscribers only through it.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub processes: u32,

    /// Join the processes already listening on --listen (SO_REUSEPORT: the kernel spreads
    /// connections over all of them). Needs --broker, which is how a publish taken by one of
    /// them reaches the subscribers of the others. Without it edgecomet refuses to start on an
    /// address something else already listens on, rather than take a share of its clients
    /// unseen. (--processes passes it to the processes it starts.)
    #[arg(long)]
    pub share_port: bool,

    /// Listen backlog of each worker's socket (the kernel caps it at net.core.somaxconn).
    #[arg(long, default_value_t = 4096)]
    pub backlog: i32,

    /// Longest HTTP request head (request line + headers), bytes. Longer: 431 (414 if the
    /// request line alone is longer).
    #[arg(long, default_value_t = 8192)]
    pub max_head_bytes: usize,

    /// Most header fields in one request (at most 128). More: 431.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub max_headers: u16,

    /// Largest request body (a published message), bytes. Larger: 413.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body_bytes: u32,

    /// Seconds a client has to finish a request head once it started one (slowloris guard).
    /// Expired: 408, then close.
    #[arg(long, default_value_t = 10)]
    pub head_timeout: u32,

    /// Seconds an idle keep-alive HTTP connection is kept between requests.
    #[arg(long, default_value_t = 60)]
    pub keepalive_timeout: u32,

    /// Largest WebSocket message a client may send (all fragments together), bytes. Larger:
    /// close 1009, decided from the frame header before the payload is read.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message_bytes: u32,

    /// Bytes that may wait in one subscriber's outbound queue (what the kernel did not take).
    /// Past it the subscriber is a slow consumer: its unsent messages are dropped, it gets close
    /// 1008 "slow consumer" and is counted (an event stream is closed and resumes from the
    /// history); the others keep receiving. Also the most payload one long-poll answer carries.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_queued_bytes: usize,

    /// Seconds of silence from a WebSocket client before the server pings it. 0 = never ping
    /// (dead peers are then found only by TCP).
    #[arg(long, default_value_t = 30)]
    pub ws_ping_interval: u32,

    /// Seconds to wait for any frame after a ping before closing the connection (1001).
    #[arg(long, default_value_t = 10)]
    pub ws_pong_timeout: u32,

    /// Seconds to wait for the peer to finish closing (WebSocket closing handshake, or a
    /// lingering HTTP close) before the socket is dropped.
    #[arg(long, default_value_t = 5)]
    pub close_timeout: u32,

    /// Longest channel name, bytes. Names use A-Z a-z 0-9 and `-_.:@~`. Longer or other: 400.
    #[arg(long, default_value_t = 255)]
    pub max_channel_len: usize,

    /// Most distinct channels with subscribers in one worker. More: the subscribe gets 503.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_channels: usize,

    /// Milliseconds to stop accepting after EMFILE/ENFILE/ENOBUFS/ENOMEM from accept(2).
    #[arg(long, default_value_t = 500)]
    pub accept_pause_ms: u64,

    /// Let the kernel back the heap with transparent huge pages. Off by default: the server's
    /// memory is many small per-connection pieces, and huge pages make the heap grow in 2 MiB
    /// steps (PR_SET_THP_DISABLE). Turn on to trade memory for fewer TLB misses.
    #[arg(long)]
    pub transparent_huge_pages: bool,

    /// Messages kept per channel for clients that come back with a cursor or `Last-Event-ID`
    /// (shared by all transports and workers). 0 = no history: nothing can be resumed.
    #[arg(long, default_value_t = 64)]
    pub history: usize,

    /// Seconds a message stays in the history; 0 = until pushed out by newer ones. A channel
    /// without session whose newest message is older than this is forgotten (its ids too).
    #[arg(long, default_value_t = 3600)]
    pub history_age: u32,

    /// Seconds a long-poll is held when nothing is pending, then answered empty (the client
    /// polls again). Keep it under intermediaries' idle timeouts (often 60 s).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub poll_timeout: u32,

    /// Seconds between comment heartbeats on Server-Sent Events and HTTP streams (keeps
    /// proxies from closing idle streams).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub sse_heartbeat: u32,

    /// Reconnect delay suggested to EventSource clients (`retry:`), milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub sse_retry: u32,

    /// Seconds a `Client-Id` long-poll session outlives its last poll; then its queue is freed
    /// and the client must start a new series. Must exceed `--poll-timeout`.
    #[arg(long, default_value_t = 60)]
    pub session_ttl: u32,

    /// Messages a `Client-Id` session queues between polls. When full the oldest is dropped,
    /// counted (`session_drops`) and reported to the client as a gap.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub session_queue: u32,

    /// Most `Client-Id` sessions at once, over all workers. More: 503.
    #[arg(long, default_value_t = 100_000)]
    pub max_sessions: usize,

    /// Publish messages that subscribers send (a POST body to `/sub/{channel}`, a WebSocket
    /// text frame) to the channel. Off: the POST gets 403, the WebSocket is closed with 1008.
    #[arg(long)]
    pub client_publish: bool,

    /// Origins allowed to use `/sub` and `/pub` from a browser (CORS, preflight, WebSocket
    /// Origin check). Repeat or separate with commas; `*` allows any. Unset: no CORS headers
    /// and Origin is not checked.
    #[arg(long, value_delimiter = ',')]
    pub allow_origin: Vec<String>,

    /// Path of the CometD/Bayeux endpoint and every path under it: long-polling (`POST` a JSON
    /// array of messages), callback-polling (`GET ?jsonp=&message=`), WebSocket (upgrade).
    #[arg(long, default_value = "/cometd")]
    pub bayeux_path: String,

    /// Seconds a Bayeux `/meta/connect` is held when nothing is queued (advice `timeout`); a
    /// shorter `advice.timeout` sent by the client is honoured.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3600))]
    pub bayeux_timeout: u32,

    /// Seconds a Bayeux client lives without a `/meta/connect` (`maxInterval`); then it is
    /// removed with everything it holds and gets `402::Unknown client`. A Bayeux WebSocket that
    /// sends nothing for this long + 1 s (with no connect held) is closed (1008).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub bayeux_max_interval: u32,

    /// Messages queued per Bayeux client between connects, unacknowledged ones (ack
    /// extension) included. Beyond, the oldest are dropped, counted (`bayeux_dropped`) and the
    /// next connect reply says how many (`ext.dropped`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub bayeux_max_queue: u32,

    /// Most Bayeux clients at once. More: the handshake fails (`503::too many clients`).
    #[arg(long, default_value_t = 100_000)]
    pub bayeux_max_clients: usize,

    /// Most messages in one Bayeux request or WebSocket frame. More: the request is refused
    /// (400; WebSocket: close 1008).
    #[arg(long, default_value_t = 1000)]
    pub bayeux_max_batch: usize,

    /// Subscriptions one Bayeux client may hold. More: the subscribe fails (403).
    #[arg(long, default_value_t = 1000)]
    pub bayeux_max_subscriptions: usize,

    /// Allow Bayeux subscriptions to `/*` and `/**` (every channel).
    #[arg(long)]
    pub bayeux_root_wildcards: bool,

    /// A key that `POST /pub` must carry as `Authorization: Bearer KEY` (401 otherwise). Repeat
    /// or separate with commas for several at once (rotation: add the new key, move publishers
    /// over, drop the old one). At least 16 characters. Also from the environment variable
    /// EDGECOMET_PUBLISH_KEY, which keeps keys out of `ps`. No key: anyone may publish.
    #[arg(
        long,
        env = "EDGECOMET_PUBLISH_KEY",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub publish_key: Vec<String>,

    /// A file of publish keys, one per line (`#` comments), added to --publish-key. Read
    /// again on SIGHUP, so keys rotate without a restart.
    #[arg(long)]
    pub publish_key_file: Option<std::path::PathBuf>,

    /// HMAC secret (at least 32 bytes) for HS256/HS384/HS512 subscribe tokens (JSON Web
    /// Tokens). With a token key configured, every subscription needs a token that names its
    /// channel. Repeat or separate with commas for rotation. Also from EDGECOMET_TOKEN_SECRET.
    #[arg(
        long,
        env = "EDGECOMET_TOKEN_SECRET",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub token_secret: Vec<String>,

    /// A file of HMAC token secrets, one per line (`#` comments), added to --token-secret.
    /// Read again on SIGHUP.
    #[arg(long)]
    pub token_secret_file: Option<std::path::PathBuf>,

    /// PEM public key for ES256/ES384 (EC), RS256/PS256 and their larger sizes (RSA) or EdDSA
    /// (Ed25519) subscribe tokens. Repeat for several (rotation). Read again on SIGHUP.
    #[arg(long)]
    pub token_public_key: Vec<std::path::PathBuf>,

    /// Seconds of clock skew allowed on a token's `exp` and `nbf`. A connection ends at
    /// `exp` + this.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub token_leeway: u32,

    /// A token must carry this `aud` (audience). Unset: `aud` is not checked.
    #[arg(long)]
    pub token_audience: Option<String>,

    /// A token must carry this `iss` (issuer). Unset: `iss` is not checked.
    #[arg(long)]
    pub token_issuer: Option<String>,

    /// Largest message sent to a private push address (`/push/{address}`), bytes. More: 413.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub push_max_bytes: u32,

    /// Sends to push addresses per second per source IP address (a token bucket; 0 = no
    /// limit). More: 429 with Retry-After. Per process.
    #[arg(long, default_value_t = 10)]
    pub push_rate: u32,

    /// Burst of the per-source push rate: sends a source may make at once after a pause.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub push_burst: u32,

    /// Source addresses the push rate limit remembers (a bounded table; beyond it, sources
    /// whose bucket has refilled are forgotten first).
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1..))]
    pub push_max_sources: u32,

    /// Milliseconds a shutdown (SIGTERM/SIGINT) may take, from the signal to the exit: messages
    /// already accepted are delivered, every client is told (WebSocket 1001, streams ended,
    /// held polls answered) and their closes are awaited until then; past it the process exits
    /// with the connections still open. SIGHUP does not stop the server.
    #[arg(long, default_value_t = 5000)]
    pub shutdown_timeout_ms: u64,

    /// Least severe log lines written (stderr): error, warn, info or debug. Events that can
    /// repeat per connection are summarised once a second per worker with their counts.
    #[arg(long, value_enum, default_value_t = LogLevel::Info)]
    pub log_level: LogLevel,

    /// Log line format: plain text, or json (one object per line: time, level, target,
    /// message, pid, fields). The "listening on" line stays plain in both (scripts read it).
    #[arg(long, value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

    /// CA certificate(s) (PEM) that a `rediss://` broker's certificate must chain to. Unset:
    /// the Mozilla root certificates built into the binary (webpki-roots).
    #[arg(long)]
    pub broker_ca: Option<std::path::PathBuf>,
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
        if let Some(url) = &self.broker {
            redis_addr(url)?;
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
