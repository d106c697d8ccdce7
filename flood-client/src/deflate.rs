//! `--deflate`: RFC 7692 permessage-deflate, the client's side, sans-IO: the offer flood sends
//! ([`OFFER`], [`offer`]), the server's 101 answer checked ([`answer`]), and compressed
//! messages inflated ([`Inflater`], raw DEFLATE through flate2's pure-Rust miniz_oxide backend).
//!
//! flood never compresses what it sends (a client may send any message uncompressed: RSV1
//! clear), so of the agreed parameters only `server_no_context_takeover` matters to it: with it
//! (edgecomet always answers it) every message is a DEFLATE stream of its own and one inflater
//! per worker, reset before each message, serves every connection; without it the server's
//! messages continue one stream, and the connection needs an inflater of its own (the engine
//! keeps those in a side table, so that they cost nothing where they are not needed).
//! `server_max_window_bits` needs nothing: a 32 KiB window inflates any smaller one.
//!
//! This module never touches a socket or a clock.

use flate2::{Decompress, FlushDecompress, Status};

/// The `Sec-WebSocket-Extensions` value of every upgrade with `--deflate`: flood asks nothing of
/// the server's compression (it must cope with whatever the server answers) and tells the
/// server it may use any window and reset for flood's messages (of which it has none).
pub const OFFER: &str = "permessage-deflate; client_no_context_takeover; client_max_window_bits";

/// What RFC 7692 §7.2.2 has the receiver append to a message's payload before inflating: the
/// empty stored block of the sender's sync flush, which the sender took off.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// `req` (a request head ending in the empty line) with the offer added.
pub fn offer(mut req: String) -> String {
    // Before the empty line that ends the head.
    req.truncate(req.len() - 2);
    req.push_str("Sec-WebSocket-Extensions: ");
    req.push_str(OFFER);
    req.push_str("\r\n\r\n");
    req
}

/// The parameters a server agreed to (its answer's, as RFC 7692 §7.1 names them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Agreed {
    /// The server resets its compression context after each message: each message inflates on
    /// its own. Without it, a connection's messages are one stream.
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    /// The server compresses with at most 2^N bytes of window (8 to 15).
    pub server_max_window_bits: Option<u8>,
    /// Flood's messages would have to use at most 2^N (8 to 15); flood compresses none.
    pub client_max_window_bits: Option<u8>,
}

/// The extension a server's 101 answer (`head`, its head up to the empty line) agreed to:
/// `Ok(None)` when it names none (a server that declined, or flood offered nothing),
/// `Ok(Some(_))` when it accepted permessage-deflate. An error is a handshake RFC 6455 §4.1 and
/// RFC 7692 §5 say the client must fail: an extension named that flood did not offer (any at
/// all without `offered`), permessage-deflate twice, a parameter unknown, repeated or with a
/// bad value. Header names are matched without regard to case; values are trimmed.
pub fn answer(head: &[u8], offered: bool) -> Result<Option<Agreed>, &'static str> {
    let mut agreed = None;
    // The status line is not a header; a line without a colon is not one either.
    for line in head.split(|&b| b == b'\n').skip(1) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if !line[..colon]
            .trim_ascii()
            .eq_ignore_ascii_case(b"sec-websocket-extensions")
        {
            continue;
        }
        let value = std::str::from_utf8(line[colon + 1..].trim_ascii())
            .map_err(|_| "Sec-WebSocket-Extensions is not text")?;
        // Extensions are comma-separated (and the header may repeat); empty elements are
        // allowed by the list syntax (RFC 9110 §5.6.1) and name nothing.
        for ext in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let mut parts = ext.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            if !name.eq_ignore_ascii_case("permessage-deflate") {
                return Err("the server named an extension flood did not offer");
            }
            if !offered {
                return Err("the server named permessage-deflate, which flood did not offer");
            }
            if agreed.is_some() {
                return Err("the server accepted permessage-deflate twice");
            }
            agreed = Some(params(parts)?);
        }
    }
    Ok(agreed)
}

/// The parameters of an accepted permessage-deflate (RFC 7692 §7.1: each at most once, the
/// window sizes with a value from 8 to 15, the others without one).
fn params<'a>(parts: impl Iterator<Item = &'a str>) -> Result<Agreed, &'static str> {
    let mut a = Agreed::default();
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
            None => (p, None),
        };
        match (name, value) {
            ("server_no_context_takeover", None) if !a.server_no_context_takeover => {
                a.server_no_context_takeover = true;
            }
            ("client_no_context_takeover", None) if !a.client_no_context_takeover => {
                a.client_no_context_takeover = true;
            }
            ("server_max_window_bits", Some(v)) if a.server_max_window_bits.is_none() => {
                a.server_max_window_bits = Some(window_bits(v)?);
            }
            ("client_max_window_bits", Some(v)) if a.client_max_window_bits.is_none() => {
                a.client_max_window_bits = Some(window_bits(v)?);
            }
            // An empty parameter (`permessage-deflate;`): nothing.
            ("", None) => {}
            _ => {
                return Err(
                    "the server's permessage-deflate has a parameter unknown, repeated or malformed",
                );
            }
        }
    }
    Ok(a)
}

/// A parameter value as a quoted string (RFC 7692 §7.1: token or quoted-string, the same once
/// unquoted).
fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// A window size: a decimal integer from 8 to 15 without leading zeros.
fn window_bits(v: &str) -> Result<u8, &'static str> {
    const BAD: &str = "the server's permessage-deflate has a window size that is not 8 to 15";
    if v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    match v.parse::<u8>() {
        Ok(n @ 8..=15) => Ok(n),
        _ => Err(BAD),
    }
}

/// A raw-DEFLATE inflater for a worker's connections: no window (`server_no_context_takeover`,
/// one message at a time), 32 KiB of it (15 bits: any server window inflates).
pub fn decompressor() -> Decompress {
    Decompress::new(false)
}

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Not valid DEFLATE data.
    Corrupt,
    /// It inflates to more than the limit.
    TooLarge,
}

/// One message inflated at a time: [`Inflater::begin`], its fragments' payloads in order
/// ([`Inflater::push`]), [`Inflater::finish`] (the [`TAIL`]), then [`Inflater::output`]. The
/// output buffer is reused from message to message (it grows to the largest message inflated,
/// never past the limit plus one byte); the DEFLATE state ([`Decompress`]) is passed in, so that
/// one buffer serves the worker's shared inflater and the connections' own.
#[derive(Debug, Default)]
pub struct Inflater {
    out: Vec<u8>,
    /// The stream ended (a block with BFINAL): what follows in the message is ignored, and the
    /// DEFLATE state is reset before the next message.
    ended: bool,
}

impl Inflater {
    /// Starts a message. `reset`: it is a stream of its own (`server_no_context_takeover`);
    /// otherwise it continues the connection's stream, unless that ended.
    pub fn begin(&mut self, d: &mut Decompress, reset: bool) {
        if reset || self.ended {
            d.reset(false);
        }
        self.ended = false;
        self.out.clear();
    }

    /// Inflates `input` (a fragment's payload), the output at most `max` bytes.
    pub fn push(
        &mut self,
        d: &mut Decompress,
        input: &[u8],
        max: usize,
    ) -> Result<(), InflateError> {
        let mut input = input;
        loop {
            if self.ended {
                return Ok(());
            }
            if self.out.len() == self.out.capacity() {
                // Room for more: doubled, from 4 KiB, up to one byte over the limit (filling
                // that byte is what says the limit was passed).
                let want = (self.out.capacity() * 2)
                    .max(4096)
                    .min(max.saturating_add(1));
                self.out.reserve_exact(want.saturating_sub(self.out.len()));
            }
            let (in_before, out_before) = (d.total_in(), self.out.len());
            let status = d
                .decompress_vec(input, &mut self.out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            let used = (d.total_in() - in_before) as usize;
            input = &input[used..];
            if self.out.len() > max {
                return Err(InflateError::TooLarge);
            }
            if status == Status::StreamEnd {
                self.ended = true;
                return Ok(());
            }
            let full = self.out.len() == self.out.capacity();
            if input.is_empty() && !full {
                return Ok(());
            }
            if used == 0 && self.out.len() == out_before && !full {
                // No progress with input left and room for output: not DEFLATE as it should be.
                return Err(InflateError::Corrupt);
            }
        }
    }

    /// Ends the message: its [`TAIL`].
    pub fn finish(&mut self, d: &mut Decompress, max: usize) -> Result<(), InflateError> {
        self.push(d, &TAIL, max)
    }

    /// The message inflated so far.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// One message whose payload is `fragments` (in order), inflated on its own: begin, push
    /// each, finish.
    pub fn inflate(
        &mut self,
        d: &mut Decompress,
        fragments: &[&[u8]],
        max: usize,
    ) -> Result<&[u8], InflateError> {
        self.begin(d, true);
        for f in fragments {
            self.push(d, f, max)?;
        }
        self.finish(d, max)?;
        Ok(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use flate2::{Compress, Compression, FlushCompress};

    use super::*;

    /// `data` as a permessage-deflate sender makes it: raw DEFLATE, sync-flushed, the 4-byte
    /// tail taken off. `c` carries the context when the sender keeps it.
    fn compress_with(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        let start = c.total_in();
        loop {
            let at = (c.total_in() - start) as usize;
            c.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
                .unwrap();
            if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        assert_eq!(
            &out[out.len() - 4..],
            &TAIL,
            "a sync flush ends in the empty block"
        );
        out.truncate(out.len() - 4);
        out
    }

    fn compress(data: &[u8]) -> Vec<u8> {
        compress_with(&mut Compress::new(Compression::new(6), false), data)
    }

    fn payload(n: usize) -> Vec<u8> {
        let mut v = crate::msg::encode(7, 123_456_789, n, false);
        // Not all dots: something to compress but not trivially.
        for (i, b) in v.iter_mut().enumerate().skip(40).step_by(17) {
            *b = b'a' + (i % 26) as u8;
        }
        v
    }

    #[test]
    fn offer_goes_before_the_end_of_the_head() {
        assert_eq!(
            offer("GET /sub/a HTTP/1.1\r\nHost: h\r\n\r\n".into()),
            "GET /sub/a HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Extensions: permessage-deflate; \
             client_no_context_takeover; client_max_window_bits\r\n\r\n"
        );
    }

    const HEAD: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                        Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n";

    fn ans(ext: &str, offered: bool) -> Result<Option<Agreed>, &'static str> {
        answer(format!("{HEAD}{ext}\r\n").as_bytes(), offered)
    }

    #[test]
    fn answers_edgecomet_gives() {
        let a = ans(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover",
            true,
        );
        assert_eq!(
            a,
            Ok(Some(Agreed {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                ..Agreed::default()
            }))
        );
        let a = ans(
            "sec-websocket-extensions:permessage-deflate;server_no_context_takeover;\
             server_max_window_bits=10; client_max_window_bits=\"12\"",
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.server_max_window_bits, Some(10));
        assert_eq!(a.client_max_window_bits, Some(12));
        assert!(a.server_no_context_takeover && !a.client_no_context_takeover);
        // Context takeover: accepted (the engine gives the connection its own inflater).
        let a = ans("Sec-WebSocket-Extensions: permessage-deflate", true);
        assert_eq!(a, Ok(Some(Agreed::default())));
    }

    #[test]
    fn no_extension_is_a_decline() {
        assert_eq!(ans("X-Other: permessage-deflate", true), Ok(None));
        assert_eq!(ans("X-Other: 1", false), Ok(None));
        assert_eq!(ans("Sec-WebSocket-Extensions: ", true), Ok(None));
        assert_eq!(ans("Sec-WebSocket-Extensions: ,", false), Ok(None));
        assert_eq!(answer(b"HTTP/1.1 101 OK\r\n", true), Ok(None));
    }

    #[test]
    fn answers_that_fail_the_handshake() {
        let bad = [
            // Not offered.
            ("Sec-WebSocket-Extensions: x-webkit-deflate-frame", true),
            ("Sec-WebSocket-Extensions: permessage-deflate, foo", true),
            ("Sec-WebSocket-Extensions: permessage-deflate", false),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover",
                false,
            ),
            // Twice, in one header or two.
            (
                "Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate\r\nSec-WebSocket-Extensions: permessage-deflate",
                true,
            ),
            // Parameters.
            ("Sec-WebSocket-Extensions: permessage-deflate; foo", true),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover=1",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=7",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=09",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=+9",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=x",
                true,
            ),
            (
                "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=9; server_max_window_bits=9",
                true,
            ),
        ];
        for (ext, offered) in bad {
            assert!(ans(ext, offered).is_err(), "{ext:?} (offered: {offered})");
        }
    }

    #[test]
    fn a_compressed_message_inflates_to_what_was_sent() {
        let mut d = decompressor();
        let mut inf = Inflater::default();
        for n in [0, 1, 32, 64, 1000, 100_000] {
            let p = payload(n);
            let z = compress(&p);
            if n >= 1000 {
                assert!(z.len() < p.len() / 2, "{n} bytes compress to {}", z.len());
            }
            assert_eq!(inf.inflate(&mut d, &[&z], 1 << 20).unwrap(), &p[..], "{n}");
        }
    }

    #[test]
    fn a_message_compressed_over_two_fragments() {
        let p = payload(5000);
        let z = compress(&p);
        let mut d = decompressor();
        let mut inf = Inflater::default();
        for cut in [0, 1, z.len() / 2, z.len() - 1, z.len()] {
            let (a, b) = z.split_at(cut);
            assert_eq!(
                inf.inflate(&mut d, &[a, b], 1 << 20).unwrap(),
                &p[..],
                "{cut}"
            );
        }
    }

    #[test]
    fn a_fixed_sample_from_another_deflater() {
        // "Hello" as RFC 7692's examples give it (one compressed block, tail taken off).
        let z = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let mut inf = Inflater::default();
        assert_eq!(
            inf.inflate(&mut decompressor(), &[&z], 64).unwrap(),
            b"Hello"
        );
        // The same in a block with BFINAL set (a sender may end with one): what follows the
        // stream's end, the tail, is ignored.
        let z = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(
            inf.inflate(&mut decompressor(), &[&z], 64).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn messages_of_one_stream_inflate_in_turn_with_context_takeover() {
        // A sender that keeps its context: the second message refers back to the first.
        let mut c = Compress::new(Compression::new(6), false);
        // Letters at random: little to compress within the message, all of it across two.
        let mut x: u32 = 7;
        let p: Vec<u8> = (0..2000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b'a' + (x % 26) as u8
            })
            .collect();
        let (z1, z2) = (compress_with(&mut c, &p), compress_with(&mut c, &p));
        assert!(z2.len() < z1.len() / 4, "the repeat is a back-reference");
        let (mut d, mut inf) = (decompressor(), Inflater::default());
        for z in [&z1, &z2] {
            inf.begin(&mut d, false);
            inf.push(&mut d, z, 1 << 20).unwrap();
            inf.finish(&mut d, 1 << 20).unwrap();
            assert_eq!(inf.output(), &p[..]);
        }
        // Reset before the second, it cannot inflate (its back-reference has no window).
        let mut d = decompressor();
        let _ = inf.inflate(&mut d, &[&z1], 1 << 20).unwrap();
        assert!(inf.inflate(&mut d, &[&z2], 1 << 20) != Ok(&p[..]));
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let mut inf = Inflater::default();
        let mut d = decompressor();
        // BTYPE 11 is reserved.
        assert_eq!(
            inf.inflate(&mut d, &[&[0x07, 0x00]], 1 << 20),
            Err(InflateError::Corrupt)
        );
        // A stored block whose length and its complement disagree.
        assert_eq!(
            inf.inflate(&mut d, &[&[0x00, 0x05, 0x00, 0x00, 0x00]], 1 << 20),
            Err(InflateError::Corrupt)
        );
        // Whatever the bytes, an answer and no panic; and the inflater works afterwards.
        let mut x: u32 = 1;
        for n in 0..2000 {
            let junk: Vec<u8> = (0..n % 97)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = inf.inflate(&mut d, &[&junk], 4096);
        }
        let p = payload(300);
        assert_eq!(inf.inflate(&mut d, &[&compress(&p)], 4096).unwrap(), &p[..]);
    }

    #[test]
    fn the_inflated_size_is_bounded() {
        let p = vec![b'x'; 100_000];
        let z = compress(&p);
        assert!(z.len() < 1000);
        let (mut d, mut inf) = (decompressor(), Inflater::default());
        assert_eq!(
            inf.inflate(&mut d, &[&z], 99_999),
            Err(InflateError::TooLarge)
        );
        assert_eq!(inf.inflate(&mut d, &[&z], 100_000).unwrap().len(), 100_000);
        assert!(inf.out.capacity() <= 100_001);
    }
}
