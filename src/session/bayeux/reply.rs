//! The JSON of the rules' replies that more than one meta channel writes: the advice, the
//! unknown-client refusal, `ext` with timesync (and ack), a connect's reply. Values only: the
//! times in them are the caller's.

use std::fmt::Write as _;

use super::{HeldConnect, Out};
use crate::proto::bayeux::{ParseError, Reply, Request};

/// What the handshake reply offers.
pub(super) const TRANSPORTS: &str = r#"["websocket","long-polling","callback-polling"]"#;

/// The full advice of every successful connect and handshake reply (the client replaces its
/// advice with what a message carries): `timeout` (`--bayeux-timeout`) and `maxInterval`
/// (`--bayeux-max-interval`), given in seconds, written in ms. Built once by the caller.
pub fn advice(timeout: u32, max_interval: u32) -> String {
    format!(
        "{{\"reconnect\":\"retry\",\"interval\":0,\"timeout\":{},\"maxInterval\":{}}}",
        u64::from(timeout) * 1000,
        u64::from(max_interval) * 1000
    )
}

/// The unsuccessful reply for an unknown client: `402::Unknown client`, advice handshake.
pub(super) fn unknown_client(r: &Request) -> String {
    Reply::to(r, false)
        .error(402, "", "Unknown client")
        .raw("advice", "{\"reconnect\":\"handshake\",\"interval\":0}")
        .finish()
}

/// `ext` for the reply to a meta message: `ack: true` (a handshake granting the extension) and
/// timesync when the client sent a sample (`now_ms`: when it arrived, and when answered).
pub(super) fn with_timesync(rep: Reply, r: &Request, now_ms: i64, ack: bool) -> Reply {
    let mut ext = Vec::new();
    if ack {
        ext.push("\"ack\":true".to_string());
    }
    if let Some(t) = r.ext_timesync {
        ext.push(format!("\"timesync\":{}", t.reply(now_ms, 0)));
    }
    if ext.is_empty() {
        rep
    } else {
        rep.raw("ext", &format!("{{{}}}", ext.join(",")))
    }
}

/// The reply to a held or answered connect: the full advice, then `ext` with the deliveries'
/// batch number (ack), drops, timesync (`now_ms`: when the reply is written; the time held is
/// counted from the connect's arrival).
pub(super) fn connect_reply(held: HeldConnect, out: &Out, advice: &str, now_ms: i64) -> String {
    let mut s = Reply::new("/meta/connect", true, held.id.as_deref())
        .str("clientId", &held.client.to_string())
        .raw("advice", advice)
        .into_open();
    let mut ext = Vec::new();
    if let Some(b) = out.batch {
        ext.push(format!("\"ack\":{b}"));
    }
    if out.dropped > 0 {
        ext.push(format!("\"dropped\":{}", out.dropped));
    }
    if let Some((t, at)) = held.timesync.as_deref().copied() {
        ext.push(format!("\"timesync\":{}", t.reply(at, now_ms - at)));
    }
    if !ext.is_empty() {
        let _ = write!(s, ",\"ext\":{{{}}}", ext.join(","));
    }
    s.push('}');
    s
}

/// The answer to a request that is not a batch of messages (HTTP 400).
pub fn bad_request(e: ParseError) -> String {
    format!(
        "[{{\"successful\":false,\"error\":\"400::{}\"}}]",
        e.message()
    )
}
