//! TLS on `--tls-listen`, over real sockets with rustls' client: every transport, resumption,
//! and what the TLS port does with bad input (each counted). The certificates are made at test
//! time (a CA and a "localhost" certificate it signs); no key is committed.

mod common;

#[path = "common/chaos.rs"]
mod chaos;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecomet::{Config, Server};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use common::*;

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A CA and a certificate for "localhost" (and 127.0.0.1) it signed, as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
    ca: CertificateDer<'static>,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("edgecomet-tls-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = Pki::issue(&dir, "");
        Pki { dir, ca }
    }

    /// A new CA and server certificate into `dir/cert{suffix}.pem`, `dir/key{suffix}.pem`;
    /// returns the CA certificate.
    fn issue(dir: &Path, suffix: &str) -> CertificateDer<'static> {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("cert{suffix}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("key{suffix}.pem")), key.serialize_pem()).unwrap();
        ca_cert.der().clone()
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn client(&self) -> Arc<ClientConfig> {
        client_trusting(&self.ca)
    }
}

fn client_trusting(ca: &CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A server with plaintext and TLS listeners on free loopback ports.
fn tls_server(p: &Pki, tweak: impl FnOnce(&mut Config)) -> (Server, SocketAddr) {
    let s = server(2, |c| {
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls_cert = Some(p.cert());
        c.tls_key = Some(p.key());
        tweak(c);
    });
    let a = s.tls_addr().expect("a TLS address");
    (s, a)
}

fn connect(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> Tls {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let conn =
        ClientConnection::new(cfg.clone(), ServerName::try_from("localhost").unwrap()).unwrap();
    let mut s = StreamOwned::new(conn, sock);
    // Complete the handshake now (a write of nothing does not start it).
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    }
    s
}

/// One request on a new TLS connection (`Connection: close`), the whole answer.
fn https(addr: SocketAddr, cfg: &Arc<ClientConfig>, req: &str) -> String {
    let mut s = connect(addr, cfg);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn publish(addr: SocketAddr, cfg: &Arc<ClientConfig>, channel: &str, body: &str) -> String {
    https(
        addr,
        cfg,
        &format!(
            "POST /pub/{channel} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn every_transport_over_tls() {
    let p = Pki::new("every");
    let (srv, addr) = tls_server(&p, |_| {});
    let cfg = p.client();
    // WebSocket (wss://), with envelopes.
    let (mut ws, resp) = tungstenite::client(
        format!("wss://localhost:{}/sub/t?envelope=1", addr.port()),
        connect(addr, &cfg),
    )
    .expect("wss upgrade");
    assert_eq!(resp.status(), 101);
    // SSE.
    let mut sse = connect(addr, &cfg);
    sse.write_all(b"GET /sub/t?transport=sse HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // A held long-poll (JSON).
    let mut poll = connect(addr, &cfg);
    poll.write_all(b"GET /sub/t HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n")
        .unwrap();
    assert!(wait_until(5, || total(&srv, "conns_ws_sub") == 1
        && total(&srv, "conns_sse") == 1
        && total(&srv, "conns_poll") == 1));
    let big = "y".repeat(40_000); // three records
    let answer = publish(addr, &cfg, "t", &big);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let v: serde_json::Value = match ws.read().unwrap() {
        tungstenite::Message::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(v["data"].as_str().unwrap().len(), 40_000);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while find(&got, big.as_bytes()).is_none() {
        let n = sse.read(&mut buf).unwrap();
        assert!(n > 0, "SSE stream ended");
        got.extend_from_slice(&buf[..n]);
    }
    let mut answer = String::new();
    while !answer.contains(&big) {
        let n = poll.read(&mut buf).unwrap();
        assert!(n > 0, "poll answer incomplete");
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 200"));
    // /stats over TLS, and the plaintext listener still serves.
    let stats = https(
        addr,
        &cfg,
        "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(stats.starts_with("HTTP/1.1 200"), "{stats}");
    assert_eq!(
        status(&raw(
            srv.local_addr(),
            b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )),
        200
    );
    assert!(total(&srv, "tls_handshakes") >= 5);
    // The https requests' connections go once their clients' FINs are read.
    assert!(
        wait_until(5, || total(&srv, "tls_conns") == 3),
        "ws, sse and the poll still open: {}",
        total(&srv, "tls_conns")
    );
    assert_eq!(total(&srv, "tls_handshake_errors"), 0);
}

#[test]
fn a_broadcast_reaches_every_tls_subscriber_in_order() {
    let p = Pki::new("fanout");
    let (srv, addr) = tls_server(&p, |_| {});
    let cfg = p.client();
    const SUBS: usize = 100;
    const MSGS: usize = 50;
    let mut subs: Vec<_> = (0..SUBS)
        .map(|_| {
            tungstenite::client(
                format!("wss://localhost:{}/sub/b", addr.port()),
                connect(addr, &cfg),
            )
            .expect("wss upgrade")
            .0
        })
        .collect();
    assert!(wait_until(5, || total(&srv, "conns_ws_sub") == SUBS as u64));
    let mut publisher = Publisher::new(srv.local_addr());
    for i in 0..MSGS {
        assert_eq!(publisher.publish("b", format!("m{i}").as_bytes()).0, 200);
    }
    for s in &mut subs {
        for i in 0..MSGS {
            match s.read().unwrap() {
                tungstenite::Message::Text(t) => assert_eq!(t.as_str(), format!("m{i}")),
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(total(&srv, "messages_out"), (SUBS * MSGS) as u64);
}

#[test]
fn a_returning_client_resumes() {
    let p = Pki::new("resume");
    let (srv, addr) = tls_server(&p, |_| {});
    let cfg = p.client(); // keeps the ticket
    for _ in 0..2 {
        let a = https(
            addr,
            &cfg,
            "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(a.starts_with("HTTP/1.1 200"));
    }
    assert!(wait_until(5, || total(&srv, "tls_resumed") == 1));
    assert_eq!(total(&srv, "tls_handshakes"), 2);
}

#[test]
fn plaintext_on_the_tls_port_is_answered_in_plaintext() {
    let p = Pki::new("plain");
    let (srv, addr) = tls_server(&p, |_| {});
    let a = raw(addr, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status(&a), 400);
    assert!(find(&a, b"speaks TLS").is_some());
    assert!(wait_until(5, || total(&srv, "tls_not_tls") == 1));
}

#[test]
fn a_stalled_handshake_is_cut_at_the_head_timeout() {
    let p = Pki::new("stall");
    let (srv, addr) = tls_server(&p, |c| c.head_timeout = 1);
    // The first bytes of a ClientHello, then nothing.
    let mut s = TcpStream::connect(addr).unwrap();
    let t0 = Instant::now();
    s.write_all(&[0x16, 0x03, 0x01, 0x00, 0xf0, 0x01]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = t0.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        took > Duration::from_secs(1) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    assert!(wait_until(5, || total(&srv, "tls_handshake_timeouts") == 1));
}

#[test]
fn no_common_cipher_suite_gets_an_alert() {
    let p = Pki::new("nocipher");
    let (srv, addr) = tls_server(&p, |_| {});
    // A TLS 1.2 ClientHello offering only TLS_RSA_WITH_NULL_MD5.
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x00, 0x01, 1, 0]);
    let mut hs = vec![1, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    rec.extend_from_slice(&hs);
    let a = raw(addr, &rec);
    assert_eq!(a.first(), Some(&21), "an alert record: {a:?}");
    assert!(wait_until(5, || total(&srv, "tls_handshake_errors") == 1));
}

#[test]
fn a_peer_gone_without_close_notify_is_counted() {
    let p = Pki::new("nonotify");
    let (srv, addr) = tls_server(&p, |_| {});
    let s = connect(addr, &p.client());
    assert!(wait_until(5, || total(&srv, "tls_handshakes") == 1));
    drop(s); // TCP close, no close_notify
    assert!(wait_until(5, || total(&srv, "tls_no_close_notify") == 1));
    assert!(wait_until(5, || total(&srv, "tls_conns") == 0));
}

#[test]
fn bad_files_stop_the_start_with_their_name() {
    let p = Pki::new("badfiles");
    let other = Pki::new("badfiles-other");
    let start = |cert: PathBuf, key: PathBuf| {
        let mut cfg = Config::defaults();
        cfg.listen = "127.0.0.1:0".parse().unwrap();
        cfg.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.tls_cert = Some(cert);
        cfg.tls_key = Some(key);
        Server::start(cfg).err().expect("refused").to_string()
    };
    let e = start(p.cert(), other.key());
    assert!(
        e.contains("key.pem") && e.contains("does not go with"),
        "{e}"
    );
    let e = start(p.dir.join("missing.pem"), p.key());
    assert!(e.contains("missing.pem"), "{e}");
    std::fs::write(p.dir.join("garbage.pem"), "not a certificate\n").unwrap();
    let e = start(p.dir.join("garbage.pem"), p.key());
    assert!(
        e.contains("garbage.pem") && e.contains("no certificate"),
        "{e}"
    );
}

/// The binary with `--tls-listen` on free ports; its TLS address from its first log line.
struct Proc {
    child: std::process::Child,
    err: std::io::BufReader<std::process::ChildStderr>,
    plain: SocketAddr,
    tls: SocketAddr,
}

impl Proc {
    fn start(p: &Pki) -> Proc {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_edgecomet"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--tls-listen",
                "127.0.0.1:0",
                "--workers",
                "1",
            ])
            .arg("--tls-cert")
            .arg(p.cert())
            .arg("--tls-key")
            .arg(p.key())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start edgecomet");
        let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        // "edgecomet: listening on A and B (TLS) with ..."
        let tls = line
            .split(" and ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no TLS address in {line:?}"));
        let plain = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"));
        Proc {
            child,
            err,
            plain,
            tls,
        }
    }

    fn hup_and_log(&mut self) -> String {
        use std::io::BufRead;
        // SAFETY: sending a signal to our own child.
        let r = unsafe { libc::kill(self.child.id() as i32, libc::SIGHUP) };
        assert_eq!(r, 0);
        loop {
            let mut line = String::new();
            assert!(self.err.read_line(&mut line).unwrap() > 0, "no SIGHUP line");
            if line.contains("SIGHUP") {
                return line;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a client trusting `ca` completes a handshake with `addr`.
fn trusted_by(addr: SocketAddr, ca: &CertificateDer<'static>) -> bool {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn = ClientConnection::new(
        client_trusting(ca),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut s = StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        if s.conn.complete_io(&mut s.sock).is_err() {
            return false;
        }
    }
    true
}

#[test]
fn sighup_loads_a_new_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let p = Pki::new("rotate");
    let mut srv = Proc::start(&p);
    assert!(trusted_by(srv.tls, &p.ca));
    // A new chain from another CA, in place of the old files.
    let new_ca = Pki::issue(&p.dir, "-new");
    std::fs::rename(p.dir.join("cert-new.pem"), p.cert()).unwrap();
    std::fs::rename(p.dir.join("key-new.pem"), p.key()).unwrap();
    let line = srv.hup_and_log();
    assert!(line.contains("TLS certificate reloaded"), "{line}");
    assert!(
        trusted_by(srv.tls, &new_ca),
        "new handshakes use the new chain"
    );
    assert!(!trusted_by(srv.tls, &p.ca), "and not the old one");
    // A broken file: refused, the chain in use stays.
    std::fs::write(p.cert(), "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let line = srv.hup_and_log();
    assert!(
        line.contains("NOT reloaded") && line.contains("cert.pem"),
        "{line}"
    );
    assert!(trusted_by(srv.tls, &new_ca));
    let stats = String::from_utf8(raw(
        srv.plain,
        b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ))
    .unwrap();
    assert!(
        stats.contains("\"tls_reloads\":1") && stats.contains("\"tls_reload_errors\":1"),
        "{stats}"
    );
}

#[test]
fn tls_under_the_launcher_and_the_broker() {
    // Two processes on one TLS port (and one plaintext port), joined through Redis: wss
    // subscribers spread over both get a publish made over https, once each.
    let p = Pki::new("launcher");
    let redis = chaos::Redis::start();
    let tls_port = chaos::free_port();
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let cert = p.cert().to_string_lossy().into_owned();
    let key = p.key().to_string_lossy().into_owned();
    let url = redis.url();
    let launcher = chaos::Launcher::start(
        2,
        &[
            "--broker",
            &url,
            "--tls-listen",
            &tls_addr.to_string(),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    let cfg = p.client();
    let mut subs: Vec<_> = (0..20)
        .map(|_| {
            tungstenite::client(
                format!("wss://localhost:{tls_port}/sub/l"),
                connect(tls_addr, &cfg),
            )
            .expect("wss upgrade")
            .0
        })
        .collect();
    // Every process has its share and is subscribed on Redis.
    let mut stats = serde_json::Value::Null;
    assert!(
        wait_until(10, || {
            let body = raw(
                launcher.addr,
                b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            let at = find(&body, b"\r\n\r\n").map_or(0, |i| i + 4);
            stats = serde_json::from_slice(&body[at..]).unwrap_or_default();
            stats["processes"]["total"]["conns_ws_sub"] == 20 && redis.numsub("l") == 2
        }),
        "{stats}"
    );
    let answer = publish(tls_addr, &cfg, "l", "through redis");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    for s in &mut subs {
        match s.read().unwrap() {
            tungstenite::Message::Text(t) => assert_eq!(t.as_str(), "through redis"),
            other => panic!("{other:?}"),
        }
    }
    // The launcher's sums count the handshakes of both processes (20 wss and the publish).
    assert!(
        wait_until(5, || {
            let body = raw(
                launcher.addr,
                b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            );
            let at = find(&body, b"\r\n\r\n").map_or(0, |i| i + 4);
            stats = serde_json::from_slice(&body[at..]).unwrap_or_default();
            stats["processes"]["total"]["tls_handshakes"].as_u64() >= Some(21)
        }),
        "{stats}"
    );
}

#[test]
fn a_giant_handshake_message_is_refused_and_the_server_goes_on() {
    let p = Pki::new("giant");
    let (srv, addr) = tls_server(&p, |_| {});
    // A ClientHello claiming 65,000 bytes, sent in full 16 KiB handshake records: rustls would
    // join them in the buffer; past 32 KiB kept the connection is refused.
    let mut s = TcpStream::connect(addr).unwrap();
    let mut msg = vec![1u8, 0, 0xfd, 0xe8]; // client_hello, length 65,000
    msg.extend(std::iter::repeat_n(0u8, 65_000));
    for chunk in msg.chunks(16_384) {
        let mut rec = vec![
            0x16,
            0x03,
            0x01,
            (chunk.len() >> 8) as u8,
            chunk.len() as u8,
        ];
        rec.extend_from_slice(chunk);
        if s.write_all(&rec).is_err() {
            break; // already refused
        }
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "closed");
    assert!(wait_until(5, || total(&srv, "tls_handshake_errors") == 1));
    // The worker is alive: another client is served.
    let a = https(
        addr,
        &p.client(),
        "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
}
