//! Fuzzes the chunked body decoder alone (`edgecomet::proto::http::chunked_body`) and the chunk
//! extension rule (`valid_chunk_ext`), against a small reference decoder written here.
//!
//! Input layout: `[limit, split, body bytes...]`
//! - `limit` picks `max_body`: 0..=127 as is (so 413 is hit often), 128..=254 give
//!   `(limit - 128) * 64` (up to 8 KB), 255 gives `usize::MAX`;
//! - `split` places the prefixes checked when the input is long (see below);
//! - the rest is what follows a `Transfer-Encoding: chunked` head on the connection.
//!
//! Checked on every input (any failure aborts the fuzzer):
//! - nothing panics; the only errors are `BadChunk` and `BodyTooLarge`;
//! - the result equals the reference decoder's (`reference` below: its own line reader, hex
//!   parser and chunk-extension state machine, with the documented limits: size line at most
//!   1024 bytes, at most 8 hex digits, trailers at most 4096 bytes, body at most `max_body`):
//!   the same bytes used and the same body (the concatenated chunk data) when complete, the
//!   same error, incomplete when it is incomplete;
//! - complete, `Ok(Some((used, body)))`: `used <= input length`, `body.len() <= max_body`,
//!   `body.len() <= used`, the used bytes end with the blank line ending the trailers; decoding
//!   just `buf[..used]` gives the same result, and so does `buf[..used]` followed by other
//!   bytes (the decoder stops at the end of the trailers);
//! - the result never changes once decided as bytes arrive: a prefix is `Ok(None)` or the
//!   same result as the whole input, and every proper prefix of a complete body (shorter than
//!   `used`) is `Ok(None)` — all prefixes for inputs up to 64 bytes, otherwise 8 spread by
//!   `split`, both sides of the first 16 LFs and `used - 1`; an error stays the same error
//!   when bytes are appended;
//! - a size line whose extension opens a quoted string that never closes (`1;x="...`, built
//!   from the input with its quotes, backslashes and LFs removed) is `Err(BadChunk)`, whatever
//!   follows, and `valid_chunk_ext` refuses that extension;
//! - `valid_chunk_ext` on the raw bytes equals the reference state machine, and an accepted
//!   extension contains no control byte other than HTAB.

#![no_main]

use edgecomet::proto::http::{HttpError, chunked_body, valid_chunk_ext};
use libfuzzer_sys::fuzz_target;

/// The documented limits of `chunked_body` (`MAX_CHUNK_LINE`, `MAX_TRAILERS`; docs/api.md,
/// Errors: "size line over 1 KiB, trailers over 4 KiB").
const MAX_LINE: usize = 1024;
const MAX_TRAILERS: usize = 4096;

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done(usize, Vec<u8>),
    More,
    Bad,
    TooLarge,
}

fn outcome(r: Result<Option<(usize, Vec<u8>)>, HttpError>) -> Outcome {
    match r {
        Ok(Some((used, body))) => Outcome::Done(used, body),
        Ok(None) => Outcome::More,
        Err(HttpError::BadChunk) => Outcome::Bad,
        Err(HttpError::BodyTooLarge) => Outcome::TooLarge,
        Err(e) => panic!("chunked_body returned {e:?}"),
    }
}

enum Line {
    /// The line's content ends at `.0` (its CR); the next line starts at `.1`.
    At(usize, usize),
    More,
    Bad,
}

/// The line starting at `from`: it must end with CRLF (a LF alone is refused) and hold at most
/// `max` bytes. Without a LF yet, more than `max + 1` bytes (content and a possible CR) can no
/// longer become a line.
fn line(buf: &[u8], from: usize, max: usize) -> Line {
    let rest = &buf[from..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(lf) if lf == 0 || rest[lf - 1] != b'\r' || lf - 1 > max => Line::Bad,
        Some(lf) => Line::At(from + lf - 1, from + lf + 1),
        None if rest.len() > max + 1 => Line::Bad,
        None => Line::More,
    }
}

fn tchar(b: u8) -> bool {
    matches!(b,
        b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z'
        | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_'
        | b'`' | b'|' | b'~')
}

/// Quoted-string content (qdtext, and what may follow a backslash): HTAB, SP, VCHAR, obs-text.
fn qchar(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) BWS` as a state machine.
fn reference_ext(ext: &[u8]) -> bool {
    #[derive(Clone, Copy)]
    enum S {
        /// Between extensions (or after a value): whitespace, `;` or the end.
        Between,
        /// After `;`: whitespace or the name.
        Semi,
        Name,
        AfterName,
        /// After `=`: whitespace, a token or a quote.
        Eq,
        Token,
        Quoted,
        Escape,
    }
    let ws = |b: u8| b == b' ' || b == b'\t';
    let mut s = S::Between;
    for &b in ext {
        s = match s {
            S::Between if ws(b) => S::Between,
            S::Between | S::Name | S::AfterName | S::Token if b == b';' => S::Semi,
            S::Semi if ws(b) => S::Semi,
            S::Semi | S::Name if tchar(b) => S::Name,
            S::Name | S::AfterName if ws(b) => S::AfterName,
            S::Name | S::AfterName if b == b'=' => S::Eq,
            S::Eq if ws(b) => S::Eq,
            S::Eq if b == b'"' => S::Quoted,
            S::Eq | S::Token if tchar(b) => S::Token,
            S::Token if ws(b) => S::Between,
            S::Quoted if b == b'"' => S::Between,
            S::Quoted if b == b'\\' => S::Escape,
            S::Quoted | S::Escape if qchar(b) => S::Quoted,
            _ => return false,
        };
    }
    matches!(s, S::Between | S::Name | S::AfterName | S::Token)
}

/// The reference decoder: a line-by-line reading of RFC 9112 §7.1 with the documented limits.
fn reference(buf: &[u8], max_body: usize) -> Outcome {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let (end, next) = match line(buf, pos, MAX_LINE) {
            Line::At(end, next) => (end, next),
            Line::More => return Outcome::More,
            Line::Bad => return Outcome::Bad,
        };
        let size_line = &buf[pos..end];
        let mut digits = 0;
        let mut size: u64 = 0;
        while let Some(d) = size_line
            .get(digits)
            .and_then(|&b| (b as char).to_digit(16))
        {
            size = size * 16 + u64::from(d);
            digits += 1;
            if digits > 8 {
                return Outcome::Bad;
            }
        }
        if digits == 0 || !reference_ext(&size_line[digits..]) {
            return Outcome::Bad;
        }
        pos = next;
        if size == 0 {
            let trailers = pos;
            loop {
                match line(buf, pos, MAX_TRAILERS) {
                    Line::At(end, _) if end == pos => return Outcome::Done(end + 2, body),
                    Line::At(_, next) => pos = next,
                    Line::More => return Outcome::More,
                    Line::Bad => return Outcome::Bad,
                }
                if pos - trailers > MAX_TRAILERS {
                    return Outcome::Bad;
                }
            }
        }
        let size = size as usize;
        if body.len() as u128 + size as u128 > max_body as u128 {
            return Outcome::TooLarge;
        }
        // The data and its CRLF, all of it before deciding.
        let Some(after) = buf.get(pos..pos + size + 2) else {
            return Outcome::More;
        };
        let (data, crlf) = after.split_at(size);
        if crlf != b"\r\n" {
            return Outcome::Bad;
        }
        body.extend_from_slice(data);
        pos += size + 2;
    }
}

fn max_body(limit: u8) -> usize {
    match limit {
        0..=127 => usize::from(limit),
        128..=254 => usize::from(limit - 128) * 64,
        255 => usize::MAX,
    }
}

fuzz_target!(|input: &[u8]| {
    let [limit, split, ref data @ ..] = *input else {
        return;
    };
    let max = max_body(limit);

    // The extension rule alone, on the raw bytes.
    let ext_ok = valid_chunk_ext(data);
    assert_eq!(ext_ok, reference_ext(data), "valid_chunk_ext differs");
    if ext_ok {
        assert!(data.iter().all(|&b| qchar(b)), "control byte accepted");
    }

    let whole = outcome(chunked_body(data, max));
    assert_eq!(whole, reference(data, max), "differs from the reference");

    let used = match &whole {
        Outcome::Done(used, body) => {
            let used = *used;
            assert!(used <= data.len(), "used {used} past the input");
            assert!(body.len() <= max, "body over max_body");
            assert!(body.len() <= used, "body longer than the bytes used");
            assert!(
                data[..used].ends_with(b"\r\n\r\n"),
                "does not end with a blank line"
            );
            let alone = outcome(chunked_body(&data[..used], max));
            assert_eq!(alone, whole, "the used bytes alone differ");
            let mut more = data[..used].to_vec();
            more.extend_from_slice(b"\n\r\n0;x=\"\r\n\xff");
            assert_eq!(
                outcome(chunked_body(&more, max)),
                whole,
                "bytes after the end"
            );
            Some(used)
        }
        Outcome::Bad | Outcome::TooLarge => {
            for tail in [&b"\r\n"[..], b"\r\n0\r\n\r\n", b"\n", b"A"] {
                let mut more = data.to_vec();
                more.extend_from_slice(tail);
                assert_eq!(
                    outcome(chunked_body(&more, max)),
                    whole,
                    "error changed with {tail:?} appended"
                );
            }
            None
        }
        Outcome::More => None,
    };

    // Prefixes: undecided (`More`) or already the final result.
    let check = |cut: usize| {
        let r = outcome(chunked_body(&data[..cut], max));
        match used {
            Some(u) if cut < u => assert_eq!(r, Outcome::More, "prefix {cut} of a complete body"),
            _ => assert!(
                r == Outcome::More || r == whole,
                "prefix {cut}: {r:?}, whole {whole:?}"
            ),
        }
    };
    if data.len() <= 64 {
        (0..data.len()).for_each(check);
    } else {
        for k in 0..8 {
            check((data.len() * k + usize::from(split)) / 8 % data.len());
        }
        let lfs = data.iter().enumerate().filter(|(_, b)| **b == b'\n');
        for (i, _) in lfs.take(16) {
            check(i);
            check(i + 1);
        }
        if let Some(u) = used {
            check(u - 1);
        }
    }

    // An unterminated quoted extension value is refused, whatever follows it.
    let mut open = b"1;x=\"".to_vec();
    open.extend(
        data.iter()
            .filter(|&&b| !matches!(b, b'"' | b'\\' | b'\n'))
            .take(64),
    );
    assert!(!valid_chunk_ext(&open[1..]), "unterminated quote accepted");
    open.extend_from_slice(b"\r\nA\r\n0\r\n\r\n");
    assert_eq!(
        chunked_body(&open, max),
        Err(HttpError::BadChunk),
        "unterminated quote in {open:?}"
    );
});
