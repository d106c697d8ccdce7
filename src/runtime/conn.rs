//! The connection entry: what a worker keeps for each open socket.
//!
//! Small on purpose (a test pins its size): an idle subscriber owns no heap memory at all. Its
//! partial input (`tail`), outbound queue (`out`) and message being assembled (`msg`) exist only
//! while there is something in them. Only the worker loop owns entries; everything else gets
//! `&mut Conn` for the length of a call.

use std::net::TcpStream;
use std::sync::atomic::AtomicU64;

use crate::proto::ws::deflate::Agreed;
use crate::proto::ws::reader::WsReader;
use crate::runtime::outq::OutQueue;
use crate::stats::WorkerStats;

/// Protocol phase of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading HTTP requests (keep-alive), answering them.
    Http,
    /// WebSocket subscriber of one channel (`/sub/{channel}`).
    WsSub,
    /// WebSocket echo (`/echo`).
    WsEcho,
    /// Server-Sent Events subscriber of one channel.
    Sse,
    /// HTTP-streaming (chunked NDJSON) subscriber of one channel.
    Stream,
    /// A held long-poll: subscribed until a message or `--poll-timeout`, then back to `Http`.
    Poll,
    /// A held Bayeux `/meta/connect` (long-polling): until its client has messages, the
    /// connect is replaced, or `--bayeux-timeout`; then back to `Http`.
    BayeuxPoll,
    /// Bayeux over WebSocket (`GET {bayeux_path}` upgraded): JSON arrays of messages in text
    /// frames both ways; a `/meta/connect` may be held while other messages come and go.
    BayeuxWs,
    /// Socket.IO over WebSocket (`{socketio_path}?transport=websocket`): the session's
    /// connection, or one being probed for the upgrade from polling. `chan_pos` holds the
    /// session's slot (`worker/socketio.rs`); `chan` stays [`NO_CHANNEL`]: the session, not the
    /// connection, is the subscriber.
    SioWs,
    /// A held Socket.IO long-poll GET, waiting for the session's packets; `chan_pos` holds the
    /// session's slot.
    SioPoll,
    /// A `/dashboard/events` stream: one SSE event of figures per second from the worker's
    /// tick (`worker/dashboard.rs`), input discarded.
    Dashboard,
    /// Finishing: our last bytes (close frame or final response) are queued; once flushed the
    /// write side is shut down, input is discarded until the peer closes or `--close-timeout`.
    Closing,
}

impl Phase {
    /// This phase's connection gauge in `/stats` (`conns_*`).
    pub fn gauge(self, s: &WorkerStats) -> &AtomicU64 {
        match self {
            Phase::Http => &s.conns_http,
            Phase::WsSub => &s.conns_ws_sub,
            Phase::WsEcho => &s.conns_ws_echo,
            Phase::Sse => &s.conns_sse,
            Phase::Stream => &s.conns_stream,
            Phase::Poll => &s.conns_poll,
            Phase::BayeuxPoll => &s.conns_bayeux_poll,
            Phase::BayeuxWs => &s.conns_bayeux_ws,
            Phase::SioWs => &s.conns_sio_ws,
            Phase::SioPoll => &s.conns_sio_poll,
            Phase::Dashboard => &s.conns_dashboard,
            Phase::Closing => &s.conns_closing,
        }
    }

    /// Whether the connection speaks WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(
            self,
            Phase::WsSub | Phase::WsEcho | Phase::BayeuxWs | Phase::SioWs
        )
    }
}

/// `flags` bits.
pub mod flag {
    /// HTTP: bytes of a request have arrived and the request is not answered yet (the head
    /// timeout runs rather than the keep-alive timeout).
    pub const IN_REQUEST: u16 = 1 << 0;
    /// HTTP: the head is complete and `http_mark` is the total the request needs.
    pub const HEAD_DONE: u16 = 1 << 1;
    /// WebSocket: a ping is out and unanswered.
    pub const PING_OUT: u16 = 1 << 2;
    /// Closing: the write side has been shut down.
    pub const WRITE_SHUT: u16 = 1 << 3;
    /// Closing: this was a WebSocket connection (for the close-timeout counter).
    pub const WAS_WS: u16 = 1 << 4;
    /// Poll, or a publish waiting for the broker: the request asked for keep-alive.
    pub const KEEP_ALIVE: u16 = 1 << 5;
    /// HTTP: a publish waits for the broker's acknowledgement (`--broker`); nothing more is
    /// read from the connection until it is answered (responses leave in request order).
    pub const ACK_WAIT: u16 = 1 << 6;
    /// WebSocket subscriber: messages go as `{"id":..,"data":..}` (`?envelope=1`), so the client
    /// can resume with a cursor.
    pub const ENVELOPE: u16 = 1 << 7;
    /// WebSocket subscriber, subscribe tokens configured: its token lets it publish to its
    /// channel (the `publish` claim), so its messages are published with `--client-publish`.
    pub const MAY_PUBLISH: u16 = 1 << 8;
    /// WebSocket: permessage-deflate was agreed. The three bits above it hold the client's
    /// `server_max_window_bits` minus 8 ([`Conn::deflate`]).
    pub const DEFLATE: u16 = 1 << 9;
    pub(super) const DEFLATE_WINDOW_SHIFT: u16 = 10;
    pub(super) const DEFLATE_WINDOW: u16 = 0b111 << DEFLATE_WINDOW_SHIFT;
}

/// How an HTTP subscriber is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sse,
    Stream,
    /// Long-poll, one message per answer as the body.
    Text,
    /// Long-poll, `{"cursor":..,"messages":[..]}`.
    Json,
    /// Long-poll, the JSON answer wrapped in a callback.
    Jsonp,
}

/// State of an HTTP subscriber (SSE, stream, held poll), kept inline in place of the WebSocket
/// reader so that it costs no heap.
#[derive(Debug, Clone, Copy)]
pub struct SubState {
    /// Id of the last message sent (or known to be covered): later deliveries skip anything
    /// at or below it. Two halves so the entry keeps 4-byte alignment.
    cursor: [u32; 2],
    /// CORS answer: 0 = none, [`ORIGIN_ANY`] = `*`, else index + 1 into `--allow-origin`.
    pub origin: u16,
    pub format: Format,
}

/// [`SubState::origin`] for `Access-Control-Allow-Origin: *`.
pub const ORIGIN_ANY: u16 = u16::MAX;

impl SubState {
    pub fn new(cursor: u64, origin: u16, format: Format) -> Self {
        let mut s = SubState {
            cursor: [0; 2],
            origin,
            format,
        };
        s.set_cursor(cursor);
        s
    }

    pub fn cursor(&self) -> u64 {
        u64::from(self.cursor[0]) << 32 | u64::from(self.cursor[1])
    }

    pub fn set_cursor(&mut self, c: u64) {
        self.cursor = [(c >> 32) as u32, c as u32];
    }
}

/// Per-phase protocol state, inline.
#[derive(Debug)]
pub enum Proto {
    Ws(WsReader),
    Sub(SubState),
}

/// Heap extras a connection needs only in some phases.
#[derive(Debug)]
pub enum Ext {
    /// Echo: the message being assembled; subscriber with `--client-publish`: the same.
    Msg(Vec<u8>),
    /// A held poll: its `Client-Id` session and JSONP callback, when it has them.
    Poll {
        client: Option<Box<str>>,
        callback: Option<Box<str>>,
    },
    /// A held Bayeux connect over long-polling or callback-polling, and what else its answer
    /// needs, if anything (boxed apart: a long-polling client's lone connect without CORS needs
    /// nothing more).
    Bayeux {
        held: HeldConnect,
        answer: Option<Box<BayeuxAnswer>>,
    },
    /// Bayeux over WebSocket.
    BayeuxWs(BayeuxWs),
    /// A publish waiting for the broker's acknowledgement: what its answer says.
    PubAck {
        channel: Box<str>,
        bytes: usize,
        origin: u16,
    },
}

use crate::session::bayeux::ClientId;
/// A `/meta/connect` waiting for messages (the Bayeux rules' own type).
pub use crate::session::bayeux::HeldConnect;

/// What the HTTP answer to a held Bayeux connect carries besides the connect's reply.
#[derive(Debug, Default)]
pub struct BayeuxAnswer {
    /// The replies to the messages before the connect in its request (JSON objects joined by
    /// commas).
    pub before: String,
    /// The JSONP callback (callback-polling).
    pub callback: Option<Box<str>>,
    /// The CORS headers of the answer (empty without `--allow-origin`).
    pub cors: String,
}

/// State of a Bayeux WebSocket connection.
#[derive(Debug, Default)]
pub struct BayeuxWs {
    /// The message being assembled from frames, while one is (boxed: 8 bytes here between
    /// messages, not a `Vec`'s 24).
    #[allow(clippy::box_collection)]
    pub msg: Option<Box<Vec<u8>>>,
    /// The client this connection acts for: set by a handshake on it, or by the first message
    /// whose clientId is accepted (a client reconnecting without a handshake). Messages with
    /// another clientId are refused.
    pub client: Option<ClientId>,
    /// `BAYEUX_BROWSER` cookie of the upgrade request.
    pub browser: Option<Box<str>>,
    /// A held connect and the tick its hold ends.
    pub held: Option<(HeldConnect, u32)>,
}

/// No channel: `chan` value of a connection that is not subscribed.
pub const NO_CHANNEL: u32 = u32::MAX;

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket (non-blocking). A plain std stream, registered with mio through its fd:
    /// 4 bytes, where `mio::net::TcpStream` carries a selector id in debug builds.
    pub sock: TcpStream,
    /// Generation of this slot's occupant; carried in the mio token so that an event meant for
    /// a previous occupant is dropped.
    pub generation: u32,
    /// Tick at which the current timeout expires; 0 = none.
    pub deadline: u32,
    /// Tick of this connection's live timing-wheel entry; 0 = none armed.
    pub timer_at: u32,
    /// Tick by which the subscription's token ends (`exp`, see `worker/auth.rs`): the
    /// deadline never lies beyond it. 0 = no token. Set when a subscription starts, cleared
    /// when the connection goes back to HTTP or closes.
    pub expires: u32,
    pub phase: Phase,
    /// Bits from [`flag`].
    pub flags: u16,
    /// HTTP: before `HEAD_DONE`, bytes already searched for the end of the head; after, the
    /// bytes (head + body) the request needs in total.
    pub http_mark: u32,
    /// Subscribed channel's index in the worker's table, or [`NO_CHANNEL`].
    pub chan: u32,
    /// Position in that channel's subscriber list.
    pub chan_pos: u32,
    /// WebSocket receive state, or an HTTP subscriber's state (inline: 20 bytes).
    pub proto: Proto,
    /// Unparsed input kept between reads (a partial head, body or frame header).
    pub tail: Option<Box<Vec<u8>>>,
    /// What the kernel has not taken yet.
    pub out: Option<Box<OutQueue>>,
    /// Phase extras: a WebSocket message being assembled, a held poll's session/callback.
    pub ext: Option<Box<Ext>>,
}

/// The phase transitions: each sets the phase, its protocol state and extras together and moves
/// the connection gauges with it (the old phase's down, the new one's up), so that a gauge is
/// never paired by hand.
impl Conn {
    /// A connection just accepted: reading its first HTTP request (counted in `conns_http`).
    pub fn open(sock: TcpStream, generation: u32, stats: &WorkerStats) -> Self {
        WorkerStats::add(&stats.conns_http, 1);
        Conn::new(sock, generation)
    }

    fn set_phase(&mut self, phase: Phase, stats: &WorkerStats) {
        WorkerStats::sub(self.phase.gauge(stats), 1);
        WorkerStats::add(phase.gauge(stats), 1);
        self.phase = phase;
    }

    /// HTTP → WebSocket (`WsSub`, `WsEcho`, `BayeuxWs`) once the `101` is decided: the request
    /// is over, a fresh frame reader, `ext` the phase's extras.
    pub fn upgrade(&mut self, phase: Phase, ext: Option<Box<Ext>>, stats: &WorkerStats) {
        debug_assert!(self.phase == Phase::Http && phase.is_ws());
        self.set_phase(phase, stats);
        self.clear(flag::IN_REQUEST | flag::HEAD_DONE);
        self.proto = Proto::Ws(WsReader::default());
        self.ext = ext;
    }

    /// HTTP → an HTTP subscriber (`Sse`, `Stream`) or a held request (`Poll`, `BayeuxPoll`),
    /// with its state inline and its extras; `keep_alive`: a held request's connection reads
    /// on after the answer.
    pub fn hold(
        &mut self,
        phase: Phase,
        st: SubState,
        ext: Option<Box<Ext>>,
        keep_alive: bool,
        stats: &WorkerStats,
    ) {
        debug_assert!(self.phase == Phase::Http && !phase.is_ws() && phase != Phase::Closing);
        self.set_phase(phase, stats);
        self.clear(flag::IN_REQUEST | flag::HEAD_DONE | flag::KEEP_ALIVE);
        if keep_alive {
            self.set(flag::KEEP_ALIVE);
        }
        self.proto = Proto::Sub(st);
        self.ext = ext;
    }

    /// A held request (poll, Bayeux connect) is over: an HTTP connection again.
    pub fn back_to_http(&mut self, stats: &WorkerStats) {
        self.set_phase(Phase::Http, stats);
        self.proto = Proto::Ws(WsReader::default());
        self.ext = None;
        self.expires = 0;
        self.clear(flag::KEEP_ALIVE | flag::MAY_PUBLISH);
    }

    /// Any phase → `Closing`: extras freed, a WebSocket remembered (`WAS_WS`, for the
    /// close-timeout counter). Whether it was not closing already.
    pub fn begin_closing(&mut self, stats: &WorkerStats) -> bool {
        if self.phase == Phase::Closing {
            return false;
        }
        if self.phase.is_ws() {
            self.set(flag::WAS_WS);
        }
        self.set_phase(Phase::Closing, stats);
        self.ext = None;
        self.expires = 0;
        true
    }

    /// The connection is gone (removed from the table): out of its gauge and of `bytes_queued`.
    pub fn gone(&self, stats: &WorkerStats) {
        WorkerStats::sub(self.phase.gauge(stats), 1);
        WorkerStats::sub(&stats.bytes_queued, self.queued() as u64);
    }

    fn new(sock: TcpStream, generation: u32) -> Self {
        Conn {
            sock,
            generation,
            deadline: 0,
            timer_at: 0,
            expires: 0,
            phase: Phase::Http,
            flags: flag::IN_REQUEST,
            http_mark: 0,
            chan: NO_CHANNEL,
            chan_pos: 0,
            proto: Proto::Ws(WsReader::default()),
            tail: None,
            out: None,
            ext: None,
        }
    }

    /// What permessage-deflate agreed on this connection, if it did.
    pub fn deflate(&self) -> Option<Agreed> {
        self.has(flag::DEFLATE).then(|| Agreed {
            server_max_window_bits: 8
                + ((self.flags & flag::DEFLATE_WINDOW) >> flag::DEFLATE_WINDOW_SHIFT) as u8,
        })
    }

    /// Records the outcome of an upgrade's permessage-deflate negotiation (in the flags: no
    /// byte of the entry more).
    pub fn set_deflate(&mut self, agreed: Option<Agreed>) {
        self.clear(flag::DEFLATE | flag::DEFLATE_WINDOW);
        if let Some(a) = agreed {
            let bits = u16::from(a.server_max_window_bits.clamp(8, 15) - 8);
            self.set(flag::DEFLATE | bits << flag::DEFLATE_WINDOW_SHIFT);
        }
    }

    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    pub fn set(&mut self, f: u16) {
        self.flags |= f;
    }

    pub fn clear(&mut self, f: u16) {
        self.flags &= !f;
    }

    /// The HTTP subscriber state (SSE, stream, poll); a default one if the phase has none.
    pub fn sub(&self) -> SubState {
        match self.proto {
            Proto::Sub(s) => s,
            Proto::Ws(_) => SubState::new(0, 0, Format::Text),
        }
    }

    /// The held poll's `(client, callback)`.
    pub fn poll_ext(&self) -> (Option<&str>, Option<&str>) {
        match self.ext.as_deref() {
            Some(Ext::Poll { client, callback }) => (client.as_deref(), callback.as_deref()),
            _ => (None, None),
        }
    }

    /// Bytes waiting in the outbound queue.
    pub fn queued(&self) -> usize {
        self.out.as_ref().map_or(0, |q| q.bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entry is the per-connection cost in user space; growing it is a decision, so this
    /// test pins it. 80 bytes: fd 4 + generation 4 + timers 8 + token expiry 4 + phase 1 +
    /// flags 2 + http_mark 4 + channel 8 + WsReader or SubState 20 (the enum tag lives in a
    /// niche of the reader) + three optional boxes 24 = 79, rounded up by alignment (the token
    /// expiry took 4 of the 6 bytes of padding: authorization made the entry no larger).
    #[test]
    fn conn_entry_size_is_pinned() {
        assert_eq!(std::mem::size_of::<Conn>(), 80);
        // The table (`src/chunks.rs`) stores `enum Entry { Vacant(usize), Occupied(Conn) }`;
        // the niche in `Phase` keeps it the same size.
        #[allow(dead_code)]
        enum SlabEntry {
            Vacant(usize),
            Occupied(Conn),
        }
        assert_eq!(std::mem::size_of::<SlabEntry>(), 80);
        assert_eq!(std::mem::size_of::<TcpStream>(), 4);
        assert_eq!(std::mem::size_of::<Proto>(), 20);
    }

    /// `ext`'s box is the size of its largest variant: a parked Bayeux client pays it. 96:
    /// a Bayeux WebSocket's state (the message being assembled 8, its client 16, the upgrade's
    /// cookie 16, the held connect and its end 48) and the variant's tag; a held long-polling
    /// connect needs 48 of them.
    #[test]
    fn ext_size_is_pinned() {
        assert_eq!(std::mem::size_of::<Ext>(), 96);
        assert_eq!(std::mem::size_of::<HeldConnect>(), 40);
    }

    /// Every transition moves the gauges together: one connection is in exactly one gauge.
    #[test]
    fn transitions_move_the_gauges_together() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let stats = WorkerStats::default();
        let gauges = |s: &WorkerStats| {
            use std::sync::atomic::Ordering::Relaxed;
            [
                Phase::Http,
                Phase::WsSub,
                Phase::WsEcho,
                Phase::Sse,
                Phase::Stream,
                Phase::Poll,
                Phase::BayeuxPoll,
                Phase::BayeuxWs,
                Phase::Closing,
                Phase::Dashboard,
            ]
            .map(|p| p.gauge(s).load(Relaxed))
        };
        let mut c = Conn::open(sock, 1, &stats);
        assert_eq!(gauges(&stats), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        c.set(flag::HEAD_DONE);
        c.hold(
            Phase::Poll,
            SubState::new(5, 0, Format::Json),
            None,
            true,
            &stats,
        );
        assert_eq!(gauges(&stats), [0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(c.has(flag::KEEP_ALIVE) && !c.has(flag::HEAD_DONE));
        assert_eq!(c.sub().cursor(), 5);
        c.back_to_http(&stats);
        assert_eq!(gauges(&stats), [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(!c.has(flag::KEEP_ALIVE));
        // permessage-deflate's agreement lives in the flags, beside the others.
        c.set(flag::ENVELOPE);
        for bits in 8..=15 {
            let a = Agreed {
                server_max_window_bits: bits,
            };
            c.set_deflate(Some(a));
            assert_eq!(c.deflate(), Some(a));
        }
        c.set_deflate(None);
        assert_eq!(c.deflate(), None);
        assert!(c.has(flag::ENVELOPE));
        c.clear(flag::ENVELOPE);
        c.upgrade(Phase::WsSub, None, &stats);
        assert_eq!(gauges(&stats), [0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(c.begin_closing(&stats));
        assert!(!c.begin_closing(&stats), "closing once");
        assert!(c.has(flag::WAS_WS));
        assert_eq!(gauges(&stats), [0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        c.gone(&stats);
        assert_eq!(gauges(&stats), [0; 10]);
        let sock = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut c = Conn::open(sock, 2, &stats);
        c.hold(
            Phase::Dashboard,
            SubState::new(0, 0, Format::Sse),
            None,
            false,
            &stats,
        );
        assert_eq!(gauges(&stats), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        c.gone(&stats);
        assert_eq!(gauges(&stats), [0; 10]);
    }

    #[test]
    fn cursor_halves() {
        let mut s = SubState::new(0x1234_5678_9abc_def0, 3, Format::Json);
        assert_eq!(s.cursor(), 0x1234_5678_9abc_def0);
        s.set_cursor(7);
        assert_eq!(s.cursor(), 7);
    }
}
