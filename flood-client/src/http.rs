//! Plain HTTP/1.1 on the client side: where a response head ends.

/// The offset of the `\r\n\r\n` that ends the response head at the start of `buf`, if it is
/// there.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}
