//! Socket.IO v5 over Engine.IO v4 for `flood --transport socketio`, sans-IO: the requests and
//! packets one client sends and the packets it reads. Each connection is one Socket.IO client of
//! the main namespace `/`:
//!
//! - `websocket` (`--socketio-transport websocket`, default): `GET {path}?EIO=4&transport=websocket`
//!   with an upgrade, then one Engine.IO packet per text frame: the open packet `0{"sid":…}`,
//!   the client's CONNECT `40{"channels":["…"]}`, the server's `40{"sid":…}`, then events;
//! - `polling`: `GET {path}?EIO=4&transport=polling` (the handshake: the open packet), `POST`
//!   of the CONNECT with `&sid=`, then `GET`s one after another, each answered by packets joined
//!   by `\x1e`; a ping is answered by `POST 3` before the next `GET`. All of it on one
//!   keep-alive connection, one request at a time (a browser uses a second connection for what it
//!   sends while its `GET` is held; flood sends only between two `GET`s, so one is enough).
//!
//! Server pings (`2`) are answered `3`. An event `42["message",payload,…]` is a delivery; its
//! first argument is flood's payload, a JSON string (the publisher's body is not valid JSON),
//! decoded with its escapes; with connection-state recovery the server appends the offset as a
//! last argument, which is ignored. An event `gap` ([`GAP_EVENT`]) is a gap the server reports.
//!
//! Parsing is on complete input only: a frame or a polling response's body, then [`packets`]
//! and [`packet`]. This module never touches a socket or a clock.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The Engine.IO transport a flood connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum SioTransport {
    /// One WebSocket per client, one Engine.IO packet per text frame.
    #[default]
    #[value(name = "websocket")]
    #[serde(rename = "websocket")]
    WebSocket,
    /// HTTP long-polling: `GET`s answered by `\x1e`-joined packets, `POST`s of packets, on one
    /// keep-alive connection.
    #[value(name = "polling")]
    #[serde(rename = "polling")]
    Polling,
}

impl SioTransport {
    /// The name in the query (`transport=`).
    pub fn name(self) -> &'static str {
        match self {
            SioTransport::WebSocket => "websocket",
            SioTransport::Polling => "polling",
        }
    }
}

/// The event edgecomet emits before the next message when messages were lost on the way to it
/// (`42["gap",{"missed":N}]`, with `--broker`): counted as a gap reported by the server.
pub const GAP_EVENT: &str = "gap";

/// The Engine.IO packet separator of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// The path and query of the WebSocket upgrade: `{path}?EIO=4&transport=websocket`.
pub fn websocket_path(path: &str) -> String {
    format!("{path}?EIO=4&transport=websocket")
}

/// Appends a polling request to `out`: a `GET` (no `body`) or a `POST` of `body`, with `sid`
/// in the query once the handshake gave one (`""`: the handshake itself).
pub fn poll_request(out: &mut Vec<u8>, path: &str, host: &str, sid: &str, body: Option<&[u8]>) {
    let method = if body.is_some() { "POST" } else { "GET" };
    let _ = write!(out, "{method} {path}?EIO=4&transport=polling");
    if !sid.is_empty() {
        out.extend_from_slice(b"&sid=");
        percent_encode(out, sid);
    }
    let _ = write!(out, " HTTP/1.1\r\nHost: {host}\r\n");
    match body {
        Some(b) => {
            let _ = write!(
                out,
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            out.extend_from_slice(b);
        }
        None => out.extend_from_slice(b"\r\n"),
    }
}

/// Appends `s` to a query, percent-encoding all but the unreserved characters.
fn percent_encode(out: &mut Vec<u8>, s: &str) {
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The CONNECT packet of the main namespace asking for `channel`, with `token` in the auth
/// payload when there is one: `40{"channels":["news"],"token":"…"}`.
pub fn connect_packet(channel: &str, token: Option<&str>) -> Vec<u8> {
    let mut out = b"40{\"channels\":[".to_vec();
    json_string(&mut out, channel);
    out.push(b']');
    if let Some(t) = token {
        out.extend_from_slice(b",\"token\":");
        json_string(&mut out, t);
    }
    out.push(b'}');
    out
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The packets of a polling payload (`\x1e`-joined). An empty body has none.
pub fn packets(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == SEPARATOR).filter(|p| !p.is_empty())
}

/// An event's first argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg<'a> {
    /// A JSON string, decoded (flood's payloads).
    Text(Cow<'a, str>),
    /// Another JSON value: the publisher's body was valid JSON (not flood's).
    NotText,
    /// No argument at all.
    Absent,
}

/// One Engine.IO packet (and, for a message, the Socket.IO packet inside), as flood sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{…}`: the handshake; `sid` identifies the session (polling requests carry it).
    Open { sid: Cow<'a, str> },
    /// `1`: the server closes the session.
    Close,
    /// `2`: a ping, to be answered `3`.
    Ping,
    /// `40…`: the server accepted the CONNECT to the main namespace.
    Connect,
    /// `44{"message":…}`: the server refused the CONNECT (a refused token or channel, an
    /// unknown namespace).
    ConnectError(Cow<'a, str>),
    /// `41`: the server disconnected the socket from the main namespace.
    Disconnect,
    /// `42["name",arg,…]` on the main namespace: an event, its name and first argument.
    Event { name: Cow<'a, str>, arg: Arg<'a> },
    /// Anything else: a pong, a noop, an upgrade, acks, binary events and attachments,
    /// packets of other namespaces.
    Other,
}

/// Decodes one Engine.IO packet. An error means the packet cannot be followed (not a known
/// Engine.IO type, a malformed open packet, an event whose arguments are not a JSON array).
pub fn packet(p: &[u8]) -> Result<Packet<'_>, &'static str> {
    let (&kind, rest) = p.split_first().ok_or("an empty Engine.IO packet")?;
    match kind {
        b'0' => {
            let open: OpenPacket<'_> =
                serde_json::from_slice(rest).map_err(|_| "an open packet that is not the JSON")?;
            Ok(Packet::Open { sid: open.sid })
        }
        b'1' => Ok(Packet::Close),
        b'2' => Ok(Packet::Ping),
        b'3' | b'5' | b'6' => Ok(Packet::Other),
        b'4' => socket_packet(rest),
        // Binary over polling (`b<base64>`): an attachment, nothing flood publishes.
        b'b' => Ok(Packet::Other),
        _ => Err("not an Engine.IO packet"),
    }
}

/// The Socket.IO packet inside an Engine.IO message: `<type>[/nsp,][id]<json>`.
fn socket_packet(p: &[u8]) -> Result<Packet<'_>, &'static str> {
    let (&kind, mut rest) = p.split_first().ok_or("an empty Socket.IO packet")?;
    if let Some(r) = rest.strip_prefix(b"/") {
        // A namespace: up to the comma (or the end). Only `/` is flood's.
        let end = r.iter().position(|&b| b == b',').unwrap_or(r.len());
        if end > 0 {
            return Ok(Packet::Other);
        }
        rest = r.get(end + 1..).unwrap_or(&[]);
    }
    match kind {
        b'0' => Ok(Packet::Connect),
        b'1' => Ok(Packet::Disconnect),
        b'4' => {
            let e: ErrorPayload<'_> = serde_json::from_slice(rest).unwrap_or_default();
            Ok(Packet::ConnectError(
                e.message.unwrap_or(Cow::Borrowed("(no message)")),
            ))
        }
        b'2' => {
            // An ack id (digits) may come before the arguments.
            let at = rest
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(rest.len());
            let ev: EventArgs<'_> = serde_json::from_slice(&rest[at..])
                .map_err(|_| "an event whose arguments are not a JSON array")?;
            Ok(Packet::Event {
                name: ev.name,
                arg: ev.arg,
            })
        }
        b'3' | b'5' | b'6' => Ok(Packet::Other),
        _ => Err("not a Socket.IO packet"),
    }
}

#[derive(Deserialize)]
struct OpenPacket<'a> {
    #[serde(borrow)]
    sid: Cow<'a, str>,
}

#[derive(Default, Deserialize)]
struct ErrorPayload<'a> {
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
}

/// An event's name and first argument; the other arguments are skipped.
struct EventArgs<'a> {
    name: Cow<'a, str>,
    arg: Arg<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for EventArgs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = EventArgs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array: the event name and its arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<EventArgs<'a>, A::Error> {
                let Some(Arg::Text(name)) = a.next_element::<Arg<'a>>()? else {
                    return Err(de::Error::custom("an event without a name"));
                };
                let arg = a.next_element::<Arg<'a>>()?.unwrap_or(Arg::Absent);
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(EventArgs { name, arg })
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Arg<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Arg<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Arg<'a>, E> {
                Ok(Arg::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Arg<'a>, E> {
                Ok(Arg::Text(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Arg<'a>, E> {
                Ok(Arg::Text(Cow::Owned(s)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Arg<'a>, E> {
                Ok(Arg::NotText)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Arg<'a>, E> {
                Ok(Arg::NotText)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Arg<'a>, E> {
                Ok(Arg::NotText)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Arg<'a>, E> {
                Ok(Arg::NotText)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Arg<'a>, E> {
                Ok(Arg::NotText)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Arg<'a>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Arg::NotText)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Arg<'a>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Arg::NotText)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(name: &'a str, arg: Arg<'a>) -> Packet<'a> {
        Packet::Event {
            name: Cow::Borrowed(name),
            arg,
        }
    }

    #[test]
    fn open_packets() {
        let p = br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(
            packet(p),
            Ok(Packet::Open {
                sid: Cow::Borrowed("lv_VI97HAXpY6yYWAAAC")
            })
        );
        assert!(packet(b"0{}").is_err());
        assert!(packet(b"0not json").is_err());
    }

    #[test]
    fn engine_packets() {
        assert_eq!(packet(b"1"), Ok(Packet::Close));
        assert_eq!(packet(b"2"), Ok(Packet::Ping));
        assert_eq!(packet(b"3"), Ok(Packet::Other));
        assert_eq!(packet(b"6"), Ok(Packet::Other));
        assert_eq!(packet(b"bAQID"), Ok(Packet::Other));
        assert!(packet(b"").is_err());
        assert!(packet(b"9").is_err());
        assert!(packet(b"{}").is_err());
    }

    #[test]
    fn connect_replies() {
        assert_eq!(packet(br#"40{"sid":"x"}"#), Ok(Packet::Connect));
        assert_eq!(packet(br#"40{"sid":"x","pid":"y"}"#), Ok(Packet::Connect));
        assert_eq!(packet(b"40"), Ok(Packet::Connect));
        assert_eq!(packet(br#"40/,{"sid":"x"}"#), Ok(Packet::Connect));
        assert_eq!(packet(b"41"), Ok(Packet::Disconnect));
        assert_eq!(
            packet(br#"44{"message":"Invalid namespace"}"#),
            Ok(Packet::ConnectError(Cow::Borrowed("Invalid namespace")))
        );
        assert_eq!(
            packet(b"44"),
            Ok(Packet::ConnectError(Cow::Borrowed("(no message)")))
        );
        // Another namespace's packets are not this client's.
        assert_eq!(
            packet(br#"44/x,{"message":"Invalid namespace"}"#),
            Ok(Packet::Other)
        );
        assert_eq!(packet(br#"42/custom,["message","a"]"#), Ok(Packet::Other));
        assert_eq!(packet(br#"40/admin,{"sid":"x"}"#), Ok(Packet::Other));
    }

    #[test]
    fn events() {
        assert_eq!(
            packet(br#"42["message","7 123 ...."]"#),
            Ok(ev("message", Arg::Text(Cow::Borrowed("7 123 ...."))))
        );
        // The recovery offset as a last argument, an ack id, escapes.
        assert_eq!(
            packet(br#"42["message","7 123 ..","1700000000-3"]"#),
            Ok(ev("message", Arg::Text(Cow::Borrowed("7 123 .."))))
        );
        assert_eq!(
            packet(br#"4212["message","a\"b\u00e9"]"#),
            Ok(ev("message", Arg::Text(Cow::Owned("a\"bé".into()))))
        );
        // A body that was valid JSON arrives as JSON.
        assert_eq!(
            packet(br#"42["message",{"a":[1,2]}]"#),
            Ok(ev("message", Arg::NotText))
        );
        assert_eq!(
            packet(br#"42["message",12]"#),
            Ok(ev("message", Arg::NotText))
        );
        assert_eq!(packet(br#"42["hello"]"#), Ok(ev("hello", Arg::Absent)));
        assert_eq!(
            packet(br#"42/,["message","x"]"#),
            Ok(ev("message", Arg::Text(Cow::Borrowed("x"))))
        );
        assert!(packet(br#"42{"message":1}"#).is_err());
        assert!(packet(br#"42[1,2]"#).is_err());
        assert!(packet(br#"42[]"#).is_err());
        assert!(packet(br#"42["message","x""#).is_err());
        // Binary events and acks: not flood's.
        assert_eq!(
            packet(br#"451-["message",{"_placeholder":true,"num":0}]"#),
            Ok(Packet::Other)
        );
        assert_eq!(packet(br#"431["ok"]"#), Ok(Packet::Other));
    }

    #[test]
    fn polling_payloads() {
        let body = b"42[\"message\",\"1 2 .\"]\x1e2\x1e42[\"message\",\"2 3 .\"]";
        let all: Vec<_> = packets(body).map(|p| packet(p).unwrap()).collect();
        assert_eq!(
            all,
            [
                ev("message", Arg::Text(Cow::Borrowed("1 2 ."))),
                Packet::Ping,
                ev("message", Arg::Text(Cow::Borrowed("2 3 ."))),
            ]
        );
        assert_eq!(packets(b"").count(), 0);
        assert_eq!(packets(b"6").count(), 1);
    }

    #[test]
    fn requests() {
        assert_eq!(
            connect_packet("news", None),
            br#"40{"channels":["news"]}"#.to_vec()
        );
        assert_eq!(
            connect_packet("a\"b", Some("t.k")),
            br#"40{"channels":["a\"b"],"token":"t.k"}"#.to_vec()
        );
        assert_eq!(
            websocket_path("/socket.io/"),
            "/socket.io/?EIO=4&transport=websocket"
        );
        let mut out = Vec::new();
        poll_request(&mut out, "/socket.io/", "h:1", "", None);
        assert_eq!(
            out,
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h:1\r\n\r\n"
        );
        out.clear();
        poll_request(&mut out, "/socket.io/", "h", "a+b/c_-", Some(b"3"));
        assert_eq!(
            out,
            b"POST /socket.io/?EIO=4&transport=polling&sid=a%2Bb%2Fc_- HTTP/1.1\r\nHost: h\r\n\
              Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1\r\n\r\n3"
                .to_vec()
        );
    }
}
