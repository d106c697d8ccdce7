//! Long-poll answers: an HTTP/1.1 response framed by `Content-Length` (the server never chunks
//! them), whose JSON body is `{"cursor":"ID","messages":[{"id":"ID","data":"..."}],"gap":{...}}`
//! (`gap` only when there is one). The body of one answer is complete before it is parsed, so
//! serde_json does the decoding (string escapes included); payloads without escapes are borrowed.

use std::borrow::Cow;

use serde::Deserialize;

/// Largest response head accepted.
pub const MAX_HEAD: usize = 8192;

/// A complete response at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    pub body: &'a [u8],
    /// Bytes of the buffer the response occupies (head and body).
    pub len: usize,
}

/// The response at the start of `buf`: `Ok(None)` while incomplete, an error when it is not a
/// well-formed HTTP/1.1 response with a `Content-Length` of at most `max_body` bytes.
pub fn response(buf: &[u8], max_body: usize) -> Result<Option<Response<'_>>, &'static str> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err("response head too large")
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "response head not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or("malformed status line")?;
    let mut length = None;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            return Err("malformed header line");
        };
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.trim().parse().map_err(|_| "bad Content-Length")?;
            if length.is_some_and(|m| m != n) {
                return Err("conflicting Content-Length");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked long-poll answer (expected Content-Length)");
        }
    }
    // 204 and 304 have no body; anything else must say how long it is.
    let length = match (status, length) {
        (204 | 304, _) => 0,
        (_, Some(n)) => n,
        (_, None) => return Err("response without Content-Length"),
    };
    if length > max_body {
        return Err("response body too large");
    }
    let at = end + 4;
    if buf.len() < at + length {
        return Ok(None);
    }
    Ok(Some(Response {
        status,
        body: &buf[at..at + length],
        len: at + length,
    }))
}

/// One message of an answer.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Message<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub data: Cow<'a, str>,
}

/// A JSON long-poll answer.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Answer<'a> {
    #[serde(borrow)]
    pub cursor: Cow<'a, str>,
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    /// `{"missed":N}` or `{"missed":null}`: present only when the server reports a gap.
    #[serde(default)]
    pub gap: Option<Gap>,
}

/// A reported gap; `missed` is `None` when the server does not know how many.
#[derive(Debug, Deserialize, PartialEq, Eq)]
pub struct Gap {
    #[serde(default)]
    pub missed: Option<u64>,
}

impl Answer<'_> {
    /// The cursor as a number (ids are 1 to 20 decimal digits fitting in 64 bits).
    pub fn cursor_id(&self) -> Option<u64> {
        parse_id(&self.cursor)
    }
}

/// An id: 1 to 20 decimal digits fitting in 64 bits.
pub fn parse_id(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an answer body.
pub fn answer(body: &[u8]) -> Result<Answer<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nEdgecomet-Cursor: 9\r\n\
             Cache-Control: no-store\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn framing_at_every_prefix() {
        let body = r#"{"cursor":"9","messages":[]}"#;
        let mut two = resp(body);
        let first = two.len();
        two.extend_from_slice(&resp(r#"{"cursor":"10","messages":[]}"#));
        for cut in 0..first {
            assert_eq!(response(&two[..cut], 1 << 20), Ok(None), "prefix {cut}");
        }
        let r = response(&two, 1 << 20).unwrap().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body.as_bytes());
        assert_eq!(r.len, first);
        let r = response(&two[first..], 1 << 20).unwrap().unwrap();
        assert_eq!(r.len, two.len() - first);
    }

    #[test]
    fn framing_errors() {
        assert!(response(b"HTTP/1.1 200 OK\r\n\r\n", 100).is_err());
        assert!(
            response(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                100
            )
            .is_err()
        );
        assert!(response(b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", 100).is_err());
        assert!(response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 100).is_err());
        assert!(
            response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                100
            )
            .is_err()
        );
        assert!(response(b"garbage\r\n\r\n", 100).is_err());
        assert!(response(&[b'a'; MAX_HEAD + 1], 100).is_err());
        let r = response(
            b"HTTP/1.1 204 No Content\r\nEdgecomet-Cursor: 3\r\n\r\n",
            100,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.body), (204, &b""[..]));
        let r = response(
            b"HTTP/1.1 410 Gone\r\nContent-Length: 4\r\n\r\ngoneHTTP",
            100,
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.status, r.body, r.len), (410, &b"gone"[..], 44));
    }

    #[test]
    fn answers() {
        let a = answer(
            br#"{"cursor":"1795000000000009","messages":[{"id":"1795000000000008","data":"hello"},{"id":"1795000000000009","data":"world"}]}"#,
        )
        .unwrap();
        assert_eq!(a.cursor_id(), Some(1_795_000_000_000_009));
        assert_eq!(a.messages.len(), 2);
        assert_eq!(a.messages[1].data, "world");
        assert!(matches!(a.messages[0].data, Cow::Borrowed(_)));
        assert_eq!(a.gap, None);

        // Escapes are decoded: quotes, backslashes, control characters, \u escapes, surrogates.
        let a = answer(
            br#"{"cursor":"5","messages":[{"id":"5","data":"a\"b\\c\n\r\t\u0001\u00e9\ud83d\ude00/"}],"gap":{"missed":3}}"#,
        )
        .unwrap();
        assert_eq!(a.messages[0].data, "a\"b\\c\n\r\t\u{1}é😀/");
        assert_eq!(a.gap, Some(Gap { missed: Some(3) }));

        // A poll timeout, and a gap of unknown size; order of fields does not matter.
        let a = answer(br#"{"gap":{"missed":null},"messages":[],"cursor":"0"}"#).unwrap();
        assert_eq!(a.gap, Some(Gap { missed: None }));
        assert_eq!(a.cursor_id(), Some(0));
        assert!(a.messages.is_empty());

        // Not an answer.
        assert!(answer(br#"{"messages":[]}"#).is_err());
        assert!(answer(br#"{"cursor":"1","messages":[{"id":"1"}]}"#).is_err());
        assert!(answer(b"hello").is_err());
        assert_eq!(parse_id("123456789012345678901"), None);
        assert_eq!(parse_id("99999999999999999999"), None);
        assert_eq!(parse_id("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_id("-1"), None);
        assert_eq!(parse_id(""), None);
    }
}
