//! CometD/Bayeux on the worker, long-polling transport: a `POST` of a JSON array of messages
//! is answered with a JSON array of replies, processed in order. A `/meta/connect` with nothing
//! queued is held (the connection goes to `Phase::BayeuxPoll`) until its client has messages,
//! the connect is replaced by a newer one, or `--bayeux-timeout`.
//!
//! The client store is [`crate::pubsub::bayeux::Clients`]; publishes go through the hub like any
//! other, so native subscribers of `a/b` and Bayeux subscribers of `/a/b` see the same messages.

use bytes::Bytes;

use super::{PubError, Worker};
use crate::proto::bayeux::{self, Reply, Request};
use crate::proto::http;
use crate::pubsub::bayeux::{Connect, Refusal, Waiter};
use crate::runtime::conn::{Ext, Phase, flag};
use crate::stats::WorkerStats;

/// What processing a request batch leaves to do.
struct Batch {
    /// Replies so far, each a JSON object.
    replies: Vec<String>,
    /// A connect to hold (the last message of the request): (client, its reply).
    hold: Option<(String, String)>,
}

impl Worker {
    /// `POST {bayeux_path}`: one long-polling request.
    pub(super) fn bayeux_http(&mut self, idx: usize, head: &http::Head<'_>, body: &[u8]) {
        let keep_alive = head.keep_alive();
        let Some(origin) = self.check_origin(idx, head) else {
            return;
        };
        if head.method_raw == "OPTIONS" {
            return self.preflight(idx, head, origin);
        }
        let cors = self.cors_headers(origin);
        if head.method() != http::Method::Post {
            return self.respond_error(
                idx,
                405,
                "Method Not Allowed",
                &format!("Allow: POST, OPTIONS\r\n{cors}"),
                "Bayeux long-polling: POST a JSON array of messages\n",
                keep_alive,
            );
        }
        let mut copy = body.to_vec();
        let reqs = match bayeux::parse(&mut copy, self.cfg.bayeux_max_batch) {
            Ok(r) => r,
            Err(e) => {
                WorkerStats::add(&self.stats.bayeux_bad_requests, 1);
                let reply = format!(
                    "[{{\"successful\":false,\"error\":\"400::{}\"}}]",
                    e.message()
                );
                let resp = http::response(
                    400,
                    "Bad Request",
                    "application/json;charset=UTF-8",
                    &cors,
                    reply.as_bytes(),
                    keep_alive,
                );
                return self.respond(idx, resp, keep_alive);
            }
        };
        WorkerStats::add(&self.stats.bayeux_messages_in, reqs.len() as u64);
        let batch = self.bayeux_batch(idx, &reqs);
        match batch.hold {
            None => self.bayeux_answer(idx, &batch.replies, &[], None, origin, keep_alive),
            Some((client, connect)) => {
                let before = batch.replies.join(",");
                WorkerStats::sub(&self.stats.conns_http, 1);
                WorkerStats::add(&self.stats.conns_bayeux_poll, 1);
                let conn = &mut self.conns[idx];
                conn.phase = Phase::BayeuxPoll;
                conn.proto = crate::runtime::conn::Proto::Sub(crate::runtime::conn::SubState::new(
                    0,
                    origin,
                    crate::runtime::conn::Format::Json,
                ));
                if keep_alive {
                    conn.set(flag::KEEP_ALIVE);
                }
                conn.ext = Some(Box::new(Ext::Bayeux {
                    client: client.into_boxed_str(),
                    before,
                    connect,
                }));
                conn.deadline = 0;
                let at = self.tick + self.cfg.bayeux_timeout;
                self.set_deadline(idx, at);
            }
        }
    }

    /// Processes the messages of one request in order.
    fn bayeux_batch(&mut self, idx: usize, reqs: &[Request]) -> Batch {
        let mut out = Batch {
            replies: Vec::with_capacity(reqs.len()),
            hold: None,
        };
        for (i, r) in reqs.iter().enumerate() {
            let last = i + 1 == reqs.len();
            match r.channel.as_str() {
                "/meta/handshake" => out.replies.push(self.bayeux_handshake(r)),
                "/meta/connect" => {
                    // Held only when it is the last message of the request (its reply must
                    // come last); an earlier connect is answered at once.
                    let waiter = last.then(|| self.waiter(idx));
                    match self.bayeux_connect(r, waiter) {
                        ConnectOutcome::Reply(rs) => out.replies.extend(rs),
                        ConnectOutcome::Hold(client, reply) => out.hold = Some((client, reply)),
                    }
                }
                "/meta/subscribe" | "/meta/unsubscribe" => {
                    out.replies.push(self.bayeux_subscribe(r))
                }
                "/meta/disconnect" => out.replies.push(self.bayeux_disconnect(r)),
                c if bayeux::is_meta(c) => out.replies.push(
                    Reply::to(r, false)
                        .error(400, c, "unknown meta channel")
                        .finish(),
                ),
                "/service/echo" => {
                    // A remote call: the answer (same id, with data) and the plain publish
                    // reply (same id, no data), which the client needs to clear its timer.
                    let Some(client) = r.client_id.as_deref() else {
                        out.replies.push(self.unknown_client(r));
                        continue;
                    };
                    if !self.shared.bayeux.exists(client) {
                        out.replies.push(self.unknown_client(r));
                        continue;
                    }
                    let data = r.data.as_deref().unwrap_or("null");
                    out.replies
                        .push(Reply::to(r, true).raw("data", data).finish());
                    out.replies.push(Reply::to(r, true).finish());
                }
                _ => out.replies.push(self.bayeux_publish(r)),
            }
        }
        out
    }

    fn waiter(&self, idx: usize) -> Waiter {
        Waiter {
            worker: self.id,
            idx: idx as u32,
            generation: self.conns[idx].generation,
        }
    }

    fn advice(&self, reconnect: &str) -> String {
        format!(
            "{{\"reconnect\":\"{reconnect}\",\"interval\":0,\"timeout\":{},\"maxInterval\":{}}}",
            u64::from(self.cfg.bayeux_timeout) * 1000,
            u64::from(self.cfg.bayeux_max_interval) * 1000
        )
    }

    /// The unsuccessful reply for an unknown client: `402::Unknown client`, advice handshake.
    fn unknown_client(&self, r: &Request) -> String {
        Reply::to(r, false)
            .error(402, "", "Unknown client")
            .raw("advice", "{\"reconnect\":\"handshake\",\"interval\":0}")
            .finish()
    }

    fn bayeux_handshake(&mut self, r: &Request) -> String {
        if !r
            .supported_connection_types
            .iter()
            .any(|t| t == "long-polling")
        {
            return Reply::to(r, false)
                .error(
                    400,
                    "",
                    "no common connection type (this server: long-polling)",
                )
                .raw("supportedConnectionTypes", "[\"long-polling\"]")
                .raw("version", "\"1.0\"")
                .raw("advice", "{\"reconnect\":\"none\"}")
                .finish();
        }
        match self.shared.bayeux.handshake() {
            Ok(id) => Reply::to(r, true)
                .str("clientId", &id)
                .raw("version", "\"1.0\"")
                .raw("minimumVersion", "\"1.0\"")
                .raw("supportedConnectionTypes", "[\"long-polling\"]")
                .raw("advice", &self.advice("retry"))
                .finish(),
            Err(_) => Reply::to(r, false)
                .error(503, "", "too many clients")
                .raw("advice", "{\"reconnect\":\"handshake\",\"interval\":1000}")
                .finish(),
        }
    }

    fn bayeux_connect(&mut self, r: &Request, waiter: Option<Waiter>) -> ConnectOutcome {
        let Some(client) = r.client_id.as_deref() else {
            return ConnectOutcome::Reply(vec![self.unknown_client(r)]);
        };
        // `advice.timeout: 0` (the client's first connect) is answered at once.
        let hold = waiter.filter(|_| r.advice_timeout != Some(0));
        let advice = self.advice("retry");
        let reply = |dropped: u64| {
            let mut rep = Reply::to(r, true)
                .str("clientId", client)
                .raw("advice", &advice);
            if dropped > 0 {
                rep = rep.raw("ext", &format!("{{\"dropped\":{dropped}}}"));
            }
            rep.finish()
        };
        match self.shared.bayeux.connect(client, hold) {
            Err(_) => ConnectOutcome::Reply(vec![self.unknown_client(r)]),
            Ok(Connect::Now(msgs, dropped)) => {
                let mut rs: Vec<String> = msgs
                    .iter()
                    .map(|m| String::from_utf8_lossy(m).into_owned())
                    .collect();
                rs.push(reply(dropped));
                ConnectOutcome::Reply(rs)
            }
            Ok(Connect::Held(previous)) => {
                if let Some(p) = previous {
                    self.bayeux_wake(p);
                }
                ConnectOutcome::Hold(client.to_string(), reply(0))
            }
        }
    }

    fn bayeux_subscribe(&mut self, r: &Request) -> String {
        let Some(client) = r.client_id.as_deref() else {
            return self.unknown_client(r);
        };
        let subscribe = r.channel == "/meta/subscribe";
        let subs_json = r.subscription_json.as_deref().unwrap_or("null");
        if r.subscriptions.is_empty() {
            return Reply::to(r, false)
                .str("clientId", client)
                .error(400, "", "no subscription")
                .finish();
        }
        let store = &self.shared.bayeux;
        let res = if subscribe {
            store.subscribe_all(client, &r.subscriptions)
        } else {
            store.unsubscribe_all(client, &r.subscriptions)
        };
        if let Err((e, s)) = res {
            let (code, why) = match e {
                Refusal::UnknownClient => return self.unknown_client(r),
                Refusal::Forbidden => (403, "subscription not allowed"),
                Refusal::TooManySubscriptions => (403, "too many subscriptions"),
                _ => (400, "invalid subscription"),
            };
            return Reply::to(r, false)
                .str("clientId", client)
                .raw("subscription", subs_json)
                .error(code, s, why)
                .finish();
        }
        Reply::to(r, true)
            .str("clientId", client)
            .raw("subscription", subs_json)
            .finish()
    }

    fn bayeux_disconnect(&mut self, r: &Request) -> String {
        let Some(client) = r.client_id.as_deref() else {
            return self.unknown_client(r);
        };
        match self.shared.bayeux.disconnect(client) {
            Ok(waiter) => {
                if let Some(w) = waiter {
                    self.bayeux_wake(w);
                }
                Reply::to(r, true).str("clientId", client).finish()
            }
            Err(_) => self.unknown_client(r),
        }
    }

    /// A message on a broadcast or service channel.
    fn bayeux_publish(&mut self, r: &Request) -> String {
        let Some(client) = r.client_id.as_deref() else {
            return self.unknown_client(r);
        };
        if !self.shared.bayeux.exists(client) {
            return self.unknown_client(r);
        }
        if !bayeux::valid_channel(&r.channel, self.cfg.max_channel_len + 1) {
            return Reply::to(r, false)
                .error(400, &r.channel, "invalid channel")
                .finish();
        }
        let data = r.data.as_deref().unwrap_or("null");
        if bayeux::is_service(&r.channel) {
            // Not broadcast (`/service/echo` is answered in `bayeux_batch`).
            return Reply::to(r, true).finish();
        }
        let native = bayeux::native_name(&r.channel).to_string();
        match self.publish_message(&native, Bytes::copy_from_slice(data.as_bytes())) {
            Ok(_) | Err(PubError::Inbox(_)) => Reply::to(r, true).finish(),
            Err(PubError::Channels) => Reply::to(r, false)
                .error(503, &r.channel, "channel limit reached")
                .finish(),
        }
    }

    /// Asks the worker holding `w` to look at its client again.
    pub(super) fn bayeux_wake(&mut self, w: Waiter) {
        if w.worker == self.id {
            self.bayeux_wakes.push((w.idx, w.generation));
        } else if let Some(mb) = self.shared.mailboxes.get(w.worker) {
            let mail = crate::runtime::mailbox::Mail::BayeuxWake {
                idx: w.idx,
                generation: w.generation,
            };
            if mb.post(mail).is_ok() {
                self.wake[w.worker] = true;
            }
            // A full inbox: the held connect ends at its timeout and the client reconnects;
            // what is queued stays queued.
        }
    }

    /// Serves this turn's wakes of held connects.
    pub(super) fn bayeux_wakes(&mut self) {
        while let Some((idx, generation)) = self.bayeux_wakes.pop() {
            let idx = idx as usize;
            if !self.is_live(idx, generation) || self.conns[idx].phase != Phase::BayeuxPoll {
                continue;
            }
            let Some(Ext::Bayeux { client, .. }) = self.conns[idx].ext.as_deref() else {
                continue;
            };
            let client = client.to_string();
            if let Some((msgs, dropped)) = self.shared.bayeux.take(&client, self.waiter(idx)) {
                self.bayeux_answer_held(idx, &msgs, dropped);
            }
        }
    }

    /// Ends a held connect: with `msgs` (woken), or empty (timeout, interrupted, shutdown).
    pub(super) fn bayeux_answer_held(&mut self, idx: usize, msgs: &[Bytes], dropped: u64) {
        let waiter = self.waiter(idx);
        let conn = &mut self.conns[idx];
        let keep_alive = conn.has(flag::KEEP_ALIVE);
        let origin = conn.sub().origin;
        let Some(Ext::Bayeux {
            client,
            before,
            mut connect,
        }) = conn.ext.take().map(|b| *b)
        else {
            return;
        };
        if msgs.is_empty() {
            // Not woken with messages: the store must forget this connection.
            self.shared.bayeux.release(&client, waiter);
        }
        if dropped > 0 && connect.ends_with('}') {
            connect.pop();
            connect.push_str(&format!(",\"ext\":{{\"dropped\":{dropped}}}}}"));
        }
        self.back_to_http(idx);
        let replies: Vec<String> = if before.is_empty() {
            Vec::new()
        } else {
            vec![before]
        };
        self.bayeux_answer(idx, &replies, msgs, Some(connect), origin, keep_alive);
        self.keepalive_again(idx);
    }

    /// A held connect's connection is closing or gone: the store forgets it.
    pub(super) fn bayeux_release(&mut self, idx: usize) {
        let waiter = self.waiter(idx);
        if let Some(conn) = self.conns.get_mut(idx)
            && conn.phase == Phase::BayeuxPoll
            && let Some(Ext::Bayeux { client, .. }) = conn.ext.as_deref()
        {
            let client = client.to_string();
            self.shared.bayeux.release(&client, waiter);
        }
    }

    /// Writes `[replies..., msgs..., last]` as the JSON answer.
    fn bayeux_answer(
        &mut self,
        idx: usize,
        replies: &[String],
        msgs: &[Bytes],
        last: Option<String>,
        origin: u16,
        keep_alive: bool,
    ) {
        let size: usize = replies.iter().map(String::len).sum::<usize>()
            + msgs.iter().map(Bytes::len).sum::<usize>()
            + last.as_ref().map_or(0, String::len)
            + replies.len()
            + msgs.len()
            + 4;
        let mut body = Vec::with_capacity(size);
        body.push(b'[');
        let mut first = true;
        let mut put = |b: &[u8]| {
            if !first {
                body.push(b',');
            }
            first = false;
            body.extend_from_slice(b);
        };
        for r in replies {
            put(r.as_bytes());
        }
        for m in msgs {
            put(m);
        }
        if let Some(l) = &last {
            put(l.as_bytes());
        }
        body.push(b']');
        WorkerStats::add(&self.stats.messages_out, msgs.len() as u64);
        let cors = self.cors_headers(origin);
        let resp = http::response(
            200,
            "OK",
            "application/json;charset=UTF-8",
            &cors,
            &body,
            keep_alive,
        );
        self.respond(idx, resp, keep_alive);
    }
}

enum ConnectOutcome {
    /// Replies to add now (queued messages, then the connect reply).
    Reply(Vec<String>),
    /// Hold the connect: (client, its reply).
    Hold(String, String),
}
