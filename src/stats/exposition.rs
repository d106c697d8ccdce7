//! The Prometheus text exposition format (version 0.0.4) for `/metrics`: metric families with
//! `# HELP` and `# TYPE`, samples with escaped labels, histograms, exact decimal scaling. Pure
//! text building; the figures come from [`super`].

use std::fmt::Write as _;

use super::{HistogramSnapshot, Kind};

/// The Prometheus text exposition format, version 0.0.4: `# HELP` and `# TYPE` once per metric
/// family, then its samples (`name{label="value",…} value`). Families are written whole, one
/// after the other, as the format requires.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// The media type of [`Exposition`]'s output.
pub const EXPOSITION_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Exposition {
    pub fn new() -> Exposition {
        Exposition {
            out: String::with_capacity(32 * 1024),
        }
    }

    /// Starts a family: `kind` is `counter`, `gauge` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// One histogram (of the current family): `_bucket` per bound and `+Inf`, `_sum`, `_count`.
    /// Values are divided by `scale` on the way out (microseconds to seconds: 1,000,000).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
        scale: u64,
    ) {
        for (i, c) in h.cumulative.iter().enumerate() {
            let le = match h.bounds.get(i) {
                Some(&b) => scaled(b, scale),
                None => "+Inf".to_string(),
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {c}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", scaled(h.sum, scale));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", h.cumulative.last().copied().unwrap_or(0));
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        for (i, (k, v)) in labels
            .iter()
            .chain(le.map(|l| ("le", l)).iter())
            .enumerate()
        {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// `# HELP` text: backslash and line feed escaped (`\\`, `\n`).
pub fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and line feed escaped.
pub fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `v / scale` in decimal, exactly (no float rounding): 2,500,000 / 1,000,000 is `2.5`.
pub fn scaled(v: u64, scale: u64) -> String {
    if scale <= 1 {
        return v.to_string();
    }
    let (int, frac) = (v / scale, v % scale);
    if frac == 0 {
        return int.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

/// The metric name of a figure: `edgecomet_NAME`, with `_total` for a counter.
pub fn metric_name(prefix: &str, name: &str, kind: Kind) -> String {
    match kind {
        Kind::Counter => format!("{prefix}{name}_total"),
        Kind::Gauge => format!("{prefix}{name}"),
    }
}
