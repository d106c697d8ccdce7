//! Self-contained SVG charts for the run report, written by hand (no plotting crate).
//!
//! * [`line_chart`]: memory per connection against connections established during the ramp,
//!   one line per series, with round-numbered ticks, axis titles, a legend and a title;
//! * [`percentile_chart`]: the latency distribution, percentile on a log scale (50, 90, 99,
//!   99.9, ...) against latency;
//! * [`stack`]: several charts in one SVG document, one under the other.
//!
//! Points with a NaN or infinite coordinate are skipped; empty series, a single point and
//! all-equal values still give a well-formed chart.

use std::fmt::Write as _;

/// One named line of a [`line_chart`].
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// (x, y) points, drawn in order.
    pub points: &'a [(f64, f64)],
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 420.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 48.0;
const MARGIN_BOTTOM: f64 = 62.0;
/// Approximate width of one character of the 12 px sans-serif labels.
const CHAR_WIDTH: f64 = 7.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// Series with at most this many points also get a dot per point.
const MAX_MARKED_POINTS: usize = 40;

/// Line chart: memory per connection (y, bytes) against connections established (x) during the
/// ramp, several series (server PSS/conn, server RSS/conn, kernel/conn, client/conn), with axes,
/// ticks with round numbers, axis titles, legend, and a title. The y axis includes zero. Large
/// tick values are shortened with k, M, G (decimal).
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>]) -> String {
    let lines: Vec<Line> = series
        .iter()
        .enumerate()
        .map(|(i, s)| Line {
            name: s.name.to_string(),
            color: COLORS[i % COLORS.len()],
            points: finite(s.points.iter().copied()),
        })
        .collect();
    let all = || lines.iter().flat_map(|l| l.points.iter());
    let (x_lo, x_hi) = bounds(all().map(|p| p.0));
    let (y_lo, y_hi) = bounds(all().map(|p| p.1));
    let chart = Chart {
        title,
        x_label,
        y_label,
        x: linear_axis(x_lo, x_hi, 8),
        y: value_axis(y_lo, y_hi),
        legend: !lines.is_empty(),
        lines,
    };
    chart.render()
}

/// The latency distribution: percentile plot (x = percentile on a log scale "50, 90, 99, 99.9,
/// 99.99", y = latency in microseconds), from (percentile, value) pairs. The x axis runs from
/// the 0th percentile to at least 99.99 (further if the data goes further); points at the 100th
/// percentile (the maximum) are drawn one decade past the last tick, labelled "max". Points
/// outside 0..=100 are skipped.
pub fn percentile_chart(title: &str, points: &[(f64, f64)]) -> String {
    // x = decades of rarity: -log10(1 - p/100); 90 → 1, 99 → 2, 99.9 → 3.
    let mut has_max = false;
    let mut pts: Vec<(Option<f64>, f64)> = Vec::new();
    for &(p, v) in points {
        if !p.is_finite() || !v.is_finite() || !(0.0..=100.0).contains(&p) {
            continue;
        }
        if p >= 100.0 {
            has_max = true;
            pts.push((None, v));
        } else {
            pts.push((Some(-(1.0 - p / 100.0).log10()), v));
        }
    }
    let top = pts
        .iter()
        .filter_map(|p| p.0)
        .fold(4.0f64, f64::max)
        .ceil()
        .min(12.0);
    let x_max = if has_max { top + 1.0 } else { top };
    let mut ticks = vec![(0.0, "0".to_string()), (2f64.log10(), "50".to_string())];
    for d in 1..=(top as i32) {
        let decimals = (d - 2).max(0) as usize;
        ticks.push((
            f64::from(d),
            format!("{:.*}", decimals, 100.0 - 10f64.powi(2 - d)),
        ));
    }
    if has_max {
        ticks.push((x_max, "max".to_string()));
    }
    let line: Vec<(f64, f64)> = pts
        .into_iter()
        .map(|(x, v)| (x.unwrap_or(x_max), v))
        .collect();
    let (y_lo, y_hi) = bounds(line.iter().map(|p| p.1));
    let chart = Chart {
        title,
        x_label: "percentile",
        y_label: "latency (µs)",
        x: Axis {
            lo: 0.0,
            hi: x_max,
            ticks,
        },
        y: value_axis(y_lo, y_hi),
        legend: false,
        lines: vec![Line {
            name: "latency".to_string(),
            color: COLORS[0],
            points: line,
        }],
    };
    chart.render()
}

/// Several charts (each a whole SVG document as returned by the functions above) in one SVG
/// document, stacked vertically in order and left-aligned. A string without an `<svg` element
/// is skipped.
pub fn stack(charts: &[String]) -> String {
    let mut body = String::new();
    let (mut width, mut y) = (0.0f64, 0.0f64);
    for chart in charts {
        let Some(start) = chart.find("<svg") else {
            continue;
        };
        let svg = chart[start..].trim_end();
        let tag_end = svg.find('>').unwrap_or(svg.len());
        let w = attr_number(&svg[..tag_end], "width").unwrap_or(WIDTH);
        let h = attr_number(&svg[..tag_end], "height").unwrap_or(HEIGHT);
        let _ = writeln!(body, "<svg x=\"0\" y=\"{}\"{}", num(y), &svg[4..]);
        width = width.max(w);
        y += h;
    }
    let mut out = header(width, y);
    out.push_str(&body);
    out.push_str("</svg>\n");
    out
}

/// A y axis from zero (or below, for negative data) to a little above the largest value, so the
/// top point does not sit on the frame.
fn value_axis(lo: f64, hi: f64) -> Axis {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let headroom = (hi - lo) * 0.04;
    let hi = if (hi + headroom).is_finite() {
        hi + headroom
    } else {
        hi
    };
    linear_axis(lo, hi, 6)
}

/// The number in `name="123"` within an opening tag.
fn attr_number(tag: &str, name: &str) -> Option<f64> {
    let key = format!(" {name}=\"");
    let rest = &tag[tag.find(&key)? + key.len()..];
    rest[..rest.find('"')?].parse().ok()
}

struct Line {
    name: String,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

/// An axis: its data range and the ticks (position in data units, label).
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<(f64, String)>,
}

struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x: Axis,
    y: Axis,
    legend: bool,
    lines: Vec<Line>,
}

impl Chart<'_> {
    fn render(&self) -> String {
        let legend_width = if self.legend {
            let longest = self.lines.iter().map(|l| l.name.chars().count()).max();
            longest.unwrap_or(0) as f64 * CHAR_WIDTH + 44.0
        } else {
            0.0
        };
        let (left, top) = (MARGIN_LEFT, MARGIN_TOP);
        let right = WIDTH - MARGIN_RIGHT - legend_width;
        let bottom = HEIGHT - MARGIN_BOTTOM;
        let px = |x: f64| {
            clamp(
                left + (x - self.x.lo) / (self.x.hi - self.x.lo) * (right - left),
                left,
                right,
            )
        };
        let py = |y: f64| {
            clamp(
                bottom - (y - self.y.lo) / (self.y.hi - self.y.lo) * (bottom - top),
                top,
                bottom,
            )
        };

        let mut s = header(WIDTH, HEIGHT);
        s.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" font-weight=\"bold\">{}</text>",
            num((left + right) / 2.0),
            esc(self.title)
        );

        // Grid and tick labels.
        s.push_str("<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n");
        for (x, _) in &self.x.ticks {
            let _ = writeln!(
                s,
                "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{2}\"/>",
                num(px(*x)),
                num(top),
                num(bottom)
            );
        }
        for (y, _) in &self.y.ticks {
            let _ = writeln!(
                s,
                "<line x1=\"{1}\" y1=\"{0}\" x2=\"{2}\" y2=\"{0}\"/>",
                num(py(*y)),
                num(left),
                num(right)
            );
        }
        s.push_str("</g>\n<g fill=\"#333\">\n");
        for (x, label) in &self.x.ticks {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                num(px(*x)),
                num(bottom + 18.0),
                esc(label)
            );
        }
        for (y, label) in &self.y.ticks {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
                num(left - 8.0),
                num(py(*y) + 4.0),
                esc(label)
            );
        }
        s.push_str("</g>\n");
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>",
            num(left),
            num(top),
            num(right - left),
            num(bottom - top)
        );
        // Axis titles.
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">{}</text>",
            num((left + right) / 2.0),
            num(HEIGHT - 18.0),
            esc(self.x_label)
        );
        let (yx, yy) = (20.0, (top + bottom) / 2.0);
        let _ = writeln!(
            s,
            "<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\" font-size=\"13\" transform=\"rotate(-90 {0} {1})\">{2}</text>",
            num(yx),
            num(yy),
            esc(self.y_label)
        );

        // Data.
        for line in &self.lines {
            let pts: Vec<(f64, f64)> = line.points.iter().map(|&(x, y)| (px(x), py(y))).collect();
            if pts.len() >= 2 {
                let mut attr = String::new();
                for (x, y) in &pts {
                    let _ = write!(attr, "{},{} ", num(*x), num(*y));
                }
                let _ = writeln!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"{}\"/>",
                    line.color,
                    attr.trim_end()
                );
            }
            if pts.len() <= MAX_MARKED_POINTS {
                for (x, y) in &pts {
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"/>",
                        num(*x),
                        num(*y),
                        line.color
                    );
                }
            }
        }
        if self.lines.iter().all(|l| l.points.is_empty()) {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#999\" font-size=\"14\">no data</text>",
                num((left + right) / 2.0),
                num((top + bottom) / 2.0)
            );
        }

        // Legend, right of the plot.
        if self.legend {
            let lx = right + 16.0;
            for (i, line) in self.lines.iter().enumerate() {
                let ly = top + 8.0 + i as f64 * 20.0;
                let _ = writeln!(
                    s,
                    "<line x1=\"{0}\" y1=\"{2}\" x2=\"{1}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"3\"/>",
                    num(lx),
                    num(lx + 20.0),
                    num(ly),
                    line.color
                );
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\">{}</text>",
                    num(lx + 26.0),
                    num(ly + 4.0),
                    esc(&line.name)
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }
}

fn header(width: f64, height: f64) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n",
        num(width),
        num(height)
    )
}

/// The points with both coordinates finite.
fn finite(points: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    points
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect()
}

/// (min, max) of finite values; (0, 0) if there are none.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if lo <= hi { (lo, hi) } else { (0.0, 0.0) }
}

/// A linear axis covering `lo..=hi` with about `target` ticks at round numbers (1, 2 or 5 times a
/// power of ten), the ends rounded out to ticks. An empty range is widened around the value.
fn linear_axis(lo: f64, hi: f64, target: usize) -> Axis {
    let (mut lo, mut hi) = (lo, hi);
    if !(hi - lo).is_finite() {
        // Values near f64::MAX: give up on ticks rather than print infinities.
        return Axis {
            lo,
            hi: if hi > lo { hi } else { lo + 1.0 },
            ticks: Vec::new(),
        };
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()) {
        // One value (a single point, or all equal): zero becomes 0..1, others ±50%.
        if lo == 0.0 {
            hi = 1.0;
        } else {
            let pad = lo.abs() / 2.0;
            lo -= pad;
            hi += pad;
        }
    }
    let step = nice(((hi - lo) / target.max(2) as f64).max(f64::MIN_POSITIVE));
    let first = (lo / step).floor();
    let last = (hi / step).ceil();
    let (lo, hi) = (first * step, last * step);
    let count = (last - first).max(1.0) as usize;
    let short = lo.abs().max(hi.abs()) >= 1e4;
    let ticks = (0..=count)
        .map(|i| {
            let v = (first + i as f64) * step;
            (v, tick_label(v, step, short))
        })
        .collect();
    Axis { lo, hi, ticks }
}

/// The round number (1, 2, 5 × 10^k) nearest above `x`.
fn nice(x: f64) -> f64 {
    let p = 10f64.powf(x.log10().floor());
    let f = x / p;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

/// A tick label with just enough decimals for the step, trailing zeros dropped. With `short`
/// (the axis reaches 10,000), values from 1,000 up get a k, M or G suffix: 0, 200k, ..., 1.2M.
fn tick_label(v: f64, step: f64, short: bool) -> String {
    if v.abs() < step / 2.0 {
        return "0".to_string();
    }
    let (scale, unit) = [(1e9, "G"), (1e6, "M"), (1e3, "k")]
        .into_iter()
        .find(|(s, _)| short && v.abs() >= *s)
        .unwrap_or((1.0, ""));
    let (v, step) = (v / scale, step / scale);
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10() - 1e-9).ceil().clamp(0.0, 9.0) as usize
    };
    let mut t = format!("{v:.decimals$}");
    if t.contains('.') {
        t = t.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    t + unit
}

fn clamp(v: f64, lo: f64, hi: f64) -> f64 {
    if v.is_nan() { lo } else { v.clamp(lo, hi) }
}

/// A coordinate with at most one decimal, no "-0".
fn num(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == 0.0 {
        "0".to_string()
    } else if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// Escapes text for XML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small XML well-formedness check: one root element, balanced and properly nested tags,
    /// quoted attributes, only known entities, no stray `<` or `>`.
    fn check_xml(doc: &str) -> Result<(), String> {
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = doc;
        if let Some(r) = rest.strip_prefix("<?xml") {
            rest = &r[r.find("?>").ok_or("unterminated prolog")? + 2..];
        }
        while !rest.is_empty() {
            let lt = rest.find('<').unwrap_or(rest.len());
            check_text(&rest[..lt])?;
            if stack.is_empty() && !rest[..lt].trim().is_empty() {
                return Err(format!("text outside the root: {:?}", &rest[..lt]));
            }
            rest = &rest[lt..];
            if rest.is_empty() {
                break;
            }
            let gt = tag_end(rest).ok_or("unterminated tag")?;
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("close without open: {name}"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name = body.split_whitespace().next().ok_or("empty tag")?;
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':')
            {
                return Err(format!("bad tag name {name:?}"));
            }
            check_attrs(&body[name.len()..])?;
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(())
    }

    /// Index of the `>` ending the tag at the start of `s`, skipping quoted values.
    fn tag_end(s: &str) -> Option<usize> {
        let mut quoted = false;
        for (i, c) in s.char_indices().skip(1) {
            match c {
                '"' => quoted = !quoted,
                '>' if !quoted => return Some(i),
                '<' if !quoted => return None,
                _ => {}
            }
        }
        None
    }

    fn check_text(t: &str) -> Result<(), String> {
        if t.contains('>') {
            return Err(format!("stray > in {t:?}"));
        }
        let mut rest = t;
        while let Some(i) = rest.find('&') {
            rest = &rest[i + 1..];
            let semi = rest.find(';').ok_or("unterminated entity")?;
            let ent = &rest[..semi];
            if !matches!(ent, "amp" | "lt" | "gt" | "quot" | "apos") && !ent.starts_with('#') {
                return Err(format!("unknown entity &{ent};"));
            }
        }
        Ok(())
    }

    fn check_attrs(mut a: &str) -> Result<(), String> {
        loop {
            a = a.trim_start();
            if a.is_empty() {
                return Ok(());
            }
            let eq = a
                .find('=')
                .ok_or(format!("attribute without value: {a:?}"))?;
            let name = &a[..eq];
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("bad attribute name {name:?}"));
            }
            let v = a[eq + 1..].strip_prefix('"').ok_or("unquoted attribute")?;
            let close = v.find('"').ok_or("unterminated attribute")?;
            check_text(&v[..close])?;
            a = &v[close + 1..];
        }
    }

    fn sane(doc: &str) {
        check_xml(doc).unwrap_or_else(|e| panic!("{e}\n{doc}"));
        for bad in ["NaN", "inf", "-0 ", "\"-0\""] {
            assert!(!doc.contains(bad), "{bad:?} in\n{doc}");
        }
    }

    #[test]
    fn checker_catches_errors() {
        assert!(check_xml("<a><b/></a>").is_ok());
        assert!(check_xml("<a><b></a>").is_err());
        assert!(check_xml("<a></a><a></a>").is_err());
        assert!(check_xml("<a x=\"1\">&amp;</a>").is_ok());
        assert!(check_xml("<a>&nbsp;</a>").is_err());
        assert!(check_xml("<a x=1></a>").is_err());
    }

    fn ramp() -> Vec<(f64, f64)> {
        (0..=50)
            .map(|i| {
                let c = f64::from(i) * 20_000.0;
                (c, 170.0 + 3000.0 / (1.0 + c / 10_000.0))
            })
            .collect()
    }

    #[test]
    fn line_chart_has_series_axes_legend() {
        let a = ramp();
        let b: Vec<(f64, f64)> = a.iter().map(|&(x, y)| (x, y * 2.5)).collect();
        let doc = line_chart(
            "Memory per connection <ramp> & \"hold\"",
            "connections",
            "bytes per connection",
            &[
                Series {
                    name: "server PSS/conn",
                    points: &a,
                },
                Series {
                    name: "server RSS/conn",
                    points: &b,
                },
            ],
        );
        sane(&doc);
        assert!(doc.contains("server PSS/conn") && doc.contains("server RSS/conn"));
        assert!(doc.contains("&lt;ramp&gt; &amp; &quot;hold&quot;"));
        assert!(
            doc.contains(">connections</text>") && doc.contains(">bytes per connection</text>")
        );
        // Round ticks: 0 to 1M in 200k steps (the x axis), y in k units.
        for t in [">0</text>", ">200k</text>", ">1M</text>"] {
            assert!(doc.contains(t), "{t} in\n{doc}");
        }
        assert_eq!(doc.matches("<polyline").count(), 2);
    }

    #[test]
    fn line_chart_odd_inputs() {
        let nan = [(f64::NAN, 1.0), (1.0, f64::NAN), (f64::INFINITY, 2.0)];
        let one = [(5000.0, 300.0)];
        let zeros = [(0.0, 0.0), (10.0, 0.0), (20.0, 0.0)];
        let same_x = [(7.0, 1.0), (7.0, 2.0)];
        let neg = [(0.0, -5.0), (1.0, 5.0)];
        let tiny = [(0.0, 1e-9), (1.0, 3e-9)];
        let huge = [(0.0, 1e300), (1.0, -1e300), (2.0, f64::MAX)];
        let cases: [&[Series<'_>]; 9] = [
            &[],
            &[Series {
                name: "empty",
                points: &[],
            }],
            &[Series {
                name: "nan",
                points: &nan,
            }],
            &[Series {
                name: "single",
                points: &one,
            }],
            &[Series {
                name: "zeros",
                points: &zeros,
            }],
            &[Series {
                name: "samex",
                points: &same_x,
            }],
            &[Series {
                name: "neg",
                points: &neg,
            }],
            &[Series {
                name: "tiny",
                points: &tiny,
            }],
            &[Series {
                name: "huge",
                points: &huge,
            }],
        ];
        for series in cases {
            let doc = line_chart("t", "x", "y", series);
            sane(&doc);
            for s in series {
                assert!(doc.contains(s.name));
            }
        }
        let doc = line_chart(
            "t",
            "x",
            "y",
            &[Series {
                name: "empty",
                points: &[],
            }],
        );
        assert!(doc.contains("no data"));
        let doc = line_chart(
            "t",
            "x",
            "y",
            &[Series {
                name: "single",
                points: &one,
            }],
        );
        assert_eq!(doc.matches("<circle").count(), 1);
        assert!(!doc.contains("<polyline"));
    }

    #[test]
    fn percentile_chart_log_axis() {
        let pts = [
            (0.0, 40.0),
            (50.0, 95.0),
            (90.0, 180.0),
            (99.0, 420.0),
            (99.9, 1300.0),
            (99.99, 5200.0),
            (100.0, 9100.0),
            (f64::NAN, 1.0),
            (101.0, 1.0),
        ];
        let doc = percentile_chart("Delivery latency", &pts);
        sane(&doc);
        for t in [
            ">50</text>",
            ">90</text>",
            ">99</text>",
            ">99.9</text>",
            ">99.99</text>",
            ">max</text>",
        ] {
            assert!(doc.contains(t), "{t} in\n{doc}");
        }
        assert!(doc.contains("latency (µs)"));
        assert_eq!(doc.matches("<circle").count(), 7);
        // Deeper data extends the axis.
        let doc = percentile_chart("t", &[(99.999, 10.0)]);
        assert!(doc.contains(">99.999</text>") && !doc.contains(">max</text>"));
        for odd in [&[][..], &[(50.0, 0.0)][..], &[(50.0, f64::NAN)][..]] {
            sane(&percentile_chart("t", odd));
        }
    }

    #[test]
    fn stack_nests_charts() {
        let a = line_chart(
            "first",
            "x",
            "y",
            &[Series {
                name: "a",
                points: &[(0.0, 1.0), (1.0, 2.0)],
            }],
        );
        let b = percentile_chart("second", &[(50.0, 1.0), (99.0, 3.0)]);
        let doc = stack(&[a, b, "not svg".to_string()]);
        sane(&doc);
        assert_eq!(doc.matches("<?xml").count(), 1);
        assert_eq!(doc.matches("<svg").count(), 3);
        assert!(doc.contains(&format!("height=\"{}\"", num(2.0 * HEIGHT))));
        assert!(doc.contains(&format!("<svg x=\"0\" y=\"{}\"", num(HEIGHT))));
        assert!(doc.contains("first") && doc.contains("second"));
        sane(&stack(&[]));
    }

    #[test]
    fn nice_ticks() {
        let a = linear_axis(0.0, 1_000_000.0, 8);
        let labels: Vec<&str> = a.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0", "200k", "400k", "600k", "800k", "1M"]);
        let a = linear_axis(0.0, 1_300_000.0, 8);
        assert_eq!(a.ticks[6].1, "1.2M");
        let a = linear_axis(0.0, 3.7, 8);
        assert_eq!(a.ticks.last().map(|t| t.1.as_str()), Some("4"));
        assert_eq!(a.ticks[1].1, "0.5");
        let a = linear_axis(0.0, 0.0, 6);
        assert!(a.lo == 0.0 && a.hi >= 1.0);
        let a = linear_axis(5.0, 5.0, 6);
        assert!(a.lo <= 5.0 && a.hi >= 5.0 && a.lo >= 0.0);
        assert_eq!(linear_axis(0.0, 2.5e9, 6).ticks[1].1, "500M");
        assert_eq!(linear_axis(0.0, 6000.0, 6).ticks[1].1, "1000");
        assert_eq!(linear_axis(-5.0, 5.0, 6).ticks[0].1, "-6");
        assert_eq!(nice(0.3), 0.5);
        assert_eq!(nice(7.0), 10.0);
    }
}
