//! Incremental UTF-8 validation for text messages that arrive in pieces (RFC 6455 §5.6, §8.1).
//!
//! A text message may be split anywhere, even inside a code point, across frames and reads.
//! [`Utf8Validator`] keeps at most three bytes of an unfinished code point and fails as soon as a
//! sequence can no longer become valid (fail-fast), not only at the end of the message. The bulk
//! of every chunk goes through `std::str::from_utf8`.

/// Validation state carried between chunks: an unfinished code point, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    /// Bytes of an unfinished code point (up to 3).
    pending: [u8; 3],
    /// How many of `pending` are used.
    len: u8,
}

/// The chunk contains bytes that can never be valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Width of the code point that starts with `lead`, for a lead byte that `from_utf8` reported as
/// an incomplete (not invalid) sequence.
fn width(lead: u8) -> usize {
    match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

impl Utf8Validator {
    /// Validates the next chunk of the message.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.len > 0 {
            // Complete the pending code point one byte at a time (at most 3 bytes).
            let mut buf = [0u8; 4];
            let n = usize::from(self.len);
            buf[..n].copy_from_slice(&self.pending[..n]);
            let need = width(buf[0]);
            let mut have = n;
            while have < need {
                let Some((&b, rest)) = chunk.split_first() else {
                    break;
                };
                buf[have] = b;
                have += 1;
                chunk = rest;
                if let Err(e) = std::str::from_utf8(&buf[..have])
                    && e.error_len().is_some()
                {
                    return Err(InvalidUtf8);
                }
            }
            if have < need {
                self.pending[..have].copy_from_slice(&buf[..have]);
                self.len = have as u8;
                return Ok(());
            }
            self.len = 0;
        }
        match std::str::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                // An incomplete but so far valid sequence at the end: keep it (1..=3 bytes).
                let tail = &chunk[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// Whether the message may end here (no code point left unfinished).
    pub fn is_complete(&self) -> bool {
        self.len == 0
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// Validates a whole buffer at once (close reasons).
pub fn is_valid(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(data: &[u8], sizes: usize) -> Result<bool, InvalidUtf8> {
        let mut v = Utf8Validator::default();
        for c in data.chunks(sizes.max(1)) {
            v.feed(c)?;
        }
        Ok(v.is_complete())
    }

    #[test]
    fn valid_text_split_anywhere() {
        let text = "κόσμε · hello · 𝄞 · €uro · 中文".as_bytes();
        for size in 1..text.len() {
            assert_eq!(feed_split(text, size), Ok(true), "chunk size {size}");
        }
        for cut in 0..=text.len() {
            let mut v = Utf8Validator::default();
            v.feed(&text[..cut]).unwrap();
            v.feed(&text[cut..]).unwrap();
            assert!(v.is_complete());
        }
    }

    #[test]
    fn invalid_sequences_fail_in_every_split() {
        let bad: &[&[u8]] = &[
            b"\xC0\xAF",             // overlong '/'
            b"\xE0\x80\xAF",         // overlong
            b"\xED\xA0\x80",         // surrogate U+D800
            b"\xF4\x90\x80\x80",     // > U+10FFFF
            b"\xF8\x88\x80\x80\x80", // 5-byte form
            b"\xFE",
            b"ok\x80ok", // lone continuation
            b"\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80edited",
        ];
        for b in bad {
            for size in 1..=b.len() {
                assert_eq!(feed_split(b, size), Err(InvalidUtf8), "{b:?} size {size}");
            }
        }
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        // 0xF4 0x90 can never start a valid code point: fail before the message ends.
        let mut v = Utf8Validator::default();
        v.feed(b"abc\xF4").unwrap();
        assert_eq!(v.feed(b"\x90"), Err(InvalidUtf8));
        let mut v = Utf8Validator::default();
        assert_eq!(v.feed(b"abc\xED\xA0"), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_at_end_is_incomplete() {
        let mut v = Utf8Validator::default();
        v.feed(b"abc\xE2\x82").unwrap();
        assert!(!v.is_complete());
        v.feed(b"\xAC").unwrap();
        assert!(v.is_complete());
    }
}
