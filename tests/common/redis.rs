//! A `redis-server` of a test's own (Debian's package), on a free loopback port, killed on
//! drop. Extra arguments set passwords, ACL users or TLS.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use super::wait_until;

#[path = "ports.rs"]
mod ports;
pub use ports::free_port;

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
