//! permessage-deflate's rules without sockets: offers, compression, the bounded inflate.

use super::*;
use crate::proto::ws::frame::OP_TEXT;

fn neg(v: &str) -> Option<Agreed> {
    negotiate([v.as_bytes()])
}

#[test]
fn offers_browsers_and_libraries_make() {
    let d = Some(Agreed::DEFAULT);
    // Chromium, Firefox, Python websockets
    assert_eq!(neg("permessage-deflate; client_max_window_bits"), d);
    assert_eq!(neg("permessage-deflate"), d);
    // Autobahn's offers (12.*, 13.*)
    assert_eq!(
        neg("permessage-deflate; client_no_context_takeover; client_max_window_bits"),
        d
    );
    let nine = Some(Agreed {
        server_max_window_bits: 9,
    });
    assert_eq!(
        neg(
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; \
             server_no_context_takeover; server_max_window_bits=9"
        ),
        nine
    );
    assert_eq!(
        neg("permessage-deflate; server_max_window_bits=\"9\""),
        nine
    );
    assert_eq!(neg("PerMessage-Deflate ;Client_Max_Window_Bits = 12"), d);
}

#[test]
fn declines_what_it_cannot_accept_and_takes_the_next() {
    for bad in [
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=09",
        "permessage-deflate; client_max_window_bits=20",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; x_custom",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=\"1 0\"",
    ] {
        assert_eq!(neg(bad), None, "{bad}");
        let with_next = format!("{bad}, permessage-deflate; server_max_window_bits=10");
        assert_eq!(
            neg(&with_next),
            Some(Agreed {
                server_max_window_bits: 10
            }),
            "{with_next}"
        );
    }
    // Not an extension list at all: ignored whole, the next header line still counts.
    for junk in [
        "",
        ";",
        "permessage-deflate;",
        "a b",
        "\"x\"",
        "p; a=\"unterminated",
    ] {
        assert_eq!(neg(junk), None, "{junk:?}");
    }
    assert_eq!(
        negotiate([&b"a b"[..], &b"permessage-deflate"[..]]),
        Some(Agreed::DEFAULT)
    );
}

#[test]
fn response_lines() {
    let mut v = Vec::new();
    Agreed::DEFAULT.response_header(&mut v);
    assert_eq!(
        v,
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
          client_no_context_takeover\r\n"
    );
    for (bits, s) in [(8, "=8\r\n"), (10, "=10\r\n"), (14, "=14\r\n")] {
        let mut v = Vec::new();
        Agreed {
            server_max_window_bits: bits,
        }
        .response_header(&mut v);
        assert!(v.ends_with(s.as_bytes()), "{}", String::from_utf8_lossy(&v));
    }
}

/// A payload of `n` bytes of JSON-like text.
fn json(n: usize) -> Vec<u8> {
    let mut v = Vec::new();
    let mut i = 0u32;
    while v.len() < n {
        v.extend_from_slice(format!("{{\"seq\":{i},\"price\":{}}},", i * 7 % 1000).as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

/// Splits a server frame into (first byte, payload).
fn split(f: &[u8]) -> (u8, &[u8]) {
    let len7 = f[1] & 0x7f;
    let at = match len7 {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    (f[0], &f[at..])
}

#[test]
fn compress_then_inflate_every_size() {
    for n in [1, 10, 100, 125, 126, 1000, 65535, 65536, 200_000] {
        let p = json(n);
        let Some(f) = compress_frame(OP_TEXT, &p) else {
            assert!(n < 30, "{n} bytes of JSON did not shrink");
            continue;
        };
        let (b0, body) = split(&f);
        assert_eq!(b0, 0x80 | RSV1 | OP_TEXT);
        assert!(body.len() < p.len());
        let mut out = Vec::new();
        inflate(body, n, &mut out).unwrap();
        assert_eq!(out, p, "{n}");
        // The limit is exact: one byte less is a bomb.
        let mut out = Vec::new();
        assert_eq!(inflate(body, n - 1, &mut out), Err(InflateError::TooBig));
        assert!(out.len() <= n, "stopped at the limit");
    }
}

#[test]
fn incompressible_payload_goes_plain() {
    let mut x = 0x9e37_79b9u32;
    let p: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    assert_eq!(compress_frame(OP_TEXT, &p), None);
}

fn deflate_raw(p: &[u8], flush: FlushCompress) -> Vec<u8> {
    let mut c = Compress::new(Compression::new(6), false);
    let mut out = Vec::with_capacity(p.len() + 64);
    c.compress_vec(p, &mut out, flush).unwrap();
    out
}

#[test]
fn bomb_stops_at_the_limit() {
    let zeros = vec![0u8; 10 << 20];
    let mut z = deflate_raw(&zeros, FlushCompress::Sync);
    z.truncate(z.len() - 4);
    assert!(z.len() < 20_000);
    let mut out = Vec::new();
    assert_eq!(inflate(&z, 1 << 20, &mut out), Err(InflateError::TooBig));
    assert!(out.len() <= (1 << 20) + 1);
}

#[test]
fn final_block_accepted_garbage_after_it_refused() {
    let p = json(3000);
    // A sender that ends with BFINAL (allowed, §7.2.3.3 of the RFC's examples).
    let fin = deflate_raw(&p, FlushCompress::Finish);
    let mut out = Vec::new();
    inflate(&fin, 1 << 20, &mut out).unwrap();
    assert_eq!(out, p);
    let mut trailing = fin.clone();
    trailing.extend_from_slice(b"junk");
    assert_eq!(
        inflate(&trailing, 1 << 20, &mut Vec::new()),
        Err(InflateError::Corrupt)
    );
}

#[test]
fn corrupt_and_truncated_refused() {
    let p = json(5000);
    let mut z = deflate_raw(&p, FlushCompress::Sync);
    z.truncate(z.len() - 4);
    // Cut short anywhere: refused, never panics, never accepted as the whole message.
    for cut in 1..z.len() {
        let mut out = Vec::new();
        if inflate(&z[..cut], 1 << 20, &mut out).is_ok() {
            assert_ne!(out, p, "cut at {cut} accepted as whole");
        }
    }
    // A back-reference to before the message's first byte ("distance too far back"): a
    // message stands alone, so nothing before it may be referred to.
    assert_eq!(
        inflate(&[0x03, 0x02, 0x00], 1 << 20, &mut Vec::new()),
        Err(InflateError::Corrupt)
    );
    // A reserved block type (BTYPE 11).
    assert_eq!(
        inflate(&[0x07, 0x00], 1 << 20, &mut Vec::new()),
        Err(InflateError::Corrupt)
    );
    // RFC 7692 §7.2.3.1's example: "Hello" compressed.
    let mut out = Vec::new();
    inflate(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100, &mut out).unwrap();
    assert_eq!(out, b"Hello");
    // An empty message (§7.2.3.6: a single 0x00 byte).
    let mut out = Vec::new();
    inflate(&[0x00], 100, &mut out).unwrap();
    assert!(out.is_empty());
}

#[test]
fn window_limit_decides_what_goes_compressed() {
    let a = Agreed {
        server_max_window_bits: 9,
    };
    let z = Bytes::from_static(b"z");
    // The window holds the payload: a 512-byte message fits 9 bits, header aside.
    let fits = frame::frame(OP_TEXT, &[b'a'; 512]);
    let over = frame::frame(OP_TEXT, &[b'a'; 513]);
    assert_eq!(choose(Some(a), &fits, || &z), &z);
    assert_eq!(choose(Some(a), &over, || &z), &over);
    assert_eq!(choose(None, &fits, || &z), &fits);
    assert_eq!(choose(Some(Agreed::DEFAULT), &over, || &z), &z);
}

#[test]
fn pieces_make_one_message() {
    let a = json(3000);
    let b = json(1500);
    let za = compress_piece(&a).unwrap();
    let zb = compress_piece(&b).unwrap();
    assert!(za.ends_with(&TAIL));
    let f = frame_from_pieces(
        OP_TEXT,
        [
            Piece::Raw(b"["),
            Piece::Compressed(&za),
            Piece::Raw(b","),
            Piece::Compressed(&zb),
            Piece::Raw(b",{\"channel\":\"/meta/connect\"}]"),
        ],
    );
    let (b0, body) = split(&f);
    assert_eq!(b0, 0x80 | RSV1 | OP_TEXT);
    let mut want = b"[".to_vec();
    want.extend_from_slice(&a);
    want.push(b',');
    want.extend_from_slice(&b);
    want.extend_from_slice(b",{\"channel\":\"/meta/connect\"}]");
    assert!(body.len() < want.len() / 2);
    let mut out = Vec::new();
    inflate(body, 1 << 20, &mut out).unwrap();
    assert_eq!(out, want);
    // Ending with a compressed piece; a raw piece over one stored block's 65,535 bytes.
    let big = vec![b'x'; 70_000];
    let f = frame_from_pieces(OP_TEXT, [Piece::Raw(&big), Piece::Compressed(&za)]);
    let mut out = Vec::new();
    inflate(split(&f).1, 1 << 20, &mut out).unwrap();
    assert_eq!(out.len(), 73_000);
    assert!(out.starts_with(&big) && out.ends_with(&a));
}

#[test]
fn frames_compressed_one_by_one_above_the_minimum() {
    let small = frame::frame(OP_TEXT, b"{\"gap\":{}}");
    let big = json(2000);
    let mut both = small.to_vec();
    both.extend_from_slice(&frame::frame(OP_TEXT, &big));
    let both = Bytes::from(both);
    let z = compress_frames(&both, 100);
    assert!(z.len() < both.len());
    assert_eq!(&z[..small.len()], &small[..], "the small frame stays plain");
    let (b0, body) = split(&z[small.len()..]);
    assert_eq!(b0, 0x80 | RSV1 | OP_TEXT);
    let mut out = Vec::new();
    inflate(body, 1 << 20, &mut out).unwrap();
    assert_eq!(out, big);
    // Below the minimum, or not server frames: the same bytes, shared.
    assert_eq!(compress_frames(&both, 5000).as_ptr(), both.as_ptr());
    let odd = Bytes::from_static(b"\x81\x7e\x00");
    assert_eq!(compress_frames(&odd, 0), odd);
}
