//! The publish load keeps its schedule against a server slow to answer (requests pipelined up
//! to `--publish-pipeline`), says when it could not (waits for a free pipeline slot, late
//! sends), and stamps each message with its scheduled time, so that latency is measured from
//! when it should have left. Against a scripted HTTP server on a real socket that holds its
//! answers back, and against edgecomet through the `flood` binary.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use flood::msg;
use flood::publish::{PublishPlan, Published, Publisher};

/// One request as the scripted server saw it: when its last byte came (since the server
/// started) and its body.
struct Seen {
    at: Duration,
    body: Vec<u8>,
}

/// A keep-alive HTTP server on a real socket that reads POSTs as they come and answers none of
/// them until `hold` has passed since the first one arrived, then each at once (`200`, empty).
/// Returns its address and a handle that gives every request it read, in order.
fn holding_server(hold: Duration) -> (std::net::SocketAddr, JoinHandle<Vec<Seen>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let mut seen = Vec::new();
        let mut buf = Vec::new();
        let mut first: Option<Instant> = None;
        let mut answered = 0;
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(_) => break,
            }
            while let Some((len, body)) = request(&buf) {
                seen.push(Seen {
                    at: t0.elapsed(),
                    body,
                });
                first.get_or_insert_with(Instant::now);
                buf.drain(..len);
            }
            if first.is_some_and(|f| f.elapsed() >= hold) {
                while answered < seen.len() {
                    if answer(&mut s).is_err() {
                        return seen;
                    }
                    answered += 1;
                }
            }
        }
        seen
    });
    (addr, h)
}

/// A complete request at the start of `buf`: its length and body.
fn request(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let end = flood::http::head_end(buf)? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    (buf.len() >= end + len).then(|| (end + len, buf[end..end + len].to_vec()))
}

fn answer(s: &mut TcpStream) -> std::io::Result<()> {
    let r = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let mut at = 0;
    while at < r.len() {
        match s.write(&r[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn plan(addr: std::net::SocketAddr, rate: f64, pipeline: usize) -> PublishPlan {
    PublishPlan {
        target: addr,
        host: addr.to_string(),
        path_prefix: "/pub/".into(),
        channel: "sched".into(),
        channels: 1,
        rate,
        size: 64,
        json: false,
        connections: 1,
        pipeline,
        first_seq: 0,
        tls: None,
    }
}

/// Publishes at `rate` for `secs` against a server that holds its answers for `hold`.
fn run(rate: f64, pipeline: usize, hold: Duration, secs: f64) -> (Published, Vec<Seen>) {
    let (addr, srv) = holding_server(hold);
    let p = Publisher::start(plan(addr, rate, pipeline));
    std::thread::sleep(Duration::from_secs_f64(secs));
    let published = p.finish();
    // The publisher closed its connection: the server's read ends.
    (published, srv.join().unwrap())
}

#[test]
fn pipelined_publishes_leave_on_schedule_while_the_server_holds_its_answers() {
    // 100/s, no answer for the first 150 ms: 15 requests are due meanwhile, fewer than the 32
    // the pipeline allows, so none waits.
    let (published, seen) = run(100.0, 32, Duration::from_millis(150), 1.0);
    let s = &published.schedule;
    assert!(seen.len() >= 90, "{} requests in 1 s at 100/s", seen.len());
    assert_eq!(s.sent, seen.len() as u64, "every request sent was read");
    assert_eq!(
        published.total(),
        seen.len() as u64,
        "every one answered 200"
    );
    assert_eq!(published.errors, 0);
    assert_eq!(s.waited_for_pipeline, 0);
    // The requests due while nothing was answered reached the server on time: the 10th (due at
    // 90 ms after the first) before the first answer at 150 ms. One at a time, it would wait.
    let first = seen[0].at;
    let tenth = seen[9].at - first;
    assert!(
        tenth < Duration::from_millis(140),
        "the 10th request came {tenth:?} after the first, before any answer"
    );
    // The payloads carry the scheduled times: exactly 10 ms apart, whatever the sends' jitter.
    let stamps: Vec<u64> = seen
        .iter()
        .map(|r| msg::parse(&r.body).unwrap().1)
        .collect();
    for (i, w) in stamps.windows(2).enumerate() {
        let d = w[1] - w[0];
        assert!(
            d.abs_diff(10_000_000) <= 1,
            "payloads {i} and {}: {d} ns apart, not the 10 ms of the schedule",
            i + 1
        );
    }
    // Sequence numbers in order, one channel.
    let seqs: Vec<u32> = seen
        .iter()
        .map(|r| msg::parse(&r.body).unwrap().0)
        .collect();
    assert!(seqs.iter().enumerate().all(|(i, &q)| q == i as u32));
}

#[test]
fn a_full_pipeline_is_counted_and_the_lag_is_reported() {
    // 200/s, at most 2 unanswered, no answer for 200 ms: from the 3rd publish on the schedule
    // slips until the answers come (the 3rd is due at 10 ms and leaves at about 200 ms).
    let (published, seen) = run(200.0, 2, Duration::from_millis(200), 0.8);
    let s = &published.schedule;
    assert_eq!(published.errors, 0);
    assert_eq!(published.total(), seen.len() as u64);
    assert!(
        s.waited_for_pipeline >= 1,
        "no publish waited for the pipeline"
    );
    assert!(s.late >= 1, "no late publish counted");
    let max = s.max_lag_us();
    assert!(
        (150_000..1_000_000).contains(&max),
        "max lag {max} µs for a 200 ms hold"
    );
    // The late ones still carry their scheduled times (5 ms apart), not when they left.
    let stamps: Vec<u64> = seen
        .iter()
        .map(|r| msg::parse(&r.body).unwrap().1)
        .collect();
    assert!(
        stamps
            .windows(2)
            .all(|w| (w[1] - w[0]).abs_diff(5_000_000) <= 1)
    );
    // And the requests held back left together once the answers came: the 3rd did not reach
    // the server before the first answer.
    assert!(seen[2].at - seen[0].at >= Duration::from_millis(150));
}

#[test]
fn the_report_gives_the_schedule_and_nothing_is_lost() {
    let srv = server();
    let r = flood(
        &srv,
        "sched",
        &[
            "--conns",
            "200",
            "--rate",
            "max",
            "--duration",
            "2",
            "--publish-rate",
            "100",
            "--size",
            "64",
            "--publish-pipeline",
            "8",
        ],
    );
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["params"]["publish_pipeline"], 8);
    let ps = &r["publish_schedule"];
    let sent = ps["sent"].as_u64().unwrap();
    assert_eq!(sent, r["published"].as_u64().unwrap(), "{ps:#}");
    assert!(
        (150..=230).contains(&sent),
        "{sent} publishes in 2 s at 100/s"
    );
    assert_eq!(ps["latency_from"], "scheduled send time");
    assert!(ps["lag_us"]["max"].as_u64().unwrap() >= ps["lag_us"]["p50"].as_u64().unwrap());
    assert_eq!(ps["kept"], ps["late"] == 0);
    assert_eq!(r["deliveries"].as_u64().unwrap(), sent * 200);
}
