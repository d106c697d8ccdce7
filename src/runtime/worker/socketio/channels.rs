//! What a Socket.IO CONNECT joins (channels and patterns from its `auth`, and for `/` the
//! handshake's query; checked against the token), the session as a subscriber in the channel
//! table, the rules' [`Env`], and connection state recovery.

use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::proto::http::{self};
use crate::proto::socketio as wire;
use crate::pubsub::hub::Message;
use crate::pubsub::{valid_channel, valid_pattern};
use crate::runtime::worker::Worker;
use crate::runtime::worker::publish::PubError;
use crate::session::socketio::recovery::{self, Record};
use crate::session::socketio::{Env, Granted};
use crate::stats::WorkerStats;

/// What a call into the rules asked of the worker, carried out once the session is back in
/// its slot.
#[derive(Default)]
pub(super) struct Asked {
    /// A CONNECT was granted: in this namespace, join these channels (normalized), with this
    /// grant.
    pub(super) join: Option<(usize, Vec<Box<str>>, Option<crate::auth::Grant>)>,
    /// With state recovery: the CONNECT's private id and socket id, and, when the session
    /// was recovered, the channel's last id when it was first joined and what it missed (and
    /// the cursor after it).
    pub(super) ids: Option<(u64, u64)>,
    pub(super) recovered: Option<(u64, Vec<Arc<Message>>, u64)>,
    /// Namespaces left.
    pub(super) leave: Vec<usize>,
}

/// The rules' [`Env`]: the worker, while the session is out of its slot.
pub(super) struct SioEnv<'w> {
    pub(super) w: &'w mut Worker,
    pub(super) query: Option<Box<str>>,
    pub(super) grant: Option<&'w crate::auth::Grant>,
    pub(super) asked: Asked,
}

impl Env for SioEnv<'_> {
    fn connect(&mut self, nsp: usize, auth: &str) -> Result<Granted, String> {
        if nsp != 0 {
            // Channels from the CONNECT's `auth` only (the handshake's query is `/`'s).
            let (channels, grant) = self.w.sio_channels(auth, None)?;
            self.asked.join = Some((nsp, channels, grant));
            return Ok(Granted {
                sid: recovery::id_string(random_id()),
                pid: None,
            });
        }
        let (channels, grant) = self.w.sio_channels(auth, self.query.as_deref())?;
        let mut sock = random_id();
        let mut pid_bits = None;
        if self.w.sio.settings.recovery_ms > 0 {
            let field = |k| {
                (!auth.is_empty())
                    .then(|| wire::member(auth, k).and_then(wire::string_value))
                    .flatten()
            };
            if let Some(pid) = field("pid") {
                let found = recovery::id_bits(&pid).and_then(|p| {
                    let r = self.w.sio_recover(p, &channels, field("offset").as_deref());
                    r.map(|r| (p, r))
                });
                match found {
                    Some((p, (old_sock, joined_at, msgs, cursor))) => {
                        WorkerStats::add(&self.w.stats.sio_recovered, 1);
                        sock = old_sock;
                        pid_bits = Some(p);
                        self.asked.recovered = Some((joined_at, msgs, cursor));
                    }
                    None => WorkerStats::add(&self.w.stats.sio_not_recovered, 1),
                }
            }
            let pid = *pid_bits.get_or_insert_with(random_id);
            self.asked.ids = Some((pid, sock));
        }
        self.asked.join = Some((0, channels, grant));
        Ok(Granted {
            sid: recovery::id_string(sock),
            pid: pid_bits.map(recovery::id_string),
        })
    }

    fn disconnect(&mut self, nsp: usize) {
        self.asked.leave.push(nsp);
    }

    fn unknown_namespace(&mut self) {
        WorkerStats::add(&self.w.stats.sio_connect_errors, 1);
    }

    fn publish(&mut self, channel: &str, data: &str) -> Result<(), String> {
        if !valid_channel(channel, self.w.cfg.max_channel_len) {
            return Err("invalid channel name".to_string());
        }
        if self.w.cfg.tokens_configured() {
            let granted = self.asked.join.as_ref().and_then(|(_, _, g)| g.as_ref());
            let g = granted.or(self.grant);
            if !g.is_some_and(|g| g.may_publish(channel)) {
                WorkerStats::add(&self.w.stats.auth_token_channel, 1);
                return Err("the token does not allow publishing to this channel".to_string());
            }
        }
        // A JSON string is published as its text; anything else as the JSON it is.
        let payload = match wire::string_value(data) {
            Some(s) => s,
            None => data.to_string(),
        };
        match self.w.publish_message(channel, Bytes::from(payload), None) {
            Ok(_) | Err(PubError::Inbox(_)) => {
                WorkerStats::add(&self.w.stats.client_messages, 1);
                Ok(())
            }
            Err(PubError::Channels) => {
                WorkerStats::add(&self.w.stats.channel_limit, 1);
                Err("channel limit reached".to_string())
            }
            Err(PubError::Broker(_)) => Err("broker unavailable".to_string()),
            Err(PubError::Draining) => Err("server shutting down".to_string()),
        }
    }
}

/// A CONNECT_ERROR's data.
fn connect_error(message: &str, channel: Option<&str>) -> String {
    let mut s = String::from("{\"message\":");
    crate::proto::bayeux::json_str(&mut s, message);
    if let Some(c) = channel {
        s.push_str(",\"data\":{\"channel\":");
        crate::proto::bayeux::json_str(&mut s, c);
        s.push('}');
    }
    s.push('}');
    s
}

impl Worker {
    /// Whether the session whose private id is `pid` can be recovered for a CONNECT asking for
    /// `channels`, with the client's `offset`: its socket id, the channel's id when it was
    /// first joined, what it missed and the cursor after it.
    pub(in crate::runtime::worker) fn sio_recover(
        &mut self,
        pid: u64,
        channels: &[Box<str>],
        offset: Option<&str>,
    ) -> Option<(u64, u64, Vec<Arc<Message>>, u64)> {
        let now = self.sio_now();
        let rec = self
            .shared
            .sio_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(pid, now)?;
        match (&rec.channel, channels) {
            (None, []) => Some((rec.sid, 0, Vec::new(), 0)),
            (Some(c), [asked]) if c == asked => {
                let cursor = match offset {
                    Some(o) => recovery::parse_offset(o)?,
                    None => rec.joined_at,
                };
                // Watched before the read: what comes after it is posted here. (The session
                // joins the channel next.)
                self.watch(c);
                let since = self.shared.hub.since(c, Some(cursor));
                if since.gap.is_gap() {
                    return None;
                }
                Some((rec.sid, rec.joined_at, since.msgs, since.cursor))
            }
            _ => None,
        }
    }

    /// A session lost its connection: what its client needs to recover it, when it can be.
    pub(in crate::runtime::worker) fn sio_keep_record(&mut self, slot: usize) {
        let window = self.sio.settings.recovery_ms;
        let s = &self.sio.sessions[slot];
        if window == 0 || !s.joined(0) {
            return;
        }
        let (pid, sid) = (s.pid, s.sock);
        if pid == 0 {
            return;
        }
        let channel = match &*s.channels {
            [] => None,
            [(chan, _, 0)] => match self.channels.name(*chan) {
                Some(n) if !n.ends_with('*') => Some(Box::from(&**n)),
                _ => return,
            },
            _ => return,
        };
        let rec = Record {
            sid,
            channel,
            joined_at: s.joined_at,
            until: self.sio_now() + window,
        };
        let kept = self
            .shared
            .sio_recovery
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keep(pid, rec);
        if kept.is_err() {
            WorkerStats::add(&self.stats.sio_recovery_full, 1);
        }
    }

    // ---- channels -----------------------------------------------------------------------------

    /// The channels a CONNECT to `/` asks for (its `auth.channels`, the handshake's
    /// `?channels=`), checked against the names and, with tokens, against the token (its
    /// `auth.token` or `?token=`); normalized: no duplicates, nothing a pattern of the list
    /// already covers. `Err`: the CONNECT_ERROR's data.
    pub(in crate::runtime::worker) fn sio_channels(
        &mut self,
        auth: &str,
        query: Option<&str>,
    ) -> Result<(Vec<Box<str>>, Option<crate::auth::Grant>), String> {
        let mut asked: Vec<String> = Vec::new();
        let mut token: Option<String> = None;
        if !auth.is_empty() {
            if let Some(list) = wire::member(auth, "channels") {
                if list.starts_with('[') {
                    for e in wire::elements(list) {
                        match wire::string_value(e) {
                            Some(c) => asked.push(c),
                            None => {
                                WorkerStats::add(&self.stats.sio_connect_errors, 1);
                                return Err(connect_error("channels must be strings", None));
                            }
                        }
                    }
                } else if let Some(c) = wire::string_value(list) {
                    asked.extend(c.split(',').map(str::to_string));
                } else {
                    WorkerStats::add(&self.stats.sio_connect_errors, 1);
                    return Err(connect_error("channels must be a list of names", None));
                }
            }
            token = wire::member(auth, "token").and_then(wire::string_value);
        }
        if let Some(q) = query {
            let path = format!("?{q}");
            if let Some(v) = http::query_param(&path, "channels")
                && let Some(d) = http::percent_decode(v)
            {
                asked.extend(
                    String::from_utf8_lossy(&d)
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string),
                );
            }
            if token.is_none()
                && let Some(v) = http::query_param(&path, "token")
            {
                token = http::percent_decode(v).map(|d| String::from_utf8_lossy(&d).into_owned());
            }
        }
        let max_len = self.cfg.max_channel_len;
        for c in &asked {
            if !valid_channel(c, max_len) && !valid_pattern(c, max_len) {
                WorkerStats::add(&self.stats.sio_connect_errors, 1);
                return Err(connect_error("invalid channel name", Some(c)));
            }
        }
        asked.sort();
        asked.dedup();
        let patterns: Vec<String> = asked.iter().filter(|c| c.ends_with('*')).cloned().collect();
        asked.retain(|c| !patterns.iter().any(|p| p != c && covers(p, c)));
        let max = usize::from(self.cfg.socketio_max_channels);
        if asked.len() > max {
            WorkerStats::add(&self.stats.sio_connect_errors, 1);
            return Err(connect_error(
                &format!("at most {max} channels per CONNECT (--socketio-max-channels)"),
                None,
            ));
        }
        let mut grant = None;
        if let Some(a) = self.shared.auth().filter(|a| a.tokens()) {
            let now = self.shared.unix_secs();
            let verdict = a.verify(token.as_deref().unwrap_or(""), now).and_then(|g| {
                for c in &asked {
                    let private = crate::auth::push::is_private(c);
                    if private && !crate::auth::push::valid_private(c) {
                        return Err(crate::auth::TokenError::Channel);
                    }
                    let ok = private
                        || if c.ends_with('*') {
                            g.channel_patterns().any(|p| {
                                crate::auth::pattern::covers_subscription(p, &format!("/{c}"))
                            })
                        } else {
                            g.may_subscribe(c)
                        };
                    if !ok {
                        return Err(crate::auth::TokenError::Channel);
                    }
                }
                if g.ends <= now {
                    return Err(crate::auth::TokenError::Expired);
                }
                Ok(g)
            });
            match verdict {
                Ok(g) => {
                    WorkerStats::add(&self.stats.auth_tokens_accepted, 1);
                    grant = Some(g);
                }
                Err(e) => {
                    self.count_token_error(e);
                    WorkerStats::add(&self.stats.sio_connect_errors, 1);
                    return Err(connect_error(e.message(), None));
                }
            }
        }
        if !self.channels.admits_all(asked.iter().map(String::as_str)) {
            WorkerStats::add(&self.stats.channel_limit, 1);
            WorkerStats::add(&self.stats.sio_connect_errors, 1);
            return Err(connect_error(
                "channel limit reached (--max-channels)",
                None,
            ));
        }
        Ok((
            asked.into_iter().map(String::into_boxed_str).collect(),
            grant,
        ))
    }

    /// Session `slot` joins `channels` (checked) in namespace `nsp`.
    pub(in crate::runtime::worker) fn sio_join(
        &mut self,
        slot: usize,
        nsp: usize,
        channels: &[Box<str>],
    ) {
        let mut list = std::mem::take(&mut self.sio.sessions[slot].channels).into_vec();
        for c in channels {
            let Ok(j) = self.channels.subscribe(c, sio_entry(slot, nsp)) else {
                continue; // admitted in this turn: cannot happen
            };
            list.push((j.chan, j.pos, nsp as u8));
            if j.first {
                self.first_interest(c);
            }
        }
        // Kept exactly as long as it is: an idle session costs no slack.
        self.sio.sessions[slot].channels = list.into_boxed_slice();
    }

    /// Session `slot` leaves the channels of namespace `nsp` (`None`: of every namespace).
    pub(in crate::runtime::worker) fn sio_leave(&mut self, slot: usize, nsp: Option<usize>) {
        // One entry at a time, the others staying in the session's list: removing one may
        // move another of the same session (the same channel through another namespace), whose
        // new position must land in the list before it is removed in turn.
        loop {
            let s = &mut self.sio.sessions[slot];
            let Some(i) = s
                .channels
                .iter()
                .position(|e| nsp.is_none_or(|n| usize::from(e.2) == n))
            else {
                break;
            };
            let mut list = std::mem::take(&mut s.channels).into_vec();
            let (chan, pos, _) = list.swap_remove(i);
            s.channels = list.into_boxed_slice();
            if let Some(moved) = self.channels.unsubscribe(chan, pos) {
                self.moved_in_channel(chan, pos, moved);
            }
        }
    }

    /// The channel table moved entry `moved` to `pos` of `chan`: its owner learns the new
    /// position.
    pub(in crate::runtime::worker) fn moved_in_channel(&mut self, chan: u32, pos: u32, moved: u32) {
        if moved & SIO_BIT != 0 {
            let (slot, nsp) = sio_of_entry(moved);
            if let Some(s) = self.sio.sessions.get_mut(slot)
                && let Some(e) = s
                    .channels
                    .iter_mut()
                    .find(|e| e.0 == chan && usize::from(e.2) == nsp)
            {
                e.1 = pos;
            }
        } else if let Some(m) = self.conns.get_mut(moved as usize) {
            m.chan_pos = pos;
        }
    }
}

/// Whether pattern `p` (`a/*`, `a/**`, `*`, `**`) covers channel or pattern `c`: every
/// channel `c` matches, `p` matches too.
fn covers(p: &str, c: &str) -> bool {
    #[derive(PartialEq)]
    enum K {
        Exact,
        One,
        All,
    }
    fn split(x: &str) -> (&str, K) {
        match x {
            "**" => ("", K::All),
            "*" => ("", K::One),
            _ => match x.strip_suffix("/**") {
                Some(b) => (b, K::All),
                None => match x.strip_suffix("/*") {
                    Some(b) => (b, K::One),
                    None => (x, K::Exact),
                },
            },
        }
    }
    let (pb, pk) = split(p);
    let (cb, ck) = split(c);
    match pk {
        K::Exact => false,
        K::One => ck == K::Exact && cb.rsplit_once('/').map_or("", |(parent, _)| parent) == pb,
        K::All => {
            pb.is_empty()
                || (cb.len() > pb.len() && cb.starts_with(pb) && cb.as_bytes()[pb.len()] == b'/')
                || (cb == pb && ck != K::Exact)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::covers;

    #[test]
    fn patterns_cover() {
        assert!(covers("**", "a"));
        assert!(covers("*", "a"));
        assert!(!covers("*", "a/b"));
        assert!(covers("a/*", "a/b"));
        assert!(!covers("a/*", "a/b/c"));
        assert!(!covers("a/*", "a"));
        assert!(covers("a/**", "a/b/c"));
        assert!(covers("a/**", "a/*"));
        assert!(covers("a/**", "a/b/**"));
        assert!(!covers("a/**", "a"));
        assert!(!covers("a/**", "ab/c"));
        assert!(covers("**", "a/*"));
        assert!(!covers("*", "a/*"));
        assert!(!covers("a/*", "a/*"));
    }
}
