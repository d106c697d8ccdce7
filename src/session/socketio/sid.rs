//! Engine.IO session ids: which worker owns the session, its slot there and the slot's
//! generation, and 64 random bits, as 23 characters of URL-safe base64. The worker and slot
//! let any worker send a request to the owner without a shared table; the random bits make an
//! id unguessable, so that a session cannot be taken over by naming its slot.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

/// What a session id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sid {
    pub worker: u8,
    pub slot: u32,
    pub generation: u32,
    pub secret: u64,
}

impl Sid {
    pub fn encode(&self) -> String {
        let mut b = [0u8; 17];
        b[0] = self.worker;
        b[1..5].copy_from_slice(&self.slot.to_le_bytes());
        b[5..9].copy_from_slice(&self.generation.to_le_bytes());
        b[9..17].copy_from_slice(&self.secret.to_le_bytes());
        B64.encode(b)
    }

    /// The id `s` names, if it is one of ours (any other string: `None`).
    pub fn decode(s: &str) -> Option<Sid> {
        if s.len() != 23 {
            return None;
        }
        let mut b = [0u8; 18];
        let n = B64.decode_slice(s, &mut b).ok()?;
        if n != 17 {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Some(Sid {
            worker: b[0],
            slot: u32_at(1),
            generation: u32_at(5),
            secret: u64::from_le_bytes(b[9..17].try_into().expect("8 bytes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Sid {
            worker: 3,
            slot: 70_000,
            generation: 9,
            secret: 0xdead_beef_0123_4567,
        };
        let e = s.encode();
        assert_eq!(e.len(), 23);
        assert!(
            e.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        assert_eq!(Sid::decode(&e), Some(s));
        for bad in [
            "",
            "abc",
            "!!!!!!!!!!!!!!!!!!!!!!!",
            &e[..22],
            &format!("{e}A"),
        ] {
            assert_eq!(Sid::decode(bad), None, "{bad:?}");
        }
    }
}
