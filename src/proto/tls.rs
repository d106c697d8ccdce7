//! TLS on a connection, sans-IO: rustls' unbuffered server state machine driven with buffers the
//! caller owns. Ciphertext in, plaintext and records to send out; plaintext in, records out. No
//! socket, no clock: the worker reads and writes, and decides what a timeout means.
//!
//! Why the unbuffered API: rustls' buffered `ServerConnection` keeps its own receive and send
//! buffers per connection. Here an idle TLS connection keeps only its session (keys, sequence
//! numbers, the state machine); records are decrypted in place in the worker's scratch buffer
//! and encrypted into a buffer of the worker's, and only what the kernel does not take is kept
//! (in the connection's outbound queue, like a plaintext connection's).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;

pub mod record;
use record::Traffic;
use rustls::unbuffered::{ConnectionState, EncryptError, InsufficientSizeError};

/// What the peer did wrong, or why the session cannot go on; each kind has a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The first bytes are not a TLS record: most likely plaintext HTTP sent to the TLS port.
    NotTls,
    /// The handshake failed: no common version or cipher suite, a bad message, a
    /// renegotiation attempt (refused by rustls) and the like. The text is rustls'.
    Handshake(String),
    /// A record after the handshake was bad: does not decrypt, oversized, unexpected.
    Record(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::NotTls => f.write_str("not a TLS record (plaintext on the TLS port?)"),
            TlsError::Handshake(e) => write!(f, "handshake failed: {e}"),
            TlsError::Record(e) => write!(f, "bad record: {e}"),
        }
    }
}

/// What [`Tls::read`] did with the ciphertext it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Ciphertext bytes done with, from the front: the rest is an incomplete record to be
    /// given again, with what arrives next appended.
    pub used: usize,
    /// The peer sent close_notify: nothing more will come from it.
    pub peer_closed: bool,
    /// The handshake completed during this call.
    pub handshake_done: bool,
}

/// The first byte of a TLS record is its content type: 20–23 (change_cipher_spec, alert,
/// handshake, application_data). Anything else at the start of a connection is not TLS.
pub fn looks_like_tls(first: u8) -> bool {
    (20..=23).contains(&first)
}

/// One connection's TLS session: rustls' connection until the handshake is done, then only
/// the record layer ([`record::Traffic`]).
pub struct Tls {
    /// The handshake (rustls' state machine), until it is complete.
    hs: Option<Box<UnbufferedServerConnection>>,
    /// After the handshake: keys, IVs, sequence numbers.
    traffic: Option<Box<Traffic>>,
    /// Ciphertext received but not yet a whole record (only while one is incomplete).
    pub pending: Option<Box<Vec<u8>>>,
    peer_closed: bool,
    sent_close: bool,
    resumed: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshaking", &self.is_handshaking())
            .field("traffic", &self.traffic)
            .field("pending", &self.pending.as_ref().map(|p| p.len()))
            .finish()
    }
}

impl Tls {
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        let conn = UnbufferedServerConnection::new(config)
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        Ok(Tls {
            hs: Some(Box::new(conn)),
            traffic: None,
            pending: None,
            peer_closed: false,
            sent_close: false,
            resumed: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.hs.as_ref().is_some_and(|c| c.is_handshaking())
    }

    /// Whether this session resumed an earlier one (ticket or session id).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The handshake is over and nothing is left to send: rustls hands the session over as
    /// traffic secrets, and its connection (kilobytes) is freed.
    fn hand_over(&mut self) -> Result<(), TlsError> {
        let Some(conn) = self.hs.take() else {
            return Ok(());
        };
        self.resumed = matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        let (secrets, kernel) = (*conn)
            .dangerous_into_kernel_connection()
            .map_err(|e| TlsError::Record(format!("handing over the session: {e}")))?;
        self.traffic = Some(Box::new(Traffic::new(secrets, kernel)?));
        Ok(())
    }

    /// Processes the ciphertext in `incoming`: application data is appended to `plain`,
    /// records to send (handshake messages, tickets, alerts) to `out`. Records are decrypted in
    /// place, so `incoming` is scratch afterwards; its first [`Read::used`] bytes are done with.
    /// On an error, `out` may hold an alert to send before closing.
    pub fn read(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Read, TlsError> {
        if let Some(t) = self.traffic.as_mut() {
            let r = t.read(incoming, plain, out)?;
            self.peer_closed |= r.peer_closed;
            return Ok(r);
        }
        let mut r = Read::default();
        let Some(conn) = self.hs.as_mut() else {
            return Err(TlsError::Record("no session".into()));
        };
        let was_handshaking = conn.is_handshaking();
        let mut at_rest = false;
        if was_handshaking && r.used == 0 && !incoming.is_empty() && !looks_like_tls(incoming[0]) {
            return Err(TlsError::NotTls);
        }
        loop {
            let conn = self.hs.as_mut().expect("checked above");
            let status = conn.process_tls_records(&mut incoming[r.used..]);
            let mut used = status.discard;
            let state = match status.state {
                Ok(s) => s,
                Err(e) => {
                    let handshaking = conn.is_handshaking();
                    // rustls keeps its place in the buffer: go on from after the discard.
                    let rest = r.used + used;
                    self.flush_alert(&mut incoming[rest..], out);
                    let e = e.to_string();
                    return Err(if handshaking {
                        TlsError::Handshake(e)
                    } else {
                        TlsError::Record(e)
                    });
                }
            };
            let more = match state {
                ConnectionState::ReadTraffic(mut t) => {
                    while let Some(rec) = t.next_record() {
                        let rec = rec.map_err(|e| TlsError::Record(e.to_string()))?;
                        used += rec.discard;
                        plain.extend_from_slice(rec.payload);
                    }
                    true
                }
                ConnectionState::ReadEarlyData(mut t) => {
                    // Early data is not enabled (max_early_data_size 0); drained if it comes.
                    while let Some(rec) = t.next_record() {
                        let rec = rec.map_err(|e| TlsError::Record(e.to_string()))?;
                        used += rec.discard;
                    }
                    true
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    encode(out, |buf| {
                        e.encode(buf).map_err(|e| match e {
                            rustls::unbuffered::EncodeError::InsufficientSize(s) => Some(s),
                            rustls::unbuffered::EncodeError::AlreadyEncoded => None,
                        })
                    });
                    true
                }
                ConnectionState::TransmitTlsData(t) => {
                    // The caller sends `out`; from the state machine's side it is sent.
                    t.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    r.peer_closed = true;
                    true
                }
                ConnectionState::WriteTraffic(_) => {
                    at_rest = true;
                    false
                }
                ConnectionState::Closed | ConnectionState::BlockedHandshake => false,
                _ => false,
            };
            r.used += used;
            if !more {
                break;
            }
        }
        let handshaking = self.is_handshaking();
        r.handshake_done = was_handshaking && !handshaking;
        if !handshaking && at_rest && !self.peer_closed {
            self.hand_over()?;
        }
        Ok(r)
    }

    /// Encrypts `plain` (application data, any length: split into records of at most 16 KiB)
    /// and appends the records to `out`. Before the handshake is complete nothing can be sent:
    /// an error.
    pub fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        if plain.is_empty() {
            return Ok(());
        }
        if let Some(t) = self.traffic.as_mut() {
            return t.write(plain, out);
        }
        let Some(conn) = self.hs.as_mut() else {
            return Err(TlsError::Record("no session".into()));
        };
        // The incomplete record kept from the last read goes in again (rustls remembers offsets
        // into it); with no complete record in it, nothing is consumed.
        let mut pending = self.pending.take();
        let status =
            conn.process_tls_records(pending.as_deref_mut().map_or(&mut [][..], |p| &mut p[..]));
        let r = match status.state {
            Ok(ConnectionState::WriteTraffic(mut w)) => {
                let mut result = Ok(());
                encrypt(out, plain.len(), |buf| match w.encrypt(plain, buf) {
                    Ok(n) => Ok(n),
                    Err(EncryptError::InsufficientSize(s)) => Err(Some(s)),
                    Err(EncryptError::EncryptExhausted) => {
                        result = Err(TlsError::Record("encrypter exhausted".into()));
                        Err(None)
                    }
                });
                result
            }
            Ok(other) => Err(TlsError::Record(format!(
                "cannot send application data now ({other:?})"
            ))),
            Err(e) => Err(TlsError::Record(e.to_string())),
        };
        debug_assert_eq!(status.discard, 0);
        self.pending = pending;
        r
    }

    /// Appends a close_notify alert to `out` (once; nothing if the session cannot send).
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        if let Some(t) = self.traffic.as_mut() {
            return t.close_notify(out);
        }
        if self.sent_close || self.is_handshaking() {
            return;
        }
        let Some(conn) = self.hs.as_mut() else {
            return;
        };
        self.sent_close = true;
        let mut pending = self.pending.take();
        if let Ok(ConnectionState::WriteTraffic(mut w)) = conn
            .process_tls_records(pending.as_deref_mut().map_or(&mut [][..], |p| &mut p[..]))
            .state
        {
            encrypt(out, 0, |buf| match w.queue_close_notify(buf) {
                Ok(n) => Ok(n),
                Err(EncryptError::InsufficientSize(s)) => Err(Some(s)),
                Err(EncryptError::EncryptExhausted) => Err(None),
            });
        }
        self.pending = pending;
    }

    /// The peer sent close_notify.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// After an error rustls may have an alert to send: encoded into `out`. `incoming`: the
    /// ciphertext after the error's discard (rustls remembers offsets into it).
    fn flush_alert(&mut self, incoming: &mut [u8], out: &mut Vec<u8>) {
        let Some(conn) = self.hs.as_mut() else {
            return;
        };
        for _ in 0..4 {
            let status = conn.process_tls_records(incoming);
            if status.discard != 0 {
                return;
            }
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode(out, |buf| {
                        e.encode(buf).map_err(|e| match e {
                            rustls::unbuffered::EncodeError::InsufficientSize(s) => Some(s),
                            rustls::unbuffered::EncodeError::AlreadyEncoded => None,
                        })
                    });
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => return,
            }
        }
    }
}

/// Runs `f` on the spare end of `out` (at least `hint` + record overhead), growing it once to
/// the size `f` asks for if that was too small; `out` keeps what `f` wrote. (rustls' unbuffered
/// API writes records into a caller's slice; flood's client uses this too.)
pub fn encrypt(
    out: &mut Vec<u8>,
    hint: usize,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Option<InsufficientSizeError>>,
) {
    // Per 16 KiB record: a 5-byte header, the content type and a 16-byte tag (TLS 1.3), or an
    // 8-byte explicit nonce and the tag (TLS 1.2 GCM): 64 is ample.
    let room = hint + (hint / 16384 + 1) * 64;
    let start = out.len();
    out.resize(start + room, 0);
    match f(&mut out[start..]) {
        Ok(n) => out.truncate(start + n),
        Err(Some(s)) => {
            out.resize(start + s.required_size, 0);
            let n = f(&mut out[start..]).unwrap_or(0);
            out.truncate(start + n);
        }
        Err(None) => out.truncate(start),
    }
}

/// [`encrypt`] for an already-encoded handshake message.
pub fn encode(
    out: &mut Vec<u8>,
    f: impl FnMut(&mut [u8]) -> Result<usize, Option<InsufficientSizeError>>,
) {
    encrypt(out, 512, f)
}

#[cfg(test)]
mod tests;
