//! `flood`'s command line: the flags ([`Args`]), the subscribe URL ([`parse_url`]) and the
//! source addresses ([`parse_sources`]). Parsing only: nothing here opens a socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Parser, Subcommand};
use edgecomet::config::units;

use crate::bayeux::ConnType;
use crate::kcheck::CheckArgs;
use crate::plan::Transport;
use crate::socketio::SioTransport;

/// flood: a C10k-style load generator for WebSocket, Server-Sent Events, long-poll,
/// CometD/Bayeux and Socket.IO subscribers that reports what each connection costs.
#[derive(Debug, Clone, Parser)]
///
/// Durations take units (`500ms`, `30s`, `2m`, `1h`; a bare number is seconds) and sizes too
/// (`512B`, `64KiB`, `1MiB`, `1MB`; a bare number is bytes).
#[command(name = "flood", version, about, args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `flood check`: the machine's limits for N connections, as a table (no run).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Subscribe URL: ws://HOST:PORT/PREFIX/{channel} (http:// is the same: --transport says how
    /// to subscribe; wss:// or https:// for TLS, with --ca or --insecure). The publish URL is the
    /// same with the last `/sub/` replaced by `/pub/` (see --pub-path), over TLS too.
    #[arg(long, default_value = "ws://127.0.0.1:8080/sub/flood")]
    pub url: String,

    /// How each connection subscribes: `ws` (WebSocket upgrade, a text frame per message), `sse`
    /// (GET with `Accept: text/event-stream`, an event per message; `event: gap` counted as a
    /// gap) or `longpoll` (GET with `Accept: application/json` again and again on a keep-alive
    /// connection, `?cursor=` of the previous answer; a long-poll connection counts as open once
    /// its first poll is sent, since no answer comes before a message), or `bayeux` (a
    /// CometD/Bayeux 1.0 client per connection on --bayeux-path: `/meta/handshake`,
    /// `/meta/subscribe` to `/{channel}`, then `/meta/connect` again and again, the first with
    /// `advice.timeout` 0; open once that first connect is answered; messages arrive in connect
    /// replies; a failed meta reply or `reconnect: handshake` counts as an error and closes the
    /// connection), or `socketio` (a Socket.IO v5 / Engine.IO v4 client per connection on
    /// --socketio-path, over --socketio-transport: the open packet, a CONNECT to `/` with
    /// `auth: {channels: ["{channel}"]}`, open once the server's `40` arrives; every
    /// `42["message",payload]` is a message; pings answered; a `connect_error` counts as a
    /// `socketio` error).
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    pub transport: Transport,

    /// With --transport bayeux: `long-polling` (each request a POST of a JSON array, answered by
    /// a JSON array; handshake, subscribe and every connect one after another on ONE keep-alive
    /// connection per client, where the official client uses two) or `websocket` (one upgrade
    /// to the bare --bayeux-path per client, JSON arrays in text frames both ways).
    #[arg(long, value_enum, default_value_t = ConnType::LongPolling)]
    pub bayeux_transport: ConnType,

    /// With --transport bayeux: the Bayeux endpoint on the URL's host. The channel is still
    /// the URL's last segment (Bayeux `/{channel}`) and publishing still goes to the native
    /// `POST /pub/{channel}`.
    #[arg(long, default_value = "/cometd")]
    pub bayeux_path: String,

    /// With --transport socketio: the Engine.IO transport, `websocket` (`GET
    /// {path}?EIO=4&transport=websocket` with an upgrade, a packet per text frame) or `polling`
    /// (HTTP long-polling: `GET`s answered by `\x1e`-joined packets, the CONNECT and the pongs
    /// `POST`ed; one request at a time on ONE keep-alive connection per client, where a browser
    /// uses two; no upgrade to a WebSocket).
    #[arg(long, value_enum, default_value_t = SioTransport::WebSocket)]
    pub socketio_transport: SioTransport,

    /// With --transport socketio: the Socket.IO endpoint on the URL's host. The channel is still
    /// the URL's last segment (asked for in the CONNECT's `auth.channels`) and publishing still
    /// goes to the native `POST /pub/{channel}`.
    #[arg(long, default_value = "/socket.io/")]
    pub socketio_path: String,

    /// With --transport socketio: the event that carries a published message (edgecomet's
    /// --socketio-event). Its first argument is the payload; others are ignored.
    #[arg(long, default_value = "message")]
    pub socketio_event: String,

    /// Offer WebSocket compression: every WebSocket upgrade (ws, and bayeux and socketio over a
    /// WebSocket) asks for RFC 7692 permessage-deflate (`Sec-WebSocket-Extensions:
    /// permessage-deflate; client_no_context_takeover; client_max_window_bits`). A server that
    /// accepts may send any message compressed (RSV1): flood inflates it (at most 64 MiB) and
    /// checks it as any other; flood's own frames stay uncompressed. The report's `websocket`
    /// says how many upgrades agreed or declined, compressed and uncompressed frames, and bytes
    /// on the wire against payload bytes (the compression ratio). An answer naming an
    /// extension not offered (any, without --deflate) or a bad parameter fails the connection
    /// (`ws_extension` errors); a message that does not inflate too (`inflate` errors).
    #[arg(long)]
    pub deflate: bool,

    /// A subscribe token for every connection (a server with --token-secret): sent as
    /// `Authorization: Bearer` (ws, sse, longpoll), in the Bayeux handshake's `ext.auth.token`,
    /// or in the Socket.IO CONNECT's `auth.token`. Publishing does not send it.
    #[arg(long)]
    pub token: Option<String>,

    /// More targets of the same server (HOST:PORT, comma-separated, e.g. 127.0.0.2:8080 for a
    /// server listening on 0.0.0.0): connections are spread over the URL's address and these,
    /// each pair of source and target address giving another set of ephemeral ports. Publishing
    /// goes to the URL's address.
    #[arg(long, value_delimiter = ',')]
    pub also_target: Vec<String>,

    /// Path prefix for publishing (the channel name is appended).
    #[arg(long)]
    pub pub_path: Option<String>,

    /// Connections to open (up to 1,000,000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub conns: u64,

    /// New connections per second over all processes, or `max` (as fast as the server accepts;
    /// the report gives the rate reached).
    #[arg(long, default_value = "5000")]
    pub rate: String,

    /// How long to hold the connections once all are open (publishing meanwhile if
    /// --publish-rate is set): `30s`, `5m`, `500ms`; a bare number is seconds. 0 = until Ctrl-C
    /// or SIGTERM.
    #[arg(long, default_value = "10s", value_parser = duration_secs)]
    pub duration: Duration,

    /// Worker processes. Default: enough that each stays below its open-files limit (with a
    /// margin of 64).
    #[arg(long)]
    pub procs: Option<u32>,

    /// Source addresses, e.g. 127.0.0.2-127.0.0.40 (each gives another set of ephemeral
    /// ports). Default: the kernel chooses.
    #[arg(long)]
    pub source: Option<String>,

    /// Spread connections over K channels named {channel}-0 … {channel}-(K-1) (K = 1: {channel}).
    #[arg(long, default_value_t = 1)]
    pub channels: u32,

    /// Messages per second published (over all channels) while holding. 0 = no publishing.
    #[arg(long, default_value_t = 0.0)]
    pub publish_rate: f64,

    /// Bytes per published message (at least 32: sequence number and timestamp): `64`, `1KiB`,
    /// `1MiB` (at most 64MiB, the largest frame flood reads); a bare number is bytes.
    #[arg(long, default_value = "64", value_parser = units::bytes::<usize>(0, 64 << 20))]
    pub size: usize,

    /// Pad published messages with lines of a JSON price feed rather than dots, so that they
    /// compress like a real feed (with --deflate: dots compress a hundredfold, a feed a few
    /// times).
    #[arg(long)]
    pub json_payload: bool,

    /// Fraction (0 to 1) of the connections that read slowly once open: every
    /// round(1/FRACTION)-th connection, spread evenly over channels and processes. A slow reader
    /// reads --slow-read-rate bytes per second (0: nothing at all), so the server's and the
    /// kernel's buffers fill behind it. Slow readers are reported apart: their deliveries, and
    /// how many the server closed, are not loss or errors; loss and latency cover the others.
    #[arg(long, default_value_t = 0.0)]
    pub slow_readers: f64,

    /// Bytes per second each slow reader reads (see --slow-readers): `512`, `4KiB`; a bare
    /// number is bytes. 0 = it never reads again once open (a stalled client).
    #[arg(long, default_value = "0", value_parser = units::bytes::<u64>(0, u64::MAX))]
    pub slow_read_rate: u64,

    /// Connections per second (over all processes) that the client closes and replaces with new
    /// ones while holding: connection turnover, as long-poll clients without keep-alive or
    /// page reloads cause. The client closes first, so TIME-WAIT sockets (and their ports) are
    /// on this side; the report gives the turnover reached, TIME-WAIT peak and the connect errors
    /// (EADDRNOTAVAIL when the ports run out). Not with --publish-rate (a new connection misses
    /// what was published before it).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,

    /// Broadcasts before the hold: once every connection is open, publish one message on every
    /// channel and wait until it has reached every subscriber (or deliveries stop for --drain
    /// seconds), N times. The report gives each one's time to reach all (from the publish to
    /// the last delivery). Then the hold, with --publish-rate if set.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub broadcasts: u32,

    /// Keep-alive publisher connections (at most one per channel: the channels are split
    /// between them, so that one channel's messages leave in order).
    #[arg(long, default_value_t = 2)]
    pub publishers: usize,

    /// Publishes sent and not yet answered, at most, per publisher connection (HTTP/1.1
    /// pipelining; 1 = wait for each answer before the next). Each message is sent when it is
    /// due, whether or not the ones before it are answered, so a server slow to answer while
    /// it fans out does not hold the schedule up; only with this many unanswered does the next
    /// wait (counted in the report's publish schedule). Delivery latency is measured from each
    /// message's scheduled time, so a publish that left late shows in it.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub publish_pipeline: u64,

    /// Longest wait for deliveries after the last publish (`3s`, `500ms`; a bare number is
    /// seconds).
    #[arg(long, default_value = "3s", value_parser = duration_secs)]
    pub drain: Duration,

    /// Server process ids (comma-separated) for the memory figures. Default: the processes that
    /// listen on the target port (local targets only).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,

    /// How long a connection may take to complete its handshake before it counts as a timeout
    /// (`10s`, `500ms`; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = duration_secs)]
    pub connect_timeout: Duration,

    /// Connections in progress at once per process.
    #[arg(long, default_value_t = 1000)]
    pub max_in_flight: usize,

    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<String>,

    /// Write charts of the run (SVG): time series of open connections, connects/s and
    /// deliveries/s, latency p50/p99 of each second and memory (server PSS and kernel, in
    /// total and per open connection, on a log axis), the run's parameters on top; then the
    /// ramp's memory per connection and the latency distribution.
    /// SVG only: a bitmap name (`.png`, `.jpg`, `.gif`, `.bmp`) is refused.
    #[arg(long, value_name = "FILE.svg", value_parser = parse_plot_path)]
    pub plot: Option<String>,

    /// Write one JSON object per second while running, a line each, written as it is made (a
    /// crash leaves the lines so far): `t` (seconds since the workers started), `phase`, `open`,
    /// `connects_per_sec`, `closes_per_sec`, `deliveries_per_sec`, `latency_us` {`p50`, `p99`,
    /// `count`} of the deliveries of that second (null when none), `errors` (only the kinds
    /// that occurred in that second, by name, as in the report's `errors`), `errors_total`,
    /// `server_pss_bytes` (summed over the server's processes; null when flood cannot read
    /// them) and `kernel_bytes` (slab + TCP buffer pages grown since the start; null when
    /// unreadable).
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<String>,

    /// A ramp plan instead of --conns/--rate/--duration: `TARGET:DURATION,…`, e.g.
    /// `10000:30s,50000:60s,0:10s` (k6 stages, Tsung phases). Each stage moves the open
    /// connections linearly from the previous stage's target (0 at first) to TARGET over
    /// DURATION (a bare number is seconds): up by opening connections, down by closing them
    /// (the client closes first); the run ends after the last stage. The largest TARGET is the
    /// run's connection count (for the preflight check, the processes and the per-connection
    /// figures, read at the moment the most connections were open). Refused together with
    /// --conns, --rate, --duration, --churn, --broadcasts and --publish-rate (a connection
    /// opened mid-run misses earlier messages, so loss could not be counted).
    #[arg(long, value_name = "PLAN", value_parser = parse_stages,
          conflicts_with_all = ["conns", "rate", "duration", "churn", "broadcasts", "publish_rate"])]
    pub stages: Option<Stages>,

    /// Allow a target outside 127.0.0.0/8 and ::1 (a load test of somebody else's machine).
    #[arg(long)]
    pub allow_remote: bool,

    /// Start even if the preflight check says a limit stops the run.
    #[arg(long)]
    pub force: bool,

    /// With a wss:// or https:// URL: the PEM file of the CA(s) that signed the server's
    /// certificate (the trust anchors; the certificate must name the URL's host).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<String>,

    /// With a wss:// or https:// URL: do not verify the server's certificate (the session is
    /// encrypted, not authenticated). One of --ca and --insecure is required for TLS.
    #[arg(long)]
    pub insecure: bool,

    /// TLS session resumption: `on` (each worker process keeps the sessions and tickets the
    /// server gives, and a new connection offers one: reconnects and churn resume) or `off`
    /// (every handshake is a full one).
    #[arg(long, default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub tls_resume: bool,

    /// Internal: run as a worker with this plan (JSON).
    #[arg(long, hide = true)]
    pub worker_plan: Option<String>,
}

impl Args {
    /// Whether the subscribers use WebSockets: `ws`, or Bayeux or Socket.IO over one.
    pub fn websocket(&self) -> bool {
        match self.transport {
            Transport::Ws => true,
            Transport::Bayeux => self.bayeux_transport == ConnType::WebSocket,
            Transport::Socketio => self.socketio_transport == SioTransport::WebSocket,
            Transport::Sse | Transport::Longpoll => false,
        }
    }
}

/// `flood`'s subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// What stops this machine from holding N connections: a table of limits (open files,
    /// ports, fs.file-max, memory, tcp_mem, somaxconn) with what to change; exit status 1 when
    /// something blocks N (`kernel-tuning/check` runs this).
    Check(CheckArgs),
}

/// `--plot`: any file name but a bitmap one (flood draws SVG only: plotters' SVG backend needs no
/// font, a bitmap one would).
pub fn parse_plot_path(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    if [".png", ".jpg", ".jpeg", ".gif", ".bmp"]
        .iter()
        .any(|e| lower.ends_with(e))
    {
        return Err(format!(
            "{s}: --plot writes SVG only (no bitmap backend is built: it would need a font to \
             rasterize); give FILE.svg and convert it if a bitmap is needed"
        ));
    }
    Ok(s.to_string())
}

/// A duration flag whose bare number is seconds (`10`, `10s`, `500ms`, `2m`).
pub fn duration_secs(s: &str) -> Result<Duration, String> {
    units::parse_duration_ms(s, 1_000).map(Duration::from_millis)
}

/// One stage of `--stages`: move to `target` open connections over `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub target: u64,
    pub duration: Duration,
}

/// A parsed `--stages` plan (at least one stage, some target above 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stages(pub Vec<Stage>);

impl Stages {
    /// The largest target: the run's connection count.
    pub fn peak(&self) -> u64 {
        self.0.iter().map(|s| s.target).max().unwrap_or(0)
    }

    /// The whole plan's length.
    pub fn total(&self) -> Duration {
        self.0.iter().map(|s| s.duration).sum()
    }

    /// The target `at` after the start: linear within each stage, from the previous stage's
    /// target (0 before the first); the last target after the end.
    pub fn target_at(&self, at: Duration) -> u64 {
        let mut from = 0u64;
        let mut start = Duration::ZERO;
        for s in &self.0 {
            let end = start + s.duration;
            if at < end {
                let f = (at - start).as_secs_f64() / s.duration.as_secs_f64();
                let v = from as f64 + (s.target as f64 - from as f64) * f;
                return v.round() as u64;
            }
            from = s.target;
            start = end;
        }
        from
    }

    /// As given: `10000:30s,0:10s`.
    pub fn spec(&self) -> String {
        self.0
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s.target,
                    units::format_duration(s.duration.as_millis() as u64)
                )
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `--stages`: `TARGET:DURATION` pairs, comma-separated; targets 0 to 1,000,000, durations
/// above 0 (a bare number is seconds), some target above 0.
pub fn parse_stages(s: &str) -> Result<Stages, String> {
    let mut out = Vec::new();
    for (i, part) in s.split(',').enumerate() {
        let n = i + 1;
        let part = part.trim();
        let (t, d) = part.split_once(':').ok_or_else(|| {
            format!("stage {n} ({part:?}) is not TARGET:DURATION, e.g. 10000:30s")
        })?;
        let target: u64 =
            t.trim().replace('_', "").parse().map_err(|_| {
                format!("stage {n}: the target {t:?} is not a number of connections")
            })?;
        if target > 1_000_000 {
            return Err(format!(
                "stage {n}: {target} connections is more than 1,000,000"
            ));
        }
        let ms = units::parse_duration_ms(d, 1_000).map_err(|e| format!("stage {n}: {e}"))?;
        if ms == 0 {
            return Err(format!(
                "stage {n}: the duration must be above 0 (a stage moves to its target over it)"
            ));
        }
        out.push(Stage {
            target,
            duration: Duration::from_millis(ms),
        });
    }
    if out.iter().all(|s| s.target == 0) {
        return Err("no stage has a target above 0 connections".into());
    }
    Ok(Stages(out))
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("on or off".into()),
    }
}

/// Parsed target.
pub struct Target {
    /// `wss://` or `https://`.
    pub tls: bool,
    pub addr: SocketAddr,
    pub host: String,
    pub sub_prefix: String,
    pub pub_prefix: String,
    pub channel: String,
}

pub fn parse_url(args: &Args) -> Result<Target, String> {
    let (tls, rest) = [
        ("ws://", false),
        ("http://", false),
        ("wss://", true),
        ("https://", true),
    ]
    .iter()
    .find_map(|&(scheme, tls)| Some((tls, args.url.strip_prefix(scheme)?)))
    .ok_or("--url must start with ws://, http://, wss:// or https://")?;
    let (host, path) = rest
        .split_once('/')
        .ok_or("--url needs a path: /sub/{channel}")?;
    // Without a port: 80, or 443 for TLS.
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
    let with_port = if has_port {
        host.to_string()
    } else {
        format!("{host}:{}", if tls { 443 } else { 80 })
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    let path = format!("/{path}");
    let cut = path.rfind('/').unwrap_or(0) + 1;
    let (sub_prefix, channel) = path.split_at(cut);
    if channel.is_empty() {
        return Err("--url must end with a channel name".into());
    }
    let pub_prefix = match &args.pub_path {
        Some(p) => p.clone(),
        None => match sub_prefix.rfind("/sub/") {
            Some(i) => format!("{}/pub/{}", &sub_prefix[..i], &sub_prefix[i + 5..]),
            None => return Err("cannot derive the publish path: give --pub-path".into()),
        },
    };
    Ok(Target {
        tls,
        addr,
        host: host.to_string(),
        sub_prefix: sub_prefix.to_string(),
        pub_prefix,
        channel: channel.to_string(),
    })
}

/// `127.0.0.2-127.0.0.40` or `127.0.0.2` or a comma list of either.
pub fn parse_sources(s: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let a: Ipv4Addr = a.trim().parse().map_err(|_| format!("bad address {a:?}"))?;
        let b: Ipv4Addr = b.trim().parse().map_err(|_| format!("bad address {b:?}"))?;
        let (a, b) = (u32::from(a), u32::from(b));
        if b < a || b - a > 1 << 16 {
            return Err(format!("bad range {part:?}"));
        }
        out.extend((a..=b).map(Ipv4Addr::from));
    }
    Ok(out)
}

pub fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str) -> Args {
        Args::parse_from(["flood", "--url", url])
    }

    #[test]
    fn urls() {
        let t = parse_url(&args("ws://127.0.0.1:9000/sub/news")).unwrap();
        assert_eq!(t.addr.port(), 9000);
        assert_eq!(t.sub_prefix, "/sub/");
        assert_eq!(t.pub_prefix, "/pub/");
        assert_eq!(t.channel, "news");
        let t = parse_url(&args("ws://localhost:9000/app/sub/x")).unwrap();
        assert_eq!(t.pub_prefix, "/app/pub/");
        let t = parse_url(&args("http://127.0.0.1:9000/sub/x")).unwrap();
        assert_eq!((t.addr.port(), t.channel.as_str()), (9000, "x"));
        assert!(!t.tls);
        let t = parse_url(&args("https://127.0.0.1/sub/x")).unwrap();
        assert!(t.tls);
        assert_eq!((t.addr.port(), t.host.as_str()), (443, "127.0.0.1"));
        let t = parse_url(&args("wss://localhost:8443/sub/x")).unwrap();
        assert!(t.tls);
        assert_eq!((t.addr.port(), t.host.as_str()), (8443, "localhost:8443"));
        assert_eq!(
            parse_url(&args("ws://127.0.0.1/sub/x"))
                .unwrap()
                .addr
                .port(),
            80
        );
        assert!(parse_url(&args("ftp://127.0.0.1/sub/x")).is_err());
        assert!(parse_url(&args("ws://127.0.0.1:1/sub/")).is_err());
    }

    #[test]
    fn transports() {
        assert_eq!(args("ws://127.0.0.1/sub/x").transport, Transport::Ws);
        for (t, want) in [
            ("ws", Transport::Ws),
            ("sse", Transport::Sse),
            ("longpoll", Transport::Longpoll),
            ("bayeux", Transport::Bayeux),
            ("socketio", Transport::Socketio),
        ] {
            let a = Args::parse_from(["flood", "--transport", t]);
            assert_eq!(a.transport, want);
            assert_eq!(want.name(), t);
        }
        assert!(Args::try_parse_from(["flood", "--transport", "stream"]).is_err());
        let a = Args::parse_from(["flood", "--transport", "bayeux"]);
        assert_eq!(a.bayeux_transport, ConnType::LongPolling);
        assert_eq!(a.bayeux_path, "/cometd");
        for (t, want) in [
            ("long-polling", ConnType::LongPolling),
            ("websocket", ConnType::WebSocket),
        ] {
            let a = Args::parse_from(["flood", "--transport", "bayeux", "--bayeux-transport", t]);
            assert_eq!(a.bayeux_transport, want);
            assert_eq!(want.name(), t);
        }
        assert!(Args::try_parse_from(["flood", "--bayeux-transport", "ws"]).is_err());
        let a = Args::parse_from(["flood", "--transport", "socketio"]);
        assert_eq!(a.socketio_transport, SioTransport::WebSocket);
        assert_eq!(a.socketio_path, "/socket.io/");
        assert_eq!(a.socketio_event, "message");
        assert_eq!(a.token, None);
        for (t, want) in [
            ("websocket", SioTransport::WebSocket),
            ("polling", SioTransport::Polling),
        ] {
            let a = Args::parse_from(["flood", "--socketio-transport", t, "--token", "k"]);
            assert_eq!(a.socketio_transport, want);
            assert_eq!(want.name(), t);
            assert_eq!(a.token.as_deref(), Some("k"));
        }
        assert!(Args::try_parse_from(["flood", "--socketio-transport", "ws"]).is_err());
    }

    #[test]
    fn tls_flags() {
        let a = args("wss://127.0.0.1:1/sub/x");
        assert!(a.tls_resume);
        assert!(!a.insecure);
        assert_eq!(a.ca, None);
        let a = Args::parse_from(["flood", "--tls-resume", "off", "--ca", "ca.pem"]);
        assert!(!a.tls_resume);
        assert_eq!(a.ca.as_deref(), Some("ca.pem"));
        assert!(Args::try_parse_from(["flood", "--tls-resume", "maybe"]).is_err());
    }

    #[test]
    fn durations_and_sizes_take_units_and_bare_numbers_keep_their_old_unit() {
        let a = Args::parse_from(["flood"]);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.drain, Duration::from_secs(3));
        assert_eq!(a.connect_timeout, Duration::from_secs(10));
        assert_eq!(a.size, 64);
        let a = Args::parse_from([
            "flood",
            "--duration",
            "2m",
            "--drain",
            "500ms",
            "--connect-timeout",
            "7",
            "--size",
            "1KiB",
            "--slow-read-rate",
            "4KiB",
        ]);
        assert_eq!(a.duration, Duration::from_secs(120));
        assert_eq!(a.drain, Duration::from_millis(500));
        assert_eq!(a.connect_timeout, Duration::from_secs(7));
        assert_eq!(a.size, 1024);
        assert_eq!(a.slow_read_rate, 4096);
        let a = Args::parse_from(["flood", "--duration", "30", "--size", "100"]);
        assert_eq!(a.duration, Duration::from_secs(30));
        assert_eq!(a.size, 100);
        for bad in [
            ["--duration", "10 parsecs"],
            ["--size", "1.5MiB"],
            ["--drain", "-1"],
        ] {
            assert!(
                Args::try_parse_from(["flood", bad[0], bad[1]]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stages_parse_and_interpolate() {
        let s = parse_stages("10000:30s,50_000:1m,0:10").unwrap();
        assert_eq!(s.0.len(), 3);
        assert_eq!(s.peak(), 50_000);
        assert_eq!(s.total(), Duration::from_secs(100));
        assert_eq!(s.spec(), "10000:30s,50000:1m,0:10s");
        assert_eq!(s.target_at(Duration::ZERO), 0);
        assert_eq!(s.target_at(Duration::from_secs(15)), 5_000);
        assert_eq!(s.target_at(Duration::from_secs(30)), 10_000);
        assert_eq!(s.target_at(Duration::from_secs(60)), 30_000);
        assert_eq!(s.target_at(Duration::from_secs(95)), 25_000);
        assert_eq!(s.target_at(Duration::from_secs(100)), 0);
        assert_eq!(s.target_at(Duration::from_secs(1000)), 0);
        let down = parse_stages("100:500ms").unwrap();
        assert_eq!(down.target_at(Duration::from_millis(250)), 50);
        for (bad, says) in [
            ("", "not TARGET:DURATION"),
            ("1000", "not TARGET:DURATION"),
            ("x:10s", "not a number of connections"),
            ("-5:10s", "not a number of connections"),
            ("1000:0s", "above 0"),
            ("1000:10q", "unknown unit"),
            ("2000000:10s", "more than 1,000,000"),
            ("0:10s,0:5s", "no stage has a target above 0"),
            ("1000:10s,", "stage 2"),
        ] {
            let e = parse_stages(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn stages_refuse_the_flags_they_replace() {
        let a = Args::parse_from(["flood", "--stages", "10:1s,0:1s"]);
        assert_eq!(a.stages.unwrap().peak(), 10);
        for other in [
            ["--conns", "10"],
            ["--rate", "100"],
            ["--duration", "5s"],
            ["--publish-rate", "10"],
            ["--broadcasts", "1"],
            ["--churn", "5"],
        ] {
            let e = Args::try_parse_from(["flood", "--stages", "10:1s", other[0], other[1]])
                .unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{other:?}"
            );
        }
    }

    #[test]
    fn plots_are_svg() {
        let a = Args::parse_from(["flood", "--plot", "run.svg"]);
        assert_eq!(a.plot.as_deref(), Some("run.svg"));
        for bad in ["run.png", "RUN.PNG", "x.jpg", "x.gif"] {
            let e = Args::try_parse_from(["flood", "--plot", bad]).unwrap_err();
            assert!(e.to_string().contains("SVG only"), "{e}");
        }
    }

    #[test]
    fn check_is_a_subcommand() {
        let a = Args::parse_from(["flood", "check", "--conns", "1000", "--role", "server"]);
        match a.command {
            Some(Command::Check(c)) => assert_eq!(c.conns, 1000),
            None => panic!("no subcommand"),
        }
        assert!(
            Args::parse_from(["flood", "--conns", "5"])
                .command
                .is_none()
        );
        let help = <Args as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        assert!(help.contains("check"), "{help}");
    }

    #[test]
    fn sources() {
        let s = parse_sources("127.0.0.2-127.0.0.4,127.0.0.9").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[3], Ipv4Addr::new(127, 0, 0, 9));
        assert!(parse_sources("127.0.0.4-127.0.0.2").is_err());
        assert!(parse_sources("x").is_err());
    }
}
