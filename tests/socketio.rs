//! Socket.IO over real sockets, with raw Engine.IO packets: the handshake and its errors, polling
//! sessions whose requests land on any worker (moved to the owner), the upgrade, channels and
//! patterns joined at CONNECT and fed by `POST /pub`, client publishes with acks, tokens, the
//! heartbeat in milliseconds, and hostile packets. The official client is tested in
//! `tests/socketio/` (Node).

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

const SECRET: &str = "socketio-test-secret-0123456789abcdef";

/// One request on a fresh connection (so that it may reach any worker): (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut p = Publisher::new(addr);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    p.send_raw(&req);
    p.response()
}

const EIO: &str = "/socket.io/?EIO=4&transport=polling";

/// A polling session's id (after the handshake's open packet).
fn open(addr: SocketAddr, query: &str) -> String {
    let (status, body) = http(addr, "GET", &format!("{EIO}{query}"), b"");
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with('0'), "{body}");
    let v: Value = serde_json::from_str(&body[1..]).unwrap();
    v["sid"].as_str().unwrap().to_string()
}

fn post(addr: SocketAddr, sid: &str, body: &str) -> (u16, String) {
    http(addr, "POST", &format!("{EIO}&sid={sid}"), body.as_bytes())
}

fn poll(addr: SocketAddr, sid: &str) -> (u16, String) {
    http(addr, "GET", &format!("{EIO}&sid={sid}"), b"")
}

/// A GET of session `sid` on a connection of its own, once the server holds it (answer it with
/// `response()`).
fn held_poll(s: &edgecomet::Server, sid: &str) -> Publisher {
    let mut held = Publisher::new(s.local_addr());
    held.send_raw(format!("GET {EIO}&sid={sid} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    assert!(wait_until(5, || total(s, "conns_sio_poll") == 1));
    held
}

/// A WebSocket session (no upgrade), its open packet read.
fn ws_session(addr: SocketAddr) -> Ws {
    let mut w = ws(addr, "/socket.io/?EIO=4&transport=websocket");
    let open = recv_text(&mut w);
    assert!(open.starts_with("0{\"sid\":"), "{open}");
    w
}

fn send(w: &mut Ws, text: &str) {
    w.send(tungstenite::Message::Text(text.into())).unwrap();
}

/// The close frame's code and reason, skipping what comes before it.
fn close_of(w: &mut Ws) -> Option<(u16, String)> {
    loop {
        match w.read() {
            Ok(tungstenite::Message::Close(f)) => {
                return f.map(|f| (u16::from(f.code), f.reason.to_string()));
            }
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The next text packet that is not a ping (pings are answered).
fn next(w: &mut Ws) -> String {
    loop {
        let t = recv_text(w);
        if t == "2" {
            send(w, "3");
            continue;
        }
        return t;
    }
}

#[test]
fn handshake_and_its_errors() {
    let s = server(2, |_| {});
    let addr = s.local_addr();
    let (status, body) = http(addr, "GET", EIO, b"");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body[1..]).unwrap();
    assert_eq!(v["upgrades"], json!(["websocket"]));
    assert_eq!(v["pingInterval"], 25_000);
    assert_eq!(v["pingTimeout"], 20_000);
    assert_eq!(v["maxPayload"], 1_000_000);
    assert_eq!(v["sid"].as_str().unwrap().len(), 23);
    let cases = [
        ("GET", "/socket.io/?transport=polling", 400, 5),
        ("GET", "/socket.io/?EIO=3&transport=polling", 400, 5),
        ("GET", "/socket.io/?EIO=4", 400, 0),
        ("GET", "/socket.io/?EIO=4&transport=abc", 400, 0),
        ("POST", EIO, 400, 2),
        ("PUT", EIO, 400, 2),
        ("GET", "/socket.io/?EIO=4&transport=websocket", 400, 3),
        ("GET", &format!("{EIO}&sid=AAAAAAAAAAAAAAAAAAAAAAA"), 400, 1),
        ("GET", &format!("{EIO}&sid=nonsense"), 400, 1),
    ];
    for (method, path, want, code) in cases {
        let (status, body) = http(addr, method, path, b"");
        assert_eq!(status, want, "{method} {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], code, "{method} {path}: {body}");
    }
    // The path without its last slash is the same endpoint.
    assert_eq!(
        http(addr, "GET", "/socket.io?EIO=4&transport=polling", b"").0,
        200
    );
}

/// With four workers, most of a polling session's requests reach a worker that does not own
/// it: they are moved to the owner, and the session works as on one worker.
#[test]
fn polling_sessions_work_from_any_worker() {
    let s = server(4, |c| c.socketio_conformance = true);
    let addr = s.local_addr();
    for _ in 0..8 {
        let sid = open(addr, "");
        assert_eq!(post(addr, &sid, "40"), (200, "ok".to_string()));
        let (status, body) = poll(addr, &sid);
        assert_eq!(status, 200);
        assert!(body.starts_with("40{\"sid\":"), "{body}");
        assert!(body.ends_with("\x1e42[\"auth\",{}]"), "{body}");
        assert_eq!(post(addr, &sid, "42[\"message\",1,\"2\"]").0, 200);
        assert_eq!(
            poll(addr, &sid),
            (200, "42[\"message-back\",1,\"2\"]".to_string())
        );
    }
    assert!(total(&s, "sio_handoffs") > 0, "no request was moved");
    assert_eq!(total(&s, "sio_unknown_sid"), 0);
}

#[test]
fn channels_reach_websocket_and_polling_sessions() {
    // Without state recovery, events carry the payload alone (no offset).
    let s = server(2, |c| c.socketio_recovery = Some(0));
    let addr = s.local_addr();
    let mut a = ws_session(addr);
    send(&mut a, "40{\"channels\":[\"news\"]}");
    assert!(next(&mut a).starts_with("40{\"sid\":"));
    let mut b = ws_session(addr);
    // A channel covered by a pattern of the same list is joined once.
    send(
        &mut b,
        "40{\"channels\":[\"sport/*\",\"sport/x\",\"news\"]}",
    );
    assert!(next(&mut b).starts_with("40{\"sid\":"));
    let sid = open(addr, "&channels=news,sport/**");
    assert_eq!(post(addr, &sid, "40").0, 200);
    assert!(poll(addr, &sid).1.starts_with("40{\"sid\":"));
    assert!(wait_until(5, || total(&s, "channels") >= 3));
    let mut p = Publisher::new(addr);
    assert_eq!(p.publish("news", b"{\"n\":1}").0, 200);
    assert_eq!(p.publish("sport/x", b"not json").0, 200);
    assert_eq!(p.publish("sport/x/y", b"3").0, 200);
    assert_eq!(next(&mut a), "42[\"message\",{\"n\":1}]");
    assert_eq!(next(&mut b), "42[\"message\",{\"n\":1}]");
    assert_eq!(next(&mut b), "42[\"message\",\"not json\"]");
    let mut got = String::new();
    while got.matches("42[").count() < 3 {
        let (status, body) = poll(addr, &sid);
        assert_eq!(status, 200);
        if !got.is_empty() {
            got.push('\x1e');
        }
        got.push_str(&body);
    }
    assert_eq!(
        got,
        "42[\"message\",{\"n\":1}]\x1e42[\"message\",\"not json\"]\x1e42[\"message\",3]"
    );
    // `a` got nothing of sport/*: the next thing it sees is what comes on news.
    assert_eq!(p.publish("news", b"2").0, 200);
    assert_eq!(next(&mut a), "42[\"message\",2]");
}

#[test]
fn upgrade_from_polling_to_websocket() {
    let s = server(2, |c| {
        c.socketio_conformance = true;
        c.socketio_recovery = Some(0);
    });
    let addr = s.local_addr();
    let sid = open(addr, "&channels=up");
    let mut w = ws(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
    );
    send(&mut w, "2probe");
    assert_eq!(recv_text(&mut w), "3probe");
    // Between the probe and `5`, a poll is answered at once with a noop.
    assert_eq!(poll(addr, &sid), (200, "6".to_string()));
    send(&mut w, "5");
    send(&mut w, "40");
    assert!(next(&mut w).starts_with("40{\"sid\":"));
    assert_eq!(next(&mut w), "42[\"auth\",{}]");
    // Polling is over for this session, and it cannot be upgraded twice.
    assert_eq!(poll(addr, &sid).0, 400);
    let again = std::net::TcpStream::connect(addr).unwrap();
    assert!(
        tungstenite::client(
            format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={sid}"),
            again
        )
        .is_err()
    );
    let mut p = Publisher::new(addr);
    assert_eq!(p.publish("up", b"\"hi\"").0, 200);
    assert_eq!(next(&mut w), "42[\"message\",\"hi\"]");
    assert_eq!(total(&s, "sio_upgrades"), 1);
}

#[test]
fn two_polls_at_once_end_the_session() {
    let s = server(1, |_| {});
    let addr = s.local_addr();
    let sid = open(addr, "");
    let mut held = held_poll(&s, &sid);
    assert_eq!(poll(addr, &sid).0, 400);
    assert_eq!(held.response(), (200, "1".to_string()));
    assert_eq!(poll(addr, &sid).0, 400);
}

#[test]
fn client_publish_is_acknowledged_and_delivered() {
    let s = server(2, |c| {
        c.client_publish = true;
        c.socketio_recovery = Some(0);
    });
    let addr = s.local_addr();
    let mut sub = ws_session(addr);
    send(&mut sub, "40{\"channels\":[\"chat\"]}");
    next(&mut sub);
    let mut pubr = ws_session(addr);
    send(&mut pubr, "40");
    next(&mut pubr);
    assert!(wait_until(5, || total(&s, "channels") == 1));
    send(&mut pubr, "4217[\"publish\",\"chat\",{\"text\":\"hi\"}]");
    assert_eq!(next(&mut pubr), "4317[{\"ok\":true}]");
    assert_eq!(next(&mut sub), "42[\"message\",{\"text\":\"hi\"}]");
    send(&mut pubr, "4218[\"publish\",\"no good\",1]");
    assert_eq!(
        next(&mut pubr),
        "4318[{\"error\":\"invalid channel name\"}]"
    );
}

#[test]
fn tokens_decide_what_a_connect_joins() {
    let s = server(2, |c| c.token_secret = vec![SECRET.into()]);
    let addr = s.local_addr();
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": exp, "channels": ["news", "sport/*"]}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let connect = |auth: Value| {
        let mut w = ws_session(addr);
        send(&mut w, &format!("40{auth}"));
        next(&mut w)
    };
    assert!(connect(json!({"token": token, "channels": ["news", "sport/a"]})).starts_with("40{"));
    assert!(connect(json!({"token": token, "channels": ["sport/*"]})).starts_with("40{"));
    let refused = [
        (json!({"channels": ["news"]}), "a token is required"),
        (
            json!({"token": "x.y.z", "channels": ["news"]}),
            "malformed token",
        ),
        (
            json!({"token": token, "channels": ["other"]}),
            "does not grant",
        ),
        (
            json!({"token": token, "channels": ["sport/**"]}),
            "does not grant",
        ),
    ];
    for (auth, why) in refused {
        let r = connect(auth.clone());
        assert!(
            r.starts_with("44{\"message\":") && r.contains(why),
            "{auth}: {r}"
        );
    }
    assert!(total(&s, "sio_connect_errors") >= 4);
    let before = total(&s, "sio_connect_errors");
    let mut w = ws_session(addr);
    send(&mut w, "40/nope,");
    assert_eq!(next(&mut w), "44/nope,{\"message\":\"Invalid namespace\"}");
    assert!(wait_until(5, || total(&s, "sio_connect_errors") == before + 1));
}

#[test]
fn heartbeat_in_milliseconds() {
    let s = server(1, |c| {
        c.socketio_ping_interval = Some(100);
        c.socketio_ping_timeout = Some(100);
    });
    let addr = s.local_addr();
    let mut w = ws_session(addr);
    send(&mut w, "40");
    next(&mut w);
    for _ in 0..3 {
        assert_eq!(recv_text(&mut w), "2");
        send(&mut w, "3");
    }
    // Unanswered: the session ends.
    assert_eq!(recv_text(&mut w), "2");
    let closed = loop {
        match w.read() {
            Ok(tungstenite::Message::Close(f)) => break f,
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        closed.map(|f| f.reason.to_string()).as_deref(),
        Some("ping timeout")
    );
    assert!(wait_until(5, || total(&s, "sio_ping_timeouts") == 1));
    // A polling session that stops polling ends the same way.
    let sid = open(addr, "");
    assert!(wait_until(5, || total(&s, "sio_ping_timeouts") == 2));
    assert_eq!(poll(addr, &sid).0, 400);
}

#[test]
fn hostile_packets_end_the_session_and_nothing_else() {
    let s = server(2, |c| c.socketio_conformance = true);
    let addr = s.local_addr();
    let bad = [
        "abc",
        "4abc",
        "42{}",
        "42abc[\"message-with-ack\",1]",
        "429007199254740993[\"x\"]",
        "4\u{1}",
        "41/nowhere,",
        "4599999-[\"x\"]",
        "40/custom,[1]",
        "42[\"message\",{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}]",
    ];
    for b in bad {
        let sid = open(addr, "");
        assert_eq!(post(addr, &sid, "40").0, 200);
        let (status, _) = post(addr, &sid, b);
        assert_eq!(status, 400, "{b:?}");
        assert_eq!(poll(addr, &sid).0, 400, "{b:?}: the session is gone");
    }
    // An attachment count that lies: a text packet where a binary one was due.
    let mut w = ws_session(addr);
    send(&mut w, "40");
    next(&mut w);
    next(&mut w);
    send(
        &mut w,
        "451-[\"message\",{\"_placeholder\":true,\"num\":0}]",
    );
    send(&mut w, "42[\"message\"]");
    assert_eq!(close_of(&mut w).map(|c| c.0), Some(1008));
    // Over the payload limit.
    let sid = open(addr, "");
    let big = format!("42[\"message\",\"{}\"]", "x".repeat(1_000_001));
    assert_eq!(post(addr, &sid, &big).0, 413);
    assert!(total(&s, "sio_protocol_errors") >= bad.len() as u64 + 2);
    // The server still serves.
    assert_eq!(http(addr, "GET", EIO, b"").0, 200);
}

#[test]
fn sessions_without_connect_are_closed_at_the_connect_timeout() {
    let s = server(1, |c| {
        c.socketio_connect_timeout = Some(200);
    });
    let addr = s.local_addr();
    let sid = open(addr, "");
    assert!(wait_until(5, || total(&s, "sio_connect_timeouts") == 1));
    assert_eq!(poll(addr, &sid).0, 400);
    assert_eq!(total(&s, "sio_sessions"), 0);
}

/// The CONNECT reply's fields.
fn connected(reply: &str) -> Value {
    assert!(reply.starts_with("40{"), "{reply}");
    serde_json::from_str(&reply[2..]).unwrap()
}

/// The last argument of an event: its offset.
fn offset(event: &str) -> String {
    let v: Value = serde_json::from_str(&event[2..]).unwrap();
    v.as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_lost_connection_is_recovered_within_the_window() {
    let s = server(2, |_| {});
    let addr = s.local_addr();
    let mut p = Publisher::new(addr);
    let mut w = ws_session(addr);
    send(&mut w, "40{\"channels\":[\"rec\"]}");
    let first = connected(&next(&mut w));
    let pid = first["pid"].as_str().unwrap().to_string();
    assert!(wait_until(5, || total(&s, "channels") == 1));
    assert_eq!(p.publish("rec", b"1").0, 200);
    let got = next(&mut w);
    assert!(got.starts_with("42[\"message\",1,\""), "{got}");
    let last = offset(&got);
    // The connection breaks (no close frame, no close packet).
    drop(w);
    assert!(wait_until(5, || total(&s, "sio_sessions") == 0));
    for i in 2..=4 {
        assert_eq!(p.publish("rec", i.to_string().as_bytes()).0, 200);
    }
    let mut w = ws_session(addr);
    send(
        &mut w,
        &format!(
            "40{}",
            json!({"channels": ["rec"], "pid": pid, "offset": last})
        ),
    );
    let again = connected(&next(&mut w));
    assert_eq!(again["pid"], first["pid"], "recovered: the same private id");
    assert_eq!(again["sid"], first["sid"], "and the same socket id");
    for i in 2..=4 {
        let e = next(&mut w);
        assert!(e.starts_with(&format!("42[\"message\",{i},\"")), "{e}");
    }
    assert_eq!(p.publish("rec", b"5").0, 200);
    assert!(next(&mut w).starts_with("42[\"message\",5,"));
    assert_eq!(total(&s, "sio_recovered"), 1);

    // A client that had received nothing resumes from where it joined.
    let mut w2 = ws_session(addr);
    send(&mut w2, "40{\"channels\":[\"rec2\"]}");
    let c2 = connected(&next(&mut w2));
    assert!(wait_until(5, || total(&s, "channels") == 2));
    drop(w2);
    assert!(wait_until(5, || total(&s, "sio_sessions") == 1));
    assert_eq!(p.publish("rec2", b"\"x\"").0, 200);
    let mut w2 = ws_session(addr);
    send(
        &mut w2,
        &format!("40{}", json!({"channels": ["rec2"], "pid": c2["pid"]})),
    );
    assert_eq!(connected(&next(&mut w2))["pid"], c2["pid"]);
    assert!(next(&mut w2).starts_with("42[\"message\",\"x\","));

    // A private id once used, or unknown, or for other channels: not recovered, a new one.
    for (pid, channels) in [(pid.as_str(), json!(["rec"])), ("nope", json!(["rec"]))] {
        let mut w = ws_session(addr);
        send(
            &mut w,
            &format!(
                "40{}",
                json!({"channels": channels, "pid": pid, "offset": last})
            ),
        );
        let c = connected(&next(&mut w));
        assert_ne!(c["pid"].as_str(), Some(pid));
    }
    assert_eq!(total(&s, "sio_not_recovered"), 2);
}

#[test]
fn recovery_ends_with_its_window_and_needs_one_channel() {
    let s = server(1, |c| c.socketio_recovery = Some(300));
    let addr = s.local_addr();
    let connect = |auth: Value| {
        let mut w = ws_session(addr);
        send(&mut w, &format!("40{auth}"));
        let c = connected(&next(&mut w));
        (w, c)
    };
    let (w, late) = connect(json!({"channels": ["a"]}));
    let (w2, multi) = connect(json!({"channels": ["a", "b"]}));
    drop(w);
    drop(w2);
    assert!(wait_until(5, || total(&s, "sio_sessions") == 0));
    let (_w, c) = connect(json!({"channels": ["a", "b"], "pid": multi["pid"]}));
    assert_ne!(c["pid"], multi["pid"], "several channels: not recovered");
    std::thread::sleep(std::time::Duration::from_millis(400));
    let (_w, c) = connect(json!({"channels": ["a"], "pid": late["pid"]}));
    assert_ne!(c["pid"], late["pid"], "after the window: not recovered");
    assert_eq!(total(&s, "sio_not_recovered"), 2);
}

#[test]
fn sockets_of_other_namespaces_join_channels_too() {
    let s = server(2, |c| {
        c.socketio_namespaces = vec!["/chat".into()];
        c.socketio_recovery = Some(0);
    });
    let addr = s.local_addr();
    let mut w = ws_session(addr);
    send(&mut w, "40{\"channels\":[\"news\"]}");
    next(&mut w);
    send(&mut w, "40/chat,{\"channels\":[\"news\",\"room/*\"]}");
    assert!(next(&mut w).starts_with("40/chat,{\"sid\":"));
    let sid = open(addr, "");
    assert_eq!(
        post(addr, &sid, "40/chat,{\"channels\":[\"room/1\"]}").0,
        200
    );
    assert!(poll(addr, &sid).1.starts_with("40/chat,"));
    assert!(wait_until(5, || total(&s, "channels") >= 3));
    let mut p = Publisher::new(addr);
    assert_eq!(p.publish("news", b"1").0, 200);
    // Once per namespace that joined it, each in its namespace (in either order).
    let mut got = [next(&mut w), next(&mut w)];
    got.sort();
    assert_eq!(got, ["42/chat,[\"message\",1]", "42[\"message\",1]"]);
    assert_eq!(p.publish("room/1", b"2").0, 200);
    assert_eq!(next(&mut w), "42/chat,[\"message\",2]");
    assert_eq!(
        poll(addr, &sid),
        (200, "42/chat,[\"message\",2]".to_string())
    );
    // Leaving /chat leaves its channels; `/` keeps its own.
    send(&mut w, "41/chat,");
    assert!(wait_until(5, || total(&s, "channels") == 2));
    assert_eq!(p.publish("room/1", b"3").0, 200);
    assert_eq!(p.publish("news", b"4").0, 200);
    assert_eq!(next(&mut w), "42[\"message\",4]");
}

#[test]
fn a_poll_whose_connection_goes_ends_its_session() {
    let s = server(1, |_| {});
    let addr = s.local_addr();
    let sid = open(addr, "");
    let held = held_poll(&s, &sid);
    drop(held);
    assert!(wait_until(5, || total(&s, "sio_sessions") == 0));
    assert_eq!(poll(addr, &sid).0, 400);
}

#[test]
fn shutdown_ends_every_session() {
    let s = server(2, |_| {});
    let addr = s.local_addr();
    let mut w = ws_session(addr);
    send(&mut w, "40");
    next(&mut w);
    let sid = open(addr, "");
    let mut held = held_poll(&s, &sid);
    let down = std::thread::spawn(move || s.shutdown(std::time::Duration::from_secs(5)));
    // The WebSocket gets 1001, the held poll the close packet.
    assert_eq!(close_of(&mut w).map(|c| c.0), Some(1001));
    assert_eq!(held.response(), (200, "1".to_string()));
    drop((w, held));
    assert!(down.join().unwrap(), "the drain finished in time");
}

/// A session in one channel through two namespaces holds two entries of the channel's list:
/// ending the session removes both (the second may have moved when the first went), and a
/// session that takes its slot later gets nothing of that channel.
#[test]
fn a_session_in_a_channel_twice_leaves_it_cleanly() {
    let s = server(1, |c| {
        c.socketio_namespaces = vec!["/chat".into()];
        c.socketio_recovery = Some(0);
    });
    let addr = s.local_addr();
    let mut native = ws(addr, "/sub/news");
    let mut w = ws_session(addr);
    send(&mut w, "40{\"channels\":[\"news\"]}");
    next(&mut w);
    send(&mut w, "40/chat,{\"channels\":[\"news\"]}");
    next(&mut w);
    drop(w);
    assert!(wait_until(5, || total(&s, "sio_sessions") == 0));
    // A new session (in the freed slot) that joins nothing.
    let mut later = ws_session(addr);
    send(&mut later, "40/chat,");
    next(&mut later);
    let mut p = Publisher::new(addr);
    assert_eq!(p.publish("news", b"1").0, 200);
    assert_eq!(recv_text(&mut native), "1");
    send(&mut later, "2probe");
    // Its next packet is the answer to that ping, not a message of `news`.
    assert_eq!(next(&mut later), "3probe");
}

#[test]
fn sessions_are_bounded() {
    let s = server(2, |c| c.socketio_max_sessions = 3);
    let addr = s.local_addr();
    let sids: Vec<String> = (0..3).map(|_| open(addr, "")).collect();
    let (status, body) = http(addr, "GET", EIO, b"");
    assert_eq!(status, 503, "{body}");
    assert_eq!(total(&s, "sio_sessions_refused"), 1);
    // One ends (the client closes it): room for another.
    assert_eq!(post(addr, &sids[0], "1").0, 200);
    assert!(wait_until(5, || total(&s, "sio_sessions") == 2));
    open(addr, "");
}

/// A polling session recovered in the same loop turn as a publish on its channel: the message
/// comes once (from the history, not again from the fan-out).
#[test]
fn a_polling_recovery_in_the_turn_of_a_publish_gets_it_once() {
    let s = server(1, |_| {});
    let addr = s.local_addr();
    let _keep = ws(addr, "/sub/dup");
    let sid = open(addr, "");
    assert_eq!(post(addr, &sid, "40{\"channels\":[\"dup\"]}").0, 200);
    let (_, reply) = poll(addr, &sid);
    let pid = connected(&reply)["pid"].as_str().unwrap().to_string();
    // The client goes: its held poll's connection closes.
    let held = held_poll(&s, &sid);
    drop(held);
    assert!(wait_until(5, || total(&s, "sio_sessions") == 0));
    // It comes back: a publish and its CONNECT pipelined on one connection, so both are
    // handled in one turn.
    let again = open(addr, "");
    let connect = format!("40{}", json!({"channels": ["dup"], "pid": pid}));
    let mut c = Publisher::new(addr);
    let mut req = b"POST /pub/dup HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx".to_vec();
    req.extend_from_slice(
        format!(
            "POST {EIO}&sid={again} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{connect}",
            connect.len()
        )
        .as_bytes(),
    );
    c.send_raw(&req);
    assert_eq!(c.response().0, 200);
    assert_eq!(c.response(), (200, "ok".to_string()));
    let (status, body) = poll(addr, &again);
    assert_eq!(status, 200);
    let packets: Vec<&str> = body.split('\x1e').collect();
    assert_eq!(connected(packets[0])["pid"].as_str(), Some(pid.as_str()));
    let events: Vec<&&str> = packets.iter().filter(|p| p.starts_with("42")).collect();
    assert_eq!(events.len(), 1, "{body:?}");
    assert!(events[0].starts_with("42[\"message\",\"x\","), "{body:?}");
}

/// A later CONNECT's token does not extend the session past its first token's end.
#[test]
fn a_second_token_extends_nothing() {
    let s = server(1, |c| {
        c.token_secret = vec![SECRET.into()];
        c.socketio_namespaces = vec!["/chat".into()];
    });
    let addr = s.local_addr();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |exp: u64| {
        encode(
            &Header::new(Algorithm::HS256),
            &json!({"exp": exp, "channels": ["news"]}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let mut w = ws_session(addr);
    send(
        &mut w,
        &format!(
            "40{}",
            json!({"token": token(now + 3), "channels": ["news"]})
        ),
    );
    assert!(next(&mut w).starts_with("40{"));
    send(
        &mut w,
        &format!("40/chat,{}", json!({"token": token(now + 600)})),
    );
    assert!(next(&mut w).starts_with("40/chat,{"));
    // The server ends the session at the first token's end: `41`, then 4001.
    assert_eq!(next(&mut w), "41");
    assert_eq!(close_of(&mut w).map(|c| c.0), Some(4001));
    assert_eq!(total(&s, "auth_expired_closes"), 1);
}

#[test]
fn limits_named_by_their_flags() {
    let s = server(1, |c| {
        c.socketio_max_channels = 2;
        c.socketio_upgrade_timeout = 1;
        c.socketio_recovery = Some(0);
    });
    let addr = s.local_addr();
    let mut w = ws_session(addr);
    send(&mut w, "40{\"channels\":[\"a\",\"b\",\"c\"]}");
    let r = next(&mut w);
    assert!(
        r.starts_with("44{") && r.contains("--socketio-max-channels"),
        "{r}"
    );
    // An upgrade that never probes is closed after --socketio-upgrade-timeout; polling goes on.
    let sid = open(addr, "");
    let mut up = ws(
        addr,
        &format!("/socket.io/?EIO=4&transport=websocket&sid={sid}"),
    );
    assert_eq!(
        close_of(&mut up),
        Some((1008, "upgrade timeout".to_string()))
    );
    assert_eq!(post(addr, &sid, "40").0, 200);
    assert!(poll(addr, &sid).1.starts_with("40{"));
}
