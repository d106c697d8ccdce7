//! The wire work of a worker's connections, one transport at a time: the requests written
//! (long-poll polls, Bayeux requests, Socket.IO packets and polls) and what is read after the
//! response head (WebSocket frames, SSE events, long-poll answers, Bayeux replies, Engine.IO
//! packets). Parsing itself is sans-IO, in [`crate::ws`], [`crate::sse`], [`crate::longpoll`],
//! [`crate::bayeux`] and [`crate::socketio`].

use std::io::{self, Write};

use super::tls::send;
use super::{AFTER_CR, MAX_FRAME, MAX_HEAD, NO_CURSOR, SIO_PONG, St, Transport, UNSENT, Worker};
use crate::bayeux::{self, ClientId, ConnType, Event, Unit};
use crate::socketio::{self, Arg, Packet, SioTransport};
use crate::{http, longpoll, sse, ws};

impl Worker {
    /// Writes the Bayeux request of `key`'s phase: handshake, subscribe, first connect, connect.
    /// If the socket would block, the request is marked [`UNSENT`] and written on the next
    /// writable event.
    pub(super) fn send_bayeux(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.conns[key];
        let what = match c.st {
            St::Handshake => bayeux::Request::Handshake,
            St::Subscribe => bayeux::Request::Subscribe,
            St::FirstConnect => bayeux::Request::FirstConnect,
            _ => bayeux::Request::Connect,
        };
        let id = c.last_id + 1;
        let t = self.plan.bayeux;
        self.client_ids[key].write(&mut self.client_text);
        bayeux::request(
            &mut self.bayeux_body,
            what,
            id,
            t,
            &self.client_text,
            // The Bayeux channel name, built from a `String` in `run`: always UTF-8.
            std::str::from_utf8(&self.request[c.chan as usize]).unwrap_or("/"),
        );
        if let (bayeux::Request::Handshake, Some(t)) = (what, &self.plan.token) {
            bayeux::add_token(&mut self.bayeux_body, t);
        }
        let b = &mut self.poll_buf;
        b.clear();
        bayeux::frame_request(
            b,
            t,
            &self.plan.bayeux_path,
            &self.plan.host,
            &self.bayeux_body,
        );
        let tls = self.sessions.get_mut(key).and_then(|s| s.as_deref_mut());
        match send(&c.sock, tls, b, &mut self.tls_out) {
            Ok(n) if n == b.len() => {
                c.flags &= !UNSENT;
                c.last_id = id;
                Ok(())
            }
            Ok(_) => Err(io::Error::other("short write of a Bayeux request")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.flags |= UNSENT;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the next long-poll request of `key` (with its cursor, if it has one). `Ok(true)`:
    /// sent, the connection is `Open`; `Ok(false)`: the socket would block, it waits (as
    /// `Connecting` or `Resend`) for the next writable event.
    pub(super) fn send_poll(&mut self, key: usize) -> io::Result<bool> {
        let c = &mut self.conns[key];
        let b = &mut self.poll_buf;
        b.clear();
        b.extend_from_slice(&self.request[c.chan as usize]);
        if c.last_id != NO_CURSOR {
            let _ = write!(b, "?cursor={}", c.last_id);
        }
        let _ = write!(
            b,
            " HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n",
            self.plan.host
        );
        if let Some(t) = &self.plan.token {
            let _ = write!(b, "Authorization: Bearer {t}\r\n");
        }
        b.extend_from_slice(b"\r\n");
        let tls = self.sessions.get_mut(key).and_then(|s| s.as_deref_mut());
        match send(&c.sock, tls, b, &mut self.tls_out) {
            Ok(n) if n == b.len() => {
                c.st = St::Open;
                Ok(true)
            }
            Ok(_) => Err(io::Error::other("short write of a poll")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if c.st != St::Connecting {
                    c.st = St::Resend;
                }
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Handles received bytes; returns how many were used (the rest is an incomplete unit).
    pub(super) fn consume(&mut self, key: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        if self.conns[key].st == St::Upgrading {
            let Some(end) = http::head_end(buf) else {
                if buf.len() > MAX_HEAD {
                    self.errors.http_status += 1;
                    self.drop_conn(key);
                    return buf.len();
                }
                return 0;
            };
            let upgrade = matches!(
                self.plan.transport,
                Transport::Ws | Transport::Bayeux | Transport::Socketio
            );
            let want: &[u8] = if upgrade {
                b"HTTP/1.1 101"
            } else {
                b"HTTP/1.1 200"
            };
            if !buf.starts_with(want) {
                self.errors.http_status += 1;
                self.drop_conn(key);
                return buf.len();
            }
            if upgrade && !self.extensions(key, &buf[..end]) {
                return buf.len();
            }
            pos = end + 4;
            if self.plan.transport == Transport::Socketio {
                // The server speaks first: the open packet.
                self.conns[key].st = St::Handshake;
            } else if self.plan.transport == Transport::Bayeux {
                // Over the WebSocket, the handshake comes next; open after the first connect.
                self.conns[key].st = St::Handshake;
                if let Err(e) = self.send_bayeux(key) {
                    self.fail(key, &e);
                    return buf.len();
                }
            } else {
                self.conns[key].st = St::Open;
                self.in_flight -= 1;
                self.established += 1;
                self.opened += 1;
            }
        }
        match self.plan.transport {
            Transport::Ws => self.consume_ws(key, buf, pos, |w, key, _op, payload| {
                w.on_message(key, payload);
                true
            }),
            Transport::Sse => self.consume_events(key, buf, pos),
            Transport::Longpoll => self.consume_answers(key, buf),
            // Over a WebSocket, a JSON array per text frame.
            Transport::Bayeux if self.plan.bayeux == ConnType::WebSocket => {
                self.consume_ws(key, buf, pos, |w, key, op, body| {
                    op != ws::OP_TEXT || w.on_bayeux(key, body)
                })
            }
            Transport::Bayeux => self.consume_bayeux(key, buf, pos),
            Transport::Socketio => match self.plan.socketio {
                // One Engine.IO packet per text frame (binary attachments ignored).
                SioTransport::WebSocket => self.consume_ws(key, buf, pos, |w, key, op, p| {
                    op != ws::OP_TEXT || w.on_sio_packet(key, p)
                }),
                SioTransport::Polling => self.consume_sio_polls(key, buf),
            },
        }
    }

    /// Socket.IO: writes what `key`'s phase sends next. Over a WebSocket only the CONNECT
    /// (pongs are written where the ping is read). Over polling the request outstanding: the
    /// handshake `GET`, the `POST` of the CONNECT, the `POST 3` of a pong ([`SIO_PONG`]) or the
    /// next `GET`. If the socket would block, it is marked [`UNSENT`] and written on the next
    /// writable event.
    pub(super) fn send_sio(&mut self, key: usize) -> io::Result<()> {
        let c = &mut self.conns[key];
        let b = &mut self.poll_buf;
        b.clear();
        match self.plan.socketio {
            SioTransport::WebSocket => {
                ws::client_frame_into(b, ws::OP_TEXT, &self.request[c.chan as usize]);
            }
            SioTransport::Polling => {
                self.client_ids[key].write(&mut self.client_text);
                let body: Option<&[u8]> = if c.flags & SIO_PONG != 0 {
                    Some(b"3")
                } else if c.st == St::Subscribe {
                    Some(&self.request[c.chan as usize])
                } else {
                    None
                };
                socketio::poll_request(
                    b,
                    &self.plan.socketio_path,
                    &self.plan.host,
                    &self.client_text,
                    body,
                );
            }
        }
        let tls = self.sessions.get_mut(key).and_then(|s| s.as_deref_mut());
        match send(&c.sock, tls, b, &mut self.tls_out) {
            Ok(n) if n == b.len() => {
                c.flags &= !UNSENT;
                Ok(())
            }
            Ok(_) => Err(io::Error::other("short write of a Socket.IO request")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.flags |= UNSENT;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Socket.IO over polling: complete responses, each answering the one request outstanding;
    /// after each, the next request.
    fn consume_sio_polls(&mut self, key: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let r = match longpoll::response(&buf[pos..], MAX_FRAME) {
                Ok(Some(r)) => r,
                Ok(None) => return pos,
                Err(_) => return self.sio_confused(key, buf.len()),
            };
            pos += r.len;
            if r.status != 200 {
                self.errors.http_status += 1;
                self.drop_conn(key);
                return buf.len();
            }
            let c = &mut self.conns[key];
            if c.flags & UNSENT != 0 {
                // Answered before it was written: the server is not answering us.
                return self.sio_confused(key, buf.len());
            }
            if c.flags & SIO_PONG != 0 {
                // The pong's `ok`; the `GET` follows.
                c.flags &= !SIO_PONG;
            } else if c.st == St::Subscribe {
                // The CONNECT's `ok`; its answer comes in a `GET`.
                c.st = St::FirstConnect;
            } else {
                for p in socketio::packets(r.body) {
                    if !self.on_sio_packet(key, p) {
                        return buf.len();
                    }
                }
            }
            if let Err(e) = self.send_sio(key) {
                self.fail(key, &e);
                return buf.len();
            }
        }
        pos
    }

    /// One Engine.IO packet on `key`. `false`: the connection was dropped.
    fn on_sio_packet(&mut self, key: usize, p: &[u8]) -> bool {
        let polling = self.plan.socketio == SioTransport::Polling;
        let packet = match socketio::packet(p) {
            Ok(packet) => packet,
            Err(_) => {
                self.sio_confused(key, 0);
                return false;
            }
        };
        let st = self.conns[key].st;
        match packet {
            Packet::Event { name, arg } if st == St::Open => {
                if name == self.plan.socketio_event {
                    let payload = match &arg {
                        Arg::Text(s) => s.as_bytes(),
                        // Valid JSON, not flood's payload: delivered, counted as foreign.
                        Arg::NotText | Arg::Absent => b"",
                    };
                    self.on_message(key, payload);
                } else if name == socketio::GAP_EVENT {
                    // edgecomet: messages this process never received (`--broker`).
                    self.gap(key);
                }
            }
            Packet::Ping => {
                if polling {
                    // Answered by a `POST 3` once this response is handled.
                    self.conns[key].flags |= SIO_PONG;
                } else {
                    let mut pong = Vec::with_capacity(8);
                    ws::client_frame_into(&mut pong, ws::OP_TEXT, b"3");
                    let tls = self.sessions.get_mut(key).and_then(|s| s.as_deref_mut());
                    if let Err(e) = send(&self.conns[key].sock, tls, &pong, &mut self.tls_out)
                        && e.kind() != io::ErrorKind::WouldBlock
                    {
                        self.fail(key, &e);
                        return false;
                    }
                }
            }
            Packet::Open { sid } if st == St::Handshake => {
                self.conns[key].st = St::Subscribe;
                if polling {
                    // The `POST` of the CONNECT goes out once this response is handled.
                    self.client_ids[key] = ClientId::new(&sid);
                } else if let Err(e) = self.send_sio(key) {
                    self.fail(key, &e);
                    return false;
                }
            }
            Packet::Connect
                if (st == St::Subscribe && !polling) || (st == St::FirstConnect && polling) =>
            {
                self.conns[key].st = St::Open;
                self.in_flight -= 1;
                self.established += 1;
                self.opened += 1;
            }
            Packet::ConnectError(_) => {
                self.errors.socketio += 1;
                self.drop_conn(key);
                return false;
            }
            Packet::Close | Packet::Disconnect => {
                self.closed_by_server(key);
                return false;
            }
            Packet::Other => {}
            // A packet out of place (an event before the CONNECT's answer, a second open).
            _ => {
                self.sio_confused(key, 0);
                return false;
            }
        }
        true
    }

    /// Socket.IO input flood cannot follow: a protocol error, the connection is dropped.
    /// Returns `used` (what the caller returns as consumed).
    fn sio_confused(&mut self, key: usize, used: usize) -> usize {
        self.errors.protocol += 1;
        self.drop_conn(key);
        used
    }

    /// Bayeux over long-polling: complete replies (HTTP responses; over a WebSocket the frames
    /// go through `consume_ws`). After the reply to each request, the next request.
    fn consume_bayeux(&mut self, key: usize, buf: &[u8], mut pos: usize) -> usize {
        let t = self.plan.bayeux;
        while pos < buf.len() {
            let (unit, len) = match bayeux::next_unit(&buf[pos..], t, MAX_FRAME) {
                Ok(Some(u)) => u,
                Ok(None) => return pos,
                Err(_) => {
                    self.errors.protocol += 1;
                    self.drop_conn(key);
                    return buf.len();
                }
            };
            pos += len;
            match unit {
                Unit::Body(body) => {
                    if !self.on_bayeux(key, body) {
                        return buf.len();
                    }
                }
                Unit::Status(_) => {
                    self.errors.http_status += 1;
                    self.drop_conn(key);
                    return buf.len();
                }
                Unit::Ping(p) => {
                    let pong = ws::client_frame(ws::OP_PONG, p);
                    let tls = self.sessions.get_mut(key).and_then(|s| s.as_deref_mut());
                    let _ = send(&self.conns[key].sock, tls, &pong, &mut self.tls_out);
                }
                Unit::Close => {
                    self.closed_by_server(key);
                    return buf.len();
                }
                Unit::Ignored => {}
            }
        }
        pos
    }

    /// One Bayeux reply body: deliveries are counted; the reply to the outstanding request
    /// moves the client to its next phase and sends the next request. `false`: the connection
    /// was dropped (a failed meta reply, or a reply flood cannot follow).
    fn on_bayeux(&mut self, key: usize, body: &[u8]) -> bool {
        let Ok(events) = bayeux::replies(body) else {
            self.errors.protocol += 1;
            self.drop_conn(key);
            return false;
        };
        // The outstanding request was answered (at most one reply per body: one request at a
        // time).
        let mut answered = false;
        for ev in events {
            let st = self.conns[key].st;
            let next = match ev {
                Event::Delivery(data) => {
                    self.on_message(key, data.as_deref().map_or(b"", str::as_bytes));
                    continue;
                }
                Event::Other => continue,
                Event::Failed { .. } => {
                    self.errors.bayeux += 1;
                    self.drop_conn(key);
                    return false;
                }
                Event::Handshake { client_id } if st == St::Handshake && !answered => {
                    self.client_ids[key] = ClientId::new(&client_id);
                    St::Subscribe
                }
                Event::Subscribe if st == St::Subscribe && !answered => St::FirstConnect,
                Event::Connect { dropped } if !answered => {
                    if dropped > 0 {
                        // Messages dropped from the queue: a gap the server reports.
                        self.gap(key);
                    }
                    match st {
                        St::FirstConnect => {
                            self.in_flight -= 1;
                            self.established += 1;
                            self.opened += 1;
                        }
                        St::Open => {}
                        _ => return self.bayeux_confused(key),
                    }
                    St::Open
                }
                // A reply to a request that is not outstanding.
                _ => return self.bayeux_confused(key),
            };
            answered = true;
            let c = &mut self.conns[key];
            c.st = next;
            if c.flags & UNSENT != 0 {
                // Answered before it was written: the server is not answering us.
                return self.bayeux_confused(key);
            }
        }
        if !answered {
            // Over long-polling every response answers the request sent; over a WebSocket,
            // frames of deliveries alone are normal.
            if self.plan.bayeux == ConnType::LongPolling {
                return self.bayeux_confused(key);
            }
            return true;
        }
        if let Err(e) = self.send_bayeux(key) {
            self.fail(key, &e);
            return false;
        }
        true
    }

    /// A reply flood cannot place: a protocol error, the connection is dropped.
    fn bayeux_confused(&mut self, key: usize) -> bool {
        self.errors.protocol += 1;
        self.drop_conn(key);
        false
    }

    /// SSE: the event stream after the response head.
    fn consume_events(&mut self, key: usize, buf: &[u8], pos: usize) -> usize {
        let mut after_cr = self.conns[key].flags & AFTER_CR != 0;
        let mut data = std::mem::take(&mut self.sse_data);
        let used = sse::parse(&buf[pos..], &mut after_cr, &mut data, |ev| match ev.kind {
            sse::Kind::Message => self.on_message(key, ev.data),
            sse::Kind::Gap => self.gap(key),
            sse::Kind::Other => self.foreign += 1,
        });
        self.sse_data = data;
        let c = &mut self.conns[key];
        c.flags = if after_cr {
            c.flags | AFTER_CR
        } else {
            c.flags & !AFTER_CR
        };
        if buf.len() - (pos + used) > MAX_FRAME {
            self.errors.protocol += 1;
            self.drop_conn(key);
            return buf.len();
        }
        pos + used
    }

    /// Long-poll: complete answers (head and body); after each, the next poll.
    fn consume_answers(&mut self, key: usize, buf: &[u8]) -> usize {
        let mut pos = 0;
        while pos < buf.len() {
            let r = match longpoll::response(&buf[pos..], MAX_FRAME) {
                Ok(Some(r)) => r,
                Ok(None) => return pos,
                Err(_) => {
                    self.errors.protocol += 1;
                    self.drop_conn(key);
                    return buf.len();
                }
            };
            pos += r.len;
            if r.status != 200 {
                self.errors.http_status += 1;
                self.drop_conn(key);
                return buf.len();
            }
            let Ok(answer) = longpoll::answer(r.body) else {
                self.errors.protocol += 1;
                self.drop_conn(key);
                return buf.len();
            };
            let Some(cursor) = answer.cursor_id() else {
                self.errors.protocol += 1;
                self.drop_conn(key);
                return buf.len();
            };
            if answer.gap.is_some() {
                self.gap(key);
            }
            for m in &answer.messages {
                self.on_message(key, m.data.as_bytes());
            }
            self.conns[key].last_id = cursor;
            if let Err(e) = self.send_poll(key) {
                self.fail(key, &e);
                return buf.len();
            }
        }
        pos
    }
}
