//! Fuzzes the HTTP/1.1 request-head parser (`edgecomet::proto::http`).
//!
//! Input layout: `[step, limits, head bytes...]`
//! - `step`: segment size minus one (1..=256) for the server-like incremental feed;
//! - `limits`: low nibble picks `max_headers`, high nibble picks `max_head_bytes` (half of the
//!   values give the server default 8192, the rest small limits so the 414/431 paths are hit);
//! - the rest is what a client sent on the connection.
//!
//! Checked on every input (any failure aborts the fuzzer):
//! - nothing panics, for any `HeadLimits` (even ones the CLI would refuse);
//! - `Complete`: `head_len <= input length`, `head_len <= max_head_bytes`, and `head_len` is
//!   exactly where `find_head_end` says the head ends (the body starts there);
//! - `Partial`: no head end in the input and the input is shorter than `max_head_bytes`;
//! - feeding the bytes in segments, passing the previous length as `scanned` exactly like the
//!   worker does, gives the same result as one parse with `scanned = 0` (same variant, same
//!   error, same `Head`, hence the same `head_len`) — both with `step`-sized segments and one
//!   byte at a time;
//! - `find_head_end` finds the same end incrementally as in one scan;
//! - for a chunked request, `chunked_body` on the rest never panics, decodes at most what it
//!   used, and finds nothing one byte short of the end;
//! - the `Cookie` value and the query's values go through `cookie` and `percent_decode`
//!   (callback-polling's `message=`) without panicking; a decoded value is never longer than
//!   its source, and a cookie value lies within the header.

#![no_main]

use edgecomet::proto::http::{
    HeadLimits, HttpDate, Parse, chunked_body, cookie, error_response, find_head_end, parse_head,
    percent_decode, query_param,
};
use libfuzzer_sys::fuzz_target;

const MAX_HEADERS: [usize; 16] = [0, 1, 2, 3, 4, 5, 8, 16, 32, 64, 64, 64, 100, 127, 128, 1000];
const SMALL_HEAD: [usize; 8] = [0, 1, 3, 16, 40, 64, 100, 512];

fn limits(sel: u8) -> HeadLimits {
    let hi = usize::from(sel >> 4);
    HeadLimits {
        max_head_bytes: if hi < 8 { 8192 } else { SMALL_HEAD[hi - 8] },
        max_headers: MAX_HEADERS[usize::from(sel & 0x0F)],
    }
}

/// Feeds `data` in segments of `step` bytes the way the worker does: after a `Partial` it
/// remembers the buffer length and passes it as `scanned` once more bytes arrived; it stops at
/// the first `Complete` or `Error`.
fn feed(data: &[u8], step: usize, limits: HeadLimits) -> Parse<edgecomet::proto::http::Head<'_>> {
    let mut scanned = 0;
    let mut n = 0;
    loop {
        n = (n + step).min(data.len());
        match parse_head(&data[..n], scanned, limits) {
            Parse::Partial if n < data.len() => scanned = n,
            other => return other,
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let [step, sel, ref data @ ..] = *input else {
        return;
    };
    let limits = limits(sel);
    let end = find_head_end(data, 0);

    let whole = parse_head(data, 0, limits);
    match &whole {
        Parse::Complete(h) => {
            assert!(h.head_len <= data.len(), "head_len past the input");
            assert!(
                h.head_len <= limits.max_head_bytes,
                "head_len over the limit"
            );
            assert_eq!(Some(h.head_len), end, "head_len is not the head end");
            assert!(h.minor_version <= 1);
            let _ = (h.method(), h.keep_alive());
            if let Some(c) = h.cookie
                && let Some(v) = cookie(c, "BAYEUX_BROWSER")
            {
                assert!(v.len() <= c.len());
            }
            for name in ["message", "jsonp", "cursor"] {
                if let Some(v) = query_param(h.path, name)
                    && let Some(d) = percent_decode(v)
                {
                    assert!(d.len() <= v.len(), "decoding grew the value");
                }
            }
            if h.chunked {
                // The chunked decoder on the body: no panic; a decoded body is never longer
                // than what it used, and the same bytes with one fewer give no result.
                let rest = &data[h.head_len..];
                if let Ok(Some((used, body))) = chunked_body(rest, 1 << 16) {
                    assert!(used <= rest.len() && body.len() <= used);
                    assert_eq!(chunked_body(&rest[..used - 1], 1 << 16), Ok(None));
                }
            }
        }
        Parse::Partial => {
            assert_eq!(end, None, "Partial although the head is complete");
            assert!(data.len() < limits.max_head_bytes, "Partial past the limit");
        }
        Parse::Error(e) => {
            let (status, reason) = e.status();
            assert!((400..=599).contains(&status) && !reason.is_empty());
            let resp = error_response(&HttpDate::from_unix(0), *e);
            assert!(resp.starts_with(b"HTTP/1.1 4") || resp.starts_with(b"HTTP/1.1 5"));
        }
    }

    // Incremental parse, segments of 1..=256 bytes taken from the input, then byte by byte.
    let inc = feed(data, usize::from(step) + 1, limits);
    assert_eq!(
        inc,
        whole,
        "segments of {} bytes differ from one parse",
        usize::from(step) + 1
    );
    let inc1 = feed(data, 1, limits);
    assert_eq!(inc1, whole, "byte-by-byte feed differs from one parse");

    // find_head_end alone: byte by byte with `scanned = n - 1` finds the same end.
    let mut found = None;
    for n in 1..=data.len() {
        if let Some(e) = find_head_end(&data[..n], n - 1) {
            found = Some(e);
            break;
        }
    }
    assert_eq!(found, end, "incremental find_head_end differs");
});
