//! What flood says while it runs: one [`Row`] a second (`--jsonl`, and the time series of
//! `--plot`), built by a [`Tick`] from the workers' running totals, and the progress line fitted
//! to the terminal ([`fit`], [`terminal_width`]). Pure but for [`terminal_width`]'s ioctl:
//! nothing here reads `/proc` or a socket; the coordinator hands in what it read.

use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::plan::{Errors, WsWire};

/// The workers' running totals at one moment, summed.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Connections open now.
    pub open: u64,
    /// Connections that became open since the start.
    pub opened: u64,
    /// Open connections the client closed (`--stages` going down).
    pub closed: u64,
    pub deliveries: u64,
    pub errors: Errors,
    /// WebSocket frames and bytes received; `None` when the subscribers use no WebSocket.
    pub ws: Option<WsWire>,
}

/// Latency percentiles of the deliveries of one second, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub count: u64,
}

/// One second of the run: a line of `--jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Seconds since the workers started.
    pub t: f64,
    /// The coordinator's phase: `ramp`, `broadcasts`, `hold`, `drain`, `stages`.
    pub phase: &'static str,
    pub open: u64,
    pub connects_per_sec: f64,
    pub closes_per_sec: f64,
    pub deliveries_per_sec: f64,
    /// Of the deliveries of this second; `None` when there were none.
    pub latency_us: Option<Latency>,
    /// Errors counted in this second, only the kinds that occurred (names as in the report's
    /// `errors`); `{}` when none.
    pub errors: serde_json::Map<String, serde_json::Value>,
    /// Errors since the start (as [`Errors::total`]: closes by the server not included).
    pub errors_total: u64,
    /// The server's PSS (summed over its processes); `None` when unreadable.
    pub server_pss_bytes: Option<u64>,
    /// Kernel memory (slab + TCP buffer pages) grown since the start; `None` when unreadable.
    pub kernel_bytes: Option<u64>,
    /// WebSocket subscribers only (absent otherwise): the data frames' bytes received in this
    /// second as they came (headers and payloads, compressed or not), and their messages'
    /// payload bytes once inflated. Their quotient is the second's compression ratio.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_wire_bytes_per_sec: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_payload_bytes_per_sec: Option<f64>,
}

impl Row {
    /// The row as one line of JSON, with its newline.
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a Row always serializes") + "\n"
    }
}

/// The state between two rows: the totals at the last row and the latencies since.
pub struct Tick {
    at: Instant,
    last: Totals,
    hist: Histogram<u64>,
}

impl Tick {
    pub fn new(now: Instant) -> Tick {
        Tick {
            at: now,
            last: Totals::default(),
            // Latencies up to 100 s at 3 significant digits, as the workers' histograms.
            hist: Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds"),
        }
    }

    /// Latencies a worker recorded (its progress line's `latency_tick`).
    pub fn record(&mut self, latencies: &[(u64, u64)]) {
        for &(v, n) in latencies {
            let _ = self.hist.record_n(v.max(1), n);
        }
    }

    /// When the last row was made.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// The row for the time since the last one (rates per second over it), then starts the
    /// next: the latencies are cleared and `now` becomes the last row's time.
    pub fn row(
        &mut self,
        now: Instant,
        t: f64,
        phase: &'static str,
        totals: Totals,
        server_pss_bytes: Option<u64>,
        kernel_bytes: Option<u64>,
    ) -> Row {
        let secs = now.duration_since(self.at).as_secs_f64().max(1e-3);
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        let latency_us = (!self.hist.is_empty()).then(|| Latency {
            p50: self.hist.value_at_quantile(0.50),
            p99: self.hist.value_at_quantile(0.99),
            count: self.hist.len(),
        });
        let errors = totals
            .errors
            .since(&self.last.errors)
            .occurred()
            .into_iter()
            .map(|(k, n)| (k.to_string(), n.into()))
            .collect();
        let row = Row {
            t,
            phase,
            open: totals.open,
            connects_per_sec: rate(totals.opened, self.last.opened),
            closes_per_sec: rate(totals.closed, self.last.closed),
            deliveries_per_sec: rate(totals.deliveries, self.last.deliveries),
            latency_us,
            errors,
            errors_total: totals.errors.total(),
            server_pss_bytes,
            kernel_bytes,
            ws_wire_bytes_per_sec: totals
                .ws
                .map(|w| rate(w.wire_bytes, self.last.ws.map_or(0, |l| l.wire_bytes))),
            ws_payload_bytes_per_sec: totals
                .ws
                .map(|w| rate(w.payload_bytes, self.last.ws.map_or(0, |l| l.payload_bytes))),
        };
        self.hist.reset();
        self.last = totals;
        self.at = now;
        row
    }
}

/// The progress line's error part: `errors 0`, or `errors 3 (refused 2, timeout 1)` with only
/// the kinds that occurred (closes by the server are listed but not in the total, as in the
/// report).
pub fn errors_text(e: &Errors) -> String {
    let kinds = e.occurred();
    if kinds.is_empty() {
        return "errors 0".into();
    }
    let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!("errors {} ({})", e.total(), list.join(", "))
}

/// `line` cut to `width` columns (characters; flood's lines are single-width), with `…` as the
/// last one when cut. `None`: not a terminal, nothing cut (a log keeps every figure).
pub fn fit(line: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return line.to_string();
    };
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut out: String = line.chars().take(width.saturating_sub(1)).collect();
    if width > 0 {
        out.push('…');
    }
    out
}

/// The width of the terminal on stdout (the progress line's), or of stderr when stdout is not
/// one; `None` when neither is a terminal. 80 for a terminal that reports 0 columns (a serial
/// console). The last column is left free, so that the cursor does not wrap.
pub fn terminal_width() -> Option<usize> {
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: isatty takes any fd number and only inspects it.
        if unsafe { libc::isatty(fd) } != 1 {
            continue;
        }
        // SAFETY: winsize is plain old data; TIOCGWINSZ fills it or fails.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: the pointer is to a live winsize, the size TIOCGWINSZ writes.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        let cols = if r == 0 && ws.ws_col > 0 {
            usize::from(ws.ws_col)
        } else {
            80
        };
        return Some(cols.saturating_sub(1).max(1));
    }
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rows_give_the_rates_and_latencies_of_their_second() {
        let t0 = Instant::now();
        let mut tick = Tick::new(t0);
        tick.record(&[(100, 98), (5_000, 2)]);
        let totals = Totals {
            open: 900,
            opened: 1000,
            closed: 0,
            deliveries: 100,
            errors: Errors {
                refused: 3,
                ..Errors::default()
            },
            ws: None,
        };
        let r = tick.row(
            t0 + Duration::from_secs(2),
            2.0,
            "ramp",
            totals,
            Some(123),
            None,
        );
        assert_eq!(r.open, 900);
        assert_eq!(r.connects_per_sec, 500.0);
        assert_eq!(r.deliveries_per_sec, 50.0);
        let l = r.latency_us.unwrap();
        assert_eq!((l.p50, l.count), (100, 100));
        assert!((4_990..=5_010).contains(&l.p99), "{l:?}");
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors["refused"], 3);
        assert_eq!(r.errors_total, 3);
        // The next second: deltas only, the latencies cleared.
        let totals = Totals {
            open: 400,
            opened: 1100,
            closed: 600,
            deliveries: 100,
            errors: Errors {
                refused: 3,
                timeout: 1,
                ..Errors::default()
            },
            ws: None,
        };
        let r = tick.row(
            t0 + Duration::from_secs(3),
            3.0,
            "stages",
            totals,
            None,
            Some(7),
        );
        assert_eq!(r.connects_per_sec, 100.0);
        assert_eq!(r.closes_per_sec, 600.0);
        assert_eq!(r.deliveries_per_sec, 0.0);
        assert_eq!(r.latency_us, None);
        assert_eq!(r.errors.keys().collect::<Vec<_>>(), ["timeout"]);
        assert_eq!(r.errors_total, 4);
        let v: serde_json::Value = serde_json::from_str(&r.line()).unwrap();
        assert!(r.line().ends_with("}\n") && !r.line().trim_end().contains('\n'));
        assert_eq!(v["phase"], "stages");
        assert_eq!(v["latency_us"], serde_json::Value::Null);
        assert_eq!(v["server_pss_bytes"], serde_json::Value::Null);
        assert_eq!(v["kernel_bytes"], 7);
        assert_eq!(v["errors"]["timeout"], 1);
        assert!(
            v.get("ws_wire_bytes_per_sec").is_none(),
            "no WebSocket, no field"
        );
    }

    #[test]
    fn websocket_rows_give_the_bytes_of_their_second() {
        let t0 = Instant::now();
        let mut tick = Tick::new(t0);
        let ws = |wire, payload| {
            Some(WsWire {
                wire_bytes: wire,
                payload_bytes: payload,
                ..WsWire::default()
            })
        };
        let totals = |ws| Totals {
            ws,
            ..Totals::default()
        };
        let r = tick.row(
            t0 + Duration::from_secs(2),
            2.0,
            "hold",
            totals(ws(1_000, 8_000)),
            None,
            None,
        );
        assert_eq!(r.ws_wire_bytes_per_sec, Some(500.0));
        assert_eq!(r.ws_payload_bytes_per_sec, Some(4_000.0));
        let r = tick.row(
            t0 + Duration::from_secs(3),
            3.0,
            "hold",
            totals(ws(1_100, 9_000)),
            None,
            None,
        );
        assert_eq!(r.ws_wire_bytes_per_sec, Some(100.0));
        assert_eq!(r.ws_payload_bytes_per_sec, Some(1_000.0));
        let v: serde_json::Value = serde_json::from_str(&r.line()).unwrap();
        assert_eq!(v["ws_payload_bytes_per_sec"], 1_000.0);
    }

    #[test]
    fn the_error_text_names_only_kinds_that_occurred() {
        assert_eq!(errors_text(&Errors::default()), "errors 0");
        let e = Errors {
            refused: 2,
            timeout: 1,
            closed_by_server: 4,
            ..Errors::default()
        };
        assert_eq!(
            errors_text(&e),
            "errors 3 (refused 2, timeout 1, closed_by_server 4)"
        );
    }

    #[test]
    fn lines_fit_the_width() {
        let line = "[    1.0s] ramp: 10/100 open, errors 0, server PSS 1.0 MiB";
        assert_eq!(fit(line, None), line);
        assert_eq!(fit(line, Some(200)), line);
        let cut = fit(line, Some(20));
        assert_eq!(cut.chars().count(), 20);
        assert!(cut.ends_with('…') && cut.starts_with("[    1.0s] ramp: 10"));
        assert_eq!(fit("é".repeat(30).as_str(), Some(10)).chars().count(), 10);
        assert_eq!(fit(line, Some(0)), "");
    }
}
