//! `--broker redis://`: servers that share their channels through a real Redis (Debian's
//! `redis-server`, started by each test on a free loopback port and stopped after it).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bayeux::{Conn, deliveries, hub};
use common::redis::{Redis, free_port};
use common::*;
use edgecomet::Server;

fn with_broker(redis: &Redis) -> Server {
    let url = redis.url();
    server(2, move |c| {
        c.broker = Some(url);
        c.broker_linger_ms = 200;
    })
}

/// Waits until `server` has `n` subscriptions on Redis and both connections up.
fn subscribed(server: &Server, n: u64) -> bool {
    wait_until(10, || {
        hub(server, "broker_connected") == 1 && hub(server, "broker_subscriptions") == n
    })
}

fn no_message_within(ws: &mut Ws, d: Duration) {
    ws.get_ref().set_read_timeout(Some(d)).unwrap();
    match ws.read() {
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("expected nothing, got {other:?}"),
    }
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
}

#[test]
fn a_publish_on_either_server_reaches_every_subscriber_once() {
    let redis = Redis::start();
    let a = with_broker(&redis);
    let b = with_broker(&redis);
    let mut subs_a: Vec<Ws> = (0..3).map(|_| ws(a.local_addr(), "/sub/news")).collect();
    let mut subs_b: Vec<Ws> = (0..3).map(|_| ws(b.local_addr(), "/sub/news")).collect();
    assert!(subscribed(&a, 1) && subscribed(&b, 1));
    for (i, via) in [a.local_addr(), b.local_addr()].into_iter().enumerate() {
        let (st, body) = Publisher::new(via).publish("news", format!("m{i}").as_bytes());
        assert_eq!(st, 202, "{body}");
        assert!(body.contains("\"broker\":true"), "{body}");
        for s in subs_a.iter_mut().chain(subs_b.iter_mut()) {
            assert_eq!(recv_text(s), format!("m{i}"));
        }
    }
    // Exactly once: nothing more arrives.
    for s in subs_a.iter_mut().chain(subs_b.iter_mut()) {
        no_message_within(s, Duration::from_millis(300));
    }
    assert_eq!(hub(&a, "broker_published"), 1);
    assert_eq!(hub(&b, "broker_published"), 1);
    assert_eq!(hub(&a, "broker_received"), 2);
    assert_eq!(hub(&b, "broker_received"), 2);
}

#[test]
fn subscriptions_follow_local_interest_with_a_linger() {
    let redis = Redis::start();
    let a = with_broker(&redis);
    assert!(subscribed(&a, 0));
    let s1 = ws(a.local_addr(), "/sub/x");
    let s2 = ws(a.local_addr(), "/sub/y");
    assert!(subscribed(&a, 2));
    drop(s1);
    // 200 ms of linger, then unsubscribed.
    assert!(subscribed(&a, 1));
    drop(s2);
    assert!(subscribed(&a, 0));
    // A channel nobody here subscribes to is not received.
    let (st, _) = Publisher::new(a.local_addr()).publish("x", b"nobody");
    assert_eq!(st, 202);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(hub(&a, "broker_received"), 0);
}

#[test]
fn bayeux_wildcards_across_servers() {
    let redis = Redis::start();
    let a = with_broker(&redis);
    let b = with_broker(&redis);
    // A Bayeux client on `a` subscribed to /sport/* and a WebSocket subscriber of sport/tennis
    // on `b`; a publish on `b` reaches both, once.
    let mut bay = Conn::new(a.local_addr());
    let id = bay.handshake();
    let r = bay.subscribe(&id, serde_json::json!("/sport/*"));
    assert_eq!(r["successful"], true, "{r}");
    let mut native = ws(b.local_addr(), "/sub/sport/tennis");
    assert!(subscribed(&a, 1) && subscribed(&b, 1));
    let (st, _) = Publisher::new(b.local_addr()).publish("sport/tennis", b"{\"set\":1}");
    assert_eq!(st, 202);
    assert_eq!(recv_text(&mut native), "{\"set\":1}");
    bay.connect(&id);
    let got = deliveries(&bay.recv().1.as_array().unwrap().clone());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["channel"], "/sport/tennis");
    assert_eq!(got[0]["data"]["set"], 1);
    // Not under the wildcard: not delivered to the Bayeux client (and `a` is not subscribed).
    let (st, _) = Publisher::new(b.local_addr()).publish("news", b"1");
    assert_eq!(st, 202);
    let (st, _) = Publisher::new(b.local_addr()).publish("sport/golf", b"2");
    assert_eq!(st, 202);
    bay.connect(&id);
    let got = deliveries(&bay.recv().1.as_array().unwrap().clone());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["channel"], "/sport/golf");
}

#[test]
fn a_redis_restart_is_recovered_from() {
    let port = free_port();
    let redis = Redis::start_on(port);
    let a = with_broker(&redis);
    let b = with_broker(&redis);
    let mut sa = ws(a.local_addr(), "/sub/r");
    let mut sb = ws(b.local_addr(), "/sub/r");
    assert!(subscribed(&a, 1) && subscribed(&b, 1));
    drop(redis);
    // Broker gone: clients stay connected, publishes are refused at once with a clear error.
    assert!(wait_until(10, || hub(&a, "broker_connected") == 0));
    let (st, body) = Publisher::new(a.local_addr()).publish("r", b"lost");
    assert_eq!(st, 503, "{body}");
    assert!(body.contains("broker"), "{body}");
    assert!(hub(&a, "broker_publish_refused") >= 1);
    // Back on the same port: both reconnect and subscribe again.
    let _redis = Redis::start_on(port);
    let started = Instant::now();
    assert!(subscribed(&a, 1) && subscribed(&b, 1), "no resubscribe");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(hub(&a, "broker_reconnects") >= 1);
    let (st, _) = Publisher::new(a.local_addr()).publish("r", b"back");
    assert_eq!(st, 202);
    assert_eq!(recv_text(&mut sa), "back");
    assert_eq!(recv_text(&mut sb), "back");
}

#[test]
fn a_bad_broker_url_is_refused_at_start() {
    let mut cfg = edgecomet::Config::defaults();
    cfg.listen = "127.0.0.1:0".parse::<SocketAddr>().unwrap();
    cfg.broker = Some("http://127.0.0.1:1".into());
    let err = Server::start(cfg).err().expect("refused");
    assert!(err.to_string().contains("redis://"), "{err}");
}

/// An edgecomet process (the release binary under test); killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn process(listen: &str, redis: &Redis) -> Process {
    Process(
        Command::new(env!("CARGO_BIN_EXE_edgecomet"))
            .args([
                "--listen",
                listen,
                "--workers",
                "1",
                "--broker",
                &redis.url(),
            ])
            .args([
                "--broker-linger-ms",
                "200",
                "--ws-ping-interval",
                "0",
                "--share-port",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("edgecomet binary"),
    )
}

/// `/stats` of whichever process the kernel hands this connection to.
fn stats_via(addr: SocketAddr) -> serde_json::Value {
    let (st, body) = Publisher::new(addr).get("/stats");
    assert_eq!(st, 200);
    serde_json::from_str(&body).unwrap()
}

#[test]
fn two_processes_on_one_port_share_subscribers_and_publishes() {
    let redis = Redis::start();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let addr: SocketAddr = listen.parse().unwrap();
    let _p1 = process(&listen, &redis);
    assert!(wait_until(10, || TcpStream::connect(addr).is_ok()));
    let _p2 = process(&listen, &redis);
    // Both processes listen once each answers /stats with its pid.
    let mut pids = std::collections::HashSet::new();
    assert!(
        wait_until(20, || {
            pids.insert(stats_via(addr)["pid"].as_u64().unwrap());
            pids.len() == 2
        }),
        "the kernel never handed a connection to the second process"
    );
    // 32 subscribers over the shared port: the kernel spreads them (all on one process has
    // probability 2^-31).
    let mut subs: Vec<Ws> = (0..32).map(|_| ws(addr, "/sub/shared")).collect();
    let mut per_pid = std::collections::HashMap::new();
    assert!(
        wait_until(20, || {
            let s = stats_via(addr);
            per_pid.insert(
                s["pid"].as_u64().unwrap(),
                (
                    s["total"]["conns_ws_sub"].as_u64().unwrap(),
                    s["hub"]["broker_subscriptions"].as_u64().unwrap(),
                ),
            );
            per_pid.len() == 2
                && per_pid.values().map(|v| v.0).sum::<u64>() == 32
                && per_pid.values().all(|v| v.0 > 0 && v.1 == 1)
        }),
        "subscribers per process (ws, subscriptions): {per_pid:?}"
    );
    // Ten publishes through the shared port, each on a new connection (so each lands on
    // either process): every subscriber gets each exactly once, in publish order (a publish is
    // answered once Redis has it, so the next one, through whichever process, comes after).
    for i in 0..10 {
        let (st, body) = Publisher::new(addr).publish("shared", format!("m{i}").as_bytes());
        assert_eq!(st, 202, "{body}");
        assert!(body.contains("\"broker_receivers\":"), "{body}");
    }
    let want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for s in subs.iter_mut() {
        let got: Vec<String> = (0..10).map(|_| recv_text(s)).collect();
        assert_eq!(got, want);
    }
    for s in subs.iter_mut() {
        no_message_within(s, Duration::from_millis(50));
    }
}

#[test]
fn the_launcher_runs_processes_on_one_port_and_sums_their_stats() {
    let redis = Redis::start();
    // Port 0: the launcher picks one and every process binds it.
    let mut launcher = Process(
        Command::new(env!("CARGO_BIN_EXE_edgecomet"))
            .args([
                "--processes",
                "3",
                "--workers",
                "1",
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--broker", &redis.url(), "--broker-linger-ms", "200"])
            .args(["--ws-ping-interval", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("edgecomet binary"),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let err = launcher.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(err)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let addr: SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no launcher line; log: {log:?}"));
        if line.contains("3 processes listening on") {
            break line
                .split(" on ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap();
        }
        log.push(line);
    };
    // Every process's /stats carries the sums over all three (from the launcher's first round,
    // a moment after it says they listen).
    let mut s = serde_json::Value::Null;
    assert!(
        wait_until(10, || {
            s = stats_via(addr);
            s["processes"].is_object()
        }),
        "no sums in /stats: {s}"
    );
    let pids: Vec<u64> = s["processes"]["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(s["processes"]["count"], 3, "{s}");
    assert_eq!(pids.len(), 3, "{s}");
    assert!(pids.contains(&s["pid"].as_u64().unwrap()));
    let mut subs: Vec<Ws> = (0..30).map(|_| ws(addr, "/sub/launched")).collect();
    let mut last = serde_json::Value::Null;
    assert!(
        wait_until(20, || {
            last = stats_via(addr);
            last["processes"]["total"]["conns_ws_sub"] == 30
        }),
        "sums never showed the 30 subscribers: {last}"
    );
    // Each process's open connections (the subscribers, and perhaps a /stats request).
    let open: u64 = last["processes"]["open_per_process"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!((30..=33).contains(&open), "{last}");
    for i in 0..5 {
        let (st, body) = Publisher::new(addr).publish("launched", format!("m{i}").as_bytes());
        assert_eq!(st, 202, "{body}");
    }
    let want: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    for s in subs.iter_mut() {
        let mut got: Vec<String> = (0..5).map(|_| recv_text(s)).collect();
        got.sort();
        assert_eq!(got, want);
        no_message_within(s, Duration::from_millis(20));
    }
    // SIGTERM to the launcher: every process drains and exits, and so does the launcher, 0.
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(launcher.0.id() as i32, libc::SIGTERM);
    }
    let until = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = launcher.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < until, "launcher still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    for p in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "pid {p} left"
        );
    }
    // The subscribers were told (1001 going away), not left hanging.
    for s in subs.iter_mut() {
        match s.read() {
            Ok(tungstenite::Message::Close(Some(f))) => assert_eq!(u16::from(f.code), 1001),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
}

#[test]
fn the_launcher_needs_a_broker() {
    let out = Command::new(env!("CARGO_BIN_EXE_edgecomet"))
        .args(["--processes", "2", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--processes 2 needs --broker"), "{err}");
}

#[test]
fn pipelined_publishes_are_answered_in_order_once_redis_has_them() {
    let redis = Redis::start();
    let srv = with_broker(&redis);
    let mut sub = ws(srv.local_addr(), "/sub/pipe");
    assert!(wait_until(10, || subscribed(&srv, 1)));
    // Three publishes and a /stats in one write: each publish waits for Redis, the requests
    // behind it wait with it, and the answers leave in request order.
    let mut req = Vec::new();
    for i in 0..3 {
        req.extend_from_slice(
            format!("POST /pub/pipe HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\np{i}")
                .as_bytes(),
        );
    }
    req.extend_from_slice(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n");
    let mut c = Publisher::new(srv.local_addr());
    c.send_raw(&req);
    for _ in 0..3 {
        let (st, body) = c.response();
        assert_eq!(st, 202, "{body}");
        assert!(body.contains("\"broker_receivers\":1"), "{body}");
    }
    let (st, body) = c.response();
    assert_eq!(st, 200);
    assert!(body.starts_with("{\"pid\""), "{body}");
    for i in 0..3 {
        assert_eq!(recv_text(&mut sub), format!("p{i}"));
    }
    // The connection goes on as usual.
    assert_eq!(c.publish("pipe", b"p3").0, 202);
    assert_eq!(recv_text(&mut sub), "p3");
}

#[test]
fn a_publish_redis_does_not_answer_in_time_gets_504() {
    let redis = Redis::start();
    let url = redis.url();
    let srv = server(1, move |c| {
        c.broker = Some(url);
        c.broker_ack_timeout = 1;
    });
    let _sub = ws(srv.local_addr(), "/sub/paused");
    assert!(wait_until(10, || subscribed(&srv, 1)));
    // Redis stops answering anyone for 4 s.
    let mut r = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    r.write_all(b"*4\r\n$6\r\nCLIENT\r\n$5\r\nPAUSE\r\n$4\r\n4000\r\n$3\r\nALL\r\n")
        .unwrap();
    let mut ok = [0u8; 5];
    r.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    let t = Instant::now();
    let (st, body) = Publisher::new(srv.local_addr()).publish("paused", b"x");
    assert_eq!(st, 504, "{body}");
    assert!(
        body.contains("may or may not have been published"),
        "{body}"
    );
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let stats: serde_json::Value = serde_json::from_str(&srv.stats_json()).unwrap();
    assert_eq!(stats["total"]["broker_ack_timeouts"], 1);
    // Once Redis answers again, publishes are answered 202 again.
    assert!(wait_until(20, || Publisher::new(srv.local_addr())
        .publish("paused", b"y")
        .0
        == 202));
}

#[test]
fn a_message_has_the_same_id_everywhere_so_a_client_resumes_on_another_server() {
    // Ids come from Redis: a cursor from one server is good on the other (a client whose
    // process died reconnects elsewhere and resumes exactly).
    let redis = Redis::start();
    let a = with_broker(&redis);
    let b = with_broker(&redis);
    let mut on_a = ws(a.local_addr(), "/sub/ids?envelope=1");
    let mut on_b = ws(b.local_addr(), "/sub/ids?envelope=1");
    assert!(subscribed(&a, 1) && subscribed(&b, 1));
    for i in 0..10 {
        let via = if i % 2 == 0 {
            a.local_addr()
        } else {
            b.local_addr()
        };
        let (st, body) = Publisher::new(via).publish("ids", format!("m{i}").as_bytes());
        assert_eq!(st, 202, "{body}");
    }
    let (got_a, gaps_a) = ws_envelopes(&mut on_a, 10);
    let (got_b, gaps_b) = ws_envelopes(&mut on_b, 10);
    assert!(gaps_a.is_empty() && gaps_b.is_empty());
    assert_eq!(got_a, got_b, "the same ids in both processes");
    assert!(got_a.windows(2).all(|w| w[1].0 == w[0].0 + 1), "{got_a:?}");
    // Saw 4 messages on A; resumes on B from there.
    let mut resumed = ws(
        b.local_addr(),
        &format!("/sub/ids?envelope=1&cursor={}", got_a[3].0),
    );
    let (rest, gaps) = ws_envelopes(&mut resumed, 6);
    assert!(gaps.is_empty(), "{gaps:?}");
    assert_eq!(rest, got_a[4..]);
    assert_eq!(hub(&b, "stale_ids"), 0);
    assert_eq!(hub(&b, "missed_ids"), 0);
}

/// A private push address made on one server is reached from another, through Redis: the
/// address is a channel like any other there.
#[test]
fn a_push_address_works_across_servers() {
    let redis = Redis::start();
    let a = with_broker(&redis);
    let b = with_broker(&redis);
    let mut p = Publisher::new(a.local_addr());
    p.send_raw(b"POST /push/new HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    let (st, body) = p.response();
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut sub = ws(b.local_addr(), v["subscribe"].as_str().unwrap());
    assert!(subscribed(&b, 1));
    let send = v["send"].as_str().unwrap();
    p.send_raw(
        format!("POST {send} HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nping").as_bytes(),
    );
    let (st, body) = p.response();
    assert_eq!(st, 202, "{body}");
    assert_eq!(recv_text(&mut sub), "ping");
    let (st, body) = p.get(&format!("{send}?message=pong&callback=cb"));
    assert_eq!(st, 200);
    assert_eq!(body, "cb({\"ok\":true});\n");
    assert_eq!(recv_text(&mut sub), "pong");
    no_message_within(&mut sub, Duration::from_millis(300));
}

/// A Socket.IO client over WebSocket on `addr`, connected to `/` with `channels`.
fn socketio_client(addr: SocketAddr, channels: &str) -> Ws {
    let mut w = ws(addr, "/socket.io/?EIO=4&transport=websocket");
    assert!(recv_text(&mut w).starts_with("0{"));
    w.send(tungstenite::Message::Text(
        format!("40{{\"channels\":{channels}}}").into(),
    ))
    .unwrap();
    assert!(recv_text(&mut w).starts_with("40{"));
    w
}

#[test]
fn socketio_clients_across_servers() {
    let redis = Redis::start();
    let url = redis.url();
    let with = |url: String| {
        server(2, move |c| {
            c.broker = Some(url);
            c.broker_linger_ms = 200;
            c.socketio_recovery = Some(0);
        })
    };
    let a = with(url.clone());
    let b = with(url);
    // A pattern on `a` (a Redis pattern subscription), an exact channel on `b`.
    let mut on_a = socketio_client(a.local_addr(), "[\"room/*\",\"news\"]");
    let mut on_b = socketio_client(b.local_addr(), "[\"news\"]");
    assert!(subscribed(&a, 2) && subscribed(&b, 1));
    let mut p = Publisher::new(b.local_addr());
    assert_eq!(p.publish("room/1", b"{\"r\":1}").0, 202);
    assert_eq!(p.publish("news", b"\"n\"").0, 202);
    let mut got = vec![recv_text(&mut on_a), recv_text(&mut on_a)];
    got.sort();
    assert_eq!(got, ["42[\"message\",\"n\"]", "42[\"message\",{\"r\":1}]"]);
    assert_eq!(recv_text(&mut on_b), "42[\"message\",\"n\"]");
    // Once: nothing more.
    no_message_within(&mut on_a, Duration::from_millis(300));
    no_message_within(&mut on_b, Duration::from_millis(300));
}
