//! The WebSocket side of a worker's connections, whatever rides on it (native messages, Bayeux
//! JSON arrays, Engine.IO packets): the upgrade answer's extensions, then frames into whole
//! messages — a fragmented one once all of it has arrived, a compressed one
//! (permessage-deflate, `--deflate`) inflated — counted in [`WsWire`](crate::plan::WsWire), pings answered, a close
//! ending the connection. Parsing is sans-IO, in [`crate::ws`] and [`crate::deflate`].
//!
//! Cost when nothing is compressed or fragmented: none beyond the checks of a frame's first
//! byte and three counters; a single-frame message is handed on where it lies in the read
//! buffer. A compressed one is inflated into one buffer per worker, reused.

use std::io;

use flate2::Decompress;

use super::tls::send;
use super::{DEFLATE, MAX_FRAME, Worker};
use crate::deflate::{self, InflateError};
use crate::ws::{self, Header};

impl Worker {
    /// The extensions the 101 answer `head` of `key` agreed to (`--deflate`: permessage-deflate
    /// or none). `false`: the answer fails the handshake (counted as `ws_extension`), the
    /// connection was dropped.
    pub(super) fn extensions(&mut self, key: usize, head: &[u8]) -> bool {
        match deflate::answer(head, self.plan.deflate) {
            Ok(None) => {
                if self.plan.deflate {
                    self.ws.deflate_declined += 1;
                }
            }
            Ok(Some(agreed)) => {
                self.ws.deflate_negotiated += 1;
                self.conns[key].flags |= DEFLATE;
                if !agreed.server_no_context_takeover {
                    // One stream over the connection's messages: an inflater of its own.
                    self.ws.deflate_takeover += 1;
                    if self.inflate_own.len() <= key {
                        self.inflate_own.resize_with(key + 1, || None);
                    }
                    self.inflate_own[key] = Some(deflate::decompressor());
                }
            }
            Err(why) => {
                self.errors.ws_extension += 1;
                self.ws_extension_first_error
                    .get_or_insert_with(|| why.to_string());
                self.drop_conn(key);
                return false;
            }
        }
        true
    }

    /// WebSocket frames from `pos` on: each data message, whole, to `on_msg(worker, key, opcode,
    /// payload)` (`false` from it: the connection was dropped); pings answered, a close ends the
    /// connection. Returns how many bytes were used: the rest is an incomplete frame or
    /// fragmented message, kept for the next read; `buf.len()` once the connection is gone.
    pub(super) fn consume_ws<F>(
        &mut self,
        key: usize,
        buf: &[u8],
        mut pos: usize,
        mut on_msg: F,
    ) -> usize
    where
        F: FnMut(&mut Worker, usize, u8, &[u8]) -> bool,
    {
        while pos < buf.len() {
            let rest = &buf[pos..];
            let Some(h) = ws::header(rest) else {
                return pos;
            };
            if h.len > MAX_FRAME {
                let e = io::Error::other("frame over 64 MiB");
                self.fail(key, &e);
                return buf.len();
            }
            if rest.len() < h.at + h.len {
                return pos;
            }
            if h.op & 0x8 != 0 {
                if h.rsv != 0 {
                    return self.ws_protocol(key, buf.len());
                }
                if !self.control(key, h.op, &rest[h.at..h.at + h.len]) {
                    return buf.len();
                }
                pos += h.at + h.len;
                continue;
            }
            // A data frame begins a message: text or binary (a continuation here belongs to
            // no message; other opcodes are reserved), RSV1 only if deflate was agreed, RSV2
            // and RSV3 never.
            let compressed = h.rsv == ws::RSV1;
            let agreed = self.conns[key].flags & DEFLATE != 0;
            if !matches!(h.op, ws::OP_TEXT | ws::OP_BINARY)
                || (h.rsv != 0 && !(compressed && agreed))
            {
                return self.ws_protocol(key, buf.len());
            }
            let end = if h.fin {
                h.at + h.len
            } else {
                match ws::message_end(rest, MAX_FRAME) {
                    Ok(Some(end)) => end,
                    Ok(None) => return pos,
                    Err(_) => return self.ws_protocol(key, buf.len()),
                }
            };
            pos += end;
            let delivered = if h.fin && !compressed {
                // The common case: one frame, as it lies in the read buffer.
                self.count(false, h.at + h.len, h.len);
                on_msg(self, key, h.op, &rest[h.at..end])
            } else {
                self.message(key, h, &rest[..end], &mut on_msg)
            };
            if !delivered {
                return buf.len();
            }
        }
        pos
    }

    /// A message of several frames or a compressed one, whole in `frames` (its first frame's
    /// header `h` at the start; control frames between fragments handled on the way): inflated or
    /// joined, then to `on_msg`. `false`: the connection was dropped.
    fn message<F>(&mut self, key: usize, h: Header, frames: &[u8], on_msg: &mut F) -> bool
    where
        F: FnMut(&mut Worker, usize, u8, &[u8]) -> bool,
    {
        let compressed = h.rsv == ws::RSV1;
        // The DEFLATE state: the connection's own (the server keeps its context), or the
        // worker's (reset for each message). Taken out while in use, put back before `on_msg`
        // (which may drop the connection).
        let (mut d, reset): (Option<Decompress>, bool) = if compressed {
            match self.inflate_own.get_mut(key).and_then(Option::take) {
                Some(d) => (Some(d), false),
                None => (self.inflate_shared.take(), true),
            }
        } else {
            (None, true)
        };
        let mut inf = std::mem::take(&mut self.inflater);
        let mut joined = std::mem::take(&mut self.ws_message);
        joined.clear();
        if let Some(d) = d.as_mut() {
            inf.begin(d, reset);
        }
        let mut outcome: Result<(), InflateError> = Ok(());
        let mut open = true;
        let mut pos = 0;
        while let Some(f) = ws::header(&frames[pos..]) {
            let payload = &frames[pos + f.at..pos + f.at + f.len];
            pos += f.at + f.len;
            if f.op & 0x8 != 0 {
                open = self.control(key, f.op, payload);
                if !open {
                    break;
                }
                continue;
            }
            self.count(compressed, f.at + f.len, 0);
            match d.as_mut() {
                Some(d) if outcome.is_ok() => outcome = inf.push(d, payload, MAX_FRAME),
                Some(_) => {}
                None if compressed => outcome = Err(InflateError::Corrupt),
                None => joined.extend_from_slice(payload),
            }
        }
        if let (Some(d), true, Ok(())) = (d.as_mut(), open, &outcome) {
            outcome = inf.finish(d, MAX_FRAME);
        }
        // Back where it came from (the connection's own only if the connection is still
        // there: a close among the fragments dropped it, and the slot may be reused).
        if let Some(d) = d {
            if reset {
                self.inflate_shared = Some(d);
            } else if self.conns.contains(key) {
                self.inflate_own[key] = Some(d);
            }
        }
        let delivered = if !open {
            // A close among the fragments: the connection is gone (`control` said so).
            false
        } else if outcome.is_err() {
            self.errors.inflate += 1;
            self.drop_conn(key);
            false
        } else {
            let payload = if compressed { inf.output() } else { &joined };
            self.ws.payload_bytes += payload.len() as u64;
            on_msg(self, key, h.op, payload)
        };
        self.inflater = inf;
        self.ws_message = joined;
        delivered
    }

    /// Counts a data frame of `wire` bytes (header and payload) and `payload` bytes delivered.
    fn count(&mut self, compressed: bool, wire: usize, payload: usize) {
        let w = &mut self.ws;
        if compressed {
            w.frames_compressed += 1;
        } else {
            w.frames_uncompressed += 1;
        }
        w.wire_bytes += wire as u64;
        w.payload_bytes += payload as u64;
    }

    /// A control frame: a ping is answered (a masked pong, as a client must), a close ends the
    /// connection (`false`: it is gone), a pong is nothing.
    fn control(&mut self, key: usize, op: u8, payload: &[u8]) -> bool {
        match op {
            ws::OP_PING => {
                let pong = ws::client_frame(ws::OP_PONG, payload);
                let tls = self.sessions.get_mut(key).and_then(|s| s.as_deref_mut());
                let _ = send(&self.conns[key].sock, tls, &pong, &mut self.tls_out);
                true
            }
            ws::OP_CLOSE => {
                self.closed_by_server(key);
                false
            }
            _ => true,
        }
    }

    /// Frames flood cannot follow (RSV bits not agreed, a stray continuation, a reserved
    /// opcode, a message interrupted by another): a protocol error, the connection is dropped.
    /// Returns `used`.
    fn ws_protocol(&mut self, key: usize, used: usize) -> usize {
        self.errors.protocol += 1;
        self.drop_conn(key);
        used
    }
}
