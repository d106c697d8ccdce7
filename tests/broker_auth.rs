//! `--broker` against Redis as it is run in production: a password (`requirepass`), an ACL
//! user, a database number, TLS (`rediss://`), and a wrong or changed password. Each test
//! starts a `redis-server` of its own (tests/common/redis.rs).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::bayeux::hub;
use common::redis::{Redis, free_port};
use common::*;
use edgecomet::Server;

fn with_broker(url: &str, tweak: impl FnOnce(&mut edgecomet::Config)) -> Server {
    let url = url.to_string();
    server(1, move |c| {
        c.broker = Some(url);
        c.broker_linger_ms = 200;
        tweak(c);
    })
}

fn connected(s: &Server) -> bool {
    wait_until(10, || hub(s, "broker_connected") == 1)
}

/// A subscriber on `sub` gets what is published on `via`, through Redis.
fn round_trip(via: &Server, sub: &Server, channel: &str, body: &str) {
    // Earlier channels linger 200 ms on Redis: wait them out, so that the count below is
    // this channel's.
    assert!(wait_until(10, || hub(sub, "broker_subscriptions") == 0));
    let mut ws = ws(sub.local_addr(), &format!("/sub/{channel}"));
    assert!(wait_until(10, || hub(sub, "broker_subscriptions") == 1));
    let (st, resp) = Publisher::new(via.local_addr()).publish(channel, body.as_bytes());
    assert_eq!(st, 202, "{resp}");
    assert_eq!(recv_text(&mut ws), body);
}

/// `redis-cli -p PORT ARGS...` (with `-a PASS` when given); its output.
fn redis_cli(port: u16, pass: Option<&str>, args: &[&str]) -> String {
    let mut c = Command::new("redis-cli");
    c.args(["-p", &port.to_string()]);
    if let Some(p) = pass {
        c.args(["-a", p, "--no-auth-warning"]);
    }
    let out = c.args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_password_is_sent_with_auth_on_both_connections() {
    let port = free_port();
    let _redis = Redis::start_with(port, &["--requirepass", "s3cret:@/x"]);
    // The password percent-encoded in the URL (`:` `@` `/`).
    let url = format!("redis://:s3cret%3A%40%2Fx@127.0.0.1:{port}");
    let a = with_broker(&url, |_| {});
    let b = with_broker(&url, |_| {});
    assert!(connected(&a) && connected(&b));
    round_trip(&a, &b, "pw", "through a password");
    // Both connections logged in: two clients per server, none refused.
    let clients = redis_cli(port, Some("s3cret:@/x"), &["CLIENT", "LIST"]);
    assert!(clients.lines().count() >= 4, "{clients}");
}

#[test]
fn an_acl_user_logs_in_with_its_name() {
    let port = free_port();
    let _redis = Redis::start_with(
        port,
        &[
            "--user", "alice", "on", ">secret", "~*", "&*", "+@all", "--user", "default", "off",
        ],
    );
    let a = with_broker(&format!("redis://alice:secret@127.0.0.1:{port}"), |_| {});
    assert!(connected(&a));
    round_trip(&a, &a, "acl", "as alice");
    // A user with only what edgecomet needs (docs/scale-out.md lists it).
    redis_cli(
        port,
        None,
        &[
            "--user",
            "alice",
            "--pass",
            "secret",
            "ACL",
            "SETUSER",
            "edge",
            "on",
            ">edgepw",
            "~edgecomet:id:*",
            "&*",
            "-@all",
            "+ping",
            "+select",
            "+subscribe",
            "+psubscribe",
            "+unsubscribe",
            "+punsubscribe",
            "+script|load",
            "+evalsha",
            "+incr",
            "+set",
            "+get",
            "+pexpire",
            "+time",
            "+publish",
        ],
    );
    let e = with_broker(&format!("redis://edge:edgepw@127.0.0.1:{port}"), |_| {});
    assert!(connected(&e));
    round_trip(&e, &a, "least", "least privilege");
    round_trip(&a, &e, "least", "and back");
    let who = redis_cli(
        port,
        None,
        &["--user", "alice", "--pass", "secret", "CLIENT", "LIST"],
    );
    assert!(who.contains("user=alice"), "{who}");
}

#[test]
fn a_database_number_is_selected_on_both_connections() {
    let port = free_port();
    let redis = Redis::start_on(port);
    let url = format!("{}/2", redis.url());
    let a = with_broker(&url, |_| {});
    let b = with_broker(&url, |_| {});
    assert!(connected(&a) && connected(&b));
    // Pub/sub is not per database in Redis: it crosses as before.
    round_trip(&a, &b, "db2", "in database 2");
    round_trip(&b, &a, "db2", "back");
    // The id counters are keys: they are in database 2, none in 0.
    let in2 = redis_cli(port, None, &["-n", "2", "KEYS", "edgecomet:id:*"]);
    let in0 = redis_cli(port, None, &["-n", "0", "KEYS", "edgecomet:id:*"]);
    assert!(in2.contains("edgecomet:id:db2"), "{in2:?}");
    assert!(in0.trim().is_empty(), "{in0:?}");
    // One counter for both servers: a publish through either takes the next id.
    let id = || {
        redis_cli(port, None, &["-n", "2", "GET", "edgecomet:id:db2"])
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    let before = id();
    round_trip(&b, &a, "db2", "third");
    assert_eq!(id(), before + 1);
}

#[test]
fn a_wrong_password_stops_the_start_without_printing_it() {
    let port = free_port();
    let _redis = Redis::start_with(port, &["--requirepass", "right-one"]);
    let err = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--broker",
        &format!("redis://:hunter2@127.0.0.1:{port}"),
    ]);
    assert!(err.contains("refused AUTH"), "{err}");
    assert!(!err.contains("hunter2"), "the password was printed: {err}");
    assert!(err.contains(":***@"), "{err}");
    // No password where Redis wants one: said so.
    let err = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--broker",
        &format!("redis://127.0.0.1:{port}"),
    ]);
    assert!(err.contains("wants a password"), "{err}");
    // An ACL user with a wrong password.
    let err = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--broker",
        &format!("redis://bob:hunter2@127.0.0.1:{port}"),
    ]);
    assert!(
        err.contains("refused AUTH") && err.contains("\"bob\""),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    // A database Redis does not have.
    let err = refused(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--broker",
        &format!("redis://:right-one@127.0.0.1:{port}/99"),
    ]);
    assert!(err.contains("SELECT 99"), "{err}");
}

#[test]
fn a_password_changed_on_redis_is_retried_and_publishes_get_503_meanwhile() {
    let port = free_port();
    let _redis = Redis::start_with(port, &["--requirepass", "old"]);
    let a = with_broker(&format!("redis://:old@127.0.0.1:{port}"), |_| {});
    assert!(connected(&a));
    // The password changes and the connections are cut: AUTH fails on reconnect.
    redis_cli(port, Some("old"), &["CONFIG", "SET", "requirepass", "new"]);
    redis_cli(port, Some("new"), &["CLIENT", "KILL", "TYPE", "pubsub"]);
    redis_cli(
        port,
        Some("new"),
        &["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    );
    assert!(wait_until(10, || hub(&a, "broker_connected") == 0));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        hub(&a, "broker_connected"),
        0,
        "AUTH with the old one fails"
    );
    let (st, body) = Publisher::new(a.local_addr()).publish("x", b"m");
    assert_eq!(st, 503, "{body}");
    // Back to the old password: the retries get in.
    redis_cli(port, Some("new"), &["CONFIG", "SET", "requirepass", "old"]);
    assert!(connected(&a));
    round_trip(&a, &a, "again", "after the change");
}

/// A CA and a certificate for 127.0.0.1 it signs, made by the openssl CLI in `dir`.
fn openssl_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .current_dir(dir)
            .args(args)
            .output()
            .expect("openssl CLI");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "redis.key",
        "-out",
        "redis.csr",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "redis.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "redis.pem",
    ]);
}

#[test]
fn rediss_speaks_tls_to_redis_with_the_given_ca_and_a_password() {
    let dir = std::env::temp_dir().join(format!("edgecomet-rediss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    openssl_certs(&dir);
    let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let tls_port = free_port();
    // Debian's redis-server is built with TLS: plaintext off, TLS on tls_port.
    let _redis = Redis::spawn(
        &["--port", "0", "--tls-port", &tls_port.to_string()],
        &[
            "--tls-cert-file",
            &p("redis.pem"),
            "--tls-key-file",
            &p("redis.key"),
            "--tls-ca-cert-file",
            &p("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            "tlspass",
        ],
        tls_port,
    );
    let url = format!("rediss://:tlspass@127.0.0.1:{tls_port}/1");
    let ca = dir.join("ca.pem");
    let a = with_broker(&url, |c| c.broker_ca = Some(ca.clone()));
    let b = with_broker(&url, |c| c.broker_ca = Some(ca));
    assert!(connected(&a) && connected(&b));
    round_trip(&a, &b, "tls", "over TLS");
    // Without the CA (Mozilla's roots only) the certificate is not trusted: never connected,
    // publishes refused; the server itself runs.
    let c = with_broker(&url, |_| {});
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(hub(&c, "broker_connected"), 0);
    let (st, _) = Publisher::new(c.local_addr()).publish("tls", b"x");
    assert_eq!(st, 503);
    // Plain redis:// to a TLS port does not get through either.
    let d = with_broker(&format!("redis://:tlspass@127.0.0.1:{tls_port}"), |_| {});
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(hub(&d, "broker_connected"), 0);
    let _ = std::fs::remove_dir_all(&dir);
}
