//! Fuzzes authorization on hostile input: subscribe tokens (`edgecomet::auth::Auth::verify`),
//! publish key headers (`Auth::check_publish`, `auth::bearer`), token channel patterns
//! (`auth::pattern::covers`, `covers_subscription`) and push addresses (`auth::push`).
//!
//! Input layout: `[split, bytes...]`: the text (invalid UTF-8 replaced by U+FFFD) is cut in two
//! (`a`, `b`) at `split * len / 255`, moved back to a character boundary.
//!
//! Checked on every input (any failure aborts the fuzzer):
//! - `verify` of the text, of `a` and of `b`, with an HS256 secret configured, never panics;
//!   a token it accepts has not ended at the `now` given (`ends > now`); the empty token is
//!   `Missing`, one over `MAX_TOKEN` bytes is `Malformed`;
//! - `check_publish` with the text as the `Authorization` value never panics and accepts only
//!   `Bearer <the key>` (any case of "Bearer", spaces around);
//! - `covers(a, b)` equals a segment-based reference (the pattern is a channel, or a prefix
//!   followed by `/*`, `/**`, or `*`, `**` alone; a private `~push/` channel only by its exact
//!   name);
//! - `covers_subscription(a, sub)` is sound: for a Bayeux subscription `sub` built from `b` (a
//!   valid channel name)
//!   (`/b`, `/b/*`, `/b/**`), when it says covered, `covers(a, ch)` holds for channels the
//!   subscription matches (`b`, `b/x`, `b/x/y` as the subscription's kind allows);
//! - push addresses: `valid_address` iff 32 lowercase hex digits; `valid_private` iff
//!   `~push/` and an address; `address` of any bits is valid.

#![no_main]

use std::sync::OnceLock;

use edgecomet::auth::{Auth, KeyError, MAX_TOKEN, Sources, TokenError, bearer, pattern, push};
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000;
const KEY: &str = "fuzz-publish-key-0123456789";

fn auth() -> &'static Auth {
    static A: OnceLock<Auth> = OnceLock::new();
    A.get_or_init(|| {
        Auth::load(&Sources {
            publish_keys: vec![KEY.into()],
            token_secrets: vec!["fuzz-token-secret-0123456789abcdef".into()],
            ..Sources::default()
        })
        .expect("keys load")
    })
}

/// The documented rule: a leading `/` dropped; the same name; else (not for a private
/// channel) `*` / `**` alone or after `prefix/`: one more segment / one or more.
fn ref_covers(pat: &str, ch: &str) -> bool {
    let p = pat.strip_prefix('/').unwrap_or(pat);
    if p == ch {
        return true;
    }
    if push::is_private(ch) {
        return false;
    }
    let (prefix, deep) = match p {
        "**" => ("", true),
        "*" => ("", false),
        _ => match (p.strip_suffix("/**"), p.strip_suffix("/*")) {
            // A prefix is a name: an empty one (`//*`) or one with a leading `/` is no pattern.
            (Some(x), _) if !x.is_empty() && !x.starts_with('/') => (x, true),
            (None, Some(x)) if !x.is_empty() && !x.starts_with('/') => (x, false),
            _ => return false,
        },
    };
    let rest = if prefix.is_empty() {
        Some(ch)
    } else {
        ch.strip_prefix(prefix).and_then(|r| r.strip_prefix('/'))
    };
    rest.is_some_and(|r| !r.is_empty() && (deep || !r.contains('/')))
}

fn check_token(t: &str) {
    match auth().verify(t, NOW) {
        Ok(g) => assert!(g.ends > NOW, "accepted an ended token"),
        Err(e) => {
            if t.is_empty() {
                assert_eq!(e, TokenError::Missing);
            }
        }
    }
    if t.len() > MAX_TOKEN {
        assert_eq!(auth().verify(t, NOW), Err(TokenError::Malformed));
    }
}

fn check_key(v: &str) {
    let r = auth().check_publish(Some(v.as_bytes()));
    let expect = match bearer(v.as_bytes()) {
        None => Err(KeyError::Missing),
        Some(k) if k == KEY.as_bytes() => Ok(()),
        Some(_) => Err(KeyError::Wrong),
    };
    assert_eq!(r, expect, "check_publish({v:?})");
    if r.is_ok() {
        let t = v.trim_ascii();
        assert!(t[..6].eq_ignore_ascii_case("bearer"));
        assert_eq!(t[6..].trim_ascii(), KEY);
    }
}

fn check_patterns(a: &str, b: &str) {
    assert_eq!(pattern::covers(a, b), ref_covers(a, b), "covers({a:?}, {b:?})");
    // Subscriptions are built on a channel name (what the server validates first).
    if !edgecomet::pubsub::valid_channel(b, usize::MAX) {
        return;
    }
    let subs = [
        (format!("/{b}"), vec![b.to_string()]),
        (format!("/{b}/*"), vec![format!("{b}/x")]),
        (format!("/{b}/**"), vec![format!("{b}/x"), format!("{b}/x/y")]),
    ];
    for (sub, matched) in subs {
        if pattern::covers_subscription(a, &sub) {
            for ch in matched {
                if !push::is_private(&ch) || sub == format!("/{ch}") {
                    assert!(
                        pattern::covers(a, &ch),
                        "{a:?} covers {sub:?} but not {ch:?}"
                    );
                }
            }
        }
    }
}

fn check_push(s: &str, bits: u128) {
    let hex32 = s.len() == 32 && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    assert_eq!(push::valid_address(s), hex32);
    assert_eq!(
        push::valid_private(s),
        s.strip_prefix("~push/").is_some_and(push::valid_address)
    );
    assert!(push::valid_address(&push::address(bits)));
}

fuzz_target!(|input: &[u8]| {
    let [split, ref bytes @ ..] = *input else {
        return;
    };
    let text = String::from_utf8_lossy(bytes);
    let mut k = text.len() * usize::from(split) / 255;
    while !text.is_char_boundary(k) {
        k -= 1;
    }
    let (a, b) = text.split_at(k);
    let mut bits = [0u8; 16];
    for (i, &c) in bytes.iter().take(16).enumerate() {
        bits[i] = c;
    }
    for s in [&text[..], a, b] {
        check_token(s);
        check_key(s);
        check_push(s, u128::from_le_bytes(bits));
    }
    check_patterns(a, b);
    check_patterns(b, a);
});
