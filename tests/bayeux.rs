//! CometD/Bayeux on `/cometd` over real sockets, raw JSON: the meta flow over long-polling,
//! callback-polling and WebSocket, held connects woken across workers, wildcards, the
//! native/Bayeux channel mapping, services, errors, the ack and timesync extensions, who may act
//! for a clientId, and the client store's limits and expiry.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::bayeux::{Conn, deliveries, hub};
use common::*;
use edgecomet::Server;
use serde_json::{Value, json};

fn bayeux_server(tweak: impl FnOnce(&mut edgecomet::Config)) -> Server {
    server(2, |c| {
        c.bayeux_timeout = 2;
        tweak(c);
    })
}

#[test]
fn handshake_subscribe_and_held_connect_woken_by_a_native_publish() {
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut c = Conn::new(a);
    let id = c.handshake();
    assert_eq!(id.len(), 32, "128 random bits, hex");
    let s = c.subscribe(&id, json!("/news/eu"));
    assert_eq!(s["successful"], true, "{s}");
    assert_eq!(s["subscription"], "/news/eu");
    c.connect(&id);
    assert!(wait_until(5, || total(&srv, "conns_bayeux_poll") == 1));
    // The native API's channel news/eu is the Bayeux channel /news/eu; JSON payloads are the
    // data as is, text becomes a JSON string.
    let mut p = Publisher::new(a);
    assert_eq!(p.publish("news/eu", br#"{"k":[1,2]}"#).0, 200);
    let (_, v) = c.recv();
    let r = v.as_array().unwrap();
    assert_eq!(r.last().unwrap()["channel"], "/meta/connect");
    assert_eq!(r.last().unwrap()["successful"], true);
    let d = deliveries(r);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0]["channel"], "/news/eu");
    assert_eq!(d[0]["data"], json!({"k":[1,2]}));
    p.publish("news/eu", b"plain text");
    p.publish("news/eu", b"second");
    // Queued between connects: the next connect returns both at once, in order.
    let r = c.call(json!([{"channel":"/meta/connect","clientId":id,
        "connectionType":"long-polling","id":"c2"}]));
    let d = deliveries(&r);
    assert_eq!(
        d.iter().map(|m| m["data"].clone()).collect::<Vec<_>>(),
        [json!("plain text"), json!("second")]
    );
    assert_eq!(r.last().unwrap()["id"], "c2");
}

#[test]
fn bayeux_publish_reaches_bayeux_wildcards_and_native_subscribers() {
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut one = Conn::new(a);
    let mut deep = Conn::new(a);
    let mut publisher = Conn::new(a);
    let id1 = one.handshake();
    let id2 = deep.handshake();
    let idp = publisher.handshake();
    assert_eq!(one.subscribe(&id1, json!("/a/*"))["successful"], true);
    assert_eq!(
        deep.subscribe(&id2, json!(["/a/**"]))["subscription"],
        json!(["/a/**"])
    );
    let mut native = ws(a, "/sub/a/b");
    let r = publisher.call(json!([
        {"channel":"/a/b","clientId":idp,"data":{"n":1},"id":"p1"},
        {"channel":"/a/b/c","clientId":idp,"data":{"n":2},"id":"p2"}
    ]));
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|m| m["successful"] == true));
    assert_eq!(
        (r[0]["id"].clone(), r[1]["id"].clone()),
        (json!("p1"), json!("p2"))
    );
    assert_eq!(recv_text(&mut native), r#"{"n":1}"#);
    let got = |c: &mut Conn, id: &str| {
        let r = c.call(json!([{"channel":"/meta/connect","clientId":id,
            "connectionType":"long-polling","id":"x"}]));
        deliveries(&r)
            .iter()
            .map(|m| m["channel"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(got(&mut one, &id1), ["/a/b"], "/a/* is one level");
    assert_eq!(
        got(&mut deep, &id2),
        ["/a/b", "/a/b/c"],
        "/a/** is any depth"
    );
}

#[test]
fn a_second_connect_releases_the_first_and_unknown_clients_get_402() {
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut c1 = Conn::new(a);
    let id = c1.handshake();
    c1.connect(&id);
    assert!(wait_until(5, || total(&srv, "conns_bayeux_poll") == 1));
    let t = Instant::now();
    let mut c2 = Conn::new(a);
    c2.connect(&id);
    let (_, first) = c1.recv();
    assert!(t.elapsed() < Duration::from_secs(1), "released at once");
    assert_eq!(first[0]["channel"], "/meta/connect");
    assert_eq!(first[0]["successful"], true);
    // The second is held until the timeout.
    let (_, second) = c2.recv();
    assert_eq!(second[0]["successful"], true);
    assert!(t.elapsed() >= Duration::from_secs(1));
    // Unknown client: 402 with advice to handshake, for connect, subscribe and publish.
    for m in [
        json!({"channel":"/meta/connect","clientId":"nope","connectionType":"long-polling","id":1}),
        json!({"channel":"/meta/subscribe","clientId":"nope","subscription":"/x","id":2}),
        json!({"channel":"/x","clientId":"nope","data":1,"id":3}),
    ] {
        let r = c1.call(json!([m]));
        assert_eq!(r[0]["successful"], false);
        assert_eq!(r[0]["error"], "402::Unknown client");
        assert_eq!(r[0]["advice"]["reconnect"], "handshake");
        assert_eq!(r[0]["id"], m["id"], "the reply carries the request's id");
    }
}

#[test]
fn services_meta_rules_and_bad_requests() {
    let srv = bayeux_server(|c| c.bayeux_max_batch = 10);
    let a = srv.local_addr();
    let mut c = Conn::new(a);
    let id = c.handshake();
    let mut watcher = Conn::new(a);
    let wid = watcher.handshake();
    assert_eq!(
        watcher.subscribe(&wid, json!("/service/echo"))["successful"],
        true
    );
    let r = c.call(json!([{"channel":"/service/echo","clientId":id,"data":{"q":"?"},"id":"e"}]));
    assert_eq!(r.len(), 2, "the answer and the plain publish reply: {r:?}");
    assert_eq!(r[0]["data"], json!({"q":"?"}));
    assert_eq!(r[0]["id"], "e");
    assert_eq!(r[1]["id"], "e");
    assert!(r[1].get("data").is_none());
    // Not broadcast: the watcher's next connect has nothing.
    let r = watcher.call(json!([{"channel":"/meta/connect","clientId":wid,
        "connectionType":"long-polling","advice":{"timeout":0},"id":"w"}]));
    assert!(deliveries(&r).is_empty(), "{r:?}");
    for (sub, code) in [
        ("/meta/**", "403"),
        ("/meta/connect", "403"),
        ("/**", "403"),
        ("/*", "403"),
        ("no-slash", "400"),
    ] {
        let s = c.subscribe(&id, json!(sub));
        assert_eq!(s["successful"], false, "{sub}");
        assert!(s["error"].as_str().unwrap().starts_with(code), "{sub}: {s}");
    }
    let r = c.call(json!([{"channel":"/meta/bogus","clientId":id,"id":"b"}]));
    assert_eq!(r[0]["successful"], false);
    // Not JSON, not messages, too many: 400 with an unsuccessful reply, connection kept.
    for body in [
        "nope",
        "[1,2]",
        &json!(vec![json!({"channel":"/x"}); 11]).to_string(),
    ] {
        let req = format!(
            "POST /cometd HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.s.write_all(req.as_bytes()).unwrap();
        let (st, v) = c.recv();
        assert_eq!(st, 400);
        assert_eq!(v[0]["successful"], false);
    }
    assert_eq!(total(&srv, "bayeux_bad_requests"), 3);
    // A publish must carry data (Bayeux 1.0 §5.1): none is refused and not delivered; JSON
    // null is data.
    let mut sub = Conn::new(a);
    let sid = sub.handshake();
    assert_eq!(sub.subscribe(&sid, json!("/nodata"))["successful"], true);
    let r = c.call(json!([{"channel":"/nodata","clientId":id,"id":"p1"}]));
    assert_eq!(r[0]["successful"], false, "{r:?}");
    assert_eq!(r[0]["id"], "p1");
    assert!(r[0]["error"].as_str().unwrap().starts_with("400:"), "{r:?}");
    let r = c.call(json!([{"channel":"/nodata","clientId":id,"data":null,"id":"p2"}]));
    assert_eq!(r[0]["successful"], true, "{r:?}");
    let r = sub.call(json!([{"channel":"/meta/connect","clientId":sid,
        "connectionType":"long-polling","advice":{"timeout":0},"id":"c"}]));
    assert_eq!(data_of(&deliveries(&r)), vec![Value::Null], "{r:?}");
    // A large batch within the limit is processed in order.
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"channel":"/service/echo","clientId":id,"data":i,"id":i}))
        .collect();
    let r = c.call(Value::Array(batch));
    assert_eq!(
        r.iter()
            .filter_map(|m| m.get("data").and_then(Value::as_i64))
            .collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
}

#[test]
fn disconnect_and_expiry_free_the_client() {
    let srv = bayeux_server(|c| {
        c.bayeux_max_interval = 2;
        c.bayeux_max_queue = 3;
    });
    let a = srv.local_addr();
    let mut c = Conn::new(a);
    let id = c.handshake();
    c.subscribe(&id, json!("/q"));
    let mut p = Publisher::new(a);
    for i in 0..5 {
        p.publish("q", format!("{i}").as_bytes());
    }
    assert_eq!(hub(&srv, "bayeux_queued"), 3);
    assert_eq!(hub(&srv, "bayeux_dropped"), 2);
    // The drops are said in the next connect reply.
    let r = c.call(json!([{"channel":"/meta/connect","clientId":id,
        "connectionType":"long-polling","id":"c"}]));
    assert_eq!(deliveries(&r).len(), 3);
    assert_eq!(r.last().unwrap()["ext"]["dropped"], 2);
    // Expiry: no connect for longer than maxInterval frees the client and its subscriptions.
    assert_eq!(hub(&srv, "bayeux_clients"), 1);
    assert!(wait_until(6, || hub(&srv, "bayeux_clients") == 0));
    assert_eq!(hub(&srv, "bayeux_subscriptions"), 0);
    assert_eq!(hub(&srv, "bayeux_expired"), 1);
    // Disconnect frees at once.
    let id2 = c.handshake();
    c.subscribe(&id2, json!("/q"));
    let r = c.call(json!([{"channel":"/meta/disconnect","clientId":id2,"id":"d"}]));
    assert_eq!(r[0]["successful"], true);
    assert_eq!(hub(&srv, "bayeux_clients"), 0);
    assert_eq!(hub(&srv, "bayeux_subscriptions"), 0);
}

#[test]
fn chunked_requests_to_suffixed_paths_as_the_official_client_sends_them() {
    // The CometD Node client POSTs with Transfer-Encoding: chunked to /cometd/<type>.
    let srv = bayeux_server(|_| {});
    let mut c = Conn::new(srv.local_addr());
    let body = r#"[{"id":"1","version":"1.0","minimumVersion":"1.0","channel":"/meta/handshake","supportedConnectionTypes":["long-polling"],"advice":{"timeout":60000,"interval":0}}]"#;
    let req = format!(
        "POST /cometd/handshake HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    // In two pieces, split inside the chunk.
    let (a, b) = req.as_bytes().split_at(req.len() - 20);
    c.s.write_all(a).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    c.s.write_all(b).unwrap();
    let (st, v) = c.recv();
    assert_eq!(st, 200);
    assert_eq!(v[0]["successful"], true, "{v}");
    assert_eq!(v[0]["id"], "1");
    let id = v[0]["clientId"].as_str().unwrap();
    let body = format!(
        r#"[{{"id":"2","channel":"/meta/connect","connectionType":"long-polling","advice":{{"timeout":0}},"clientId":"{id}"}}]"#
    );
    let req = format!(
        "POST /cometd/connect HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    c.s.write_all(req.as_bytes()).unwrap();
    let (st, v) = c.recv();
    assert_eq!(st, 200);
    assert_eq!(v[0]["channel"], "/meta/connect");
    assert_eq!(v[0]["successful"], true, "{v}");
}

#[test]
fn deeply_nested_json_is_refused_and_the_server_lives() {
    // Found by the CometD harness: a body nested 10,000 deep overflowed a worker's stack.
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut c = Conn::new(a);
    let id = c.handshake();
    c.subscribe(&id, json!("/deep"));
    let deep = format!(
        r#"[{{"channel":"/deep","clientId":"{id}","data":{}1{}}}]"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let req = format!(
        "POST /cometd HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{deep}",
        deep.len()
    );
    c.s.write_all(req.as_bytes()).unwrap();
    let (st, v) = c.recv();
    assert_eq!(st, 400);
    assert_eq!(v[0]["successful"], false);
    // The same depth published natively reaches the Bayeux subscriber as a string.
    let mut p = Publisher::new(a);
    let payload = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(p.publish("deep", payload.as_bytes()).0, 200);
    let r = c.call(json!([{"channel":"/meta/connect","clientId":id,
        "connectionType":"long-polling","id":"c"}]));
    assert_eq!(deliveries(&r)[0]["data"].as_str().unwrap(), payload);
}

#[test]
fn client_limit() {
    let srv = bayeux_server(|c| {
        c.bayeux_max_clients = 2;
        c.bayeux_max_subscriptions = 2;
    });
    let mut c = Conn::new(srv.local_addr());
    let id = c.handshake();
    c.handshake();
    let s = c.subscribe(&id, json!(["/s1", "/s2", "/s3"]));
    assert_eq!(s["successful"], false);
    assert!(s["error"].as_str().unwrap().starts_with("403:"), "{s}");
    assert_eq!(hub(&srv, "bayeux_subscriptions"), 0, "all or nothing");
    assert_eq!(c.subscribe(&id, json!(["/s1", "/s2"]))["successful"], true);
    let r = c.call(json!([{"channel":"/meta/handshake","version":"1.0",
        "supportedConnectionTypes":["long-polling"],"id":"h"}]));
    assert_eq!(r[0]["successful"], false);
    assert!(r[0]["error"].as_str().unwrap().starts_with("503"));
}

/// A Bayeux WebSocket client (tungstenite) exchanging JSON arrays.
struct WsClient(Ws);

impl WsClient {
    fn new(addr: SocketAddr) -> WsClient {
        WsClient(ws(addr, "/cometd"))
    }

    fn send(&mut self, msgs: Value) {
        self.0
            .send(tungstenite::Message::text(msgs.to_string()))
            .unwrap();
    }

    fn recv(&mut self) -> Vec<Value> {
        let t = recv_text(&mut self.0);
        let v: Value = serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"));
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {t}"))
            .clone()
    }

    fn call(&mut self, msgs: Value) -> Vec<Value> {
        self.send(msgs);
        self.recv()
    }

    fn handshake(&mut self) -> String {
        let r = self.call(json!([{"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["websocket"],"id":"1"}]));
        assert_eq!(r[0]["successful"], true, "{r:?}");
        assert!(
            r[0]["supportedConnectionTypes"]
                .as_array()
                .unwrap()
                .contains(&json!("websocket")),
            "{r:?}"
        );
        let id = r[0]["clientId"].as_str().unwrap().to_string();
        let r = self.call(json!([{"channel":"/meta/connect","clientId":id,
            "connectionType":"websocket","advice":{"timeout":0},"id":"2"}]));
        assert_eq!(r[0]["successful"], true, "{r:?}");
        id
    }

    fn connect(&mut self, id: &str, n: u32) {
        self.send(json!([{"channel":"/meta/connect","clientId":id,
            "connectionType":"websocket","id":format!("c{n}")}]));
    }

    /// Reads frames until the reply to connect `c{n}`; returns the deliveries before it.
    fn until_connect_reply(&mut self, n: u32) -> Vec<Value> {
        let mut got = Vec::new();
        loop {
            for m in self.recv() {
                if m["id"] == format!("c{n}") && m["channel"] == "/meta/connect" {
                    assert_eq!(m["successful"], true, "{m}");
                    return got;
                }
                got.push(m);
            }
        }
    }
}

fn data_of(msgs: &[Value]) -> Vec<Value> {
    deliveries(msgs).iter().map(|m| m["data"].clone()).collect()
}

#[test]
fn websocket_meta_flow_and_reconnect_without_handshake() {
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut w1 = WsClient::new(a);
    let id = w1.handshake();
    let s = w1.call(json!([{"channel":"/meta/subscribe","clientId":id,
        "subscription":"/ws/a","id":"s"}]));
    assert_eq!(s[0]["successful"], true, "{s:?}");
    w1.connect(&id, 1);
    assert!(wait_until(5, || total(&srv, "conns_bayeux_ws") == 1));
    // While the connect is held the same socket carries other messages and their replies.
    let r = w1.call(json!([{"channel":"/ws/a","clientId":id,"data":{"n":0},"id":"p"}]));
    assert_eq!(r[0]["id"], "p", "{r:?}");
    assert_eq!(r[0]["successful"], true);
    // The held connect is answered with the delivery (its own publish, and a native one).
    let mut p = Publisher::new(a);
    assert_eq!(p.publish("ws/a", br#"{"n":1}"#).0, 200);
    let mut got = w1.until_connect_reply(1);
    while got.len() < 2 {
        w1.connect(&id, 2);
        got.extend(w1.until_connect_reply(2));
    }
    assert_eq!(data_of(&got), [json!({"n":0}), json!({"n":1})]);
    // The socket breaks; what is published meanwhile waits for the client's next connect,
    // which comes on a new socket with the old clientId and no handshake.
    drop(w1);
    assert!(wait_until(5, || total(&srv, "conns_bayeux_ws") == 0));
    for n in 2..5 {
        assert_eq!(
            p.publish("ws/a", format!("{{\"n\":{n}}}").as_bytes()).0,
            200
        );
    }
    let mut w2 = WsClient::new(a);
    w2.send(
        json!([{"channel":"/meta/connect","clientId":id,"connectionType":"websocket",
        "advice":{"timeout":0},"id":"c9"}]),
    );
    let got = w2.until_connect_reply(9);
    assert_eq!(
        data_of(&got),
        [json!({"n":2}), json!({"n":3}), json!({"n":4})]
    );
    // That socket now acts for that client only: another (valid) clientId on it is refused.
    let other = Conn::new(a).handshake();
    let r = w2.call(json!([{"channel":"/ws/a","clientId":other,"data":1,"id":"x"}]));
    assert_eq!(r[0]["successful"], false, "{r:?}");
    assert_eq!(r[0]["error"], "402::Unknown client");
    assert_eq!(total(&srv, "bayeux_wrong_connection"), 1);
    // Disconnect over the socket while a connect is held there: the connect is answered
    // first (the client closes its socket only when no connect is outstanding).
    w2.connect(&id, 10);
    assert!(wait_until(5, || hub(&srv, "bayeux_clients") == 2));
    std::thread::sleep(Duration::from_millis(100));
    w2.send(json!([{"channel":"/meta/disconnect","clientId":id,"id":"d"}]));
    let mut order = Vec::new();
    while order.len() < 2 {
        for m in w2.recv() {
            order.push((
                m["channel"].clone(),
                m["id"].clone(),
                m["successful"].clone(),
            ));
        }
    }
    assert_eq!(
        order,
        [
            (json!("/meta/connect"), json!("c10"), json!(true)),
            (json!("/meta/disconnect"), json!("d"), json!(true))
        ]
    );
    assert_eq!(hub(&srv, "bayeux_clients"), 1);
}

#[test]
fn websocket_holds_for_the_advised_timeout_and_one_connect_at_a_time() {
    let srv = bayeux_server(|c| c.bayeux_timeout = 5);
    let a = srv.local_addr();
    let mut w = WsClient::new(a);
    let id = w.handshake();
    // The client advises 1 s: held 1 to 2 s on the one-second wheel, not the server's 5 s.
    let t = Instant::now();
    w.send(
        json!([{"channel":"/meta/connect","clientId":id,"connectionType":"websocket",
        "advice":{"timeout":1000},"id":"c1"}]),
    );
    let r = w.recv();
    let held = t.elapsed();
    assert_eq!(r[0]["id"], "c1", "{r:?}");
    assert_eq!(
        r[0]["advice"]["timeout"], 5000,
        "the full advice, every time"
    );
    assert_eq!(r[0]["advice"]["reconnect"], "retry");
    assert_eq!(r[0]["advice"]["interval"], 0);
    assert!(r[0]["advice"]["maxInterval"].is_number());
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_millis(2600),
        "{held:?}"
    );
    // A second connect while one is held ends the first at once.
    w.connect(&id, 2);
    assert!(wait_until(5, || hub(&srv, "bayeux_clients") == 1));
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    w.connect(&id, 3);
    let r = w.recv();
    assert_eq!(
        r[0]["id"], "c2",
        "the earlier connect answered first: {r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // The second one is held (until the 5 s timeout).
    w.0.get_mut()
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    assert!(w.0.read().is_err(), "nothing until the timeout");
    // Two connects in one frame: the first is answered at once, the second held.
    let mut w = WsClient::new(a);
    let id = w.handshake();
    let t = Instant::now();
    w.send(json!([
        {"channel":"/meta/connect","clientId":id,"connectionType":"websocket","id":"c5"},
        {"channel":"/meta/connect","clientId":id,"connectionType":"websocket","id":"c6"}
    ]));
    let r = w.recv();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["id"], "c5");
    assert!(t.elapsed() < Duration::from_secs(1));
    let r = w.recv();
    assert_eq!(r[0]["id"], "c6", "held to the timeout: {r:?}");
    assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
}

#[test]
fn websocket_idle_binary_and_bad_json_close_the_socket() {
    let srv = bayeux_server(|c| c.bayeux_max_interval = 1);
    let a = srv.local_addr();
    let close_code = |w: &mut WsClient| loop {
        match w.0.read() {
            Ok(tungstenite::Message::Close(Some(f))) => return u16::from(f.code),
            Ok(tungstenite::Message::Close(None)) => return 1005,
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    // Never speaks: closed after --bayeux-max-interval (+1 s), 1008.
    let mut w = WsClient::new(a);
    let t = Instant::now();
    assert_eq!(close_code(&mut w), 1008);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(total(&srv, "bayeux_ws_idle"), 1);
    let mut w = WsClient::new(a);
    w.0.send(tungstenite::Message::binary(b"[]".to_vec()))
        .unwrap();
    assert_eq!(close_code(&mut w), 1003);
    for bad in ["nope", "[]", "[1]", "[{\"channel\":"] {
        let mut w = WsClient::new(a);
        w.0.send(tungstenite::Message::text(bad)).unwrap();
        assert_eq!(close_code(&mut w), 1008, "{bad}");
    }
    // The server still works.
    let mut w = WsClient::new(a);
    w.handshake();
}

/// `GET` with `message=` and `jsonp=`: the answer head and body.
fn jsonp_get(c: &mut Conn, path: &str, cb: &str, msgs: &Value) -> (u16, String, String) {
    let enc: String = msgs
        .to_string()
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let cookie = c
        .cookie
        .as_ref()
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path}?jsonp={cb}&message={enc} HTTP/1.1\r\nHost: t\r\n{cookie}\r\n");
    c.s.write_all(req.as_bytes()).unwrap();
    let (head, body) = read_response(&mut c.s, &mut c.buf);
    (status(head.as_bytes()), head, body)
}

/// The array inside `/**/cb(...);`.
fn unwrap_jsonp(body: &str, cb: &str) -> Vec<Value> {
    let inner = body
        .strip_prefix(&format!("/**/{cb}("))
        .and_then(|b| b.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not a call of {cb}: {body}"));
    serde_json::from_str::<Value>(inner)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn callback_polling() {
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut c = Conn::new(a);
    let cb = "_cometd_jsonp_0";
    let (st, head, body) = jsonp_get(
        &mut c,
        "/cometd/handshake",
        cb,
        &json!([{"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["callback-polling"],"id":"1"}]),
    );
    assert_eq!(st, 200, "{head}{body}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/javascript"), "{head}");
    assert!(lower.contains("x-content-type-options: nosniff"), "{head}");
    assert!(lower.contains("set-cookie: bayeux_browser="), "{head}");
    let r = unwrap_jsonp(&body, cb);
    assert_eq!(r[0]["successful"], true);
    let id = r[0]["clientId"].as_str().unwrap().to_string();
    let sub = json!([{"channel":"/meta/subscribe","clientId":id,"subscription":"/cp/*","id":"2"}]);
    let (_, _, body) = jsonp_get(&mut c, "/cometd/", "cb.x1", &sub);
    assert_eq!(unwrap_jsonp(&body, "cb.x1")[0]["successful"], true);
    // A held connect over GET, answered with the delivery.
    let conn = json!([{"channel":"/meta/connect","clientId":id,
        "connectionType":"callback-polling","id":"3"}]);
    let waiter = std::thread::spawn(move || {
        let (st, _, body) = jsonp_get(&mut c, "/cometd/connect", "cb", &conn);
        (st, body)
    });
    assert!(wait_until(5, || total(&srv, "conns_bayeux_poll") == 1));
    let mut p = Publisher::new(a);
    assert_eq!(p.publish("cp/x", b"hello").0, 200);
    let (st, body) = waiter.join().unwrap();
    assert_eq!(st, 200);
    let r = unwrap_jsonp(&body, "cb");
    assert_eq!(data_of(&r), [json!("hello")]);
    assert_eq!(r.last().unwrap()["id"], "3");
    // Callbacks are identifiers joined by dots, nothing else; the message must decode.
    let mut c = Conn::new(a);
    for path in [
        "/cometd?jsonp=alert(1)&message=%5B%5D",
        "/cometd?jsonp=cb&message=%5",
        "/cometd?message=%5B%5D",
        "/cometd",
    ] {
        c.s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let (head, body) = read_response(&mut c.s, &mut c.buf);
        assert_eq!(status(head.as_bytes()), 400, "{path}: {body}");
    }
}

#[test]
fn a_session_is_bound_to_its_browser_cookie() {
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut c = Conn::new(a);
    let r = c.call(json!([{"channel":"/meta/handshake","version":"1.0",
        "supportedConnectionTypes":["long-polling"],"id":"h"}]));
    let id = r[0]["clientId"].as_str().unwrap().to_string();
    let set = c
        .head
        .lines()
        .find_map(|l| {
            l.strip_prefix("Set-Cookie: ")
                .or_else(|| l.strip_prefix("set-cookie: "))
        })
        .unwrap_or_else(|| panic!("no Set-Cookie: {}", c.head))
        .to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    let pair = set.split(';').next().unwrap().to_string();
    assert!(pair.starts_with("BAYEUX_BROWSER="));
    let publish = |c: &mut Conn, n: u32| {
        c.call(json!([{"channel":"/b/x","clientId":id,"data":n,"id":n.to_string()}]))[0].clone()
    };
    // Before the cookie has come back, the clientId alone is accepted (clients that cannot
    // carry cookies); a different cookie never is.
    assert_eq!(publish(&mut c, 1)["successful"], true);
    c.cookie = Some("BAYEUX_BROWSER=0123456789abcdef0123456789abcdef".into());
    let r = publish(&mut c, 2);
    assert_eq!(
        (r["successful"].clone(), r["error"].clone()),
        (json!(false), json!("402::Unknown client"))
    );
    // The cookie comes back: the session is bound to it.
    c.cookie = Some(format!("theme=x; {pair}"));
    assert_eq!(publish(&mut c, 3)["successful"], true);
    // Someone with the clientId and no cookie (or another) is now refused.
    let mut thief = Conn::new(a);
    assert_eq!(publish(&mut thief, 4)["successful"], false);
    thief.cookie = Some("BAYEUX_BROWSER=ffffffffffffffffffffffffffffffff".into());
    assert_eq!(publish(&mut thief, 5)["successful"], false);
    let r = thief.call(json!([{"channel":"/meta/connect","clientId":id,
        "connectionType":"long-polling","id":"c"}]));
    assert_eq!(r[0]["advice"]["reconnect"], "handshake");
    assert_eq!(hub(&srv, "bayeux_wrong_browser"), 4);
    // The owner goes on.
    assert_eq!(publish(&mut c, 6)["successful"], true);
    // A handshake that brings a cookie keeps it (no new Set-Cookie).
    c.call(json!([{"channel":"/meta/handshake","version":"1.0",
        "supportedConnectionTypes":["long-polling"],"id":"h2"}]));
    assert!(
        !c.head.to_ascii_lowercase().contains("set-cookie"),
        "{}",
        c.head
    );
}

#[test]
fn ack_extension_sends_unacknowledged_batches_again() {
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut c = Conn::new(a);
    let r = c.call(json!([{"channel":"/meta/handshake","version":"1.0",
        "supportedConnectionTypes":["long-polling"],"id":"h","ext":{"ack":true}}]));
    assert_eq!(r[0]["ext"]["ack"], true, "{r:?}");
    let id = r[0]["clientId"].as_str().unwrap().to_string();
    c.subscribe(&id, json!("/ack/x"));
    let connect = |c: &mut Conn, ack: i64, first: bool| {
        let mut m = json!({"channel":"/meta/connect","clientId":id,
            "connectionType":"long-polling","id":"c","ext":{"ack":ack}});
        if first {
            m["advice"] = json!({"timeout":0});
        }
        let r = c.call(json!([m]));
        let reply = r.last().unwrap().clone();
        assert_eq!(reply["successful"], true, "{r:?}");
        (
            data_of(&r),
            reply["ext"]["ack"].as_i64().expect("a batch number"),
        )
    };
    let (d, b1) = connect(&mut c, 0, true);
    assert!(d.is_empty());
    let mut p = Publisher::new(a);
    p.publish("ack/x", b"1");
    let (d, b2) = connect(&mut c, b1, false);
    assert_eq!(d, [json!(1)]);
    assert!(b2 > b1);
    // That reply is "lost": the client comes back with the batch before it.
    p.publish("ack/x", b"2");
    let (d, b3) = connect(&mut c, b1, false);
    assert_eq!(
        d,
        [json!(1), json!(2)],
        "the unacknowledged batch first, then the new one"
    );
    assert_eq!(hub(&srv, "bayeux_unacked"), 2);
    // Acknowledged: nothing is sent twice; the next connect is held until a new message.
    c.send(
        &json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling",
        "id":"c","ext":{"ack":b3}}]),
    );
    assert!(wait_until(5, || total(&srv, "conns_bayeux_poll") == 1));
    assert_eq!(hub(&srv, "bayeux_unacked"), 0);
    p.publish("ack/x", b"3");
    let (_, v) = c.recv();
    let r = v.as_array().unwrap();
    assert_eq!(data_of(r), [json!(3)]);
    assert!(r.last().unwrap()["ext"]["ack"].as_i64().unwrap() > b3);
}

#[test]
fn timesync_and_a_handshake_goes_alone() {
    let srv = bayeux_server(|_| {});
    let a = srv.local_addr();
    let mut c = Conn::new(a);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Another message in the handshake's request is ignored (no reply, not published).
    let r = c.call(json!([{"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["long-polling"],"id":"h",
            "ext":{"timesync":{"tc":now - 5000,"l":0,"o":0}}},
        {"channel":"/meta/subscribe","subscription":"/t","id":"s"}]));
    assert_eq!(r.len(), 1, "{r:?}");
    let ts = &r[0]["ext"]["timesync"];
    assert_eq!(ts["tc"], now - 5000, "{r:?}");
    let server_ts = ts["ts"].as_i64().unwrap();
    assert!((server_ts - now).abs() < 5000, "{ts}");
    assert!(ts["p"].as_i64().unwrap() >= 0);
    // a = tc + o + l - ts: about -5 s for a client clock 5 s behind.
    let off = ts["a"].as_i64().unwrap();
    assert!((-7000..=-4000).contains(&off), "{ts}");
    // A held connect reports how long it was held in `p`.
    let id = r[0]["clientId"].as_str().unwrap().to_string();
    c.call(
        json!([{"channel":"/meta/connect","clientId":id,"connectionType":"long-polling",
        "advice":{"timeout":0},"id":"c0"}]),
    );
    let r = c.call(json!([{"channel":"/meta/connect","clientId":id,
        "connectionType":"long-polling","id":"c1","advice":{"timeout":1000},
        "ext":{"timesync":{"tc":now,"l":3,"o":0}}}]));
    let p = r[0]["ext"]["timesync"]["p"].as_i64().unwrap();
    assert!((900..3000).contains(&p), "{r:?}");
}

#[test]
fn browsers_get_credentialed_cors_and_callback_polling_checks_the_referer() {
    let hs = r#"[{"channel":"/meta/handshake","version":"1.0","supportedConnectionTypes":["long-polling"]}]"#;
    let post = |a: SocketAddr, origin: &str| {
        let req = format!(
            "POST /cometd/handshake HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{hs}",
            hs.len()
        );
        String::from_utf8_lossy(&raw(a, req.as_bytes())).to_string()
    };
    let preflight = |a: SocketAddr, origin: &str| {
        let req = format!(
            "OPTIONS /cometd/handshake HTTP/1.1\r\nHost: t\r\nOrigin: {origin}\r\n\
             Access-Control-Request-Method: POST\r\n\
             Access-Control-Request-Headers: content-type\r\nConnection: close\r\n\r\n"
        );
        String::from_utf8_lossy(&raw(a, req.as_bytes())).to_string()
    };
    // An allow-list: the origin named, credentials allowed (the CometD client's XHR sends them).
    let srv = bayeux_server(|c| c.allow_origin = vec!["http://page.test:8000".into()]);
    let a = srv.local_addr();
    for resp in [
        post(a, "http://page.test:8000"),
        preflight(a, "http://page.test:8000"),
    ] {
        assert!(
            resp.contains("Access-Control-Allow-Origin: http://page.test:8000\r\n"),
            "{resp}"
        );
        assert!(
            resp.contains("Access-Control-Allow-Credentials: true\r\n"),
            "{resp}"
        );
    }
    assert_eq!(status(post(a, "http://evil.test").as_bytes()), 403);
    // Callback-polling carries no Origin: its Referer, when there is one, must be allowed.
    let jsonp = |referer: &str| {
        let req = format!(
            "GET /cometd/handshake?jsonp=cb&message=%5B%7B%22channel%22%3A%22%2Fmeta%2Fhandshake%22%2C%22version%22%3A%221.0%22%2C%22supportedConnectionTypes%22%3A%5B%22callback-polling%22%5D%7D%5D HTTP/1.1\r\n\
             Host: t\r\n{referer}Connection: close\r\n\r\n"
        );
        status(&raw(a, req.as_bytes()))
    };
    assert_eq!(
        jsonp("Referer: http://page.test:8000/app/index.html\r\n"),
        200
    );
    assert_eq!(jsonp("Referer: http://evil.test/x.html\r\n"), 403);
    assert_eq!(jsonp(""), 200, "no Referer: let through (documented)");
    // `*`: a credentialed request may not get `*`, so the origin is echoed.
    let srv = bayeux_server(|c| c.allow_origin = vec!["*".into()]);
    let resp = post(srv.local_addr(), "http://any.test");
    assert!(
        resp.contains("Access-Control-Allow-Origin: http://any.test\r\n"),
        "{resp}"
    );
    assert!(resp.contains("Access-Control-Allow-Credentials: true\r\n"));
    assert!(resp.contains("Vary: Origin\r\n"));
}
