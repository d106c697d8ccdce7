//! WebSocket frame headers, masking and server-side framing (RFC 6455 §5), sans-IO.
//!
//! [`parse_header`] reads one client frame header and enforces every per-frame rule that can be
//! checked from the header alone: reserved bits, reserved opcodes, control-frame length and
//! fragmentation, masking, minimal and 63-bit lengths. It consumes nothing on `Partial` and must
//! never panic. [`encode_header`] writes the (unmasked) server frame header; messages published
//! to many subscribers are framed once with [`frame`] and the same bytes go to all of them.

use bytes::Bytes;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest header a server writes: 2 bytes + 8-byte extended length (no mask).
pub const MAX_SERVER_HEADER: usize = 10;
/// Largest header a client sends: 2 + 8 + 4-byte mask.
pub const MAX_CLIENT_HEADER: usize = 14;
/// Control frames carry at most 125 payload bytes (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Close codes this server sends (§7.4.1).
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// The endpoint got a kind of data it does not accept (a subscriber's binary message).
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    /// Sent to a slow consumer whose queue passed `--max-queued-bytes`.
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    /// A limit of the server was reached; the client may retry later.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// One decoded client frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// RSV1: with permessage-deflate, the first frame of a compressed message (the reader
    /// decides whether it is allowed here).
    pub rsv1: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    pub len: u64,
}

impl FrameHeader {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// A frame-level protocol violation; the connection is failed with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    ReservedBits,
    ReservedOpcode,
    FragmentedControl,
    ControlTooLong,
    Unmasked,
    LengthHighBit,
    NonMinimalLength,
}

impl FrameError {
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::ReservedBits => "reserved bits set",
            FrameError::ReservedOpcode => "reserved opcode",
            FrameError::FragmentedControl => "fragmented control frame",
            FrameError::ControlTooLong => "control frame payload over 125 bytes",
            FrameError::Unmasked => "client frame not masked",
            FrameError::LengthHighBit => "64-bit length with the high bit set",
            FrameError::NonMinimalLength => "length not minimally encoded",
        }
    }
}

/// Result of [`parse_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderParse {
    /// The header and its length in bytes.
    Complete(FrameHeader, usize),
    Partial,
    Error(FrameError),
}

/// Parses a client (masked) frame header at the start of `buf`.
pub fn parse_header(buf: &[u8]) -> HeaderParse {
    let [b0, b1, ..] = *buf else {
        return HeaderParse::Partial;
    };
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    // RSV2 and RSV3 belong to no extension this server speaks.
    if b0 & 0x30 != 0 {
        return HeaderParse::Error(FrameError::ReservedBits);
    }
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG => {}
        _ => return HeaderParse::Error(FrameError::ReservedOpcode),
    }
    let control = opcode & 0x8 != 0;
    if control && !fin {
        return HeaderParse::Error(FrameError::FragmentedControl);
    }
    if b1 & 0x80 == 0 {
        return HeaderParse::Error(FrameError::Unmasked);
    }
    let len7 = b1 & 0x7F;
    if control && len7 > 125 {
        return HeaderParse::Error(FrameError::ControlTooLong);
    }
    let (len, at) = match len7 {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return HeaderParse::Partial;
            };
            let len = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if len < 126 {
                return HeaderParse::Error(FrameError::NonMinimalLength);
            }
            (len, 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return HeaderParse::Partial;
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let len = u64::from_be_bytes(a);
            if len >> 63 != 0 {
                return HeaderParse::Error(FrameError::LengthHighBit);
            }
            if len <= 0xFFFF {
                return HeaderParse::Error(FrameError::NonMinimalLength);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    let Some(m) = buf.get(at..at + 4) else {
        return HeaderParse::Partial;
    };
    let mask = [m[0], m[1], m[2], m[3]];
    HeaderParse::Complete(
        FrameHeader {
            fin,
            rsv1: b0 & 0x40 != 0,
            opcode,
            mask,
            len,
        },
        at + 4,
    )
}

/// XORs `data` with `mask`, where `data[0]` is byte number `offset` of the payload.
/// Returns the offset for the byte after `data`.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) -> usize {
    let rot = offset & 3;
    let key = [
        mask[rot],
        mask[(rot + 1) & 3],
        mask[(rot + 2) & 3],
        mask[(rot + 3) & 3],
    ];
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(a) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
    offset.wrapping_add(data.len())
}

/// Writes a server (unmasked, FIN) frame header into `out`; returns its length.
pub fn encode_header(opcode: u8, len: usize, out: &mut [u8; MAX_SERVER_HEADER]) -> usize {
    out[0] = 0x80 | (opcode & 0x0F);
    if len < 126 {
        out[1] = len as u8;
        2
    } else if len <= 0xFFFF {
        out[1] = 126;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// One complete server frame (`opcode`, FIN set) around `payload`, in one shared buffer.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut hdr = [0u8; MAX_SERVER_HEADER];
    let n = encode_header(opcode, payload.len(), &mut hdr);
    let mut v = Vec::with_capacity(n + payload.len());
    v.extend_from_slice(&hdr[..n]);
    v.extend_from_slice(payload);
    Bytes::from(v)
}

/// A close frame with `code` and a reason (truncated to fit the 125-byte control limit on a
/// character boundary).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
    payload[..2].copy_from_slice(&code.to_be_bytes());
    payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
    frame(OP_CLOSE, &payload[..2 + end])
}

/// Whether a close code received from a peer is allowed on the wire (§7.4.1, §7.4.2).
pub fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A masked client frame, as a client would send it (tests, benches and fuzz seeds use it).
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let len = payload.len();
    if len < 126 {
        v.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        v.push(0x80 | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(len as u64).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    let mut p = payload.to_vec();
    apply_mask(&mut p, mask, 0);
    v.extend_from_slice(&p);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prefix_of_a_header_is_partial() {
        for len in [0usize, 5, 125, 126, 1000, 65535, 65536, 1 << 20] {
            let f = client_frame(true, OP_BINARY, &vec![7u8; len], [1, 2, 3, 4]);
            let hlen = f.len() - len;
            for n in 0..hlen {
                assert_eq!(
                    parse_header(&f[..n]),
                    HeaderParse::Partial,
                    "len {len} n {n}"
                );
            }
            match parse_header(&f) {
                HeaderParse::Complete(h, n) => {
                    assert_eq!(
                        (h.len, n, h.opcode, h.fin),
                        (len as u64, hlen, OP_BINARY, true)
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn header_errors() {
        let e = |b: &[u8]| match parse_header(b) {
            HeaderParse::Error(e) => e,
            other => panic!("{b:?} gave {other:?}"),
        };
        assert_eq!(e(&[0x81 | 0x20, 0x80]), FrameError::ReservedBits);
        assert_eq!(e(&[0x81 | 0x10, 0x80]), FrameError::ReservedBits);
        // RSV1 is permessage-deflate's: reported, and judged by the reader.
        assert!(matches!(
            parse_header(&[0xC1, 0x80, 1, 2, 3, 4]),
            HeaderParse::Complete(FrameHeader { rsv1: true, .. }, 6)
        ));
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(e(&[0x80 | op, 0x80]), FrameError::ReservedOpcode);
        }
        assert_eq!(e(&[OP_PING, 0x80]), FrameError::FragmentedControl);
        assert_eq!(e(&[0x80 | OP_PING, 0x80 | 126]), FrameError::ControlTooLong);
        assert_eq!(e(&[0x81, 0x05]), FrameError::Unmasked);
        assert_eq!(e(&[0x81, 0x80 | 126, 0, 124]), FrameError::NonMinimalLength);
        assert_eq!(
            e(&[0x81, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF]),
            FrameError::NonMinimalLength
        );
        assert_eq!(
            e(&[0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            FrameError::LengthHighBit
        );
    }

    #[test]
    fn mask_matches_bytewise_oracle_at_every_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..100u8).collect();
        for start in 0..8 {
            for len in 0..(data.len() - start) {
                let mut fast = data[start..start + len].to_vec();
                let next = apply_mask(&mut fast, mask, start);
                let slow: Vec<u8> = data[start..start + len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(start + i) % 4])
                    .collect();
                assert_eq!(fast, slow, "start {start} len {len}");
                assert_eq!(next, start + len);
            }
        }
    }

    #[test]
    fn encode_lengths() {
        for (len, hlen) in [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let f = frame(OP_TEXT, &vec![b'x'; len]);
            assert_eq!(f.len(), len + hlen);
            assert_eq!(f[0], 0x81);
            assert_eq!(f[1] & 0x80, 0, "server frames are never masked");
        }
    }

    #[test]
    fn close_frame_truncates_reason_on_char_boundary() {
        let f = close_frame(1001, &"é".repeat(100));
        assert!(f.len() <= 2 + 125);
        assert_eq!(&f[2..4], &1001u16.to_be_bytes());
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }

    #[test]
    fn close_codes() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(valid_close_code(ok), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!valid_close_code(bad), "{bad}");
        }
    }
}
