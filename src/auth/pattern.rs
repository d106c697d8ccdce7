//! Channel patterns of a token's `channels` and `publish` claims: a channel (`news/eu`), its
//! children one level down (`news/*`), everything below it (`news/**`), or every channel
//! (`*`: top-level ones, `**`: all). The Bayeux patterns, on native names; a leading `/` is
//! accepted and dropped, so `/news/*` in a token means the same. Private push channels
//! (`~push/…`, [`super::push`]) are never matched by a wildcard.

use super::push;

/// Whether the pattern `pat` (from a token) covers the native channel `channel`.
pub fn covers(pat: &str, channel: &str) -> bool {
    let pat = pat.strip_prefix('/').unwrap_or(pat);
    if pat == channel {
        return true;
    }
    if push::is_private(channel) {
        return false;
    }
    let (prefix, deep) = if let Some(p) = pat.strip_suffix("**") {
        (p, true)
    } else if let Some(p) = pat.strip_suffix('*') {
        (p, false)
    } else {
        return false;
    };
    // `prefix` is empty (`*`, `**`) or a name and `/` (`a/*`); anything else (`a*`, `//*`) is
    // no pattern.
    if !(prefix.is_empty() || prefix.ends_with('/') && !prefix.starts_with('/')) {
        return false;
    }
    match channel.strip_prefix(prefix) {
        Some(rest) if !rest.is_empty() => deep || !rest.contains('/'),
        _ => false,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Children,
    Descendants,
}

/// A pattern as (prefix, kind): `a/*` → (`a`, children), `**` → (``, descendants).
fn split(p: &str) -> (&str, Kind) {
    let p = p.strip_prefix('/').unwrap_or(p);
    // A prefix is a name: not empty, no leading `/` (as `covers` wants it).
    let name = |x: &str| !x.is_empty() && !x.starts_with('/');
    if p == "**" {
        ("", Kind::Descendants)
    } else if p == "*" {
        ("", Kind::Children)
    } else if let Some(x) = p.strip_suffix("/**").filter(|x| name(x)) {
        (x, Kind::Descendants)
    } else if let Some(x) = p.strip_suffix("/*").filter(|x| name(x)) {
        (x, Kind::Children)
    } else {
        (p, Kind::Exact)
    }
}

/// Whether the token pattern `pat` covers a Bayeux subscription `sub` (`/a/b`, `/a/*`,
/// `/a/**`): every channel the subscription can match is one the token allows.
pub fn covers_subscription(pat: &str, sub: &str) -> bool {
    let (sp, skind) = split(sub);
    if skind == Kind::Exact {
        return covers(pat, sp);
    }
    let (tp, tkind) = split(pat);
    match (tkind, skind) {
        (Kind::Exact, _) | (Kind::Children, Kind::Descendants) => false,
        (Kind::Children, _) => tp == sp,
        (Kind::Descendants, _) => {
            tp.is_empty()
                || sp == tp
                || sp
                    .strip_prefix(tp)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{covers, covers_subscription};

    #[test]
    fn subscriptions_are_covered_when_all_they_match_is() {
        assert!(covers_subscription("news/*", "/news/eu"));
        assert!(covers_subscription("news/*", "/news/*"));
        assert!(!covers_subscription("news/*", "/news/**"));
        assert!(!covers_subscription("news/*", "/news/eu/*"));
        assert!(covers_subscription("news/**", "/news/*"));
        assert!(covers_subscription("news/**", "/news/eu/**"));
        assert!(covers_subscription("/news/**", "/news/**"));
        assert!(!covers_subscription("news/**", "/newsroom/*"));
        assert!(!covers_subscription("news/**", "/**"));
        assert!(covers_subscription("**", "/**"));
        assert!(covers_subscription("*", "/*"));
        assert!(!covers_subscription("*", "/**"));
        assert!(!covers_subscription("news", "/news/*"));
        assert!(covers_subscription("news", "/news"));
    }

    #[test]
    fn exact_children_descendants() {
        assert!(covers("news", "news"));
        assert!(covers("/news", "news"));
        assert!(!covers("news", "news/eu"));
        assert!(covers("news/*", "news/eu"));
        assert!(!covers("news/*", "news"));
        assert!(!covers("news/*", "news/eu/fr"));
        assert!(covers("news/**", "news/eu/fr"));
        assert!(covers("/news/**", "news/eu"));
        assert!(!covers("news/**", "news"));
        assert!(!covers("news/**", "newsroom/a"));
        assert!(covers("*", "news"));
        assert!(!covers("*", "news/eu"));
        assert!(covers("**", "news/eu"));
        assert!(
            !covers("new*", "news"),
            "a star inside a segment is no pattern"
        );
        assert!(!covers("", "news"));
    }

    #[test]
    fn private_channels_only_by_name() {
        let ch = "~push/0123456789abcdef0123456789abcdef";
        assert!(!covers("**", ch));
        assert!(!covers("~push/*", ch));
        assert!(!covers("~push/**", ch));
        assert!(covers(ch, ch));
    }
}
