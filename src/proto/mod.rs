//! Wire formats, sans-IO: bytes in, parsed items or events out. Nothing in `proto` touches a
//! socket, a clock or the worker's state, so every parser can be tested on every prefix and
//! fuzzed on its own.

pub mod bayeux;
pub mod http;
pub mod ws;

/// Whether `b` may appear in a channel name segment (native and Bayeux channels alike):
/// `A-Z a-z 0-9 - _ . : @ ~`.
pub fn segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'@' | b'~')
}
