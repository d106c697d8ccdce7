//! The run over time as SVG charts (`--plot`), drawn with `plotters` from the per-second
//! [`Row`]s: open connections; connects, closes and deliveries per second; the latency p50/p99
//! of each second; memory in total (server PSS grown, kernel grown) and per open connection on
//! a log axis, where the server's ~180 B and the kernel's ~10 KB are both readable. The run's
//! parameters are written above the charts.
//!
//! Why plotters: it is the maintained Rust plotting crate (axes, ticks, legends, log axes done
//! once), and its SVG backend needs no font files: text is written as `<text>` and sized by
//! plotters' own estimate, so nothing here depends on fontconfig or freetype (a bitmap backend
//! would need a font to rasterize, bundled or from the system). Pure: rows in, a string out.

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::live::Row;

const WIDTH: u32 = 960;
const PANEL: u32 = 300;
const HEADER: u32 = 70;
const FONT: &str = "sans-serif";

/// The charts as one SVG document: `params` (a line or two of text) on top, then one panel per
/// figure. `server_before` is the server's PSS before the first connection (the memory
/// charts show growth from it; `None`: the first row's).
pub fn svg(params: &[String], rows: &[Row], server_before: Option<u64>) -> String {
    let mut out = String::new();
    let height = HEADER + 5 * PANEL;
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        // Drawing into a String cannot fail for I/O; a plotters error (a degenerate range)
        // leaves that panel empty rather than losing the report.
        let _ = draw(&root, params, rows, server_before);
        let _ = root.present();
    }
    out
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Res = Result<(), Box<dyn std::error::Error>>;

fn draw(root: &Area<'_>, params: &[String], rows: &[Row], server_before: Option<u64>) -> Res {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    header.draw(&Text::new(
        "flood: the run over time",
        (10, 8),
        (FONT, 18).into_font(),
    ))?;
    for (i, p) in params.iter().enumerate() {
        header.draw(&Text::new(
            p.as_str(),
            (10, 32 + 16 * i as i32),
            (FONT, 12).into_font(),
        ))?;
    }
    let panels = body.split_evenly((5, 1));
    let t_max = rows.last().map_or(1.0, |r| r.t).max(1.0);
    let t = |f: &dyn Fn(&Row) -> Option<f64>| -> Vec<(f64, f64)> {
        rows.iter()
            .filter_map(|r| Some((r.t, f(r)?)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    };
    let open = t(&|r| Some(r.open as f64));
    linear(
        &panels[0],
        "Open connections",
        "connections",
        t_max,
        &[("open", &open)],
    )?;
    let connects = t(&|r| Some(r.connects_per_sec));
    let closes = t(&|r| Some(r.closes_per_sec));
    let deliveries = t(&|r| Some(r.deliveries_per_sec));
    linear(
        &panels[1],
        "Rates",
        "per second",
        t_max,
        &[
            ("connects/s", &connects),
            ("closes/s", &closes),
            ("deliveries/s", &deliveries),
        ],
    )?;
    let p50 = t(&|r| Some(r.latency_us?.p50 as f64 / 1000.0));
    let p99 = t(&|r| Some(r.latency_us?.p99 as f64 / 1000.0));
    linear(
        &panels[2],
        "Delivery latency of each second",
        "ms",
        t_max,
        &[("p50", &p50), ("p99", &p99)],
    )?;
    let base = server_before.or_else(|| rows.iter().find_map(|r| r.server_pss_bytes));
    let server_grown = |r: &Row| Some(r.server_pss_bytes?.saturating_sub(base?) as f64);
    let server_mib = t(&|r| Some(server_grown(r)? / 1048576.0));
    let kernel_mib = t(&|r| Some(r.kernel_bytes? as f64 / 1048576.0));
    linear(
        &panels[3],
        "Memory grown since the start",
        "MiB",
        t_max,
        &[("server PSS", &server_mib), ("kernel", &kernel_mib)],
    )?;
    let per = |v: Option<f64>, r: &Row| Some(v? / r.open as f64).filter(|_| r.open > 0);
    let server_per = t(&|r| per(server_grown(r), r));
    let kernel_per = t(&|r| per(r.kernel_bytes.map(|k| k as f64), r));
    log(
        &panels[4],
        "Memory per open connection (log axis)",
        "bytes per connection",
        t_max,
        &[("server PSS", &server_per), ("kernel", &kernel_per)],
    )
}

/// The log axis of `series`: from half the smallest positive value to twice the largest (at
/// least a decade); 1 to 100,000 when there is none.
fn log_range(series: &[(&str, &[(f64, f64)])]) -> (f64, f64) {
    let positive = || {
        series
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
            .filter(|&v| v > 0.0 && v.is_finite())
    };
    let lo = positive().fold(f64::INFINITY, f64::min);
    let hi = positive().fold(0.0f64, f64::max);
    if lo.is_finite() && hi > 0.0 {
        (lo / 2.0, (hi * 2.0).max(lo * 10.0))
    } else {
        (1.0, 100_000.0)
    }
}

/// A tick label: `0.25`, `2.5`, `40`, `12k`, `1.5M` (decimal prefixes).
fn short(v: f64) -> String {
    let a = v.abs();
    let (v, unit) = if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let digits = if v.abs() >= 100.0 || v.fract() == 0.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    // 2.50 -> 2.5
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    s + unit
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
];

/// A panel with a linear y axis from 0.
fn linear(
    area: &Area<'_>,
    title: &str,
    y: &str,
    t_max: f64,
    series: &[(&str, &[(f64, f64)])],
) -> Res {
    let y_max = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.05 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 15))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 11))
        .draw()?;
    lines(&mut chart, series)
}

/// A panel with a log y axis spanning the data (at least a decade).
fn log(area: &Area<'_>, title: &str, y: &str, t_max: f64, series: &[(&str, &[(f64, f64)])]) -> Res {
    let (lo, hi) = log_range(series);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 15))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..t_max, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y)
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 11))
        .draw()?;
    let positive: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(n, p)| (*n, p.iter().copied().filter(|&(_, v)| v > 0.0).collect()))
        .collect();
    let refs: Vec<(&str, &[(f64, f64)])> = positive.iter().map(|(n, p)| (*n, &p[..])).collect();
    lines(&mut chart, &refs)
}

fn lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: &[(&str, &[(f64, f64)])],
) -> Res
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .label_font((FONT, 11))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Latency;

    fn row(t: f64, open: u64, pss: u64, kernel: u64) -> Row {
        Row {
            t,
            phase: "ramp",
            open,
            connects_per_sec: 1000.0,
            closes_per_sec: 0.0,
            deliveries_per_sec: 0.0,
            latency_us: Some(Latency {
                p50: 800,
                p99: 4_000,
                count: 10,
            }),
            errors: Default::default(),
            errors_total: 0,
            server_pss_bytes: Some(pss),
            kernel_bytes: Some(kernel),
            ws_wire_bytes_per_sec: None,
            ws_payload_bytes_per_sec: None,
        }
    }

    #[test]
    fn the_charts_have_the_parameters_every_panel_and_both_memory_lines() {
        // 180 B of server and 10 KB of kernel per connection.
        let rows: Vec<Row> = (1..=10)
            .map(|s| row(s as f64, s * 1000, 8_000_000 + s * 180_000, s * 10_000_000))
            .collect();
        let params = vec!["--url ws://127.0.0.1:1/sub/x --stages 10000:10s".to_string()];
        let svg = svg(&params, &rows, Some(8_000_000));
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.contains("--stages 10000:10s"));
        for title in [
            "Open connections",
            "Rates",
            "Delivery latency of each second",
            "Memory grown since the start",
            "Memory per open connection (log axis)",
        ] {
            assert!(svg.contains(title), "no {title}");
        }
        for legend in [
            "connects/s",
            "deliveries/s",
            "p50",
            "p99",
            "server PSS",
            "kernel",
        ] {
            assert!(svg.contains(legend), "no {legend}");
        }
        assert!(svg.matches("<polyline").count() >= 9, "one line per series");
        // Well-formed enough to stack under the report's other charts.
        assert!(svg.trim_end().ends_with("</svg>"));
        let stacked = crate::plot::stack(&[svg.clone(), svg]);
        assert_eq!(stacked.matches("<svg").count(), 3);
    }

    #[test]
    fn the_log_axis_holds_the_server_and_the_kernel_figures() {
        let server = [(1.0, 180.0), (2.0, 170.0)];
        let kernel = [(1.0, 10_000.0), (2.0, 0.0)];
        let (lo, hi) = log_range(&[("server", &server), ("kernel", &kernel)]);
        assert_eq!((lo, hi), (85.0, 20_000.0));
        let (lo, hi) = log_range(&[("flat", &[(1.0, 100.0)])]);
        assert_eq!((lo, hi), (50.0, 1_000.0));
        assert_eq!(log_range(&[("none", &[(1.0, 0.0)])]), (1.0, 100_000.0));
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(4000.0), "4000");
        assert_eq!(short(12_000.0), "12k");
        assert_eq!(short(100_000.0), "100k");
        assert_eq!(short(1_500_000.0), "1.5M");
        assert_eq!(short(17.26), "17.3");
    }

    #[test]
    fn no_rows_still_give_a_chart() {
        let svg = svg(&[], &[], None);
        assert!(svg.contains("Open connections"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
