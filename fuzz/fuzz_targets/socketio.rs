//! Fuzzes the Engine.IO / Socket.IO decoders (`edgecomet::proto::socketio`) and the session
//! rules (`edgecomet::session::socketio`) on hostile packets.
//!
//! Input layout: `[flags, max_attachments, bytes...]`; `flags` bit 0: the bytes are a polling
//! body (packets joined by 0x1e, `b…` binary), else WebSocket frames (split at 0x1e too, each
//! frame text unless it starts with 0xff); bit 1: conformance mode.
//!
//! Checked on every input (any failure aborts the fuzzer):
//! - nothing panics (the parsers, the JSON scanner, the rules, whatever the packets' order);
//! - a Socket.IO packet that parses has a namespace starting with `/`, at most
//!   `max_attachments` attachments, and a payload that is empty or one JSON value, each of
//!   whose array elements is JSON again; written back with `write_sio` it parses to the same
//!   packet;
//! - a binary packet over polling survives `push_binary` and `parse_text`;
//! - the rules' outbox holds only what they were given to say: every text packet they queue
//!   starts with an Engine.IO type digit, and the session ends (an error) rather than growing
//!   past the input's size times a small factor.

#![no_main]

use bytes::Bytes;
use edgecomet::proto::socketio::{
    Packet, elements, member, parse_sio, parse_text, push_binary, split_payload, string_value,
    valid_json, write_sio,
};
use edgecomet::session::socketio::{Env, Granted, Out, Session, Settings, Transport};
use libfuzzer_sys::fuzz_target;

struct Null;

impl Env for Null {
    fn connect(&mut self, nsp: usize, auth: &str) -> Result<Granted, String> {
        if auth.len() % 3 == 1 {
            return Err("{\"message\":\"no\"}".to_string());
        }
        Ok(Granted {
            sid: "s".to_string(),
            pid: (nsp == 0).then(|| "p".to_string()),
        })
    }
    fn disconnect(&mut self, _: usize) {}
    fn publish(&mut self, channel: &str, data: &str) -> Result<(), String> {
        assert!(valid_json(data), "published data is not JSON: {data:?}");
        let _ = channel;
        Ok(())
    }
}

fuzz_target!(|input: &[u8]| {
    let [flags, max_att, ref bytes @ ..] = *input else {
        return;
    };
    let polling = flags & 1 != 0;
    let max_att = u32::from(max_att % 16);
    for p in split_payload(bytes) {
        if let Ok(Packet::Binary(b)) = parse_text(p, true) {
            let mut again = Vec::new();
            push_binary(&mut again, &b);
            assert_eq!(parse_text(&again, true), Ok(Packet::Binary(b)));
        }
        let Ok(text) = std::str::from_utf8(p) else {
            continue;
        };
        let _ = string_value(text);
        let _ = member(text, "channels");
        if let Ok(pk) = parse_sio(text, max_att) {
            assert!(pk.nsp.starts_with('/'));
            assert!(pk.attachments <= max_att);
            if !pk.data.is_empty() {
                assert!(valid_json(pk.data), "{:?}", pk.data);
                if pk.data.starts_with('[') {
                    for e in elements(pk.data) {
                        assert!(valid_json(e), "element {e:?} of {:?}", pk.data);
                    }
                }
            }
            let mut again = String::new();
            write_sio(&mut again, pk.kind, pk.attachments, pk.nsp, pk.id, pk.data);
            let back = parse_sio(&again[1..], max_att).expect("written back, it parses");
            assert_eq!(back, pk);
        }
    }
    let settings = Settings {
        ping_interval_ms: 100,
        ping_timeout_ms: 100,
        connect_timeout_ms: 1000,
        max_payload: 1 << 20,
        namespaces: vec!["/".into(), "/custom".into()],
        conformance: flags & 2 != 0,
        client_publish: true,
        recovery_ms: 0,
        max_attachments: max_att,
    };
    let mut s = Session::new(1, 2, Transport::WebSocket, 0, &settings);
    let mut env = Null;
    for (now, p) in split_payload(bytes).enumerate() {
        let now = now as u64 * 37;
        let r = if !polling && p.first() == Some(&0xff) {
            s.on_binary(Bytes::copy_from_slice(&p[1..]), &settings, &mut env)
        } else {
            s.on_text(p, polling, now, &settings, &mut env)
        };
        let _ = s.timer(now, &settings);
        if r.is_err() {
            break;
        }
        assert!(s.out_size().1 <= 4 * bytes.len() + 256, "the outbox grew past the input");
        for o in s.take_outbox() {
            if let Out::Text(t) = o {
                assert!(matches!(t.first(), Some(b'0'..=b'6')), "{t:?}");
            }
        }
    }
});
