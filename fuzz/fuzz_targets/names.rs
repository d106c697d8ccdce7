//! Fuzzes the name and cursor rules: native channel names (`edgecomet::pubsub::valid_channel`),
//! Bayeux channels and subscriptions (`edgecomet::proto::bayeux::valid_channel`, `pattern`,
//! `Pattern::matches`, `native_name`), cursors (`edgecomet::pubsub::hub::parse_cursor`) and
//! query parameters (`edgecomet::proto::http::query_param`), each against a reference written
//! here.
//!
//! Input layout: `[max_len, split, bytes...]`
//! - `max_len`: the channel length limit, 0..=254 as is, 255 for `usize::MAX`;
//! - `split`: where the text is cut in two (`a`, `b`), as `split * len / 255`, moved back to
//!   a character boundary;
//! - the rest is the text (invalid UTF-8 is replaced, lossily, by U+FFFD; `parse_cursor` also
//!   gets the raw bytes).
//!
//! Checked on every input (any failure aborts the fuzzer), for the text, `a` and `b`:
//! - nothing panics;
//! - native `valid_channel(s, max)` equals a byte-by-byte reference of the documented rule
//!   (docs/api.md, Endpoints: "Channel names"): 1..=max bytes of `A-Z a-z 0-9 - _ . : @ ~`, segments separated
//!   by single `/`, no leading, trailing or doubled `/`; so an accepted name is non-empty,
//!   within `max`, ASCII, and neither starts nor ends with `/` nor contains `//`;
//! - the Bayeux channel of a native name is the name with a leading `/`, one byte longer (the
//!   worker checks Bayeux channels with `--max-channel-len + 1`): `valid_channel(s, max)` iff
//!   `bayeux::valid_channel("/" + s, max + 1)`; a valid Bayeux channel is `/` followed by a
//!   valid native name (`native_name`) within `max - 1`;
//! - `pattern(s, max)` equals a segment-based reference (a valid channel, or `/*`, `/**` after
//!   a valid channel or alone); `Pattern::matches` against a valid Bayeux channel equals a
//!   segment comparison (exact: same segments; `/*`: one more; `/**`: at least one more), and
//!   a pattern matches a channel built from its prefix with one and with two more segments
//!   exactly as its kind says;
//! - `parse_cursor` equals a reference: empty is `Ok(None)`, 1 to 20 ASCII digits whose value
//!   fits in 64 bits are `Ok(Some(value))` (computed digit by digit with checked arithmetic),
//!   anything else `Err(BadCursor)`; an accepted value prints back (leading zeros aside) to
//!   the digits given and parses again to itself;
//! - `query_param(path, name)` for `cursor`, `transport`, `last_event_id`, the empty name, `a`
//!   and `b` (paths: the text, `a`, `b`) equals a reference scan of the query (after the first
//!   `?`, `&`-separated, the first key equal to the name wins, no `=` means an empty value);
//!   a non-empty value found lies inside the path after the `?`, holds no `&`, and is
//!   preceded by `name=` within its pair.

#![no_main]

use edgecomet::proto::bayeux::{self, Pattern};
use edgecomet::proto::http::query_param;
use edgecomet::pubsub::hub::{BadCursor, parse_cursor};
use edgecomet::pubsub::valid_channel;
use libfuzzer_sys::fuzz_target;

/// The documented channel bytes.
fn allowed(b: u8) -> bool {
    matches!(b,
        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b':' | b'@' | b'~')
}

/// Native channel name, byte by byte: `after_slash` is true at the start and after each `/`.
fn ref_native(s: &str, max: usize) -> bool {
    if s.len() > max {
        return false;
    }
    let mut after_slash = true;
    for &b in s.as_bytes() {
        if b == b'/' {
            if after_slash {
                return false;
            }
            after_slash = true;
        } else if allowed(b) {
            after_slash = false;
        } else {
            return false;
        }
    }
    !after_slash
}

/// The segments of a Bayeux channel (`/a/b` → `["a", "b"]`), if it is one.
fn ref_segments(s: &str) -> Option<Vec<&str>> {
    let segs: Vec<&str> = s.strip_prefix('/')?.split('/').collect();
    segs.iter()
        .all(|g| !g.is_empty() && g.bytes().all(allowed))
        .then_some(segs)
}

#[derive(Debug, PartialEq, Eq)]
enum RefPattern<'a> {
    Exact(&'a str),
    Children(&'a str),
    Descendants(&'a str),
}

/// A subscription: `/` and segments, the last of which may be `*` or `**`.
fn ref_pattern(s: &str, max: usize) -> Option<RefPattern<'_>> {
    if s.len() > max {
        return None;
    }
    let (parent, last) = s.rsplit_once('/')?;
    let parent_ok = parent.is_empty() || ref_segments(parent).is_some();
    match last {
        "*" if parent_ok => Some(RefPattern::Children(parent)),
        "**" if parent_ok => Some(RefPattern::Descendants(parent)),
        _ => ref_segments(s).map(|_| RefPattern::Exact(s)),
    }
}

fn from_real(p: Pattern<'_>) -> RefPattern<'_> {
    match p {
        Pattern::Exact(c) => RefPattern::Exact(c),
        Pattern::Children(c) => RefPattern::Children(c),
        Pattern::Descendants(c) => RefPattern::Descendants(c),
    }
}

/// Whether a message on the valid Bayeux channel `channel` reaches pattern `p`, by segments.
fn ref_matches(p: &RefPattern<'_>, channel: &str) -> bool {
    let ch = ref_segments(channel).expect("a valid channel");
    fn prefix(pre: &str) -> Vec<&str> {
        if pre.is_empty() {
            Vec::new()
        } else {
            ref_segments(pre).expect("a valid prefix")
        }
    }
    match *p {
        RefPattern::Exact(c) => ref_segments(c).expect("a valid channel") == ch,
        RefPattern::Children(pre) => {
            let pre = prefix(pre);
            ch.len() == pre.len() + 1 && ch.starts_with(&pre)
        }
        RefPattern::Descendants(pre) => {
            let pre = prefix(pre);
            ch.len() > pre.len() && ch.starts_with(&pre)
        }
    }
}

fn ref_cursor(v: &[u8]) -> Result<Option<u64>, BadCursor> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > 20 {
        return Err(BadCursor);
    }
    let mut n: u64 = 0;
    for &b in v {
        let d = match b {
            b'0'..=b'9' => u64::from(b - b'0'),
            _ => return Err(BadCursor),
        };
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(d))
            .ok_or(BadCursor)?;
    }
    Ok(Some(n))
}

/// The query is what follows the first `?`; its pairs are separated by `&`.
fn ref_query<'p>(path: &'p str, name: &str) -> Option<&'p str> {
    let q = path.find('?')? + 1;
    let mut start = q;
    loop {
        let end = path[start..].find('&').map_or(path.len(), |i| start + i);
        let pair = &path[start..end];
        let (key, value) = match pair.find('=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, ""),
        };
        if key == name {
            return Some(value);
        }
        if end == path.len() {
            return None;
        }
        start = end + 1;
    }
}

fn check_channel(s: &str, max: usize) {
    let native = valid_channel(s, max);
    assert_eq!(
        native,
        ref_native(s, max),
        "native valid_channel({s:?}, {max})"
    );
    if native {
        assert!(!s.is_empty() && s.len() <= max && s.is_ascii());
        assert!(!s.starts_with('/') && !s.ends_with('/') && !s.contains("//"));
    }
    if let Some(m1) = max.checked_add(1) {
        let b = format!("/{s}");
        assert_eq!(
            bayeux::valid_channel(&b, m1),
            native,
            "native {s:?} and Bayeux {b:?} disagree (max {max})"
        );
    }
    let bay = bayeux::valid_channel(s, max);
    assert_eq!(
        bay,
        max >= 1 && s.starts_with('/') && valid_channel(bayeux::native_name(s), max - 1),
        "Bayeux {s:?} is not / and a native name"
    );
    assert_eq!(
        bay,
        s.len() <= max && ref_segments(s).is_some(),
        "Bayeux valid_channel({s:?}, {max})"
    );
}

fn check_pattern(sub: &str, channel: &str, max: usize) {
    let real = bayeux::pattern(sub, max);
    let reference = ref_pattern(sub, max);
    assert_eq!(real.map(from_real), reference, "pattern({sub:?}, {max})");
    let Some(p) = real else {
        return;
    };
    let rp = from_real(p);
    if ref_segments(channel).is_some() {
        assert_eq!(
            p.matches(channel),
            ref_matches(&rp, channel),
            "{p:?} on {channel:?}"
        );
    }
    // Channels one and two segments below the prefix (the channel itself for Exact).
    let base = match rp {
        RefPattern::Exact(c) | RefPattern::Children(c) | RefPattern::Descendants(c) => c,
    };
    let one = format!("{base}/x");
    let two = format!("{base}/x/y");
    let (m0, m1, m2) = match rp {
        RefPattern::Exact(_) => (true, false, false),
        RefPattern::Children(_) => (false, true, false),
        RefPattern::Descendants(_) => (false, true, true),
    };
    if !base.is_empty() {
        assert_eq!(p.matches(base), m0, "{p:?} on its own prefix");
    }
    assert_eq!(p.matches(&one), m1, "{p:?} on {one:?}");
    assert_eq!(p.matches(&two), m2, "{p:?} on {two:?}");
}

fn check_cursor(v: &[u8]) {
    let r = parse_cursor(v);
    assert_eq!(r, ref_cursor(v), "parse_cursor({v:?})");
    if let Ok(Some(n)) = r {
        let printed = n.to_string();
        let digits = match v.iter().position(|&b| b != b'0') {
            Some(i) => &v[i..],
            None => &b"0"[..],
        };
        assert_eq!(printed.as_bytes(), digits, "{v:?} parsed as {n}");
        assert_eq!(parse_cursor(printed.as_bytes()), Ok(Some(n)));
    }
}

fn check_query(path: &str, name: &str) {
    let v = query_param(path, name);
    assert_eq!(v, ref_query(path, name), "query_param({path:?}, {name:?})");
    if let Some(v) = v.filter(|v| !v.is_empty()) {
        // (An empty value may be a literal "" rather than a slice of the path.)
        let q = path.find('?').expect("a query") + 1;
        let at = v.as_ptr() as usize - path.as_ptr() as usize;
        assert!(
            at >= q && at + v.len() <= path.len(),
            "value outside the query"
        );
        assert!(!v.contains('&'));
        let before = &path[q..at];
        let pair_start = before.rfind('&').map_or(0, |i| i + 1);
        let key = &before[pair_start..];
        assert!(
            key.strip_suffix('=') == Some(name),
            "value {v:?} not after {name:?}="
        );
    }
}

fn split_at_boundary(s: &str, split: u8) -> (&str, &str) {
    let mut k = s.len() * usize::from(split) / 255;
    while !s.is_char_boundary(k) {
        k -= 1;
    }
    s.split_at(k)
}

fuzz_target!(|input: &[u8]| {
    let [max, split, ref bytes @ ..] = *input else {
        return;
    };
    let max = if max == 255 {
        usize::MAX
    } else {
        usize::from(max)
    };
    let text = String::from_utf8_lossy(bytes);
    let (a, b) = split_at_boundary(&text, split);

    for s in [&text[..], a, b] {
        check_channel(s, max);
        check_cursor(s.as_bytes());
    }
    check_cursor(bytes);
    check_pattern(a, b, max);
    check_pattern(b, a, max);
    check_pattern(&text, b, max);
    for path in [&text[..], a, b] {
        for name in ["cursor", "transport", "last_event_id", "", a, b] {
            check_query(path, name);
        }
    }
});
