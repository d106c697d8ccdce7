//! Authorization over real sockets: publish keys (on, off, rotation by SIGHUP's reload), subscribe
//! tokens on every `/sub` transport for each token case, a live subscription ended when its
//! token expires, and private push addresses.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use common::*;
use edgecomet::Server;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "integration-test-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn token_server() -> Server {
    server(2, |c| {
        c.token_secret = vec![SECRET.into()];
        c.poll_timeout = 20;
        c.session_ttl = 30;
    })
}

/// One request on a fresh connection; the status and the whole head.
fn request(addr: SocketAddr, req: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut s, &mut buf);
    (status(head.as_bytes()), format!("{head}\r\n\r\n{body}"))
}

fn get(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n"),
    )
}

/// The status of an upgrade to `path` (101 or the refusal), read from the raw answer.
fn upgrade_status(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = raw_until_head(addr, &upgrade_request(path));
    (status(resp.as_bytes()), resp)
}

fn raw_until_head(addr: SocketAddr, req: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    while find(&out, b"\r\n\r\n").is_none() {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "closed before a head");
        out.extend_from_slice(&b[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Each token case: (what, token, expected status, counter).
fn cases() -> Vec<(&'static str, String, u16, &'static str)> {
    let t = now();
    let alg_none = format!(
        "{}.{}.",
        B64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        B64.encode(format!(r#"{{"exp":{},"channels":["news"]}}"#, t + 60))
    );
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let es256 = encode(
        &Header::new(Algorithm::ES256),
        &json!({"exp": t + 60, "channels": ["news"]}),
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let other_secret = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": t + 60, "channels": ["news"]}),
        &EncodingKey::from_secret(b"some other secret, long enough to be one"),
    )
    .unwrap();
    vec![
        (
            "valid",
            token(json!({"exp": t + 60, "channels": ["news"]})),
            0,
            "auth_tokens_accepted",
        ),
        (
            "wildcard",
            token(json!({"exp": t + 60, "channels": ["*"]})),
            0,
            "auth_tokens_accepted",
        ),
        (
            "wrong channel",
            token(json!({"exp": t + 60, "channels": ["sport/*"]})),
            403,
            "auth_token_channel",
        ),
        ("missing", String::new(), 401, "auth_token_missing"),
        (
            "expired",
            token(json!({"exp": t - 1, "channels": ["news"]})),
            401,
            "auth_token_expired",
        ),
        (
            "not yet valid",
            token(json!({"exp": t + 60, "nbf": t + 30, "channels": ["news"]})),
            401,
            "auth_token_not_yet_valid",
        ),
        (
            "bad signature",
            other_secret,
            401,
            "auth_token_bad_signature",
        ),
        ("alg none", alg_none, 401, "auth_token_malformed"),
        (
            "ES256 with only a secret",
            es256,
            401,
            "auth_token_malformed",
        ),
        ("garbage", "not.a.jwt".into(), 401, "auth_token_malformed"),
    ]
}

fn query(token: &str) -> String {
    if token.is_empty() {
        String::new()
    } else {
        format!("token={token}")
    }
}

#[test]
fn every_token_case_on_every_transport() {
    let server = token_server();
    let addr = server.local_addr();
    for (what, tok, want, counter) in cases() {
        let q = query(&tok);
        let before = total(&server, counter);
        // WebSocket (query), then SSE (query), streaming and long-poll (Authorization header).
        let (ws, head) = upgrade_status(addr, &format!("/sub/news?{q}"));
        let (sse, _) = get(addr, &format!("/sub/news?transport=sse&{q}"), "");
        let auth = if tok.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {tok}\r\n")
        };
        let stream = raw_until_head(
            addr,
            format!("GET /sub/news?transport=stream HTTP/1.1\r\nHost: t\r\n{auth}\r\n").as_bytes(),
        );
        let stream = status(stream.as_bytes());
        let mut held = None;
        let poll = if want == 0 {
            // A held poll: seen in the gauge.
            let polls = total(&server, "conns_poll");
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                format!("GET /sub/news?transport=longpoll HTTP/1.1\r\nHost: t\r\n{auth}\r\n")
                    .as_bytes(),
            )
            .unwrap();
            assert!(
                wait_until(5, || total(&server, "conns_poll") == polls + 1),
                "{what}"
            );
            held = Some(s);
            0
        } else {
            get(addr, "/sub/news?transport=longpoll", &auth).0
        };
        drop(held);
        if want == 0 {
            assert_eq!(ws, 101, "{what}: {head}");
            assert_eq!(sse, 200, "{what}");
            assert_eq!(stream, 200, "{what}");
            assert_eq!(total(&server, counter), before + 4, "{what}");
        } else {
            assert_eq!((ws, sse, stream, poll), (want, want, want, want), "{what}");
            assert!(
                head.contains("WWW-Authenticate: Bearer realm=\"edgecomet\""),
                "{what}: {head}"
            );
            assert_eq!(total(&server, counter), before + 4, "{what}: {counter}");
        }
    }
}

#[test]
fn a_token_for_another_key_type_is_refused_hs_rs_confusion() {
    // Only an EC public key: an HS256 token "signed" with that public key is refused, as is a
    // token with the right alg but another key's signature.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let dir = std::env::temp_dir().join(format!("edgecomet-auth-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ec.pem");
    std::fs::write(&path, ec.public_key_pem()).unwrap();
    let server = server(1, |c| c.token_public_key = vec![path.clone()]);
    let addr = server.local_addr();
    let t = now();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": t + 60, "channels": ["news"]}),
        &EncodingKey::from_secret(ec.public_key_pem().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        upgrade_status(addr, &format!("/sub/news?token={confused}")).0,
        401
    );
    let good = encode(
        &Header::new(Algorithm::ES256),
        &json!({"exp": t + 60, "channels": ["news"]}),
        &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        upgrade_status(addr, &format!("/sub/news?token={good}")).0,
        101
    );
    assert_eq!(total(&server, "auth_token_malformed"), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_keys_the_server_is_open() {
    let server = server(1, |_| {});
    let addr = server.local_addr();
    assert!(server.auth_summary().contains("OPEN"));
    assert_eq!(upgrade_status(addr, "/sub/news").0, 101);
    let mut p = Publisher::new(addr);
    assert_eq!(p.publish("news", b"hi").0, 200);
}

fn publish_with(addr: SocketAddr, key: Option<&str>) -> (u16, String) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    request(
        addr,
        &format!(
            "POST /pub/news HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 2\r\nConnection: close\r\n\r\nhi"
        ),
    )
}

#[test]
fn publish_keys_and_their_rotation() {
    let dir = std::env::temp_dir().join(format!("edgecomet-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys");
    std::fs::write(&file, "# publishers\nfile-key-0123456789\n").unwrap();
    let server = server(2, |c| {
        c.publish_key = vec!["flag-key-0123456789".into()];
        c.publish_key_file = Some(file.clone());
    });
    let addr = server.local_addr();
    let (s, head) = publish_with(addr, None);
    assert_eq!(s, 401);
    assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
    assert_eq!(publish_with(addr, Some("wrong-key-0123456789")).0, 401);
    assert_eq!(publish_with(addr, Some("flag-key-0123456789")).0, 200);
    assert_eq!(publish_with(addr, Some("file-key-0123456789")).0, 200);
    assert_eq!(total(&server, "auth_publish_refused"), 2);
    // Subscribing stays open (no token key).
    assert_eq!(upgrade_status(addr, "/sub/news").0, 101);
    // Rotation: the file's key is replaced; SIGHUP (here: the reload it runs) takes it in.
    std::fs::write(&file, "next-key-0123456789\n").unwrap();
    let said = server.reload();
    assert!(said.contains("keys reloaded"), "{said}");
    assert_eq!(publish_with(addr, Some("file-key-0123456789")).0, 401);
    assert_eq!(publish_with(addr, Some("next-key-0123456789")).0, 200);
    // A file that does not load keeps the old keys.
    std::fs::write(&file, "short\n").unwrap();
    let said = server.reload();
    assert!(said.contains("NOT reloaded"), "{said}");
    assert_eq!(publish_with(addr, Some("next-key-0123456789")).0, 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn client_publish_needs_the_publish_claim() {
    let server = server(1, |c| {
        c.token_secret = vec![SECRET.into()];
        c.client_publish = true;
    });
    let addr = server.local_addr();
    let t = now();
    let reader = token(json!({"exp": t + 60, "channels": ["chat"]}));
    let writer = token(json!({"exp": t + 60, "channels": ["chat"], "publish": ["chat"]}));
    // POST to /sub with a token.
    let post = |tok: &str| {
        request(
            addr,
            &format!(
                "POST /sub/chat HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\
                 Content-Length: 2\r\nConnection: close\r\n\r\nhi"
            ),
        )
        .0
    };
    assert_eq!(post(&reader), 403);
    assert_eq!(post(&writer), 204);
    // WebSocket: a subscriber whose token has no `publish` is closed 1008 when it speaks.
    let mut ws = ws(addr, &format!("/sub/chat?token={reader}"));
    ws.send(tungstenite::Message::text("hello")).unwrap();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1008);
                break;
            }
            Ok(_) => continue,
            Err(e) => panic!("no close: {e}"),
        }
    }
    let mut w = common::ws(addr, &format!("/sub/chat?token={writer}"));
    w.send(tungstenite::Message::text("from a writer")).unwrap();
    assert_eq!(recv_text(&mut w), "from a writer");
}

/// A token that expires in a few seconds ends each live subscription at its `exp`, not later.
#[test]
fn expiry_ends_live_subscriptions() {
    let server = token_server();
    let addr = server.local_addr();
    let exp = now() + 3;
    let tok = token(json!({"exp": exp, "channels": ["news"]}));
    let mut ws = ws(addr, &format!("/sub/news?token={tok}"));
    let mut sse = TcpStream::connect(addr).unwrap();
    sse.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sse.write_all(
        format!("GET /sub/news?transport=sse&token={tok} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut poll = TcpStream::connect(addr).unwrap();
    poll.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    poll.write_all(
        format!(
            "GET /sub/news?transport=longpoll HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    // Live until then: a message arrives.
    // Every one of them subscribed before the publish (the SSE request may still be on its way).
    assert!(wait_until(5, || {
        total(&server, "conns_poll") == 1
            && total(&server, "conns_sse") == 1
            && total(&server, "conns_ws_sub") == 1
    }));
    let mut p = Publisher::new(addr);
    // The poll takes this message and returns; the WebSocket and the stream get it too.
    assert_eq!(p.publish("news", b"before").0, 200);
    assert_eq!(recv_text(&mut ws), "before");
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut poll, &mut buf);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.contains("before"), "{body}");
    // Poll again with the same token: held until the token ends, then answered 401.
    poll.write_all(
        format!(
            "GET /sub/news?transport=longpoll HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {tok}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let code = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(code, 4001);
    assert!(at <= exp as f64 + 0.05, "closed at {at}, after exp {exp}");
    assert!(
        at >= exp as f64 - 1.5,
        "closed at {at}, long before exp {exp}"
    );
    let (head, _) = read_response(&mut poll, &mut buf);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.contains("token expired"), "{head}");
    let text = String::from_utf8_lossy(&read_to_close(&mut sse)).into_owned();
    assert!(text.contains("data: before"), "{text}");
    assert!(
        text.ends_with("event: expired\ndata: token expired\n\n"),
        "{text}"
    );
    assert!(total(&server, "auth_expired_closes") >= 3);
    // Reconnecting with the expired token is refused.
    assert_eq!(
        upgrade_status(addr, &format!("/sub/news?token={tok}")).0,
        401
    );
}

#[test]
fn push_addresses() {
    let server = server(2, |c| {
        c.push_rate = 2;
        c.push_burst = 3;
        c.push_max_bytes = 64;
        c.publish_key = vec!["a-publish-key-0123".into()];
    });
    let addr = server.local_addr();
    let (s, resp) = request(
        addr,
        "POST /push/new HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(s, 200, "{resp}");
    let body: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let address = body["address"].as_str().unwrap().to_string();
    assert_eq!(address.len(), 32);
    assert_eq!(body["channel"], format!("~push/{address}"));
    assert_eq!(body["send"], format!("/push/{address}"));
    // Two addresses are different.
    let (_, resp2) = request(
        addr,
        "POST /push/new HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(!resp2.contains(&address));
    let mut sub = ws(addr, body["subscribe"].as_str().unwrap());
    // Sent with POST (no publish key needed) and with a JSONP GET.
    let (s, _) = request(
        addr,
        &format!(
            "POST /push/{address} HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
        ),
    );
    assert_eq!(s, 200);
    assert_eq!(recv_text(&mut sub), "hello");
    let (s, resp) = get(
        addr,
        &format!("/push/{address}?message=hi%20there&callback=got"),
        "",
    );
    assert_eq!(s, 200);
    assert!(resp.contains("got({\"ok\":true"), "{resp}");
    assert_eq!(recv_text(&mut sub), "hi there");
    // The third send within the burst of 3 from this address passes; the fourth is 429.
    assert_eq!(get(addr, &format!("/push/{address}?message=3"), "").0, 200);
    assert_eq!(recv_text(&mut sub), "3");
    let (s, resp) = get(addr, &format!("/push/{address}?message=4"), "");
    assert_eq!(s, 429, "{resp}");
    assert!(resp.contains("Retry-After: 1"));
    assert_eq!(total(&server, "push_rate_limited"), 1);
    // Too large, a malformed address, a bad name in the private namespace.
    let big = "x".repeat(65);
    assert_eq!(
        get(addr, &format!("/push/{address}?message={big}"), "").0,
        413
    );
    assert_eq!(get(addr, "/push/0123?message=x", "").0, 404);
    assert_eq!(upgrade_status(addr, "/sub/~push/not-an-address").0, 404);
    // Publishing to the private channel through /pub still needs the publish key.
    let mut p = Publisher::new(addr);
    assert_eq!(p.publish(&format!("~push/{address}"), b"x").0, 401);
    assert_eq!(total(&server, "push_messages"), 3);
    assert_eq!(total(&server, "push_addresses"), 2);
}

#[test]
fn push_new_needs_a_token_when_tokens_are_configured() {
    let server = token_server();
    let addr = server.local_addr();
    let new = |auth: &str| {
        request(
            addr,
            &format!(
                "POST /push/new HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
    };
    assert_eq!(new("").0, 401);
    // Any valid token, whatever its channels.
    let tok = token(json!({"exp": now() + 60, "channels": []}));
    let (s, resp) = new(&format!("Authorization: Bearer {tok}\r\n"));
    assert_eq!(s, 200, "{resp}");
    let body: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let sub = body["subscribe"].as_str().unwrap();
    // Subscribing to the address needs a valid token too, but not one naming it.
    assert_eq!(upgrade_status(addr, sub).0, 401);
    let mut ws = ws(addr, &format!("{sub}?token={tok}"));
    let started = Instant::now();
    let send = body["send"].as_str().unwrap();
    assert_eq!(get(addr, &format!("{send}?message=yo"), "").0, 200);
    assert_eq!(recv_text(&mut ws), "yo");
    assert!(started.elapsed() < Duration::from_secs(5));
}
