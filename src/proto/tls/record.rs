//! The TLS record layer after the handshake, sans-IO: once rustls has done the handshake, the
//! session is handed over as traffic secrets (rustls' kernel-TLS interface,
//! `dangerous_into_kernel_connection`) and records are sealed and opened here with ring's AEAD.
//! What a connection keeps is its two keys, IVs and sequence numbers plus rustls'
//! `KernelConnection` (the key schedule, for TLS 1.3 key updates): a few hundred bytes, where
//! the full rustls connection keeps kilobytes.
//!
//! Formats (RFC 8446 §5.2 for TLS 1.3; RFC 5246 §6.2.3.3 with RFC 5288 / RFC 7905 for 1.2):
//! - TLS 1.3: `17 03 03 len | AEAD(nonce = iv ^ seq, aad = header, plaintext | type | zeros)`.
//! - TLS 1.2 AES-GCM: `type 03 03 len | explicit nonce (8) | AEAD(nonce = salt | explicit,
//!   aad = seq | type | 03 03 | plaintext len)`; rustls' IV is salt | a random 8 bytes and the
//!   explicit nonce it sends is `(iv ^ seq)[4..]`, which is also what is sent here.
//! - TLS 1.2 ChaCha20-Poly1305: like 1.3's nonce, 1.2's AAD, no explicit nonce.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ProtocolVersion};

use super::{Read, TlsError};

const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;
const CHANGE_CIPHER_SPEC: u8 = 20;
/// Plaintext bytes in one record at most.
pub const MAX_PLAIN: usize = 16384;
const TAG: usize = 16;
/// Key updates (TLS 1.3) or a close (1.2) well before AES-GCM's confidentiality limit of
/// 2^24.5 records per key (RFC 8446 §5.5).
const REKEY_AFTER: u64 = 1 << 23;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Alg {
    Aes128Gcm,
    Aes256Gcm,
    Chacha,
}

impl Alg {
    fn ring(self) -> &'static aead::Algorithm {
        match self {
            Alg::Aes128Gcm => &aead::AES_128_GCM,
            Alg::Aes256Gcm => &aead::AES_256_GCM,
            Alg::Chacha => &aead::CHACHA20_POLY1305,
        }
    }
}

/// One direction's key. The key bytes are kept, not ring's expanded key (which is more than
/// 500 bytes for AES): it is expanded for each record sealed or opened.
struct Key {
    alg: Alg,
    key: [u8; 32],
    iv: [u8; 12],
    seq: u64,
}

impl Key {
    fn new(seq: u64, s: ConnectionTrafficSecrets) -> Result<Key, TlsError> {
        let (alg, key, iv) = match s {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Alg::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Alg::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (Alg::Chacha, key, iv),
            _ => return Err(TlsError::Record("unsupported traffic secret".into())),
        };
        let mut k = [0u8; 32];
        let kb = key.as_ref();
        k[..kb.len()].copy_from_slice(kb);
        let mut v = [0u8; 12];
        v.copy_from_slice(iv.as_ref());
        Ok(Key {
            alg,
            key: k,
            iv: v,
            seq,
        })
    }

    fn ring(&self) -> LessSafeKey {
        let len = self.alg.ring().key_len();
        LessSafeKey::new(UnboundKey::new(self.alg.ring(), &self.key[..len]).expect("key length"))
    }

    /// `iv ^ seq` (the sequence number big-endian in the last 8 bytes).
    fn nonce(&self) -> [u8; 12] {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *b ^= s;
        }
        n
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // Not left in freed memory.
        self.key = [0; 32];
    }
}

/// The record layer of one connection after its handshake.
pub struct Traffic {
    kernel: KernelConnection<ServerConnectionData>,
    tls13: bool,
    tx: Key,
    rx: Key,
    peer_closed: bool,
    sent_close: bool,
    /// [`REKEY_AFTER`] (smaller in tests).
    rekey_after: u64,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic")
            .field("tls13", &self.tls13)
            .field("tx_seq", &self.tx.seq)
            .field("rx_seq", &self.rx.seq)
            .finish()
    }
}

impl Traffic {
    pub fn new(
        secrets: rustls::ExtractedSecrets,
        kernel: KernelConnection<ServerConnectionData>,
    ) -> Result<Traffic, TlsError> {
        let tls13 = kernel.protocol_version() == ProtocolVersion::TLSv1_3;
        let (tx_seq, tx) = secrets.tx;
        let (rx_seq, rx) = secrets.rx;
        Ok(Traffic {
            kernel,
            tls13,
            tx: Key::new(tx_seq, tx)?,
            rx: Key::new(rx_seq, rx)?,
            peer_closed: false,
            sent_close: false,
            rekey_after: REKEY_AFTER,
        })
    }

    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Tests: update the key after `n` records instead of [`REKEY_AFTER`].
    #[cfg(test)]
    pub(super) fn set_rekey_after(&mut self, n: u64) {
        self.rekey_after = n;
    }

    /// Seals `plain` (at most [`MAX_PLAIN`] bytes) as one record of `typ` onto `out`.
    fn seal(&mut self, typ: u8, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        debug_assert!(plain.len() <= MAX_PLAIN);
        let key = &self.tx;
        let nonce = key.nonce();
        let start = out.len();
        if self.tls13 {
            let len = plain.len() + 1 + TAG;
            out.extend_from_slice(&[APPLICATION_DATA, 3, 3, (len >> 8) as u8, len as u8]);
            out.extend_from_slice(plain);
            out.push(typ);
        } else {
            let explicit = if key.alg == Alg::Chacha { 0 } else { 8 };
            let len = explicit + plain.len() + TAG;
            out.extend_from_slice(&[typ, 3, 3, (len >> 8) as u8, len as u8]);
            out.extend_from_slice(&nonce[4..4 + explicit]);
            out.extend_from_slice(plain);
        }
        let header: [u8; 5] = out[start..start + 5].try_into().expect("5 bytes");
        let body = if self.tls13 || key.alg == Alg::Chacha {
            start + 5
        } else {
            start + 13
        };
        let aad = if self.tls13 {
            aad13(&header)
        } else {
            aad12(key.seq, typ, plain.len())
        };
        let tag = key
            .ring()
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..if self.tls13 { 5 } else { 13 }]),
                &mut out[body..],
            )
            .map_err(|_| TlsError::Record("seal failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        self.tx.seq += 1;
        Ok(())
    }

    /// Seals application data, as many records as it takes.
    pub fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        out.reserve(plain.len() + (plain.len() / MAX_PLAIN + 1) * 32);
        for chunk in plain.chunks(MAX_PLAIN) {
            if self.tx.seq >= self.rekey_after {
                self.rekey_tx(out)?;
            }
            self.seal(APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// A close_notify alert (once).
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        if !self.sent_close {
            self.sent_close = true;
            let _ = self.seal(ALERT, &[1, 0], out);
        }
    }

    /// TLS 1.3: a KeyUpdate of our own and the new transmit key. TLS 1.2 has no key update:
    /// the connection ends before the limit.
    fn rekey_tx(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        if !self.tls13 {
            return Err(TlsError::Record("record limit of the key reached".into()));
        }
        // KeyUpdate(update_not_requested), sealed with the old key.
        self.seal(HANDSHAKE, &[24, 0, 0, 1, 0], out)?;
        let (seq, s) = self
            .kernel
            .update_tx_secret()
            .map_err(|e| TlsError::Record(e.to_string()))?;
        self.tx = Key::new(seq, s)?;
        Ok(())
    }

    /// Opens the complete records at the front of `incoming` (in place): application data is
    /// appended to `plain`, anything to answer (a key update, an alert) to `out`.
    pub fn read(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Read, TlsError> {
        let mut r = Read::default();
        while incoming.len() - r.used >= 5 {
            let rec = &mut incoming[r.used..];
            let typ = rec[0];
            let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
            let max = if self.tls13 {
                MAX_PLAIN + 256
            } else {
                MAX_PLAIN + 2048
            };
            if len > max {
                self.alert(22, out); // record_overflow
                return Err(TlsError::Record(format!("record of {len} bytes")));
            }
            if rec.len() < 5 + len {
                break; // incomplete: the rest comes later
            }
            r.used += 5 + len;
            if self.peer_closed {
                continue; // nothing counts after close_notify
            }
            let header: [u8; 5] = rec[..5].try_into().expect("5 bytes");
            let body = &mut rec[5..5 + len];
            if self.tls13 && typ == CHANGE_CIPHER_SPEC {
                self.alert(10, out); // unexpected_message (only allowed during the handshake)
                return Err(TlsError::Record(
                    "change_cipher_spec after the handshake".into(),
                ));
            }
            let (inner, data) = match self.open(&header, typ, body) {
                Some(x) => x,
                None => {
                    self.alert(20, out); // bad_record_mac
                    return Err(TlsError::Record("a record did not decrypt".into()));
                }
            };
            match inner {
                APPLICATION_DATA => plain.extend_from_slice(data),
                ALERT => {
                    // [level, description]: close_notify ends the peer's side; user_canceled is
                    // a warning; anything else is fatal.
                    match data {
                        [_, 0] => {
                            self.peer_closed = true;
                            r.peer_closed = true;
                        }
                        [1, 90] => {}
                        _ => return Err(TlsError::Record(format!("alert {data:?}"))),
                    }
                }
                HANDSHAKE if self.tls13 => {
                    let data = data.to_vec();
                    self.post_handshake(&data, out)?;
                }
                HANDSHAKE => {
                    // A TLS 1.2 renegotiation: refused with a warning, the session goes on.
                    self.alert_level(1, 100, out); // no_renegotiation
                }
                other => {
                    self.alert(10, out);
                    return Err(TlsError::Record(format!("record type {other}")));
                }
            }
        }
        Ok(r)
    }

    /// Opens one record's body in place; (inner content type, plaintext).
    fn open<'b>(
        &mut self,
        header: &[u8; 5],
        typ: u8,
        body: &'b mut [u8],
    ) -> Option<(u8, &'b [u8])> {
        let key = &self.rx;
        let ring_key = key.ring();
        let (nonce, aad, ct) = if self.tls13 {
            if typ != APPLICATION_DATA {
                return None;
            }
            (key.nonce(), aad13(header), &mut body[..])
        } else if key.alg == Alg::Chacha {
            let plain_len = body.len().checked_sub(TAG)?;
            (key.nonce(), aad12(key.seq, typ, plain_len), &mut body[..])
        } else {
            let plain_len = body.len().checked_sub(8 + TAG)?;
            let mut n = [0u8; 12];
            n[..4].copy_from_slice(&key.iv[..4]);
            n[4..].copy_from_slice(&body[..8]);
            (n, aad12(key.seq, typ, plain_len), &mut body[8..])
        };
        let aad_len = if self.tls13 { 5 } else { 13 };
        let opened = ring_key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad[..aad_len]),
                ct,
            )
            .ok()?;
        self.rx.seq += 1;
        if self.tls13 {
            // Inner plaintext: content, type, zero padding.
            let end = opened.iter().rposition(|&b| b != 0)?;
            let inner = opened[end];
            Some((inner, &opened[..end]))
        } else {
            Some((typ, &opened[..]))
        }
    }

    /// TLS 1.3 handshake messages after the handshake: a KeyUpdate is followed (and answered
    /// when asked); anything else from a client is unexpected.
    fn post_handshake(&mut self, mut msgs: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        while !msgs.is_empty() {
            let [typ, a, b, c, rest @ ..] = msgs else {
                return Err(TlsError::Record("truncated handshake message".into()));
            };
            let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
            if rest.len() < len {
                return Err(TlsError::Record("handshake message over records".into()));
            }
            let (body, next) = rest.split_at(len);
            msgs = next;
            match (*typ, body) {
                (24, [req]) if *req <= 1 => {
                    let (seq, s) = self
                        .kernel
                        .update_rx_secret()
                        .map_err(|e| TlsError::Record(e.to_string()))?;
                    self.rx = Key::new(seq, s)?;
                    if *req == 1 {
                        // update_requested: ours goes out, then our key changes.
                        self.seal(HANDSHAKE, &[24, 0, 0, 1, 0], out)?;
                        let (seq, s) = self
                            .kernel
                            .update_tx_secret()
                            .map_err(|e| TlsError::Record(e.to_string()))?;
                        self.tx = Key::new(seq, s)?;
                    }
                }
                _ => {
                    self.alert(10, out);
                    return Err(TlsError::Record(format!("handshake message {typ}")));
                }
            }
        }
        Ok(())
    }

    fn alert(&mut self, desc: u8, out: &mut Vec<u8>) {
        self.alert_level(2, desc, out);
    }

    fn alert_level(&mut self, level: u8, desc: u8, out: &mut Vec<u8>) {
        if !self.sent_close {
            if level == 2 {
                self.sent_close = true;
            }
            let _ = self.seal(ALERT, &[level, desc], out);
        }
    }
}

fn aad13(header: &[u8; 5]) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..5].copy_from_slice(header);
    a
}

fn aad12(seq: u64, typ: u8, len: usize) -> [u8; 13] {
    let mut a = [0u8; 13];
    a[..8].copy_from_slice(&seq.to_be_bytes());
    a[8] = typ;
    a[9] = 3;
    a[10] = 3;
    a[11] = (len >> 8) as u8;
    a[12] = len as u8;
    a
}
