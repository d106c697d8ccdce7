//! The small responses the server writes: a complete response with a short body, `204`, and
//! the answer to each [`HttpError`]; every one carries a `Date` ([`HttpDate`], formatted by the
//! caller's clock reading: nothing here reads a clock).

use std::fmt::Write as _;

use super::HttpError;

/// An HTTP `Date` value (RFC 9110 §5.6.7, IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`),
/// formatted once from seconds since the Unix epoch; the worker keeps one and formats it again
/// once a second.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HttpDate {
    /// Always 29 ASCII bytes.
    text: [u8; 29],
}

impl HttpDate {
    pub fn from_unix(secs: u64) -> HttpDate {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        let s = format!(
            "{}, {day:02} {} {year:04} {:02}:{:02}:{:02} GMT",
            DAYS[(days % 7) as usize],
            MONTHS[(month - 1) as usize],
            rem / 3600,
            rem / 60 % 60,
            rem % 60,
        );
        let mut text = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        // Years past 9999 do not fit: the 1970 text stays (never reached by a real clock).
        if s.len() == text.len() {
            text.copy_from_slice(s.as_bytes());
        }
        HttpDate { text }
    }

    pub fn as_str(&self) -> &str {
        // Built from ASCII only.
        std::str::from_utf8(&self.text).unwrap_or("Thu, 01 Jan 1970 00:00:00 GMT")
    }
}

impl std::fmt::Debug for HttpDate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Builds a complete response with a small body. Used for every non-upgrade answer; the bodies
/// are at most a few kilobytes (`/stats` is the largest), `/metrics` some tens.
pub fn response(
    date: &HttpDate,
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
        "HTTP/1.1 {status} {reason}\r\nServer: edgecomet\r\nDate: {}\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\
         {}{extra_headers}\r\n",
        date.as_str(),
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
pub fn no_content(date: &HttpDate, extra_headers: &str, keep_alive: bool) -> Vec<u8> {
    format!(
        "HTTP/1.1 204 No Content\r\nServer: edgecomet\r\nDate: {}\r\nCache-Control: no-store\r\n\
         {}{extra_headers}\r\n",
        date.as_str(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        },
    )
    .into_bytes()
}

/// A plain-text error response for `err`; the connection is closed after it.
pub fn error_response(date: &HttpDate, err: HttpError) -> Vec<u8> {
    let (status, reason) = err.status();
    let mut body = err.message().as_bytes().to_vec();
    body.push(b'\n');
    response(
        date,
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
        let r = error_response(&HttpDate::from_unix(0), HttpError::BodyTooLarge);
        let text = String::from_utf8(r).unwrap();
        assert!(text.starts_with("HTTP/1.1 413 Content Too Large\r\n"));
        assert!(text.contains("Connection: close\r\n"));
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(text.contains("\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\n"));
        let r = no_content(&HttpDate::from_unix(784_111_777), "", true);
        assert_eq!(
            String::from_utf8(r).unwrap(),
            "HTTP/1.1 204 No Content\r\nServer: edgecomet\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Cache-Control: no-store\r\n\r\n"
        );
    }

    #[test]
    fn dates_are_imf_fixdate() {
        // RFC 9110's example, leap days, the turn of centuries and of 2038's 32-bit limit.
        for (secs, text) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (1_709_164_799, "Wed, 28 Feb 2024 23:59:59 GMT"),
            (1_709_251_199, "Thu, 29 Feb 2024 23:59:59 GMT"),
            (2_147_483_648, "Tue, 19 Jan 2038 03:14:08 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ] {
            assert_eq!(HttpDate::from_unix(secs).as_str(), text, "{secs}");
        }
    }
}
