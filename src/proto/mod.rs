//! Wire formats, sans-IO: bytes in, parsed items or events out. Nothing in `proto` touches a
//! socket, a clock or the worker's state, so every parser can be tested on every prefix and
//! fuzzed on its own.

pub mod bayeux;
pub mod http;
pub mod socketio;
pub mod tls;
pub mod ws;

/// Whether `b` may appear in a channel name segment (native and Bayeux channels alike):
/// `A-Z a-z 0-9 - _ . : @ ~`.
pub fn segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'~')
}

/// Escapes UTF-8 text as the inside of a JSON string.
pub fn json_escape(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 15)]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}
