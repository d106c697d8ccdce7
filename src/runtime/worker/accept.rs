//! Accepting connections: at the end of each turn, up to [`ACCEPT_BATCH`] per turn from the
//! worker's listener; `--max-connections` checked over the whole process; EMFILE and friends
//! pause accepting for `--accept-pause` instead of spinning (counted in `accept_errors`).

use std::io::{self, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use mio::Interest;
use mio::net::TcpListener;
use mio::unix::SourceFd;

use super::{WAKER, Worker, token};
use crate::logging::Event;
use crate::proto::http;
use crate::runtime::conn::Conn;
use crate::stats::WorkerStats;

/// Accepts per turn before yielding to established connections.
pub(super) const ACCEPT_BATCH: usize = 256;

impl Worker {
    pub(super) fn accept(&mut self) {
        if let Some(until) = self.accept_paused_until {
            if Instant::now() < until {
                return;
            }
            self.accept_paused_until = None;
        }
        if self.accept_more {
            match self.listener.take() {
                Some(listener) => {
                    self.accept_more = self.accept_batch(&listener, false);
                    self.listener = Some(listener);
                }
                None => self.accept_more = false,
            }
        }
        if self.accept_more_tls && self.accept_paused_until.is_none() {
            match self.tls_listener.take() {
                Some(listener) => {
                    self.accept_more_tls = self.accept_batch(&listener, true);
                    self.tls_listener = Some(listener);
                }
                None => self.accept_more_tls = false,
            }
        }
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections; whether more may be waiting.
    pub(super) fn accept_batch(&mut self, listener: &TcpListener, tls: bool) -> bool {
        for _ in 0..ACCEPT_BATCH {
            match listener.accept() {
                Ok((sock, _)) => self.admit(sock, tls),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted) => {}
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unexpected: retrying now
                    // would spin, so pause accepting; queued connections wait in the backlog.
                    WorkerStats::add(&self.stats.accept_errors, 1);
                    let pause = self.cfg.accept_pause_ms;
                    self.notes.note(Event::AcceptError, || {
                        format!("{e}; accepting paused for {pause} ms")
                    });
                    let now = Instant::now();
                    self.accept_paused_until = Some(now + self.cfg.accept_pause());
                    return true;
                }
            }
        }
        // Batch used up: continue next turn.
        true
    }

    pub(super) fn admit(&mut self, sock: mio::net::TcpStream, tls: bool) {
        let mut sock = TcpStream::from(sock);
        let open = self.shared.conns.fetch_add(1, Ordering::Relaxed);
        if open >= self.cfg.max_connections {
            self.shared.conns.fetch_sub(1, Ordering::Relaxed);
            WorkerStats::add(&self.stats.refused, 1);
            let max = self.cfg.max_connections;
            self.notes.note(Event::Refused, || {
                format!("{open} open of --max-connections {max}")
            });
            // Best effort: the client learns why before the close (a TLS client could not
            // read a plaintext answer; it sees the close).
            if !tls {
                let _ = sock.write(&http::response(
                    &self.date,
                    503,
                    "Service Unavailable",
                    "text/plain; charset=utf-8",
                    "",
                    b"connection limit reached\n",
                    false,
                ));
            }
            return;
        }
        let session = match (tls, &self.shared.tls) {
            (true, Some(certs)) => match crate::proto::tls::Tls::new(certs.current()) {
                Ok(s) => Some(Box::new(s)),
                Err(_) => {
                    self.shared.conns.fetch_sub(1, Ordering::Relaxed);
                    WorkerStats::add(&self.stats.tls_handshake_errors, 1);
                    return;
                }
            },
            _ => None,
        };
        // Latency over batching: frames go out when written (coalescing is done by writev).
        let _ = sock.set_nodelay(true);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let entry = self.conns.vacant_entry();
        let idx = entry.key();
        if idx >= WAKER.0 {
            // Cannot happen below ~4 billion connections; refuse rather than alias a token.
            self.shared.conns.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let conn = Conn::open(sock, generation, &self.stats);
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&conn.sock.as_raw_fd()),
            token(idx, generation),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.notes.note(Event::AcceptError, || {
                format!("registering the socket: {e}")
            });
            self.shared.conns.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        entry.insert(conn);
        if let Some(s) = session {
            if self.tls.len() <= idx {
                self.tls.resize_with(idx + 1, || None);
            }
            self.tls[idx] = Some(s);
            WorkerStats::add(&self.stats.tls_conns, 1);
        }
        WorkerStats::add(&self.stats.accepted, 1);
        let at = self.after(self.cfg.head_timeout);
        self.set_deadline(idx, at);
    }
}
