//! Client ids and `BAYEUX_BROWSER` cookie values: 128 bits, written as 32 hex digits. Kept as
//! numbers (16 bytes in a client's record, a held connect and a WebSocket's state), never as
//! strings. The bits are drawn by the caller (see [`super::Env::random`]), never here.

use std::num::NonZeroU64;

/// A client id.
pub type Id = u128;

/// The id written as `id` (32 hex digits, either case); `None` for anything else, which can
/// name no client.
pub fn parse_id(id: &str) -> Option<Id> {
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(id, 16).ok())
        .flatten()
}

/// `id` as written on the wire: 32 lowercase hex digits.
pub fn hex(id: Id) -> String {
    format!("{id:032x}")
}

/// `id` as records keep it: two halves, high first (a `u128` would align a record to 16 bytes).
pub fn halves(id: Id) -> [u64; 2] {
    [(id >> 64) as u64, id as u64]
}

/// A client id as a held connect and a WebSocket connection keep it: 16 bytes, 8-byte aligned,
/// no string, and an `Option` of it no larger (no id has a zero low half: the store draws
/// again). Written as [`hex`] (the id as issued).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientId {
    hi: u64,
    lo: NonZeroU64,
}

impl ClientId {
    /// `id`, unless its low half is zero (no client has such an id).
    pub fn new(id: Id) -> Option<ClientId> {
        Some(ClientId {
            hi: (id >> 64) as u64,
            lo: NonZeroU64::new(id as u64)?,
        })
    }

    /// The id written as `client`, if it can be a client's.
    pub fn parse(client: &str) -> Option<ClientId> {
        parse_id(client).and_then(ClientId::new)
    }

    pub fn id(self) -> Id {
        u128::from(self.hi) << 64 | u128::from(self.lo.get())
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.id())
    }
}

/// A `BAYEUX_BROWSER` cookie value as stored: 32 hex digits, not zero, as two halves (so the
/// client record keeps 8-byte alignment).
pub fn browser_of(cookie: Option<&str>) -> Option<[u64; 2]> {
    let id = cookie.and_then(parse_id).filter(|&id| id != 0)?;
    Some(halves(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B1: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn ids_parse_only_as_32_hex_digits() {
        assert_eq!(parse_id(B1), Some(0x0123456789abcdef0123456789abcdef));
        assert_eq!(parse_id(&B1.to_uppercase()), parse_id(B1));
        for bad in [
            "",
            "0123",
            "+123456789abcdef0123456789abcdef",
            "g123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
        assert_eq!(hex(7), "00000000000000000000000000000007");
        assert_eq!(parse_id(&hex(u128::MAX)), Some(u128::MAX));
        assert_eq!(browser_of(Some(&hex(0))), None, "zero is no cookie");
        assert_eq!(browser_of(Some(B1)), Some([0x0123456789abcdef; 2]));
        let c = ClientId::parse(&B1.to_uppercase()).unwrap();
        assert_eq!(
            (c.id(), c.to_string()),
            (parse_id(B1).unwrap(), B1.to_string())
        );
        assert_eq!(ClientId::parse("x"), None);
        assert_eq!(ClientId::new(1 << 64), None, "a zero low half");
        assert_eq!(std::mem::size_of::<Option<ClientId>>(), 16);
    }
}
