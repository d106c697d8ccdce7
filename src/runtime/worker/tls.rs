//! TLS on the worker (`--tls-listen`): reading records into plaintext for the HTTP and
//! WebSocket code, and encrypting what it sends. The session rules are in
//! [`crate::proto::tls`]; here only bytes move.
//!
//! A TLS connection's session lives in `Worker::tls` beside the slab (a plaintext connection's
//! entry stays as it is). Ciphertext is read into the worker's scratch buffer after the
//! incomplete record kept from the last read; records are decrypted there in place and the
//! plaintext is handed to [`Worker::process`] like a plaintext connection's bytes (its unparsed
//! rest kept in `Conn::tail`, as plaintext). What a handler sends is gathered, encrypted into
//! `Worker::tls_out` and written; only what the kernel does not take is queued, as ciphertext
//! (never dropped: a TLS stream cannot skip a record).

use std::io::{self, Read, Write};
use std::net::Shutdown;

use bytes::Bytes;

use super::conn_io::{Dead, Handled, keep_leftover};
use super::{READ_BUDGET, Worker};
use crate::proto::http;
use crate::proto::tls::{Tls, TlsError};
use crate::runtime::conn::{Conn, flag};
use crate::runtime::outq::OutQueue;
use crate::stats::WorkerStats;

/// Most ciphertext kept for an incomplete record or handshake message (rustls joins a
/// handshake message over records in place, up to 64 KiB): beyond it the connection is refused.
/// Well below the scratch buffer, which must hold it and a read after it.
const MAX_PENDING: usize = 32 * 1024;

/// The body of the answer to plaintext HTTP on the TLS port (sent in plaintext, then the
/// connection ends).
const NOT_TLS: &[u8] = b"this port speaks TLS: use https:// or wss:// here\n";

impl Worker {
    /// The TLS session of slot `idx`, if it is a TLS connection.
    pub(super) fn is_tls(&self, idx: usize) -> bool {
        self.tls.get(idx).is_some_and(Option::is_some)
    }

    /// [`Worker::on_readable`] for a TLS connection.
    pub(super) fn tls_read_loop(&mut self, idx: usize, scratch: &mut [u8]) -> Handled {
        let mut plain = std::mem::take(&mut self.tls_plain);
        let r = self.tls_read(idx, scratch, &mut plain);
        plain.clear();
        if plain.capacity() > scratch.len() {
            plain.shrink_to(scratch.len());
        }
        self.tls_plain = plain;
        r
    }

    fn tls_read(&mut self, idx: usize, scratch: &mut [u8], plain: &mut Vec<u8>) -> Handled {
        let mut budget = READ_BUDGET;
        loop {
            let conn = &mut self.conns[idx];
            if conn.has(flag::ACK_WAIT) {
                break; // read again once the publish is answered (see `resume`)
            }
            let tls = self.tls[idx].as_deref_mut().expect("a TLS connection");
            let start = tls.pending.as_ref().map_or(0, |p| p.len());
            if start > MAX_PENDING {
                // An incomplete handshake message this large is not a browser's ClientHello (a
                // few KiB); after the handshake a record is at most 18 KiB.
                WorkerStats::add(&self.stats.tls_handshake_errors, 1);
                return Err(Dead);
            }
            if let Some(p) = tls.pending.as_deref() {
                scratch[..start].copy_from_slice(p);
            }
            let n = match read_some(&mut conn.sock, &mut scratch[start..]) {
                Ok(0) => {
                    if !tls.peer_closed() {
                        WorkerStats::add(&self.stats.tls_no_close_notify, 1);
                    }
                    return Err(Dead);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // A reset (the peer closed with our records unread) is a close without
                    // close_notify too.
                    if !tls.peer_closed() {
                        WorkerStats::add(&self.stats.tls_no_close_notify, 1);
                    }
                    return Err(Dead);
                }
            };
            let total = start + n;
            budget = budget.saturating_sub(n);
            plain.clear();
            if let Some(t) = conn.tail.take() {
                plain.extend_from_slice(&t);
            }
            let before = plain.len();
            self.tls_out.clear();
            let res = tls.read(&mut scratch[..total], plain, &mut self.tls_out);
            if !self.tls_out.is_empty() {
                // Handshake messages, tickets, an alert: ahead of anything else we send.
                send_cipher(&mut self.conns[idx], &self.tls_out, &self.stats)?;
            }
            let tls = self.tls[idx].as_deref_mut().expect("a TLS connection");
            let r = match res {
                Ok(r) => r,
                Err(TlsError::NotTls) => {
                    WorkerStats::add(&self.stats.tls_not_tls, 1);
                    let resp = http::response(
                        &self.date,
                        400,
                        "Bad Request",
                        "text/plain; charset=utf-8",
                        "",
                        NOT_TLS,
                        false,
                    );
                    let _ = self.conns[idx].sock.write(&resp);
                    let _ = self.conns[idx].sock.shutdown(Shutdown::Write);
                    return Err(Dead);
                }
                Err(TlsError::Handshake(_)) => {
                    WorkerStats::add(&self.stats.tls_handshake_errors, 1);
                    return Err(Dead);
                }
                Err(TlsError::Record(_)) => {
                    WorkerStats::add(&self.stats.tls_record_errors, 1);
                    return Err(Dead);
                }
            };
            tls.pending = (r.used < total).then(|| Box::new(scratch[r.used..total].to_vec()));
            if r.handshake_done {
                WorkerStats::add(&self.stats.tls_handshakes, 1);
                if tls.resumed() {
                    WorkerStats::add(&self.stats.tls_resumed, 1);
                }
            }
            if plain.len() > before {
                let c = self.process(idx, plain)?;
                keep_leftover(&mut self.conns[idx], &plain[c.min(plain.len())..]);
            } else if !plain.is_empty() {
                keep_leftover(&mut self.conns[idx], plain); // nothing new: the rest as it was
            }
            if r.peer_closed {
                // The client is done sending (close_notify); it is not served further.
                return Err(Dead);
            }
            if budget == 0 {
                let g = self.conns[idx].generation;
                self.retry.push((idx as u32, g));
                break;
            }
        }
        Ok(())
    }

    /// The connection is closing and everything queued has gone: close_notify, then the write
    /// side is shut (by the caller).
    pub(super) fn tls_close_notify(&mut self, idx: usize) {
        if let Some(tls) = self.tls.get_mut(idx).and_then(|t| t.as_deref_mut()) {
            self.tls_out.clear();
            tls.close_notify(&mut self.tls_out);
            // Best effort: the peer may be gone already.
            let _ = self.conns[idx].sock.write(&self.tls_out);
        }
    }

    /// A TLS connection is dropped: its session goes with it.
    pub(super) fn tls_forget(&mut self, idx: usize) {
        if self.tls.get_mut(idx).and_then(Option::take).is_some() {
            WorkerStats::sub(&self.stats.tls_conns, 1);
        }
    }

    /// Whether slot `idx` is a TLS connection still in its handshake.
    pub(super) fn tls_handshaking(&self, idx: usize) -> bool {
        self.tls
            .get(idx)
            .and_then(Option::as_deref)
            .is_some_and(Tls::is_handshaking)
    }
}

/// [`send_on`] for a TLS connection: `bufs` are gathered into `plain`, encrypted into `out`
/// (one record per 16 KiB) and sent; what the kernel does not take is queued as ciphertext.
pub(super) fn send_tls(
    conn: &mut Conn,
    tls: &mut Tls,
    bufs: &[Bytes],
    stats: &WorkerStats,
    plain: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Handled {
    plain.clear();
    for b in bufs {
        plain.extend_from_slice(b);
    }
    out.clear();
    tls.write(plain, out).map_err(|_| Dead)?;
    let r = send_cipher(conn, out, stats);
    if plain.capacity() > 1 << 20 {
        *plain = Vec::new();
        *out = Vec::new();
    }
    r
}

/// Writes records straight from the worker's buffer; only what the kernel does not take is
/// copied into the connection's queue (behind what waits there already). Ciphertext is never
/// droppable: a TLS stream cannot skip a record.
pub(super) fn send_cipher(conn: &mut Conn, cipher: &[u8], stats: &WorkerStats) -> Handled {
    if let Some(q) = conn.out.as_mut() {
        q.push(Bytes::copy_from_slice(cipher), false);
        WorkerStats::add(&stats.bytes_queued, cipher.len() as u64);
        return Ok(());
    }
    let mut written = 0;
    while written < cipher.len() {
        match conn.sock.write(&cipher[written..]) {
            Ok(0) => return Err(Dead),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Dead),
        }
    }
    WorkerStats::add(&stats.bytes_out, written as u64);
    if written < cipher.len() {
        // Edge-triggered: the writable event that follows this WouldBlock flushes the queue.
        let mut q = Box::<OutQueue>::default();
        q.push(Bytes::copy_from_slice(&cipher[written..]), false);
        WorkerStats::add(&stats.bytes_queued, (cipher.len() - written) as u64);
        conn.out = Some(q);
    }
    Ok(())
}

/// Reads once, retrying on EINTR.
fn read_some(sock: &mut std::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match sock.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}
