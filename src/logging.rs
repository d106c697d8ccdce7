//! The log: one line per notable event on stderr, through the `log` facade, as plain text or
//! JSON lines (`--log-level`, `--log-format`), and the per-worker once-a-second summary of
//! events that can repeat per connection ([`Summary`]).
//!
//! Every line is formatted whole and written with one `write(2)`, so lines of different threads
//! (and, under `--processes`, of different processes sharing the launcher's stderr) never
//! interleave. Nothing here runs per message: the hot paths only bump a [`Summary`] counter.
//!
//! Under `--processes` every line of a child carries its process index and pid (`process`,
//! `pid`), taken from the environment the launcher sets ([`crate::launcher::CHILD_ENV`]).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{Key, Value, VisitSource};
use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::{LogFormat, LogLevel};

/// This process's index under `--processes` (None: not started by a launcher).
pub fn process_index() -> Option<u32> {
    std::env::var(crate::launcher::CHILD_ENV)
        .ok()
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Installs the logger (once per process; later calls change nothing).
pub fn init(level: LogLevel, format: LogFormat) {
    let process = process_index();
    let filter = match level {
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
    };
    let logger = Logger {
        format,
        process,
        pid: std::process::id(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(filter);
    }
}

struct Logger {
    format: LogFormat,
    /// Index of this process under `--processes` (None: not started by a launcher).
    process: Option<u32>,
    pid: u32,
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let line = match self.format {
            LogFormat::Plain => plain(r, self.process, self.pid),
            LogFormat::Json => json(r, self.process, self.pid, SystemTime::now()),
        };
        // One write(2): lines never interleave (stderr is unbuffered).
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// `TIME LEVEL [process I pid P] TARGET: MESSAGE key=value ...`
fn plain(r: &Record, process: Option<u32>, pid: u32) -> String {
    let mut s = String::with_capacity(160);
    rfc3339(&mut s, SystemTime::now());
    let _ = write!(s, " {:<5} ", r.level());
    if let Some(i) = process {
        let _ = write!(s, "[process {i} pid {pid}] ");
    }
    let _ = write!(s, "{}: {}", r.target(), r.args());
    let mut v = PlainFields(&mut s);
    let _ = r.key_values().visit(&mut v);
    s.push('\n');
    s
}

struct PlainFields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for PlainFields<'_> {
    fn visit_pair(&mut self, k: Key<'kvs>, v: Value<'kvs>) -> Result<(), log::kv::Error> {
        let text = v.to_string();
        if text.is_empty() || text.contains([' ', '"', '=']) {
            let _ = write!(self.0, " {k}={text:?}");
        } else {
            let _ = write!(self.0, " {k}={text}");
        }
        Ok(())
    }
}

/// `{"time":…,"level":…,"target":…,"message":…,"pid":…[,"process":…],"fields":{…}}`
fn json(r: &Record, process: Option<u32>, pid: u32, now: SystemTime) -> String {
    let mut s = String::with_capacity(200);
    s.push_str("{\"time\":\"");
    rfc3339(&mut s, now);
    let _ = write!(s, "\",\"level\":\"{}\",\"target\":", r.level());
    json_str(&mut s, r.target());
    s.push_str(",\"message\":");
    json_str(&mut s, &r.args().to_string());
    let _ = write!(s, ",\"pid\":{pid}");
    if let Some(i) = process {
        let _ = write!(s, ",\"process\":{i}");
    }
    s.push_str(",\"fields\":{");
    let mut v = JsonFields {
        out: &mut s,
        first: true,
    };
    let _ = r.key_values().visit(&mut v);
    s.push_str("}}\n");
    s
}

struct JsonFields<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'kvs> VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(&mut self, k: Key<'kvs>, v: Value<'kvs>) -> Result<(), log::kv::Error> {
        if !std::mem::take(&mut self.first) {
            self.out.push(',');
        }
        json_str(self.out, k.as_str());
        self.out.push(':');
        if let Some(n) = v.to_u64() {
            let _ = write!(self.out, "{n}");
        } else if let Some(n) = v.to_i64() {
            let _ = write!(self.out, "{n}");
        } else if let Some(b) = v.to_bool() {
            let _ = write!(self.out, "{b}");
        } else {
            json_str(self.out, &v.to_string());
        }
        Ok(())
    }
}

/// Appends `v` as a JSON string.
fn json_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `t` as UTC RFC 3339 with milliseconds (`2026-01-02T03:04:05.678Z`).
fn rfc3339(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Events that can repeat per connection: counted by each worker and logged at most once a
/// second per worker, one line per kind with the count and the last one's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A subscriber closed because its queue passed `--max-queued-bytes`.
    SlowConsumer,
    /// A connection refused at `--max-connections`.
    Refused,
    /// A request answered with a 4xx status.
    ClientError,
    /// A request answered with a 5xx status (a limit such as `--max-channels` reached, the
    /// broker down).
    Unavailable,
    /// accept(2) (or registering the accepted socket) failed.
    AcceptError,
    /// Authorization refused a request (a missing or bad key or token).
    AuthRefused,
}

const EVENTS: usize = 6;

impl Event {
    fn index(self) -> usize {
        self as usize
    }

    /// The `event` field.
    pub fn name(self) -> &'static str {
        match self {
            Event::SlowConsumer => "slow_consumer",
            Event::Refused => "max_connections",
            Event::ClientError => "client_error",
            Event::Unavailable => "unavailable",
            Event::AcceptError => "accept_error",
            Event::AuthRefused => "auth_refused",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Event::SlowConsumer => "slow consumer(s) closed (--max-queued-bytes)",
            Event::Refused => "connection(s) refused at --max-connections",
            Event::ClientError => "request(s) answered 4xx",
            Event::Unavailable => "request(s) answered 5xx",
            Event::AcceptError => "accept error(s)",
            Event::AuthRefused => "request(s) refused by authorization",
        }
    }

    fn level(self) -> Level {
        match self {
            Event::ClientError | Event::AuthRefused => Level::Info,
            _ => Level::Warn,
        }
    }
}

/// A worker's counts of [`Event`]s since its last summary. Kept by the worker loop (no
/// locking); [`Summary::flush`] at the end of each turn logs at most once per second.
#[derive(Debug, Default)]
pub struct Summary {
    counts: [u64; EVENTS],
    /// The last event's detail, per kind (a status, an error, a token's `sub`).
    last: [Option<String>; EVENTS],
    /// The tick (whole seconds) of the last lines; none twice in one tick.
    logged: u32,
}

impl Summary {
    /// Counts one event; `detail` describes it (made only when it will be logged).
    pub fn note(&mut self, e: Event, detail: impl FnOnce() -> String) {
        let i = e.index();
        self.counts[i] += 1;
        if log::log_enabled!(target: "edgecomet::worker", e.level()) {
            self.last[i] = Some(detail());
        }
    }

    /// How many `e` are counted and not yet logged.
    pub fn count(&self, e: Event) -> u64 {
        self.counts[e.index()]
    }

    /// Logs what was counted, one line per kind, unless it did so in this `tick` already.
    /// Returns the number of lines.
    pub fn flush(&mut self, worker: usize, tick: u32) -> usize {
        if self.logged == tick || self.counts.iter().all(|&c| c == 0) {
            return 0;
        }
        self.logged = tick;
        let mut lines = 0;
        for e in [
            Event::SlowConsumer,
            Event::Refused,
            Event::ClientError,
            Event::Unavailable,
            Event::AcceptError,
            Event::AuthRefused,
        ] {
            let i = e.index();
            let count = std::mem::take(&mut self.counts[i]);
            let last = self.last[i].take().unwrap_or_default();
            if count == 0 {
                continue;
            }
            lines += 1;
            log::log!(
                target: "edgecomet::worker",
                e.level(),
                worker, event = e.name(), count, last = last.as_str();
                "worker {worker}: {count} {} since its last such line (see /stats); the last: {last}",
                e.what()
            );
        }
        lines
    }
}

/// `url` with its password replaced by `***` (for logs and errors).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rfind('@') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let mut s = String::new();
        rfc3339(
            &mut s,
            UNIX_EPOCH + std::time::Duration::from_millis(1_709_251_199_007),
        );
        assert_eq!(s, "2024-02-29T23:59:59.007Z");
        s.clear();
        rfc3339(&mut s, UNIX_EPOCH);
        assert_eq!(s, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn json_lines_escape_and_carry_fields() {
        let args = format_args!("a \"quoted\"\nline");
        let r = Record::builder()
            .args(args)
            .level(Level::Warn)
            .target("edgecomet::x")
            .key_values(&[("count", 3u64), ("n", 4u64)])
            .build();
        let line = json(&r, Some(2), 77, UNIX_EPOCH);
        assert_eq!(
            line,
            "{\"time\":\"1970-01-01T00:00:00.000Z\",\"level\":\"WARN\",\"target\":\"edgecomet::x\",\
             \"message\":\"a \\\"quoted\\\"\\nline\",\"pid\":77,\"process\":2,\
             \"fields\":{\"count\":3,\"n\":4}}\n"
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact_url("redis://:secret@h:1/2"), "redis://:***@h:1/2");
        assert_eq!(
            redact_url("rediss://alice:s3cr@t@h:1"),
            "rediss://alice:***@h:1"
        );
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
    }

    #[test]
    fn a_summary_logs_once_per_tick() {
        let mut s = Summary::default();
        for _ in 0..1000 {
            s.note(Event::ClientError, || "400".into());
        }
        assert_eq!(s.count(Event::ClientError), 1000);
        assert_eq!(s.flush(0, 5), 1);
        s.note(Event::ClientError, || "400".into());
        assert_eq!(s.flush(0, 5), 0, "once per tick");
        assert_eq!(s.flush(0, 6), 1);
        assert_eq!(s.flush(0, 7), 0, "nothing counted");
    }
}
