//! Free loopback ports for the tests' own servers (redis-server, fixed-port restarts).

use std::net::TcpListener;

/// A port no one listens on, below the kernel's ephemeral range: a port the kernel handed out
/// for `:0` could be handed out again, between its test closing it and redis-server binding it,
/// to another test's server or to an outgoing connection (redis-server then fails to bind, and
/// the readiness check connects to the other listener).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (base, span) = (10_000u16, low.saturating_sub(10_000).max(1000));
    // Somewhere else in the span for each process and each call (this file is compiled into
    // more than one module of a test binary, each with its own counter).
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let seed = ((std::process::id() ^ nanos) % u32::from(span)) as u16;
    for _ in 0..span {
        let port = base + (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + span)
}
