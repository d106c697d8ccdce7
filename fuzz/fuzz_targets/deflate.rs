//! Fuzzes permessage-deflate (`edgecomet::proto::ws::deflate`): the bounded inflation of a
//! client's compressed message (`inflate`, what a hostile client controls entirely), the
//! negotiation of a `Sec-WebSocket-Extensions` value (`negotiate`) and the compression of a
//! server message (`compress_frame`, `compress_frames`).
//!
//! Input layout: `[sel, data...]`. `sel & 0x0F` picks the output limit `max` from `LIMITS`
//! (0, tiny, around the 64 KiB inflate step, 1 MiB), `sel >> 4` the length of the bytes `out`
//! already holds on the second call (1..=16) and the `min` of `compress_frames`. `data` is, in
//! turn, the compressed message, the header value (also split at `\n` into several values),
//! and the payload to compress.
//!
//! Checked on every input (any failure aborts the fuzzer):
//! - nothing panics;
//! - `inflate` appends at most `max + 1` bytes whatever the outcome, at most `max` on `Ok`;
//! - it gives the same result and appends the same bytes whether `out` starts empty or not, and
//!   leaves what `out` held untouched;
//! - on `Ok`, the bytes equal a reference inflation (flate2's raw inflater on `data` followed by
//!   `00 00 ff ff`, the tail the sender dropped), and the limit is exact: with `max` equal to the
//!   output's length it is `Ok` again, one less is `TooBig`;
//! - `negotiate`: an agreement has `server_max_window_bits` in 8..=15, its response line is the
//!   fixed one (plus the window when below 15) ending in CRLF; several values give the first
//!   value's agreement that has one;
//! - `compress_frame(OP_TEXT, data)`, when `Some`: a FIN + RSV1 + text frame with a minimal
//!   header and a payload shorter than `data` that inflates (both inflaters) to exactly `data`;
//!   `compress_frames` on the plain frame gives back the same bytes or frames that decode to the
//!   same payload.

#![no_main]

use bytes::Bytes;
use edgecomet::proto::ws::deflate::{self, InflateError};
use edgecomet::proto::ws::frame::{self, OP_TEXT};
use flate2::{Decompress, FlushDecompress, Status};
use libfuzzer_sys::fuzz_target;

/// Output limits: 0 and tiny ones (the limit is met at once), around `INFLATE_STEP` (64 KiB, the
/// inflater's output step) and the 1 MiB default of `--max-message-bytes`.
const LIMITS: [usize; 16] = [
    0,
    1,
    2,
    5,
    16,
    100,
    255,
    256,
    1000,
    4096,
    65_535,
    65_536,
    65_537,
    100_000,
    300_000,
    1 << 20,
];

/// A reference inflation of one message: flate2's raw inflater on `input` + `00 00 ff ff`, at
/// most `cap` bytes. `None` when flate2 reports an error.
fn reference(input: &[u8], cap: usize) -> Option<Vec<u8>> {
    let mut all = input.to_vec();
    all.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    let mut d = Decompress::new(false);
    let mut out = Vec::with_capacity(cap.min(64 * 1024) + 1);
    loop {
        let (in0, out0) = (d.total_in(), d.total_out());
        let st = d
            .decompress_vec(&all[in0 as usize..], &mut out, FlushDecompress::Sync)
            .ok()?;
        let all_read = d.total_in() as usize == all.len();
        if st == Status::StreamEnd || out.len() > cap || (all_read && out.len() < out.capacity()) {
            return Some(out);
        }
        if out.len() == out.capacity() {
            out.reserve(out.capacity().min(cap + 1 - out.len()).max(1));
        } else if d.total_in() == in0 && d.total_out() == out0 {
            // No progress with room to write: the input ends inside a block.
            return Some(out);
        }
    }
}

/// Header and payload length of one whole server frame at the start of `f`.
fn server_frame(f: &[u8]) -> (usize, usize) {
    match f[1] {
        126 => (4, usize::from(u16::from_be_bytes([f[2], f[3]]))),
        127 => (
            10,
            u64::from_be_bytes(f[2..10].try_into().unwrap()) as usize,
        ),
        n => {
            assert!(n < 126, "server frames are unmasked");
            (2, usize::from(n))
        }
    }
}

fn check_inflate(data: &[u8], max: usize, held: usize) {
    let mut out = Vec::new();
    let r = deflate::inflate(data, max, &mut out);
    assert!(out.len() <= max + 1, "{r:?}: {} > {max} + 1", out.len());
    if r.is_ok() {
        assert!(out.len() <= max, "Ok with {} > {max}", out.len());
    }

    // Appending: the same outcome and bytes after what `out` held, which stays as it was.
    let prefix: Vec<u8> = (0..held as u8).map(|i| i.wrapping_mul(37)).collect();
    let mut out2 = prefix.clone();
    let r2 = deflate::inflate(data, max, &mut out2);
    assert_eq!(r, r2, "held {held} bytes");
    assert_eq!(out2[..held], prefix[..]);
    assert_eq!(out2[held..], out[..], "held {held} bytes");

    if r.is_ok() {
        match reference(data, max + 1) {
            Some(want) => assert_eq!(out, want, "differs from the reference"),
            None => panic!("accepted what the reference inflater refuses"),
        }
        // The limit is exact.
        let n = out.len();
        let mut again = Vec::new();
        assert_eq!(deflate::inflate(data, n, &mut again), Ok(()));
        assert_eq!(again, out);
        if n > 0 {
            let mut short = Vec::new();
            assert_eq!(
                deflate::inflate(data, n - 1, &mut short),
                Err(InflateError::TooBig)
            );
            assert!(short.len() <= n);
        }
    }
}

fn check_negotiate(data: &[u8]) {
    let whole = deflate::negotiate([data]);
    if let Some(a) = whole {
        assert!((8..=15).contains(&a.server_max_window_bits), "{a:?}");
        let mut line = Vec::new();
        a.response_header(&mut line);
        let fixed: &[u8] = b"Sec-WebSocket-Extensions: permessage-deflate; \
            server_no_context_takeover; client_no_context_takeover";
        assert!(line.starts_with(fixed));
        let rest = &line[fixed.len()..];
        if a.server_max_window_bits == 15 {
            assert_eq!(rest, b"\r\n");
        } else {
            let want = format!("; server_max_window_bits={}\r\n", a.server_max_window_bits);
            assert_eq!(rest, want.as_bytes());
        }
        assert!(a.fits_window(1 << a.server_max_window_bits));
    }
    // Several header values: the first that yields an agreement.
    let values: Vec<&[u8]> = data.split(|&c| c == b'\n').collect();
    let first = values.iter().find_map(|v| deflate::negotiate([*v]));
    assert_eq!(deflate::negotiate(values.iter().copied()), first);
}

fn check_compress(data: &[u8], min: usize) {
    if let Some(f) = deflate::compress_frame(OP_TEXT, data) {
        assert_eq!(f[0], 0x80 | deflate::RSV1 | OP_TEXT);
        let (hlen, plen) = server_frame(&f);
        assert_eq!(hlen + plen, f.len());
        let minimal = match plen {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        assert_eq!(hlen, minimal, "non-minimal length");
        assert!(plen < data.len(), "compressed {plen} >= {}", data.len());
        let mut out = Vec::new();
        assert_eq!(deflate::inflate(&f[hlen..], data.len(), &mut out), Ok(()));
        assert_eq!(out, data);
        assert_eq!(reference(&f[hlen..], data.len()).as_deref(), Some(data));
    }
    let plain = frame::frame(OP_TEXT, data);
    let z: Bytes = deflate::compress_frames(&plain, min);
    if z.as_ptr() == plain.as_ptr() {
        return;
    }
    assert!(z.len() < plain.len());
    assert_eq!(deflate::count_compressed(std::slice::from_ref(&z)), 1);
    let (hlen, plen) = server_frame(&z);
    assert_eq!(hlen + plen, z.len(), "one frame");
    assert!(data.len() >= min);
    let mut out = Vec::new();
    assert_eq!(deflate::inflate(&z[hlen..], data.len(), &mut out), Ok(()));
    assert_eq!(out, data);
}

fuzz_target!(|input: &[u8]| {
    let Some((&sel, data)) = input.split_first() else {
        return;
    };
    let max = LIMITS[usize::from(sel & 0x0F)];
    let held = 1 + usize::from(sel >> 4);
    check_inflate(data, max, held);
    check_negotiate(data);
    check_compress(data, usize::from(sel >> 4) * 64);
});
