//! Micro-benchmarks of the sans-IO wire code: HTTP head parse, the WebSocket upgrade (parse,
//! check, accept key and the 101 answer: the accept path's work per connection), frame decode +
//! unmask, frame encode, permessage-deflate (a message compressed once for its subscribers, a
//! client message inflated). Results and the command that produced them are in bench/RESULTS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use edgecomet::proto::http::{HeadLimits, HttpDate, Parse, parse_head};
use edgecomet::proto::ws::deflate;
use edgecomet::proto::ws::frame::{self, OP_BINARY, OP_TEXT, client_frame};
use edgecomet::proto::ws::handshake;
use edgecomet::proto::ws::reader::{Event, WsReader};

/// A browser's WebSocket upgrade (Chromium's header set).
const UPGRADE: &[u8] = b"GET /sub/news HTTP/1.1\r\nHost: edge.example.com\r\n\
Connection: Upgrade\r\nPragma: no-cache\r\nCache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36\r\n\
Upgrade: websocket\r\nOrigin: https://app.example.com\r\nSec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

const PUBLISH: &[u8] =
    b"POST /pub/news HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Length: 64\r\n\r\n";

fn http_head(c: &mut Criterion) {
    let limits = HeadLimits {
        max_head_bytes: 8192,
        max_headers: 64,
    };
    let mut g = c.benchmark_group("http_head_parse");
    for (name, req) in [("browser_upgrade", UPGRADE), ("publish", PUBLISH)] {
        g.throughput(Throughput::Bytes(req.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), req, |b, req| {
            b.iter(|| match parse_head(black_box(req), 0, limits) {
                Parse::Complete(h) => h.head_len,
                _ => unreachable!(),
            })
        });
    }
    g.finish();
}

/// What the worker does per WebSocket connection between accept and the first write: parse the
/// upgrade request, check it, and make the `101` answer (SHA-1 of the key, base64, the head).
fn upgrade(c: &mut Criterion) {
    let limits = HeadLimits {
        max_head_bytes: 8192,
        max_headers: 64,
    };
    let date = HttpDate::from_unix(1_800_000_000);
    c.bench_function("ws_upgrade_accept/browser_upgrade", |b| {
        b.iter(|| match parse_head(black_box(UPGRADE), 0, limits) {
            Parse::Complete(h) => handshake::accept(&h, &date, false)
                .expect("a valid upgrade")
                .response
                .len(),
            _ => unreachable!(),
        })
    });
    // The same with --deflate on: Chromium's offer parsed and agreed, the line added.
    c.bench_function("ws_upgrade_accept/browser_upgrade_deflate", |b| {
        b.iter(|| match parse_head(black_box(UPGRADE), 0, limits) {
            Parse::Complete(h) => handshake::accept(&h, &date, true)
                .expect("a valid upgrade")
                .response
                .len(),
            _ => unreachable!(),
        })
    });
}

/// A JSON feed message of about `n` bytes (a price ticker's array of quotes).
fn json_message(n: usize) -> Vec<u8> {
    let mut v = b"{\"type\":\"quotes\",\"items\":[".to_vec();
    let mut i = 0u64;
    while v.len() + 80 < n {
        let px = 10_000 + (i * 7919) % 5000;
        let line = format!(
            "{{\"sym\":\"S{:03}\",\"bid\":{}.{:02},\"ask\":{}.{:02},\"ts\":{}}},",
            i % 500,
            px / 100,
            px % 100,
            px / 100 + 1,
            (px + 3) % 100,
            1_800_000_000_000u64 + i * 13
        );
        v.extend_from_slice(line.as_bytes());
        i += 1;
    }
    v.pop();
    v.extend_from_slice(b"]}");
    v
}

/// permessage-deflate: compressing one published message into its frame (done once per
/// message, whatever the number of subscribers), and inflating a client's message.
fn deflate_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_deflate_compress");
    for size in [256usize, 1024, 16 * 1024] {
        let payload = json_message(size);
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, p| {
            b.iter(|| deflate::compress_frame(OP_TEXT, black_box(p)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("ws_deflate_inflate");
    for size in [256usize, 1024, 16 * 1024] {
        let payload = json_message(size);
        let f = deflate::compress_frame(OP_TEXT, &payload).expect("JSON shrinks");
        let body = f[if f[1] & 0x7F == 126 { 4 } else { 2 }..].to_vec();
        g.throughput(Throughput::Bytes(payload.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, z| {
            let mut out = Vec::with_capacity(size);
            b.iter(|| {
                out.clear();
                deflate::inflate(black_box(z), 1 << 20, &mut out).unwrap();
                out.len()
            })
        });
    }
    g.finish();
}

fn frame_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_frame_decode_unmask");
    for size in [64usize, 1024, 16 * 1024, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let wire = client_frame(true, OP_TEXT, &payload, [0x37, 0xFA, 0x21, 0x3D]);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &wire, |b, wire| {
            let mut buf = wire.clone();
            b.iter(|| {
                // Unmasking is in place: restore the masked bytes each round (a memcpy, counted).
                buf.copy_from_slice(wire);
                let mut r = WsReader::default();
                let mut n = 0usize;
                r.feed(&mut buf, u32::MAX, false, |e| {
                    if let Event::Data { chunk, .. } = e {
                        n += chunk.len();
                    }
                })
                .unwrap();
                black_box(n)
            })
        });
    }
    g.finish();
}

fn frame_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws_frame_encode");
    for size in [64usize, 1024, 16 * 1024] {
        let payload = vec![b'x'; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &payload, |b, p| {
            b.iter(|| frame::frame(OP_BINARY, black_box(p)))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    http_head,
    upgrade,
    frame_decode,
    frame_encode,
    deflate_bench
);
criterion_main!(benches);
