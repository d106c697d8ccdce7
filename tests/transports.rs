//! The HTTP transports of `/sub/{channel}` over real sockets: SSE, streaming, long-poll (text,
//! JSON, JSONP), resume by cursor / Last-Event-ID, gaps, Client-Id sessions, client publish,
//! CORS, and the limits around them. The wire format is docs/http-transports.md.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use edgecomet::Server;
use serde_json::Value;

/// One HTTP response.
#[derive(Debug)]
struct Resp {
    status: u16,
    head: String,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {:?}", self.body))
    }
}

/// A keep-alive HTTP client that sees headers.
struct Client {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client { s, buf: Vec::new() }
    }

    fn send(&mut self, method: &str, path: &str, headers: &str, body: &str) {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.s.write_all(req.as_bytes()).unwrap();
    }

    fn request(&mut self, method: &str, path: &str, headers: &str, body: &str) -> Resp {
        self.send(method, path, headers, body);
        self.response()
    }

    fn get(&mut self, path: &str, headers: &str) -> Resp {
        self.request("GET", path, headers, "")
    }

    fn response(&mut self) -> Resp {
        let (head, body) = read_response(&mut self.s, &mut self.buf);
        Resp {
            status: status(head.as_bytes()),
            head,
            body,
        }
    }
}

/// An SSE (or streaming) subscriber reading the raw stream.
struct Stream {
    s: TcpStream,
    text: String,
}

impl Stream {
    fn open(addr: SocketAddr, path: &str, headers: &str) -> Stream {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n").unwrap();
        Stream {
            s,
            text: String::new(),
        }
    }

    fn sse(addr: SocketAddr, path: &str, headers: &str) -> Stream {
        Stream::open(
            addr,
            path,
            &format!("Accept: text/event-stream\r\n{headers}"),
        )
    }

    /// Reads until `pred(text so far)` holds.
    fn until(&mut self, pred: impl Fn(&str) -> bool) -> &str {
        let mut tmp = [0u8; 65536];
        let start = Instant::now();
        while !pred(&self.text) {
            assert!(start.elapsed() < Duration::from_secs(10), "{:?}", self.text);
            let n = self.s.read(&mut tmp).expect("stream read");
            assert!(n > 0, "stream closed: {:?}", self.text);
            self.text.push_str(std::str::from_utf8(&tmp[..n]).unwrap());
        }
        &self.text
    }

    /// Reads until the stream holds `n` message events; returns (id, data) of each.
    fn events(&mut self, n: usize) -> Vec<(u64, String)> {
        self.until(|t| t.matches("\nid: ").count() + usize::from(t.starts_with("id: ")) >= n);
        sse_events(&self.text)
    }
}

/// `(id, data)` of the message events of an SSE body (data lines joined with \n).
fn sse_events(text: &str) -> Vec<(u64, String)> {
    let body = text.split_once("\r\n\r\n").map_or(text, |(_, b)| b);
    body.split("\n\n")
        .filter_map(|ev| {
            let mut id = None;
            let mut data: Vec<&str> = Vec::new();
            for line in ev.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data.push(v);
                }
            }
            Some((id?, data.join("\n")))
        })
        .collect()
}

fn publish(p: &mut Publisher, ch: &str, body: &str) -> u64 {
    let (st, resp) = p.publish(ch, body.as_bytes());
    assert_eq!(st, 200, "{resp}");
    let v: Value = serde_json::from_str(&resp).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

fn hub(server: &Server, key: &str) -> u64 {
    let v: Value = serde_json::from_str(&server.stats_json()).unwrap();
    v["hub"][key]
        .as_u64()
        .unwrap_or_else(|| panic!("no hub.{key}"))
}

fn data(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].as_str().unwrap().to_string())
        .collect()
}

// ---- Server-Sent Events ----------------------------------------------------------------------

#[test]
fn sse_resumes_after_last_event_id_then_streams_live() {
    let srv = server(2, |_| {});
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let ids: Vec<u64> = (0..5)
        .map(|i| publish(&mut p, "news", &format!("m{i}")))
        .collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "consecutive ids");

    // Header form.
    let mut s = Stream::sse(a, "/sub/news", &format!("Last-Event-ID: {}\r\n", ids[1]));
    let head = s.until(|t| t.contains("\r\n\r\n")).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream\r\n"));
    assert!(head.contains("retry: 2000\n\n"));
    assert_eq!(
        s.events(3),
        vec![
            (ids[2], "m2".to_string()),
            (ids[3], "m3".to_string()),
            (ids[4], "m4".to_string())
        ]
    );
    // Live after the replay, multi-line payload split into data: lines.
    let id5 = publish(&mut p, "news", "line one\nline two");
    assert_eq!(s.events(4)[3], (id5, "line one\nline two".to_string()));
    assert!(s.text.contains("data: line one\ndata: line two\n\n"));

    // Query form (EventSource cannot set the header on its first request); the query wins.
    let mut q = Stream::sse(
        a,
        &format!("/sub/news?last_event_id={}", ids[3]),
        "Last-Event-ID: 1\r\n",
    );
    let ev = q.events(2);
    assert_eq!(
        ev,
        vec![(ids[4], "m4".into()), (id5, "line one\nline two".into())]
    );
    assert!(!q.text.contains("event: gap"));
    assert_eq!(total(&srv, "conns_sse"), 2);
    drop(s);
    drop(q);
    assert!(wait_until(5, || total(&srv, "conns_sse") == 0));
}

#[test]
fn sse_without_cursor_is_live_only_and_heartbeats() {
    let srv = server(1, |c| c.sse_heartbeat = 1);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    publish(&mut p, "c", "old");
    let mut s = Stream::sse(a, "/sub/c", "");
    s.until(|t| t.contains("retry:"));
    // Subscribed before this publish is answered (same worker, one turn).
    let id = publish(&mut p, "c", "new");
    assert_eq!(s.events(1), vec![(id, "new".to_string())]);
    s.until(|t| t.contains("\n: hb\n\n"));
}

#[test]
fn sse_reports_a_gap_beyond_the_history() {
    let srv = server(1, |c| c.history = 3);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let ids: Vec<u64> = (0..6)
        .map(|i| publish(&mut p, "g", &i.to_string()))
        .collect();
    // The client saw message 0; 1 and 2 are gone, 3..5 are in the history.
    let mut s = Stream::sse(a, "/sub/g", &format!("Last-Event-ID: {}\r\n", ids[0]));
    let ev = s.events(3);
    assert!(
        s.text.contains("event: gap\ndata: {\"missed\":2}\n\n"),
        "{}",
        s.text
    );
    let gap_at = s.text.find("event: gap").unwrap();
    assert!(gap_at < s.text.find(&format!("id: {}", ids[3])).unwrap());
    assert_eq!(ev.iter().map(|e| e.0).collect::<Vec<_>>(), ids[3..]);
    // A cursor older than the channel (a restart) or unknown: missed is null.
    let mut u = Stream::sse(a, "/sub/g", "Last-Event-ID: 12345\r\n");
    u.events(3);
    assert!(u.text.contains("event: gap\ndata: {\"missed\":null}\n\n"));
    // Cursor 0: everything there is, no gap.
    let mut z = Stream::sse(a, "/sub/g?cursor=0", "");
    assert_eq!(z.events(3).len(), 3);
    assert!(!z.text.contains("gap"));
    assert_eq!(total(&srv, "gaps_reported"), 2);
}

#[test]
fn order_and_no_duplicates_across_workers_and_concurrent_publishers() {
    // Two workers, four publishers on separate connections (on both workers), one SSE
    // subscriber that resumes mid-way: ids strictly increase, nothing missing, nothing twice.
    let srv = server(2, |c| c.history = 1000);
    let a = srv.local_addr();
    let mut s = Stream::sse(a, "/sub/o", "");
    s.until(|t| t.contains("retry:"));
    let pubs: Vec<_> = (0..4)
        .map(|k| {
            std::thread::spawn(move || {
                let mut p = Publisher::new(a);
                for i in 0..200 {
                    publish(&mut p, "o", &format!("{k}-{i}"));
                }
            })
        })
        .collect();
    let ev = s.events(100);
    // Resume from the 50th id while the publishers keep going.
    let mut r = Stream::sse(a, "/sub/o", &format!("Last-Event-ID: {}\r\n", ev[49].0));
    for t in pubs {
        t.join().unwrap();
    }
    let all = s.events(800);
    assert_eq!(all.len(), 800);
    assert!(
        all.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "in order, no gap"
    );
    for k in 0..4 {
        let mine: Vec<&String> = all
            .iter()
            .map(|e| &e.1)
            .filter(|d| d.starts_with(&format!("{k}-")))
            .collect();
        let want: Vec<String> = (0..200).map(|i| format!("{k}-{i}")).collect();
        assert_eq!(
            mine,
            want.iter().collect::<Vec<_>>(),
            "publisher {k} in order"
        );
    }
    let resumed = r.events(750);
    assert_eq!(resumed.len(), 750);
    assert_eq!(&resumed[..], &all[50..]);
}

// ---- HTTP streaming --------------------------------------------------------------------------

#[test]
fn http_streaming_is_chunked_ndjson() {
    let srv = server(1, |c| c.sse_heartbeat = 1);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let id0 = publish(&mut p, "st", "a\"b");
    let mut s = Stream::open(a, "/sub/st?transport=stream&cursor=0", "");
    s.until(|t| t.contains("a\\\"b"));
    assert!(s.text.contains("Transfer-Encoding: chunked\r\n"));
    assert!(s.text.contains("Content-Type: application/x-ndjson\r\n"));
    let line = format!("{{\"id\":\"{id0}\",\"data\":\"a\\\"b\"}}\n");
    assert!(
        s.text.contains(&format!("{:x}\r\n{line}\r\n", line.len())),
        "{:?}",
        s.text
    );
    let id1 = publish(&mut p, "st", "live");
    s.until(|t| t.contains(&format!("{{\"id\":\"{id1}\",\"data\":\"live\"}}\n")));
    // Heartbeat: a chunk holding an empty line.
    s.until(|t| t.contains("\r\n1\r\n\n\r\n"));
    // Accept header form.
    let mut h = Stream::open(a, "/sub/st?cursor=0", "Accept: application/x-ndjson\r\n");
    h.until(|t| t.contains("\"data\":\"live\""));
}

// ---- long-poll ---------------------------------------------------------------------------------

#[test]
fn longpoll_json_resumes_by_cursor_and_holds_until_a_message() {
    let srv = server(2, |c| c.poll_timeout = 1);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let mut c = Client::new(a);
    const J: &str = "Accept: application/json\r\n";
    // No cursor: held, then the timeout answers empty with the cursor of "now" (0: the
    // channel has no state yet).
    let t = Instant::now();
    let r = c.get("/sub/lp", J);
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "held for --poll-timeout at least"
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Cache-Control").as_deref(), Some("no-store"));
    let v = r.json();
    assert_eq!(data(&v), Vec::<String>::new());
    let cursor = v["cursor"].as_str().unwrap().to_string();
    assert_eq!(r.header("Edgecomet-Cursor").unwrap(), cursor);
    assert_eq!(total(&srv, "poll_timeouts"), 1);

    // Published while no poll is outstanding: the next poll with the cursor gets all of it at
    // once, in one answer.
    publish(&mut p, "lp", "one");
    publish(&mut p, "lp", "two");
    let v = c.get(&format!("/sub/lp?cursor={cursor}"), J).json();
    assert_eq!(data(&v), ["one", "two"]);
    let cursor = v["cursor"].as_str().unwrap().to_string();
    assert_eq!(cursor, v["messages"][1]["id"].as_str().unwrap());

    // Nothing newer: held until the publish (on whichever worker) arrives.
    c.send("GET", &format!("/sub/lp?cursor={cursor}"), J, "");
    assert!(wait_until(5, || total(&srv, "conns_poll") == 1));
    let id3 = publish(&mut p, "lp", "three");
    let r = c.response();
    let v = r.json();
    assert_eq!(data(&v), ["three"]);
    assert_eq!(v["cursor"].as_str().unwrap(), id3.to_string());
    assert!(wait_until(5, || total(&srv, "conns_poll") == 0));
    // Same connection, again (keep-alive between polls).
    let v = c.get(&format!("/sub/lp?cursor={}", id3 - 2), J).json();
    assert_eq!(data(&v), ["two", "three"]);
}

#[test]
fn longpoll_text_is_one_message_per_answer_and_204_on_timeout() {
    let srv = server(1, |c| c.poll_timeout = 1);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let mut c = Client::new(a);
    let r = c.get("/sub/t", "");
    assert_eq!(r.status, 204);
    assert_eq!(r.body, "");
    assert!(r.header("Content-Length").is_none(), "204 has no length");
    let mut cursor = r.header("Edgecomet-Cursor").unwrap();
    for m in ["x", "y"] {
        publish(&mut p, "t", m);
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        let r = c.get(&format!("/sub/t?cursor={cursor}"), "");
        assert_eq!(r.status, 200);
        assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
        cursor = r.header("Edgecomet-Cursor").unwrap();
        got.push(r.body);
    }
    assert_eq!(got, ["x", "y"]);
}

#[test]
fn longpoll_gap_and_jsonp() {
    let srv = server(1, |c| c.history = 2);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let ids: Vec<u64> = (0..5)
        .map(|i| publish(&mut p, "j", &i.to_string()))
        .collect();
    let mut c = Client::new(a);
    let r = c.get(
        &format!("/sub/j?cursor={}", ids[0]),
        "Accept: application/json\r\n",
    );
    assert_eq!(r.header("Edgecomet-Gap").as_deref(), Some("2"));
    let v = r.json();
    assert_eq!(v["gap"]["missed"], 2);
    assert_eq!(data(&v), ["3", "4"]);
    // Text: the gap rides on the header of the first answer.
    let r = c.get(&format!("/sub/j?cursor={}", ids[0]), "");
    assert_eq!(r.header("Edgecomet-Gap").as_deref(), Some("2"));
    assert_eq!(r.body, "3");

    let r = c.get(&format!("/sub/j?callback=App.on_msg&cursor={}", ids[3]), "");
    assert_eq!(r.status, 200);
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("application/javascript")
    );
    assert_eq!(
        r.header("X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );
    let body = r
        .body
        .strip_prefix("/**/App.on_msg(")
        .and_then(|b| b.strip_suffix(");"))
        .unwrap_or_else(|| panic!("{}", r.body));
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(data(&v), ["4"]);
    assert_eq!(v["cursor"].as_str().unwrap(), ids[4].to_string());
}

#[test]
fn a_long_resume_is_split_over_answers_of_bounded_size() {
    // 10 messages of 30 KB with a 64 KB answer budget: 2 per answer, the cursor carries on.
    let srv = server(1, |c| c.max_queued_bytes = 64 * 1024);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let ids: Vec<u64> = (0..10)
        .map(|i| publish(&mut p, "big", &format!("{i}").repeat(30_000)))
        .collect();
    let mut c = Client::new(a);
    let mut cursor = "0".to_string();
    let mut got = Vec::new();
    while got.len() < 10 {
        let v = c
            .get(
                &format!("/sub/big?cursor={cursor}"),
                "Accept: application/json\r\n",
            )
            .json();
        let batch = data(&v);
        assert_eq!(batch.len(), 2, "bounded answer");
        cursor = v["cursor"].as_str().unwrap().to_string();
        got.extend(batch.into_iter().map(|d| d[..1].to_string()));
    }
    assert_eq!(cursor, ids[9].to_string());
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(got, want);
}

#[test]
fn a_request_pipelined_behind_a_held_poll_completes_it_in_order() {
    let srv = server(1, |c| c.poll_timeout = 30);
    let a = srv.local_addr();
    let mut c = Client::new(a);
    let t = Instant::now();
    c.send("GET", "/sub/pipe", "Accept: application/json\r\n", "");
    c.send("GET", "/stats", "", "");
    let first = c.response();
    let second = c.response();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "not held to the timeout"
    );
    assert_eq!(data(&first.json()), Vec::<String>::new());
    assert!(second.body.contains("\"workers\""), "{}", second.body);
}

// ---- Client-Id sessions ------------------------------------------------------------------------

const SESSION_START: &str =
    "Client-Id: 0.4711\r\nPragma: start-long-poll\r\nAccept: application/json\r\n";
const SESSION: &str = "Client-Id: 0.4711\r\nAccept: application/json\r\n";

#[test]
fn session_keeps_what_was_published_between_polls() {
    let srv = server(2, |c| {
        c.poll_timeout = 1;
        c.session_ttl = 30;
    });
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    // dojox/socket polls with POST and an empty body; the first one carries the Pragma.
    let mut c = Client::new(a);
    c.send("POST", "/sub/d", SESSION_START, "");
    assert!(wait_until(5, || total(&srv, "conns_poll") == 1));
    publish(&mut p, "d", "first");
    assert_eq!(data(&c.response().json()), ["first"]);
    // No poll outstanding: these wait in the session's queue. A new connection (another
    // worker, maybe) continues the same series.
    for m in ["a", "b", "c"] {
        publish(&mut p, "d", m);
    }
    let mut c2 = Client::new(a);
    let v = c2.request("POST", "/sub/d", SESSION, "").json();
    assert_eq!(data(&v), ["a", "b", "c"]);
    // A timeout answer is empty; messages published right after it are still kept.
    let v = c2.request("POST", "/sub/d", SESSION, "").json();
    assert_eq!(data(&v), Vec::<String>::new());
    publish(&mut p, "d", "after-timeout");
    let v = c2.request("POST", "/sub/d", SESSION, "").json();
    assert_eq!(data(&v), ["after-timeout"]);
    // Text format: one per answer.
    publish(&mut p, "d", "t1");
    publish(&mut p, "d", "t2");
    let r = c2.request("POST", "/sub/d", "Client-Id: 0.4711\r\n", "");
    assert_eq!(r.body, "t1");
    let r = c2.request("POST", "/sub/d", "Client-Id: 0.4711\r\n", "");
    assert_eq!(r.body, "t2");
    // An unknown series without the Pragma: 410, the client must start over.
    let r = c2.request("POST", "/sub/d", "Client-Id: other\r\n", "");
    assert_eq!(r.status, 410);
    assert_eq!(total(&srv, "sessions_unknown"), 1);
}

#[test]
fn session_queue_is_bounded_and_reports_the_gap() {
    let srv = server(1, |c| c.session_queue = 3);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let mut c = Client::new(a);
    // Start the series with a cursor-less start at "now": held, so publish one to end it.
    c.send("GET", "/sub/q", SESSION_START, "");
    assert!(wait_until(5, || total(&srv, "conns_poll") == 1));
    publish(&mut p, "q", "m0");
    assert_eq!(data(&c.response().json()), ["m0"]);
    for i in 1..=5 {
        publish(&mut p, "q", &format!("m{i}"));
    }
    let r = c.get("/sub/q", SESSION);
    assert_eq!(r.header("Edgecomet-Gap").as_deref(), Some("2"));
    let v = r.json();
    assert_eq!(v["gap"]["missed"], 2);
    assert_eq!(data(&v), ["m3", "m4", "m5"]);
    assert_eq!(hub(&srv, "session_drops"), 2);
}

#[test]
fn session_expiry_frees_the_queue() {
    let srv = server(1, |c| {
        c.poll_timeout = 1;
        c.session_ttl = 2;
    });
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let mut c = Client::new(a);
    c.send("GET", "/sub/e", SESSION_START, "");
    assert!(wait_until(5, || total(&srv, "conns_poll") == 1));
    publish(&mut p, "e", "x");
    c.response();
    for i in 0..50 {
        publish(&mut p, "e", &"y".repeat(1000 + i));
    }
    assert_eq!(hub(&srv, "sessions"), 1);
    assert_eq!(hub(&srv, "session_queued"), 50);
    // No poll for longer than the TTL: the session and its queue are gone.
    assert!(wait_until(6, || hub(&srv, "sessions") == 0));
    assert_eq!(hub(&srv, "session_queued"), 0);
    assert_eq!(hub(&srv, "sessions_expired"), 1);
    let r = c.get("/sub/e", SESSION);
    assert_eq!(r.status, 410);
}

#[test]
fn a_held_session_poll_keeps_the_session_alive() {
    let srv = server(1, |c| {
        c.poll_timeout = 3;
        c.session_ttl = 4;
    });
    let a = srv.local_addr();
    let mut c = Client::new(a);
    // Two consecutive held polls of 3 s each with no gap between them: 6 s > TTL, but the TTL
    // runs only between polls.
    c.send("GET", "/sub/h", SESSION_START, "");
    c.response();
    c.send("GET", "/sub/h", SESSION, "");
    assert_eq!(c.response().status, 200);
    assert_eq!(hub(&srv, "sessions"), 1);
}

#[test]
fn session_limit() {
    let srv = server(1, |c| {
        c.max_sessions = 2;
        c.poll_timeout = 1;
    });
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    publish(&mut p, "l", "seed");
    let mut c = Client::new(a);
    for id in ["s1", "s2"] {
        let h = format!("Client-Id: {id}\r\nPragma: start-long-poll\r\n");
        assert_eq!(c.get("/sub/l?cursor=0", &h).status, 200);
    }
    let r = c.get(
        "/sub/l?cursor=0",
        "Client-Id: s3\r\nPragma: start-long-poll\r\n",
    );
    assert_eq!(r.status, 503);
    assert!(r.body.contains("--max-sessions"));
}

// ---- messages from clients ---------------------------------------------------------------------

#[test]
fn client_publish_is_refused_unless_enabled() {
    let srv = server(1, |_| {});
    let a = srv.local_addr();
    let mut c = Client::new(a);
    let r = c.request("POST", "/sub/cp", "Client-Id: x\r\n", "hello");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("--client-publish"));
    // A WebSocket subscriber that sends: 1008.
    let mut w = ws(a, "/sub/cp");
    w.send(tungstenite::Message::text("hi")).unwrap();
    match w.read() {
        Ok(tungstenite::Message::Close(Some(f))) => {
            assert_eq!(u16::from(f.code), 1008);
            assert_eq!(f.reason.as_str(), "client publish disabled");
        }
        other => panic!("expected close 1008, got {other:?}"),
    }
    assert_eq!(total(&srv, "client_publish_refused"), 2);
}

#[test]
fn client_publish_reaches_every_transport() {
    let srv = server(2, |c| c.client_publish = true);
    let a = srv.local_addr();
    let mut s = Stream::sse(a, "/sub/cp", "");
    s.until(|t| t.contains("retry:"));
    let mut w = ws(a, "/sub/cp");
    // A dojox/socket send(): POST with a body, answered 204 (no message event for it).
    let mut c = Client::new(a);
    let r = c.request("POST", "/sub/cp", "Client-Id: z\r\n", "from-post");
    assert_eq!(r.status, 204);
    assert_eq!(recv_text(&mut w), "from-post");
    // A WebSocket subscriber's text frame is published to the channel (itself included).
    w.send(tungstenite::Message::text("from-ws")).unwrap();
    assert_eq!(recv_text(&mut w), "from-ws");
    let ev = s.events(2);
    assert_eq!(
        ev.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
        ["from-post", "from-ws"]
    );
    // Binary frames are not messages of this API.
    w.send(tungstenite::Message::binary(vec![1u8, 2])).unwrap();
    loop {
        match w.read() {
            Ok(tungstenite::Message::Close(Some(f))) => {
                assert_eq!(u16::from(f.code), 1003);
                break;
            }
            Ok(_) => continue,
            other => panic!("expected close 1003, got {other:?}"),
        }
    }
    assert_eq!(total(&srv, "client_messages"), 2);
}

// ---- CORS --------------------------------------------------------------------------------------

#[test]
fn cors_allow_list_preflight_and_origin_checks() {
    let srv = server(1, |c| {
        c.allow_origin = vec!["http://app.test".into(), "https://b.test".into()];
        c.poll_timeout = 1;
    });
    let a = srv.local_addr();
    let mut c = Client::new(a);
    let r = c.request(
        "OPTIONS",
        "/sub/x",
        "Origin: http://app.test\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: client-id, pragma, x-requested-with\r\n",
        "",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin").as_deref(),
        Some("http://app.test")
    );
    assert_eq!(
        r.header("Access-Control-Allow-Headers").as_deref(),
        Some("client-id, pragma, x-requested-with")
    );
    assert!(
        r.header("Access-Control-Allow-Methods")
            .unwrap()
            .contains("POST")
    );
    // An allowed origin's poll answer carries the headers and exposes the cursor.
    let r = c.get("/sub/x", "Origin: https://b.test\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("Access-Control-Allow-Origin").as_deref(),
        Some("https://b.test")
    );
    assert!(
        r.header("Access-Control-Expose-Headers")
            .unwrap()
            .contains("Edgecomet-Cursor")
    );
    // Another origin: 403 for polls, preflights, publishes and WebSocket upgrades alike.
    let evil = "Origin: http://evil.test\r\n";
    assert_eq!(c.get("/sub/x", evil).status, 403);
    assert_eq!(
        c.request(
            "OPTIONS",
            "/pub/x",
            &format!("{evil}Access-Control-Request-Method: POST\r\n"),
            ""
        )
        .status,
        403
    );
    assert_eq!(c.request("POST", "/pub/x", evil, "m").status, 403);
    let mut up = upgrade_request("/sub/x");
    let at = find(&up, b"\r\n\r\n").unwrap();
    up.splice(at + 2..at + 2, evil.bytes());
    let resp = raw(a, &up);
    assert_eq!(status(&resp), 403);
    // Without Origin (not a browser): served.
    assert_eq!(c.request("POST", "/pub/x", "", "m").status, 200);
    assert_eq!(total(&srv, "origin_refused"), 4);
}

#[test]
fn no_cors_headers_without_an_allow_list() {
    let srv = server(1, |c| c.poll_timeout = 1);
    let mut c = Client::new(srv.local_addr());
    let r = c.get("/sub/x", "Origin: http://any.test\r\n");
    assert_eq!(r.status, 204);
    assert!(r.header("Access-Control-Allow-Origin").is_none());
}

// ---- limits and shutdown -----------------------------------------------------------------------

#[test]
fn slow_sse_consumer_is_cut_and_resumes_from_the_history() {
    let srv = server(1, |c| {
        c.max_queued_bytes = 64 * 1024;
        c.history = 4_000;
    });
    let a = srv.local_addr();
    // A subscriber with a tiny receive buffer that does not read.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&a.into()).unwrap();
    let mut slow: TcpStream = sock.into();
    slow.write_all(b"GET /sub/slow HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    assert!(wait_until(5, || total(&srv, "conns_sse") == 1));
    let mut p = Publisher::new(a);
    let body = "z".repeat(16 * 1024);
    let mut first = 0;
    for i in 0..4000 {
        let id = publish(&mut p, "slow", &body);
        if i == 0 {
            first = id;
        }
        if total(&srv, "slow_consumers") == 1 {
            break;
        }
    }
    assert_eq!(total(&srv, "slow_consumers"), 1);
    assert!(total(&srv, "drops") > 0);
    // It comes back with the id before the first message: everything is still there.
    let mut s = Stream::sse(a, "/sub/slow", &format!("Last-Event-ID: {}\r\n", first - 1));
    let ev = s.events(5);
    assert_eq!(ev[0].0, first);
    assert!(!s.text.contains("gap"));
}

#[test]
fn shutdown_answers_held_polls_and_ends_streams() {
    let srv = server(1, |c| c.poll_timeout = 30);
    let a = srv.local_addr();
    let mut c = Client::new(a);
    c.send("GET", "/sub/sd", "Accept: application/json\r\n", "");
    let mut s = Stream::sse(a, "/sub/sd", "");
    s.until(|t| t.contains("retry:"));
    assert!(wait_until(5, || total(&srv, "conns_poll") == 1));
    let t = Instant::now();
    let down = std::thread::spawn(move || srv.shutdown(Duration::from_secs(5)));
    // The held poll is answered (empty) and the connection closed; the stream ends.
    let r = c.response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Connection").as_deref(), Some("close"));
    drop(c);
    let mut rest = Vec::new();
    s.s.read_to_end(&mut rest).unwrap();
    drop(s);
    assert!(down.join().unwrap(), "workers finished");
    assert!(t.elapsed() < Duration::from_secs(3));
}

// ---- WebSocket with an envelope: ids and resume -------------------------------------------------

#[test]
fn websocket_envelope_carries_ids_and_resumes_from_a_cursor() {
    let srv = server(1, |c| c.history = 3);
    let a = srv.local_addr();
    let mut p = Publisher::new(a);
    let mut live = ws(a, "/sub/e?envelope=1");
    let mut plain = ws(a, "/sub/e");
    let ids: Vec<u64> = (0..6)
        .map(|i| publish(&mut p, "e", &format!("m\"{i}")))
        .collect();
    let (got, gaps) = ws_envelopes(&mut live, 6);
    assert!(gaps.is_empty());
    let want: Vec<(u64, String)> = (0..6).map(|i| (ids[i], format!("m\"{i}"))).collect();
    assert_eq!(got, want);
    // The default stays the raw payload.
    assert_eq!(recv_text(&mut plain), "m\"0");
    // Resume after id 3 (4 and 5 are in the history of 3).
    {
        let path = format!("/sub/e?envelope=1&cursor={}", ids[3]);
        let mut r = ws(a, &path);
        let (got, gaps) = ws_envelopes(&mut r, 2);
        assert!(gaps.is_empty());
        assert_eq!(got, want[4..]);
        publish(&mut p, "e", "next");
        assert_eq!(ws_envelopes(&mut r, 1).0[0].1, "next");
    }
    // After id 0: 1, 2 and 3 are gone (the history of 3 holds 4, 5 and "next"): the gap
    // comes first.
    let mut g = ws(a, &format!("/sub/e?envelope=1&last_event_id={}", ids[0]));
    let (got, gaps) = ws_envelopes(&mut g, 3);
    assert_eq!(gaps, vec![serde_json::json!({"missed": 3})]);
    assert_eq!(got[..2], want[4..]);
    assert_eq!(got[2].1, "next");
    assert_eq!(total(&srv, "gaps_reported"), 1);
    // A cursor without the envelope, a bad envelope or cursor: 400 before the upgrade.
    for path in [
        "/sub/e?cursor=5",
        "/sub/e?envelope=yes",
        "/sub/e?envelope=1&cursor=x",
    ] {
        let resp = raw(a, &upgrade_request(path));
        assert_eq!(status(&resp), 400, "{path}");
    }
    let mut req = upgrade_request("/sub/e");
    let at = find(&req, b"\r\n\r\n").unwrap();
    req.splice(at..at, b"\r\nLast-Event-ID: 5".iter().copied());
    assert_eq!(
        status(&raw(a, &req)),
        400,
        "Last-Event-ID without the envelope"
    );
}

#[test]
fn websocket_resumes_under_load_without_loss_or_duplicates() {
    // Two workers, two publishers; a subscriber reconnects every 40 messages with the id it
    // saw last: it ends with every message exactly once, in id order.
    let srv = server(2, |c| c.history = 1000);
    let a = srv.local_addr();
    let mut first = ws(a, "/sub/r?envelope=1");
    let pubs: Vec<_> = (0..2)
        .map(|k| {
            std::thread::spawn(move || {
                let mut p = Publisher::new(a);
                for i in 0..200 {
                    publish(&mut p, "r", &format!("{k}-{i}"));
                }
            })
        })
        .collect();
    let mut all: Vec<(u64, String)> = ws_envelopes(&mut first, 40).0;
    drop(first);
    while all.len() < 400 {
        let last = all.last().unwrap().0;
        // Each reconnection lands on either worker.
        let mut w = ws(a, &format!("/sub/r?envelope=1&cursor={last}"));
        let (got, gaps) = ws_envelopes(&mut w, 40.min(400 - all.len()));
        assert!(gaps.is_empty(), "{gaps:?}");
        all.extend(got);
    }
    for t in pubs {
        t.join().unwrap();
    }
    assert!(
        all.windows(2).all(|w| w[1].0 == w[0].0 + 1),
        "consecutive ids: nothing missed, nothing twice"
    );
    for k in 0..2 {
        let mine: Vec<&str> = all
            .iter()
            .map(|e| e.1.as_str())
            .filter(|d| d.starts_with(&format!("{k}-")))
            .collect();
        let want: Vec<String> = (0..200).map(|i| format!("{k}-{i}")).collect();
        assert_eq!(mine, want.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
