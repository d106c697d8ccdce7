//! The server side of the WebSocket opening handshake (RFC 6455 §4.2), sans-IO.
//!
//! Takes a parsed [`Head`], returns the `101 Switching Protocols` response or the refusal the RFC
//! asks for: 426 with `Sec-WebSocket-Version: 13` for a version we do not speak, 400 for any other
//! missing or malformed element. The one extension is permessage-deflate (RFC 7692, when the
//! caller allows it: [`deflate::negotiate`]); no subprotocol is ever accepted, so the response
//! never names one the client did not offer (§9). An offer never fails the handshake: what
//! cannot be accepted is declined by leaving it out of the answer.

use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::proto::http::{self, Head, Method};
use crate::proto::ws::deflate::{self, Agreed};

/// The GUID every `Sec-WebSocket-Accept` is derived with (§1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not a GET (400).
    Method,
    /// HTTP/1.0 (400).
    Version,
    /// No `Upgrade: websocket` (400).
    Upgrade,
    /// `Connection` lacks the `upgrade` token (400).
    Connection,
    /// `Sec-WebSocket-Key` missing, repeated, or not base64 of 16 bytes (400).
    Key,
    /// `Sec-WebSocket-Version` absent or not 13 (426).
    WsVersion,
    /// The upgrade request carries a body (400; never buffered).
    Body,
}

impl HandshakeError {
    pub fn message(self) -> &'static str {
        match self {
            HandshakeError::Method => "WebSocket upgrade requires GET",
            HandshakeError::Version => "WebSocket upgrade requires HTTP/1.1",
            HandshakeError::Upgrade => "missing Upgrade: websocket",
            HandshakeError::Connection => "Connection header lacks the upgrade token",
            HandshakeError::Key => "Sec-WebSocket-Key must be base64 of 16 bytes",
            HandshakeError::WsVersion => "unsupported Sec-WebSocket-Version; this server speaks 13",
            HandshakeError::Body => "an upgrade request must not carry a body",
        }
    }

    /// The full refusal, `Connection: close`.
    pub fn response(self, date: &http::HttpDate) -> Vec<u8> {
        let mut body = self.message().as_bytes().to_vec();
        body.push(b'\n');
        let (status, reason, extra) = match self {
            HandshakeError::WsVersion => (
                426,
                "Upgrade Required",
                "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n",
            ),
            _ => (400, "Bad Request", ""),
        };
        http::response(
            date,
            status,
            reason,
            "text/plain; charset=utf-8",
            extra,
            &body,
            false,
        )
    }
}

/// Whether the request asks for an upgrade at all (it then goes through [`accept`]).
pub fn wants_upgrade(head: &Head<'_>) -> bool {
    head.upgrade_present || head.ws_key.is_some() || head.ws_version.is_some()
}

/// An accepted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The `101 Switching Protocols` response to send.
    pub response: Vec<u8>,
    /// permessage-deflate, when the client offered it, `deflate` allowed it and the response
    /// says so.
    pub deflate: Option<Agreed>,
}

/// Checks an upgrade request and returns the 101 response to send; `deflate`: whether
/// permessage-deflate may be agreed (`--deflate on`).
pub fn accept(
    head: &Head<'_>,
    date: &http::HttpDate,
    deflate: bool,
) -> Result<Accepted, HandshakeError> {
    if head.method() != Method::Get {
        return Err(HandshakeError::Method);
    }
    if head.minor_version != 1 {
        return Err(HandshakeError::Version);
    }
    if !head.upgrade_websocket {
        return Err(HandshakeError::Upgrade);
    }
    if !head.connection_upgrade {
        return Err(HandshakeError::Connection);
    }
    if head.ws_version != Some(b"13") {
        return Err(HandshakeError::WsVersion);
    }
    let key = match head.ws_key {
        Some(k) if !head.ws_key_repeated && valid_key(k) => k,
        _ => return Err(HandshakeError::Key),
    };
    if head.content_length != 0 {
        return Err(HandshakeError::Body);
    }
    let accept = accept_key(key);
    let agreed = match deflate {
        true => deflate::negotiate(head.ws_extensions.iter().flatten().copied()),
        false => None,
    };
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nServer: edgecomet\r\nDate: ");
    out.extend_from_slice(date.as_str().as_bytes());
    out.extend_from_slice(
        b"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept);
    out.extend_from_slice(b"\r\n");
    if let Some(a) = agreed {
        a.response_header(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    Ok(Accepted {
        response: out,
        deflate: agreed,
    })
}

/// A key is valid when it is base64 that decodes to exactly 16 bytes (§4.2.1 item 5).
fn valid_key(key: &[u8]) -> bool {
    // 16 bytes encode to 24 characters with "==" padding.
    if key.len() != 24 {
        return false;
    }
    let mut out = [0u8; 18];
    matches!(
        base64::engine::general_purpose::STANDARD.decode_slice(key, &mut out),
        Ok(16)
    )
}

/// `base64(sha1(key ++ GUID))`, 28 ASCII bytes.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    // 20 bytes always encode to exactly 28 characters.
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(digest, &mut out)
        .expect("20 bytes encode to 28");
    debug_assert_eq!(n, 28);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::http::{HeadLimits, Parse, parse_head};

    const LIMITS: HeadLimits = HeadLimits {
        max_head_bytes: 8192,
        max_headers: 64,
    };

    fn check(req: &str) -> Result<Vec<u8>, HandshakeError> {
        accepted(req, true).map(|a| a.response)
    }

    fn accepted(req: &str, deflate: bool) -> Result<Accepted, HandshakeError> {
        match parse_head(req.as_bytes(), 0, LIMITS) {
            Parse::Complete(h) => accept(&h, &http::HttpDate::from_unix(784_111_777), deflate),
            other => panic!("head did not parse: {other:?}"),
        }
    }

    #[test]
    fn permessage_deflate_negotiation() {
        let offer = |lines: &str| {
            request(
                "Sec-WebSocket-Version: 13\r\n",
                &format!("Sec-WebSocket-Version: 13\r\n{lines}"),
            )
        };
        // Chromium's offer: agreed, both no-context-takeover answered.
        let a = accepted(
            &offer("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"),
            true,
        )
        .unwrap();
        assert_eq!(a.deflate, Some(Agreed::DEFAULT));
        let resp = String::from_utf8(a.response).unwrap();
        assert!(resp.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n\r\n"), "{resp}");
        // --deflate off: declined by silence.
        let a = accepted(
            &offer("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
            false,
        )
        .unwrap();
        assert_eq!(a.deflate, None);
        assert!(
            !String::from_utf8(a.response)
                .unwrap()
                .contains("Extensions")
        );
        // An offer it cannot take, then one it can, over two header fields.
        let a = accepted(&offer("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=3\r\nSec-WebSocket-Extensions: foo, permessage-deflate; server_max_window_bits=12\r\n"), true).unwrap();
        assert_eq!(
            a.deflate,
            Some(Agreed {
                server_max_window_bits: 12
            })
        );
        assert!(
            String::from_utf8(a.response)
                .unwrap()
                .contains("; server_max_window_bits=12\r\n")
        );
        // Garbage is declined, never a refusal.
        for junk in [
            "\"",
            ";;;",
            "permessage-deflate; =",
            "x-webkit-deflate-frame",
        ] {
            let a = accepted(
                &offer(&format!("Sec-WebSocket-Extensions: {junk}\r\n")),
                true,
            )
            .unwrap();
            assert_eq!(a.deflate, None, "{junk}");
        }
    }

    fn request(replace: &str, with: &str) -> String {
        "GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            .replacen(replace, with, 1)
    }

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn accepts_valid_request() {
        let resp = String::from_utf8(check(&request("", "")).unwrap()).unwrap();
        assert!(resp.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
        assert!(!resp.contains("Sec-WebSocket-Extensions"));
        assert!(!resp.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn firefox_connection_list_and_case() {
        let req = request("Connection: Upgrade", "connection: keep-alive, UPGRADE")
            .replace("Upgrade: websocket", "upgrade: WebSocket");
        assert!(check(&req).is_ok());
    }

    #[test]
    fn refusals() {
        let cases = [
            (request("GET", "POST"), HandshakeError::Method),
            (
                request("HTTP/1.1\r\nHost: a", "HTTP/1.0\r\nHost: a"),
                HandshakeError::Version,
            ),
            (
                request("Upgrade: websocket", "Upgrade: h2c"),
                HandshakeError::Upgrade,
            ),
            (
                request("Connection: Upgrade", "Connection: keep-alive"),
                HandshakeError::Connection,
            ),
            (
                request("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
                HandshakeError::Key,
            ),
            (
                request("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!=="),
                HandshakeError::Key,
            ),
            (
                request("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
                HandshakeError::Key,
            ),
            (
                request("Version: 13", "Version: 8"),
                HandshakeError::WsVersion,
            ),
            (
                request("Sec-WebSocket-Version: 13\r\n", ""),
                HandshakeError::WsVersion,
            ),
            (
                request("Host: a\r\n", "Host: a\r\nContent-Length: 3\r\n"),
                HandshakeError::Body,
            ),
        ];
        for (req, want) in cases {
            assert_eq!(check(&req), Err(want), "{req}");
        }
        let resp =
            String::from_utf8(HandshakeError::WsVersion.response(&http::HttpDate::from_unix(0)))
                .unwrap();
        assert!(resp.starts_with("HTTP/1.1 426 "));
        assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
        let resp =
            String::from_utf8(HandshakeError::Key.response(&http::HttpDate::from_unix(0))).unwrap();
        assert!(resp.starts_with("HTTP/1.1 400 "));
    }
}
