//! RESP2, the Redis wire format, sans-IO: commands out (arrays of bulk strings), replies in.
//!
//! Only what a pub/sub client needs: simple strings, errors, integers, bulk strings and arrays
//! (pushes such as `message` and `pmessage` are arrays in RESP2). Parsing is incremental (an
//! incomplete reply is `Ok(None)`) and bounded: a bulk string longer than the caller's limit,
//! an array of more than [`MAX_ARRAY`] elements, nesting deeper than [`MAX_DEPTH`] or a line
//! longer than [`MAX_LINE`] is an error, so a broken or hostile peer cannot make a buffer grow
//! without bound.

use std::fmt;

/// Most elements in one array (a pub/sub push has 3 or 4).
pub const MAX_ARRAY: usize = 1024;
/// Deepest nesting of arrays.
pub const MAX_DEPTH: usize = 4;
/// Longest simple string, error or length line.
pub const MAX_LINE: usize = 4096;

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array (`*-1`).
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bulk(Some(b)) => Some(b),
            Value::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

/// The peer sent something that is not RESP2, or over a bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError(pub &'static str);

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redis protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtoError {}

/// Appends the command `args` (an array of bulk strings) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the start of `buf`: `Ok(Some((value, bytes used)))`, `Ok(None)` if
/// `buf` holds only part of it. `max_bulk` bounds each bulk string.
pub fn parse(buf: &[u8], max_bulk: usize) -> Result<Option<(Value, usize)>, ProtoError> {
    parse_at(buf, 0, max_bulk, 0)
}

fn parse_at(
    buf: &[u8],
    pos: usize,
    max_bulk: usize,
    depth: usize,
) -> Result<Option<(Value, usize)>, ProtoError> {
    if let Some(k) = buf.get(pos)
        && !b"+-:$*".contains(k)
    {
        return Err(ProtoError("an unknown reply type"));
    }
    let Some((kind, line, after)) = line(buf, pos)? else {
        return Ok(None);
    };
    let text = || {
        std::str::from_utf8(line)
            .map(str::to_string)
            .map_err(|_| ProtoError("a status line that is not UTF-8"))
    };
    match kind {
        b'+' => Ok(Some((Value::Simple(text()?), after))),
        b'-' => Ok(Some((Value::Error(text()?), after))),
        b':' => Ok(Some((Value::Int(int(line)?), after))),
        b'$' => {
            let n = int(line)?;
            if n == -1 {
                return Ok(Some((Value::Bulk(None), after)));
            }
            let n = usize::try_from(n).map_err(|_| ProtoError("a negative bulk length"))?;
            if n > max_bulk {
                return Err(ProtoError("a bulk string over the limit"));
            }
            let end = after + n;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtoError("a bulk string without its CRLF"));
            }
            Ok(Some((Value::Bulk(Some(buf[after..end].to_vec())), end + 2)))
        }
        b'*' => {
            let n = int(line)?;
            if n == -1 {
                return Ok(Some((Value::Array(None), after)));
            }
            let n = usize::try_from(n).map_err(|_| ProtoError("a negative array length"))?;
            if n > MAX_ARRAY {
                return Err(ProtoError("an array over the limit"));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtoError("arrays nested too deep"));
            }
            let mut items = Vec::with_capacity(n);
            let mut at = after;
            for _ in 0..n {
                match parse_at(buf, at, max_bulk, depth + 1)? {
                    Some((v, next)) => {
                        items.push(v);
                        at = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Value::Array(Some(items)), at)))
        }
        _ => Err(ProtoError("an unknown reply type")),
    }
}

/// The type byte, the rest of the line up to CRLF, and the position after the CRLF.
#[allow(clippy::type_complexity)]
fn line(buf: &[u8], pos: usize) -> Result<Option<(u8, &[u8], usize)>, ProtoError> {
    let rest = &buf[pos.min(buf.len())..];
    let Some(&kind) = rest.first() else {
        return Ok(None);
    };
    // The CRLF comes after the type byte (a reply that starts with CR LF is not RESP).
    let window = &rest[1..rest.len().min(MAX_LINE + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((kind, &rest[1..i + 1], pos + i + 3))),
        None if rest.len() > MAX_LINE + 1 => Err(ProtoError("a line over the limit")),
        None => Ok(None),
    }
}

fn int(line: &[u8]) -> Result<i64, ProtoError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtoError("a length or integer that is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(buf: &[u8]) -> Value {
        let (v, n) = parse(buf, 1 << 20).unwrap().unwrap();
        assert_eq!(n, buf.len());
        v
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        command(&mut out, &[b"PUBLISH", b"news", b"hi\r\n"]);
        assert_eq!(
            out,
            b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nnews\r\n$4\r\nhi\r\n\r\n"
        );
        // What we encode, we parse.
        let v = all(&out);
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Bulk(Some(b"PUBLISH".to_vec())),
                Value::Bulk(Some(b"news".to_vec())),
                Value::Bulk(Some(b"hi\r\n".to_vec())),
            ]))
        );
    }

    #[test]
    fn parses_every_type() {
        assert_eq!(all(b"+OK\r\n"), Value::Simple("OK".into()));
        assert_eq!(all(b"-ERR no\r\n"), Value::Error("ERR no".into()));
        assert_eq!(all(b":-42\r\n"), Value::Int(-42));
        assert_eq!(all(b"$-1\r\n"), Value::Bulk(None));
        assert_eq!(all(b"$0\r\n\r\n"), Value::Bulk(Some(Vec::new())));
        assert_eq!(all(b"*-1\r\n"), Value::Array(None));
        assert_eq!(all(b"*0\r\n"), Value::Array(Some(Vec::new())));
        let push = b"*4\r\n$8\r\npmessage\r\n$3\r\na/*\r\n$3\r\na/b\r\n$2\r\nhi\r\n";
        let Value::Array(Some(items)) = all(push) else {
            panic!("not an array");
        };
        assert_eq!(items[0].bytes(), Some(&b"pmessage"[..]));
        assert_eq!(items[3].bytes(), Some(&b"hi"[..]));
    }

    #[test]
    fn incomplete_replies_wait_for_more() {
        let full = b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n:1\r\n";
        let first = full.len() - 4;
        for cut in 0..first {
            assert_eq!(parse(&full[..cut], 1 << 20), Ok(None), "cut at {cut}");
        }
        let (_, n) = parse(full, 1 << 20).unwrap().unwrap();
        assert_eq!(n, first);
        assert_eq!(
            parse(&full[n..], 1 << 20).unwrap().unwrap().0,
            Value::Int(1)
        );
    }

    #[test]
    fn bounds_and_garbage_are_errors() {
        assert!(parse(b"$11\r\nhello world\r\n", 10).is_err());
        assert!(parse(b"$5\r\nhelloXX", 10).is_err());
        assert!(parse(b"*1025\r\n", 10).is_err());
        assert!(parse(b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", 10).is_err());
        assert!(parse(b"$-2\r\n", 10).is_err());
        assert!(parse(b"$x\r\n", 10).is_err());
        assert!(parse(b"?what\r\n", 10).is_err());
        assert!(parse(&[b'+'; MAX_LINE + 10], 10).is_err());
        assert_eq!(parse(&[b'+'; 100], 10), Ok(None));
        // Found by the fuzzer: a reply that starts with its CRLF (no type byte) panicked.
        assert!(parse(b"\r\n", 10).is_err());
        assert!(parse(b"\n", 10).is_err());
    }
}
