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

/// A payload of `size` bytes (at least the header) for message `seq` sent at `sent_ns`.
pub fn encode(seq: u32, sent_ns: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{seq} {sent_ns} ").into_bytes();
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
        let p = encode(42, 123_456_789, 64);
        assert_eq!(p.len(), 64);
        assert_eq!(parse(&p), Some((42, 123_456_789)));
        assert_eq!(parse(b"hello world"), None);
        assert!(encode(1, now_ns(), 0).len() < MIN_SIZE);
    }
}
