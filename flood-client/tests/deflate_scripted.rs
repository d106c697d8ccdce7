//! `flood --deflate` against a scripted WebSocket server in this test: the offer flood sends,
//! the answers it accepts (edgecomet's, a server keeping its context, a decline) and those it
//! fails (an extension not offered, one without `--deflate`), compressed messages single and
//! fragmented with a ping between, uncompressed ones among them, RSV1 that nobody agreed to and
//! data that does not inflate. The server sends its messages right after the 101, on its own:
//! no publishing, so every case happens on every connection, deterministically.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, FlushCompress};
use serde_json::Value;

const CONNS: u64 = 4;
const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; \
                     client_max_window_bits\r\n";

/// A server frame: first byte `b0` (FIN, RSV, opcode), `p` as the payload.
fn frame(b0: u8, p: &[u8]) -> Vec<u8> {
    let mut f = vec![b0];
    match p.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xFFFF => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(p);
    f
}

/// `data` as a permessage-deflate sender makes it (sync flush, the 00 00 ff ff taken off).
fn deflate(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 64);
    let start = c.total_in();
    loop {
        let at = (c.total_in() - start) as usize;
        c.compress_vec(&data[at..], &mut out, FlushCompress::Sync)
            .unwrap();
        if (c.total_in() - start) as usize == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
    out.truncate(out.len() - 4);
    out
}

fn fresh() -> Compress {
    Compress::new(Compression::new(6), false)
}

fn payload(seq: u32, size: usize) -> Vec<u8> {
    flood::msg::encode(seq, flood::msg::now_ns(), size, false)
}

/// Serves every connection: reads the upgrade head (logged), answers 101 with `answer` as the
/// extension header (none when empty) followed at once by the frames `frames()` makes, then
/// reads until flood goes away.
fn server(answer: &'static str, frames: fn() -> Vec<u8>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = heads.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let log = log.clone();
            std::thread::spawn(move || serve(s, answer, frames, log));
        }
    });
    (addr, heads)
}

fn serve(
    mut s: TcpStream,
    answer: &str,
    frames: fn() -> Vec<u8>,
    log: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut b = [0u8; 4096];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b[..1])?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&b[..n]);
    }
    log.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).into_owned());
    let ext = if answer.is_empty() {
        String::new()
    } else {
        format!("Sec-WebSocket-Extensions: {answer}\r\n")
    };
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{ext}\r\n"
    )
    .into_bytes();
    out.extend_from_slice(&frames());
    s.write_all(&out)?;
    while s.read(&mut b)? > 0 {}
    Ok(())
}

fn run_flood(addr: SocketAddr, tag: &str, deflate: bool) -> Value {
    let dir: PathBuf = std::env::temp_dir().join(format!("flood-df-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("report.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flood"));
    cmd.args(["--url", &format!("ws://{addr}/sub/fake")])
        .args([
            "--conns",
            &CONNS.to_string(),
            "--rate",
            "max",
            "--procs",
            "1",
        ])
        .args([
            "--duration",
            "1",
            "--server-pid",
            &std::process::id().to_string(),
        ])
        .arg("--json")
        .arg(&out);
    if deflate {
        cmd.arg("--deflate");
    }
    let o = cmd.output().unwrap();
    print!("{}", String::from_utf8_lossy(&o.stdout));
    eprint!("{}", String::from_utf8_lossy(&o.stderr));
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    r
}

/// Sizes of [`edgecomet_like`]'s messages.
const SIZES: [usize; 5] = [64, 40, 5_000, 48, 200_000];

/// seq 0 compressed; 1 uncompressed; 2 compressed over two fragments with a ping between; 3
/// uncompressed over two fragments; 4 compressed, 200 KB inflated (a 64-bit length if it came
/// uncompressed). Each compressed on its own, as with `server_no_context_takeover`.
fn edgecomet_like() -> Vec<u8> {
    let p: Vec<Vec<u8>> = (0..5).map(|i| payload(i, SIZES[i as usize])).collect();
    let mut f = frame(0xC1, &deflate(&mut fresh(), &p[0]));
    f.extend(frame(0x81, &p[1]));
    let z = deflate(&mut fresh(), &p[2]);
    let (a, b) = z.split_at(z.len() / 2);
    f.extend(frame(0x41, a));
    f.extend(frame(0x89, b"between"));
    f.extend(frame(0x80, b));
    f.extend(frame(0x01, &p[3][..10]));
    f.extend(frame(0x80, &p[3][10..]));
    f.extend(frame(0xC1, &deflate(&mut fresh(), &p[4])));
    f
}

#[test]
fn edgecomet_answer_compressed_and_plain_messages_all_delivered() {
    let (addr, heads) = server(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        edgecomet_like,
    );
    let r = run_flood(addr, "edgecomet", true);
    for h in heads.lock().unwrap().iter() {
        assert!(h.contains(OFFER), "{h}");
    }
    assert_eq!(r["conns_established"], CONNS, "{r:#}");
    assert_eq!(r["deliveries"], CONNS * 5, "{r:#}");
    assert_eq!(r["foreign_frames"], 0);
    assert_eq!(r["duplicated"], 0);
    assert_eq!(r["reordered"], 0);
    let ws = &r["websocket"];
    assert_eq!(ws["deflate_offered"], true);
    assert_eq!(ws["deflate_negotiated"], CONNS);
    assert_eq!(ws["deflate_declined"], 0);
    assert_eq!(ws["deflate_context_takeover"], 0);
    assert_eq!(ws["frames_compressed"], CONNS * 4, "{ws:#}");
    assert_eq!(ws["frames_uncompressed"], CONNS * 3, "{ws:#}");
    let total: usize = SIZES.iter().sum();
    assert_eq!(ws["payload_bytes"], CONNS * total as u64);
    assert!(ws["compression_ratio"].as_f64().unwrap() > 10.0, "{ws:#}");
    assert!(ws["first_extension_error"].is_null());
    let e = &r["errors"];
    for k in ["protocol", "inflate", "ws_extension", "closed_by_server"] {
        assert_eq!(e[k], 0, "{k}: {r:#}");
    }
}

/// Three messages from one compressor: the later ones refer back into the earlier.
fn one_stream() -> Vec<u8> {
    let mut c = fresh();
    (0..3)
        .flat_map(|i| frame(0xC1, &deflate(&mut c, &payload(i, 3_000))))
        .collect()
}

#[test]
fn a_server_keeping_its_context_gets_an_inflater_per_connection() {
    let (addr, _) = server("permessage-deflate; server_max_window_bits=10", one_stream);
    let r = run_flood(addr, "takeover", true);
    assert_eq!(r["deliveries"], CONNS * 3, "{r:#}");
    assert_eq!(r["foreign_frames"], 0);
    assert_eq!(r["websocket"]["deflate_context_takeover"], CONNS);
    assert_eq!(r["websocket"]["frames_compressed"], CONNS * 3);
    assert_eq!(r["errors"]["inflate"], 0, "{r:#}");
}

fn plain() -> Vec<u8> {
    (0..2).flat_map(|i| frame(0x81, &payload(i, 64))).collect()
}

#[test]
fn a_declined_offer_is_counted_and_the_messages_come_plain() {
    let (addr, _) = server("", plain);
    let r = run_flood(addr, "declined", true);
    assert_eq!(r["deliveries"], CONNS * 2, "{r:#}");
    let ws = &r["websocket"];
    assert_eq!(ws["deflate_declined"], CONNS);
    assert_eq!(ws["deflate_negotiated"], 0);
    assert_eq!(ws["frames_uncompressed"], CONNS * 2);
    assert_eq!(ws["wire_bytes"], CONNS * 2 * 66);
    assert_eq!(ws["payload_bytes"], CONNS * 2 * 64);
}

#[test]
fn an_extension_not_offered_fails_the_handshake() {
    let (addr, _) = server("x-webkit-deflate-frame", plain);
    let r = run_flood(addr, "other", true);
    assert_eq!(r["errors"]["ws_extension"], CONNS, "{r:#}");
    assert_eq!(r["conns_established"], 0);
    assert!(
        r["websocket"]["first_extension_error"]
            .as_str()
            .unwrap()
            .contains("did not offer")
    );
    // Without --deflate, nothing is offered and permessage-deflate is not accepted either.
    let (addr, heads) = server("permessage-deflate; server_no_context_takeover", plain);
    let r = run_flood(addr, "unoffered", false);
    assert_eq!(r["errors"]["ws_extension"], CONNS, "{r:#}");
    for h in heads.lock().unwrap().iter() {
        assert!(
            !h.to_ascii_lowercase().contains("sec-websocket-extensions"),
            "{h}"
        );
    }
    assert_eq!(r["params"]["deflate"], false);
}

fn rsv1_unagreed() -> Vec<u8> {
    frame(0xC1, &deflate(&mut fresh(), &payload(0, 64)))
}

#[test]
fn rsv1_without_agreement_is_a_protocol_error() {
    let (addr, _) = server("", rsv1_unagreed);
    let r = run_flood(addr, "rsv1", true);
    assert_eq!(r["errors"]["protocol"], CONNS, "{r:#}");
    assert_eq!(r["deliveries"], 0);
}

fn corrupt() -> Vec<u8> {
    // BTYPE 11 (reserved), then a good message that must not be reached.
    let mut f = frame(0xC1, &[0x07, 0x00, 0x12]);
    f.extend(frame(0x81, &payload(1, 64)));
    f
}

#[test]
fn a_message_that_does_not_inflate_is_an_inflate_error() {
    let (addr, _) = server("permessage-deflate; server_no_context_takeover", corrupt);
    let r = run_flood(addr, "corrupt", true);
    assert_eq!(r["errors"]["inflate"], CONNS, "{r:#}");
    assert_eq!(r["deliveries"], 0);
}
