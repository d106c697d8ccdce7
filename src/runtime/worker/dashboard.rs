//! `/dashboard`: a live page for whoever runs the server, served from the binary itself, and its
//! stream.
//!
//! - `GET /dashboard` (and `/dashboard/app.js`, `/dashboard/style.css`,
//!   `/dashboard/favicon.svg`): the page, its script, style and icon, embedded with
//!   `include_str!` (`worker/dashboard/`): no file is read at run time and the page loads
//!   nothing from elsewhere (no CDN; it works offline). Its charts are drawn by its own small
//!   script on canvases.
//! - `GET /dashboard/events`: Server-Sent Events, one `data:` event per second (from the worker's
//!   tick, [`Worker::dashboard_tick`]) holding `{"uptime_ms":…,"stats":<the /stats document>}`.
//!   The page computes rates from successive totals and keeps ten minutes of points itself.
//!
//! What it must never be: a burden, or a way to see more than `/stats` shows.
//! - The event is built once per worker per second, whatever the number of streams, and each
//!   stream gets one write per second. A stream whose previous event is still queued (a page that
//!   does not read) skips the second rather than queueing more: the page counts from totals, so
//!   a skipped second loses nothing but resolution.
//! - At most [`MAX_DASHBOARDS`] streams per process (503 beyond).
//! - It exposes exactly `/stats` (no CORS headers, like `/stats`: a page of another origin cannot
//!   read it); the page's own answers carry a Content-Security-Policy that allows nothing but this
//!   server.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::Worker;
use super::conn_io::Handled;
use crate::proto::http::{self, Method};
use crate::runtime::conn::{Format, Phase, SubState};

/// Dashboard streams open at once in a process (the sum of the workers' `conns_dashboard`; two
/// workers admitting in the same instant may pass it by one each). A dashboard is for the few
/// people operating the server: 16 is plenty, and bounds the per-second work at 16 writes.
pub const MAX_DASHBOARDS: u64 = 16;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");
const ICON: &str = include_str!("dashboard/favicon.svg");

/// Headers of the page's own files: nothing from another origin may load or frame it.
const PAGE_HEADERS: &str = "Content-Security-Policy: default-src 'none'; script-src 'self'; \
    style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n\
    Cache-Control: no-store\r\n";

impl Worker {
    /// `/dashboard` and every path under it.
    pub(super) fn route_dashboard(
        &mut self,
        idx: usize,
        head: &http::Head<'_>,
        path: &str,
    ) -> Handled {
        let keep_alive = head.keep_alive();
        if head.method() != Method::Get {
            return self.respond_error(
                idx,
                405,
                "Method Not Allowed",
                "Allow: GET\r\n",
                "use GET\n",
                keep_alive,
            );
        }
        let (ctype, body) = match path {
            "/dashboard" | "/dashboard/" => ("text/html; charset=utf-8", PAGE),
            "/dashboard/app.js" => ("text/javascript; charset=utf-8", SCRIPT),
            "/dashboard/style.css" => ("text/css; charset=utf-8", STYLE),
            "/dashboard/favicon.svg" => ("image/svg+xml", ICON),
            "/dashboard/events" => return self.start_dashboard(idx),
            _ => return self.respond_error(idx, 404, "Not Found", "", "not found\n", keep_alive),
        };
        let resp = http::response(
            &self.date,
            200,
            "OK",
            ctype,
            PAGE_HEADERS,
            body.as_bytes(),
            keep_alive,
        );
        self.respond(idx, resp, keep_alive)
    }

    /// `/dashboard/events`: the connection becomes a dashboard stream (or is refused with 503
    /// beyond [`MAX_DASHBOARDS`]) and gets the figures at once, then once a second.
    fn start_dashboard(&mut self, idx: usize) -> Handled {
        let open: u64 = self
            .shared
            .stats
            .iter()
            .map(|s| s.conns_dashboard.load(Ordering::Relaxed))
            .sum();
        if open >= MAX_DASHBOARDS {
            return self.respond_error(
                idx,
                503,
                "Service Unavailable",
                "Retry-After: 10\r\n",
                "too many dashboards open (at most 16 per process)\n",
                false,
            );
        }
        let first = "HTTP/1.1 200 OK\r\nServer: edgecomet\r\nContent-Type: text/event-stream\r\n\
                     Cache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n\
                     retry: 2000\n\n";
        // The format only fills the state: nothing but this module writes to the stream.
        let st = SubState::new(0, 0, Format::Sse);
        self.conns[idx].hold(Phase::Dashboard, st, None, false, &self.stats);
        // No timer: the per-second event is the stream's heartbeat.
        self.conns[idx].deadline = 0;
        self.dashboards
            .push((idx as u32, self.conns[idx].generation));
        self.send(idx, &[Bytes::from_static(first.as_bytes())], false)?;
        if self.dashboard_at == self.tick {
            // This tick's event went out already: the new page gets its own now rather than
            // waiting a second (otherwise the end of this turn sends it).
            let ev = self.dashboard_event();
            self.send(idx, &[ev], false)?;
        }
        Ok(())
    }

    /// One SSE event with the figures: `{"uptime_ms":…,"stats":{…}}`. `uptime_ms` is the
    /// process's monotonic clock, which the page divides the totals' differences by.
    fn dashboard_event(&self) -> Bytes {
        let stats = self.shared.stats_json();
        let ms = self.shared.start.elapsed().as_millis();
        Bytes::from(format!(
            "data: {{\"uptime_ms\":{ms},\"stats\":{}}}\n\n",
            stats.trim_end()
        ))
    }

    /// Once per tick, from the end of the turn: the event to every dashboard stream of this
    /// worker that has taken the previous one; entries of connections gone are dropped.
    pub(super) fn dashboard_tick(&mut self) {
        if self.dashboards.is_empty() || self.dashboard_at == self.tick {
            return;
        }
        self.dashboard_at = self.tick;
        let ev = self.dashboard_event();
        for (slot, generation) in std::mem::take(&mut self.dashboards) {
            let idx = slot as usize;
            match self.conns.get(idx) {
                Some(c) if c.generation == generation && c.phase == Phase::Dashboard => {
                    self.dashboards.push((slot, generation));
                    if c.queued() > 0 {
                        continue; // the last event is unread: skip this second
                    }
                }
                _ => continue, // gone, or closing
            }
            let r = self.send(idx, std::slice::from_ref(&ev), false);
            self.settle(idx, r);
        }
    }
}
