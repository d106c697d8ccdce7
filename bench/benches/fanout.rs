//! Fan-out of one published message to 10,000 WebSocket subscribers in one worker, through the
//! real code path: an in-process server with one worker, real loopback sockets, a real publish
//! over HTTP. Throughput is in deliveries, so criterion's time per element is the cost per
//! subscriber (dominated by the `write(2)`, which on loopback also runs the receiver's TCP work).
//!
//! The 10,000 client ends live in a child process (this same executable, re-run with
//! `EDGECOMET_FANOUT_CHILD=ADDR`) that drains them, because one process may hold only 20,000
//! descriptors here. An iteration is timed from the publish request until the worker has handed
//! the frame to all 10,000 sockets (its `messages_out` counter).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use edgecomet::{Config, Server};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SUBSCRIBERS: usize = 10_000;
const CHILD_ENV: &str = "EDGECOMET_FANOUT_CHILD";

/// Child: subscribe `SUBSCRIBERS` sockets to `bench` at `addr`, print "ready", drain until the
/// parent closes our stdin.
fn child(addr: SocketAddr) {
    let req = flood::ws::upgrade_request("/sub/bench", "b");
    let poll = Poll::new().unwrap();
    let mut socks = Vec::with_capacity(SUBSCRIBERS);
    for i in 0..SUBSCRIBERS {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101"));
        s.set_nonblocking(true).unwrap();
        let mut m = MioStream::from_std(s);
        poll.registry()
            .register(&mut m, Token(i), Interest::READABLE)
            .unwrap();
        socks.push(m);
    }
    println!("ready");
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    let mut poll = poll;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 65536];
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        for ev in events.iter() {
            let s = &mut socks[ev.token().0];
            while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

fn fanout(c: &mut Criterion) {
    let mut cfg = Config::defaults();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.workers = 1;
    cfg.ws_ping_interval = 0;
    let server = Server::start(cfg).unwrap();
    let addr = server.local_addr();
    let mut kid = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, addr.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(kid.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "child failed to subscribe");
    let stats = server.worker_stats()[0].clone();
    let mut publisher = TcpStream::connect(addr).unwrap();
    publisher.set_nodelay(true).unwrap();
    let payload = [b'x'; 64];
    let req = flood::http::request_bytes("POST", "b", "/pub/bench", &payload);
    let mut resp = [0u8; 4096];

    let mut g = c.benchmark_group("fanout");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.sample_size(30);
    g.bench_function("10000_subscribers_one_worker_64B", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let before = stats.messages_out.load(Ordering::Relaxed);
                let target = before + SUBSCRIBERS as u64;
                let t0 = Instant::now();
                publisher.write_all(&req).unwrap();
                // Sleep-poll, not spin: this machine has 2 cores and the worker and the draining
                // child need both.
                while stats.messages_out.load(Ordering::Relaxed) < target {
                    std::thread::sleep(Duration::from_micros(20));
                }
                total += t0.elapsed();
                // Collect the 200 so the connection stays in step.
                let n = publisher.read(&mut resp).unwrap();
                assert!(resp[..n].starts_with(b"HTTP/1.1 200"));
            }
            total
        })
    });
    g.finish();
    drop(kid.stdin.take());
    let _ = kid.wait();
    server.shutdown(Duration::from_secs(5));
}

fn main() {
    if let Ok(addr) = std::env::var(CHILD_ENV) {
        child(addr.parse().unwrap());
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    fanout(&mut c);
    c.final_summary();
}
