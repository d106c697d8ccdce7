//! TLS on a worker's connections (`wss://`, `https://`): the handshake after the TCP connect,
//! reading records into plaintext for the transports, and encrypting what they send. The session
//! rules are in [`crate::tls`]; here only bytes move.
//!
//! A TLS connection's session lives boxed in `Worker::sessions`, beside the slab (the 40-byte
//! entry stays as it is). Ciphertext is read into the worker's scratch buffer after the
//! incomplete record kept from the last read; records are decrypted there in place, and the
//! plaintext (after the connection's unparsed leftover, `Conn::partial`) is handed to
//! [`Worker::consume`] like a plaintext connection's bytes. What a transport sends is encrypted
//! into `Worker::tls_out` and written; only what the kernel does not take is kept, in the
//! session's `unsent`, and goes out first on the next event.

use std::io::{self, Read, Write};
use std::net::TcpStream;

use super::{SCRATCH, St, Worker};
use crate::tls::{ClientTls, TlsError};

/// Writes `data` on a connection: plaintext straight to the socket; over TLS encrypted first,
/// and the ciphertext the kernel does not take is queued in the session (so a TLS write is
/// whole or an error, never `WouldBlock`).
pub(super) fn send(
    sock: &TcpStream,
    tls: Option<&mut ClientTls>,
    data: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<usize> {
    let Some(tls) = tls else {
        return (&*sock).write(data);
    };
    out.clear();
    tls.write(data, out).map_err(io::Error::other)?;
    send_cipher(sock, tls, out)?;
    Ok(data.len())
}

/// Writes ciphertext, after whatever is queued; what the kernel does not take is queued.
pub(super) fn send_cipher(sock: &TcpStream, tls: &mut ClientTls, cipher: &[u8]) -> io::Result<()> {
    if cipher.is_empty() {
        return Ok(());
    }
    if let Some(q) = tls.unsent.as_mut() {
        q.extend_from_slice(cipher);
        return Ok(());
    }
    let n = match (&*sock).write(cipher) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    if n < cipher.len() {
        tls.unsent = Some(Box::new(cipher[n..].to_vec()));
    }
    Ok(())
}

/// Writes what is queued, as far as the kernel takes it.
pub(super) fn flush(sock: &TcpStream, tls: &mut ClientTls) -> io::Result<()> {
    let Some(q) = tls.unsent.as_mut() else {
        return Ok(());
    };
    let mut done = 0;
    while done < q.len() {
        match (&*sock).write(&q[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if done == q.len() {
        tls.unsent = None;
    } else {
        q.drain(..done);
    }
    Ok(())
}

impl Worker {
    /// The TCP connect of `key` completed: a new session, its ClientHello sent.
    pub(super) fn start_tls(&mut self, key: usize) -> io::Result<()> {
        let Some(client) = self.tls.as_ref() else {
            return Ok(());
        };
        let mut s = match client.session() {
            Ok(s) => Box::new(s),
            Err(e) => {
                self.tls_failed(key, e);
                return Ok(());
            }
        };
        self.tls_out.clear();
        if let Err(e) = s.start(&mut self.tls_out) {
            self.tls_failed(key, e);
            return Ok(());
        }
        let c = &mut self.conns[key];
        c.st = St::TlsHandshake;
        let r = send_cipher(&c.sock, &mut s, &self.tls_out);
        if self.sessions.len() <= key {
            self.sessions.resize_with(key + 1, || None);
        }
        self.sessions[key] = Some(s);
        r
    }

    /// [`Worker::read`] for a TLS connection: ciphertext in, plaintext to [`Worker::consume`].
    pub(super) fn read_tls(&mut self, key: usize, mut budget: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut plain = std::mem::take(&mut self.tls_plain);
        while budget > 0
            && let Some(c) = self.conns.get_mut(key)
            && let Some(tls) = self.sessions.get_mut(key).and_then(|s| s.as_deref_mut())
        {
            let want = SCRATCH.min(budget);
            let start = tls.pending.as_ref().map_or(0, |p| p.len());
            if let Some(p) = tls.pending.take() {
                if scratch.len() < start + SCRATCH {
                    scratch.resize(start + SCRATCH, 0);
                }
                scratch[..start].copy_from_slice(&p);
            }
            let n = match c.sock.read(&mut scratch[start..start + want]) {
                Ok(0) => {
                    let e = io::Error::from(io::ErrorKind::UnexpectedEof);
                    self.fail(key, &e);
                    break;
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    if start > 0 {
                        tls.pending = Some(Box::new(scratch[..start].to_vec()));
                    }
                    if e.kind() == io::ErrorKind::WouldBlock {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    self.fail(key, &e);
                    break;
                }
            };
            budget -= n;
            if self.draining {
                self.drained += n as u64;
            }
            let total = start + n;
            plain.clear();
            if let Some(p) = c.partial.take() {
                plain.extend_from_slice(&p);
            }
            let before = plain.len();
            self.tls_out.clear();
            let res = tls.read(&mut scratch[..total], &mut plain, &mut self.tls_out);
            // Handshake messages, an alert: ahead of anything else.
            let sent = send_cipher(&c.sock, tls, &self.tls_out);
            let r = match res {
                Ok(r) => r,
                Err(e) => {
                    self.tls_failed(key, e);
                    break;
                }
            };
            if let Err(e) = sent {
                self.fail(key, &e);
                break;
            }
            tls.pending = (r.used < total).then(|| Box::new(scratch[r.used..total].to_vec()));
            if r.handshake_done {
                self.tls_handshakes += 1;
                if self.ramp_end.is_none() {
                    self.tls_ramp_handshakes += 1;
                }
                if tls.resumed() {
                    self.tls_resumed += 1;
                }
                if let Err(e) = self.on_connected(key) {
                    self.fail(key, &e);
                    break;
                }
            }
            if plain.len() > before {
                let used = self.consume(key, &plain);
                if let Some(c) = self.conns.get_mut(key)
                    && used < plain.len()
                {
                    c.partial = Some(Box::new(plain[used..].to_vec()));
                }
            } else if !plain.is_empty()
                && let Some(c) = self.conns.get_mut(key)
            {
                c.partial = Some(Box::new(plain.to_vec()));
            }
            if r.peer_closed && self.conns.contains(key) {
                // close_notify: the server is done with this connection.
                let e = io::Error::from(io::ErrorKind::UnexpectedEof);
                self.fail(key, &e);
                break;
            }
        }
        plain.clear();
        if plain.capacity() > SCRATCH * 2 {
            plain = Vec::new();
        }
        self.tls_plain = plain;
        self.scratch = scratch;
    }

    /// Writes what `key`'s session has queued (on any event of the connection).
    pub(super) fn flush_tls(&mut self, key: usize) -> io::Result<()> {
        match (
            self.conns.get(key),
            self.sessions.get_mut(key).and_then(|s| s.as_deref_mut()),
        ) {
            (Some(c), Some(tls)) => flush(&c.sock, tls),
            _ => Ok(()),
        }
    }

    /// A TLS failure on `key`: counted by kind (the first one's text kept for the report), the
    /// connection dropped. A bad record on an open connection is the server's doing: a protocol
    /// error.
    pub(super) fn tls_failed(&mut self, key: usize, e: TlsError) {
        let open = self.conns.get(key).is_some_and(super::Conn::is_open);
        match &e {
            TlsError::Cert(_) => self.errors.tls_cert += 1,
            TlsError::Handshake(_) => self.errors.tls_handshake += 1,
            TlsError::Record(_) if open => self.errors.protocol += 1,
            TlsError::Record(_) => self.errors.tls_handshake += 1,
        }
        self.tls_first_error.get_or_insert_with(|| e.to_string());
        self.drop_conn(key);
    }

    /// This client closes `key`: close_notify first (best effort: the socket closes next).
    pub(super) fn close_notify(&mut self, key: usize) {
        if let (Some(c), Some(tls)) = (
            self.conns.get(key),
            self.sessions.get_mut(key).and_then(|s| s.as_deref_mut()),
        ) {
            self.tls_out.clear();
            tls.close_notify(&mut self.tls_out);
            let _ = send_cipher(&c.sock, tls, &self.tls_out);
            let _ = flush(&c.sock, tls);
        }
    }
}
