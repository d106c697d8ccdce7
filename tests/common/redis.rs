//! A `redis-server` of a test's own (Debian's package), on a free loopback port, killed on
//! drop. Extra arguments set passwords, ACL users or TLS.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

use super::wait_until;

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Redis {
        Self::start_with(port, &[])
    }

    /// `redis-server --port PORT` plus `args`, ready when the port takes connections.
    pub fn start_with(port: u16, args: &[&str]) -> Redis {
        Self::spawn(&["--port", &port.to_string()], args, port)
    }

    /// Started with `head` and `args`; ready when `ready_port` takes connections.
    pub fn spawn(head: &[&str], args: &[&str], ready_port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(head)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test.sh installs it)");
        let r = Redis {
            child,
            port: ready_port,
        };
        assert!(
            wait_until(10, || TcpStream::connect(("127.0.0.1", ready_port)).is_ok()),
            "redis-server did not start on {ready_port}"
        );
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    // Each test process starts somewhere else in the span; its tests take the next ports.
    let seed = (std::process::id() as u16).wrapping_mul(7919) % span;
    for _ in 0..span {
        let port = base + (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {base}..{}", base + span)
}
