//! TLS settings: the certificate chain and key read from PEM files into a rustls
//! `ServerConfig` (TLS 1.2 and 1.3, ALPN `http/1.1`, session resumption by ticket and by a
//! bounded session cache), and its replacement on SIGHUP. The session itself, per connection, is
//! [`crate::proto::tls`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ProducesTickets, ServerSessionMemoryCache, StoresServerSessions};

/// The server's certificate, replaceable while it runs.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    /// Kept across reloads: a client resumes a session made under the old chain.
    sessions: Arc<dyn StoresServerSessions>,
    tickets: Arc<dyn ProducesTickets>,
    current: RwLock<Arc<ServerConfig>>,
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
}

impl std::fmt::Debug for Certs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certs")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl Certs {
    /// Reads the chain and key; the error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path, session_cache: usize) -> Result<Certs, String> {
        let sessions: Arc<dyn StoresServerSessions> =
            ServerSessionMemoryCache::new(session_cache.max(1));
        let tickets = ring::Ticketer::new().map_err(|e| format!("TLS tickets: {e}"))?;
        let config = build(cert, key, &sessions, &tickets)?;
        Ok(Certs {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            sessions,
            tickets,
            current: RwLock::new(config),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        })
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on success new handshakes use them (sessions in progress keep
    /// theirs). On failure the old chain stays. Counted either way.
    pub fn reload(&self) -> Result<(), String> {
        match build(&self.cert, &self.key, &self.sessions, &self.tickets) {
            Ok(c) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = c;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.reload_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }
}

fn build(
    cert: &Path,
    key: &Path,
    sessions: &Arc<dyn StoresServerSessions>,
    tickets: &Arc<dyn ProducesTickets>,
) -> Result<Arc<ServerConfig>, String> {
    let chain = read_chain(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: no private key could be read ({e})", key.display()))?;
    // ring: X25519 and P-256 key exchange, AES-GCM and ChaCha20-Poly1305, ECDSA/RSA/Ed25519
    // keys; it builds with the C compiler alone. (Deprecated in rustls for its lack of
    // post-quantum key exchange, which aws-lc-rs has at the price of a much longer build.)
    #[allow(deprecated)]
    let mut provider = ring::default_provider();
    // Key exchange: X25519 first, then P-256, then P-384 (ring's default order puts P-384
    // first). rustls takes the client's first group it supports, so this order decides only
    // where the client leaves it to the server; P-384 costs several times X25519 in ring.
    provider.kx_groups = vec![
        ring::kx_group::X25519,
        ring::kx_group::SECP256R1,
        ring::kx_group::SECP384R1,
    ];
    let provider = Arc::new(provider);
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            format!(
                "{} and {}: the key does not go with the certificate, or is not usable ({e})",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = sessions.clone();
    config.ticketer = tickets.clone();
    // Early data is off (it could be replayed; nothing here needs it).
    config.max_early_data_size = 0;
    // After the handshake the session is handed over as traffic secrets and the records are
    // protected by `proto::tls::record` (rustls' kernel-TLS interface): an idle connection
    // then keeps its keys and sequence numbers, not rustls' whole connection.
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot be read as PEM ({e})", path.display()))?;
    let chain = iter.collect::<Result<Vec<_>, _>>().map_err(|e| {
        format!(
            "{}: a certificate in it cannot be read ({e})",
            path.display()
        )
    })?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no certificate (PEM \"CERTIFICATE\") in it",
            path.display()
        ));
    }
    Ok(chain)
}
