//! flood, the client toolkit of edgecomet: the `flood` load generator's coordinator and
//! workers, and the pieces the benchmark tools (`bench/`) share with it. `src/main.rs` only
//! parses the flags and starts the coordinator or a worker.
//!
//! | concept | module |
//! |---|---|
//! | flags, subscribe URL, source addresses | [`cli`] |
//! | the run's phases (preflight, spawn, ramp, broadcasts, hold, drain, close, report) | [`coordinator`] |
//! | coordinator ↔ worker messages (plan, progress, finals, error kinds) | [`plan`] |
//! | a worker: connection table, event loop, pacing, slow readers, churn, loss accounting | [`engine`] |
//! | a worker's per-transport wire work | `engine/transports.rs` |
//! | WebSocket client: upgrade request, server frame headers, masked frames | [`ws`] |
//! | `--deflate`: permessage-deflate offer, the server's answer, inflating | [`deflate`] |
//! | SSE stream parser | [`sse`] |
//! | long-poll answers (strict HTTP response framing) | [`longpoll`] |
//! | Bayeux requests, reply framing and decoding, clientIds | [`bayeux`] |
//! | Socket.IO / Engine.IO requests and packets | [`socketio`] |
//! | HTTP client: head end, requests, keep-alive `HttpConn` | [`http`] |
//! | source-bound non-blocking connect, open-files limit | [`sys`] |
//! | TLS: client settings (`--ca`, `--insecure`, resumption), a connection's sans-IO session | [`tls`] |
//! | `/proc` readings: PSS/RSS/huge pages, kernel memory, listening pids | [`memory`] |
//! | message payload: sequence number and timestamp | [`msg`] |
//! | the publish load and broadcasts | [`publish`] |
//! | machine limits before a run; `flood check` | [`preflight`], [`kcheck`] |
//! | the report (summary, JSON) and its SVG charts (ramp, latency distribution) | [`report`], [`plot`] |
//! | the report's WebSocket frames, wire bytes and compression | [`wire`] |
//! | the run over time: a row a second (`--jsonl`), the progress line | [`live`] |
//! | the run over time as charts (plotters, `--plot`) | [`timeline`] |
//!
//! Dependencies point one way: the sans-IO parsers ([`ws`], [`deflate`], [`sse`], [`longpoll`], [`bayeux`], [`socketio`],
//! [`msg`], [`http::head_end`]) import nothing above them; [`engine`] and [`coordinator`] use
//! them and [`plan`], and never each other.

pub mod bayeux;
pub mod cli;
pub mod coordinator;
pub mod deflate;
pub mod engine;
pub mod http;
pub mod kcheck;
pub mod live;
pub mod longpoll;
pub mod memory;
pub mod msg;
pub mod plan;
pub mod plot;
pub mod preflight;
pub mod publish;
pub mod report;
pub mod socketio;
pub mod sse;
pub mod sys;
pub mod timeline;
pub mod tls;
pub mod wire;
pub mod ws;
