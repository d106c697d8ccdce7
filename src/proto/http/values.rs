//! Values inside a request: query parameters, cookies, the origin of a `Referer`,
//! percent-decoding. Borrowed out of the head; nothing allocates but percent-decoding.

use super::trim;

/// The raw value of query parameter `name` in `path` (`?a=1&b=2`), undecoded. The first
/// occurrence wins; a parameter without `=` has an empty value.
pub fn query_param<'p>(path: &'p str, name: &str) -> Option<&'p str> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`).
pub fn cookie<'c>(header: &'c [u8], name: &str) -> Option<&'c [u8]> {
    header.split(|&b| b == b';').find_map(|pair| {
        let pair = trim(pair);
        let eq = pair.iter().position(|&b| b == b'=')?;
        (trim(&pair[..eq]) == name.as_bytes()).then(|| trim(&pair[eq + 1..]))
    })
}

/// The origin (`scheme://host[:port]`) of a `Referer` URL, as a browser would send it in
/// `Origin`; `None` when it is not an absolute http(s) URL.
pub fn referer_origin(referer: &[u8]) -> Option<&[u8]> {
    let rest = referer
        .strip_prefix(b"http://")
        .or_else(|| referer.strip_prefix(b"https://"))?;
    let scheme = referer.len() - rest.len();
    let host = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    (host > 0).then(|| &referer[..scheme + host])
}

/// Decodes a query value (`%XX` escapes, `+` for a space, as forms and servlet containers
/// do). `None` for a truncated or non-hex escape.
pub fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_query_values() {
        let h = b"theme=dark; BAYEUX_BROWSER=ab12 ;x=";
        assert_eq!(cookie(h, "BAYEUX_BROWSER"), Some(&b"ab12"[..]));
        assert_eq!(cookie(h, "x"), Some(&b""[..]));
        assert_eq!(cookie(h, "BAYEUX"), None);
        assert_eq!(cookie(b"", "x"), None);
        assert_eq!(
            referer_origin(b"http://127.0.0.1:8000/pages/a.html?x#y"),
            Some(&b"http://127.0.0.1:8000"[..])
        );
        assert_eq!(
            referer_origin(b"https://example.com"),
            Some(&b"https://example.com"[..])
        );
        for bad in [&b"ftp://x/"[..], b"http:///a", b"/relative", b""] {
            assert_eq!(referer_origin(bad), None);
        }
        assert_eq!(
            percent_decode("%5B%7B%22a%22%3A1%7D%5D+x%E2%98%83").unwrap(),
            "[{\"a\":1}] x\u{2603}".as_bytes()
        );
        for bad in ["%", "%4", "%zz", "a%G1"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
