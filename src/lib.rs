//! edgecomet: a Comet server for a million concurrent long-lived connections.
//!
//! Layers, dependencies pointing one way:
//! - [`runtime`]: mechanism — sockets, slab, timing wheel, queues, the per-core worker loop and
//!   the cross-worker mailbox.
//! - [`proto`]: wire formats, sans-IO — HTTP/1.1 heads, the WebSocket handshake, frames, UTF-8.
//! - [`pubsub`]: policy, sans-IO — channels and their subscribers within one worker.
//! - [`session`]: protocol rules with state, sans-IO, `now` and randomness passed in — Bayeux
//!   sessions (meta channels, holds, ack, timesync) and their client store.
//!
//! [`server`] wires them together; [`config`] holds every flag and limit; [`stats`] the counters.
//! See `ARCHITECTURE.md` for the loop turn and a map from concept to file.

pub mod broker;
pub mod config;
pub mod launcher;
pub mod proto;
pub mod pubsub;
pub mod runtime;
pub mod server;
pub mod session;
pub mod stats;

pub use config::Config;
pub use server::Server;
