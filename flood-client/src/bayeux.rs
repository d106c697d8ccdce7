//! CometD/Bayeux 1.0 for `flood --transport bayeux`, sans-IO: the requests one client sends and
//! the replies it reads. Each connection is one Bayeux client: `/meta/handshake`, then
//! `/meta/subscribe` to its channel, then `/meta/connect` again and again (the first with
//! `advice: {timeout: 0}`, answered at once; the next ones held by the server until a message
//! arrives or its timeout).
//!
//! Two transports. `long-polling`: each request is an HTTP/1.1 `POST` of a JSON array, its reply
//! a `200` JSON array framed by `Content-Length`, one request at a time on one keep-alive
//! connection (the official client uses a second connection for what it sends while a connect
//! is held; flood sends nothing then, so one is enough). `websocket`: an upgrade to the bare
//! endpoint, then JSON arrays in text frames both ways; the server may group replies and
//! deliveries in its frames as it likes.
//!
//! Parsing is in two steps, both on complete input only: [`next_unit`] frames the byte stream
//! (an HTTP response or a WebSocket frame, `Ok(None)` while incomplete, consuming nothing), and
//! [`replies`] decodes one complete body with serde_json into [`Event`]s. A delivery
//! (`{"channel":"/a","data":..}` on a non-meta channel) carries flood's payload as a JSON string;
//! string escapes are decoded, unescaped strings are borrowed.
//!
//! This module never touches a socket or a clock.

use std::borrow::Cow;
use std::fmt;
use std::io::Write as _;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::{longpoll, ws};

/// The Bayeux transport (`connectionType`) a flood connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
pub enum ConnType {
    /// HTTP long-polling: `POST` of JSON arrays on one keep-alive connection.
    #[default]
    #[value(name = "long-polling")]
    #[serde(rename = "long-polling")]
    LongPolling,
    /// WebSocket: JSON arrays in text frames.
    #[value(name = "websocket")]
    #[serde(rename = "websocket")]
    WebSocket,
}

impl ConnType {
    /// The name on the wire (`connectionType`, `supportedConnectionTypes`).
    pub fn name(self) -> &'static str {
        match self {
            ConnType::LongPolling => "long-polling",
            ConnType::WebSocket => "websocket",
        }
    }
}

/// What a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Handshake,
    Subscribe,
    /// The first `/meta/connect` (`advice: {timeout: 0}`: answered at once).
    FirstConnect,
    /// A `/meta/connect` the server holds.
    Connect,
}

/// Writes the JSON array of request `r` with message id `id` into `out` (cleared first).
/// `client` is the clientId (not needed for the handshake), `channel` the Bayeux channel to
/// subscribe to.
pub fn request(out: &mut Vec<u8>, r: Request, id: u64, t: ConnType, client: &str, channel: &str) {
    out.clear();
    let _ = write!(out, "[{{\"id\":\"{id}\",\"channel\":");
    match r {
        Request::Handshake => {
            let _ = write!(
                out,
                "\"/meta/handshake\",\"version\":\"1.0\",\"minimumVersion\":\"1.0\",\
                 \"supportedConnectionTypes\":[\"{}\"],\"advice\":{{\"timeout\":60000,\
                 \"interval\":0}}}}]",
                t.name()
            );
            return;
        }
        Request::Subscribe => {
            out.extend_from_slice(b"\"/meta/subscribe\",\"subscription\":");
            json_string(out, channel);
        }
        Request::FirstConnect | Request::Connect => {
            let _ = write!(out, "\"/meta/connect\",\"connectionType\":\"{}\"", t.name());
            if r == Request::FirstConnect {
                out.extend_from_slice(b",\"advice\":{\"timeout\":0}");
            }
        }
    }
    out.extend_from_slice(b",\"clientId\":");
    json_string(out, client);
    out.extend_from_slice(b"}]");
}

/// Adds a subscribe token to a handshake written by [`request`], as the CometD client's
/// `handshake({ext: {auth: {token}}})` does: `…,"ext":{"auth":{"token":"…"}}}]`.
pub fn add_token(out: &mut Vec<u8>, token: &str) {
    if out.ends_with(b"}]") {
        out.truncate(out.len() - 2);
        out.extend_from_slice(b",\"ext\":{\"auth\":{\"token\":");
        json_string(out, token);
        out.extend_from_slice(b"}}}]");
    }
}

/// Appends request `body` (from [`request`]) to `out` as `t` carries it: a `POST {path}` to
/// `host` (long-polling) or a masked text frame (websocket, after the upgrade to `path`).
pub fn frame_request(out: &mut Vec<u8>, t: ConnType, path: &str, host: &str, body: &[u8]) {
    match t {
        ConnType::LongPolling => {
            let _ = write!(
                out,
                "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            );
            out.extend_from_slice(body);
        }
        ConnType::WebSocket => ws::client_frame_into(out, ws::OP_TEXT, body),
    }
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A complete unit of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit<'a> {
    /// A JSON body to give to [`replies`]: a `200` response's body (long-polling) or a text
    /// frame (websocket).
    Body(&'a [u8]),
    /// Long-polling: a response with a status other than 200.
    Status(u16),
    /// WebSocket: a ping, to be answered with a pong carrying this payload.
    Ping(&'a [u8]),
    /// WebSocket: the server's close frame.
    Close,
    /// WebSocket: a pong or a binary frame (not Bayeux): nothing to do.
    Ignored,
}

/// The unit at the start of `buf` and the bytes it occupies: `Ok(None)` while incomplete (read
/// more and call again with the same start), an error when the stream cannot be followed (a
/// malformed response, a fragmented frame, a body over `max` bytes).
pub fn next_unit(
    buf: &[u8],
    t: ConnType,
    max: usize,
) -> Result<Option<(Unit<'_>, usize)>, &'static str> {
    match t {
        ConnType::LongPolling => Ok(longpoll::response(buf, max)?.map(|r| {
            let u = if r.status == 200 {
                Unit::Body(r.body)
            } else {
                Unit::Status(r.status)
            };
            (u, r.len)
        })),
        ConnType::WebSocket => {
            let Some((fin, op, at, len)) = crate::ws::frame_header(buf) else {
                return Ok(None);
            };
            if len > max {
                return Err("frame over the size limit");
            }
            if buf.len() < at + len {
                return Ok(None);
            }
            if !fin || op == 0x0 {
                // The server would have to split a JSON array over frames; edgecomet never
                // does, and a load generator need not reassemble.
                return Err("fragmented WebSocket message");
            }
            let payload = &buf[at..at + len];
            let u = match op {
                0x1 => Unit::Body(payload),
                0x8 => Unit::Close,
                0x9 => Unit::Ping(payload),
                _ => Unit::Ignored,
            };
            Ok(Some((u, at + len)))
        }
    }
}

/// One message of a reply body, as flood sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A message on a broadcast channel: its `data` when that is a JSON string (flood's
    /// payloads are text), else `None`.
    Delivery(Option<Cow<'a, str>>),
    /// A successful handshake reply.
    Handshake { client_id: Cow<'a, str> },
    /// A successful subscribe reply.
    Subscribe,
    /// A successful connect reply; `dropped`: messages the server dropped from this client's
    /// queue since the previous one (edgecomet's `ext.dropped`).
    Connect { dropped: u64 },
    /// A meta reply that failed (`successful` not true, e.g. `402::Unknown client`) or that
    /// advises `reconnect: handshake` or `none`: this client is gone.
    Failed {
        channel: Cow<'a, str>,
        error: Option<Cow<'a, str>>,
    },
    /// Anything else (a publish reply, another meta channel): nothing to do.
    Other,
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Failed { channel, error } => write!(
                f,
                "{channel} failed: {}",
                error.as_deref().unwrap_or("(no error given)")
            ),
            other => write!(f, "{other:?}"),
        }
    }
}

/// A `data` field: a string, something else, or absent.
#[derive(Debug, Default)]
enum Data<'a> {
    #[default]
    Absent,
    Text(Cow<'a, str>),
    NotText,
}

impl<'de: 'a, 'a> Deserialize<'de> for Data<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Data<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Data<'a>, E> {
                Ok(Data::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Data<'a>, E> {
                Ok(Data::Text(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Data<'a>, E> {
                Ok(Data::Text(Cow::Owned(s)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Data<'a>, E> {
                Ok(Data::NotText)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Data<'a>, E> {
                Ok(Data::NotText)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Data<'a>, E> {
                Ok(Data::NotText)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Data<'a>, E> {
                Ok(Data::NotText)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Data<'a>, E> {
                Ok(Data::NotText)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Data<'a>, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Data::NotText)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Data<'a>, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Data::NotText)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
struct Advice<'a> {
    #[serde(default, borrow)]
    reconnect: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Deserialize)]
struct Ext {
    /// edgecomet's count of messages dropped from the client's queue.
    #[serde(default)]
    dropped: Option<u64>,
}

/// The fields of a message flood looks at; the rest is skipped.
#[derive(Debug, Deserialize)]
struct Message<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    #[serde(default)]
    successful: Option<bool>,
    #[serde(default, borrow, rename = "clientId")]
    client_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    data: Data<'a>,
    #[serde(default, borrow)]
    advice: Option<Advice<'a>>,
    #[serde(default)]
    ext: Option<Ext>,
    #[serde(default, borrow)]
    error: Option<Cow<'a, str>>,
}

/// Decodes a reply body (a JSON array of messages, or one message) into events, in order.
pub fn replies(body: &[u8]) -> Result<Vec<Event<'_>>, &'static str> {
    // An untagged enum would buffer the input and lose the borrowing: the first byte decides.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let msgs = match first {
        Some(b'[') => serde_json::from_slice::<Vec<Message<'_>>>(body),
        Some(b'{') => serde_json::from_slice::<Message<'_>>(body).map(|m| vec![m]),
        _ => return Err("a Bayeux reply must be a JSON array or object"),
    }
    .map_err(|_| "a Bayeux reply that is not the expected JSON")?;
    msgs.into_iter().map(event).collect()
}

fn event(m: Message<'_>) -> Result<Event<'_>, &'static str> {
    let meta = m.channel.starts_with("/meta/");
    if !meta {
        return Ok(match m.data {
            Data::Text(s) => Event::Delivery(Some(s)),
            Data::NotText => Event::Delivery(None),
            // A reply to a publish (flood publishes over HTTP, so none is expected).
            Data::Absent => Event::Other,
        });
    }
    let give_up = m
        .advice
        .as_ref()
        .and_then(|a| a.reconnect.as_deref())
        .is_some_and(|r| r == "handshake" || r == "none");
    if m.successful != Some(true) || give_up {
        return Ok(Event::Failed {
            channel: m.channel,
            error: m.error,
        });
    }
    Ok(match &*m.channel {
        "/meta/handshake" => Event::Handshake {
            client_id: m.client_id.ok_or("a handshake reply without clientId")?,
        },
        "/meta/subscribe" => Event::Subscribe,
        "/meta/connect" => Event::Connect {
            dropped: m.ext.and_then(|e| e.dropped).unwrap_or(0),
        },
        _ => Event::Other,
    })
}

/// A clientId, kept compactly: edgecomet's (32 lowercase hex digits, 128 bits) inline in 16
/// bytes, any other server's boxed. 24 bytes either way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientId {
    /// No handshake yet.
    #[default]
    None,
    Hex([u8; 16]),
    Other(Box<str>),
}

impl ClientId {
    pub fn new(s: &str) -> ClientId {
        let b = s.as_bytes();
        let lower_hex = |c: u8| matches!(c, b'0'..=b'9' | b'a'..=b'f');
        if b.len() == 32 && b.iter().all(|&c| lower_hex(c)) {
            let nib = |c: u8| if c <= b'9' { c - b'0' } else { c - b'a' + 10 };
            let mut v = [0u8; 16];
            for (i, x) in v.iter_mut().enumerate() {
                *x = nib(b[2 * i]) << 4 | nib(b[2 * i + 1]);
            }
            ClientId::Hex(v)
        } else {
            ClientId::Other(Box::from(s))
        }
    }

    /// Writes the id as text into `out` (cleared first).
    pub fn write(&self, out: &mut String) {
        out.clear();
        match self {
            ClientId::None => {}
            ClientId::Hex(v) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                for x in v {
                    out.push(HEX[usize::from(x >> 4)] as char);
                    out.push(HEX[usize::from(x & 0xF)] as char);
                }
            }
            ClientId::Other(s) => out.push_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json;charset=UTF-8\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    /// A masked=false server text frame.
    fn frame(op: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x80 | op];
        match payload.len() {
            n @ 0..=125 => v.push(n as u8),
            n @ 126..=65535 => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    const HANDSHAKE: &str = r#"[{"channel":"/meta/handshake","successful":true,"id":"1","clientId":"0123456789abcdef0123456789abcdef","version":"1.0","supportedConnectionTypes":["long-polling","websocket"],"advice":{"reconnect":"retry","interval":0,"timeout":30000,"maxInterval":10000}}]"#;
    const SUBSCRIBE: &str = r#"[{"channel":"/meta/subscribe","successful":true,"id":"2","clientId":"0123456789abcdef0123456789abcdef","subscription":"/f-1"}]"#;
    const CONNECT0: &str = r#"[{"channel":"/meta/connect","successful":true,"id":"3","clientId":"0123456789abcdef0123456789abcdef","advice":{"reconnect":"retry","interval":0,"timeout":30000,"maxInterval":10000}}]"#;
    /// Deliveries (one with escapes, one of a native JSON payload), then the connect reply.
    const DELIVERIES: &str = r#"[{"channel":"/f-1","data":"0 123 ....","id":"17"},{"channel":"/f-1","data":"1 124 \"q\" \u00e9\n","id":"18"},{"channel":"/f-1","data":{"seq":2},"id":"19"},{"channel":"/meta/connect","successful":true,"id":"4","ext":{"dropped":2}}]"#;
    const FAILED: &str = r#"[{"channel":"/meta/connect","successful":false,"id":"5","error":"402::Unknown client","advice":{"reconnect":"handshake","interval":0}}]"#;

    fn expected() -> Vec<(String, Vec<Event<'static>>)> {
        let e = |s: &str| Event::Delivery(Some(Cow::Owned(s.to_string())));
        vec![
            (
                "body".into(),
                vec![Event::Handshake {
                    client_id: Cow::Owned("0123456789abcdef0123456789abcdef".into()),
                }],
            ),
            ("body".into(), vec![Event::Subscribe]),
            ("body".into(), vec![Event::Connect { dropped: 0 }]),
            (
                "body".into(),
                vec![
                    e("0 123 ...."),
                    e("1 124 \"q\" é\n"),
                    Event::Delivery(None),
                    Event::Connect { dropped: 2 },
                ],
            ),
            (
                "body".into(),
                vec![Event::Failed {
                    channel: Cow::Owned("/meta/connect".into()),
                    error: Some(Cow::Owned("402::Unknown client".into())),
                }],
            ),
        ]
    }

    fn owned(e: Event<'_>) -> Event<'static> {
        let o = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        match e {
            Event::Delivery(d) => Event::Delivery(d.map(o)),
            Event::Handshake { client_id } => Event::Handshake {
                client_id: o(client_id),
            },
            Event::Subscribe => Event::Subscribe,
            Event::Connect { dropped } => Event::Connect { dropped },
            Event::Failed { channel, error } => Event::Failed {
                channel: o(channel),
                error: error.map(o),
            },
            Event::Other => Event::Other,
        }
    }

    /// Parses `chunks` as successive reads the way the engine does (each read appended to the
    /// unconsumed rest); returns what each unit held and the bytes left over.
    fn units(chunks: &[&[u8]], t: ConnType) -> (Vec<(String, Vec<Event<'static>>)>, usize) {
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for c in chunks {
            pending.extend_from_slice(c);
            let mut pos = 0;
            while let Some((u, len)) = next_unit(&pending[pos..], t, 1 << 20).unwrap() {
                pos += len;
                out.push(match u {
                    Unit::Body(b) => (
                        "body".to_string(),
                        replies(b).unwrap().into_iter().map(owned).collect(),
                    ),
                    other => (format!("{other:?}"), Vec::new()),
                });
            }
            pending.drain(..pos);
        }
        (out, pending.len())
    }

    fn stream(t: ConnType) -> Vec<u8> {
        let mut s = Vec::new();
        for b in [HANDSHAKE, SUBSCRIBE, CONNECT0, DELIVERIES, FAILED] {
            match t {
                ConnType::LongPolling => s.extend_from_slice(&http(b)),
                ConnType::WebSocket => s.extend_from_slice(&frame(0x1, b.as_bytes())),
            }
        }
        s
    }

    #[test]
    fn split_at_every_position() {
        for t in [ConnType::LongPolling, ConnType::WebSocket] {
            let s = stream(t);
            let (whole, left) = units(&[&s], t);
            assert_eq!(whole, expected(), "{t:?}");
            assert_eq!(left, 0);
            for cut in 0..=s.len() {
                let (got, left) = units(&[&s[..cut], &s[cut..]], t);
                assert_eq!(got, expected(), "{t:?}: split at {cut}");
                assert_eq!(left, 0, "{t:?}: split at {cut}");
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        for t in [ConnType::LongPolling, ConnType::WebSocket] {
            let s = stream(t);
            let chunks: Vec<&[u8]> = s.chunks(1).collect();
            let (got, left) = units(&chunks, t);
            assert_eq!(got, expected(), "{t:?}");
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn every_prefix_of_a_unit_is_incomplete() {
        for t in [ConnType::LongPolling, ConnType::WebSocket] {
            let s = stream(t);
            let (_, first) = next_unit(&s, t, 1 << 20).unwrap().unwrap();
            for cut in 0..first {
                assert_eq!(next_unit(&s[..cut], t, 1 << 20), Ok(None), "{t:?} {cut}");
            }
        }
    }

    #[test]
    fn websocket_control_frames_and_errors() {
        let t = ConnType::WebSocket;
        let mut s = frame(0x9, b"hi");
        s.extend_from_slice(&frame(0xA, b""));
        s.extend_from_slice(&frame(0x2, b"bin"));
        s.extend_from_slice(&frame(0x8, &[0x03, 0xE8]));
        let (u, n) = next_unit(&s, t, 100).unwrap().unwrap();
        assert_eq!((u, n), (Unit::Ping(b"hi"), 4));
        let (u, m) = next_unit(&s[n..], t, 100).unwrap().unwrap();
        assert_eq!((u, m), (Unit::Ignored, 2));
        let (u, k) = next_unit(&s[n + m..], t, 100).unwrap().unwrap();
        assert_eq!((u, k), (Unit::Ignored, 5));
        let (u, _) = next_unit(&s[n + m + k..], t, 100).unwrap().unwrap();
        assert_eq!(u, Unit::Close);
        // Fragmented: a text frame without FIN, and a continuation.
        assert!(next_unit(&[0x01, 1, b'['], t, 100).is_err());
        assert!(next_unit(&[0x80, 1, b'['], t, 100).is_err());
        // Over the limit, decided from the header.
        assert!(next_unit(&[0x81, 126, 0x10, 0x00], t, 100).is_err());
        // 16-bit length.
        let big = frame(0x1, &[b' '; 300]);
        assert_eq!(next_unit(&big[..100], t, 1000), Ok(None));
        let (u, n) = next_unit(&big, t, 1000).unwrap().unwrap();
        assert_eq!(
            (n, matches!(u, Unit::Body(b) if b.len() == 300)),
            (304, true)
        );
    }

    #[test]
    fn long_polling_statuses() {
        let t = ConnType::LongPolling;
        let r = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\n[]";
        assert_eq!(
            next_unit(r, t, 100).unwrap(),
            Some((Unit::Status(400), r.len()))
        );
        assert!(
            next_unit(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                t,
                9
            )
            .is_err()
        );
        assert!(next_unit(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", t, 9).is_err());
    }

    #[test]
    fn reply_bodies() {
        // One object instead of an array; whitespace around.
        let e = replies(b" {\"channel\":\"/meta/subscribe\",\"successful\":true} ").unwrap();
        assert_eq!(e, vec![Event::Subscribe]);
        // Borrowed when there is no escape.
        let e = replies(br#"[{"channel":"/a","data":"7 8"}]"#).unwrap();
        assert!(matches!(&e[0], Event::Delivery(Some(Cow::Borrowed("7 8")))));
        // data: null and numbers are deliveries that are not flood's.
        let e = replies(br#"[{"channel":"/a","data":null},{"channel":"/a","data":[1,{"x":2}]}]"#)
            .unwrap();
        assert_eq!(e, vec![Event::Delivery(None), Event::Delivery(None)]);
        // A publish reply, another meta channel, unknown fields.
        let e = replies(br#"[{"channel":"/a","successful":true,"id":"9"},{"channel":"/meta/unsubscribe","successful":true,"x":{"y":[]}}]"#).unwrap();
        assert_eq!(e, vec![Event::Other, Event::Other]);
        // successful missing, or reconnect none, on a successful reply: failed.
        let e = replies(br#"[{"channel":"/meta/connect"},{"channel":"/meta/connect","successful":true,"advice":{"reconnect":"none"}}]"#).unwrap();
        assert!(
            e.iter()
                .all(|e| matches!(e, Event::Failed { error: None, .. }))
        );
        assert_eq!(e[0].to_string(), "/meta/connect failed: (no error given)");
        // reconnect: retry is fine.
        let e = replies(
            br#"[{"channel":"/meta/connect","successful":true,"advice":{"reconnect":"retry"}}]"#,
        )
        .unwrap();
        assert_eq!(e, vec![Event::Connect { dropped: 0 }]);
        // Errors.
        assert!(replies(br#"[{"channel":"/meta/handshake","successful":true}]"#).is_err());
        assert!(replies(br#"[{"data":"x"}]"#).is_err());
        assert!(replies(b"[{\"channel\":\"/a\"").is_err());
        assert!(replies(b"").is_err());
        assert!(replies(b"\"x\"").is_err());
        assert!(
            replies(br#"[{"channel":"/meta/connect","successful":true,"ext":{"dropped":"x"}}]"#)
                .is_err()
        );
    }

    #[test]
    fn requests() {
        let mut b = Vec::new();
        let t = ConnType::LongPolling;
        request(&mut b, Request::Handshake, 1, t, "", "");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v[0]["channel"], "/meta/handshake");
        assert_eq!(v[0]["id"], "1");
        assert_eq!(v[0]["supportedConnectionTypes"][0], "long-polling");
        assert!(v[0].get("clientId").is_none());
        let mut tb = b.clone();
        add_token(&mut tb, "k\"");
        let v: serde_json::Value = serde_json::from_slice(&tb).unwrap();
        assert_eq!(v[0]["ext"]["auth"]["token"], "k\"");
        assert_eq!(v[0]["channel"], "/meta/handshake");
        request(&mut b, Request::Subscribe, 2, t, "c\"1", "/f-1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v[0]["subscription"], "/f-1");
        assert_eq!(v[0]["clientId"], "c\"1");
        request(
            &mut b,
            Request::FirstConnect,
            3,
            ConnType::WebSocket,
            "c",
            "/f-1",
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v[0]["channel"], "/meta/connect");
        assert_eq!(v[0]["connectionType"], "websocket");
        assert_eq!(v[0]["advice"]["timeout"], 0);
        request(&mut b, Request::Connect, 4, t, "c", "/f-1");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v[0]["id"], "4");
        assert!(v[0].get("advice").is_none());
    }

    #[test]
    fn client_ids() {
        let mut s = String::new();
        let hex = "0123456789abcdef0123456789abcdef";
        let c = ClientId::new(hex);
        assert!(matches!(c, ClientId::Hex(_)));
        c.write(&mut s);
        assert_eq!(s, hex);
        for other in ["0123456789ABCDEF0123456789ABCDEF", "abc", "x"] {
            let c = ClientId::new(other);
            assert!(matches!(c, ClientId::Other(_)));
            c.write(&mut s);
            assert_eq!(s, other);
        }
        assert_eq!(std::mem::size_of::<ClientId>(), 24);
    }
}
