//! WebSocket on the worker: the upgrade of `/sub/{channel}` (with `?envelope=1` and a resume
//! cursor) and `/echo`, liveness (pings after `--ws-ping-interval` of silence), and what clients
//! send: frames through the sans-IO reader, echoes, pongs, close, messages from subscribers
//! (`--client-publish`), Bayeux arrays handed to the Bayeux glue.

use bytes::Bytes;

use super::Worker;
use super::conn_io::{Dead, Handled};
use super::publish::PubError;
use super::transports;
use crate::proto::http;
use crate::proto::ws::deflate::{self, Agreed};
use crate::proto::ws::frame::{self, OP_BINARY, OP_PONG, OP_TEXT, close_code};
use crate::proto::ws::handshake;
use crate::proto::ws::reader::{Event, Fail};
use crate::proto::ws::utf8;
use crate::pubsub;
use crate::runtime::conn::{Ext, Phase, Proto, flag};
use crate::stats::WorkerStats;

/// The answer to a client's close frame: its code echoed, or an empty close.
pub(super) fn close_reply(code: Option<u16>) -> Bytes {
    match code {
        Some(c) => frame::close_frame(c, ""),
        None => frame::frame(frame::OP_CLOSE, &[]),
    }
}

/// A client message as the application sees it: a compressed one (permessage-deflate) inflated
/// within `max` bytes by the worker's inflater and, for text, checked as UTF-8; or the close
/// frame that says why not (counted).
pub(super) fn inflated(
    stats: &WorkerStats,
    text: bool,
    compressed: bool,
    payload: Vec<u8>,
    max: u32,
) -> Result<Vec<u8>, Bytes> {
    if !compressed {
        return Ok(payload);
    }
    WorkerStats::add(&stats.ws_deflated_in, 1);
    let mut out = Vec::new();
    if let Err(e) = deflate::inflate(&payload, max as usize, &mut out) {
        let counter = match e {
            deflate::InflateError::TooBig => &stats.ws_inflate_too_big,
            deflate::InflateError::Corrupt => &stats.ws_inflate_errors,
        };
        WorkerStats::add(counter, 1);
        return Err(frame::close_frame(e.close_code(), e.reason()));
    }
    if text && !utf8::is_valid(&out) {
        WorkerStats::add(&stats.ws_protocol_errors, 1);
        return Err(frame::close_frame(
            close_code::INVALID_DATA,
            "invalid UTF-8 in text message",
        ));
    }
    Ok(out)
}

/// A data frame made for one connection (an echo, a Bayeux reply, a Socket.IO packet),
/// compressed when it agreed to permessage-deflate and the payload is at least `min` bytes and
/// shrinks (counted). Such a frame is compressed for that connection alone; published messages
/// are compressed once for all (`Message::ws_frame_deflated`).
pub(super) fn outgoing(
    stats: &WorkerStats,
    agreed: Option<Agreed>,
    min: u32,
    plain: Bytes,
) -> Bytes {
    match agreed {
        Some(a) if deflate::may_compress(a, &plain) => {
            let z = deflate::compress_frames(&plain, min as usize);
            if z.as_ptr() != plain.as_ptr() {
                WorkerStats::add(&stats.ws_deflated_out, 1);
            }
            z
        }
        _ => plain,
    }
}

impl Worker {
    /// `outgoing` for connection `idx`.
    pub(super) fn ws_out(&self, idx: usize, plain: Bytes) -> Bytes {
        outgoing(
            &self.stats,
            self.conns[idx].deflate(),
            self.cfg.deflate_min_bytes,
            plain,
        )
    }

    /// A frame the reader refused: counted (1009 as too big, the rest as protocol errors), and
    /// the close frame that says why.
    pub(super) fn ws_failed(&self, Fail { code, reason }: Fail) -> Bytes {
        let counter = if code == close_code::TOO_BIG {
            &self.stats.ws_too_big
        } else {
            &self.stats.ws_protocol_errors
        };
        WorkerStats::add(counter, 1);
        frame::close_frame(code, reason)
    }

    pub(super) fn upgrade(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        channel: Option<&str>,
    ) -> Handled {
        // `?envelope=1`: messages as {"id":..,"data":..}, and a cursor resumes (raw frames
        // carry no id, so a cursor without the envelope could never be used).
        let mut envelope = false;
        let mut cursor = None;
        if let Some(ch) = channel {
            if !pubsub::valid_channel(ch, self.cfg.max_channel_len) {
                return self.bad_request(idx, "invalid channel name\n", false);
            }
            envelope = match http::query_param(head.path, "envelope") {
                None | Some("0") => false,
                Some("1") => true,
                Some(_) => return self.bad_request(idx, "envelope must be 0 or 1\n", false),
            };
            cursor = match transports::request_cursor(head) {
                Ok(c) => c,
                Err(why) => return self.bad_request(idx, why, false),
            };
            if cursor.is_some() && !envelope {
                return self.bad_request(
                    idx,
                    "a cursor / Last-Event-ID needs ?envelope=1 (raw frames carry no id)\n",
                    false,
                );
            }
            if !self.channels.admits(ch) {
                WorkerStats::add(&self.stats.channel_limit, 1);
                return self.respond_error(
                    idx,
                    503,
                    "Service Unavailable",
                    "",
                    "channel limit reached\n",
                    false,
                );
            }
        }
        let Some(resp) = self.accept_upgrade(idx, head)? else {
            return Ok(());
        };
        let conn = &mut self.conns[idx];
        let phase = match channel {
            Some(_) => Phase::WsSub,
            None => Phase::WsEcho,
        };
        conn.upgrade(phase, None, &self.stats);
        let mut first = vec![Bytes::from(resp)];
        if let Some(ch) = channel {
            if envelope {
                conn.set(flag::ENVELOPE);
            }
            self.subscribe(idx, ch);
            if cursor.is_some() {
                let since = self.shared.hub.since(ch, cursor);
                if since.gap.is_gap() {
                    WorkerStats::add(&self.stats.gaps_reported, 1);
                    let gap = format!("{{\"gap\":{}}}", since.gap.json());
                    first.push(frame::frame(OP_TEXT, gap.as_bytes()));
                }
                WorkerStats::add(&self.stats.messages_out, since.msgs.len() as u64);
                let agreed = self.conns[idx].deflate();
                let min = self.cfg.deflate_min_bytes as usize;
                first.extend(since.msgs.iter().map(|m| {
                    deflate::choose(agreed, m.ws_envelope(), || m.ws_envelope_deflated(min)).clone()
                }));
                let z = deflate::count_compressed(&first[1..]);
                WorkerStats::add(&self.stats.ws_deflated_out, z as u64);
                // Messages at or below the cursor may still be on their way to this worker
                // (in its inbox or this turn's pending): this turn's fan-out skips them.
                let generation = self.conns[idx].generation;
                self.resumed.insert((idx as u32, generation), since.cursor);
            }
        }
        self.ws_activity(idx);
        self.send(idx, &first[..1], false)?;
        if first.len() > 1 {
            self.send(idx, &first[1..], true)?;
            self.over_backlog(idx)?;
        }
        Ok(())
    }

    /// Checks an upgrade request: the `101` answer to send (the caller then moves the connection
    /// on: [`Conn::upgrade`](crate::runtime::conn::Conn::upgrade)), or `None` when it was refused
    /// (answered and closing). What permessage-deflate agreed is recorded on the connection
    /// here ([`Conn::set_deflate`](crate::runtime::conn::Conn::set_deflate)).
    pub(super) fn accept_upgrade(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
    ) -> Result<Option<Vec<u8>>, Dead> {
        match handshake::accept(head, &self.date, self.cfg.deflate.on()) {
            Ok(a) => {
                if a.deflate.is_some() {
                    WorkerStats::add(&self.stats.ws_deflate_agreed, 1);
                }
                self.conns[idx].set_deflate(a.deflate);
                Ok(Some(a.response))
            }
            Err(e) => {
                WorkerStats::add(&self.stats.http_errors, 1);
                self.respond(idx, e.response(&self.date), false)?;
                Ok(None)
            }
        }
    }

    /// Any input from a WebSocket client proves it alive: push the ping back.
    pub(super) fn ws_activity(&mut self, idx: usize) {
        if self.conns[idx].phase == Phase::BayeuxWs {
            // The Bayeux connect cycle is its liveness check (see `bayeux_ws_arm`).
            return self.bayeux_ws_arm(idx);
        }
        let conn = &mut self.conns[idx];
        conn.clear(flag::PING_OUT);
        let at = match self.cfg.ws_ping_interval {
            0 => 0,
            secs => self.after(secs),
        };
        self.set_deadline(idx, at);
    }

    pub(super) fn ws_input(&mut self, idx: usize, buf: &mut [u8]) -> Result<usize, Dead> {
        self.ws_activity(idx);
        let max = self.cfg.max_message_bytes;
        let stats = &*self.stats;
        let client_publish = self.cfg.client_publish;
        let conn = &mut self.conns[idx];
        // With subscribe tokens, the token must have named the channel in `publish`.
        let token_allows = !self.cfg.tokens_configured() || conn.has(flag::MAY_PUBLISH);
        let echo = conn.phase == Phase::WsEcho;
        let bayeux = conn.phase == Phase::BayeuxWs;
        let deflate = conn.deflate();
        let min = self.cfg.deflate_min_bytes;
        // Echo, Bayeux and (with --client-publish) subscribers assemble what the client sends.
        let keep = echo || bayeux || client_publish;
        // Replies are collected first and sent after the reader returns (control frames are
        // tiny; an echoed message is one buffer). The flag marks data (droppable) frames.
        let mut replies: Vec<(Bytes, bool)> = Vec::new();
        let mut close: Option<Bytes> = None;
        // Complete text messages of a subscriber, to publish once the reader returns.
        let mut to_publish: Vec<Vec<u8>> = Vec::new();
        // Complete Bayeux messages (JSON arrays), processed once the reader returns.
        let mut bayeux_in: Vec<Vec<u8>> = Vec::new();
        let ext = &mut conn.ext;
        let Proto::Ws(reader) = &mut conn.proto else {
            return Ok(buf.len());
        };
        let res = reader.feed(buf, max, deflate.is_some(), |ev| match ev {
            Event::Data { chunk, .. } => {
                if keep {
                    match ext
                        .get_or_insert_with(|| Box::new(Ext::Msg(Vec::new())))
                        .as_mut()
                    {
                        Ext::Msg(m) => m.extend_from_slice(chunk),
                        Ext::BayeuxWs(s) => s.msg.get_or_insert_default().extend_from_slice(chunk),
                        _ => {}
                    }
                }
            }
            Event::End { text, compressed } => {
                WorkerStats::add(&stats.ws_messages_in, 1);
                let payload = if bayeux {
                    match ext.as_deref_mut() {
                        Some(Ext::BayeuxWs(s)) => s.msg.take().map(|m| *m).unwrap_or_default(),
                        _ => Vec::new(),
                    }
                } else {
                    match ext.take().map(|b| *b) {
                        Some(Ext::Msg(m)) => m,
                        _ => Vec::new(),
                    }
                };
                let payload = match keep && close.is_none() {
                    true => match inflated(stats, text, compressed, payload, max) {
                        Ok(p) => p,
                        Err(c) => {
                            close = Some(c);
                            return;
                        }
                    },
                    false => payload,
                };
                if bayeux {
                    if !text {
                        close.get_or_insert_with(|| {
                            frame::close_frame(
                                close_code::UNSUPPORTED,
                                "Bayeux messages are JSON in text frames",
                            )
                        });
                    } else if close.is_none() {
                        bayeux_in.push(payload);
                    }
                } else if echo && close.is_none() {
                    let op = if text { OP_TEXT } else { OP_BINARY };
                    let f = outgoing(stats, deflate, min, frame::frame(op, &payload));
                    replies.push((f, true));
                } else if close.is_none() {
                    // A subscriber speaks: a message from the client.
                    if !text {
                        close = Some(frame::close_frame(
                            close_code::UNSUPPORTED,
                            "binary messages are not accepted",
                        ));
                    } else if !client_publish {
                        WorkerStats::add(&stats.client_publish_refused, 1);
                        close = Some(frame::close_frame(
                            close_code::POLICY,
                            "client publish disabled",
                        ));
                    } else if !token_allows {
                        WorkerStats::add(&stats.auth_token_channel, 1);
                        close = Some(frame::close_frame(
                            close_code::POLICY,
                            "the token does not allow publishing to this channel",
                        ));
                    } else {
                        to_publish.push(payload);
                    }
                }
            }
            Event::Ping(p) => replies.push((frame::frame(OP_PONG, p), false)),
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
        for (reply, data) in replies {
            self.send(idx, &[reply], data)?;
        }
        for payload in bayeux_in {
            if close.is_some() {
                break;
            }
            close = self.bayeux_ws_message(idx, payload)?;
            if self.conns[idx].phase != Phase::BayeuxWs {
                // Closed as a slow consumer while answering: the rest is not processed.
                return Ok(buf.len());
            }
        }
        if !to_publish.is_empty() {
            let chan = self.conns[idx].chan;
            if let Some(name) = self.channels.name(chan).cloned() {
                for payload in to_publish {
                    // Text frames are UTF-8 (checked by the reader).
                    match self.publish_message(&name, Bytes::from(payload), None) {
                        Ok(_) => WorkerStats::add(&self.stats.client_messages, 1),
                        Err(PubError::Inbox(_)) => WorkerStats::add(&self.stats.client_messages, 1),
                        Err(PubError::Channels) => {
                            WorkerStats::add(&self.stats.channel_limit, 1);
                            close = Some(frame::close_frame(
                                close_code::TRY_AGAIN_LATER,
                                "channel limit reached",
                            ));
                            break;
                        }
                        Err(PubError::Broker(_)) => {
                            // Counted (broker_publish_refused); the client is told rather
                            // than losing what it sends silently.
                            close = Some(frame::close_frame(
                                close_code::TRY_AGAIN_LATER,
                                "broker unavailable",
                            ));
                            break;
                        }
                        Err(PubError::Draining) => {
                            // Counted (refused_draining): not published, and the client is
                            // told so by the close.
                            close = Some(frame::close_frame(
                                close_code::GOING_AWAY,
                                "server shutting down",
                            ));
                            break;
                        }
                    }
                }
            }
        }
        if self.over_backlog(idx)? {
            return Ok(buf.len());
        }
        if let Some(c) = close {
            self.begin_close(idx, Some(c))?;
            return Ok(buf.len());
        }
        Ok(consumed)
    }
}
