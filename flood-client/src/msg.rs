//! The payload of every published message: `"{seq} {sent_ns} "` then padding to the requested
//! size. `seq` counts per channel from 0; `sent_ns` is CLOCK_MONOTONIC, which is one clock for
//! every process on the machine, so latency is measured across the publisher and the workers.

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid, owned timespec.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Shortest payload: two numbers and their separators.
pub const MIN_SIZE: usize = 32;

/// A payload of `size` bytes (at least the header) for message `seq` sent at `sent_ns`, padded
/// with dots, or with `json` with lines of a price feed (`{"sym":"S042","bid":101.23,…},`:
/// what a JSON feed compresses like, for `--deflate` runs; dots compress a hundredfold).
pub fn encode(seq: u32, sent_ns: u64, size: usize, json: bool) -> Vec<u8> {
    let mut v = format!("{seq} {sent_ns} ").into_bytes();
    let header = v.len();
    if json {
        // A small generator seeded by the message: quotes vary within and across messages.
        let mut x = u64::from(seq).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        while v.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let px = 5_000 + x % 20_000;
            let line = format!(
                "{{\"sym\":\"S{:03}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"size\":{}}},",
                (x >> 20) % 500,
                px / 100,
                px % 100,
                px / 100,
                (px + 1 + (x >> 40) % 9) % 100,
                (x >> 32) % 5000
            );
            v.extend_from_slice(line.as_bytes());
        }
        v.truncate(size.max(header));
    }
    if v.len() < size {
        v.resize(size, b'.');
    }
    v
}

/// `(seq, sent_ns)` from a payload, or `None` if it is not ours.
pub fn parse(p: &[u8]) -> Option<(u32, u64)> {
    let mut it = p.split(|&b| b == b' ');
    let seq = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    let ts = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
    Some((seq, ts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = encode(42, 123_456_789, 64, false);
        assert_eq!(p.len(), 64);
        assert_eq!(parse(&p), Some((42, 123_456_789)));
        assert_eq!(parse(b"hello world"), None);
        assert!(encode(1, now_ns(), 0, false).len() < MIN_SIZE);
        // JSON padding: the exact size, the header parses, and it is not dots.
        let j = encode(42, 123_456_789, 1024, true);
        assert_eq!(j.len(), 1024);
        assert_eq!(parse(&j), Some((42, 123_456_789)));
        assert!(j.starts_with(b"42 123456789 {\"sym\":\"S"));
        assert_ne!(j, encode(43, 123_456_789, 1024, true), "messages differ");
        assert_eq!(encode(1, 2, 3, true), b"1 2 ");
    }
}
