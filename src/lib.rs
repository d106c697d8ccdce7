//! edgecomet: a Comet server for a million concurrent long-lived connections.
//!
//! Layers, dependencies pointing down only (each uses those below it, never those above):
//! - [`server`], [`launcher`]: process wiring — workers and their listeners, the broker link,
//!   shutdown; `--processes` runs several copies of the process on one port.
//! - [`runtime`]: mechanism — sockets, the slab, the timing wheel, queues, the per-core worker
//!   loop, the cross-worker mailbox, and the state the workers share (`runtime::shared`). It
//!   moves bytes and applies what the layers below decide.
//! - [`broker`]: `--broker`, the Redis link (two threads); its interest table and RESP codec are
//!   sans-IO.
//! - [`session`]: protocol rules with state, sans-IO, `now` and randomness passed in — Bayeux
//!   sessions (meta channels, holds, ack, timesync) and their client store.
//! - [`auth`]: publish keys, subscribe tokens and their grants (the wall clock passed in),
//!   private push addresses and their rate limit.
//! - [`pubsub`]: channels within one worker; the hub shared by all workers (ids, history,
//!   `Client-Id` sessions); the message and its encodings. Sans-IO, `now` passed in.
//! - [`proto`]: wire formats, sans-IO — HTTP/1.1 heads and bodies, the WebSocket handshake,
//!   frames, UTF-8, Bayeux JSON.
//! - [`config`] (every flag and limit), [`stats`] (the counters), [`chunks`] (the table in
//!   fixed chunks: connections, Socket.IO sessions, Bayeux clients) and [`bounded`] (the queue
//!   between threads: inboxes, the broker's publishes) are used by all and use none;
//!   [`logging`] (the log's sink and the per-worker summary of repeated events) likewise, but for
//!   the two `config` enums it formats by.
//!
//! See `ARCHITECTURE.md` for the loop turn and a map from concept to file.

pub mod auth;
pub mod bounded;
pub mod broker;
pub mod chunks;
pub mod config;
pub mod launcher;
pub mod logging;
pub mod proto;
pub mod pubsub;
pub mod runtime;
pub mod server;
pub mod session;
pub mod stats;
pub mod tls;

pub use config::Config;
pub use server::Server;
