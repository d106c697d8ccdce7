//! The report's `websocket` part: what the WebSocket subscribers received as frames (compressed
//! or not), bytes on the wire against payload bytes (the compression ratio with `--deflate`),
//! and how the servers answered the permessage-deflate offer. Built from the workers' finals
//! ([`WsWire`]); used by [`crate::report`], which it does not import.

use serde_json::json;

use crate::plan::{Final, WsWire};

/// The `websocket` object of the JSON report (null when the subscribers use no WebSocket).
/// `compression_ratio` is payload bytes over wire bytes (null before any frame): above 1 when
/// compression saved bytes; without compression it is a little below 1 (the frame headers).
pub fn json(finals: &[Final], websocket: bool, deflate: bool) -> serde_json::Value {
    if !websocket {
        return serde_json::Value::Null;
    }
    let mut w = WsWire::default();
    for f in finals {
        w.add(&f.progress.ws);
    }
    json!({
        "deflate_offered": deflate,
        "deflate_negotiated": w.deflate_negotiated,
        "deflate_declined": w.deflate_declined,
        "deflate_context_takeover": w.deflate_takeover,
        "frames_compressed": w.frames_compressed,
        "frames_uncompressed": w.frames_uncompressed,
        "wire_bytes": w.wire_bytes,
        "payload_bytes": w.payload_bytes,
        "compression_ratio": (w.wire_bytes > 0).then(|| w.payload_bytes as f64 / w.wire_bytes as f64),
        "first_extension_error": finals.iter().find_map(|f| f.ws_extension_first_error.clone()),
    })
}

/// The summary's WebSocket lines (none when `j`, the report's `websocket`, is null).
pub fn summary(j: &serde_json::Value) -> Vec<String> {
    if !j.is_object() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if j["deflate_offered"].as_bool() == Some(true) {
        let takeover = j["deflate_context_takeover"].as_u64().unwrap_or(0);
        out.push(format!(
            "permessage-deflate offered: {} upgrades agreed, {} declined{}",
            j["deflate_negotiated"],
            j["deflate_declined"],
            if takeover > 0 {
                format!(
                    "; {takeover} without server_no_context_takeover (an inflater each in this \
                     client)"
                )
            } else {
                String::new()
            }
        ));
    }
    out.push(format!(
        "WebSocket frames: {} compressed, {} uncompressed; {} bytes on the wire for {} bytes of \
         payload{}",
        j["frames_compressed"],
        j["frames_uncompressed"],
        j["wire_bytes"],
        j["payload_bytes"],
        j["compression_ratio"]
            .as_f64()
            .map_or_else(String::new, |r| format!(" (payload/wire {r:.2})"))
    ));
    if let Some(e) = j["first_extension_error"].as_str() {
        out.push(format!("  first extension failure: {e}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_workers_and_states_the_ratio() {
        let fin = |c, u, wire, payload| {
            let mut f = Final::default();
            f.progress.ws = WsWire {
                deflate_negotiated: 2,
                deflate_declined: 1,
                frames_compressed: c,
                frames_uncompressed: u,
                wire_bytes: wire,
                payload_bytes: payload,
                ..WsWire::default()
            };
            f
        };
        let mut b = fin(5, 1, 300, 2_000);
        b.ws_extension_first_error = Some("why".into());
        let j = json(&[fin(10, 0, 700, 8_000), b], true, true);
        assert_eq!(j["deflate_negotiated"], 4);
        assert_eq!(j["deflate_declined"], 2);
        assert_eq!(j["frames_compressed"], 15);
        assert_eq!(j["frames_uncompressed"], 1);
        assert_eq!(j["compression_ratio"], 10.0);
        assert_eq!(j["first_extension_error"], "why");
        let lines = summary(&j);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("permessage-deflate offered: 4 upgrades agreed, 2 declined"));
        assert!(lines[1].ends_with("(payload/wire 10.00)"), "{}", lines[1]);
        // Not offered: the frames and bytes only; no WebSocket: nothing.
        let j = json(&[Final::default()], true, false);
        assert!(j["compression_ratio"].is_null());
        assert_eq!(summary(&j).len(), 1);
        assert!(json(&[], false, true).is_null());
        assert!(summary(&serde_json::Value::Null).is_empty());
    }
}
