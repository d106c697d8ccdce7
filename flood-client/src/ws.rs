//! The client side of WebSocket (RFC 6455) as flood and the benchmark tools speak it, sans-IO:
//! the upgrade request, server frame headers read, masked client frames written. The frame
//! encoding and masking are the server's own ([`edgecomet::proto::ws::frame`]); what is here is
//! what a server never does (read an unmasked header, mask a frame).

use edgecomet::proto::ws::frame::{MAX_SERVER_HEADER, apply_mask, encode_header};
pub use edgecomet::proto::ws::frame::{OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT};

/// The `Sec-WebSocket-Key` every flood connection sends (RFC 6455's sample nonce): a load
/// generator need not prove freshness, and the server checks only its form.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The mask of every client frame. Fixed: the server must unmask whatever it is, and a load
/// generator need not hide from proxies.
pub const MASK: [u8; 4] = [0x5A, 0xA5, 0x3C, 0xC3];

/// `GET {path}` with a WebSocket upgrade to `host`: the whole request head.
pub fn upgrade_request(path: &str, host: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A server frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// The RSV1–3 bits as they are in the first byte (`0x70` all set; [`RSV1`]: compressed,
    /// with permessage-deflate).
    pub rsv: u8,
    pub op: u8,
    /// Where the payload starts (the header's length), and its length.
    pub at: usize,
    pub len: usize,
}

/// RSV1 in a frame's first byte: with permessage-deflate, set on the first frame of a
/// compressed message (RFC 7692 §6).
pub const RSV1: u8 = 0x40;

/// The header of a server frame at the start of `b`; `None` while it is incomplete (or its
/// 64-bit length does not fit a `usize`).
pub fn header(b: &[u8]) -> Option<Header> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (at, len) = match b1 & 0x7F {
        126 => (4, usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]))),
        127 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b.get(2..10)?);
            (10, usize::try_from(u64::from_be_bytes(a)).ok()?)
        }
        n => (2, usize::from(n)),
    };
    Some(Header {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70,
        op: b0 & 0x0F,
        at,
        len,
    })
}

/// (FIN, opcode, payload offset, payload length) of a server frame at the start of `b`; `None`
/// while the header is incomplete (or its 64-bit length does not fit a `usize`).
pub fn frame_header(b: &[u8]) -> Option<(bool, u8, usize, usize)> {
    header(b).map(|h| (h.fin, h.op, h.at, h.len))
}

/// Where a fragmented message that starts `b` (its first frame: text or binary, FIN clear)
/// ends: after its final continuation frame, or after a close frame that comes first (the
/// message will not be finished). Control frames may come between the fragments (RFC 6455
/// §5.4). `Ok(None)` while it is incomplete (nothing consumed: the caller keeps the bytes and
/// asks again with more). Errors: a new message or a reserved opcode before the final fragment,
/// RSV bits on a continuation or control frame (permessage-deflate sets RSV1 on the first only),
/// more than `max` bytes in all (headers and control frames included, so that pings between
/// fragments cannot grow what waits without bound).
pub fn message_end(b: &[u8], max: usize) -> Result<Option<usize>, &'static str> {
    let mut pos = 0;
    let mut first = true;
    while let Some(h) = header(&b[pos..]) {
        if pos.saturating_add(h.at).saturating_add(h.len) > max {
            return Err("fragmented message over the size limit");
        }
        if !first && h.rsv != 0 {
            return Err("RSV bits on a continuation or control frame");
        }
        let ok = match h.op {
            _ if first => true,
            0x0 | 0x8..=0xA => true,
            _ => false,
        };
        if !ok {
            return Err("a new message before the last fragment of one");
        }
        if b.len() - pos < h.at + h.len {
            return Ok(None);
        }
        pos += h.at + h.len;
        if (h.op == 0x0 && h.fin) || h.op == 0x8 {
            return Ok(Some(pos));
        }
        first = false;
    }
    Ok(None)
}

/// Bytes of an unmasked server frame carrying `payload_len` bytes (header and payload).
pub fn server_frame_len(payload_len: usize) -> usize {
    let mut hdr = [0u8; MAX_SERVER_HEADER];
    encode_header(OP_TEXT, payload_len, &mut hdr) + payload_len
}

/// A masked client frame of any length (FIN set, [`MASK`]) appended to `out`.
pub fn client_frame_into(out: &mut Vec<u8>, op: u8, payload: &[u8]) {
    let mut hdr = [0u8; MAX_SERVER_HEADER];
    let n = encode_header(op, payload.len(), &mut hdr);
    // A client header is the server's with the mask bit set, followed by the mask.
    hdr[1] |= 0x80;
    out.extend_from_slice(&hdr[..n]);
    out.extend_from_slice(&MASK);
    let at = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[at..], MASK, 0);
}

/// A masked client frame with `payload` cut to the 125 bytes a control frame may carry.
pub fn client_frame(op: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut v = Vec::with_capacity(6 + payload.len());
    client_frame_into(&mut v, op, payload);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_headers() {
        assert_eq!(frame_header(&[0x81, 5]), Some((true, 1, 2, 5)));
        assert_eq!(frame_header(&[0x01, 126, 1, 0]), Some((false, 1, 4, 256)));
        assert_eq!(frame_header(&[0x81]), None);
        assert_eq!(frame_header(&[0x81, 127, 0, 0]), None);
    }

    #[test]
    fn headers_carry_the_rsv_bits() {
        let h = header(&[0xC1, 3]).unwrap();
        assert_eq!((h.fin, h.rsv, h.op, h.at, h.len), (true, RSV1, 1, 2, 3));
        assert_eq!(header(&[0x71, 0]).unwrap().rsv, 0x70);
        assert_eq!(header(&[0x41, 126, 0]), None);
    }

    #[test]
    fn fragmented_messages_end_after_their_final_fragment() {
        // Text "ab" + "c" with a ping between: 4 + 2 + 3 bytes.
        let m = [0x41, 2, b'a', b'b', 0x89, 0, 0x80, 1, b'c', 0x81, 0];
        for n in 0..9 {
            assert_eq!(message_end(&m[..n], 100), Ok(None), "prefix {n}");
        }
        assert_eq!(message_end(&m, 100), Ok(Some(9)));
        assert_eq!(message_end(&m, 9), Ok(Some(9)));
        assert!(message_end(&m, 8).is_err());
        // A close before the final fragment ends it too.
        assert_eq!(message_end(&[0x01, 1, b'a', 0x88, 0], 100), Ok(Some(5)));
        // A new message before the final fragment; RSV1 on a continuation.
        assert!(message_end(&[0x01, 1, b'a', 0x81, 0], 100).is_err());
        assert!(message_end(&[0x41, 1, b'a', 0xC0, 0], 100).is_err());
        assert!(message_end(&[0x01, 1, b'a', 0xC9, 0], 100).is_err());
    }

    #[test]
    fn client_frames_unmask_to_the_payload() {
        for n in [0, 5, 125, 126, 300, 0xFFFF, 0x10000] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let mut f = Vec::new();
            client_frame_into(&mut f, 0x1, &payload);
            // The header as a server reads it: FIN, text, the mask bit, then the key.
            let (fin, op, at, len) = frame_header(&f).unwrap();
            assert_eq!((fin, op, len), (true, 1, n), "length {n}");
            assert_eq!(f[1] & 0x80, 0x80);
            let key = [f[at], f[at + 1], f[at + 2], f[at + 3]];
            let body: Vec<u8> = f[at + 4..]
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ key[i % 4])
                .collect();
            assert_eq!(body, payload, "length {n}");
        }
        assert_eq!(client_frame(0xA, b"hi")[..2], [0x8A, 0x82]);
    }

    #[test]
    fn server_frame_lengths() {
        assert_eq!(server_frame_len(0), 2);
        assert_eq!(server_frame_len(125), 127);
        assert_eq!(server_frame_len(126), 130);
        assert_eq!(server_frame_len(0xFFFF), 0xFFFF + 4);
        assert_eq!(server_frame_len(0x10000), 0x10000 + 10);
    }
}
