//! Fuzzes the WebSocket frame decoder (`edgecomet::proto::ws::frame::parse_header`) and the
//! receive state machine (`edgecomet::proto::ws::reader::WsReader`).
//!
//! Input layout: `[s0, s1, s2, limit, client bytes...]`
//! - `s0..s2`: segment sizes minus one (1..=256), cycled, for the server-like feed;
//! - `limit`: picks `max_message` (small values reach close 1009, large ones the 64-bit
//!   lengths);
//! - the rest is what a client sent after the handshake.
//!
//! Checked on every input (any failure aborts the fuzzer):
//! - nothing panics;
//! - feeding in segments and carrying `buf[consumed..]` to the next call, like the worker does:
//!   `consumed <= buf.len()`; unless a close frame arrived, the leftover is at most
//!   14 + 125 bytes and is an incomplete header or control frame (never a header error);
//! - all `Data` chunks of a message and its `End` agree on text/binary;
//! - the outcome (whole messages, pings, pongs, close, failure code and reason) is the same
//!   for one call with all bytes, for the `s0..s2` segments and for one byte at a time;
//! - `parse_header` on the raw input and on the client bytes: a `Complete` header is 6, 8 or
//!   14 bytes (<= 14), its length field is minimally encoded, control frames are final and
//!   <= 125 bytes, and its result never changes once more bytes are appended (every shorter
//!   prefix is `Partial`, an error stays the same error).

#![no_main]

use edgecomet::proto::ws::frame::{
    HeaderParse, MAX_CLIENT_HEADER, MAX_CONTROL_PAYLOAD, OP_BINARY, OP_CLOSE, OP_CONTINUATION,
    OP_PING, OP_PONG, OP_TEXT, parse_header,
};
use edgecomet::proto::ws::reader::{Event, Fail, WsReader};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    /// text, compressed (RSV1, permessage-deflate), payload as received
    Msg(bool, bool, Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Ev>,
    fail: Option<Fail>,
}

fn max_message(sel: u8) -> u32 {
    match sel & 3 {
        0 => u32::from(sel >> 2), // 0..=63
        1 => 125 + u32::from(sel >> 2) * 16,
        2 => 1 << 20, // server default
        _ => u32::MAX,
    }
}

/// Feeds `data` in segments whose sizes cycle through `sizes`, the way the worker does: the
/// unconsumed tail of one call is passed again, followed by the new bytes, on the next call.
fn run(data: &[u8], sizes: &[usize], max: u32, deflate: bool) -> Outcome {
    let mut r = WsReader::default();
    let mut events = Vec::new();
    let mut msg: Vec<u8> = Vec::new();
    let mut msg_text: Option<bool> = None;
    let mut carry: Vec<u8> = Vec::new();
    let mut off = 0;
    for &size in sizes.iter().cycle() {
        if off >= data.len() {
            break;
        }
        let end = (off + size).min(data.len());
        carry.extend_from_slice(&data[off..end]);
        off = end;
        let mut buf = std::mem::take(&mut carry);
        let mut closed = false;
        let res = r.feed(&mut buf, max, deflate, |e| match e {
            Event::Data {
                text,
                compressed,
                chunk,
            } => {
                assert!(deflate || !compressed, "RSV1 accepted without the extension");
                assert_eq!(
                    *msg_text.get_or_insert(text),
                    text,
                    "text flag changed mid-message"
                );
                msg.extend_from_slice(chunk);
            }
            Event::End { text, compressed } => {
                assert_eq!(
                    *msg_text.get_or_insert(text),
                    text,
                    "End disagrees with Data"
                );
                msg_text = None;
                events.push(Ev::Msg(text, compressed, std::mem::take(&mut msg)));
            }
            Event::Ping(p) => {
                assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                events.push(Ev::Ping(p.to_vec()));
            }
            Event::Pong(p) => {
                assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                events.push(Ev::Pong(p.to_vec()));
            }
            Event::Close { code, reason } => {
                assert!(!closed, "two close events in one call");
                assert!(reason.len() <= MAX_CONTROL_PAYLOAD - 2);
                closed = true;
                events.push(Ev::Close(code, reason.to_vec()));
            }
        });
        match res {
            Ok(n) => {
                assert!(n <= buf.len(), "consumed {n} of {} bytes", buf.len());
                if closed {
                    // The worker answers the close and drops everything after it.
                    return Outcome { events, fail: None };
                }
                let left = &buf[n..];
                assert!(
                    left.len() <= MAX_CLIENT_HEADER + MAX_CONTROL_PAYLOAD,
                    "leftover of {} bytes",
                    left.len()
                );
                if !left.is_empty() {
                    match parse_header(left) {
                        HeaderParse::Partial => {}
                        HeaderParse::Complete(h, hlen) => assert!(
                            h.is_control() && hlen + h.len as usize > left.len(),
                            "a complete frame was left over"
                        ),
                        HeaderParse::Error(e) => panic!("leftover starts with a bad header: {e:?}"),
                    }
                }
                carry = left.to_vec();
            }
            Err(f) => {
                assert!(
                    matches!(f.code, 1002 | 1007 | 1009),
                    "unexpected close code {}",
                    f.code
                );
                return Outcome {
                    events,
                    fail: Some(f),
                };
            }
        }
    }
    Outcome { events, fail: None }
}

/// Checks one `parse_header` result on `buf` and that it is stable under appending bytes.
fn check_header(buf: &[u8]) {
    let full = parse_header(buf);
    if let HeaderParse::Complete(h, n) = full {
        assert!(
            n <= MAX_CLIENT_HEADER && n <= buf.len(),
            "header of {n} bytes"
        );
        match n {
            6 => assert!(h.len <= 125),
            8 => assert!((126..=0xFFFF).contains(&h.len)),
            14 => assert!(h.len > 0xFFFF && h.len >> 63 == 0),
            _ => panic!("header length {n}"),
        }
        assert!(matches!(
            h.opcode,
            OP_CONTINUATION | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG
        ));
        if h.is_control() {
            assert!(
                h.fin && h.len <= MAX_CONTROL_PAYLOAD as u64,
                "bad control header accepted"
            );
        }
        assert_eq!(
            h.mask[..],
            buf[n - 4..n],
            "mask is not the last 4 header bytes"
        );
    }
    // Once a prefix decides (Complete or Error), every longer prefix decides the same way.
    let mut decided: Option<HeaderParse> = None;
    for k in 0..=buf.len().min(MAX_CLIENT_HEADER + 1) {
        let r = parse_header(&buf[..k]);
        match decided {
            Some(d) => assert_eq!(r, d, "header result changed at {k} bytes"),
            None if r != HeaderParse::Partial => decided = Some(r),
            None => {}
        }
    }
    if let Some(d) = decided {
        assert_eq!(
            full,
            d,
            "header result changed past {} bytes",
            MAX_CLIENT_HEADER + 1
        );
    } else if buf.len() > MAX_CLIENT_HEADER {
        panic!("still Partial after {} bytes", MAX_CLIENT_HEADER + 1);
    }
}

fuzz_target!(|input: &[u8]| {
    check_header(input);
    let [s0, s1, s2, sel, ref data @ ..] = *input else {
        return;
    };
    check_header(data);
    let max = max_message(sel);
    let sizes = [
        usize::from(s0) + 1,
        usize::from(s1) + 1,
        usize::from(s2) + 1,
    ];

    // The segment sizes' parity picks whether permessage-deflate was negotiated (RSV1 allowed).
    let deflate = (s0 ^ s1 ^ s2) & 1 == 1;
    let segmented = run(data, &sizes, max, deflate);
    let whole = run(data, &[data.len().max(1)], max, deflate);
    assert_eq!(segmented, whole, "segments {sizes:?} differ from one call");
    let bytewise = run(data, &[1], max, deflate);
    assert_eq!(bytewise, whole, "byte-by-byte feed differs from one call");
});
