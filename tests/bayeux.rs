//! CometD/Bayeux long-polling on `/cometd` over real sockets, raw JSON: the meta flow, held
//! connects woken across workers, wildcards, the native/Bayeux channel mapping, services,
//! errors, and the client store's limits and expiry.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use edgecomet::Server;
use serde_json::{Value, json};

/// A keep-alive connection speaking Bayeux long-polling.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn send(&mut self, msgs: &Value) {
        let body = msgs.to_string();
        let req = format!(
            "POST /cometd HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.s.write_all(req.as_bytes()).unwrap();
    }

    fn recv(&mut self) -> (u16, Value) {
        let (head, body) = read_response(&mut self.s, &mut self.buf);
        (
            status(head.as_bytes()),
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
        )
    }

    fn call(&mut self, msgs: Value) -> Vec<Value> {
        self.send(&msgs);
        let (st, v) = self.recv();
        assert_eq!(st, 200, "{v}");
        v.as_array().unwrap().clone()
    }

    /// Handshake and the first (immediate) connect; returns the client id.
    fn handshake(&mut self) -> String {
        let r = self.call(json!([{"channel":"/meta/handshake","version":"1.0",
            "supportedConnectionTypes":["long-polling"],"id":"h"}]));
        assert_eq!(r[0]["successful"], true, "{r:?}");
        assert_eq!(r[0]["id"], "h");
        let id = r[0]["clientId"].as_str().unwrap().to_string();
        let r = self.call(json!([{"channel":"/meta/connect","clientId":id,
            "connectionType":"long-polling","advice":{"timeout":0},"id":"c0"}]));
        assert_eq!(r[0]["successful"], true, "{r:?}");
        id
    }

    fn subscribe(&mut self, id: &str, subs: Value) -> Value {
        let r = self.call(json!([{"channel":"/meta/subscribe","clientId":id,
            "subscription":subs,"id":"s"}]));
        r[0].clone()
    }

    fn connect(&mut self, id: &str) {
        self.send(&json!([{"channel":"/meta/connect","clientId":id,
            "connectionType":"long-polling","id":"c"}]));
    }
}

fn bayeux_server(tweak: impl FnOnce(&mut edgecomet::Config)) -> Server {
    server(2, |c| {
        c.bayeux_timeout = 2;
        tweak(c);
    })
}

fn hub(server: &Server, key: &str) -> u64 {
    let v: Value = serde_json::from_str(&server.stats_json()).unwrap();
    v["hub"][key].as_u64().unwrap()
}

/// The messages (not replies) of a connect answer.
fn deliveries(r: &[Value]) -> Vec<Value> {
    r.iter()
        .filter(|m| m.get("data").is_some() && m.get("successful").is_none())
        .cloned()
        .collect()
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
