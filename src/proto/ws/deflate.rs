//! permessage-deflate (RFC 7692), sans-IO: the negotiation of an offer, the compression of one
//! server message into a frame, and the bounded inflation of one client message.
//!
//! The server always answers `server_no_context_takeover` and `client_no_context_takeover`, so
//! every message on the wire stands alone in both directions: a published message is compressed
//! once and the same frame goes to every subscriber that negotiated the extension, and a client
//! message is inflated by the worker's one inflater, reset for each message. A connection keeps
//! no compression state at all, only what was agreed ([`Agreed`], 4 bits of its flags).
//!
//! The compressor and the inflater are one per thread (the worker's), made on first use: a
//! worker that never meets the extension pays nothing for it.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::proto::ws::frame::{self, MAX_SERVER_HEADER, close_code};

/// The extension's registered name.
pub const NAME: &[u8] = b"permessage-deflate";

/// The zlib level a message is compressed at (zlib's default: a message is compressed once for
/// all its subscribers, so the better ratio is worth the time).
pub const LEVEL: u32 = 6;

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreed {
    /// The client's `server_max_window_bits` (8–15; 15 when it asked for none): this server
    /// compresses with a 32 KiB window, so a message is sent compressed to this client only if
    /// it is at most `1 << bits` bytes long (its back-references cannot reach further than its
    /// own length); longer ones go uncompressed, which the extension allows for any message.
    pub server_max_window_bits: u8,
}

impl Agreed {
    /// Without a `server_max_window_bits` in the offer.
    pub const DEFAULT: Agreed = Agreed {
        server_max_window_bits: 15,
    };

    /// The `Sec-WebSocket-Extensions` response line, CRLF included.
    pub fn response_header(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
              client_no_context_takeover",
        );
        if self.server_max_window_bits < 15 {
            out.extend_from_slice(b"; server_max_window_bits=");
            if self.server_max_window_bits >= 10 {
                out.push(b'1');
            }
            out.push(b'0' + self.server_max_window_bits % 10);
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Whether a payload of `len` bytes may go compressed to this client.
    pub fn fits_window(&self, len: usize) -> bool {
        self.server_max_window_bits >= 15 || len <= 1usize << self.server_max_window_bits
    }
}

/// The first `permessage-deflate` offer this server can accept among the
/// `Sec-WebSocket-Extensions` values of a request, in order (RFC 6455 §9.1, RFC 7692 §7.1).
///
/// An offer with an unknown, repeated or malformed parameter is declined and the next one
/// considered; a value that does not parse as an extension list is ignored whole. Other
/// extensions are never accepted. Nothing here fails the handshake.
pub fn negotiate<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Option<Agreed> {
    for value in values {
        let Some(offers) = parse_list(value) else {
            continue;
        };
        if let Some(a) = offers.into_iter().flatten().next() {
            return Some(a);
        }
    }
    None
}

/// Each element of one header value: `Some` for an acceptable `permessage-deflate` offer, `None`
/// for anything else. `None` overall when the value is not an extension list.
fn parse_list(value: &[u8]) -> Option<Vec<Option<Agreed>>> {
    let mut p = Cursor { s: value, i: 0 };
    let mut out = Vec::new();
    loop {
        p.ows();
        if p.at_end() {
            // An empty element is allowed in a list (RFC 9110 §5.6.1), but not an empty list.
            return if out.is_empty() { None } else { Some(out) };
        }
        if p.eat(b',') {
            continue;
        }
        let name = p.token()?;
        let mut offer = Offer::default();
        let mut ok = name.eq_ignore_ascii_case(NAME);
        loop {
            p.ows();
            if !p.eat(b';') {
                break;
            }
            p.ows();
            let param = p.token()?;
            p.ows();
            let val = if p.eat(b'=') {
                p.ows();
                Some(p.value()?)
            } else {
                None
            };
            ok = ok && offer.param(param, val.as_deref());
        }
        p.ows();
        if !p.at_end() && !p.eat(b',') {
            return None;
        }
        out.push(if ok { Some(offer.agreed()) } else { None });
        if out.len() > 64 {
            // More offers than any client makes: the value is not a real offer list.
            return None;
        }
    }
}

/// The parameters of one offer seen so far.
#[derive(Default)]
struct Offer {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    client_max_window_bits: bool,
}

impl Offer {
    /// Takes one parameter; false when it makes the offer one to decline.
    fn param(&mut self, name: &[u8], val: Option<&[u8]>) -> bool {
        fn once(seen: &mut bool) -> bool {
            !std::mem::replace(seen, true)
        }
        let lower = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
        if lower("server_no_context_takeover") {
            val.is_none() && once(&mut self.server_no_context_takeover)
        } else if lower("client_no_context_takeover") {
            val.is_none() && once(&mut self.client_no_context_takeover)
        } else if lower("server_max_window_bits") {
            match val.and_then(window_bits) {
                Some(b) if self.server_max_window_bits.is_none() => {
                    self.server_max_window_bits = Some(b);
                    true
                }
                _ => false,
            }
        } else if lower("client_max_window_bits") {
            // No value ("I can take any") or 8–15 (the client's own limit, which the inflater
            // with its 32 KiB window reads whatever it is; the answer does not restate it).
            (val.is_none() || val.and_then(window_bits).is_some())
                && once(&mut self.client_max_window_bits)
        } else {
            false
        }
    }

    fn agreed(&self) -> Agreed {
        Agreed {
            server_max_window_bits: self.server_max_window_bits.unwrap_or(15),
        }
    }
}

/// A window size: a decimal 8–15 without leading zeros (RFC 7692 §7.1.2).
fn window_bits(v: &[u8]) -> Option<u8> {
    match v {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// A position in one header value.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn at_end(&self) -> bool {
        self.i >= self.s.len()
    }

    fn ows(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A token (RFC 9110 §5.6.2); `None` if there is none here.
    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|&c| is_tchar(c)) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// A parameter value: a token, or a quoted string, unescaped.
    fn value(&mut self) -> Option<Vec<u8>> {
        if !self.eat(b'"') {
            return self.token().map(<[u8]>::to_vec);
        }
        let mut v = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    v.push(*self.s.get(self.i)?);
                    self.i += 1;
                }
                c => v.push(c),
            }
        }
        // Its content must be a token (RFC 6455 §9.1); the parameter's own check refuses any
        // other, declining the offer rather than the whole list.
        Some(v)
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

// ---- Compression ------------------------------------------------------------------------------

thread_local! {
    /// This thread's compressor (a worker's), made on first use.
    static COMPRESSOR: RefCell<Option<Compress>> = const { RefCell::new(None) };
    /// This thread's inflater, made on first use.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// The tail every compressed message drops and the receiver puts back (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The RSV1 bit of a frame's first byte: the message is compressed.
pub const RSV1: u8 = 0x40;

/// One compressed server frame (FIN, RSV1, `opcode`) for `payload`, or `None` when compressing
/// does not make it smaller (the caller sends the plain frame: RSV1 clear).
pub fn compress_frame(opcode: u8, payload: &[u8]) -> Option<Bytes> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let c = c.get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
        c.reset();
        // Room for the header in front and the data: no copy once compressed. A payload that
        // does not shrink stops the compression early (the output may not exceed the input).
        let mut out = Vec::with_capacity(MAX_SERVER_HEADER + payload.len() + TAIL.len());
        out.resize(MAX_SERVER_HEADER, 0);
        let (in0, out0) = (c.total_in(), c.total_out());
        loop {
            let consumed = (c.total_in() - in0) as usize;
            let made = out.len();
            if c.compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .is_err()
            {
                return None;
            }
            let done = (c.total_in() - in0) as usize == payload.len();
            if done && out.len() < out.capacity() {
                break;
            }
            let stuck = out.len() == made && (c.total_in() - in0) as usize == consumed;
            if out.len() == out.capacity() || stuck {
                // No smaller than the payload, or the flush needs more room: either way the
                // plain frame is as good.
                return None;
            }
        }
        let body = (c.total_out() - out0) as usize;
        if body < TAIL.len() || out[out.len() - TAIL.len()..] != TAIL {
            return None;
        }
        let body = body - TAIL.len();
        if body >= payload.len() {
            return None;
        }
        out.truncate(MAX_SERVER_HEADER + body);
        let mut hdr = [0u8; MAX_SERVER_HEADER];
        let n = frame::encode_header(opcode, body, &mut hdr);
        hdr[0] |= RSV1;
        let start = MAX_SERVER_HEADER - n;
        out[start..MAX_SERVER_HEADER].copy_from_slice(&hdr[..n]);
        Some(Bytes::from(out).slice(start..))
    })
}

/// The compressed form of `frames`, one or more whole server frames back to back (a message's
/// encoding: a gap report may come first; a Socket.IO event with attachments is several): each
/// final text or binary frame whose payload is at least `min` bytes and shrinks is replaced by
/// its compressed frame, the rest stay as they are. `frames` itself (shared, not copied) when
/// nothing changed. Made once per message, for every subscriber that agreed.
pub fn compress_frames(frames: &Bytes, min: usize) -> Bytes {
    if frames.len() < min.max(2) {
        return frames.clone();
    }
    let mut out: Option<Vec<u8>> = None;
    let mut at = 0;
    while at < frames.len() {
        let Some((hlen, plen)) = server_frame_len(&frames[at..]) else {
            // Not frames this server made: leave them alone.
            return frames.clone();
        };
        let (b0, payload) = (frames[at], &frames[at + hlen..at + hlen + plen]);
        let op = b0 & 0x0F;
        let data = b0 & 0xF0 == 0x80 && (op == frame::OP_TEXT || op == frame::OP_BINARY);
        let z = match data && plen >= min {
            true => compress_frame(op, payload),
            false => None,
        };
        match (z, &mut out) {
            (Some(z), o) => o
                .get_or_insert_with(|| frames[..at].to_vec())
                .extend_from_slice(&z),
            (None, Some(o)) => o.extend_from_slice(&frames[at..at + hlen + plen]),
            (None, None) => {}
        }
        at += hlen + plen;
    }
    out.map_or_else(|| frames.clone(), Bytes::from)
}

/// Header and payload length of the server frame at the start of `f`, if it is whole.
fn server_frame_len(f: &[u8]) -> Option<(usize, usize)> {
    let len7 = *f.get(1)? & 0x7F;
    let (hlen, plen) = match len7 {
        126 => (4, usize::from(u16::from_be_bytes([*f.get(2)?, *f.get(3)?]))),
        127 => {
            let b: [u8; 8] = f.get(2..10)?.try_into().ok()?;
            (10, usize::try_from(u64::from_be_bytes(b)).ok()?)
        }
        n => (2, usize::from(n)),
    };
    (f.len() - hlen >= plen).then_some((hlen, plen))
}

/// One part of a message assembled per client from shared parts (a Bayeux reply: `[`, the
/// deliveries of several messages, `,`, a client's own connect reply, `]`).
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// A part compressed on its own by [`compress_piece`] (shared by every client that gets it).
    Compressed(&'a [u8]),
    /// A part sent as it is, in stored blocks (a separator, a client's own small reply).
    Raw(&'a [u8]),
}

/// `part` compressed on its own, sync-flushed with its `00 00 ff ff` kept: it refers back to
/// nothing before it and ends on a byte boundary, so such pieces concatenate (with stored
/// blocks between them) into one message's DEFLATE data. `None` when it does not shrink.
pub fn compress_piece(part: &[u8]) -> Option<Bytes> {
    let f = compress_frame(frame::OP_TEXT, part)?;
    let (hlen, plen) = server_frame_len(&f)?;
    let mut v = Vec::with_capacity(plen + TAIL.len());
    v.extend_from_slice(&f[hlen..hlen + plen]);
    v.extend_from_slice(&TAIL);
    Some(Bytes::from(v))
}

/// One compressed frame (FIN, RSV1, `opcode`) whose payload is `pieces` in order: compressed
/// pieces as they are, raw ones as stored blocks. What the client inflates is the pieces'
/// plain bytes one after the other; a piece shared by many clients is compressed once.
pub fn frame_from_pieces<'a>(opcode: u8, pieces: impl IntoIterator<Item = Piece<'a>>) -> Bytes {
    let mut body: Vec<u8> = Vec::new();
    let mut ends_compressed = false;
    for p in pieces {
        match p {
            Piece::Compressed(z) => {
                body.extend_from_slice(z);
                ends_compressed = true;
            }
            Piece::Raw(raw) => {
                for chunk in raw.chunks(0xFFFF) {
                    // A stored block, not final: 3 header bits 000 and the padding (we are on a
                    // byte boundary), LEN and NLEN little-endian, the bytes.
                    let len = chunk.len() as u16;
                    body.push(0x00);
                    body.extend_from_slice(&len.to_le_bytes());
                    body.extend_from_slice(&(!len).to_le_bytes());
                    body.extend_from_slice(chunk);
                    ends_compressed = false;
                }
            }
        }
    }
    if ends_compressed {
        // The last piece's empty stored block loses its LEN/NLEN, as every message's does.
        body.truncate(body.len() - TAIL.len());
    } else {
        // The header of the empty stored block whose LEN/NLEN the receiver puts back.
        body.push(0x00);
    }
    let mut hdr = [0u8; MAX_SERVER_HEADER];
    let n = frame::encode_header(opcode, body.len(), &mut hdr);
    hdr[0] |= RSV1;
    let mut out = Vec::with_capacity(n + body.len());
    out.extend_from_slice(&hdr[..n]);
    out.extend_from_slice(&body);
    Bytes::from(out)
}

/// How many of the frames in `chunks` (each one or more whole server frames) are compressed.
pub fn count_compressed(chunks: &[Bytes]) -> usize {
    let mut n = 0;
    for c in chunks {
        let mut at = 0;
        while let Some((hlen, plen)) = server_frame_len(&c[at..]) {
            n += usize::from(c[at] & RSV1 != 0);
            at += hlen + plen;
        }
    }
    n
}

/// The longest payload among the server frames in `frames` (what a client's window must hold).
pub fn largest_payload(frames: &[u8]) -> usize {
    let (mut at, mut most) = (0, 0);
    while let Some((hlen, plen)) = server_frame_len(&frames[at..]) {
        most = most.max(plen);
        at += hlen + plen;
    }
    most
}

/// Whether the compressed form of `frames` may go to a client that agreed `agreed`: every
/// payload in it fits the window the client asked for.
pub fn may_compress(agreed: Agreed, frames: &[u8]) -> bool {
    agreed.server_max_window_bits >= 15 || agreed.fits_window(largest_payload(frames))
}

/// The frames for one subscriber: the compressed form (made on first need) when it agreed to
/// the extension and every payload of `plain` fits the window it asked for, else the plain
/// frames.
pub fn choose<'a>(
    agreed: Option<Agreed>,
    plain: &'a Bytes,
    compressed: impl FnOnce() -> &'a Bytes,
) -> &'a Bytes {
    match agreed {
        Some(a) if may_compress(a, plain) => compressed(),
        _ => plain,
    }
}

// ---- Inflation --------------------------------------------------------------------------------

/// Why a compressed client message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates to more than the message limit (a decompression bomb): close 1009.
    TooBig,
    /// Not valid DEFLATE data, truncated, or with bytes after its final block: close 1007.
    Corrupt,
}

impl InflateError {
    pub fn close_code(self) -> u16 {
        match self {
            InflateError::TooBig => close_code::TOO_BIG,
            InflateError::Corrupt => close_code::INVALID_DATA,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            InflateError::TooBig => "message too big once inflated",
            InflateError::Corrupt => "invalid compressed data",
        }
    }
}

/// How much output is made room for at a time (never past the limit plus one byte).
const INFLATE_STEP: usize = 64 * 1024;

/// Inflates one client message (its payload, all fragments, as received) into `out`, producing
/// at most `max` bytes: the output is checked as it is produced, so a bomb stops after `max + 1`
/// bytes. The message must end on a block boundary (the sender's flush, whose 4-byte tail it
/// dropped) or with a final block; bytes after a final block are refused.
pub fn inflate(input: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    // After the tail the sender dropped, an empty final block (fixed Huffman, end of block
    // only): a message that ended on a block boundary now ends the stream, and one cut inside
    // a block does not.
    const END: [u8; 6] = [0x00, 0x00, 0xff, 0xff, 0x03, 0x00];
    INFLATER.with(|d| {
        let mut d = d.borrow_mut();
        let d = d.get_or_insert_with(|| Decompress::new(false));
        d.reset(false);
        let start = out.len();
        for (k, part) in [input, &END[..]].into_iter().enumerate() {
            let mut pos = 0;
            loop {
                let produced = out.len() - start;
                if produced > max {
                    return Err(InflateError::TooBig);
                }
                let room = INFLATE_STEP.min(max + 1 - produced);
                let len = out.len();
                out.resize(len + room, 0);
                let (in0, out0) = (d.total_in(), d.total_out());
                let st = d.decompress(&part[pos..], &mut out[len..], FlushDecompress::None);
                let (took, made) = (
                    (d.total_in() - in0) as usize,
                    (d.total_out() - out0) as usize,
                );
                out.truncate(len + made);
                pos += took;
                // The appended blocks make nothing: bytes from them, or a stream that ends
                // inside them, mean the message was cut inside a block (a final one: zero bits
                // read as a fixed-Huffman end of block).
                if k == 1 && made > 0 {
                    return Err(InflateError::Corrupt);
                }
                match st {
                    Err(_) => return Err(InflateError::Corrupt),
                    Ok(Status::StreamEnd) => {
                        if out.len() - start > max {
                            return Err(InflateError::TooBig);
                        }
                        // A final block inside the message: nothing of it may follow.
                        return if pos < part.len() {
                            Err(InflateError::Corrupt)
                        } else {
                            Ok(())
                        };
                    }
                    Ok(_) => {
                        if pos == part.len() && made < room {
                            break;
                        }
                        if took == 0 && made == 0 {
                            return Err(InflateError::Corrupt);
                        }
                    }
                }
            }
        }
        // Everything read and no final block: cut inside a block.
        Err(InflateError::Corrupt)
    })
}

#[cfg(test)]
mod tests;
