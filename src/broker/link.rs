//! One connection to Redis, plain or TLS (`rediss://`), opened with `AUTH` and `SELECT` as the
//! URL asks ([`super::url::BrokerUrl`]). Blocking I/O: each connection has a thread of its own.
//!
//! Errors never carry the password: Redis's own error text does not repeat it, and ours name
//! only the user.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use super::resp::{self, Value};
use super::url::BrokerUrl;

/// How long the opening round trip (TLS handshake, AUTH, SELECT) may take.
const HELLO_TIMEOUT: Duration = Duration::from_secs(3);

/// A connection to Redis.
pub enum Link {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Link {
    /// The TCP socket under it.
    pub fn sock(&self) -> &TcpStream {
        match self {
            Link::Plain(s) => s,
            Link::Tls(t) => &t.sock,
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        self.sock().set_read_timeout(d)
    }

    /// Whether the peer of an idle connection is still there: no EOF, no error, and nothing
    /// sent that was not asked for (Redis sends nothing unasked on a publisher connection;
    /// over TLS, records such as session tickets are taken in and are not "something").
    pub fn peer_open(&mut self) -> bool {
        if self.sock().set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let open = match self {
            Link::Plain(s) => match s.peek(&mut b) {
                // Nothing was asked: bytes now would be a protocol error, a 0 is the EOF.
                Ok(_) => false,
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            },
            Link::Tls(t) => match t.read(&mut b) {
                Ok(_) => false,
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            },
        };
        open && self.sock().set_nonblocking(false).is_ok()
    }

    /// Whether bytes are waiting above the socket: over TLS, records already received and
    /// decrypted but not yet read (a wait on the socket would not see them). An error in what
    /// was received, and the peer's close_notify, also say yes, so that the read that follows
    /// reports them.
    pub fn buffered(&mut self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Tls(t) => t.conn.process_new_packets().map_or(true, |s| {
                s.plaintext_bytes_to_read() > 0 || s.peer_has_closed()
            }),
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Tls(t) => t.flush(),
        }
    }
}

/// The TLS client configuration for `rediss://`: roots from `ca` (PEM) or, without it,
/// Mozilla's (webpki-roots).
pub fn tls_config(ca: Option<&std::path::Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let iter = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--broker-ca {}: {e}", path.display()))?;
            for c in iter {
                let c = c.map_err(|e| format!("--broker-ca {}: {e}", path.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--broker-ca {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--broker-ca {}: no PEM certificate in it",
                    path.display()
                ));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    // ring, as for the server side (src/tls.rs says why).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// Opens a connection: TCP (1 s per address), TLS when asked, then `AUTH` and `SELECT`, each
/// answered before the connection is handed over. Without a password, a `probe` sends a
/// `PING` to find out whether Redis wants one (the start's first connection); the working
/// connections then send nothing first, so that a reconnection takes no extra round trip
/// (with Redis paused, a `PING` would hold the subscriber back past the publishes it must see).
/// A refused `AUTH` or `SELECT` is `PermissionDenied` / `InvalidInput` with Redis's reason.
pub fn open(url: &BrokerUrl, tls: Option<&Arc<ClientConfig>>, probe: bool) -> io::Result<Link> {
    let addrs: Vec<SocketAddr> = url.addr.to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut sock = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, Duration::from_secs(1)) {
            Ok(s) => {
                sock = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let sock = sock.ok_or(last)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(HELLO_TIMEOUT))?;
    sock.set_write_timeout(Some(HELLO_TIMEOUT))?;
    let mut link = match tls {
        Some(cfg) => {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let conn = ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
            let mut t = StreamOwned::new(conn, sock);
            // The handshake now, so that a certificate problem is reported as such.
            while t.conn.is_handshaking() {
                t.conn
                    .complete_io(&mut t.sock)
                    .map_err(|e| io::Error::other(format!("TLS to Redis: {e}")))?;
            }
            Link::Tls(Box::new(t))
        }
        None => Link::Plain(sock),
    };
    hello(&mut link, url, probe)?;
    link.sock().set_write_timeout(None)?;
    Ok(link)
}

/// `AUTH` (or `PING`) and `SELECT`, each answered before the connection is used.
fn hello(link: &mut Link, url: &BrokerUrl, probe: bool) -> io::Result<()> {
    let mut out = Vec::new();
    let mut asked = Vec::new();
    match (&url.user, &url.password) {
        (Some(u), Some(p)) => {
            resp::command(&mut out, &[b"AUTH", u.as_bytes(), p.as_bytes()]);
            asked.push("AUTH");
        }
        (None, Some(p)) => {
            resp::command(&mut out, &[b"AUTH", p.as_bytes()]);
            asked.push("AUTH");
        }
        _ if probe => {
            resp::command(&mut out, &[b"PING"]);
            asked.push("PING");
        }
        _ => {}
    }
    if asked.is_empty() && url.db.is_none() {
        return Ok(());
    }
    let db = url.db.map(|d| d.to_string());
    if let Some(d) = &db {
        resp::command(&mut out, &[b"SELECT", d.as_bytes()]);
        asked.push("SELECT");
    }
    link.write_all(&out)?;
    let mut buf = Vec::new();
    let mut scratch = [0u8; 512];
    for what in asked {
        let v = loop {
            match resp::parse(&buf, 4096) {
                Ok(Some((v, used))) => {
                    buf.drain(..used);
                    break v;
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
            match link.read(&mut scratch)? {
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("Redis closed the connection before answering {what}"),
                    ));
                }
                k => buf.extend_from_slice(&scratch[..k]),
            }
        };
        if let Value::Error(e) = v {
            let user = url.user.as_deref().unwrap_or("default");
            return Err(match what {
                "AUTH" => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("Redis refused AUTH for user {user:?} (wrong password?): {e}"),
                ),
                "PING" if e.starts_with("NOAUTH") => io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "Redis wants a password: {e} (give it in the URL: \
                         redis://:PASSWORD@HOST:PORT or redis://USER:PASSWORD@HOST:PORT)"
                    ),
                ),
                "SELECT" => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("Redis refused SELECT {}: {e}", url.db.unwrap_or(0)),
                ),
                _ => io::Error::other(format!("Redis answered {what} with an error: {e}")),
            });
        }
    }
    Ok(())
}
