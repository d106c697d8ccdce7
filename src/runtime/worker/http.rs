//! HTTP requests on the worker: one request at a time from the bytes read (head, then a
//! `Content-Length` or chunked body, within the head and body limits and `--head-timeout`),
//! routed by path to the Bayeux glue, the WebSocket upgrade, the `/sub` transports, publish,
//! `/stats` or the operator's probes (`/metrics`, `/healthz`, `/readyz`); the error answers.

use bytes::Bytes;

use super::Worker;
use super::conn_io::{Dead, Handled};
use crate::proto::http::{self, HttpError, Method, Parse};
use crate::runtime::conn::{Phase, flag};
use crate::stats::{self, WorkerStats};

impl Worker {
    /// Handles at most one request from `buf`. Returns the bytes it used, or `None` if the
    /// request is not complete yet (nothing used).
    pub(super) fn http_input(&mut self, idx: usize, buf: &[u8]) -> Result<Option<usize>, Dead> {
        let conn = &mut self.conns[idx];
        if !conn.has(flag::IN_REQUEST) {
            conn.set(flag::IN_REQUEST);
            let at = self.after(self.cfg.head_timeout);
            self.set_deadline(idx, at);
        }
        let conn = &mut self.conns[idx];
        if conn.has(flag::HEAD_DONE) && buf.len() < conn.http_mark as usize {
            return Ok(None);
        }
        let scanned = if conn.has(flag::HEAD_DONE) {
            0
        } else {
            conn.http_mark as usize
        };
        let head = match http::parse_head(buf, scanned, self.head_limits) {
            Parse::Partial => {
                conn.http_mark = buf.len() as u32;
                return Ok(None);
            }
            Parse::Error(e) => {
                self.http_refuse(idx, e)?;
                return Ok(Some(buf.len()));
            }
            Parse::Complete(h) => h,
        };
        if let Some(owner) = self.sio_elsewhere(&head) {
            // A Socket.IO session of another worker: the request goes there, whole.
            return Err(self.sio_hand_off(idx, owner, buf));
        }
        let conn = &mut self.conns[idx];
        if head.content_length > u64::from(self.cfg.max_body_bytes) {
            self.http_refuse(idx, HttpError::BodyTooLarge)?;
            return Ok(Some(buf.len()));
        }
        // A chunked body is decoded into a copy once it is complete; until then the head is
        // parsed again with each arrival (bounded by --max-body-bytes and --head-timeout).
        let mut decoded: Option<Vec<u8>> = None;
        let need = if head.chunked {
            match http::chunked_body(&buf[head.head_len..], self.cfg.max_body_bytes as usize) {
                Err(e) => {
                    self.http_refuse(idx, e)?;
                    return Ok(Some(buf.len()));
                }
                Ok(None) => {
                    conn.set(flag::HEAD_DONE);
                    conn.http_mark = (buf.len() + 1) as u32;
                    return Ok(None);
                }
                Ok(Some((used, body))) => {
                    decoded = Some(body);
                    head.head_len + used
                }
            }
        } else {
            head.head_len + head.content_length as usize
        };
        if buf.len() < need {
            conn.set(flag::HEAD_DONE);
            conn.http_mark = need as u32;
            return Ok(None);
        }
        conn.clear(flag::HEAD_DONE | flag::IN_REQUEST);
        conn.http_mark = 0;
        WorkerStats::add(&self.stats.http_requests, 1);
        if self.drain_deadline.is_some() {
            let path = head.path.split('?').next().unwrap_or("");
            if let Some(r) = self.probe(idx, &head, path, false) {
                // Still answering: `/healthz` 200, `/readyz` 503 "draining"; then closed.
                r?;
                return Ok(Some(need));
            }
            // Shutting down: nothing new is taken on (a publish is not accepted).
            WorkerStats::add(&self.stats.refused_draining, 1);
            self.respond_error(
                idx,
                503,
                "Service Unavailable",
                "Retry-After: 1\r\n",
                "the server is shutting down: request not served (a publish was not \
                 published)\n",
                false,
            )?;
            return Ok(Some(need));
        }
        let body = decoded.as_deref().unwrap_or(&buf[head.head_len..need]);
        self.route(idx, &head, body)?;
        let at = self.after(self.cfg.keepalive_timeout);
        let conn = &mut self.conns[idx];
        if conn.phase == Phase::Http && !conn.has(flag::ACK_WAIT) {
            conn.deadline = 0;
            self.set_deadline(idx, at);
        }
        Ok(Some(need))
    }

    pub(super) fn route(&mut self, idx: usize, head: &http::Head<'_>, body: &[u8]) -> Handled {
        let path = head.path.split('?').next().unwrap_or("");
        let bayeux = &self.cfg.bayeux_path;
        // CometD clients append the message type: /cometd/handshake, /cometd/connect, /cometd/.
        if path == bayeux
            || path
                .strip_prefix(bayeux.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        {
            self.bayeux_http(idx, head, body)
        } else if self.sio.is_path(path) {
            self.sio_http(idx, head, body)
        } else if path == "/echo" {
            match self.check_origin(idx, head)? {
                Some(_) => self.upgrade(idx, head, None),
                None => Ok(()),
            }
        } else if let Some(channel) = path.strip_prefix("/sub/") {
            self.route_sub(idx, head, body, channel)
        } else if let Some(channel) = path.strip_prefix("/pub/") {
            let Some(origin) = self.check_origin(idx, head)? else {
                return Ok(());
            };
            if head.method_raw == "OPTIONS" {
                return self.preflight(idx, head, origin);
            }
            if head.method() != Method::Post {
                return self.respond_error(
                    idx,
                    405,
                    "Method Not Allowed",
                    "Allow: POST\r\n",
                    "use POST to publish\n",
                    head.keep_alive(),
                );
            }
            let cors = self.cors_headers(origin);
            if !self.authorize_publish(idx, head, &cors)? {
                return Ok(());
            }
            self.publish(idx, channel, body, head.keep_alive(), origin)
        } else if path.starts_with("/push/") {
            self.route_push(idx, head, body)
        } else if path == "/dashboard" || path.starts_with("/dashboard/") {
            self.route_dashboard(idx, head, path)
        } else if let Some(r) = self.probe(idx, head, path, head.keep_alive()) {
            r
        } else if path == "/stats" {
            if head.method() != Method::Get {
                return self.respond_error(
                    idx,
                    405,
                    "Method Not Allowed",
                    "Allow: GET\r\n",
                    "use GET\n",
                    head.keep_alive(),
                );
            }
            let json = self.shared.stats_json();
            let resp = http::response(
                &self.date,
                200,
                "OK",
                "application/json",
                "",
                json.as_bytes(),
                head.keep_alive(),
            );
            self.respond(idx, resp, head.keep_alive())
        } else {
            self.respond_error(idx, 404, "Not Found", "", "not found\n", head.keep_alive())
        }
    }

    /// `/metrics`, `/healthz` and `/readyz` (GET or HEAD, else 405); `None` for another path.
    /// Cheap: no lock but `/metrics`' brief one on the launcher's sums, nothing that grows with
    /// the connections.
    fn probe(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        path: &str,
        keep_alive: bool,
    ) -> Option<Handled> {
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return None;
        }
        let method = head.method();
        if !matches!(method, Method::Get | Method::Head) {
            return Some(self.respond_error(
                idx,
                405,
                "Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                "use GET or HEAD\n",
                keep_alive,
            ));
        }
        let (status, reason, ctype, body) = match path {
            "/metrics" => (
                200,
                "OK",
                stats::EXPOSITION_CONTENT_TYPE,
                crate::runtime::metrics::render(&self.shared),
            ),
            "/healthz" => (200, "OK", "text/plain; charset=utf-8", "ok\n".to_string()),
            _ => match self.shared.readiness() {
                Ok(()) => (
                    200,
                    "OK",
                    "text/plain; charset=utf-8",
                    "ready\n".to_string(),
                ),
                Err(why) => {
                    WorkerStats::add(&self.stats.http_errors, 1);
                    (
                        503,
                        "Service Unavailable",
                        "text/plain; charset=utf-8",
                        format!("not ready: {why}\n"),
                    )
                }
            },
        };
        let mut resp = http::response(
            &self.date,
            status,
            reason,
            ctype,
            "",
            body.as_bytes(),
            keep_alive,
        );
        if method == Method::Head {
            // The same head (its Content-Length included), no body.
            resp.truncate(resp.len() - body.len());
        }
        Some(self.respond(idx, resp, keep_alive))
    }

    pub(super) fn bad_request(&mut self, idx: usize, body: &str, keep_alive: bool) -> Handled {
        self.respond_error(idx, 400, "Bad Request", "", body, keep_alive)
    }

    pub(super) fn respond_error(
        &mut self,
        idx: usize,
        status: u16,
        reason: &str,
        extra: &str,
        body: &str,
        keep_alive: bool,
    ) -> Handled {
        WorkerStats::add(&self.stats.http_errors, 1);
        self.note_status(status, reason);
        let resp = http::response(
            &self.date,
            status,
            reason,
            "text/plain; charset=utf-8",
            extra,
            body.as_bytes(),
            keep_alive,
        );
        self.respond(idx, resp, keep_alive)
    }

    pub(super) fn http_refuse(&mut self, idx: usize, e: HttpError) -> Handled {
        WorkerStats::add(&self.stats.http_errors, 1);
        let (status, reason) = e.status();
        self.note_status(status, reason);
        match e {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders | HttpError::UriTooLong => {
                WorkerStats::add(&self.stats.head_too_large, 1)
            }
            HttpError::BodyTooLarge => WorkerStats::add(&self.stats.body_too_large, 1),
            _ => {}
        }
        self.respond(idx, http::error_response(&self.date, e), false)
    }

    pub(super) fn respond(&mut self, idx: usize, resp: Vec<u8>, keep_alive: bool) -> Handled {
        self.send(idx, &[Bytes::from(resp)], false)?;
        if self.over_backlog(idx)? || keep_alive {
            return Ok(());
        }
        self.begin_close(idx, None)
    }
}
