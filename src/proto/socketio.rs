//! Engine.IO v4 and Socket.IO v5 wire formats, sans-IO.
//!
//! Engine.IO carries packets over HTTP long-polling (a body of packets joined by the record
//! separator `0x1e`, binary ones as `b` + base64) or WebSocket (one packet per frame; a binary
//! frame is a binary message). A text packet is a type digit and its data: `0` open, `1` close,
//! `2` ping, `3` pong, `4` message, `5` upgrade, `6` noop. A Socket.IO packet is the data of an
//! Engine.IO message: a type digit (`0` CONNECT … `6` BINARY_ACK), for binary packets the
//! number of attachments and `-`, a namespace (`/name,`, absent for `/`), an ack id (digits)
//! and a JSON payload. Binary attachments follow as that many binary messages; in the payload
//! each stands as `{"_placeholder":true,"num":N}`.
//!
//! Session rules live in `session::socketio`; nothing here does I/O or keeps state.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Record separator between packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// Nesting allowed in a payload's JSON.
pub const MAX_DEPTH: usize = 32;

/// An Engine.IO packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    Open,
    Close,
    /// `2`, with its data (`probe` during an upgrade).
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// `4`: a text message (a Socket.IO packet).
    Message(&'a [u8]),
    Upgrade,
    Noop,
    /// A binary message (a WebSocket binary frame, or `b…` base64 over polling).
    Binary(Vec<u8>),
}

/// Why a packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// Empty, an unknown type, or a binary `b` packet that is not base64.
    Malformed,
}

/// Parses one text packet (a WebSocket text frame, or one packet of a polling payload, where
/// `b…` is a base64 binary message).
pub fn parse_text(p: &[u8], polling: bool) -> Result<Packet<'_>, PacketError> {
    let (&t, data) = p.split_first().ok_or(PacketError::Malformed)?;
    Ok(match t {
        b'0' => Packet::Open,
        b'1' => Packet::Close,
        b'2' => Packet::Ping(data),
        b'3' => Packet::Pong(data),
        b'4' => Packet::Message(data),
        b'5' => Packet::Upgrade,
        b'6' => Packet::Noop,
        b'b' if polling => Packet::Binary(B64.decode(data).map_err(|_| PacketError::Malformed)?),
        _ => return Err(PacketError::Malformed),
    })
}

/// The packets of a polling request body, in order.
pub fn split_payload(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == SEPARATOR)
}

/// Appends a binary message to a polling payload: `b` + base64.
pub fn push_binary(out: &mut Vec<u8>, data: &[u8]) {
    out.push(b'b');
    let start = out.len();
    out.resize(
        start + base64::encoded_len(data.len(), true).unwrap_or(0),
        0,
    );
    let n = B64
        .encode_slice(data, &mut out[start..])
        .expect("sized by encoded_len");
    out.truncate(start + n);
}

/// The open packet: `0{"sid":…,"upgrades":[…],"pingInterval":…,"pingTimeout":…,"maxPayload":…}`.
pub fn open_packet(
    sid: &str,
    upgrade: bool,
    ping_interval_ms: u64,
    ping_timeout_ms: u64,
    max_payload: u64,
) -> String {
    format!(
        "0{{\"sid\":\"{sid}\",\"upgrades\":[{}],\"pingInterval\":{ping_interval_ms},\
         \"pingTimeout\":{ping_timeout_ms},\"maxPayload\":{max_payload}}}",
        if upgrade { "\"websocket\"" } else { "" }
    )
}

/// Socket.IO packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

impl Kind {
    fn digit(self) -> char {
        match self {
            Kind::Connect => '0',
            Kind::Disconnect => '1',
            Kind::Event => '2',
            Kind::Ack => '3',
            Kind::ConnectError => '4',
            Kind::BinaryEvent => '5',
            Kind::BinaryAck => '6',
        }
    }
}

/// A Socket.IO packet, borrowed from the Engine.IO message it came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SioPacket<'a> {
    pub kind: Kind,
    /// Binary attachments that follow (binary kinds only).
    pub attachments: u32,
    /// The namespace: `/` when absent.
    pub nsp: &'a str,
    pub id: Option<u64>,
    /// The JSON payload as it came (empty when absent); checked to suit the kind.
    pub data: &'a str,
}

/// Why a Socket.IO packet was refused (the connection is closed for any of them, as the
/// reference server does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SioError {
    /// Not a type digit.
    UnknownType,
    /// A binary packet without a valid attachment count, or with more than allowed.
    Attachments,
    /// The namespace is not `/` followed by channel characters.
    Namespace,
    /// The ack id is not a number below 2^53.
    AckId,
    /// The payload is not JSON, too deep, or not of the shape the kind needs (an event: an
    /// array whose first element is a string; an ack: an array; a connect: an object).
    Payload,
}

impl SioError {
    pub fn as_str(self) -> &'static str {
        match self {
            SioError::UnknownType => "unknown packet type",
            SioError::Attachments => "bad attachment count",
            SioError::Namespace => "bad namespace",
            SioError::AckId => "bad ack id",
            SioError::Payload => "invalid payload",
        }
    }
}

/// Largest ack id (JavaScript's safe integers).
const MAX_ID: u64 = (1 << 53) - 1;

/// Parses a Socket.IO packet from the text of an Engine.IO message. `max_attachments` bounds a
/// binary packet's attachment count.
pub fn parse_sio(s: &str, max_attachments: u32) -> Result<SioPacket<'_>, SioError> {
    let b = s.as_bytes();
    let kind = match b.first() {
        Some(b'0') => Kind::Connect,
        Some(b'1') => Kind::Disconnect,
        Some(b'2') => Kind::Event,
        Some(b'3') => Kind::Ack,
        Some(b'4') => Kind::ConnectError,
        Some(b'5') => Kind::BinaryEvent,
        Some(b'6') => Kind::BinaryAck,
        _ => return Err(SioError::UnknownType),
    };
    let mut i = 1;
    let mut attachments = 0;
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i - start > 6 || b.get(i) != Some(&b'-') {
            return Err(SioError::Attachments);
        }
        attachments = s[start..i]
            .parse::<u32>()
            .map_err(|_| SioError::Attachments)?;
        if attachments > max_attachments {
            return Err(SioError::Attachments);
        }
        i += 1;
    }
    let mut nsp = "/";
    if b.get(i) == Some(&b'/') {
        let start = i;
        while i < b.len() && b[i] != b',' {
            i += 1;
        }
        nsp = &s[start..i];
        if nsp.len() > 256
            || !nsp[1..]
                .bytes()
                .all(|c| super::segment_char(c) || c == b'/')
        {
            return Err(SioError::Namespace);
        }
        if i < b.len() {
            i += 1; // the comma
        }
    }
    let mut id = None;
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i > start {
        let n = s[start..i].parse::<u64>().map_err(|_| SioError::AckId)?;
        if n > MAX_ID {
            return Err(SioError::AckId);
        }
        id = Some(n);
    }
    let data = &s[i..];
    let shape_ok = match kind {
        Kind::Connect => data.is_empty() || (first_byte(data) == Some(b'{') && valid_json(data)),
        Kind::Disconnect => data.is_empty(),
        Kind::ConnectError => matches!(first_byte(data), Some(b'{' | b'"')) && valid_json(data),
        Kind::Event | Kind::BinaryEvent => {
            first_byte(data) == Some(b'[')
                && valid_json(data)
                && elements(data).next().is_some_and(|e| e.starts_with('"'))
        }
        Kind::Ack | Kind::BinaryAck => first_byte(data) == Some(b'[') && valid_json(data),
    };
    if !shape_ok {
        return Err(SioError::Payload);
    }
    Ok(SioPacket {
        kind,
        attachments,
        nsp,
        id,
        data,
    })
}

fn first_byte(s: &str) -> Option<u8> {
    s.as_bytes().first().copied()
}

/// Writes a Socket.IO packet as the text of an Engine.IO message, `4` included:
/// `4` type [attachments `-`] [namespace `,`] [id] data.
pub fn write_sio(
    out: &mut String,
    kind: Kind,
    attachments: u32,
    nsp: &str,
    id: Option<u64>,
    data: &str,
) {
    out.push('4');
    out.push(kind.digit());
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        let _ = write!(out, "{attachments}-");
    }
    if nsp != "/" {
        out.push_str(nsp);
        out.push(',');
    }
    if let Some(id) = id {
        let _ = write!(out, "{id}");
    }
    out.push_str(data);
}

/// [`write_sio`] into a new string.
pub fn sio(kind: Kind, nsp: &str, id: Option<u64>, data: &str) -> String {
    let mut s = String::with_capacity(data.len() + nsp.len() + 8);
    write_sio(&mut s, kind, 0, nsp, id, data);
    s
}

/// The message a publish becomes: `42["<event>",<payload JSON>]`, with the offset as a last
/// string argument when state recovery is on.
pub fn event_text(event: &str, data_json: &str, offset: Option<&str>) -> String {
    let mut s = String::with_capacity(data_json.len() + event.len() + 32);
    s.push_str("42[");
    super::bayeux::json_str(&mut s, event);
    s.push(',');
    s.push_str(data_json);
    if let Some(o) = offset {
        s.push(',');
        super::bayeux::json_str(&mut s, o);
    }
    s.push(']');
    s
}

/// Whether `s` is one JSON value (with nothing but whitespace around it) nested at most
/// [`MAX_DEPTH`] deep.
pub fn valid_json(s: &str) -> bool {
    let b = s.as_bytes();
    match skip_value(b, skip_ws(b, 0), 0) {
        Some(end) => skip_ws(b, end) == b.len(),
        None => false,
    }
}

/// The elements of a JSON array (already checked with [`valid_json`]), each as its text.
pub fn elements(array: &str) -> impl Iterator<Item = &str> {
    let b = array.as_bytes();
    let mut i = skip_ws(b, 0) + 1; // past '['
    std::iter::from_fn(move || {
        i = skip_ws(b, i);
        if i >= b.len() || b[i] == b']' {
            return None;
        }
        let end = skip_value(b, i, 0)?;
        let item = &array[i..end];
        i = skip_ws(b, end);
        if b.get(i) == Some(&b',') {
            i += 1;
        }
        Some(item)
    })
}

/// The value of a JSON string literal (`"…"`, checked), escapes decoded.
pub fn string_value(lit: &str) -> Option<String> {
    let b = lit.as_bytes();
    if b.len() < 2 || b[0] != b'"' || skip_string(b, 0)? != b.len() {
        return None;
    }
    let inner = &lit[1..lit.len() - 1];
    if !inner.contains('\\') {
        return Some(inner.to_string());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next()? {
            '"' => out.push('"'),
            '\\' => out.push('\\'),
            '/' => out.push('/'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'u' => {
                let hex = |chars: &mut std::str::Chars<'_>| -> Option<u32> {
                    let h: String = chars.take(4).collect();
                    if h.len() != 4 {
                        return None;
                    }
                    u32::from_str_radix(&h, 16).ok()
                };
                let hi = hex(&mut chars)?;
                let cp = if (0xd800..0xdc00).contains(&hi) {
                    let rest = chars.as_str();
                    if !rest.starts_with("\\u") {
                        return None;
                    }
                    chars.next();
                    chars.next();
                    let lo = hex(&mut chars)?;
                    if !(0xdc00..0xe000).contains(&lo) {
                        return None;
                    }
                    0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
                } else {
                    hi
                };
                out.push(char::from_u32(cp)?);
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The text of `key`'s value in a JSON object (already checked), if present.
pub fn member<'a>(object: &'a str, key: &str) -> Option<&'a str> {
    let b = object.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(b, i);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let kend = skip_string(b, i)?;
        let k = string_value(&object[i..kend])?;
        i = skip_ws(b, kend);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let vend = skip_value(b, i, 0)?;
        if k == key {
            return Some(&object[i..vend]);
        }
        i = skip_ws(b, vend);
        if b.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the JSON value at `i`, if it is one.
fn skip_value(b: &[u8], i: usize, depth: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            if depth >= MAX_DEPTH {
                return None;
            }
            let close = if b[i] == b'{' { b'}' } else { b']' };
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&close) {
                return Some(j + 1);
            }
            loop {
                if close == b'}' {
                    if b.get(j) != Some(&b'"') {
                        return None;
                    }
                    j = skip_ws(b, skip_string(b, j)?);
                    if b.get(j) != Some(&b':') {
                        return None;
                    }
                    j = skip_ws(b, j + 1);
                }
                j = skip_ws(b, skip_value(b, j, depth + 1)?);
                match b.get(j) {
                    Some(&b',') => j = skip_ws(b, j + 1),
                    Some(&c) if c == close => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b't' => b[i..].starts_with(b"true").then_some(i + 4),
        b'f' => b[i..].starts_with(b"false").then_some(i + 5),
        b'n' => b[i..].starts_with(b"null").then_some(i + 4),
        b'-' | b'0'..=b'9' => skip_number(b, i),
        _ => None,
    }
}

fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'"' => return Some(j + 1),
            b'\\' => {
                match *b.get(j + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 2,
                    b'u' => {
                        if b.len() < j + 6 || !b[j + 2..j + 6].iter().all(u8::is_ascii_hexdigit) {
                            return None;
                        }
                        j += 6;
                    }
                    _ => return None,
                }
                continue;
            }
            0..=0x1f => return None,
            _ => {}
        }
        j += 1;
    }
    None
}

fn skip_number(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    if b.get(j) == Some(&b'-') {
        j += 1;
    }
    match b.get(j) {
        Some(b'0') => j += 1,
        Some(b'1'..=b'9') => {
            while b.get(j).is_some_and(u8::is_ascii_digit) {
                j += 1;
            }
        }
        _ => return None,
    }
    if b.get(j) == Some(&b'.') {
        j += 1;
        let s = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == s {
            return None;
        }
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        j += 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        let s = j;
        while b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        if j == s {
            return None;
        }
    }
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_packets() {
        assert_eq!(parse_text(b"2probe", false), Ok(Packet::Ping(b"probe")));
        assert_eq!(parse_text(b"3", false), Ok(Packet::Pong(b"")));
        assert_eq!(parse_text(b"4hello", false), Ok(Packet::Message(b"hello")));
        assert_eq!(parse_text(b"5", false), Ok(Packet::Upgrade));
        assert_eq!(parse_text(b"1", false), Ok(Packet::Close));
        assert_eq!(
            parse_text(b"bAQIDBA==", true),
            Ok(Packet::Binary(vec![1, 2, 3, 4]))
        );
        for bad in [&b""[..], b"abc", b"7", b"bAQIDBA==", b"x"] {
            assert!(parse_text(bad, false).is_err(), "{bad:?}");
        }
        assert!(parse_text(b"b!!", true).is_err());
        let parts: Vec<&[u8]> = split_payload(b"4test1\x1e4test2\x1ebAQ==").collect();
        assert_eq!(parts, [&b"4test1"[..], b"4test2", b"bAQ=="]);
        let mut out = Vec::new();
        push_binary(&mut out, &[1, 2, 3, 4]);
        assert_eq!(out, b"bAQIDBA==");
        assert_eq!(
            open_packet("abc", true, 300, 200, 1_000_000),
            "0{\"sid\":\"abc\",\"upgrades\":[\"websocket\"],\"pingInterval\":300,\
             \"pingTimeout\":200,\"maxPayload\":1000000}"
        );
    }

    #[test]
    fn socketio_packets() {
        let p = parse_sio("0", 10).unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (Kind::Connect, "/", None, "")
        );
        let p = parse_sio("0/custom,{\"token\":\"abc\"}", 10).unwrap();
        assert_eq!((p.nsp, p.data), ("/custom", "{\"token\":\"abc\"}"));
        let p = parse_sio("0/random", 10).unwrap();
        assert_eq!(p.nsp, "/random");
        let p = parse_sio("2456[\"message-with-ack\",1,\"2\",{\"3\":[false]}]", 10).unwrap();
        assert_eq!((p.kind, p.id), (Kind::Event, Some(456)));
        let p = parse_sio(
            "52-789[\"m\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1}]",
            10,
        )
        .unwrap();
        assert_eq!(
            (p.kind, p.attachments, p.id),
            (Kind::BinaryEvent, 2, Some(789))
        );
        let p = parse_sio("3/chat,12[]", 10).unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.id, p.data),
            (Kind::Ack, "/chat", Some(12), "[]")
        );
        assert_eq!(parse_sio("1", 10).unwrap().kind, Kind::Disconnect);
        assert_eq!(parse_sio("abc", 10), Err(SioError::UnknownType));
        assert_eq!(parse_sio("", 10), Err(SioError::UnknownType));
        assert_eq!(parse_sio("7", 10), Err(SioError::UnknownType));
        assert_eq!(parse_sio("2{}", 10), Err(SioError::Payload));
        assert_eq!(parse_sio("2abc[\"m\"]", 10), Err(SioError::Payload));
        assert_eq!(parse_sio("2[]", 10), Err(SioError::Payload));
        assert_eq!(parse_sio("2[1]", 10), Err(SioError::Payload));
        assert_eq!(parse_sio("2[\"m\"", 10), Err(SioError::Payload));
        assert_eq!(parse_sio("0[]", 10), Err(SioError::Payload));
        assert_eq!(parse_sio("1{}", 10), Err(SioError::Payload));
        assert_eq!(parse_sio("5[\"m\"]", 10), Err(SioError::Attachments));
        assert_eq!(parse_sio("511-[\"m\"]", 10), Err(SioError::Attachments));
        assert_eq!(
            parse_sio("29007199254740992[\"m\"]", 10),
            Err(SioError::AckId)
        );
        assert_eq!(parse_sio("2/a b,[\"m\"]", 10), Err(SioError::Namespace));
        // Never a panic on any prefix of valid packets.
        let all =
            "52-/custom,789[\"m\",{\"_placeholder\":true,\"num\":0},\"\\u00e9\\ud83d\\ude00\"]";
        for i in 0..=all.len() {
            if all.is_char_boundary(i) {
                let _ = parse_sio(&all[..i], 10);
            }
        }
    }

    #[test]
    fn json_helpers() {
        let a = "[\"message\" , 1,\"2\",{\"3\":[true]}, null, -1.5e3]";
        assert!(valid_json(a));
        let e: Vec<&str> = elements(a).collect();
        assert_eq!(
            e,
            [
                "\"message\"",
                "1",
                "\"2\"",
                "{\"3\":[true]}",
                "null",
                "-1.5e3"
            ]
        );
        assert_eq!(elements("[]").count(), 0);
        assert_eq!(
            string_value("\"a\\\"b\\u00e9\\ud83d\\ude00\"").unwrap(),
            "a\"bé😀"
        );
        assert_eq!(string_value("\"\\ud83d\""), None);
        let o = "{\"channels\":[\"a\",\"b/*\"],\"token\":\"t\\\"\"}";
        assert!(valid_json(o));
        assert_eq!(member(o, "channels"), Some("[\"a\",\"b/*\"]"));
        assert_eq!(member(o, "token").and_then(string_value).unwrap(), "t\"");
        assert_eq!(member(o, "x"), None);
        for bad in [
            "", "[", "[1,]", "{\"a\"}", "01", "1.", "\"\\x\"", "tru", "[1] 2", "{a:1}",
        ] {
            assert!(!valid_json(bad), "{bad:?}");
        }
        assert!(!valid_json(&"[".repeat(40)));
        assert!(valid_json(&format!("{}{}", "[".repeat(30), "]".repeat(30))));
        assert_eq!(
            event_text("message", "{\"a\":1}", Some("n:5")),
            "42[\"message\",{\"a\":1},\"n:5\"]"
        );
        let mut s = String::new();
        write_sio(&mut s, Kind::BinaryAck, 2, "/c", Some(7), "[1]");
        assert_eq!(s, "462-/c,7[1]");
        assert_eq!(
            sio(Kind::Connect, "/", None, "{\"sid\":\"x\"}"),
            "40{\"sid\":\"x\"}"
        );
    }
}
