//! The HTTP transports of `/sub/{channel}` on the worker: Server-Sent Events, HTTP streaming,
//! long-poll (text, JSON, JSONP), `Client-Id` sessions, messages from clients, and CORS.
//! The wire format is documented in `docs/http-transports.md`.
//!
//! An SSE or streaming subscriber is a channel subscriber like a WebSocket one, with its
//! cursor inline ([`SubState`]). A held poll is subscribed too, until the fan-out (or the poll
//! timeout, or a pipelined request) answers it; the connection then goes back to `Http` for
//! the next poll.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;

use super::Worker;
use super::auth::Authz;
use super::conn_io::{Dead, Handled};
use crate::proto::http::{self, Method};
use crate::pubsub;
use crate::pubsub::hub::{self, Gap, Message, Refused, Since, Wr};
use crate::runtime::conn::{Ext, Format, ORIGIN_ANY, Phase, SubState, flag};
use crate::stats::WorkerStats;

/// Longest JSONP callback name.
const MAX_CALLBACK: usize = 64;
/// Longest `Client-Id`.
const MAX_CLIENT_ID: usize = 64;
/// SSE comment heartbeat.
const SSE_HEARTBEAT: &[u8] = b": hb\n\n";
/// Streaming heartbeat: a chunk holding an empty line.
const STREAM_HEARTBEAT: &[u8] = b"1\r\n\n\r\n";

/// A JSONP callback: identifiers (`[A-Za-z_$][A-Za-z0-9_$]*`) joined by `.`, at most 64 bytes.
pub(super) fn valid_callback(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CALLBACK
        && s.split('.').all(|part| {
            let mut b = part.bytes();
            b.next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b'$')
                && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'$')
        })
}

/// A `Client-Id`: 1 to 64 visible ASCII characters.
pub fn valid_client_id(v: &[u8]) -> bool {
    !v.is_empty() && v.len() <= MAX_CLIENT_ID && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// `Access-Control-Request-Headers` worth echoing: header names, commas and spaces only.
fn valid_header_list(v: &[u8]) -> bool {
    v.len() <= 1024
        && v.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b',' | b' '))
}

/// The cursor a `/sub` request resumes from: `?cursor=`, `?last_event_id=` (the query wins)
/// or the `Last-Event-ID` header; `Ok(None)` when it gives none (or an empty one).
pub(super) fn request_cursor(head: &http::Head<'_>) -> Result<Option<u64>, &'static str> {
    let raw = http::query_param(head.path, "cursor")
        .or_else(|| http::query_param(head.path, "last_event_id"))
        .map(str::as_bytes)
        .or(head.last_event_id);
    match raw.map(hub::parse_cursor) {
        None => Ok(None),
        Some(Ok(c)) => Ok(c),
        Some(Err(_)) => Err("invalid cursor / Last-Event-ID: expected 1 to 20 decimal digits\n"),
    }
}

/// What a `/sub` request asked for.
struct SubRequest<'a> {
    format: Format,
    cursor: Option<u64>,
    client: Option<&'a str>,
    callback: Option<&'a str>,
    origin: u16,
    keep_alive: bool,
}

impl Worker {
    // ---- CORS -------------------------------------------------------------------------------

    /// Checks `Origin` against `--allow-origin`. Returns the CORS answer code (see
    /// [`SubState::origin`]), or `None` after refusing the request with 403.
    pub(super) fn check_origin(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
    ) -> Result<Option<u16>, Dead> {
        let list = &self.cfg.allow_origin;
        let Some(origin) = head.origin.filter(|_| !list.is_empty()) else {
            return Ok(Some(0));
        };
        if list.iter().any(|o| o == "*") {
            return Ok(Some(ORIGIN_ANY));
        }
        if let Some(i) = list
            .iter()
            .position(|o| o.as_bytes().eq_ignore_ascii_case(origin))
        {
            return Ok(Some(i as u16 + 1));
        }
        WorkerStats::add(&self.stats.origin_refused, 1);
        // A refused upgrade ends the connection, as other failed handshakes do.
        let upgrade = head.upgrade_present || head.connection_upgrade;
        self.respond_error(
            idx,
            403,
            "Forbidden",
            "",
            "origin not allowed (see --allow-origin)\n",
            head.keep_alive() && !upgrade,
        )?;
        Ok(None)
    }

    /// The CORS headers of an answer to origin code `origin` (empty when none apply).
    pub(super) fn cors_headers(&self, origin: u16) -> String {
        let allow = match origin {
            0 => return String::new(),
            ORIGIN_ANY => "*",
            i => match self.cfg.allow_origin.get(usize::from(i) - 1) {
                Some(o) => o.as_str(),
                None => return String::new(),
            },
        };
        let vary = if origin == ORIGIN_ANY {
            ""
        } else {
            "Vary: Origin\r\n"
        };
        format!(
            "Access-Control-Allow-Origin: {allow}\r\n{vary}\
             Access-Control-Expose-Headers: Edgecomet-Cursor, Edgecomet-Gap\r\n"
        )
    }

    /// Answers an `OPTIONS` request (a CORS preflight when it comes from an allowed origin).
    pub(super) fn preflight(&mut self, idx: usize, head: &http::Head<'_>, origin: u16) -> Handled {
        let cors = self.cors_headers(origin);
        self.preflight_with(idx, head, origin, cors)
    }

    /// [`Worker::preflight`] with the CORS headers given.
    pub(super) fn preflight_with(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        origin: u16,
        cors: String,
    ) -> Handled {
        let mut extra = cors;
        if origin == 0 {
            extra.push_str("Allow: GET, POST, OPTIONS\r\n");
        } else {
            extra.push_str(
                "Access-Control-Allow-Methods: GET, POST, OPTIONS\r\nAccess-Control-Max-Age: 600\r\n",
            );
            if let Some(h) = head.cors_request_headers.filter(|h| valid_header_list(h)) {
                // Checked: ASCII only.
                let _ = write!(
                    extra,
                    "Access-Control-Allow-Headers: {}\r\n",
                    String::from_utf8_lossy(h)
                );
            }
        }
        let keep_alive = head.keep_alive();
        self.respond(
            idx,
            http::no_content(&self.date, &extra, keep_alive),
            keep_alive,
        )
    }

    // ---- routing ----------------------------------------------------------------------------

    /// `/sub/{channel}`: WebSocket upgrade, SSE, streaming, long-poll, or a client's message.
    pub(super) fn route_sub(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        body: &[u8],
        channel: &str,
    ) -> Handled {
        let Some(origin) = self.check_origin(idx, head)? else {
            return Ok(());
        };
        if head.method_raw == "OPTIONS" {
            return self.preflight(idx, head, origin);
        }
        let cors = self.cors_headers(origin);
        let subscribing = head.method() != Method::Post || body.is_empty();
        let grant = if subscribing && pubsub::valid_channel(channel, self.cfg.max_channel_len) {
            match self.authorize_sub(idx, head, Some(channel), &cors)? {
                Authz::Refused => return Ok(()),
                Authz::Granted(g) => Some(g),
                Authz::Open => None,
            }
        } else {
            None
        };
        self.route_sub_as(idx, head, body, channel, origin, &cors)?;
        // The subscription that started (not one answered at once) ends with its token.
        if let Some(g) = grant
            && matches!(
                self.conns[idx].phase,
                Phase::WsSub | Phase::Sse | Phase::Stream | Phase::Poll
            )
        {
            self.bind_grant(idx, &g, channel);
        }
        Ok(())
    }

    /// [`Worker::route_sub`] once the request is authorized.
    fn route_sub_as(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        body: &[u8],
        channel: &str,
        origin: u16,
        cors: &str,
    ) -> Handled {
        let keep_alive = head.keep_alive();
        if head.upgrade_present || head.connection_upgrade {
            return self.upgrade(idx, head, Some(channel));
        }
        let cors = cors.to_string();
        let method = head.method();
        if !matches!(method, Method::Get | Method::Post) {
            return self.respond_error(
                idx,
                405,
                "Method Not Allowed",
                &format!("Allow: GET, POST, OPTIONS\r\n{cors}"),
                "use GET (or POST) to subscribe\n",
                keep_alive,
            );
        }
        if !pubsub::valid_channel(channel, self.cfg.max_channel_len) {
            return self.refuse(idx, 400, "invalid channel name\n", &cors, keep_alive);
        }
        if method == Method::Post && !body.is_empty() {
            if !self.authorize_client_publish(idx, head, channel, &cors)? {
                return Ok(());
            }
            return self.client_message(idx, channel, body, &cors, keep_alive);
        }
        let req = match self.sub_request(head, origin) {
            Ok(r) => r,
            Err(why) => return self.refuse(idx, 400, why, &cors, keep_alive),
        };
        if !self.channels.admits(channel) {
            WorkerStats::add(&self.stats.channel_limit, 1);
            return self.refuse(idx, 503, "channel limit reached\n", &cors, keep_alive);
        }
        match req.format {
            Format::Sse | Format::Stream => self.start_stream(idx, channel, &req),
            _ => self.start_poll(idx, channel, &req, head.pragma_start),
        }
    }

    /// Reads the transport, cursor, session and callback of a `/sub` request.
    fn sub_request<'a>(
        &self,
        head: &'a http::Head<'_>,
        origin: u16,
    ) -> Result<SubRequest<'a>, &'static str> {
        let path = head.path;
        let transport = http::query_param(path, "transport");
        let callback = http::query_param(path, "callback");
        let format = match transport {
            Some("sse") => Format::Sse,
            Some("stream") => Format::Stream,
            Some("longpoll") | None => {
                if transport.is_none() && head.accept_sse {
                    Format::Sse
                } else if transport.is_none() && head.accept_ndjson {
                    Format::Stream
                } else if callback.is_some() {
                    Format::Jsonp
                } else if head.accept_json {
                    Format::Json
                } else {
                    Format::Text
                }
            }
            Some(_) => return Err("unknown transport (expected sse, stream or longpoll)\n"),
        };
        if format == Format::Stream && head.minor_version == 0 {
            return Err("HTTP streaming is chunked: it needs HTTP/1.1 (use SSE or long-poll)\n");
        }
        if format == Format::Jsonp && !callback.is_some_and(valid_callback) {
            return Err(
                "invalid callback: JavaScript identifiers joined by '.', at most 64 bytes\n",
            );
        }
        let cursor = request_cursor(head)?;
        let client = match head.client_id {
            Some(v) if matches!(format, Format::Text | Format::Json | Format::Jsonp) => {
                if !valid_client_id(v) {
                    return Err("invalid Client-Id: 1 to 64 visible ASCII characters\n");
                }
                // Checked: ASCII.
                std::str::from_utf8(v).ok()
            }
            _ => None,
        };
        Ok(SubRequest {
            format,
            cursor,
            client,
            callback: callback.filter(|_| format == Format::Jsonp),
            origin,
            keep_alive: head.keep_alive(),
        })
    }

    /// An error answer that keeps the CORS headers (so a browser page can read it).
    fn refuse(
        &mut self,
        idx: usize,
        status: u16,
        body: &str,
        cors: &str,
        keep_alive: bool,
    ) -> Handled {
        let reason = match status {
            400 => "Bad Request",
            403 => "Forbidden",
            410 => "Gone",
            _ => "Service Unavailable",
        };
        self.respond_error(idx, status, reason, cors, body, keep_alive)
    }

    // ---- messages from clients --------------------------------------------------------------

    /// A POST body to `/sub/{channel}`: published with `--client-publish`, else 403.
    fn client_message(
        &mut self,
        idx: usize,
        channel: &str,
        body: &[u8],
        cors: &str,
        keep_alive: bool,
    ) -> Handled {
        if !self.cfg.client_publish {
            WorkerStats::add(&self.stats.client_publish_refused, 1);
            return self.refuse(
                idx,
                403,
                "client publish disabled (the server runs without --client-publish)\n",
                cors,
                keep_alive,
            );
        }
        if std::str::from_utf8(body).is_err() {
            return self.refuse(idx, 400, "message must be UTF-8 text\n", cors, keep_alive);
        }
        match self.publish_message(channel, Bytes::copy_from_slice(body), None) {
            Ok(_) => {
                WorkerStats::add(&self.stats.client_messages, 1);
                self.respond(
                    idx,
                    http::no_content(&self.date, cors, keep_alive),
                    keep_alive,
                )
            }
            Err(e) => self.publish_refused(idx, e, cors, keep_alive),
        }
    }

    // ---- SSE and streaming ------------------------------------------------------------------

    fn start_stream(&mut self, idx: usize, channel: &str, req: &SubRequest<'_>) -> Handled {
        // Watched before the history is read (it subscribes below, whatever happens).
        self.watch(channel);
        let since = self.shared.hub.since(channel, req.cursor);
        let cors = self.cors_headers(req.origin);
        let sse = req.format == Format::Sse;
        let (ctype, te) = if sse {
            ("text/event-stream", "")
        } else {
            ("application/x-ndjson", "Transfer-Encoding: chunked\r\n")
        };
        let mut first = format!(
            "HTTP/1.1 200 OK\r\nServer: edgecomet\r\nDate: {}\r\nContent-Type: {ctype}\r\n\
             Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n{te}{cors}Connection: close\r\n\r\n",
            self.date.as_str()
        )
        .into_bytes();
        if sse {
            let _ = write!(Wr(&mut first), "retry: {}\n\n", self.cfg.sse_retry);
        }
        if since.gap.is_gap() {
            WorkerStats::add(&self.stats.gaps_reported, 1);
            let json = since.gap.json();
            if sse {
                let _ = write!(Wr(&mut first), "event: gap\ndata: {json}\n\n");
            } else {
                first.extend_from_slice(&hub::chunked(format!("{{\"gap\":{json}}}\n").as_bytes()));
            }
        }
        let history: Vec<Bytes> = since
            .msgs
            .iter()
            .map(|m| {
                if sse {
                    m.sse_event().clone()
                } else {
                    m.stream_chunk().clone()
                }
            })
            .collect();
        let phase = if sse { Phase::Sse } else { Phase::Stream };
        self.enter_sub_phase(
            idx,
            channel,
            phase,
            SubState::new(since.cursor, req.origin, req.format),
            None,
            false,
        );
        let at = self.after(self.cfg.sse_heartbeat);
        self.set_deadline(idx, at);
        self.send(idx, &[Bytes::from(first)], false)?;
        WorkerStats::add(&self.stats.messages_out, history.len() as u64);
        if !history.is_empty() {
            self.send(idx, &history, true)?;
        }
        self.over_backlog(idx)?;
        Ok(())
    }

    /// Turns an HTTP connection into a subscriber of `channel` (admission was checked): a
    /// stream, or a held poll with its extras.
    fn enter_sub_phase(
        &mut self,
        idx: usize,
        channel: &str,
        phase: Phase,
        st: SubState,
        ext: Option<Box<Ext>>,
        keep_alive: bool,
    ) {
        self.subscribe(idx, channel);
        self.conns[idx].hold(phase, st, ext, keep_alive, &self.stats);
    }

    /// A heartbeat on an SSE or streaming subscriber, and the next one armed.
    pub(super) fn heartbeat(&mut self, idx: usize) -> Handled {
        let hb = if self.conns[idx].phase == Phase::Sse {
            SSE_HEARTBEAT
        } else {
            STREAM_HEARTBEAT
        };
        self.send(idx, &[Bytes::from_static(hb)], false)?;
        if self.over_backlog(idx)? {
            return Ok(());
        }
        let at = self.after(self.cfg.sse_heartbeat);
        self.set_deadline(idx, at);
        Ok(())
    }

    // ---- long-poll --------------------------------------------------------------------------

    fn start_poll(
        &mut self,
        idx: usize,
        channel: &str,
        req: &SubRequest<'_>,
        pragma_start: bool,
    ) -> Handled {
        // Watched before the history is read; undone if the poll is answered at once.
        let watched = self.watch(channel);
        let r = self.poll_or_hold(idx, channel, req, pragma_start);
        self.unwatch_unused(channel, watched);
        r
    }

    fn poll_or_hold(
        &mut self,
        idx: usize,
        channel: &str,
        req: &SubRequest<'_>,
        pragma_start: bool,
    ) -> Handled {
        let cors = self.cors_headers(req.origin);
        let hub = &self.shared.hub;
        let since = if let Some(client) = req.client {
            if pragma_start
                && let Err(e) = hub.session_start(channel, client, req.cursor, self.shared.now())
            {
                let why = if e == Refused::Sessions {
                    "session limit reached (--max-sessions)\n"
                } else {
                    WorkerStats::add(&self.stats.channel_limit, 1);
                    "channel limit reached\n"
                };
                return self.refuse(idx, 503, why, &cors, req.keep_alive);
            }
            match hub.session_take(
                channel,
                client,
                self.answer_budget(req.format),
                self.shared.now(),
            ) {
                Ok(s) => s,
                Err(_) => {
                    WorkerStats::add(&self.stats.sessions_unknown, 1);
                    return self.refuse(
                        idx,
                        410,
                        "unknown or expired Client-Id session: start a new series with \
                         Pragma: start-long-poll\n",
                        &cors,
                        req.keep_alive,
                    );
                }
            }
        } else {
            hub.since(channel, req.cursor)
        };
        if !since.msgs.is_empty() || since.gap.is_gap() {
            return self.poll_answer(
                idx,
                req.format,
                &since,
                req.origin,
                req.callback,
                req.keep_alive,
            );
        }
        // Nothing yet: hold the request.
        if let Some(client) = req.client {
            hub.session_hold(channel, client, true, self.shared.now());
        }
        let ext = (req.client.is_some() || req.callback.is_some()).then(|| {
            Box::new(Ext::Poll {
                client: req.client.map(Box::from),
                callback: req.callback.map(Box::from),
            })
        });
        self.enter_sub_phase(
            idx,
            channel,
            Phase::Poll,
            SubState::new(since.cursor, req.origin, req.format),
            ext,
            req.keep_alive,
        );
        let conn = &mut self.conns[idx];
        conn.deadline = 0;
        let at = self.after(self.cfg.poll_timeout);
        self.set_deadline(idx, at);
        Ok(())
    }

    /// The fan-out has `batch` (this turn's messages of the channel, in id order) for the held
    /// poll `idx`: answer it if anything is new for it.
    pub(super) fn wake_poll(&mut self, idx: usize, batch: &[(u32, Arc<Message>)]) -> Handled {
        let Some(conn) = self.conns.get(idx).filter(|c| c.phase == Phase::Poll) else {
            return Ok(());
        };
        let st = conn.sub();
        let (client, _) = conn.poll_ext();
        if let Some(client) = client {
            let Some(name) = self.channels.name(conn.chan) else {
                return Ok(());
            };
            let budget = self.answer_budget(st.format);
            let Ok(since) = self
                .shared
                .hub
                .session_take(name, client, budget, self.shared.now())
            else {
                return Ok(()); // replaced meanwhile; the poll times out empty
            };
            if since.msgs.is_empty() && !since.gap.is_gap() {
                return Ok(()); // another poll of the session took it
            }
            self.answer_held(idx, &since.msgs, since.gap)
        } else {
            let from = batch.partition_point(|(_, m)| m.id <= st.cursor());
            if from == batch.len() {
                return Ok(());
            }
            let msgs: Vec<Arc<Message>> = batch[from..].iter().map(|(_, m)| m.clone()).collect();
            // `--broker`: messages this process never received before these (see
            // `Message::gap_before`).
            let gap = msgs.iter().fold(Gap::None, |g, m| g.and(m.gap_before));
            self.answer_held(idx, &msgs, gap)
        }
    }

    /// Payload bytes one long-poll answer carries at most (`--max-queued-bytes`; at least one
    /// message; 0 = one message, the plain-text format). What does not fit waits for the next
    /// poll: in the session queue, or in the history for a cursor.
    fn answer_budget(&self, format: Format) -> usize {
        if format == Format::Text {
            0
        } else {
            self.cfg.max_queued_bytes.max(1)
        }
    }

    /// A request arrived behind the held poll: answer the poll now.
    pub(super) fn poll_interrupted(&mut self, idx: usize) -> Handled {
        self.answer_held(idx, &[], Gap::None)
    }

    /// Answers the held poll `idx` with `msgs` (empty: the timeout answer) and takes the
    /// connection back to HTTP.
    pub(super) fn answer_held(&mut self, idx: usize, msgs: &[Arc<Message>], gap: Gap) -> Handled {
        let conn = &self.conns[idx];
        let st = conn.sub();
        let keep_alive = conn.has(flag::KEEP_ALIVE);
        let callback: Option<String> = conn.poll_ext().1.map(str::to_string);
        let since = Since {
            msgs: msgs.to_vec(),
            gap,
            cursor: msgs.last().map_or(st.cursor(), |m| m.id),
        };
        self.finish_poll(idx);
        self.poll_answer(
            idx,
            st.format,
            &since,
            st.origin,
            callback.as_deref(),
            keep_alive,
        )?;
        self.keepalive_again(idx);
        Ok(())
    }

    /// Ends the held poll: the session hold is released, the subscription ends, the
    /// connection is an HTTP connection again.
    pub(super) fn finish_poll(&mut self, idx: usize) {
        self.release_poll(idx);
        self.unsubscribe(idx);
        self.back_to_http(idx);
    }

    /// A held request (poll, Bayeux connect) is over: the connection reads HTTP again.
    pub(super) fn back_to_http(&mut self, idx: usize) {
        self.conns[idx].back_to_http(&self.stats);
    }

    /// After answering a held request on a kept-alive connection: the keep-alive timeout runs.
    pub(super) fn keepalive_again(&mut self, idx: usize) {
        let conn = &mut self.conns[idx];
        if conn.phase == Phase::Http {
            conn.deadline = 0;
            let at = self.after(self.cfg.keepalive_timeout);
            self.set_deadline(idx, at);
        }
    }

    /// If `idx` is a held poll of a session, tells the hub the hold is over (its TTL starts).
    /// Call before the subscription ends (the channel name comes from it).
    pub(super) fn release_poll(&mut self, idx: usize) {
        let Some(conn) = self.conns.get_mut(idx).filter(|c| c.phase == Phase::Poll) else {
            return;
        };
        let Some(Ext::Poll { client, .. }) = conn.ext.as_deref_mut() else {
            return;
        };
        let Some(client) = client.take() else {
            return;
        };
        if let Some(name) = self.channels.name(conn.chan) {
            self.shared
                .hub
                .session_hold(name, &client, false, self.shared.now());
        }
    }

    /// Writes a long-poll answer in `format`.
    fn poll_answer(
        &mut self,
        idx: usize,
        format: Format,
        since: &Since,
        origin: u16,
        callback: Option<&str>,
        keep_alive: bool,
    ) -> Handled {
        let mut extra = self.cors_headers(origin);
        if since.gap.is_gap() {
            WorkerStats::add(&self.stats.gaps_reported, 1);
            let _ = write!(extra, "Edgecomet-Gap: {}\r\n", since.gap.header());
        }
        // Bound the answer (a resume may find the whole history); the cursor then covers only
        // what was sent, so the next poll continues from there.
        let n = hub::fits(since.msgs.iter(), self.answer_budget(format));
        let msgs = &since.msgs[..n];
        let cursor = if n < since.msgs.len() {
            msgs[n - 1].id
        } else {
            since.cursor
        };
        let resp = if format == Format::Text {
            // One message per answer; the next poll gets the rest at once.
            match msgs.first() {
                Some(m) => {
                    WorkerStats::add(&self.stats.messages_out, 1);
                    let _ = write!(extra, "Edgecomet-Cursor: {}\r\n", m.id);
                    http::response(
                        &self.date,
                        200,
                        "OK",
                        "text/plain; charset=utf-8",
                        &extra,
                        &m.payload,
                        keep_alive,
                    )
                }
                None => {
                    let _ = write!(extra, "Edgecomet-Cursor: {cursor}\r\n");
                    http::no_content(&self.date, &extra, keep_alive)
                }
            }
        } else {
            WorkerStats::add(&self.stats.messages_out, msgs.len() as u64);
            let _ = write!(extra, "Edgecomet-Cursor: {cursor}\r\n");
            let size: usize = msgs.iter().map(|m| m.payload.len() + 40).sum();
            let mut body = Vec::with_capacity(size + 64 + MAX_CALLBACK);
            if let Some(cb) = callback {
                let _ = write!(Wr(&mut body), "/**/{cb}(");
            }
            let _ = write!(Wr(&mut body), "{{\"cursor\":\"{cursor}\",\"messages\":[");
            for (i, m) in msgs.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                m.json_element(&mut body);
            }
            body.push(b']');
            if since.gap.is_gap() {
                let _ = write!(Wr(&mut body), ",\"gap\":{}", since.gap.json());
            }
            body.push(b'}');
            let ctype = if callback.is_some() {
                body.extend_from_slice(b");");
                extra.push_str("X-Content-Type-Options: nosniff\r\n");
                "application/javascript; charset=utf-8"
            } else {
                "application/json"
            };
            http::response(&self.date, 200, "OK", ctype, &extra, &body, keep_alive)
        };
        self.respond(idx, resp, keep_alive)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callbacks() {
        for ok in ["cb", "jQuery123_456", "a.b.c", "$x", "_"] {
            assert!(valid_callback(ok), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in [
            "",
            "sh%0d%0art",
            "NOTICE:",
            "a..b",
            "1a",
            "a-b",
            "a(b)",
            ".a",
            long.as_str(),
        ] {
            assert!(!valid_callback(bad), "{bad}");
        }
    }

    #[test]
    fn client_ids() {
        assert!(valid_client_id(b"0.123456"));
        assert!(!valid_client_id(b""));
        assert!(!valid_client_id(b"a b"));
        assert!(!valid_client_id(&[b'a'; 65]));
    }
}
