//! Bayeux 1.0 (CometD) sessions, sans-IO: the meta channels (handshake, connect holds,
//! subscribe/unsubscribe, disconnect), publishes, `/service/echo`, who may act for a clientId,
//! advice, and the ack and timesync extensions, over a store of clients shared by every worker.
//!
//! The runtime parses a request into [`Request`]s (`proto::bayeux`), describes where it came
//! from in a [`Ctx`] (transport, `BAYEUX_BROWSER` cookie, [`Now`], the connection as a
//! [`Waiter`]) and a [`Link`] (what a WebSocket carries between frames), and drives
//! [`Rules::message`] over [`in_effect`]`(reqs)`. What to do comes back as values: replies and
//! deliveries in order, a connect to hold and for how long, a cookie to set, held connects to
//! wake ([`Batch`]), and each publish to perform ([`Step::Publish`], whose outcome the runtime
//! hands back to [`Rules::published`]). When a hold ends, [`Rules::end_hold`] writes the reply.
//!
//! Nothing here reads a clock, draws a random number, touches a socket or knows the broker:
//! time comes in [`Now`], random bits and the broker's side of subscriptions go through
//! [`Env`]. That is what lets `tests.rs` run the whole meta flow without a socket or a sleep.
//!
//! Files: `rules.rs` the decisions per message, `reply.rs` the JSON of replies, `store.rs` the
//! clients and subscription index (shared, one mutex), `client.rs` one client's record,
//! `ids.rs` client ids and cookie values.

mod client;
pub mod ids;
mod reply;
mod rules;
pub mod store;
#[cfg(test)]
mod tests;

pub use client::Out;
pub use ids::ClientId;
pub use reply::{advice, bad_request};
pub use rules::{Rules, in_effect};
pub use store::{BayeuxLimits, BayeuxStats, Clients, Connect, Interest, Refusal, Waiter};

use bytes::Bytes;

pub use crate::proto::bayeux::Request;
use crate::proto::bayeux::TimeSync;

/// The time as the caller read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Seconds on a monotonic clock, the same for every caller of one store (expiry).
    pub secs: u32,
    /// The wall clock, ms since the Unix epoch (timesync).
    pub unix_ms: i64,
}

/// The transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    LongPolling,
    CallbackPolling,
    WebSocket,
}

/// Where a batch of messages came from.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub via: Via,
    /// The request's (or the WebSocket upgrade's) `BAYEUX_BROWSER` cookie, when it is one we
    /// could have set (32 hex digits).
    pub browser: Option<&'a str>,
    /// When the batch arrived.
    pub now: Now,
    /// The connection, as the store knows a connection that holds a connect.
    pub waiter: Waiter,
}

/// What a WebSocket connection carries from one batch to the next (over HTTP: nothing).
#[derive(Debug, Default)]
pub struct Link {
    /// The client the connection acts for: set by a handshake on it, or by the first message
    /// whose clientId is accepted (a client reconnecting without a handshake). Messages with
    /// another clientId are refused.
    pub client: Option<ClientId>,
    /// The connect held on the connection, if any (the rules end it when another connect or a
    /// disconnect comes).
    pub held: Option<HeldConnect>,
}

/// A `/meta/connect` waiting for messages.
#[derive(Debug)]
pub struct HeldConnect {
    pub client: ClientId,
    /// The connect's `id` (as JSON); its reply is written when the hold ends.
    pub id: Option<Box<str>>,
    /// The client's timesync sample and when the connect arrived (ms since the epoch); boxed,
    /// since few clients use the extension.
    pub timesync: Option<Box<(TimeSync, i64)>>,
}

/// What the rules need from outside besides time: random bits, and the broker's side of
/// subscriptions.
pub trait Env {
    /// 128 random bits (client ids, `BAYEUX_BROWSER` cookies): unguessable in production.
    fn random(&mut self) -> u128;
    /// A subscription got its first client or lost its last ([`Interest`]). Called while the
    /// store is locked: quick, and never back into the store.
    fn interest(&mut self, change: Interest<'_>);
}

/// What processing a batch leaves to do.
#[derive(Debug, Default)]
pub struct Batch {
    /// Replies and deliveries so far, each a JSON object, in order.
    pub out: Vec<Bytes>,
    /// A connect to hold, and for how many seconds (the client's advised timeout, at most
    /// `--bayeux-timeout`).
    pub hold: Option<(HeldConnect, u32)>,
    /// A `BAYEUX_BROWSER` cookie for the HTTP answer (`Set-Cookie`).
    pub set_cookie: Option<String>,
    /// Held connects to wake: replaced by a newer connect, or of a client that disconnected.
    pub wake: Vec<Waiter>,
    /// Messages refused for naming another client than the one their WebSocket acts for.
    pub wrong_connection: u64,
    /// What the subscribe tokens decided (counted by the caller).
    pub tokens: TokenCounts,
}

/// Token decisions in a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TokenCounts {
    /// Handshakes whose token was accepted.
    pub accepted: u64,
    /// A handshake refused, and why.
    pub refused: Option<crate::auth::TokenError>,
    /// Subscribes and publishes outside the token's grant (403).
    pub channel: u64,
    /// Messages of a client whose token had ended (the client was removed: 401).
    pub expired: u64,
}

/// What a message asks of the caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'r> {
    /// Nothing more: its reply is in the batch.
    Done,
    /// Publish `data` (JSON) on the native channel `native`, then report the outcome with
    /// [`Rules::published`], which writes the reply.
    Publish { native: &'r str, data: &'r str },
}

/// Why a publish was not done (its reply says `503`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishRefusal {
    /// `--max-channels` channels have state.
    ChannelLimit,
    /// `--broker`: Redis is unreachable or the publish queue is full.
    BrokerUnavailable,
    /// A shutdown has begun.
    Draining,
}
