//! The established-connections hash: the kernel finds the socket of every received TCP segment
//! (each ACK included) by a lookup there, walking one bucket's chain. The machine's table is
//! sized at boot from its memory (one bucket per 128 KiB: 262,144 on a 24 GiB box;
//! `thash_entries=` on the kernel command line sets it) and cannot grow; a network namespace
//! made after `net.ipv4.tcp_child_ehash_entries` is set gets a table of that size. With far
//! more sockets than buckets every lookup walks several sockets, each a cache miss at this
//! scale: in a broadcast to 1,000,000 loopback subscribers (2,000,000 sockets in 262,144
//! buckets) the lookup was 25.8% of all CPU, 10.1% with 4,194,304 buckets (bench/RESULTS.md).

use super::{Finding, Limits, Plan, UNKNOWN, Verdict, finding, sockets, unknown};

/// Sockets per bucket past which the chains are worth a warning.
pub const MAX_SOCKETS_PER_BUCKET: u64 = 2;

/// The most buckets the kernel gives a namespace (`tcp_child_ehash_entries` is at most 2^24).
const MAX_BUCKETS: u64 = 1 << 24;

/// Buckets to ask for: a power of two with at most one socket per bucket, within the kernel's
/// maximum.
pub fn buckets_for(sockets: u64) -> u64 {
    sockets
        .max(1)
        .checked_next_power_of_two()
        .map_or(MAX_BUCKETS, |n| n.min(MAX_BUCKETS))
}

/// `net.ipv4.tcp_ehash_entries` as [`Limits::ehash_buckets`]: its absolute value (a namespace
/// that shares the machine's table reads it negative), or [`UNKNOWN`].
pub fn parse_buckets(text: &str) -> u64 {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|&n| n != 0)
        .map_or(UNKNOWN, i64::unsigned_abs)
}

/// A warning when the plan puts more than [`MAX_SOCKETS_PER_BUCKET`] sockets in each bucket.
pub fn check(plan: &Plan, l: &Limits) -> Finding {
    const NAME: &str = "tcp_ehash_entries";
    if l.ehash_buckets == UNKNOWN {
        return unknown(NAME, "/proc/sys/net/ipv4/tcp_ehash_entries");
    }
    let need = sockets(plan);
    if need <= l.ehash_buckets.saturating_mul(MAX_SOCKETS_PER_BUCKET) {
        return finding(NAME, Verdict::Ok);
    }
    finding(
        NAME,
        Verdict::Warn(format!(
            "{NAME}: {need} sockets in {} buckets of the established-connections hash ({:.1} \
             per bucket): every received segment walks its bucket, which costs CPU at this \
             scale. The machine's table is sized at boot (`thash_entries={}` on the kernel \
             command line); a network namespace made after `sysctl -w \
             net.ipv4.tcp_child_ehash_entries={}` gets its own (bench/c1m/run.sh runs in one)",
            l.ehash_buckets,
            need as f64 / l.ehash_buckets as f64,
            buckets_for(need),
            buckets_for(need)
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_parsing() {
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(2_000_000), 2_097_152);
        assert_eq!(buckets_for(1 << 21), 1 << 21);
        assert_eq!(buckets_for(u64::MAX), MAX_BUCKETS);
        assert_eq!(parse_buckets("262144\n"), 262_144);
        assert_eq!(parse_buckets("-262144\n"), 262_144);
        assert_eq!(parse_buckets(""), UNKNOWN);
        assert_eq!(parse_buckets("0"), UNKNOWN);
        assert_eq!(parse_buckets("x"), UNKNOWN);
    }
}
