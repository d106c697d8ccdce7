//! The mechanism: sockets, the connection slab, the timing wheel, outbound queues, the per-core
//! worker loop and the cross-worker mailbox. It knows HTTP and WebSocket only through `proto`
//! (sans-IO parsers) and channels only through `pubsub` (the subscription table).

pub mod conn;
pub mod mailbox;
pub mod metrics;
pub mod outq;
pub mod shared;
pub mod timer;
pub mod worker;
