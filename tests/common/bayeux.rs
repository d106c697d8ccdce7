//! A Bayeux long-polling client over raw HTTP, and helpers shared by the Bayeux and broker
//! tests.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use edgecomet::Server;
use serde_json::{Value, json};

use super::{read_response, status};

/// A keep-alive connection speaking Bayeux long-polling.
pub struct Conn {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    /// Sent as `Cookie:` when set.
    pub cookie: Option<String>,
    /// Head of the last response.
    pub head: String,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Conn {
            s,
            buf: Vec::new(),
            cookie: None,
            head: String::new(),
        }
    }

    pub fn send(&mut self, msgs: &Value) {
        let body = msgs.to_string();
        let cookie = self
            .cookie
            .as_ref()
            .map(|c| format!("Cookie: {c}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "POST /cometd HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{cookie}\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.s.write_all(req.as_bytes()).unwrap();
    }

    pub fn recv(&mut self) -> (u16, Value) {
        let (head, body) = read_response(&mut self.s, &mut self.buf);
        self.head = head.clone();
        (
            status(head.as_bytes()),
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
        )
    }

    pub fn call(&mut self, msgs: Value) -> Vec<Value> {
        self.send(&msgs);
        let (st, v) = self.recv();
        assert_eq!(st, 200, "{v}");
        v.as_array().unwrap().clone()
    }

    /// Handshake and the first (immediate) connect; returns the client id.
    pub fn handshake(&mut self) -> String {
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

    pub fn subscribe(&mut self, id: &str, subs: Value) -> Value {
        let r = self.call(json!([{"channel":"/meta/subscribe","clientId":id,
            "subscription":subs,"id":"s"}]));
        r[0].clone()
    }

    pub fn connect(&mut self, id: &str) {
        self.send(&json!([{"channel":"/meta/connect","clientId":id,
            "connectionType":"long-polling","id":"c"}]));
    }
}

pub fn hub(server: &Server, key: &str) -> u64 {
    let v: Value = serde_json::from_str(&server.stats_json()).unwrap();
    v["hub"][key].as_u64().unwrap()
}

/// The messages (not replies) of a connect answer.
pub fn deliveries(r: &[Value]) -> Vec<Value> {
    r.iter()
        .filter(|m| m.get("data").is_some() && m.get("successful").is_none())
        .cloned()
        .collect()
}
