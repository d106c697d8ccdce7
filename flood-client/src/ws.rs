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

/// (FIN, opcode, payload offset, payload length) of a server frame at the start of `b`; `None`
/// while the header is incomplete (or its 64-bit length does not fit a `usize`).
pub fn frame_header(b: &[u8]) -> Option<(bool, u8, usize, usize)> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (fin, op) = (b0 & 0x80 != 0, b0 & 0x0F);
    match b1 & 0x7F {
        126 => Some((
            fin,
            op,
            4,
            usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])),
        )),
        127 => {
            let mut a = [0u8; 8];
            a.copy_from_slice(b.get(2..10)?);
            Some((fin, op, 10, usize::try_from(u64::from_be_bytes(a)).ok()?))
        }
        n => Some((fin, op, 2, usize::from(n))),
    }
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
