//! The small responses the server writes: a complete response with a short body, `204`, and
//! the answer to each [`HttpError`].

use std::fmt::Write as _;

use super::HttpError;

/// Builds a complete response with a small body. Used for every non-upgrade answer; the bodies
/// are at most a few kilobytes (`/stats` is the largest).
pub fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(160 + extra_headers.len());
    // Writing to a String cannot fail.
    let _ = write!(
        head,
        "HTTP/1.1 {status} {reason}\r\nServer: edgecomet\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nCache-Control: no-store\r\n{}{extra_headers}\r\n",
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        },
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A `204 No Content` answer (no body, no `Content-Length`, as RFC 9110 §8.6 requires).
pub fn no_content(extra_headers: &str, keep_alive: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 204 No Content\r\nServer: edgecomet\r\nCache-Control: no-store\r\n{}{extra_headers}\r\n",
        if keep_alive { "" } else { "Connection: close\r\n" },
    )
    .into_bytes()
}

/// A plain-text error response for `err`; the connection is closed after it.
pub fn error_response(err: HttpError) -> Vec<u8> {
    let (status, reason) = err.status();
    let mut body = err.message().as_bytes().to_vec();
    body.push(b'\n');
    response(
        status,
        reason,
        "text/plain; charset=utf-8",
        "",
        &body,
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_well_formed() {
        let r = error_response(HttpError::BodyTooLarge);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 413 Content Too Large\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}
