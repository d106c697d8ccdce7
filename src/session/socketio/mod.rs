//! Engine.IO v4 / Socket.IO v5 sessions, sans-IO: the heartbeat, the namespaces a session has
//! joined, events and acks (binary attachments reassembled), the conformance-mode behaviours,
//! the connect timeout, and the packets waiting for a long-poll.
//!
//! A session belongs to one worker (its id says which: `sid.rs`); the runtime moves a request
//! for it that reached another worker to that one, so nothing here is shared or locked. The
//! runtime parses nothing itself: it hands each Engine.IO packet ([`Session::on_text`],
//! [`Session::on_binary`]) with the time, and an [`Env`] for what needs the rest of the server
//! (joining channels, token checks, publishing). Packets to send are left in
//! [`Session::outbox`]; the runtime writes them to the WebSocket or answers the held poll with
//! them. Deadlines (the next ping, the pong, the connect timeout) come back from
//! [`Session::due`], and [`Session::timer`] says what happens when one passes. Time is in
//! milliseconds on the caller's monotonic clock.

pub mod recovery;
pub mod sid;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use bytes::Bytes;

use crate::proto::socketio::{self as wire, Kind, Packet, SioError};

/// The settings the rules use (from the flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub max_payload: usize,
    /// Namespaces: `/` first, then `--socketio-namespaces` (at most 32 in all).
    pub namespaces: Vec<Box<str>>,
    /// `--socketio-conformance`: the behaviours of the protocol's test-suite server.
    pub conformance: bool,
    /// `--client-publish`: an event `publish` (channel, data) is published.
    pub client_publish: bool,
    /// `--socketio-recovery` (ms; 0: off): connection state recovery.
    pub recovery_ms: u64,
    /// Binary attachments allowed in one packet.
    pub max_attachments: u32,
}

impl Settings {
    /// The index of namespace `nsp`.
    pub fn namespace(&self, nsp: &str) -> Option<usize> {
        self.namespaces.iter().position(|n| &**n == nsp)
    }
}

/// A packet to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// A text packet (the Engine.IO type digit first).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Out {
    pub fn len(&self) -> usize {
        match self {
            Out::Text(b) | Out::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the session's packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP long-polling: packets wait in the outbox for a GET.
    Polling,
    /// A WebSocket for the upgrade is open; polling still carries packets.
    Upgrading,
    /// The probe was answered (`3probe`): every poll is answered at once (a noop when nothing
    /// waits) so that the client pauses polling and sends `5`.
    Probed,
    /// WebSocket: packets are written as they come.
    WebSocket,
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client sent a close packet.
    ByClient,
    /// The session's WebSocket went away (closed or broken) without a close packet.
    Transport,
    /// No pong within the ping timeout.
    PingTimeout,
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// The subscribe token the session joined its channels with has ended.
    TokenExpired,
    /// The server is shutting down.
    Shutdown,
    /// A packet that is not Engine.IO or Socket.IO, or not allowed in the session's state.
    Protocol(&'static str),
}

impl Closed {
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::ByClient => "client close",
            Closed::Transport => "transport close",
            Closed::PingTimeout => "ping timeout",
            Closed::ConnectTimeout => "connect timeout",
            Closed::TokenExpired => "token expired",
            Closed::Shutdown => "server shutting down",
            Closed::Protocol(why) => why,
        }
    }
}

/// A CONNECT the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Granted {
    /// The socket id.
    pub sid: String,
    /// With state recovery: the private id the client sends back when it reconnects (the same
    /// as before when the session was recovered).
    pub pid: Option<String>,
}

/// What the rules need from the server.
pub trait Env {
    /// A CONNECT to namespace `nsp` (an index into [`Settings::namespaces`]) with its `auth`
    /// payload (JSON object text, or empty): join what it asks for. `Err`: the
    /// CONNECT_ERROR's data (JSON).
    fn connect(&mut self, nsp: usize, auth: &str) -> Result<Granted, String>;
    /// The namespace was left (DISCONNECT): leave what its CONNECT joined.
    fn disconnect(&mut self, nsp: usize);
    /// `--client-publish`: publish `data` (JSON) on `channel`. `Err`: why not, for the ack.
    fn publish(&mut self, channel: &str, data: &str) -> Result<(), String>;
    /// A CONNECT to a namespace that does not exist was refused (for the caller's count).
    fn unknown_namespace(&mut self) {}
}

/// A binary packet waiting for its attachments.
#[derive(Debug)]
struct Partial {
    /// The packet's text (its Socket.IO part, without the Engine.IO `4`).
    text: Box<str>,
    want: u32,
    got: Vec<Bytes>,
    /// Bytes of the attachments so far: at most `max_payload` in all.
    bytes: usize,
}

/// One Engine.IO session and its Socket.IO sockets.
#[derive(Debug)]
pub struct Session {
    /// The slot's generation, and the random part of the id (`sid.rs`).
    pub generation: u32,
    pub secret: u64,
    pub transport: Transport,
    /// Polling: the held GET; WebSocket: the connection. (slot, generation)
    pub conn: Option<(u32, u32)>,
    /// Namespaces joined (bit i: `Settings::namespaces[i]`).
    joined: u32,
    /// The next deadline: a ping to send, or (`awaiting_pong`) the pong's.
    ping_due: u64,
    awaiting_pong: bool,
    /// Until when a CONNECT may come (0: one came).
    connect_by: u64,
    /// Packets waiting (for a long-poll; over WebSocket the runtime takes them at once): a box
    /// only while there are some.
    outbox: Option<Box<Outbox>>,
    /// What few sessions have: a box only when one of them is there.
    extra: Option<Box<Extra>>,
    /// Channels the session is subscribed to in the worker's table: (channel, position,
    /// namespace), exactly as many as there are.
    pub channels: Box<[(u32, u32, u8)]>,
    /// The earliest deadline the runtime's timer holds for this session (0: none).
    pub armed: u64,
    /// With state recovery, once `/` is joined: the private id and the socket id (random bits,
    /// what a [`recovery::Record`] keeps; 0: none), and the channel's last id when it was
    /// joined.
    pub pid: u64,
    pub sock: u64,
    pub joined_at: u64,
}

/// Packets waiting, and their bytes.
#[derive(Debug, Default)]
struct Outbox {
    q: VecDeque<Out>,
    bytes: usize,
}

/// The parts of a session that most sessions do without.
#[derive(Debug, Default)]
struct Extra {
    /// The handshake's query parts the `/` CONNECT also reads (`channels=`, `token=`).
    query: Option<Box<str>>,
    /// With subscribe tokens: the token the session joined its channels with (what it may
    /// publish to).
    grant: Option<crate::auth::Grant>,
    /// A binary packet waiting for its attachments.
    partial: Option<Partial>,
    /// Upgrading: the WebSocket being probed (slot, generation).
    probe: Option<(u32, u32)>,
    /// With subscribe tokens: when the token ends (ms; 0: no token).
    ends: u64,
}

impl Session {
    pub fn new(
        generation: u32,
        secret: u64,
        transport: Transport,
        now: u64,
        s: &Settings,
    ) -> Session {
        Session {
            generation,
            secret,
            transport,
            conn: None,
            joined: 0,
            ping_due: now + s.ping_interval_ms,
            awaiting_pong: false,
            connect_by: now + s.connect_timeout_ms,
            outbox: None,
            extra: None,
            channels: Box::default(),
            armed: 0,
            pid: 0,
            sock: 0,
            joined_at: 0,
        }
    }

    /// The earliest deadline.
    pub fn due(&self) -> u64 {
        [self.connect_by, self.ends()]
            .into_iter()
            .filter(|&t| t != 0)
            .fold(self.ping_due, u64::min)
    }

    /// A deadline has passed: a ping is queued (`Ok`), or the session ends.
    pub fn timer(&mut self, now: u64, s: &Settings) -> Result<(), Closed> {
        if self.connect_by != 0 && now >= self.connect_by {
            return Err(Closed::ConnectTimeout);
        }
        let ends = self.ends();
        if ends != 0 && now >= ends {
            return Err(Closed::TokenExpired);
        }
        if now >= self.ping_due {
            if self.awaiting_pong {
                return Err(Closed::PingTimeout);
            }
            self.push(Out::Text(Bytes::from_static(b"2")));
            self.awaiting_pong = true;
            self.ping_due = now + s.ping_timeout_ms;
        }
        Ok(())
    }

    /// Whether namespace `i` is joined.
    pub fn joined(&self, i: usize) -> bool {
        self.joined & (1 << i) != 0
    }

    /// Queues a packet.
    pub fn push(&mut self, o: Out) {
        let b = self.outbox.get_or_insert_with(Default::default);
        b.bytes += o.len();
        b.q.push_back(o);
    }

    /// Takes every queued packet.
    pub fn take_outbox(&mut self) -> VecDeque<Out> {
        self.outbox.take().map(|b| b.q).unwrap_or_default()
    }

    /// Whether packets wait.
    pub fn has_out(&self) -> bool {
        self.outbox.is_some()
    }

    /// (packets, bytes) waiting.
    pub fn out_size(&self) -> (usize, usize) {
        self.outbox
            .as_ref()
            .map_or((0, 0), |b| (b.q.len(), b.bytes))
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Default::default)
    }

    /// Frees the extras box when nothing is left in it.
    fn tidy(&mut self) {
        if self.extra.as_ref().is_some_and(|e| {
            e.query.is_none()
                && e.grant.is_none()
                && e.partial.is_none()
                && e.probe.is_none()
                && e.ends == 0
        }) {
            self.extra = None;
        }
    }

    /// Upgrading: the WebSocket being probed (slot, generation).
    pub fn probe(&self) -> Option<(u32, u32)> {
        self.extra.as_ref().and_then(|e| e.probe)
    }

    pub fn set_probe(&mut self, p: Option<(u32, u32)>) {
        self.extra().probe = p;
        self.tidy();
    }

    /// With subscribe tokens: when the token ends (ms; 0: no token).
    pub fn ends(&self) -> u64 {
        self.extra.as_ref().map_or(0, |e| e.ends)
    }

    pub fn set_ends(&mut self, at: u64) {
        self.extra().ends = at;
        self.tidy();
    }

    /// The handshake's `channels=` / `token=` query parts.
    pub fn query(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.query.as_deref())
    }

    pub fn set_query(&mut self, q: Box<str>) {
        self.extra().query = Some(q);
    }

    /// The token the session's channels were granted with.
    pub fn grant(&self) -> Option<&crate::auth::Grant> {
        self.extra.as_ref().and_then(|e| e.grant.as_ref())
    }

    pub fn take_grant(&mut self) -> Option<crate::auth::Grant> {
        let g = self.extra.as_mut().and_then(|e| e.grant.take());
        self.tidy();
        g
    }

    pub fn set_grant(&mut self, g: Option<crate::auth::Grant>) {
        self.extra().grant = g;
        self.tidy();
    }

    /// An Engine.IO text packet from the client (a WebSocket text frame, or one packet of a
    /// POST body: `polling`, where `b…` is binary).
    pub fn on_text(
        &mut self,
        p: &[u8],
        polling: bool,
        now: u64,
        s: &Settings,
        env: &mut dyn Env,
    ) -> Result<(), Closed> {
        match wire::parse_text(p, polling).map_err(|_| Closed::Protocol("bad packet"))? {
            Packet::Pong(_) => {
                if self.awaiting_pong {
                    self.awaiting_pong = false;
                    self.ping_due = now + s.ping_interval_ms;
                }
                Ok(())
            }
            Packet::Ping(data) => {
                // Clients of protocol 4 do not ping; answered as protocol 3 would be.
                let mut b = Vec::with_capacity(1 + data.len());
                b.push(b'3');
                b.extend_from_slice(data);
                self.push(Out::Text(Bytes::from(b)));
                Ok(())
            }
            Packet::Close => Err(Closed::ByClient),
            Packet::Noop | Packet::Upgrade => Ok(()),
            Packet::Open => Err(Closed::Protocol("open packet from the client")),
            Packet::Binary(b) => self.on_binary(Bytes::from(b), s, env),
            Packet::Message(m) => {
                let m = std::str::from_utf8(m).map_err(|_| Closed::Protocol("not UTF-8"))?;
                self.on_message(m, s, env)
            }
        }
    }

    /// A binary message: the next attachment of the packet being reassembled.
    pub fn on_binary(&mut self, b: Bytes, s: &Settings, env: &mut dyn Env) -> Result<(), Closed> {
        let Some(p) = self.extra.as_mut().and_then(|e| e.partial.as_mut()) else {
            return Err(Closed::Protocol("binary message without a binary packet"));
        };
        p.bytes += b.len();
        if p.bytes > s.max_payload {
            return Err(Closed::Protocol("attachments over --socketio-max-payload"));
        }
        p.got.push(b);
        if p.got.len() as u32 == p.want {
            let p = self.extra().partial.take().expect("present");
            self.tidy();
            let pk = wire::parse_sio(&p.text, s.max_attachments).map_err(sio_error)?;
            self.packet(pk, p.got, s, env)?;
        }
        Ok(())
    }

    fn on_message(&mut self, m: &str, s: &Settings, env: &mut dyn Env) -> Result<(), Closed> {
        if self.extra.as_ref().is_some_and(|e| e.partial.is_some()) {
            return Err(Closed::Protocol("text packet while attachments were due"));
        }
        let pk = wire::parse_sio(m, s.max_attachments).map_err(sio_error)?;
        if pk.attachments > 0 {
            self.extra().partial = Some(Partial {
                text: m.into(),
                want: pk.attachments,
                got: Vec::with_capacity(pk.attachments as usize),
                bytes: 0,
            });
            return Ok(());
        }
        self.packet(pk, Vec::new(), s, env)
    }

    fn packet(
        &mut self,
        pk: wire::SioPacket<'_>,
        att: Vec<Bytes>,
        s: &Settings,
        env: &mut dyn Env,
    ) -> Result<(), Closed> {
        let ns = s.namespace(pk.nsp);
        match pk.kind {
            Kind::Connect => {
                let Some(i) = ns else {
                    env.unknown_namespace();
                    self.text(wire::sio(
                        Kind::ConnectError,
                        pk.nsp,
                        None,
                        "{\"message\":\"Invalid namespace\"}",
                    ));
                    return Ok(());
                };
                if self.joined(i) {
                    return Err(Closed::Protocol("CONNECT to a namespace already joined"));
                }
                match env.connect(i, pk.data) {
                    Ok(g) => {
                        self.joined |= 1 << i;
                        self.connect_by = 0;
                        let reply = match &g.pid {
                            Some(pid) => format!("{{\"sid\":\"{}\",\"pid\":\"{pid}\"}}", g.sid),
                            None => format!("{{\"sid\":\"{}\"}}", g.sid),
                        };
                        self.text(wire::sio(Kind::Connect, pk.nsp, None, &reply));
                        if s.conformance {
                            let auth = if pk.data.is_empty() { "{}" } else { pk.data };
                            self.text(wire::sio(
                                Kind::Event,
                                pk.nsp,
                                None,
                                &format!("[\"auth\",{auth}]"),
                            ));
                        }
                    }
                    Err(data) => self.text(wire::sio(Kind::ConnectError, pk.nsp, None, &data)),
                }
                Ok(())
            }
            _ if !ns.is_some_and(|i| self.joined(i)) => {
                Err(Closed::Protocol("packet for a namespace not joined"))
            }
            Kind::Disconnect => {
                let i = ns.expect("checked");
                self.joined &= !(1 << i);
                env.disconnect(i);
                Ok(())
            }
            Kind::Event | Kind::BinaryEvent => self.event(pk, att, s, env),
            // Acks of server emits: the server asks for none, so there is nothing to match.
            Kind::Ack | Kind::BinaryAck => Ok(()),
            // Only servers send it; the reference server ignores one from a client.
            Kind::ConnectError => Ok(()),
        }
    }

    fn event(
        &mut self,
        pk: wire::SioPacket<'_>,
        att: Vec<Bytes>,
        s: &Settings,
        env: &mut dyn Env,
    ) -> Result<(), Closed> {
        let mut args = wire::elements(pk.data);
        let first = args.next().ok_or(Closed::Protocol("bad event name"))?;
        let name = wire::string_value(first).ok_or(Closed::Protocol("bad event name"))?;
        // The arguments after the name, as they came: `,a,b` from `["name",a,b]`.
        let rest = {
            let data = pk.data.trim_end();
            let end = first.as_ptr() as usize - data.as_ptr() as usize + first.len();
            let rest = &data[end..data.len() - 1];
            if rest.trim().is_empty() { "" } else { rest }
        };
        let binary = pk.attachments > 0;
        if s.conformance && name == "message" {
            let mut t = String::with_capacity(pk.data.len() + 16);
            let kind = if binary {
                Kind::BinaryEvent
            } else {
                Kind::Event
            };
            wire::write_sio(
                &mut t,
                kind,
                pk.attachments,
                pk.nsp,
                None,
                &format!("[\"message-back\"{rest}]"),
            );
            self.push(Out::Text(Bytes::from(t)));
            for a in att {
                self.push(Out::Binary(a));
            }
        } else if s.conformance && name == "message-with-ack" {
            if let Some(id) = pk.id {
                let kind = if binary { Kind::BinaryAck } else { Kind::Ack };
                let mut t = String::with_capacity(pk.data.len() + 16);
                let rest = rest.trim_start();
                let rest = rest.strip_prefix(',').unwrap_or(rest);
                wire::write_sio(
                    &mut t,
                    kind,
                    pk.attachments,
                    pk.nsp,
                    Some(id),
                    &format!("[{rest}]"),
                );
                self.push(Out::Text(Bytes::from(t)));
                for a in att {
                    self.push(Out::Binary(a));
                }
            }
        } else if name == "publish" {
            let channel = args.next().and_then(wire::string_value);
            let data = args.next();
            let result = if !s.client_publish {
                Err("client publishing is off (--client-publish)".to_string())
            } else if binary {
                Err("binary data cannot be published".to_string())
            } else {
                match (channel, data) {
                    (Some(c), Some(d)) => env.publish(&c, d),
                    _ => Err("publish takes a channel name and data".to_string()),
                }
            };
            if let Some(id) = pk.id {
                let reply = match result {
                    Ok(()) => "[{\"ok\":true}]".to_string(),
                    Err(e) => {
                        let mut r = String::from("[{\"error\":");
                        crate::proto::bayeux::json_str(&mut r, &e);
                        r.push_str("}]");
                        r
                    }
                };
                self.text(wire::sio(Kind::Ack, pk.nsp, Some(id), &reply));
            }
        }
        Ok(())
    }

    fn text(&mut self, t: String) {
        self.push(Out::Text(Bytes::from(t)));
    }
}

fn sio_error(e: SioError) -> Closed {
    Closed::Protocol(e.as_str())
}
