//! Socket.IO over WebSocket: frames to the session's rules, and the upgrade probe.

use bytes::Bytes;

use crate::proto::ws::frame::{self, OP_TEXT, close_code};
use crate::proto::ws::reader::Event;
use crate::runtime::conn::{Ext, Phase, Proto};
use crate::runtime::worker::Worker;
use crate::runtime::worker::conn_io::Dead;
use crate::runtime::worker::ws::{close_reply, inflated};
use crate::session::socketio::Transport;
use crate::stats::WorkerStats;

impl Worker {
    /// Frames from a Socket.IO WebSocket: the session's packets, or the upgrade probe.
    pub(in crate::runtime::worker) fn sio_ws_input(
        &mut self,
        idx: usize,
        buf: &mut [u8],
    ) -> Result<usize, Dead> {
        let payload_max = u32::try_from(self.sio.settings.max_payload).unwrap_or(u32::MAX);
        let max = self.cfg.max_message_bytes.min(payload_max);
        let stats = &*self.stats;
        let conn = &mut self.conns[idx];
        let key = (idx as u32, conn.generation);
        let slot = conn.chan_pos as usize;
        let mut msgs: Vec<(bool, Vec<u8>)> = Vec::new();
        let mut replies: Vec<Bytes> = Vec::new();
        let mut close: Option<Bytes> = None;
        let deflate = conn.deflate().is_some();
        let ext = &mut conn.ext;
        let Proto::Ws(reader) = &mut conn.proto else {
            return Ok(buf.len());
        };
        let res = reader.feed(buf, max, deflate, |ev| match ev {
            Event::Data { chunk, .. } => {
                if let Ext::Msg(m) = ext
                    .get_or_insert_with(|| Box::new(Ext::Msg(Vec::new())))
                    .as_mut()
                {
                    m.extend_from_slice(chunk);
                }
            }
            Event::End { text, compressed } => {
                WorkerStats::add(&stats.ws_messages_in, 1);
                let m = match ext.take().map(|b| *b) {
                    Some(Ext::Msg(m)) => m,
                    _ => Vec::new(),
                };
                if close.is_some() {
                    return;
                }
                match inflated(stats, text, compressed, m, max) {
                    Ok(m) => msgs.push((text, m)),
                    Err(c) => close = Some(c),
                }
            }
            Event::Ping(p) => replies.push(frame::frame(frame::OP_PONG, p)),
            Event::Pong(_) => {}
            Event::Close { code, .. } => close = Some(close_reply(code)),
        });
        let consumed = match res {
            Ok(n) => n,
            Err(f) => {
                close = Some(self.ws_failed(f));
                buf.len()
            }
        };
        if !replies.is_empty() {
            self.send(idx, &replies, false)?;
        }
        let probing = self
            .sio
            .sessions
            .get(slot)
            .is_some_and(|s| s.probe() == Some(key));
        for (text, m) in msgs {
            if close.is_some() {
                break;
            }
            if !self
                .sio
                .sessions
                .get(slot)
                .is_some_and(|s| s.conn == Some(key) || s.probe() == Some(key))
            {
                break;
            }
            if probing && self.sio.sessions[slot].probe() == Some(key) {
                // The upgrade: `2probe` → `3probe` (and the held GET answered with a noop so
                // the client's polling pauses), then `5`.
                match (text, m.as_slice()) {
                    (true, b"2probe") => {
                        self.send(idx, &[frame::frame(OP_TEXT, b"3probe")], false)?;
                        self.sio.sessions[slot].transport = Transport::Probed;
                        self.sio_noop_poll(slot);
                    }
                    (true, b"5") => {
                        self.sio_noop_poll(slot);
                        self.conns[idx].deadline = 0;
                        let s = &mut self.sio.sessions[slot];
                        s.set_probe(None);
                        s.conn = Some(key);
                        s.transport = Transport::WebSocket;
                        WorkerStats::add(&self.stats.sio_upgrades, 1);
                        self.sio_send_out(slot, Some(idx))?;
                    }
                    _ => {
                        WorkerStats::add(&self.stats.sio_protocol_errors, 1);
                        close = Some(frame::close_frame(close_code::POLICY, "bad upgrade"));
                    }
                }
                continue;
            }
            if text && m.first() == Some(&b'4') {
                WorkerStats::add(&self.stats.sio_packets_in, 1);
            }
            let r = if text {
                self.sio_rules(slot, |s, st, now, env| s.on_text(&m, false, now, st, env))
            } else {
                let b = Bytes::from(m);
                self.sio_rules(slot, |s, st, _now, env| s.on_binary(b, st, env))
            };
            match r {
                Ok(()) => self.sio_send_out(slot, Some(idx))?,
                Err(why) => {
                    self.sio_end(slot, why, Some(idx))?;
                    return Ok(buf.len());
                }
            }
        }
        if let Some(c) = close {
            if self.conns.get(idx).is_some_and(|c| c.phase == Phase::SioWs) {
                self.begin_close(idx, Some(c))?;
            }
            return Ok(buf.len());
        }
        if self.conns.get(idx).is_none_or(|c| c.phase != Phase::SioWs) {
            return Ok(buf.len());
        }
        Ok(consumed)
    }

    /// The session's held GET, if any, is answered with a noop (the upgrade is under way).
    fn sio_noop_poll(&mut self, slot: usize) {
        if let Some((held, generation)) = self.sio.sessions[slot].conn.take()
            && self.is_live(held as usize, generation)
        {
            let r = self.sio_answer_held(held as usize, b"6".to_vec());
            self.settle(held as usize, r);
        }
    }
}
