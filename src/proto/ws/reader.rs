//! The receiving half of a server-side WebSocket connection, sans-IO (RFC 6455 §5–§8).
//!
//! [`WsReader::feed`] takes the bytes that arrived, unmasks data payloads in place and reports
//! [`Event`]s through a callback as soon as each piece is known: a data chunk is passed on the
//! moment it arrives, so a large frame never has to be buffered here (the caller decides whether
//! to assemble the message; subscribers just discard it). Control frames are reported only when
//! whole (at most 125 bytes, so the caller's leftover stays tiny). Every rule that fails the
//! connection returns a [`Fail`] with the close code to send: 1002 for framing and sequencing,
//! 1007 for invalid UTF-8 (fail-fast, mid-message), 1009 when a message would exceed the limit,
//! decided from the frame header before any of its payload is kept.

use crate::proto::ws::frame::{
    self, FrameHeader, HeaderParse, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG,
    OP_TEXT, close_code,
};
use crate::proto::ws::utf8::{self, Utf8Validator};

/// What arrived.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The next piece of a data message's payload, already unmasked (and validated, for text
    /// that is not compressed).
    Data {
        text: bool,
        /// permessage-deflate: the message's chunks are compressed; the caller inflates the
        /// whole message ([`deflate::inflate`](crate::proto::ws::deflate::inflate)) and
        /// validates text after.
        compressed: bool,
        chunk: &'a [u8],
    },
    /// The data message whose chunks came before is complete (possibly empty).
    End {
        text: bool,
        compressed: bool,
    },
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A valid close frame. `code` is `None` for an empty body. After this event `feed`
    /// returns at once; nothing after the close frame is processed (§5.5.1).
    Close {
        code: Option<u16>,
        reason: &'a [u8],
    },
}

/// The connection must be failed: send a close frame with `code`, then close (§7.1.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fail {
    pub code: u16,
    pub reason: &'static str,
}

impl Fail {
    fn protocol(reason: &'static str) -> Self {
        Fail {
            code: close_code::PROTOCOL_ERROR,
            reason,
        }
    }
}

/// Receive state of one connection. 20 bytes; lives inline in the connection entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct WsReader {
    /// Payload bytes of the current data frame still to come. Fits `u32` because a frame is
    /// refused (1009) unless the whole message fits `max_message`, itself a `u32`.
    remaining: u32,
    /// Bytes of the open message so far (checked against `max_message`).
    msg_len: u32,
    /// Masking key of the current frame.
    mask: [u8; 4],
    /// Payload offset modulo 4 within the current frame (for the mask rotation).
    mask_off: u8,
    /// Inside a data frame's payload.
    in_payload: bool,
    /// The current data frame has FIN set.
    frame_fin: bool,
    /// Opcode of the open message (`OP_TEXT`/`OP_BINARY`, with [`COMPRESSED`] when its first
    /// frame had RSV1), or 0 when none is open.
    msg_op: u8,
    /// UTF-8 state of the open text message.
    utf8: Utf8Validator,
}

/// `msg_op` bit: the open message is compressed (permessage-deflate).
const COMPRESSED: u8 = 0x40;

impl WsReader {
    /// Processes `buf`, calling `on` for each event. Returns how many bytes were consumed; the
    /// caller keeps `buf[consumed..]` (an incomplete header or control frame, at most
    /// 14 + 125 bytes) and passes it again, followed by new bytes, next time. `deflate`: the
    /// connection negotiated permessage-deflate, so RSV1 may mark a message's first frame
    /// (RFC 7692 §6); anywhere else, and without it, RSV1 fails the connection with 1002.
    pub fn feed(
        &mut self,
        buf: &mut [u8],
        max_message: u32,
        deflate: bool,
        mut on: impl FnMut(Event<'_>),
    ) -> Result<usize, Fail> {
        let mut pos = 0;
        loop {
            if self.in_payload {
                let avail = buf.len() - pos;
                if avail == 0 {
                    return Ok(pos);
                }
                let n = avail.min(self.remaining as usize);
                let chunk = &mut buf[pos..pos + n];
                self.mask_off =
                    (frame::apply_mask(chunk, self.mask, usize::from(self.mask_off)) & 3) as u8;
                let text = self.msg_op & 0x0F == OP_TEXT;
                let compressed = self.msg_op & COMPRESSED != 0;
                if text && !compressed && self.utf8.feed(chunk).is_err() {
                    return Err(invalid_utf8());
                }
                on(Event::Data {
                    text,
                    compressed,
                    chunk,
                });
                pos += n;
                self.remaining -= n as u32;
                if self.remaining == 0 {
                    self.in_payload = false;
                    if self.frame_fin {
                        self.finish(&mut on)?;
                    }
                }
                continue;
            }
            let (h, hlen) = match frame::parse_header(&buf[pos..]) {
                HeaderParse::Partial => return Ok(pos),
                HeaderParse::Error(e) => return Err(Fail::protocol(e.reason())),
                HeaderParse::Complete(h, n) => (h, n),
            };
            if h.is_control() {
                if h.rsv1 {
                    return Err(Fail::protocol("RSV1 set on a control frame"));
                }
                // Control payloads are at most 125 bytes (checked by parse_header).
                let total = hlen + h.len as usize;
                if buf.len() - pos < total {
                    return Ok(pos);
                }
                let payload = &mut buf[pos + hlen..pos + total];
                frame::apply_mask(payload, h.mask, 0);
                pos += total;
                match h.opcode {
                    OP_PING => on(Event::Ping(payload)),
                    OP_PONG => on(Event::Pong(payload)),
                    OP_CLOSE => {
                        let (code, reason) = parse_close(payload)?;
                        on(Event::Close { code, reason });
                        return Ok(pos);
                    }
                    _ => unreachable!("parse_header admits only known control opcodes"),
                }
                continue;
            }
            self.start_frame(&h, max_message, deflate)?;
            pos += hlen;
            if h.len == 0 {
                if h.fin {
                    self.finish(&mut on)?;
                }
            } else {
                self.in_payload = true;
            }
        }
    }

    /// Sequencing and size checks for a data frame header (§5.4, §10.4).
    fn start_frame(
        &mut self,
        h: &FrameHeader,
        max_message: u32,
        deflate: bool,
    ) -> Result<(), Fail> {
        if h.rsv1 && !deflate {
            return Err(Fail::protocol("RSV1 set without permessage-deflate"));
        }
        if h.rsv1 && h.opcode == OP_CONTINUATION {
            return Err(Fail::protocol("RSV1 set on a continuation frame"));
        }
        match (h.opcode, self.msg_op) {
            (OP_CONTINUATION, 0) => return Err(Fail::protocol("continuation without a message")),
            (OP_CONTINUATION, _) => {}
            (OP_TEXT | OP_BINARY, 0) => {
                self.msg_op = h.opcode | if h.rsv1 { COMPRESSED } else { 0 };
                self.msg_len = 0;
                self.utf8.reset();
            }
            _ => return Err(Fail::protocol("new message inside a fragmented message")),
        }
        let total = u64::from(self.msg_len) + h.len;
        if total > u64::from(max_message) {
            return Err(Fail {
                code: close_code::TOO_BIG,
                reason: "message too big",
            });
        }
        // total <= max_message <= u32::MAX
        self.msg_len = total as u32;
        self.remaining = h.len as u32;
        self.mask = h.mask;
        self.mask_off = 0;
        self.frame_fin = h.fin;
        Ok(())
    }

    fn finish(&mut self, on: &mut impl FnMut(Event<'_>)) -> Result<(), Fail> {
        let text = self.msg_op & 0x0F == OP_TEXT;
        let compressed = self.msg_op & COMPRESSED != 0;
        if text && !compressed && !self.utf8.is_complete() {
            return Err(invalid_utf8());
        }
        self.msg_op = 0;
        self.msg_len = 0;
        on(Event::End { text, compressed });
        Ok(())
    }

    /// Whether the reader sits between frames with no message open (used by tests and by the
    /// caller to decide whether a leftover may be freed).
    pub fn is_idle(&self) -> bool {
        !self.in_payload && self.msg_op == 0
    }
}

fn invalid_utf8() -> Fail {
    Fail {
        code: close_code::INVALID_DATA,
        reason: "invalid UTF-8 in text message",
    }
}

/// Validates a close payload (§5.5.1, §7.4): empty, or a valid code plus a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<(Option<u16>, &[u8]), Fail> {
    match payload {
        [] => Ok((None, &[])),
        [_] => Err(Fail::protocol("close payload of one byte")),
        [a, b, reason @ ..] => {
            let code = u16::from_be_bytes([*a, *b]);
            if !frame::valid_close_code(code) {
                return Err(Fail::protocol("invalid close code"));
            }
            if !utf8::is_valid(reason) {
                return Err(Fail {
                    code: close_code::INVALID_DATA,
                    reason: "invalid UTF-8 in close reason",
                });
            }
            Ok((Some(code), reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ws::frame::client_frame;

    #[derive(Debug, PartialEq, Eq)]
    enum Ev {
        Msg(bool, Vec<u8>),
        /// A compressed message (its bytes as received).
        Deflated(bool, Vec<u8>),
        Ping(Vec<u8>),
        Pong(Vec<u8>),
        Close(Option<u16>, Vec<u8>),
    }

    /// Feeds `input` in pieces of `step` bytes the way the server does (leftover carried over)
    /// and collects whole messages.
    fn run(input: &[u8], step: usize, max: u32) -> (Vec<Ev>, Option<Fail>) {
        run_with(input, step, max, false)
    }

    fn run_with(input: &[u8], step: usize, max: u32, deflate: bool) -> (Vec<Ev>, Option<Fail>) {
        let mut r = WsReader::default();
        let mut evs = Vec::new();
        let mut msg = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        for piece in input.chunks(step.max(1)) {
            carry.extend_from_slice(piece);
            let mut buf = std::mem::take(&mut carry);
            let res = r.feed(&mut buf, max, deflate, |e| match e {
                Event::Data { chunk, .. } => msg.extend_from_slice(chunk),
                Event::End {
                    text,
                    compressed: false,
                } => evs.push(Ev::Msg(text, std::mem::take(&mut msg))),
                Event::End {
                    text,
                    compressed: true,
                } => evs.push(Ev::Deflated(text, std::mem::take(&mut msg))),
                Event::Ping(p) => evs.push(Ev::Ping(p.to_vec())),
                Event::Pong(p) => evs.push(Ev::Pong(p.to_vec())),
                Event::Close { code, reason } => evs.push(Ev::Close(code, reason.to_vec())),
            });
            match res {
                Ok(n) => {
                    assert!(buf.len() - n <= 14 + 125, "leftover stays small");
                    carry = buf[n..].to_vec();
                }
                Err(f) => return (evs, Some(f)),
            }
            if matches!(evs.last(), Some(Ev::Close(..))) {
                break;
            }
        }
        (evs, None)
    }

    const M: [u8; 4] = [0xA1, 0xB2, 0xC3, 0xD4];

    #[test]
    fn messages_in_every_split() {
        let mut input = client_frame(true, OP_TEXT, "héllo".as_bytes(), M);
        input.extend(client_frame(false, OP_BINARY, &[1, 2, 3], M));
        input.extend(client_frame(true, OP_PING, b"p", M));
        input.extend(client_frame(false, OP_CONTINUATION, &[], M));
        input.extend(client_frame(true, OP_CONTINUATION, &[4; 300], M));
        input.extend(client_frame(true, OP_TEXT, b"", M));
        input.extend(client_frame(true, OP_CLOSE, b"\x03\xe8bye", M));
        let mut bin = vec![1, 2, 3];
        bin.extend([4; 300]);
        let want = vec![
            Ev::Msg(true, "héllo".as_bytes().to_vec()),
            Ev::Ping(b"p".to_vec()),
            Ev::Msg(false, bin),
            Ev::Msg(true, vec![]),
            Ev::Close(Some(1000), b"bye".to_vec()),
        ];
        for step in 1..=input.len() {
            let (evs, fail) = run(&input, step, 1 << 20);
            assert_eq!(fail, None, "step {step}");
            assert_eq!(evs, want, "step {step}");
        }
    }

    fn fails(input: &[u8]) -> Fail {
        for step in [1, 3, input.len()] {
            let (_, f) = run(input, step, 1000);
            assert!(f.is_some(), "step {step}: no failure for {input:?}");
        }
        run(input, input.len(), 1000).1.unwrap()
    }

    #[test]
    fn sequencing_errors() {
        let orphan = client_frame(true, OP_CONTINUATION, b"x", M);
        assert_eq!(fails(&orphan).code, 1002);
        let mut interleaved = client_frame(false, OP_TEXT, b"a", M);
        interleaved.extend(client_frame(true, OP_TEXT, b"b", M));
        assert_eq!(fails(&interleaved).code, 1002);
    }

    #[test]
    fn size_limit_before_payload() {
        // Limit 1000: a 1001-byte frame fails on its header alone.
        let f = client_frame(true, OP_BINARY, &[0; 1001], M);
        let (_, fail) = run(&f[..8], 8, 1000);
        assert_eq!(fail.unwrap().code, 1009);
        // Fragments summing past the limit fail on the fragment that crosses it.
        let mut frags = client_frame(false, OP_BINARY, &[0; 600], M);
        frags.extend(client_frame(true, OP_CONTINUATION, &[0; 401], M));
        assert_eq!(fails(&frags).code, 1009);
        // Exactly at the limit is fine.
        let ok = client_frame(true, OP_BINARY, &[0; 1000], M);
        assert_eq!(run(&ok, 7, 1000).1, None);
    }

    #[test]
    fn utf8_fails_fast_mid_message() {
        let mut input = client_frame(false, OP_TEXT, "κό".as_bytes(), M);
        input.extend(client_frame(false, OP_CONTINUATION, b"\xED\xA0\x80", M));
        // No final fragment: the failure must come from fragment 2 alone.
        assert_eq!(fails(&input).code, 1007);
        let truncated = client_frame(true, OP_TEXT, b"ab\xE2\x82", M);
        assert_eq!(fails(&truncated).code, 1007);
    }

    #[test]
    fn close_payload_rules() {
        assert_eq!(fails(&client_frame(true, OP_CLOSE, b"\x03", M)).code, 1002);
        for bad in [0u16, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999] {
            let f = client_frame(true, OP_CLOSE, &bad.to_be_bytes(), M);
            assert_eq!(fails(&f).code, 1002, "{bad}");
        }
        let f = client_frame(true, OP_CLOSE, b"\x03\xe8\xff", M);
        assert_eq!(fails(&f).code, 1007);
        let (evs, _) = run(&client_frame(true, OP_CLOSE, b"", M), 1, 1000);
        assert_eq!(evs, vec![Ev::Close(None, vec![])]);
    }

    #[test]
    fn nothing_after_close_is_processed() {
        let mut input = client_frame(true, OP_CLOSE, b"", M);
        input.extend(client_frame(true, OP_PING, b"late", M));
        let mut r = WsReader::default();
        let mut pings = 0;
        let n = r
            .feed(&mut input, 1000, false, |e| {
                if let Event::Ping(_) = e {
                    pings += 1
                }
            })
            .unwrap();
        assert_eq!(pings, 0);
        assert_eq!(n, 6);
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random stream: must end in Ok or Fail, never panic.
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let len = (x % 64) as usize;
            let mut buf: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let mut r = WsReader::default();
            let _ = r.feed(&mut buf, 100, x & 1 == 0, |_| {});
        }
    }

    /// A client frame with RSV1 set (the first frame of a compressed message).
    fn rsv1(mut f: Vec<u8>) -> Vec<u8> {
        f[0] |= 0x40;
        f
    }

    #[test]
    fn rsv1_rules() {
        // Compressed text is not validated as UTF-8 (its bytes are DEFLATE): it is reported
        // whole, marked, over fragments.
        let mut input = rsv1(client_frame(false, OP_TEXT, b"\xf2\x48\xcd", M));
        input.extend(client_frame(false, OP_CONTINUATION, b"\xc9\xc9", M));
        input.extend(client_frame(true, OP_PING, b"", M));
        input.extend(client_frame(true, OP_CONTINUATION, b"\x07\x00", M));
        input.extend(client_frame(true, OP_TEXT, b"plain", M));
        for step in 1..=input.len() {
            let (evs, fail) = run_with(&input, step, 1000, true);
            assert_eq!(fail, None);
            assert_eq!(
                evs,
                vec![
                    Ev::Ping(vec![]),
                    Ev::Deflated(true, b"\xf2\x48\xcd\xc9\xc9\x07\x00".to_vec()),
                    Ev::Msg(true, b"plain".to_vec()),
                ]
            );
        }
        // Without the extension; on a continuation; on a control frame: 1002.
        let z = rsv1(client_frame(true, OP_BINARY, b"x", M));
        assert_eq!(run_with(&z, 1, 1000, false).1.unwrap().code, 1002);
        let mut cont = client_frame(false, OP_BINARY, b"x", M);
        cont.extend(rsv1(client_frame(true, OP_CONTINUATION, b"y", M)));
        assert_eq!(run_with(&cont, 3, 1000, true).1.unwrap().code, 1002);
        for op in [OP_PING, OP_PONG, OP_CLOSE] {
            let c = rsv1(client_frame(true, op, b"", M));
            assert_eq!(run_with(&c, 1, 1000, true).1.unwrap().code, 1002);
        }
        // The size limit counts the compressed bytes as they come.
        let big = rsv1(client_frame(true, OP_BINARY, &[0; 1001], M));
        assert_eq!(run_with(&big[..8], 8, 1000, true).1.unwrap().code, 1009);
    }
}
