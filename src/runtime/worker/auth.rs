//! Authorization on the worker: the publish key of `POST /pub`, the subscribe token of every
//! `/sub` transport (checked once, before the subscription starts), the end of a subscription
//! when its token expires, and private push addresses (`/push/new`, `/push/{address}`).
//! The rules are `crate::auth`'s; this file reads the request, answers refusals, counts.
//!
//! What a subscription keeps of its token is its end, as a tick in the connection entry
//! (`Conn::expires`, no extra bytes): every deadline the connection gets is capped by it, and
//! when it comes `on_timeout` calls [`Worker::token_expired`].

use std::borrow::Cow;

use bytes::Bytes;

use super::Worker;
use super::conn_io::{Dead, Handled};
use crate::auth::{Grant, KeyError, TokenError, bearer, push};
use crate::logging::Event;
use crate::proto::http::{self, Method};
use crate::proto::ws::frame;
use crate::runtime::conn::{Phase, flag};
use crate::stats::WorkerStats;

/// WebSocket close code when the subscription's token expires (private-use range, RFC 6455
/// §7.4.2): reconnect with a fresh token.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// What an authorization check decided.
#[derive(Debug)]
pub(super) enum Authz {
    /// No token key is configured: open.
    Open,
    /// A valid token that allows it.
    Granted(Grant),
    /// Refused; the answer is sent.
    Refused,
}

/// The token of a request: `?token=` (browsers cannot set headers on a WebSocket or an
/// EventSource), else `Authorization: Bearer`.
fn request_token<'h>(head: &'h http::Head<'_>) -> Option<Cow<'h, str>> {
    if let Some(t) = http::query_param(head.path, "token") {
        return Some(match http::percent_decode(t) {
            Some(v) => Cow::Owned(String::from_utf8_lossy(&v).into_owned()),
            None => Cow::Borrowed(t),
        });
    }
    let v = bearer(head.authorization?)?;
    std::str::from_utf8(v).ok().map(Cow::Borrowed)
}

impl Worker {
    /// Checks a subscription request (`channel`: native name; `None` for a push address being
    /// made, which any valid token allows). A private push channel must be a well-formed
    /// address and needs no channel in the token: knowing the address is the permission.
    /// `extra`: headers every answer carries (CORS).
    pub(super) fn authorize_sub(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        channel: Option<&str>,
        extra: &str,
    ) -> Result<Authz, Dead> {
        let upgrade = head.upgrade_present || head.connection_upgrade;
        let keep_alive = head.keep_alive() && !upgrade;
        let private = channel.is_some_and(push::is_private);
        if let Some(ch) = channel
            && private
            && !push::valid_private(ch)
        {
            self.respond_error(
                idx,
                404,
                "Not Found",
                extra,
                "no such push address (~push/ and 32 lowercase hex digits)\n",
                keep_alive,
            )?;
            return Ok(Authz::Refused);
        }
        let Some(auth) = self.shared.auth().filter(|a| a.tokens()) else {
            return Ok(Authz::Open);
        };
        let token = request_token(head);
        let now = self.shared.unix_secs();
        let mut sub = None;
        let verdict = auth
            .verify(token.as_deref().unwrap_or(""), now)
            .inspect(|g| sub = g.sub.clone())
            .and_then(|g| match channel {
                Some(ch) if !private && !g.may_subscribe(ch) => Err(TokenError::Channel),
                // A token whose end falls in the current second would be ended at once (see
                // `tick_at_unix`): expired already, as far as a new subscription goes.
                _ if self.tick_at_unix(g.ends) <= self.tick => Err(TokenError::Expired),
                _ => Ok(g),
            });
        match verdict {
            Ok(g) => {
                WorkerStats::add(&self.stats.auth_tokens_accepted, 1);
                Ok(Authz::Granted(g))
            }
            Err(e) => {
                self.note_refusal(e.message(), sub.as_deref(), channel);
                self.token_refused(idx, e, extra, keep_alive)?;
                Ok(Authz::Refused)
            }
        }
    }

    /// Counts a refusal for the once-a-second summary line (`logging::Summary`), with its
    /// description: the reason, the token's subject when it was valid, the channel.
    fn note_refusal(&mut self, why: &str, sub: Option<&str>, channel: Option<&str>) {
        self.notes.note(Event::AuthRefused, || {
            let mut last = why.to_string();
            if let Some(s) = sub {
                // The token's subject as the client gave it, shortened and printable.
                let s: String = s.chars().take(64).filter(|c| !c.is_control()).collect();
                last.push_str(&format!(", sub {s:?}"));
            }
            if let Some(c) = channel {
                last.push_str(&format!(", channel {c}"));
            }
            last
        });
    }

    /// Counts a refused token by its reason and answers 401 / 403 with `WWW-Authenticate`.
    pub(super) fn token_refused(
        &mut self,
        idx: usize,
        e: TokenError,
        extra: &str,
        keep_alive: bool,
    ) -> Handled {
        self.count_token_error(e);
        let (status, reason) = match e.status() {
            403 => (403, "Forbidden"),
            _ => (401, "Unauthorized"),
        };
        let headers = format!("{}{extra}", e.www_authenticate());
        let body = format!("{}\n", e.message());
        self.respond_error(idx, status, reason, &headers, &body, keep_alive)
    }

    pub(super) fn count_token_error(&self, e: TokenError) {
        let s = &self.stats;
        let c = match e {
            TokenError::Missing => &s.auth_token_missing,
            TokenError::Malformed | TokenError::Algorithm => &s.auth_token_malformed,
            TokenError::Signature => &s.auth_token_bad_signature,
            TokenError::Expired => &s.auth_token_expired,
            TokenError::NotYetValid => &s.auth_token_not_yet_valid,
            TokenError::Claims => &s.auth_token_claims,
            TokenError::Channel => &s.auth_token_channel,
        };
        WorkerStats::add(c, 1);
    }

    /// A client's message to `channel` (a POST body to `/sub`) with tokens configured: its
    /// token must name the channel in `publish`. `Ok(true)` when it may go on.
    pub(super) fn authorize_client_publish(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        channel: &str,
        extra: &str,
    ) -> Result<bool, Dead> {
        let Some(auth) = self.shared.auth().filter(|a| a.tokens()) else {
            return Ok(true);
        };
        if push::valid_private(channel) {
            return Ok(true);
        }
        let token = request_token(head);
        let verdict = auth
            .verify(token.as_deref().unwrap_or(""), self.shared.unix_secs())
            .and_then(|g| {
                if g.may_publish(channel) {
                    Ok(g)
                } else {
                    Err(TokenError::Channel)
                }
            });
        match verdict {
            Ok(_) => Ok(true),
            Err(e) => {
                self.token_refused(idx, e, extra, head.keep_alive())?;
                Ok(false)
            }
        }
    }

    /// `POST /pub`: the publish key, when keys are configured. `Ok(true)` when it may go on;
    /// else answered 401.
    pub(super) fn authorize_publish(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        extra: &str,
    ) -> Result<bool, Dead> {
        let Some(auth) = self.shared.auth() else {
            return Ok(true);
        };
        let why = match auth.check_publish(head.authorization) {
            Ok(()) => return Ok(true),
            Err(KeyError::Missing) => "a publish key is required (Authorization: Bearer KEY)\n",
            Err(KeyError::Wrong) => "wrong publish key\n",
        };
        WorkerStats::add(&self.stats.auth_publish_refused, 1);
        self.note_refusal(why.trim_end(), None, None);
        let headers = format!("WWW-Authenticate: Bearer realm=\"edgecomet\"\r\n{extra}");
        self.respond_error(idx, 401, "Unauthorized", &headers, why, head.keep_alive())?;
        Ok(false)
    }

    /// The subscription just started on `idx` ends when `grant` does: its end becomes the
    /// connection's expiry, and a WebSocket subscriber remembers whether it may publish.
    pub(super) fn bind_grant(&mut self, idx: usize, grant: &Grant, channel: &str) {
        let at = self.tick_at_unix(grant.ends);
        let conn = &mut self.conns[idx];
        conn.expires = at;
        if grant.may_publish(channel) || push::valid_private(channel) {
            conn.set(flag::MAY_PUBLISH);
        }
        let deadline = conn.deadline;
        self.set_deadline(idx, deadline);
    }

    /// The wheel tick by which the wall clock reaches `unix` (seconds since the epoch) at the
    /// latest: a tick `t` is processed once `t - 1` seconds of the worker's clock have passed,
    /// so `t` = ⌊the worker's seconds at `unix`⌋ + 1 fires within the last second before it,
    /// never after (a subscription never outlives its token).
    fn tick_at_unix(&self, unix: u64) -> u32 {
        let now = self.shared.now();
        let left = unix as f64 - now.unix_micros as f64 / 1e6;
        let at = (self.start.elapsed().as_secs_f64() + left).floor();
        if at < 0.0 {
            1
        } else {
            (at.min(f64::from(u32::MAX - 1)) as u32) + 1
        }
    }

    /// The token of the subscription on `idx` has expired: the subscription ends, as it would
    /// at a shutdown, but with a reason the client can tell. WebSocket: close 4001 "token
    /// expired"; SSE: an `event: expired` then the end of the stream; streaming: a last
    /// `{"error":"token expired"}` line, the last chunk; a held poll: 401. The client
    /// reconnects with a fresh token.
    pub(super) fn token_expired(&mut self, idx: usize) -> Handled {
        WorkerStats::add(&self.stats.auth_expired_closes, 1);
        match self.conns[idx].phase {
            Phase::WsSub | Phase::BayeuxWs => self.begin_close(
                idx,
                Some(frame::close_frame(CLOSE_TOKEN_EXPIRED, "token expired")),
            ),
            Phase::Sse => {
                let ev = Bytes::from_static(b"event: expired\ndata: token expired\n\n");
                self.send(idx, &[ev], false)?;
                self.begin_close(idx, None)
            }
            Phase::Stream => {
                // One chunk holding the line, then the last chunk.
                const LAST: &[u8] = b"1a\r\n{\"error\":\"token expired\"}\n\r\n0\r\n\r\n";
                self.begin_close(idx, Some(Bytes::from_static(LAST)))
            }
            Phase::Poll => {
                let st = self.conns[idx].sub();
                let keep_alive = self.conns[idx].has(flag::KEEP_ALIVE);
                self.finish_poll(idx);
                let cors = self.cors_headers(st.origin);
                self.token_refused(idx, TokenError::Expired, &cors, keep_alive)?;
                self.keepalive_again(idx);
                Ok(())
            }
            Phase::BayeuxPoll => self.bayeux_end_hold(idx, None),
            // Nothing else carries a token. (A Socket.IO session's token end is the session's
            // own deadline: `socketio.rs`.)
            Phase::Http
            | Phase::WsEcho
            | Phase::Closing
            | Phase::Dashboard
            | Phase::SioWs
            | Phase::SioPoll => Ok(()),
        }
    }

    // ---- private push addresses -----------------------------------------------------------

    /// `/push/new` and `/push/{address}`.
    pub(super) fn route_push(&mut self, idx: usize, head: &http::Head<'_>, body: &[u8]) -> Handled {
        let path = head.path.split('?').next().unwrap_or("");
        let what = path.strip_prefix("/push/").unwrap_or("");
        let keep_alive = head.keep_alive();
        let Some(origin) = self.check_origin(idx, head)? else {
            return Ok(());
        };
        if head.method_raw == "OPTIONS" {
            return self.preflight(idx, head, origin);
        }
        let cors = self.cors_headers(origin);
        let callback = http::query_param(head.path, "callback");
        if let Some(cb) = callback
            && !super::transports::valid_callback(cb)
        {
            return self.respond_error(
                idx,
                400,
                "Bad Request",
                &cors,
                "invalid callback: JavaScript identifiers joined by '.', at most 64 bytes\n",
                keep_alive,
            );
        }
        let method = head.method();
        // GET is for JSONP (a <script> can only GET); otherwise POST.
        let allowed = method == Method::Post || method == Method::Get && callback.is_some();
        let allowed = allowed || (method == Method::Get && what != "new");
        if !allowed {
            return self.respond_error(
                idx,
                405,
                "Method Not Allowed",
                &format!("Allow: POST, OPTIONS\r\n{cors}"),
                "use POST (or GET with ?callback= for JSONP)\n",
                keep_alive,
            );
        }
        if what == "new" {
            return self.push_new(idx, head, &cors, callback);
        }
        if !push::valid_address(what) {
            return self.respond_error(
                idx,
                404,
                "Not Found",
                &cors,
                "no such push address (32 lowercase hex digits)\n",
                keep_alive,
            );
        }
        // The message: the POST body, or `?message=` of a GET.
        let message: Cow<'_, [u8]> = if method == Method::Get {
            match http::query_param(head.path, "message").map(http::percent_decode) {
                Some(Some(m)) => Cow::Owned(m),
                Some(None) => {
                    return self.respond_error(
                        idx,
                        400,
                        "Bad Request",
                        &cors,
                        "message: bad %-escape\n",
                        keep_alive,
                    );
                }
                None => {
                    return self.respond_error(
                        idx,
                        400,
                        "Bad Request",
                        &cors,
                        "GET /push/{address} needs ?message= (or POST the message)\n",
                        keep_alive,
                    );
                }
            }
        } else {
            Cow::Borrowed(body)
        };
        if message.len() > self.cfg.push_max_bytes as usize {
            WorkerStats::add(&self.stats.push_too_large, 1);
            return self.respond_error(
                idx,
                413,
                "Content Too Large",
                &cors,
                &format!(
                    "a push message is at most {} bytes (--push-max-bytes)\n",
                    self.cfg.push_max_bytes
                ),
                keep_alive,
            );
        }
        if !self.push_rate_ok(idx) {
            WorkerStats::add(&self.stats.push_rate_limited, 1);
            return self.respond_error(
                idx,
                429,
                "Too Many Requests",
                &format!("Retry-After: 1\r\n{cors}"),
                "too many push messages from this address (--push-rate)\n",
                keep_alive,
            );
        }
        let channel = push::channel(what);
        WorkerStats::add(&self.stats.push_messages, 1);
        match callback {
            None => self.publish(idx, &channel, &message, keep_alive, origin),
            Some(cb) => {
                if std::str::from_utf8(&message).is_err() {
                    return self.bad_request(idx, "message must be UTF-8 text\n", keep_alive);
                }
                match self.publish_message(&channel, Bytes::copy_from_slice(&message), None) {
                    Ok(p) => {
                        let id = match p {
                            super::publish::Published::Here(m) => format!(",\"id\":\"{}\"", m.id),
                            super::publish::Published::Broker => String::new(),
                        };
                        let js = format!("{cb}({{\"ok\":true{id}}});\n");
                        let resp = http::response(
                            &self.date,
                            200,
                            "OK",
                            "application/javascript",
                            &format!("Cache-Control: no-store\r\n{cors}"),
                            js.as_bytes(),
                            keep_alive,
                        );
                        self.respond(idx, resp, keep_alive)
                    }
                    Err(e) => self.publish_refused(idx, e, &cors, keep_alive),
                }
            }
        }
    }

    /// Whether this connection's source address may send to a push address now.
    fn push_rate_ok(&self, idx: usize) -> bool {
        let Ok(peer) = self.conns[idx].sock.peer_addr() else {
            return true; // gone: its answer will not arrive anyway
        };
        // The process's clock, not the worker's: every worker shares the limiter.
        let now_ms = self.shared.start.elapsed().as_millis() as u64;
        self.shared
            .push_limit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(peer.ip(), now_ms)
    }

    /// `POST /push/new` (or `GET ?callback=`): a fresh address, allowed as a subscription is
    /// (with tokens configured: a valid token).
    fn push_new(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        cors: &str,
        callback: Option<&str>,
    ) -> Handled {
        if let Authz::Refused = self.authorize_sub(idx, head, None, cors)? {
            return Ok(());
        }
        let Some(bits) = random_128() else {
            return self.respond_error(
                idx,
                503,
                "Service Unavailable",
                cors,
                "no randomness available\n",
                head.keep_alive(),
            );
        };
        let address = push::address(bits);
        let channel = push::channel(&address);
        WorkerStats::add(&self.stats.push_addresses, 1);
        let json = format!(
            "{{\"address\":\"{address}\",\"channel\":\"{channel}\",\
             \"subscribe\":\"/sub/{channel}\",\"send\":\"/push/{address}\"}}"
        );
        let keep_alive = head.keep_alive();
        let resp = match callback {
            Some(cb) => http::response(
                &self.date,
                200,
                "OK",
                "application/javascript",
                &format!("Cache-Control: no-store\r\n{cors}"),
                format!("{cb}({json});\n").as_bytes(),
                keep_alive,
            ),
            None => http::response(
                &self.date,
                200,
                "OK",
                "application/json",
                &format!("Cache-Control: no-store\r\n{cors}"),
                format!("{json}\n").as_bytes(),
                keep_alive,
            ),
        };
        self.respond(idx, resp, keep_alive)
    }
}

/// 128 bits from the kernel's CSPRNG (getrandom(2), through ring).
fn random_128() -> Option<u128> {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut b).ok()?;
    Some(u128::from_le_bytes(b))
}
