//! Private push addresses (UniversalComet): an address is 128 random bits as 32 lowercase hex
//! digits, and its channel is `~push/{address}`. Knowing the address is the permission to send
//! to it; a private channel is never matched by a wildcard (Bayeux `/**`, a token's `**`).
//! Sending is bounded per source address by [`Limiter`], a token bucket per IP in a bounded
//! table. Sans-IO: the random bits and the time come from the caller.

use std::collections::HashMap;
use std::net::IpAddr;

/// The first segment of every private channel.
pub const PREFIX: &str = "~push/";

/// Hex digits of an address.
pub const ADDRESS_LEN: usize = 32;

/// The address for 128 random bits.
pub fn address(bits: u128) -> String {
    format!("{bits:032x}")
}

/// Whether `s` is an address: exactly 32 lowercase hex digits.
pub fn valid_address(s: &str) -> bool {
    s.len() == ADDRESS_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The private channel of an address.
pub fn channel(address: &str) -> String {
    format!("{PREFIX}{address}")
}

/// Whether a native channel name is in the private namespace (`~push` or below it).
pub fn is_private(channel: &str) -> bool {
    channel == "~push" || channel.starts_with(PREFIX)
}

/// Whether a native channel in the private namespace is a well-formed private channel
/// (`~push/` and an address); other names under `~push` are refused.
pub fn valid_private(channel: &str) -> bool {
    channel.strip_prefix(PREFIX).is_some_and(valid_address)
}

/// Sends per second and burst per source address, in a table of at most `max_sources`
/// addresses.
#[derive(Debug)]
pub struct Limiter {
    per_sec: u32,
    burst: u32,
    max_sources: usize,
    /// Source → (tokens in thousandths, when last refilled in ms).
    buckets: HashMap<IpAddr, (u64, u64)>,
}

impl Limiter {
    /// `per_sec` = 0 turns the limit off.
    pub fn new(per_sec: u32, burst: u32, max_sources: usize) -> Self {
        Limiter {
            per_sec,
            burst: burst.max(1),
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one send for `ip` at `now_ms` (a monotonic clock): whether it is within the limit.
    pub fn take(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if self.per_sec == 0 {
            return true;
        }
        let full = u64::from(self.burst) * 1000;
        let rate = u64::from(self.per_sec);
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_sources {
            // A bucket that has refilled is the same as none: forget those. If every source is
            // still limited, forget an arbitrary one (it starts again with a full burst): the
            // table never grows past its bound.
            self.buckets
                .retain(|_, (tokens, at)| *tokens + now_ms.saturating_sub(*at) * rate < full);
            if self.buckets.len() >= self.max_sources
                && let Some(k) = self.buckets.keys().next().copied()
            {
                self.buckets.remove(&k);
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((full, now_ms));
        *tokens = (*tokens + now_ms.saturating_sub(*at) * rate).min(full);
        *at = now_ms;
        if *tokens >= 1000 {
            *tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Sources in the table.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let a = address(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(a, "0123456789abcdef0011223344556677");
        assert!(valid_address(&a));
        assert_eq!(address(1).len(), 32);
        assert!(!valid_address("0123456789ABCDEF0011223344556677"));
        assert!(!valid_address("0123"));
        assert!(valid_private(&channel(&a)));
        assert!(is_private(&channel(&a)));
        assert!(is_private("~push"));
        assert!(!valid_private("~push/x"));
        assert!(!is_private("push/abc"));
        assert!(!is_private("~pushy"));
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        let mut l = Limiter::new(2, 3, 100);
        assert!((0..3).all(|_| l.take(ip, 0)), "the burst");
        assert!(!l.take(ip, 0));
        assert!(l.take(other, 0), "another source has its own bucket");
        assert!(!l.take(ip, 499));
        assert!(l.take(ip, 500), "one token every 500 ms at 2/s");
        assert!(!l.take(ip, 500));
        assert!(
            (0..3).all(|_| l.take(ip, 10_000)),
            "refilled to the burst, not beyond"
        );
        assert!(!l.take(ip, 10_000));
    }

    #[test]
    fn table_is_bounded() {
        let mut l = Limiter::new(1, 1, 4);
        for i in 0..100u32 {
            let ip = IpAddr::from(i.to_be_bytes());
            assert!(l.take(ip, 0));
            assert!(l.sources() <= 4);
        }
        // Refilled buckets are forgotten first.
        let mut l = Limiter::new(1, 1, 2);
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            "10.0.0.3".parse().unwrap(),
        );
        assert!(l.take(a, 0));
        assert!(l.take(b, 900));
        assert!(l.take(c, 1000), "a has refilled and makes room");
        assert!(!l.take(b, 1000), "b is still limited");
    }

    #[test]
    fn zero_rate_is_off() {
        let mut l = Limiter::new(0, 1, 1);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!((0..1000).all(|_| l.take(ip, 0)));
        assert_eq!(l.sources(), 0);
    }
}
