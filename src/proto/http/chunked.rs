//! Chunked request bodies (RFC 9112 §7.1), sans-IO: decoded once complete, refused (400/413)
//! on any malformed size line, chunk extension, line end or trailer section.

use super::HttpError;

/// Longest chunk-size line (hex digits and extensions) and trailer section accepted.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 4096;

/// Decodes a chunked body (RFC 9112 §7.1) at the start of `buf`: `Ok(None)` if incomplete,
/// `Ok(Some((bytes used, body)))` once the last chunk and the trailer section are in. Line ends
/// must be CRLF (a bare LF is refused, as a request-smuggling shape); the decoded body may not
/// exceed `max_body` (413), a size line `MAX_CHUNK_LINE` bytes, the trailers `MAX_TRAILERS`.
pub fn chunked_body(buf: &[u8], max_body: usize) -> Result<Option<(usize, Vec<u8>)>, HttpError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        // chunk-size [ chunk-ext ] CRLF
        let Some(eol) = find_crlf(&buf[pos..], MAX_CHUNK_LINE)? else {
            return Ok(None);
        };
        let line = &buf[pos..pos + eol];
        let hex_len = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if hex_len == 0 || hex_len > 8 {
            return Err(HttpError::BadChunk);
        }
        if !valid_chunk_ext(&line[hex_len..]) {
            return Err(HttpError::BadChunk);
        }
        let size = line[..hex_len].iter().fold(0usize, |acc, &d| {
            acc * 16 + (d as char).to_digit(16).unwrap_or(0) as usize
        });
        pos += eol + 2;
        if size == 0 {
            // trailer-section CRLF: header lines until an empty one.
            let start = pos;
            loop {
                let Some(eol) = find_crlf(&buf[pos..], MAX_TRAILERS)? else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((pos, body)));
                }
                if pos - start > MAX_TRAILERS {
                    return Err(HttpError::BadChunk);
                }
            }
        }
        if body.len() + size > max_body {
            return Err(HttpError::BodyTooLarge);
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size;
        if &buf[pos..pos + 2] != b"\r\n" {
            return Err(HttpError::BadChunk);
        }
        pos += 2;
    }
}

/// Whether `ext` (what follows a chunk size on its line) is a well-formed chunk extension list
/// (RFC 9112 §7.1.1): `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`, also
/// accepting whitespace before the line end. An unterminated quoted string, a bare `=`, a
/// control byte or anything else is refused: the line would mean different things to
/// different parsers.
pub fn valid_chunk_ext(ext: &[u8]) -> bool {
    let ws = |b: u8| b == b' ' || b == b'\t';
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    let skip_ws = |i: &mut usize| {
        while *i < ext.len() && ws(ext[*i]) {
            *i += 1;
        }
    };
    let token = |i: &mut usize| {
        let start = *i;
        while *i < ext.len() && tchar(ext[*i]) {
            *i += 1;
        }
        *i > start
    };
    let mut i = 0;
    loop {
        skip_ws(&mut i);
        if i == ext.len() {
            return true;
        }
        if ext[i] != b';' {
            return false;
        }
        i += 1;
        skip_ws(&mut i);
        if !token(&mut i) {
            return false;
        }
        skip_ws(&mut i);
        if i < ext.len() && ext[i] == b'=' {
            i += 1;
            skip_ws(&mut i);
            if i < ext.len() && ext[i] == b'"' {
                // quoted-string: qdtext / quoted-pair, then the closing quote.
                i += 1;
                loop {
                    match ext.get(i) {
                        None => return false,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match ext.get(i + 1) {
                            Some(&c) if c == b'\t' || c >= 0x20 && c != 0x7f => i += 2,
                            _ => return false,
                        },
                        Some(&c) if c == b'\t' || c >= 0x20 && c != 0x7f => i += 1,
                        Some(_) => return false,
                    }
                }
            } else if !token(&mut i) {
                return false;
            }
        }
    }
}

/// Offset of the next CRLF in `b` (within `max` bytes). A bare LF is an error.
fn find_crlf(b: &[u8], max: usize) -> Result<Option<usize>, HttpError> {
    match b.iter().take(max + 2).position(|&c| c == b'\n') {
        Some(0) => Err(HttpError::BadChunk),
        Some(i) if b[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(HttpError::BadChunk),
        None if b.len() > max + 1 => Err(HttpError::BadChunk),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_extensions() {
        for ok in [
            &b""[..],
            b" ",
            b";a",
            b";a=b",
            b" ; a = b ;c",
            b";a=\"\"",
            b";a=\"x y\\\"z\"",
            b";a=\"\xff\";b=1 ",
        ] {
            assert!(valid_chunk_ext(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b";"[..],
            b";=b",
            b";a=",
            b";a=\"b",
            b";a=\"b\\\"",
            b";a=\"b\\",
            b";a=\"b\x01\"",
            b";a b",
            b"x",
            b";a=b\"c\"",
            b";a=\"b\"c",
        ] {
            assert!(!valid_chunk_ext(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn chunked_bodies() {
        let ok = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        let end = ok.len() - 4;
        assert_eq!(
            chunked_body(ok, 100),
            Ok(Some((end, b"hello world".to_vec())))
        );
        // Every proper prefix is incomplete, never an error.
        for n in 0..end {
            assert_eq!(chunked_body(&ok[..n], 100), Ok(None), "prefix {n}");
        }
        assert_eq!(chunked_body(b"0\r\n\r\n", 0), Ok(Some((5, Vec::new()))));
        assert_eq!(
            chunked_body(b"5\r\nhello\r\n0\r\n\r\n", 4),
            Err(HttpError::BodyTooLarge)
        );
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"123456789\r\n",
            b"5x\r\nhello\r\n",
            b"0\r\n\n",
            // An unterminated quoted extension value (it would swallow the line end for a
            // parser that honours quotes).
            b"5;a=\"b\r\nhello\r\n0\r\n\r\n",
            b"5;\r\nhello\r\n0\r\n\r\n",
            b"5;a=\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
        ] {
            assert_eq!(
                chunked_body(bad, 1 << 20),
                Err(HttpError::BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        // An endless size line is refused, not buffered.
        let long = vec![b'0'; 2000];
        assert_eq!(chunked_body(&long, 100), Err(HttpError::BadChunk));
    }
}
