//! Bayeux 1.0 (CometD) wire format, sans-IO: channel names and subscription patterns, a
//! request batch parsed with simd-json into [`Request`]s, and the JSON of replies and delivered
//! messages. Session rules and state live in `session::bayeux`, transports in the runtime;
//! nothing here does I/O.
//!
//! Channels are absolute paths of segments (`/a/b`). A subscription may end in `/*` (one more
//! segment) or `/**` (any depth below). `/meta/**` channels are the protocol's own,
//! `/service/**` channels reach the server only (never broadcast).

use std::fmt::Write as _;

use simd_json::BorrowedValue;
use simd_json::prelude::*;

use super::segment_char;

/// A concrete channel: `/seg(/seg)*`, at most `max_len` bytes, no wildcard; segments use the
/// native channel characters, so `/a/b` is the native channel `a/b` (see [`native_name`]).
pub fn valid_channel(name: &str, max_len: usize) -> bool {
    name.len() > 1
        && name.len() <= max_len
        && name.starts_with('/')
        && name[1..]
            .split('/')
            .all(|s| !s.is_empty() && s.bytes().all(segment_char))
}

/// What a subscription covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern<'a> {
    /// Exactly this channel.
    Exact(&'a str),
    /// Children of this channel, one segment deeper (`/a/*`: prefix `/a`).
    Children(&'a str),
    /// Everything below this channel (`/a/**`: prefix `/a`); the prefix is empty for `/**`.
    Descendants(&'a str),
}

/// Parses a subscription: a channel, or a channel followed by `/*` or `/**`; `/*` and `/**`
/// alone have an empty prefix.
pub fn pattern(sub: &str, max_len: usize) -> Option<Pattern<'_>> {
    if sub.len() > max_len {
        return None;
    }
    let ok = |p: &str| p.is_empty() || valid_channel(p, max_len);
    if let Some(p) = sub.strip_suffix("/**") {
        ok(p).then_some(Pattern::Descendants(p))
    } else if let Some(p) = sub.strip_suffix("/*") {
        ok(p).then_some(Pattern::Children(p))
    } else {
        valid_channel(sub, max_len).then_some(Pattern::Exact(sub))
    }
}

impl Pattern<'_> {
    /// Whether a message on `channel` reaches a subscriber of this pattern.
    pub fn matches(self, channel: &str) -> bool {
        match self {
            Pattern::Exact(c) => c == channel,
            Pattern::Children(p) => channel
                .strip_prefix(p)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/')),
            Pattern::Descendants(p) => channel
                .strip_prefix(p)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| !rest.is_empty()),
        }
    }
}

/// The native channel of a Bayeux channel: without its leading `/`.
pub fn native_name(channel: &str) -> &str {
    channel.strip_prefix('/').unwrap_or(channel)
}

/// `/meta/...`
pub fn is_meta(channel: &str) -> bool {
    channel == "/meta" || channel.starts_with("/meta/")
}

/// `/service/...`
pub fn is_service(channel: &str) -> bool {
    channel == "/service" || channel.starts_with("/service/")
}

/// One message of a request batch. Values the server echoes or forwards (`id`, `data`, `ext`)
/// are kept as the JSON text they arrived as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub channel: String,
    /// The `id` as JSON (a string or a number), echoed in the reply.
    pub id: Option<String>,
    pub client_id: Option<String>,
    /// `data` as JSON.
    pub data: Option<String>,
    /// `subscription`: one string or an array of them.
    pub subscriptions: Vec<String>,
    /// `subscription` as JSON, echoed in the reply in the form it came.
    pub subscription_json: Option<String>,
    pub connection_type: Option<String>,
    pub supported_connection_types: Vec<String>,
    pub version: Option<String>,
    /// `advice.timeout` of a `/meta/connect`, milliseconds.
    pub advice_timeout: Option<u64>,
    /// `ext.ack` (the ack extension's batch number, or `true` in a handshake).
    pub ext_ack: Option<AckField>,
    /// `ext.timesync` (the timesync extension's clock sample), when its fields are numbers.
    pub ext_timesync: Option<TimeSync>,
    /// `ext.auth.token` of a handshake: the subscribe token (`docs/auth.md`).
    pub ext_auth_token: Option<String>,
}

/// The client's `ext.timesync`: its clock `tc` (ms since the epoch) and its current estimates
/// of the network lag `l` and clock offset `o` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSync {
    pub tc: i64,
    pub l: i64,
    pub o: i64,
}

impl TimeSync {
    /// The reply's `ext.timesync`: `tc` echoed, `ts` the server clock when the request
    /// arrived, `p` the ms the server held it, `a = tc + o + l - ts` (how far off the client's
    /// estimate is).
    pub fn reply(self, ts: i64, p: i64) -> String {
        let a = self
            .tc
            .saturating_add(self.o)
            .saturating_add(self.l)
            .saturating_sub(ts);
        format!("{{\"tc\":{},\"ts\":{ts},\"p\":{p},\"a\":{a}}}", self.tc)
    }
}

/// The `ext.ack` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckField {
    /// `true` (a handshake asking for the extension).
    Enabled,
    /// A batch number (a connect acknowledging what it received).
    Batch(i64),
}

/// Deepest nesting of arrays and objects accepted in JSON from clients. The parser recurses
/// per level on the worker's stack; without a bound, a body of 10,000 `[` overflowed it and
/// aborted the process. Bayeux messages need a handful of levels.
pub const MAX_DEPTH: usize = 64;

/// Whether the arrays/objects in `json` nest at most `max` deep (strings are skipped, with
/// their escapes). A cheap pre-scan: it does not validate anything else.
pub fn depth_within(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_str = false;
    let mut esc = false;
    for &b in json {
        if in_str {
            if esc {
                esc = false;
            } else if b == b'\\' {
                esc = true;
            } else if b == b'"' {
                in_str = false;
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// Why a request body is not a Bayeux batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON (or nested deeper than [`MAX_DEPTH`]).
    NotJson,
    /// JSON, but not an object or an array of objects each with a string `channel`.
    NotMessages,
    /// More messages than allowed in one request.
    TooMany,
}

impl ParseError {
    pub fn message(self) -> &'static str {
        match self {
            ParseError::NotJson => "request is not JSON (or nests deeper than 64 levels)",
            ParseError::NotMessages => "request is not a Bayeux message or array of messages",
            ParseError::TooMany => "too many messages in one request",
        }
    }
}

/// Parses a request body: an array of messages, or one message. simd-json rewrites `body` in
/// place while parsing (string unescaping), so the caller passes a scratch copy.
pub fn parse(body: &mut [u8], max_messages: usize) -> Result<Vec<Request>, ParseError> {
    if !depth_within(body, MAX_DEPTH) {
        return Err(ParseError::NotJson);
    }
    let v = simd_json::to_borrowed_value(body).map_err(|_| ParseError::NotJson)?;
    let items: Vec<&BorrowedValue<'_>> = match &v {
        BorrowedValue::Array(a) => a.iter().collect(),
        o @ BorrowedValue::Object(_) => vec![o],
        _ => return Err(ParseError::NotMessages),
    };
    if items.is_empty() {
        // Nothing to answer, so nothing the client could wait for: refused like a non-message.
        return Err(ParseError::NotMessages);
    }
    if items.len() > max_messages {
        return Err(ParseError::TooMany);
    }
    items.into_iter().map(message).collect()
}

fn message(m: &BorrowedValue<'_>) -> Result<Request, ParseError> {
    if !m.is_object() {
        return Err(ParseError::NotMessages);
    }
    let channel = m
        .get("channel")
        .and_then(|c| c.as_str())
        .ok_or(ParseError::NotMessages)?
        .to_string();
    let text = |k: &str| m.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let strings = |v: Option<&BorrowedValue<'_>>| -> Vec<String> {
        match v {
            Some(BorrowedValue::Array(a)) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect(),
            Some(s) => s.as_str().map(|s| vec![s.to_string()]).unwrap_or_default(),
            None => Vec::new(),
        }
    };
    let id = m
        .get("id")
        .filter(|i| i.is_str() || i.is_i64() || i.is_u64())
        .map(|i| i.encode());
    let ext = m.get("ext");
    let ext_ack = ext.and_then(|e| e.get("ack")).and_then(|a| {
        if a.as_bool() == Some(true) {
            Some(AckField::Enabled)
        } else {
            a.as_i64().map(AckField::Batch)
        }
    });
    Ok(Request {
        channel,
        id,
        client_id: text("clientId"),
        data: m.get("data").map(|d| d.encode()),
        subscriptions: strings(m.get("subscription")),
        subscription_json: m.get("subscription").map(|s| s.encode()),
        connection_type: text("connectionType"),
        supported_connection_types: strings(m.get("supportedConnectionTypes")),
        version: text("version"),
        advice_timeout: m
            .get("advice")
            .and_then(|a| a.get("timeout"))
            .and_then(|t| t.as_u64()),
        ext_ack,
        ext_auth_token: ext
            .and_then(|e| e.get("auth"))
            .and_then(|a| a.get("token"))
            .and_then(|t| t.as_str())
            .map(str::to_string),
        ext_timesync: ext.and_then(|e| e.get("timesync")).and_then(|t| {
            let n = |k: &str| t.get(k).and_then(|v| v.as_i64());
            Some(TimeSync {
                tc: n("tc")?,
                l: n("l").unwrap_or(0),
                o: n("o").unwrap_or(0),
            })
        }),
    })
}

/// Writes `s` as a JSON string (the escaping of [`super::json_escape`]).
pub fn json_str(out: &mut String, s: &str) {
    let mut v = std::mem::take(out).into_bytes();
    v.push(b'"');
    super::json_escape(s.as_bytes(), &mut v);
    v.push(b'"');
    // Escaping only inserts ASCII between whole UTF-8 sequences.
    *out = String::from_utf8(v).expect("escaped UTF-8 stays UTF-8");
}

/// A reply object under construction: `{"channel":..,"successful":..,"id":..` then optional
/// fields, closed by [`Reply::finish`].
#[derive(Debug)]
pub struct Reply(String);

impl Reply {
    /// Starts the reply to `req` (its channel and id).
    pub fn to(req: &Request, successful: bool) -> Reply {
        Reply::new(&req.channel, successful, req.id.as_deref())
    }

    /// Starts a reply on `channel` with `id` (already JSON).
    pub fn new(channel: &str, successful: bool, id: Option<&str>) -> Reply {
        let mut s = String::with_capacity(128);
        s.push_str("{\"channel\":");
        json_str(&mut s, channel);
        let _ = write!(s, ",\"successful\":{successful}");
        if let Some(id) = id {
            let _ = write!(s, ",\"id\":{id}");
        }
        Reply(s)
    }

    /// Adds `"key":"value"`.
    pub fn str(mut self, key: &str, value: &str) -> Reply {
        let _ = write!(self.0, ",\"{key}\":");
        json_str(&mut self.0, value);
        self
    }

    /// Adds `"key":<json>` (`json` is already JSON).
    pub fn raw(mut self, key: &str, json: &str) -> Reply {
        let _ = write!(self.0, ",\"{key}\":{json}");
        self
    }

    /// Adds `"error":"code:args:message"`.
    pub fn error(self, code: u16, args: &str, message: &str) -> Reply {
        self.str("error", &format!("{code}:{args}:{message}"))
    }

    /// The reply so far, left open for more fields (close it with `}`).
    pub fn into_open(self) -> String {
        self.0
    }

    pub fn finish(mut self) -> String {
        self.0.push('}');
        self.0
    }
}

/// The JSON object of a message delivered to subscribers, serialized once per publish:
/// `{"channel":"/x","data":<data>,"id":"<id>"}`.
pub fn delivery(channel: &str, data_json: &str, id: u64) -> String {
    let mut s = String::with_capacity(data_json.len() + channel.len() + 48);
    s.push_str("{\"channel\":");
    json_str(&mut s, channel);
    let _ = write!(s, ",\"data\":{data_json},\"id\":\"{id}\"}}");
    s
}

/// Native payload → Bayeux `data`: the payload itself when it is JSON, else the payload as a
/// JSON string.
pub fn data_from_payload(payload: &[u8]) -> String {
    let mut copy = payload.to_vec();
    if !payload.is_empty()
        && depth_within(payload, MAX_DEPTH)
        && simd_json::to_borrowed_value(&mut copy).is_ok()
    {
        // Valid JSON: forwarded as it came (it is UTF-8: the publish API checks).
        return String::from_utf8_lossy(payload).into_owned();
    }
    let mut s = String::with_capacity(payload.len() + 2);
    json_str(&mut s, &String::from_utf8_lossy(payload));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels() {
        for ok in [
            "/a",
            "/a/b",
            "/chat/room-1",
            "/service/echo",
            "/meta/connect",
        ] {
            assert!(valid_channel(ok, 255), "{ok}");
        }
        for bad in ["", "/", "a", "/a/", "//a", "/a//b", "/a/*", "/a b", "/ü"] {
            assert!(!valid_channel(bad, 255), "{bad}");
        }
        assert!(!valid_channel(&format!("/{}", "a".repeat(255)), 255));
    }

    #[test]
    fn patterns_and_matching() {
        assert_eq!(pattern("/a/b", 255), Some(Pattern::Exact("/a/b")));
        assert_eq!(pattern("/a/*", 255), Some(Pattern::Children("/a")));
        assert_eq!(pattern("/a/**", 255), Some(Pattern::Descendants("/a")));
        assert_eq!(pattern("/**", 255), Some(Pattern::Descendants("")));
        assert_eq!(pattern("/*", 255), Some(Pattern::Children("")));
        for bad in ["/a/*/b", "/a/***", "*", "/a*", "/a/**/"] {
            assert_eq!(pattern(bad, 255), None, "{bad}");
        }
        let c = Pattern::Children("/a");
        assert!(c.matches("/a/b"));
        assert!(!c.matches("/a/b/c"));
        assert!(!c.matches("/a"));
        assert!(!c.matches("/ab/c"));
        let d = Pattern::Descendants("/a");
        assert!(d.matches("/a/b") && d.matches("/a/b/c"));
        assert!(!d.matches("/a") && !d.matches("/ab/c"));
        assert!(Pattern::Descendants("").matches("/x/y"));
        assert!(Pattern::Children("").matches("/x") && !Pattern::Children("").matches("/x/y"));
        assert!(Pattern::Exact("/a").matches("/a") && !Pattern::Exact("/a").matches("/a/b"));
    }

    #[test]
    fn parses_a_batch() {
        let mut body = br#"[{"channel":"/meta/handshake","version":"1.0","id":"1",
            "supportedConnectionTypes":["websocket","long-polling"],"ext":{"ack":true}},
            {"channel":"/meta/subscribe","clientId":"c","subscription":["/a","/b/*"],"id":2},
            {"channel":"/a","data":{"x":"y\n"},"clientId":"c"},
            {"channel":"/meta/connect","clientId":"c","connectionType":"long-polling",
             "advice":{"timeout":0},"ext":{"ack":3,"timesync":{"tc":12,"l":0,"o":0}}}]"#
            .to_vec();
        let r = parse(&mut body, 10).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].channel, "/meta/handshake");
        assert_eq!(r[0].id.as_deref(), Some("\"1\""));
        assert_eq!(
            r[0].supported_connection_types,
            ["websocket", "long-polling"]
        );
        assert_eq!(r[0].ext_ack, Some(AckField::Enabled));
        assert_eq!(r[1].id.as_deref(), Some("2"));
        assert_eq!(r[1].subscriptions, ["/a", "/b/*"]);
        assert_eq!(r[2].data.as_deref(), Some(r#"{"x":"y\n"}"#));
        assert_eq!(r[3].advice_timeout, Some(0));
        assert_eq!(r[3].ext_ack, Some(AckField::Batch(3)));
        assert_eq!(r[3].ext_timesync.map(|t| t.tc), Some(12));
        // A single object is a batch of one.
        let mut one = br#"{"channel":"/meta/disconnect","clientId":"c"}"#.to_vec();
        assert_eq!(parse(&mut one, 10).unwrap()[0].channel, "/meta/disconnect");
    }

    #[test]
    fn refuses_what_is_not_a_batch() {
        for (body, err) in [
            (&b"nope"[..], ParseError::NotJson),
            (b"[{\"channel\":1}]", ParseError::NotMessages),
            (b"[1]", ParseError::NotMessages),
            (b"[]", ParseError::NotMessages),
            (b"\"x\"", ParseError::NotMessages),
            (
                b"[{\"channel\":\"/a\"},{\"channel\":\"/b\"}]",
                ParseError::TooMany,
            ),
            (b"[{\"channel\":\"/a\"", ParseError::NotJson),
        ] {
            assert_eq!(parse(&mut body.to_vec(), 1), Err(err), "{:?}", body);
        }
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // Found by the CometD harness: 10,000 levels overflowed a worker's stack.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            parse(&mut deep.clone().into_bytes(), 10),
            Err(ParseError::NotJson)
        );
        let data = format!(
            r#"[{{"channel":"/a","data":{}1{}}}]"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert_eq!(parse(&mut data.into_bytes(), 10), Err(ParseError::NotJson));
        // Text that is deep JSON is forwarded as a string, not parsed.
        let d = data_from_payload(deep.as_bytes());
        assert!(d.starts_with("\"[[["));
        assert!(depth_within(br#"{"a":"[[[[[[[[","b":[[1]]}"#, 3));
        assert!(!depth_within(br#"{"a":"[[[[[[[[","b":[[1]]}"#, 2));
        assert!(!depth_within(b"[[[", 2));
        assert!(
            depth_within(br#"["\"[[[[["]"#, 1),
            "escaped quote inside a string"
        );
    }

    #[test]
    fn replies_and_deliveries() {
        let req = Request {
            channel: "/meta/subscribe".into(),
            id: Some("\"7\"".into()),
            ..Request::default()
        };
        let r = Reply::to(&req, false)
            .str("subscription", "/meta/**")
            .error(403, "/meta/**", "cannot subscribe to meta channels")
            .finish();
        assert_eq!(
            r,
            r#"{"channel":"/meta/subscribe","successful":false,"id":"7","subscription":"/meta/**","error":"403:/meta/**:cannot subscribe to meta channels"}"#
        );
        let d = delivery("/a", r#"{"k":1}"#, 42);
        assert_eq!(d, r#"{"channel":"/a","data":{"k":1},"id":"42"}"#);
        assert_eq!(data_from_payload(br#"{"k":1}"#), r#"{"k":1}"#);
        assert_eq!(data_from_payload(b"plain \"text\""), r#""plain \"text\"""#);
        assert_eq!(data_from_payload(b""), r#""""#);
    }
}
