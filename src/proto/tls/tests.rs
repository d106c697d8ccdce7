//! The TLS session against rustls' own (buffered) client, in memory: no socket, no sleep.

use std::io::{Read as _, Write as _};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::{Read, Tls, TlsError};
use crate::tls::Certs;

/// A CA, a certificate for "localhost" signed by it, written to a fresh directory; the server's
/// settings from those files and a client that trusts the CA.
pub(crate) struct Pki {
    pub certs: Certs,
    pub client: Arc<ClientConfig>,
    pub dir: std::path::PathBuf,
}

pub(crate) fn pki(name: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("edgecomet-tls-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem() + &ca_cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let certs = Certs::load(&dir.join("cert.pem"), &dir.join("key.pem"), 64).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca_cert.der().clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Pki {
        certs,
        client: Arc::new(client),
        dir,
    }
}

/// A server session and a client, and the server's unprocessed ciphertext.
struct Pair {
    server: Tls,
    client: ClientConnection,
    pending: Vec<u8>,
    /// Plaintext the server received.
    got: Vec<u8>,
    /// Plaintext the client received.
    client_got: Vec<u8>,
}

impl Pair {
    fn new(p: &Pki) -> Pair {
        Pair::with_client(p, p.client.clone())
    }

    fn with_client(p: &Pki, client: Arc<ClientConfig>) -> Pair {
        let name = ServerName::try_from("localhost").unwrap();
        Pair {
            server: Tls::new(p.certs.current()).unwrap(),
            client: ClientConnection::new(client, name).unwrap(),
            pending: Vec::new(),
            got: Vec::new(),
            client_got: Vec::new(),
        }
    }

    /// Client → server, `chunk` bytes at a time (the rest of a record waits, as a socket's
    /// partial reads do). Returns what the server's reads said, merged.
    fn client_sends(&mut self, chunk: usize) -> Result<Read, TlsError> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        let mut merged = Read::default();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk.max(1)) {
            self.pending.extend_from_slice(piece);
            let r = self
                .server
                .read(&mut self.pending, &mut self.got, &mut out)?;
            self.pending.drain(..r.used);
            merged.peer_closed |= r.peer_closed;
            merged.handshake_done |= r.handshake_done;
        }
        self.server_sends(&out);
        Ok(merged)
    }

    fn server_sends(&mut self, wire: &[u8]) {
        let mut rd = wire;
        while !rd.is_empty() {
            self.client.read_tls(&mut rd).unwrap();
            self.client.process_new_packets().unwrap();
            let _ = self.client.reader().read_to_end(&mut self.client_got);
        }
    }

    fn handshake(&mut self, chunk: usize) {
        for _ in 0..10 {
            if !self.client.is_handshaking() && !self.server.is_handshaking() {
                return;
            }
            self.client_sends(chunk).unwrap();
        }
        panic!("handshake did not complete");
    }

    fn client_plain(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.client_got)
    }
}

#[test]
fn handshake_then_data_both_ways() {
    let p = pki("both");
    let mut t = Pair::new(&p);
    t.handshake(usize::MAX);
    assert_eq!(
        t.client.alpn_protocol(),
        None,
        "the client asked for no ALPN"
    );
    t.client
        .writer()
        .write_all(b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    t.client_sends(usize::MAX).unwrap();
    assert_eq!(t.got, b"GET / HTTP/1.1\r\n\r\n");
    assert!(t.pending.is_empty(), "every record used");
    let mut out = Vec::new();
    t.server
        .write(b"HTTP/1.1 200 OK\r\n\r\n", &mut out)
        .unwrap();
    t.server_sends(&out);
    assert_eq!(t.client_plain(), b"HTTP/1.1 200 OK\r\n\r\n");
}

#[test]
fn records_arriving_a_byte_at_a_time() {
    let p = pki("bytes");
    let mut t = Pair::new(&p);
    t.handshake(1);
    let msg = vec![b'x'; 40_000];
    t.client.writer().write_all(&msg).unwrap();
    t.client_sends(1).unwrap();
    assert_eq!(t.got, msg, "three records, reassembled");
    assert!(t.pending.is_empty());
}

#[test]
fn large_writes_are_split_into_records() {
    let p = pki("large");
    let mut t = Pair::new(&p);
    t.handshake(usize::MAX);
    let msg: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    let mut out = Vec::new();
    t.server.write(&msg, &mut out).unwrap();
    assert!(out.len() > msg.len() && out.len() < msg.len() + 7 * 64);
    t.server_sends(&out);
    assert_eq!(t.client_plain(), msg);
}

#[test]
fn alpn_http11_is_chosen() {
    let p = pki("alpn");
    let mut cfg = (*p.client).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut t = Pair::with_client(&p, Arc::new(cfg));
    t.handshake(usize::MAX);
    assert_eq!(t.client.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn plaintext_http_is_not_tls() {
    let p = pki("plain");
    let mut s = Tls::new(p.certs.current()).unwrap();
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let err = s.read(&mut req, &mut Vec::new(), &mut Vec::new());
    assert_eq!(err, Err(TlsError::NotTls));
}

#[test]
fn garbage_after_a_tls_looking_byte_fails_the_handshake() {
    let p = pki("garbage");
    let mut s = Tls::new(p.certs.current()).unwrap();
    // A handshake record whose message claims 128 KiB: refused at once, not waited for.
    let mut junk = vec![0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5];
    let mut out = Vec::new();
    match s.read(&mut junk, &mut Vec::new(), &mut out) {
        Err(TlsError::Handshake(_)) => {}
        other => panic!("expected a handshake error, got {other:?}"),
    }
    // A ClientHello that offers nothing in common: refused, with an alert.
    let mut s = Tls::new(p.certs.current()).unwrap();
    let mut hello = client_hello_without_common_cipher();
    let mut out = Vec::new();
    match s.read(&mut hello, &mut Vec::new(), &mut out) {
        Err(TlsError::Handshake(e)) => assert!(e.contains("incompatible"), "{e}"),
        other => panic!("expected a handshake error, got {other:?}"),
    }
    assert_eq!(
        out.first(),
        Some(&21),
        "an alert record is sent before the close"
    );
}

/// A TLS 1.2 ClientHello offering only TLS_RSA_WITH_NULL_MD5 (0x0001).
fn client_hello_without_common_cipher() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x00, 0x01]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut hs = vec![1, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn close_notify_both_ways() {
    let p = pki("close");
    let mut t = Pair::new(&p);
    t.handshake(usize::MAX);
    t.client.send_close_notify();
    let r = t.client_sends(usize::MAX).unwrap();
    assert!(r.peer_closed && t.server.peer_closed());
    let mut out = Vec::new();
    t.server.close_notify(&mut out);
    assert!(!out.is_empty());
    let mut rd = &out[..];
    t.client.read_tls(&mut rd).unwrap();
    t.client.process_new_packets().unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(t.client.reader().read(&mut buf).unwrap(), 0, "clean EOF");
    let mut again = Vec::new();
    t.server.close_notify(&mut again);
    assert!(again.is_empty(), "sent once");
}

#[test]
fn a_returning_client_resumes() {
    let p = pki("resume");
    for versions in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut cfg = (*p.client).clone();
        // One config for both connections: it keeps the ticket / session id.
        cfg = ClientConfig::builder_with_provider(cfg.crypto_provider().clone())
            .with_protocol_versions(&[versions])
            .unwrap()
            .with_root_certificates(root_of(&p))
            .with_no_client_auth();
        let cfg = Arc::new(cfg);
        let mut first = Pair::with_client(&p, cfg.clone());
        first.handshake(usize::MAX);
        assert!(!first.server.resumed());
        let mut second = Pair::with_client(&p, cfg);
        second.handshake(usize::MAX);
        assert!(second.server.resumed(), "{versions:?}: resumed");
    }
}

#[test]
fn nothing_can_be_written_before_the_handshake() {
    let p = pki("early");
    let mut s = Tls::new(p.certs.current()).unwrap();
    assert!(s.write(b"x", &mut Vec::new()).is_err());
}

fn root_of(p: &Pki) -> RootCertStore {
    let pem = std::fs::read(p.dir.join("cert.pem")).unwrap();
    let mut roots = RootCertStore::empty();
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .unwrap();
    roots.add(chain[1].clone()).unwrap();
    roots
}

/// A client offering one version and one cipher suite.
fn client_with(
    p: &Pki,
    version: &'static rustls::SupportedProtocolVersion,
    suite: &str,
) -> Arc<ClientConfig> {
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| format!("{:?}", s.suite()) == suite);
    assert_eq!(provider.cipher_suites.len(), 1, "{suite}");
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(root_of(p))
            .with_no_client_auth(),
    )
}

#[test]
fn after_the_handshake_every_version_and_suite_carries_data_both_ways() {
    let p = pki("suites");
    use rustls::version::{TLS12, TLS13};
    for (v, suite) in [
        (&TLS13, "TLS13_AES_256_GCM_SHA384"),
        (&TLS13, "TLS13_AES_128_GCM_SHA256"),
        (&TLS13, "TLS13_CHACHA20_POLY1305_SHA256"),
        (&TLS12, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
        (&TLS12, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
        (&TLS12, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    ] {
        let mut t = Pair::with_client(&p, client_with(&p, v, suite));
        t.handshake(usize::MAX);
        assert!(
            t.server.traffic.is_some(),
            "{suite}: handed over to the record layer"
        );
        assert!(t.server.hs.is_none(), "{suite}: rustls' connection freed");
        for round in 0..3 {
            let msg: Vec<u8> = (0..(round * 20_000 + 7)).map(|i| (i * 7) as u8).collect();
            t.client.writer().write_all(&msg).unwrap();
            t.client_sends(if round == 1 { 1 } else { usize::MAX })
                .unwrap();
            assert_eq!(std::mem::take(&mut t.got), msg, "{suite}: client to server");
            let mut out = Vec::new();
            t.server.write(&msg, &mut out).unwrap();
            t.server_sends(&out);
            assert_eq!(t.client_plain(), msg, "{suite}: server to client");
        }
        t.client.send_close_notify();
        assert!(t.client_sends(usize::MAX).unwrap().peer_closed, "{suite}");
        let mut out = Vec::new();
        t.server.close_notify(&mut out);
        let mut rd = &out[..];
        t.client.read_tls(&mut rd).unwrap();
        t.client.process_new_packets().unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            t.client.reader().read(&mut buf).unwrap(),
            0,
            "{suite}: clean EOF"
        );
    }
}

#[test]
fn a_client_key_update_is_followed_and_answered() {
    let p = pki("keyupdate");
    let mut t = Pair::new(&p);
    t.handshake(usize::MAX);
    for _ in 0..3 {
        // The client asks for an update (update_requested): the server follows, answers with its
        // own, and both keep talking with the new keys.
        t.client.refresh_traffic_keys().unwrap();
        t.client.writer().write_all(b"after the update").unwrap();
        let mut wire = Vec::new();
        while t.client.wants_write() {
            t.client.write_tls(&mut wire).unwrap();
        }
        t.pending.extend_from_slice(&wire);
        let mut out = Vec::new();
        let r = t.server.read(&mut t.pending, &mut t.got, &mut out).unwrap();
        t.pending.drain(..r.used);
        assert_eq!(std::mem::take(&mut t.got), b"after the update");
        assert!(!out.is_empty(), "the server's KeyUpdate");
        t.server.write(b"answered", &mut out).unwrap();
        t.server_sends(&out);
        assert_eq!(t.client_plain(), b"answered");
    }
}

#[test]
fn a_tampered_record_ends_the_session_with_an_alert() {
    let p = pki("tamper");
    let mut t = Pair::new(&p);
    t.handshake(usize::MAX);
    t.client.writer().write_all(b"hello").unwrap();
    let mut wire = Vec::new();
    while t.client.wants_write() {
        t.client.write_tls(&mut wire).unwrap();
    }
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let mut out = Vec::new();
    match t.server.read(&mut wire, &mut Vec::new(), &mut out) {
        Err(TlsError::Record(_)) => {}
        other => panic!("expected a record error, got {other:?}"),
    }
    assert!(!out.is_empty(), "bad_record_mac alert");
}

#[test]
fn an_idle_session_after_the_handshake_is_small() {
    let p = pki("small");
    let mut t = Pair::new(&p);
    t.handshake(usize::MAX);
    assert!(
        std::mem::size_of::<Tls>() <= 48,
        "{}",
        std::mem::size_of::<Tls>()
    );
    assert!(
        std::mem::size_of::<super::record::Traffic>() <= 720,
        "{}",
        std::mem::size_of::<super::record::Traffic>()
    );
}

#[test]
fn the_server_updates_its_key_before_the_limit() {
    let p = pki("rekey");
    let mut t = Pair::new(&p);
    t.handshake(usize::MAX);
    t.server.traffic.as_mut().unwrap().set_rekey_after(5);
    // 20 records: a KeyUpdate of the server's own every 5; the client follows each.
    let mut out = Vec::new();
    for i in 0..20u8 {
        t.server.write(&[i; 100], &mut out).unwrap();
    }
    t.server_sends(&out);
    let got = t.client_plain();
    assert_eq!(got.len(), 2000);
    assert!(
        got.chunks(100)
            .enumerate()
            .all(|(i, c)| c.iter().all(|&b| b == i as u8))
    );
    // And the session goes on both ways.
    t.client.writer().write_all(b"still here").unwrap();
    t.client_sends(usize::MAX).unwrap();
    assert_eq!(t.got, b"still here");
}

#[test]
fn an_oversized_record_after_the_handshake_gets_record_overflow() {
    let p = pki("overflow");
    let mut t = Pair::new(&p);
    t.handshake(usize::MAX);
    // A TLS 1.3 application-data record claiming 20,000 bytes (the limit is 16 KiB + 256).
    let mut rec = vec![23, 3, 3, (20_000u16 >> 8) as u8, 20_000u16 as u8];
    rec.extend(std::iter::repeat_n(0u8, 100));
    let mut out = Vec::new();
    match t.server.read(&mut rec, &mut Vec::new(), &mut out) {
        Err(TlsError::Record(e)) => assert!(e.contains("20000"), "{e}"),
        other => panic!("expected a record error, got {other:?}"),
    }
    // The alert is encrypted: the client reads record_overflow.
    let mut rd = &out[..];
    t.client.read_tls(&mut rd).unwrap();
    let err = t.client.process_new_packets().unwrap_err();
    assert!(format!("{err:?}").contains("RecordOverflow"), "{err:?}");
}
