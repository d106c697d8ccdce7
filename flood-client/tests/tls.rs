//! flood over TLS (`wss://`, `https://`) against a real edgecomet with `--tls-listen`, started in
//! this test process with a certificate made at test time (a CA and a certificate for
//! localhost and 127.0.0.1 it signed; no key committed): every transport with a publish load
//! (published over https too) and nothing lost, a broadcast, `--ca` with the wrong CA and
//! `--insecure`, resumed handshakes on churn with `--tls-resume` on and off.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use edgecomet::Server;

use common::*;

/// A CA and a server certificate it signed, as PEM files; and another CA, which did not.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("flood-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let other_key = rcgen::KeyPair::generate().unwrap();
        let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let other = other.self_signed(&other_key).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, f: &str) -> String {
        self.dir.join(f).to_string_lossy().into_owned()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// An edgecomet serving TLS too, with `pki`'s certificate.
fn tls_server(pki: &Pki) -> Server {
    server_with(|c| {
        c.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        c.tls_cert = Some(Path::new(&pki.path("cert.pem")).to_path_buf());
        c.tls_key = Some(Path::new(&pki.path("key.pem")).to_path_buf());
    })
}

fn url(srv: &Server, scheme: &str, channel: &str) -> String {
    format!("{scheme}://{}/sub/{channel}", srv.tls_addr().unwrap())
}

/// A server counter summed over its workers.
fn server_total(srv: &Server, key: &str) -> u64 {
    let j: serde_json::Value = serde_json::from_str(&srv.stats_json()).unwrap();
    j["total"][key].as_u64().unwrap_or(0)
}

fn no_errors(r: &serde_json::Value) {
    let errors = r["errors"].as_object().unwrap();
    assert!(errors.values().all(|v| v == 0), "errors: {errors:?}");
    assert_eq!(r["tls"]["failures"]["cert"], 0);
    assert_eq!(r["tls"]["failures"]["handshake"], 0);
    assert!(r["tls"]["first_error"].is_null(), "{}", r["tls"]);
}

/// 500 wss subscribers over 2 processes and 4 channels, a publish load over https: every
/// message reaches each subscriber once and in order; one handshake per connection.
#[test]
fn wss_500_subscribers_with_a_publish_load_lose_nothing() {
    let pki = Pki::new("wss500");
    let srv = tls_server(&pki);
    let ca = pki.path("ca.pem");
    let (status, _, r) = flood_url(
        &url(&srv, "wss", "w500"),
        "w500",
        &[
            "--ca",
            &ca,
            "--conns",
            "500",
            "--rate",
            "max",
            "--procs",
            "2",
            "--channels",
            "4",
            "--duration",
            "2",
            "--publish-rate",
            "100",
        ],
    );
    assert!(status.success(), "{r:#}");
    assert_eq!(r["conns_established"], 500);
    no_errors(&r);
    let published = check_exact(&r, 125);
    assert!(published >= 100, "published {published}");
    let t = &r["tls"];
    assert_eq!(t["verify"], "ca");
    assert_eq!(t["resume"], true);
    assert_eq!(t["handshakes"], 500);
    assert_eq!(t["ramp_handshakes"], 500);
    assert!(t["handshakes_per_sec_ramp"].as_f64().unwrap() > 0.0, "{t}");
    let resumed = t["resumed"].as_u64().unwrap();
    assert_eq!(t["full_handshakes"].as_u64().unwrap() + resumed, 500, "{t}");
    // The server saw them all, and the publishers' too.
    assert!(server_total(&srv, "tls_handshakes") >= 500);
    assert!(server_total(&srv, "tls_resumed") >= resumed);
}

/// SSE and long-poll over https, Bayeux over https long-polling and wss: nothing lost.
#[test]
fn every_http_transport_over_https() {
    let pki = Pki::new("https");
    let srv = tls_server(&pki);
    let ca = pki.path("ca.pem");
    for (name, transport) in [
        ("sse", &["--transport", "sse"][..]),
        ("longpoll", &["--transport", "longpoll"][..]),
        ("bayeuxlp", &["--transport", "bayeux"][..]),
        (
            "bayeuxws",
            &["--transport", "bayeux", "--bayeux-transport", "websocket"][..],
        ),
    ] {
        let mut args = vec![
            "--ca",
            &ca,
            "--conns",
            "60",
            "--rate",
            "max",
            "--procs",
            "1",
            "--duration",
            "1",
            "--publish-rate",
            "40",
        ];
        args.extend_from_slice(transport);
        let (status, _, r) = flood_url(&url(&srv, "https", name), name, &args);
        assert!(status.success(), "{name}: {r:#}");
        assert_eq!(r["conns_established"], 60, "{name}");
        no_errors(&r);
        let published = check_exact(&r, 60);
        assert!(published >= 20, "{name}: published {published}");
        assert_eq!(r["tls"]["handshakes"], 60, "{name}");
    }
}

/// Broadcasts over wss: each reaches every subscriber.
#[test]
fn a_broadcast_over_wss() {
    let pki = Pki::new("bcast");
    let srv = tls_server(&pki);
    let ca = pki.path("ca.pem");
    let (status, _, r) = flood_url(
        &url(&srv, "wss", "bcast"),
        "bcast",
        &[
            "--ca",
            &ca,
            "--conns",
            "200",
            "--rate",
            "max",
            "--procs",
            "2",
            "--duration",
            "1",
            "--broadcasts",
            "3",
            "--size",
            "2000",
        ],
    );
    assert!(status.success(), "{r:#}");
    let each = r["broadcasts"]["each"].as_array().unwrap().clone();
    assert_eq!(each.len(), 3);
    for b in &each {
        assert_eq!(b["deliveries"], 200, "{b}");
    }
    no_errors(&r);
}

/// `--ca` with a CA that did not sign the server's certificate: no connection opens, each is
/// counted as a certificate failure, the report says why and what to do, the run fails.
#[test]
fn the_wrong_ca_fails_cleanly() {
    let pki = Pki::new("wrongca");
    let srv = tls_server(&pki);
    let other = pki.path("other-ca.pem");
    let (status, out, r) = flood_url(
        &url(&srv, "wss", "wrong"),
        "wrong",
        &[
            "--ca",
            &other,
            "--conns",
            "20",
            "--rate",
            "max",
            "--procs",
            "1",
            "--duration",
            "1",
        ],
    );
    assert!(!status.success());
    assert_eq!(r["conns_established"], 0);
    assert_eq!(r["errors"]["tls_cert"], 20);
    assert_eq!(r["tls"]["failures"]["cert"], 20);
    assert_eq!(r["tls"]["handshakes"], 0);
    let e = r["tls"]["first_error"].as_str().unwrap();
    // UnknownIssuer, or BadSignature: both CAs have rcgen's default name.
    assert!(e.contains("invalid peer certificate"), "{e}");
    assert!(
        out.contains("first TLS failure: server certificate refused"),
        "{out}"
    );
    assert!(
        out.contains("tls-cert: the server's certificate was refused"),
        "{out}"
    );
}

/// `--insecure`: no CA needed, the session still works (and is reported as unverified).
#[test]
fn insecure_connects_without_a_ca() {
    let pki = Pki::new("insecure");
    let srv = tls_server(&pki);
    let (status, _, r) = flood_url(
        &url(&srv, "wss", "insec"),
        "insec",
        &[
            "--insecure",
            "--conns",
            "50",
            "--rate",
            "max",
            "--procs",
            "1",
            "--duration",
            "1",
            "--publish-rate",
            "20",
        ],
    );
    assert!(status.success(), "{r:#}");
    no_errors(&r);
    check_exact(&r, 50);
    assert_eq!(r["tls"]["verify"], "none");
}

/// TLS URLs need --ca or --insecure; those flags need a TLS URL.
#[test]
fn tls_flags_are_checked_before_the_run() {
    for (url, extra, want) in [
        ("wss://127.0.0.1:1/sub/x", &[][..], "is TLS: give --ca FILE"),
        (
            "ws://127.0.0.1:1/sub/x",
            &["--insecure"][..],
            "--ca and --insecure are for wss:// and https:// URLs",
        ),
        (
            "https://127.0.0.1:1/sub/x",
            &["--ca", "/nonexistent/ca.pem"][..],
            "--ca /nonexistent/ca.pem: cannot be read",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_flood"))
            .args(["--url", url, "--conns", "1"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{url} {extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{url} {extra:?}: {err}");
    }
}

/// Churn over wss: the replacements resume sessions (counted by flood and by the server);
/// with `--tls-resume off` none does.
#[test]
fn churn_resumes_sessions_unless_told_not_to() {
    let pki = Pki::new("churn");
    let srv = tls_server(&pki);
    let ca = pki.path("ca.pem");
    for resume in ["on", "off"] {
        let before = server_total(&srv, "tls_resumed");
        let (status, _, r) = flood_url(
            &url(&srv, "wss", &format!("churn{resume}")),
            &format!("churn{resume}"),
            &[
                "--ca",
                &ca,
                "--tls-resume",
                resume,
                "--conns",
                "100",
                "--rate",
                "max",
                "--procs",
                "1",
                "--duration",
                "2",
                "--churn",
                "50",
            ],
        );
        assert!(status.success(), "{r:#}");
        no_errors(&r);
        let t = &r["tls"];
        let churned = r["churn"]["closed_by_client"].as_u64().unwrap();
        assert!(churned >= 50, "{}", r["churn"]);
        assert_eq!(t["handshakes"].as_u64().unwrap(), 100 + churned, "{t}");
        let resumed = t["resumed"].as_u64().unwrap();
        let server_resumed = server_total(&srv, "tls_resumed") - before;
        if resume == "on" {
            // Every replacement starts after earlier handshakes left tickets: it resumes.
            assert!(resumed >= churned, "{t} churned {churned}");
            assert_eq!(server_resumed, resumed);
        } else {
            assert_eq!(resumed, 0, "{t}");
            assert_eq!(server_resumed, 0);
        }
    }
}
