//! HTTP/1.1 request heads, sans-IO (bodies: `chunked.rs`; header and query values: `values.rs`;
//! the small responses the server writes: `response.rs`).
//!
//! Bytes in, a borrowed [`Head`] out. The parser never allocates, never consumes anything on
//! [`Parse::Partial`], and finds the end of the head by scanning only the bytes that are new since
//! the previous call, so a head trickled one byte per segment costs O(bytes), not O(bytes²).
//! It must never panic on any input: every malformed head is an [`HttpError`] with the status
//! the server answers.

/// Outcome of one parse attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    /// A whole item was parsed.
    Complete(T),
    /// More bytes are needed; nothing was consumed.
    Partial,
    /// The input can never become valid.
    Error(HttpError),
}

/// Why a request is refused. Each maps to one status code ([`HttpError::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpError {
    /// The request line alone is longer than the head limit (414).
    UriTooLong,
    /// The head (request line + headers) is longer than `--max-head-bytes` (431).
    HeadTooLarge,
    /// More header fields than `--max-headers` (431).
    TooManyHeaders,
    /// Syntax the parser rejects: bad request line, bad field, bare CR, NUL... (400).
    Malformed,
    /// HTTP/1.1 request without exactly one `Host` field (400).
    BadHost,
    /// `Content-Length` that is not one plain decimal number, or several that disagree (400).
    BadContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (request smuggling shape, 400).
    LengthAndEncoding,
    /// A transfer coding other than `chunked` alone (501).
    UnsupportedEncoding,
    /// A chunked body that breaks the chunked syntax (400).
    BadChunk,
    /// Body larger than `--max-body-bytes` (413).
    BodyTooLarge,
}

impl HttpError {
    /// Status code and reason phrase for the response.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            HttpError::UriTooLong => (414, "URI Too Long"),
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => {
                (431, "Request Header Fields Too Large")
            }
            HttpError::Malformed
            | HttpError::BadHost
            | HttpError::BadContentLength
            | HttpError::LengthAndEncoding
            | HttpError::BadChunk => (400, "Bad Request"),
            HttpError::UnsupportedEncoding => (501, "Not Implemented"),
            HttpError::BodyTooLarge => (413, "Content Too Large"),
        }
    }

    /// A short, stable explanation sent as the response body.
    pub fn message(self) -> &'static str {
        match self {
            HttpError::UriTooLong => "request line exceeds the head size limit",
            HttpError::HeadTooLarge => "request head exceeds the head size limit",
            HttpError::TooManyHeaders => "too many header fields",
            HttpError::Malformed => "malformed request",
            HttpError::BadHost => "exactly one Host header is required",
            HttpError::BadContentLength => "invalid Content-Length",
            HttpError::LengthAndEncoding => "both Content-Length and Transfer-Encoding",
            HttpError::BadChunk => "malformed chunked body",
            HttpError::UnsupportedEncoding => "unsupported Transfer-Encoding",
            HttpError::BodyTooLarge => "request body exceeds the body size limit",
        }
    }
}

/// Limits applied while parsing a head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest head accepted, request line and terminating blank line included.
    pub max_head_bytes: usize,
    /// Most header fields accepted.
    pub max_headers: usize,
}

/// Request method, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// A parsed request head, borrowing the buffer it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head<'b> {
    pub method_raw: &'b str,
    pub path: &'b str,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Bytes of the head, terminating blank line included; the body starts here.
    pub head_len: usize,
    /// Body length from `Content-Length` (0 when absent).
    pub content_length: u64,
    /// `Transfer-Encoding: chunked`: the body is decoded by [`chunked_body`].
    pub chunked: bool,
    /// `Connection: close` (or HTTP/1.0 without `keep-alive`).
    pub close: bool,
    /// `Connection` lists the `upgrade` token.
    pub connection_upgrade: bool,
    /// `Upgrade` lists the `websocket` token.
    pub upgrade_websocket: bool,
    /// `Upgrade` header present at all.
    pub upgrade_present: bool,
    /// Number of `Host` fields.
    pub host_count: u8,
    /// `Sec-WebSocket-Key` value, if present exactly once.
    pub ws_key: Option<&'b [u8]>,
    /// `Sec-WebSocket-Key` appeared more than once.
    pub ws_key_repeated: bool,
    /// `Sec-WebSocket-Version` value, if present.
    pub ws_version: Option<&'b [u8]>,
    /// `Sec-WebSocket-Extensions` values, the first four fields in order (offers are in the
    /// client's order of preference: later ones are never needed to accept an earlier one).
    pub ws_extensions: [Option<&'b [u8]>; 4],
    /// `Accept` lists `text/event-stream`.
    pub accept_sse: bool,
    /// `Accept` lists `application/json`.
    pub accept_json: bool,
    /// `Accept` lists `application/x-ndjson`.
    pub accept_ndjson: bool,
    /// `Origin` value (the last one, if repeated).
    pub origin: Option<&'b [u8]>,
    /// `Last-Event-ID` value.
    pub last_event_id: Option<&'b [u8]>,
    /// `Client-Id` value (dojox/socket long-poll series).
    pub client_id: Option<&'b [u8]>,
    /// `Pragma` lists `start-long-poll` (first request of a dojox/socket series).
    pub pragma_start: bool,
    /// `Access-Control-Request-Method` present (a CORS preflight).
    pub cors_preflight: bool,
    /// `Access-Control-Request-Headers` value.
    pub cors_request_headers: Option<&'b [u8]>,
    /// `Cookie` value (the last one, if repeated).
    pub cookie: Option<&'b [u8]>,
    /// `Referer` value.
    pub referer: Option<&'b [u8]>,
    /// `Authorization` (a publish key or a subscribe token: `Bearer …`).
    pub authorization: Option<&'b [u8]>,
}

impl Head<'_> {
    pub fn method(&self) -> Method {
        match self.method_raw {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            _ => Method::Other,
        }
    }

    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        !self.close
    }
}

/// Finds the end of a request head: the index just past the blank line, accepting CRLF or bare
/// LF line endings as httparse does. `scanned` is how many bytes earlier calls already searched;
/// only `buf[scanned.saturating_sub(3)..]` is examined.
pub fn find_head_end(buf: &[u8], scanned: usize) -> Option<usize> {
    let start = scanned.saturating_sub(3);
    let mut i = start;
    while i < buf.len() {
        // Find the next LF; a head ends at "\n\n" or "\n\r\n".
        match buf[i..].iter().position(|&b| b == b'\n') {
            None => return None,
            Some(p) => {
                let lf = i + p;
                match buf.get(lf + 1) {
                    Some(b'\n') => return Some(lf + 2),
                    Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
                    _ => i = lf + 1,
                }
            }
        }
    }
    None
}

/// Parses a request head at the start of `buf`.
///
/// `scanned` is the length of `buf` at the previous attempt for this same request (0 at first);
/// see [`find_head_end`].
pub fn parse_head<'b>(buf: &'b [u8], scanned: usize, limits: HeadLimits) -> Parse<Head<'b>> {
    let end = match find_head_end(buf, scanned) {
        Some(end) if end <= limits.max_head_bytes => end,
        Some(_) => return Parse::Error(too_large(buf, limits)),
        None if buf.len() >= limits.max_head_bytes => return Parse::Error(too_large(buf, limits)),
        None => return Parse::Partial,
    };
    // httparse wants a fixed array of header slots; 128 covers any sane `--max-headers` and
    // is bounded so that a hostile head cannot make us allocate.
    const SLOTS: usize = 128;
    let mut slots = [httparse::EMPTY_HEADER; SLOTS];
    let n_slots = limits.max_headers.min(SLOTS);
    let mut req = httparse::Request::new(&mut slots[..n_slots]);
    let head_len = match req.parse(&buf[..end]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parse::Error(HttpError::Malformed),
        Err(httparse::Error::TooManyHeaders) => return Parse::Error(HttpError::TooManyHeaders),
        Err(_) => return Parse::Error(HttpError::Malformed),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parse::Error(HttpError::Malformed);
    };
    let mut head = Head {
        method_raw: method,
        path,
        minor_version: version,
        head_len,
        close: version == 0,
        ..Head::default()
    };
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_only = false;
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("host") {
            head.host_count = head.host_count.saturating_add(1);
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_content_length(value) else {
                return Parse::Error(HttpError::BadContentLength);
            };
            if content_length.is_some_and(|old| old != n) {
                return Parse::Error(HttpError::BadContentLength);
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only `chunked` alone is understood (a repeated field adds codings: refused).
            chunked_only = !transfer_encoding
                && tokens(value).count() == 1
                && last_token(value).is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    head.close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    head.close = false;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    head.connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_present = true;
            if tokens(value).any(|t| protocol_name(t).eq_ignore_ascii_case(b"websocket")) {
                head.upgrade_websocket = true;
            }
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            if head.ws_key.is_some() {
                head.ws_key_repeated = true;
            }
            head.ws_key = Some(trim(value));
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(trim(value));
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            if let Some(slot) = head.ws_extensions.iter_mut().find(|v| v.is_none()) {
                *slot = Some(trim(value));
            }
        } else if name.eq_ignore_ascii_case("accept") {
            for t in tokens(value) {
                let media = trim(t.split(|&b| b == b';').next().unwrap_or(t));
                if media.eq_ignore_ascii_case(b"text/event-stream") {
                    head.accept_sse = true;
                } else if media.eq_ignore_ascii_case(b"application/json") {
                    head.accept_json = true;
                } else if media.eq_ignore_ascii_case(b"application/x-ndjson") {
                    head.accept_ndjson = true;
                }
            }
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(trim(value));
        } else if name.eq_ignore_ascii_case("last-event-id") {
            head.last_event_id = Some(trim(value));
        } else if name.eq_ignore_ascii_case("client-id") {
            head.client_id = Some(trim(value));
        } else if name.eq_ignore_ascii_case("pragma") {
            if tokens(value).any(|t| t.eq_ignore_ascii_case(b"start-long-poll")) {
                head.pragma_start = true;
            }
        } else if name.eq_ignore_ascii_case("access-control-request-method") {
            head.cors_preflight = true;
        } else if name.eq_ignore_ascii_case("access-control-request-headers") {
            head.cors_request_headers = Some(trim(value));
        } else if name.eq_ignore_ascii_case("cookie") {
            head.cookie = Some(trim(value));
        } else if name.eq_ignore_ascii_case("referer") {
            head.referer = Some(trim(value));
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(trim(value));
        }
    }
    if version == 1 && head.host_count != 1 || head.host_count > 1 {
        return Parse::Error(HttpError::BadHost);
    }
    if transfer_encoding {
        if content_length.is_some() {
            return Parse::Error(HttpError::LengthAndEncoding);
        }
        if !chunked_only || version == 0 {
            return Parse::Error(HttpError::UnsupportedEncoding);
        }
        head.chunked = true;
    }
    head.content_length = content_length.unwrap_or(0);
    Parse::Complete(head)
}

fn too_large(buf: &[u8], limits: HeadLimits) -> HttpError {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    if window.contains(&b'\n') {
        HttpError::HeadTooLarge
    } else {
        HttpError::UriTooLong
    }
}

/// Strict `Content-Length`: 1 to 19 ASCII digits, optional surrounding whitespace, nothing else
/// (no sign, no list; RFC 9112 §6.3).
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = trim(value);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

pub(super) fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn last_token(value: &[u8]) -> Option<&[u8]> {
    tokens(value).last()
}

/// `websocket/13` → `websocket` (an `Upgrade` protocol may carry a version).
fn protocol_name(t: &[u8]) -> &[u8] {
    t.split(|&b| b == b'/').next().unwrap_or(t)
}

mod chunked;
mod response;
mod values;

pub use chunked::{chunked_body, valid_chunk_ext};
pub use response::{HttpDate, error_response, no_content, response};
pub use values::{cookie, percent_decode, query_param, referer_origin};

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 8192,
        max_headers: 64,
    };

    const UPGRADE: &[u8] = b"GET /sub/news HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn complete(buf: &[u8]) -> Head<'_> {
        match parse_head(buf, 0, LIMITS) {
            Parse::Complete(h) => h,
            other => panic!("expected Complete, got {other:?}"),
        }
    }

    fn error(buf: &[u8]) -> HttpError {
        match parse_head(buf, 0, LIMITS) {
            Parse::Error(e) => e,
            other => panic!("expected Error, got {other:?}"),
        }
    }

    #[test]
    fn parses_transport_headers() {
        let h = complete(
            b"POST /sub/x?cursor=5&callback=cb HTTP/1.1\r\nHost: a\r\n\
              Accept: text/html, application/json;q=0.9\r\nOrigin: http://o.test\r\n\
              Last-Event-ID: 12\r\nClient-Id: 0.5\r\nPragma: no-cache, start-long-poll\r\n\
              Access-Control-Request-Method: POST\r\n\
              Access-Control-Request-Headers: client-id, pragma\r\n\r\n",
        );
        assert!(h.accept_json && !h.accept_sse && !h.accept_ndjson);
        assert_eq!(h.origin, Some(&b"http://o.test"[..]));
        assert_eq!(h.last_event_id, Some(&b"12"[..]));
        assert_eq!(h.client_id, Some(&b"0.5"[..]));
        assert!(h.pragma_start && h.cors_preflight);
        assert_eq!(h.cors_request_headers, Some(&b"client-id, pragma"[..]));
        assert_eq!(query_param(h.path, "cursor"), Some("5"));
        assert_eq!(query_param(h.path, "callback"), Some("cb"));
        assert_eq!(query_param(h.path, "nope"), None);
        assert_eq!(query_param("/a?flag&x=1", "flag"), Some(""));
        let h = complete(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: Text/Event-Stream\r\n\r\n");
        assert!(h.accept_sse);
    }

    #[test]
    fn parses_upgrade_request() {
        let h = complete(UPGRADE);
        assert_eq!(h.method(), Method::Get);
        assert_eq!(h.path, "/sub/news");
        assert_eq!(h.minor_version, 1);
        assert_eq!(h.head_len, UPGRADE.len());
        assert!(h.connection_upgrade && h.upgrade_websocket && h.keep_alive());
        assert_eq!(h.ws_key, Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
        assert_eq!(h.ws_version, Some(&b"13"[..]));
    }

    #[test]
    fn every_prefix_is_partial() {
        for n in 0..UPGRADE.len() {
            assert_eq!(
                parse_head(&UPGRADE[..n], 0, LIMITS),
                Parse::Partial,
                "prefix {n}"
            );
        }
    }

    #[test]
    fn incremental_scan_matches_full_scan() {
        // Feed one byte at a time, passing the previous length as `scanned`.
        let mut done = None;
        for n in 1..=UPGRADE.len() {
            if let Parse::Complete(h) = parse_head(&UPGRADE[..n], n - 1, LIMITS) {
                done = Some((n, h.head_len));
                break;
            }
        }
        assert_eq!(done, Some((UPGRADE.len(), UPGRADE.len())));
    }

    #[test]
    fn bare_lf_heads_are_accepted() {
        let h = complete(b"GET /stats HTTP/1.1\nHost: a\n\n");
        assert_eq!(h.path, "/stats");
    }

    #[test]
    fn body_starts_after_head() {
        let buf = b"POST /pub/a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
        let h = complete(buf);
        assert_eq!(h.content_length, 5);
        assert_eq!(&buf[h.head_len..], b"hello");
    }

    #[test]
    fn content_length_must_be_plain_digits() {
        for bad in [
            "+5",
            "-1",
            "5, 6",
            "",
            "0x10",
            "99999999999999999999",
            "1 2",
        ] {
            let req = format!("POST /pub/a HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
            assert_eq!(
                error(req.as_bytes()),
                HttpError::BadContentLength,
                "{bad:?}"
            );
        }
        let dup = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert_eq!(error(dup), HttpError::BadContentLength);
        let same = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(complete(same).content_length, 5);
    }

    #[test]
    fn transfer_encoding() {
        let both =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(error(both), HttpError::LengthAndEncoding);
        let chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(complete(chunked).chunked);
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(error(bad), HttpError::UnsupportedEncoding, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn host_is_required_once() {
        assert_eq!(error(b"GET / HTTP/1.1\r\n\r\n"), HttpError::BadHost);
        assert_eq!(
            error(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            HttpError::BadHost
        );
        assert_eq!(complete(b"GET / HTTP/1.0\r\n\r\n").minor_version, 0);
    }

    #[test]
    fn malformed_heads_are_errors() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n",
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"\r\n\r\n",
            b"GET\r\n\r\n",
        ] {
            assert_eq!(
                error(bad),
                HttpError::Malformed,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn head_size_limits() {
        let small = HeadLimits {
            max_head_bytes: 64,
            max_headers: 4,
        };
        let long_line = vec![b'a'; 100];
        assert_eq!(
            parse_head(&long_line, 0, small),
            Parse::Error(HttpError::UriTooLong)
        );
        let mut long_head = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        long_head.extend(std::iter::repeat_n(b'b', 80));
        assert_eq!(
            parse_head(&long_head, 0, small),
            Parse::Error(HttpError::HeadTooLarge)
        );
        // Exactly at the limit is accepted, one byte over is not.
        let mut exact = b"GET / HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        let pad = 64 - exact.len() - 4;
        exact.extend(std::iter::repeat_n(b'c', pad));
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), 64);
        assert!(matches!(parse_head(&exact, 0, small), Parse::Complete(_)));
        let mut over = exact.clone();
        over.insert(30, b'c');
        assert_eq!(
            parse_head(&over, 0, small),
            Parse::Error(HttpError::HeadTooLarge)
        );
        let many = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n";
        assert_eq!(
            parse_head(many, 0, small),
            Parse::Error(HttpError::TooManyHeaders)
        );
        let four = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\n\r\n";
        assert!(matches!(parse_head(four, 0, small), Parse::Complete(_)));
    }

    #[test]
    fn connection_tokens() {
        let h = complete(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert!(!h.keep_alive());
        let h = complete(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive());
        let h = complete(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: WebSocket/13, h2c\r\n\r\n");
        assert!(h.upgrade_websocket && !h.connection_upgrade);
    }
}
