//! TLS on flood's side (`wss://`, `https://`): the client settings ([`client_config`]: trust
//! anchors from `--ca` or no verification with `--insecure`, ALPN `http/1.1`, session
//! resumption on or off) and one connection's session ([`ClientTls`]), sans-IO: rustls'
//! unbuffered client state machine driven with buffers the worker owns, the way the server's
//! `src/proto/tls.rs` drives the unbuffered server API. Ciphertext in, plaintext and records to
//! send out; plaintext in, records out. No socket and no clock here.
//!
//! Why the unbuffered API: rustls' buffered `ClientConnection` keeps a receive buffer and a send
//! queue per connection. Here an idle session keeps only its state (keys, sequence numbers, the
//! state machine); records are decrypted in place in the worker's read buffer, encrypted into a
//! buffer of the worker's, and only what is incomplete (a record split across reads) or what the
//! kernel did not take is kept, boxed, while it lasts.
//!
//! Resumption: every connection of a worker process shares one `ClientConfig`, and with it one
//! session store ([`TicketPool`]: TLS 1.3 tickets, up to [`TICKETS`] per server, 2 sent by
//! edgecomet per handshake; one TLS 1.2 session), so a reconnect or a churned connection
//! resumes.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{
    ClientSessionStore, Resumption, Tls12ClientSessionValue, Tls13ClientSessionValue,
    UnbufferedClientConnection,
};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use rustls::{ClientConfig, DigitallySignedStruct, NamedGroup, RootCertStore, SignatureScheme};

/// The buffer helpers for rustls' unbuffered API, shared with the server's session.
use edgecomet::proto::tls::{encode, encrypt};

/// TLS 1.3 tickets kept per server name. rustls' own store keeps 8, which a ramp or a churn of
/// hundreds of connections per second runs through (each new connection takes one; edgecomet
/// gives 2 per handshake): with it, 5,000 connections at `--rate max` resumed 4–5 % of their
/// handshakes, and a churn of 400/s half of its replacements. A kept ticket costs about 800 B
/// (it holds the server's certificate chain too), so 1,024 cost under 1 MB per worker process.
pub const TICKETS: usize = 1024;

/// How the worker processes verify and resume: what the coordinator hands them (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsPlan {
    /// The name the certificate must carry (the URL's host, without the port).
    pub server_name: String,
    /// PEM trust anchors (`--ca`); `None` with `insecure`.
    pub ca: Option<String>,
    /// `--insecure`: the server's certificate is not verified (its handshake signature still is).
    pub insecure: bool,
    /// `--tls-resume on`: sessions are remembered and offered again.
    pub resume: bool,
}

/// The settings every connection of a process shares (resumption store included), and the
/// server name they present.
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

impl TlsClient {
    /// Builds the settings of `plan`; the error names the file and what is wrong with it.
    pub fn new(plan: &TlsPlan) -> Result<TlsClient, String> {
        let config = client_config(
            plan.ca.as_deref().map(Path::new),
            plan.insecure,
            plan.resume,
        )?;
        Ok(TlsClient {
            config,
            name: server_name(&plan.server_name)?,
        })
    }

    /// A new session for one connection.
    pub fn session(&self) -> Result<ClientTls, TlsError> {
        ClientTls::new(self.config.clone(), self.name.clone())
    }
}

/// The rustls client settings: TLS 1.3 and 1.2, ring, ALPN `http/1.1`, trust anchors from the
/// PEM file `ca` (or none checked with `insecure`), an in-memory session store if `resume`.
pub fn client_config(
    ca: Option<&Path>,
    insecure: bool,
    resume: bool,
) -> Result<Arc<ClientConfig>, String> {
    // ring, as the server: it builds with the C compiler alone. (Deprecated in rustls for its
    // lack of post-quantum key exchange, which aws-lc-rs has at the price of a much longer
    // build; edgecomet's server uses ring too, so the handshakes measured are the same.)
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // X25519 first, as browsers do. ring's default order starts with P-384, which the server
    // then takes (the client's first group it supports): ring's generic P-384 arithmetic was
    // 80% of the server's handshake CPU, so flood did not measure what browsers cost.
    provider.kx_groups = vec![
        rustls::crypto::ring::kx_group::X25519,
        rustls::crypto::ring::kx_group::SECP256R1,
        rustls::crypto::ring::kx_group::SECP384R1,
    ];
    let provider = Arc::new(provider);
    let algs = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?;
    let mut config = match (ca, insecure) {
        (_, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(algs)))
            .with_no_client_auth(),
        (Some(path), false) => builder
            .with_root_certificates(read_roots(path)?)
            .with_no_client_auth(),
        (None, false) => {
            return Err(
                "https:// and wss:// need --ca FILE (the PEM certificate of the CA that signed \
                 the server's certificate) or --insecure (no certificate verification)"
                    .into(),
            );
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = if resume {
        Resumption::store(Arc::new(TicketPool::default()))
    } else {
        Resumption::disabled()
    };
    Ok(Arc::new(config))
}

/// The session store of a worker process: per server name (flood talks to one; its targets
/// share it), the key-exchange group that worked, one TLS 1.2 session and up to [`TICKETS`]
/// TLS 1.3 tickets, newest taken first (each is used once, as rustls' own store does).
#[derive(Debug, Default)]
pub struct TicketPool {
    servers: Mutex<Vec<(ServerName<'static>, Sessions)>>,
}

#[derive(Debug, Default)]
struct Sessions {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

impl TicketPool {
    /// Runs `f` on `name`'s sessions (made if `make` and missing).
    fn with<R>(
        &self,
        name: &ServerName<'_>,
        make: bool,
        f: impl FnOnce(&mut Sessions) -> R,
    ) -> Option<R> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        let i = match servers.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None if make => {
                // A handful of names at most (one per server tested); 16 bounds a misuse.
                if servers.len() >= 16 {
                    servers.remove(0);
                }
                servers.push((name.to_owned(), Sessions::default()));
                servers.len() - 1
            }
            None => return None,
        };
        Some(f(&mut servers[i].1))
    }
}

impl ClientSessionStore for TicketPool {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.with(&name, true, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.with(name, false, |s| s.kx_hint).flatten()
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.with(&name, true, |s| s.tls12 = Some(value));
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.with(name, false, |s| s.tls12.clone()).flatten()
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        self.with(name, false, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        self.with(&name, true, |s| {
            if s.tls13.len() >= TICKETS {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        self.with(name, false, |s| s.tls13.pop_back()).flatten()
    }
}

/// The trust anchors in a PEM file (every `CERTIFICATE` in it).
fn read_roots(path: &Path) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--ca {}: cannot be read as PEM ({e})", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "--ca {}: a certificate in it cannot be read ({e})",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "--ca {}: no certificate (PEM \"CERTIFICATE\") in it",
            path.display()
        ));
    }
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("--ca {}: not a usable trust anchor ({e})", path.display()))?;
    }
    Ok(roots)
}

/// The name to verify the certificate against: `host` of `host:port` (an IP address or a DNS
/// name; `[::1]` for IPv6).
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let h = match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.parse::<u16>().is_ok() && !h.ends_with(':') => h,
        _ => host,
    };
    let h = h.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(h.to_string()).map_err(|e| format!("{h:?} is not a server name ({e})"))
}

/// `--insecure`: any certificate is accepted; the handshake's signature is still checked (with
/// the certificate's key), so the session is encrypted, only not authenticated.
#[derive(Debug)]
struct NoVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Why a session failed; each kind has a counter in the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The server's certificate was refused: not signed by `--ca`, expired, for another name.
    Cert(String),
    /// The handshake failed otherwise: no common version or cipher suite, an alert from the
    /// server, a bad message. The text is rustls'.
    Handshake(String),
    /// A record after the handshake was bad (does not decrypt, unexpected), or one could not be
    /// sent.
    Record(String),
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsError::Cert(e) => write!(f, "server certificate refused: {e}"),
            TlsError::Handshake(e) => write!(f, "handshake failed: {e}"),
            TlsError::Record(e) => write!(f, "bad record: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

impl TlsError {
    fn of(e: rustls::Error, handshaking: bool) -> TlsError {
        let text = e.to_string();
        match e {
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                TlsError::Cert(text)
            }
            _ if handshaking => TlsError::Handshake(text),
            _ => TlsError::Record(text),
        }
    }
}

/// What [`ClientTls::read`] did with the ciphertext it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Ciphertext bytes done with, from the front: the rest is an incomplete record, to be
    /// given again with what arrives next appended.
    pub used: usize,
    /// The server sent close_notify: nothing more will come from it.
    pub peer_closed: bool,
    /// The handshake completed during this call.
    pub handshake_done: bool,
}

/// One connection's TLS session, boxed beside the worker's slab.
pub struct ClientTls {
    conn: UnbufferedClientConnection,
    /// Ciphertext received but not yet a whole record (only while one is incomplete).
    #[allow(clippy::box_collection)]
    pub pending: Option<Box<Vec<u8>>>,
    /// Ciphertext the kernel has not taken yet (only while there is some): sent before
    /// anything else on the next writable event.
    #[allow(clippy::box_collection)]
    pub unsent: Option<Box<Vec<u8>>>,
    sent_close: bool,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending.as_ref().map(|p| p.len()))
            .field("unsent", &self.unsent.as_ref().map(|p| p.len()))
            .finish()
    }
}

impl ClientTls {
    pub fn new(config: Arc<ClientConfig>, name: ServerName<'static>) -> Result<Self, TlsError> {
        let conn = UnbufferedClientConnection::new(config, name)
            .map_err(|e| TlsError::Handshake(e.to_string()))?;
        Ok(ClientTls {
            conn,
            pending: None,
            unsent: None,
            sent_close: false,
        })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether this session resumed an earlier one (ticket or session id).
    pub fn resumed(&self) -> bool {
        matches!(
            self.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        )
    }

    /// Starts the handshake: the ClientHello, appended to `out`.
    pub fn start(&mut self, out: &mut Vec<u8>) -> Result<(), TlsError> {
        let mut plain = Vec::new();
        self.read(&mut [], &mut plain, out).map(|_| ())
    }

    /// Processes the ciphertext in `incoming`: application data is appended to `plain`,
    /// records to send (handshake messages, alerts) to `out`. Records are decrypted in place,
    /// so `incoming` is scratch afterwards; its first [`Read::used`] bytes are done with. On an
    /// error, `out` may hold an alert to send before closing.
    pub fn read(
        &mut self,
        incoming: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Read, TlsError> {
        let mut r = Read::default();
        let was_handshaking = self.conn.is_handshaking();
        loop {
            let status = self.conn.process_tls_records(&mut incoming[r.used..]);
            let mut used = status.discard;
            let state = match status.state {
                Ok(s) => s,
                Err(e) => {
                    let handshaking = self.conn.is_handshaking();
                    let rest = r.used + used;
                    self.flush_alert(&mut incoming[rest..], out);
                    return Err(TlsError::of(e, handshaking));
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
                ConnectionState::EncodeTlsData(mut e) => {
                    encode(out, |buf| e.encode(buf).map_err(encode_error));
                    true
                }
                ConnectionState::TransmitTlsData(t) => {
                    // The caller sends `out`; from the state machine's side it is sent.
                    t.done();
                    true
                }
                ConnectionState::PeerClosed => {
                    r.peer_closed = true;
                    true
                }
                // Closed, BlockedHandshake (more ciphertext needed), WriteTraffic (nothing
                // more to read), early data (never asked for).
                _ => false,
            };
            r.used += used;
            if !more {
                break;
            }
        }
        r.handshake_done = was_handshaking && !self.conn.is_handshaking();
        Ok(r)
    }

    /// Encrypts `plain` (split into records of at most 16 KiB) and appends the records to
    /// `out`. Before the handshake is complete nothing can be sent: an error.
    pub fn write(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), TlsError> {
        if plain.is_empty() {
            return Ok(());
        }
        // The incomplete record kept from the last read goes in again (rustls remembers offsets
        // into it); with no complete record in it, nothing is consumed.
        let mut pending = self.pending.take();
        let status = self
            .conn
            .process_tls_records(pending.as_deref_mut().map_or(&mut [][..], |p| &mut p[..]));
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
        self.pending = pending;
        r
    }

    /// Appends a close_notify alert to `out` (once; nothing if the session cannot send).
    pub fn close_notify(&mut self, out: &mut Vec<u8>) {
        if self.sent_close || self.conn.is_handshaking() {
            return;
        }
        self.sent_close = true;
        let mut pending = self.pending.take();
        if let Ok(ConnectionState::WriteTraffic(mut w)) = self
            .conn
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

    /// After an error rustls may have an alert to send: encoded into `out`. `incoming`: the
    /// ciphertext after the error's discard.
    fn flush_alert(&mut self, incoming: &mut [u8], out: &mut Vec<u8>) {
        for _ in 0..4 {
            let status = self.conn.process_tls_records(incoming);
            if status.discard != 0 {
                return;
            }
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode(out, |buf| e.encode(buf).map_err(encode_error));
                }
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                _ => return,
            }
        }
    }
}

fn encode_error(e: EncodeError) -> Option<InsufficientSizeError> {
    match e {
        EncodeError::InsufficientSize(s) => Some(s),
        EncodeError::AlreadyEncoded => None,
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    #[test]
    fn server_names() {
        assert_eq!(
            server_name("127.0.0.1:8443").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("localhost:8443").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        assert_eq!(
            server_name("example.com").unwrap(),
            ServerName::try_from("example.com").unwrap()
        );
        assert_eq!(
            server_name("[::1]:8443").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn a_ca_or_insecure_is_required() {
        let e = client_config(None, false, true).unwrap_err();
        assert!(e.contains("--ca FILE") && e.contains("--insecure"), "{e}");
        assert!(client_config(None, true, true).is_ok());
        let e = client_config(Some(Path::new("/nonexistent/ca.pem")), false, true).unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }

    /// A server for in-memory sessions: rustls' buffered one with a certificate rcgen made, and
    /// a client configuration that trusts it.
    fn pair() -> (Arc<rustls::ServerConfig>, Arc<ClientConfig>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let dir = std::env::temp_dir().join(format!("flood-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join(format!("ca-{:?}.pem", std::thread::current().id()));
        std::fs::write(&ca, cert.pem()).unwrap();
        let client = client_config(Some(&ca), false, true).unwrap();
        std::fs::remove_file(&ca).ok();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
            )
            .unwrap();
        (Arc::new(server), client)
    }

    /// Runs a handshake and an exchange both ways, the server's bytes given to the client
    /// `piece` bytes at a time (incomplete records kept and given again, as the worker does).
    /// Returns whether the session resumed.
    fn exchange(
        server: &Arc<rustls::ServerConfig>,
        client: &Arc<ClientConfig>,
        piece: usize,
    ) -> bool {
        let mut srv = rustls::ServerConnection::new(server.clone()).unwrap();
        let mut cli = ClientTls::new(client.clone(), server_name("localhost").unwrap()).unwrap();
        let mut to_server = Vec::new();
        cli.start(&mut to_server).unwrap();
        let mut pending: Vec<u8> = Vec::new();
        let mut plain = Vec::new();
        let mut sent_request = false;
        for _ in 0..10_000 {
            if !to_server.is_empty() {
                srv.read_tls(&mut &to_server[..]).unwrap();
                srv.process_new_packets().unwrap();
                to_server.clear();
            }
            let mut from_server = Vec::new();
            while srv.wants_write() {
                srv.write_tls(&mut from_server).unwrap();
            }
            let mut got = false;
            for chunk in from_server.chunks(piece) {
                got = true;
                pending.extend_from_slice(chunk);
                let r = cli.read(&mut pending, &mut plain, &mut to_server).unwrap();
                pending.drain(..r.used);
                if r.handshake_done {
                    cli.write(b"GET / HTTP/1.1\r\n\r\n", &mut to_server)
                        .unwrap();
                    sent_request = true;
                }
            }
            if sent_request && !srv.is_handshaking() {
                let mut req = [0u8; 64];
                if let Ok(n) = srv.reader().read(&mut req)
                    && n > 0
                {
                    assert_eq!(&req[..n], b"GET / HTTP/1.1\r\n\r\n");
                    srv.writer().write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
                }
            }
            if plain == b"HTTP/1.1 200 OK\r\n\r\n" {
                assert!(pending.is_empty(), "every record used");
                return cli.resumed();
            }
            assert!(got || !to_server.is_empty() || srv.wants_write(), "stuck");
        }
        panic!("no answer");
    }

    #[test]
    fn a_session_with_records_split_anywhere_and_resumption() {
        let (server, client) = pair();
        // The first handshake is a full one; later ones, with the same ClientConfig (its
        // session store), resume.
        assert!(!exchange(&server, &client, 1 << 20));
        // Records cut within the header, within the body, and whole flights.
        for piece in [1, 2, 3, 5, 7, 64, 1000, 1 << 20] {
            assert!(exchange(&server, &client, piece), "piece {piece}");
        }
    }

    #[test]
    fn the_client_hello_is_written_at_start() {
        let cfg = client_config(None, true, true).unwrap();
        let mut t = ClientTls::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
        let mut out = Vec::new();
        t.start(&mut out).unwrap();
        // A handshake record (22), TLS 1.0 legacy record version for the hello (3, 1).
        assert_eq!(&out[..3], &[22, 3, 1]);
        assert!(t.is_handshaking());
        // Nothing to send before the handshake is done.
        assert!(t.write(b"x", &mut out).is_err());
    }
}
