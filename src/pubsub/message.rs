//! A published message and what a client is told about it: the message shared by the history,
//! session queues, inboxes and every subscriber, with each wire encoding built once (WebSocket
//! frame and envelope, SSE event, streaming chunk, Bayeux delivery, long-poll JSON element);
//! the gap report; cursors. Sans-IO.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::proto::json_escape;
use crate::proto::ws::deflate;
use crate::proto::ws::frame::{self, OP_TEXT};

/// One published message, shared by the history, session queues, inboxes and every subscriber.
/// Each wire encoding is built once, the first time a subscriber of that kind needs it.
#[derive(Debug)]
pub struct Message {
    pub id: u64,
    pub channel: Arc<str>,
    /// The UTF-8 payload as published.
    pub payload: Bytes,
    /// Hub second of the publish (for `--history-age`).
    pub(super) at: u32,
    /// What this process never received of this channel just before this message (`--broker`:
    /// ids come from Redis, and a hole means this process missed them). Every encoding with
    /// ids reports it before the message.
    pub gap_before: Gap,
    /// When it entered the process (`Now::micros`: microseconds on the process's monotonic
    /// clock), for the publish-to-write histogram (`WorkerStats::publish_write`).
    pub entered_us: u64,
    ws: OnceLock<Bytes>,
    ws_env: OnceLock<Bytes>,
    sse: OnceLock<Bytes>,
    chunk: OnceLock<Bytes>,
    bayeux: OnceLock<Bytes>,
    sio: OnceLock<Bytes>,
    sio_ws: OnceLock<Bytes>,
    /// The permessage-deflate forms of the WebSocket encodings, made when a subscriber that
    /// agreed to the extension first needs one (boxed: a message nobody compresses pays one
    /// pointer).
    deflated: OnceLock<Box<Deflated>>,
}

/// A message's compressed WebSocket encodings ([`deflate::compress_frames`] of each).
#[derive(Debug, Default)]
struct Deflated {
    ws: OnceLock<Bytes>,
    ws_env: OnceLock<Bytes>,
    sio_ws: OnceLock<Bytes>,
}

impl Message {
    pub fn new(id: u64, channel: Arc<str>, payload: Bytes, at: u32) -> Message {
        Message {
            id,
            channel,
            payload,
            at,
            gap_before: Gap::None,
            entered_us: 0,
            ws: OnceLock::new(),
            ws_env: OnceLock::new(),
            sse: OnceLock::new(),
            chunk: OnceLock::new(),
            bayeux: OnceLock::new(),
            sio: OnceLock::new(),
            sio_ws: OnceLock::new(),
            deflated: OnceLock::new(),
        }
    }

    fn deflated(&self) -> &Deflated {
        self.deflated.get_or_init(Box::default)
    }

    /// [`ws_frame`](Self::ws_frame) for a subscriber that agreed to permessage-deflate: the
    /// same frame compressed (RSV1) when it is at least `min` bytes and shrinks. `min` is the
    /// same for every call (`--deflate-min-bytes`).
    pub fn ws_frame_deflated(&self, min: usize) -> &Bytes {
        self.deflated()
            .ws
            .get_or_init(|| deflate::compress_frames(self.ws_frame(), min))
    }

    /// [`ws_envelope`](Self::ws_envelope), compressed as [`ws_frame_deflated`](Self::ws_frame_deflated).
    pub fn ws_envelope_deflated(&self, min: usize) -> &Bytes {
        self.deflated()
            .ws_env
            .get_or_init(|| deflate::compress_frames(self.ws_envelope(), min))
    }

    /// [`sio_ws_frame`](Self::sio_ws_frame), compressed as [`ws_frame_deflated`](Self::ws_frame_deflated).
    pub fn sio_ws_frame_deflated(&self, event: &str, offset: bool, min: usize) -> &Bytes {
        self.deflated()
            .sio_ws
            .get_or_init(|| deflate::compress_frames(self.sio_ws_frame(event, offset), min))
    }

    /// The WebSocket text frame.
    pub fn ws_frame(&self) -> &Bytes {
        self.ws.get_or_init(|| frame::frame(OP_TEXT, &self.payload))
    }

    /// The WebSocket text frame of an enveloped subscriber (`?envelope=1`):
    /// `{"id":"ID","data":"..."}`, so that it can resume with the id.
    pub fn ws_envelope(&self) -> &Bytes {
        self.ws_env.get_or_init(|| {
            let mut json = Vec::with_capacity(self.payload.len() + 40);
            self.json_element(&mut json);
            let f = frame::frame(OP_TEXT, &json);
            if !self.gap_before.is_gap() {
                return f;
            }
            let gap = format!("{{\"gap\":{}}}", self.gap_before.json());
            let mut both = frame::frame(OP_TEXT, gap.as_bytes()).to_vec();
            both.extend_from_slice(&f);
            Bytes::from(both)
        })
    }

    /// The Server-Sent Events event: `id:`, one `data:` line per payload line, blank line.
    pub fn sse_event(&self) -> &Bytes {
        self.sse.get_or_init(|| {
            let mut out = Vec::with_capacity(self.payload.len() + 40);
            if self.gap_before.is_gap() {
                let gap = self.gap_before.json();
                let _ = write!(Wr(&mut out), "event: gap\ndata: {gap}\n\n");
            }
            let _ = writeln!(Wr(&mut out), "id: {}", self.id);
            for line in sse_lines(&self.payload) {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(line);
                out.push(b'\n');
            }
            out.push(b'\n');
            Bytes::from(out)
        })
    }

    /// The HTTP-streaming chunk: one NDJSON line `{"id":"..","data":".."}` in chunked framing.
    pub fn stream_chunk(&self) -> &Bytes {
        self.chunk.get_or_init(|| {
            let mut line = Vec::with_capacity(self.payload.len() + 40);
            if self.gap_before.is_gap() {
                let gap = self.gap_before.json();
                let _ = writeln!(Wr(&mut line), "{{\"gap\":{gap}}}");
            }
            self.json_element(&mut line);
            line.push(b'\n');
            Bytes::from(chunked(&line))
        })
    }

    /// The Bayeux delivery `{"channel":"/name","data":..,"id":"ID"}`: `data` is the payload
    /// when it is JSON, else the payload as a JSON string.
    pub fn bayeux(&self) -> &Bytes {
        self.bayeux.get_or_init(|| {
            let channel = format!("/{}", self.channel);
            let data = crate::proto::bayeux::data_from_payload(&self.payload);
            Bytes::from(crate::proto::bayeux::delivery(&channel, &data, self.id))
        })
    }

    /// The Socket.IO event of a long-poll: the Engine.IO packet `42["<event>",<data>]` (`data`
    /// as for Bayeux); after a gap, the packet `42["gap",{…}]` first, joined by the payload
    /// separator. `event` and `offset` are the same for every call (`--socketio-event`,
    /// `--socketio-recovery`).
    /// With `offset` (state recovery on), the message's id is a last argument.
    pub fn sio_text(&self, event: &str, offset: bool) -> &Bytes {
        self.sio.get_or_init(|| {
            let data = crate::proto::bayeux::data_from_payload(&self.payload);
            let id = offset.then(|| self.id.to_string());
            let ev = crate::proto::socketio::event_text(event, &data, id.as_deref());
            if !self.gap_before.is_gap() {
                return Bytes::from(ev);
            }
            let gap = format!("42[\"gap\",{}]\x1e{ev}", self.gap_before.json());
            Bytes::from(gap)
        })
    }

    /// The same as WebSocket text frames (one per packet).
    pub fn sio_ws_frame(&self, event: &str, offset: bool) -> &Bytes {
        self.sio_ws.get_or_init(|| {
            let text = self.sio_text(event, offset);
            let mut out = Vec::with_capacity(text.len() + 16);
            for p in crate::proto::socketio::split_payload(text) {
                out.extend_from_slice(&frame::frame(OP_TEXT, p));
            }
            Bytes::from(out)
        })
    }

    /// Appends `{"id":"ID","data":"..."}`.
    pub fn json_element(&self, out: &mut Vec<u8>) {
        let _ = write!(Wr(out), "{{\"id\":\"{}\",\"data\":\"", self.id);
        json_escape(&self.payload, out);
        out.extend_from_slice(b"\"}");
    }
}

/// `fmt::Write` into a byte vector.
pub(crate) struct Wr<'a>(pub(crate) &'a mut Vec<u8>);

impl std::fmt::Write for Wr<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// Lines of an SSE payload: CRLF, CR and LF all end a line (as EventSource parses them).
fn sse_lines(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(p);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.iter().position(|&b| b == b'\n' || b == b'\r') {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i] == b'\r' && s.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

/// `bytes` in HTTP/1.1 chunked framing (one chunk).
pub fn chunked(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 12);
    let _ = write!(Wr(&mut out), "{:x}\r\n", bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
    out
}

/// What a client missed between its cursor and what can still be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gap {
    #[default]
    None,
    /// Exactly this many messages are gone.
    Missed(u64),
    /// Some may be gone; how many is not known (restart, expired channel, foreign cursor).
    Unknown,
}

impl Gap {
    pub fn is_gap(self) -> bool {
        self != Gap::None
    }

    /// Combines two reports of one client.
    pub fn and(self, o: Gap) -> Gap {
        match (self, o) {
            (Gap::Unknown, _) | (_, Gap::Unknown) => Gap::Unknown,
            (Gap::Missed(a), Gap::Missed(b)) => Gap::Missed(a + b),
            (Gap::None, g) | (g, Gap::None) => g,
        }
    }

    /// `{"missed":N}` or `{"missed":null}`.
    pub fn json(self) -> String {
        match self {
            Gap::Missed(n) => format!("{{\"missed\":{n}}}"),
            _ => "{\"missed\":null}".to_string(),
        }
    }

    /// The `Edgecomet-Gap` header value.
    pub fn header(self) -> String {
        match self {
            Gap::Missed(n) => n.to_string(),
            _ => "unknown".to_string(),
        }
    }
}

/// The answer to "what after this cursor?".
#[derive(Debug, Default)]
pub struct Since {
    pub msgs: Vec<Arc<Message>>,
    pub gap: Gap,
    /// The cursor that covers what was returned: the last returned id, or — when nothing was —
    /// the newest id the channel has issued (0 if it has no state), or the client's own cursor.
    pub cursor: u64,
}

/// How many of `msgs` (from the front) fit in `max_bytes` of payload: at least one if there is
/// one; `max_bytes` 0 = one.
pub fn fits<'m>(msgs: impl Iterator<Item = &'m Arc<Message>>, max_bytes: usize) -> usize {
    let mut total = 0;
    let mut n = 0;
    for m in msgs {
        total += m.payload.len();
        if n > 0 && (max_bytes == 0 || total > max_bytes) {
            break;
        }
        n += 1;
    }
    n
}

/// A cursor that is not 1 to 20 decimal digits fitting in 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadCursor;

/// Parses a cursor: 1 to 20 decimal digits that fit in 64 bits. Empty = no cursor.
pub fn parse_cursor(v: &[u8]) -> Result<Option<u64>, BadCursor> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return Err(BadCursor);
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Some)
        .ok_or(BadCursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let m = Message::new(
            7,
            Arc::from("x"),
            Bytes::from_static(b"a\r\nb\rc\n\"q\"\x01"),
            0,
        );
        assert_eq!(
            &m.sse_event()[..],
            b"id: 7\ndata: a\ndata: b\ndata: c\ndata: \"q\"\x01\n\n"
        );
        let mut j = Vec::new();
        m.json_element(&mut j);
        assert_eq!(
            j,
            b"{\"id\":\"7\",\"data\":\"a\\r\\nb\\rc\\n\\\"q\\\"\\u0001\"}"
        );
        let c = m.stream_chunk();
        assert!(c.starts_with(format!("{:x}\r\n", j.len() + 1).as_bytes()));
        assert!(c.ends_with(b"}\n\r\n"));
    }

    #[test]
    fn cursors() {
        assert_eq!(parse_cursor(b""), Ok(None));
        assert_eq!(parse_cursor(b"42"), Ok(Some(42)));
        assert_eq!(parse_cursor(b"18446744073709551615"), Ok(Some(u64::MAX)));
        for bad in [
            &b"-1"[..],
            b"1e3",
            b"18446744073709551616",
            b"%31",
            b" 1",
            b"abc",
        ] {
            assert_eq!(parse_cursor(bad), Err(BadCursor), "{bad:?}");
        }
    }
}
