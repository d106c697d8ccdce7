//! The run's report: totals from the workers' finals, memory per connection, latency
//! percentiles, loss accounting; as a human summary, JSON and an SVG.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::cli::Args;
use crate::live::Row;
use crate::memory::{KernelMem, ProcMem};
use crate::plan::{Errors, Final, Transport};
use crate::publish::{LATE_US, Published};
use crate::tls::TlsPlan;
use crate::{plot, timeline, wire};

/// One memory sample during the ramp.
#[derive(Debug, Clone)]
pub struct Sample {
    pub secs: f64,
    pub established: u64,
    pub server: Option<ProcMem>,
    pub kernel: Option<KernelMem>,
}

/// Everything the report is built from.
pub struct Inputs<'a> {
    pub args: &'a Args,
    pub procs: u32,
    pub nofile: u64,
    pub ramp_secs: f64,
    /// Seconds the publish load ran (the hold).
    pub publish_secs: f64,
    pub rate_limited: bool,
    pub finals: &'a [Final],
    pub published: &'a Published,
    /// Of `published`, the broadcasts (`--broadcasts`, before the hold).
    pub broadcasts_published: u64,
    /// When the publish load started (CLOCK_MONOTONIC ns).
    pub load_start_ns: u64,
    pub server_pids: &'a [u32],
    pub server_before: Option<ProcMem>,
    pub server_open: Option<ProcMem>,
    pub kernel_before: Option<KernelMem>,
    pub kernel_open: Option<KernelMem>,
    pub samples: &'a [Sample],
    /// Memory while holding: once a second, the last at the end of the publishing.
    pub hold: &'a [Sample],
    pub server_local: bool,
    /// `wss://`, `https://`: how the server was verified and whether sessions were resumed.
    pub tls: Option<&'a TlsPlan>,
    /// The signal that ended the run early (`SIGINT`, `SIGTERM`), if one did.
    pub interrupted: Option<&'static str>,
    /// `--stages`: how the plan went.
    pub stages: Option<StagesOutcome>,
}

/// How a `--stages` plan went.
#[derive(Debug, Clone)]
pub struct StagesOutcome {
    /// The plan, as given (`10000:30s,0:10s`).
    pub spec: String,
    /// The largest target, and the most connections open at once.
    pub peak_target: u64,
    pub peak_open: u64,
    /// Connections open when the memory figures were read (the sample with the most open): the
    /// per-connection figures divide by this.
    pub memory_open: u64,
    pub open_at_end: u64,
    /// Open connections flood closed to go down to a lower target.
    pub closed_by_client: u64,
}

pub struct Report {
    json: serde_json::Value,
    summary: String,
    svg: String,
    ok: bool,
}

fn per_conn(grown: Option<u64>, n: u64) -> Option<f64> {
    grown.filter(|_| n > 0).map(|g| g as f64 / n as f64)
}

/// The broadcasts, each merged over the workers: deliveries, and the time from the publish to
/// its last delivery (the latest latency any subscriber saw); and their median.
fn broadcasts(finals: &[Final]) -> serde_json::Value {
    let n = finals.iter().map(|f| f.broadcasts.len()).max().unwrap_or(0);
    let mut each = Vec::with_capacity(n);
    let mut secs = Vec::with_capacity(n);
    for b in 0..n {
        let (mut count, mut max_us) = (0u64, 0u64);
        for f in finals {
            if let Some(&(c, m)) = f.broadcasts.get(b) {
                count += c;
                max_us = max_us.max(m);
            }
        }
        let s = max_us as f64 / 1e6;
        if count > 0 {
            secs.push(s);
        }
        each.push(
            json!({ "seq": b, "deliveries": count, "secs_to_all": (count > 0).then_some(s) }),
        );
    }
    secs.sort_by(f64::total_cmp);
    let median = (!secs.is_empty()).then(|| {
        let m = secs.len() / 2;
        if secs.len() % 2 == 1 {
            secs[m]
        } else {
            (secs[m - 1] + secs[m]) / 2.0
        }
    });
    json!({ "each": each, "secs_to_all_median": median })
}

/// The publish load after the broadcasts: its deliveries over the time from its start to the
/// last of them (so a backlog delivered after the publishing stopped is counted in the time).
fn load(i: &Inputs<'_>) -> serde_json::Value {
    let deliveries: u64 = i.finals.iter().map(|f| f.load_deliveries).sum();
    let last = i.finals.iter().map(|f| f.load_last_ns).max().unwrap_or(0);
    let secs = (last > i.load_start_ns).then(|| (last - i.load_start_ns) as f64 / 1e9);
    json!({
        "published": i.published.total().saturating_sub(i.broadcasts_published),
        "deliveries": deliveries,
        "secs_to_last_delivery": secs,
        "deliveries_per_sec": secs.map(|s| deliveries as f64 / s),
    })
}

/// How the publish load kept its schedule (null without one): sends, late sends (more than
/// [`LATE_US`] behind their due time), those that waited for a free pipeline slot, and the lag
/// of the sends behind their due times. `kept` when none was late. Latency is measured from the
/// due time, so a lag is also in it.
fn schedule(i: &Inputs<'_>) -> serde_json::Value {
    let s = &i.published.schedule;
    if s.sent == 0 {
        return serde_json::Value::Null;
    }
    json!({
        "sent": s.sent,
        "late": s.late,
        "late_after_us": LATE_US,
        "waited_for_pipeline": s.waited_for_pipeline,
        "lag_us": {
            "p50": s.lag_quantile_us(0.50), "p99": s.lag_quantile_us(0.99),
            "max": s.max_lag_us(),
        },
        "kept": s.late == 0,
        "latency_from": "scheduled send time",
    })
}

/// Memory while holding, per connection open after the ramp: at the end of the publishing and
/// the peak, for the kernel (slab + TCP buffer pages), its TCP buffer pages alone, and the server
/// (PSS). Grown from before the first connection, like the idle figures.
fn loaded(i: &Inputs<'_>, established: u64) -> serde_json::Value {
    let kernel = |s: &Sample| Some(s.kernel.as_ref()?.growth_since(i.kernel_before.as_ref()?));
    let buffers = |s: &Sample| {
        Some(
            s.kernel
                .as_ref()?
                .tcp_mem
                .saturating_sub(i.kernel_before.as_ref()?.tcp_mem),
        )
    };
    let server = |s: &Sample| Some(s.server?.pss.saturating_sub(i.server_before?.pss));
    let at_end =
        |f: &dyn Fn(&Sample) -> Option<u64>| per_conn(i.hold.last().and_then(f), established);
    let peak = |f: &dyn Fn(&Sample) -> Option<u64>| {
        per_conn(i.hold.iter().filter_map(f).max(), established)
    };
    json!({
        "samples": i.hold.len(),
        "kernel_bytes_per_conn": at_end(&kernel),
        "kernel_peak_bytes_per_conn": peak(&kernel),
        "tcp_buffer_bytes_per_conn": at_end(&buffers),
        "tcp_buffer_peak_bytes_per_conn": peak(&buffers),
        "server_pss_bytes_per_conn": at_end(&server),
        "server_pss_peak_bytes_per_conn": peak(&server),
    })
}

/// TLS (null in plaintext): the handshakes completed (over the run; during the ramp, and
/// their rate over the ramp), how many resumed a session, the failures by kind and the first
/// failure's text.
fn tls(i: &Inputs<'_>, errors: &Errors) -> serde_json::Value {
    let Some(p) = i.tls else {
        return serde_json::Value::Null;
    };
    let sum = |f: fn(&Final) -> u64| i.finals.iter().map(f).sum::<u64>();
    let handshakes = sum(|f| f.progress.tls_handshakes);
    let resumed = sum(|f| f.progress.tls_resumed);
    let ramp = sum(|f| f.progress.tls_ramp_handshakes);
    json!({
        "verify": if p.insecure { "none" } else { "ca" },
        "ca": p.ca,
        "resume": p.resume,
        "handshakes": handshakes,
        "resumed": resumed,
        "full_handshakes": handshakes - resumed.min(handshakes),
        "ramp_handshakes": ramp,
        "handshakes_per_sec_ramp": if i.ramp_secs > 0.0 { ramp as f64 / i.ramp_secs } else { 0.0 },
        "failures": {
            "cert": errors.tls_cert,
            "handshake": errors.tls_handshake,
        },
        "first_error": i.finals.iter().find_map(|f| f.tls_first_error.clone()),
    })
}

impl Report {
    pub fn build(i: Inputs<'_>, rows: &[Row]) -> Report {
        let a = i.args;
        let mut errors = Errors::default();
        let mut established = 0;
        let mut deliveries = 0;
        let (mut duplicated, mut reordered, mut foreign, mut gaps) = (0, 0, 0, 0);
        let (mut slow_open, mut slow_closed, mut slow_deliveries) = (0u64, 0u64, 0u64);
        let (mut churned, mut churn_secs) = (0u64, 0f64);
        let mut client_grown = 0u64;
        let mut client_open = 0u64;
        let channels = a.channels.max(1) as usize;
        let mut conns_per_chan = vec![0u64; channels];
        let mut unique_per_chan = vec![0u64; channels];
        let mut hist: Histogram<u64> =
            Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds");
        for f in i.finals {
            errors.add(&f.progress.errors);
            established += f.progress.established;
            deliveries += f.progress.deliveries;
            duplicated += f.duplicated;
            reordered += f.reordered;
            foreign += f.foreign;
            gaps += f.gaps;
            slow_open += f.slow_open;
            slow_closed += f.slow_closed;
            slow_deliveries += f.slow_deliveries;
            churned += f.progress.churned;
            churn_secs = churn_secs.max(f.progress.churn_secs);
            client_grown += f.pss_open.saturating_sub(f.pss_before);
            client_open += f.pss_open;
            for &(c, n, u) in &f.per_channel {
                if let Some(slot) = conns_per_chan.get_mut(c as usize) {
                    *slot += n;
                    unique_per_chan[c as usize] += u;
                }
            }
            for &(v, n) in &f.latency {
                let _ = hist.record_n(v.max(1), n);
            }
        }
        // Slow readers the server let go were open when memory was measured: they count as
        // established (not as failures).
        established += slow_closed;
        // --stages: the connections open when memory was read (the finals say how many were
        // open at the end, after the last stage).
        if let Some(st) = &i.stages {
            established = st.memory_open;
        }
        let expected: u64 = conns_per_chan
            .iter()
            .zip(i.published.per_channel.iter().chain(std::iter::repeat(&0)))
            .map(|(n, p)| n * p)
            .sum();
        let unique: u64 = unique_per_chan.iter().sum();
        let lost = expected.saturating_sub(unique);
        let connect_rate = if i.ramp_secs > 0.0 {
            established as f64 / i.ramp_secs
        } else {
            0.0
        };
        let deliveries_per_sec = if i.publish_secs > 0.0 {
            deliveries as f64 / i.publish_secs
        } else {
            0.0
        };
        let server_pss = match (i.server_before, i.server_open) {
            (Some(b), Some(o)) => Some(o.pss.saturating_sub(b.pss)),
            _ => None,
        };
        let server_rss = match (i.server_before, i.server_open) {
            (Some(b), Some(o)) => Some(o.rss.saturating_sub(b.rss)),
            _ => None,
        };
        let kernel = match (&i.kernel_before, &i.kernel_open) {
            (Some(b), Some(o)) => Some(o.growth_since(b)),
            _ => None,
        };
        let top_caches = match (&i.kernel_before, &i.kernel_open) {
            (Some(b), Some(o)) => o.top_growth(b, 6),
            _ => Vec::new(),
        };
        let q = |p: f64| {
            if hist.is_empty() {
                0
            } else {
                hist.value_at_quantile(p)
            }
        };
        let latency = json!({
            "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999),
            "max": if hist.is_empty() { 0 } else { hist.max() },
            "count": hist.len(),
        });
        let ramp: Vec<_> = i
            .samples
            .iter()
            .map(|s| {
                json!({
                    "secs": s.secs,
                    "established": s.established,
                    "server_pss_bytes": s.server.map(|m| m.pss),
                    "server_rss_bytes": s.server.map(|m| m.rss),
                    "kernel_bytes": match (&i.kernel_before, &s.kernel) {
                        (Some(b), Some(k)) => Some(k.growth_since(b)),
                        _ => None,
                    },
                })
            })
            .collect();
        let bayeux_transport =
            (a.transport == Transport::Bayeux).then(|| a.bayeux_transport.name());
        let socketio_transport =
            (a.transport == Transport::Socketio).then(|| a.socketio_transport.name());
        let loaded = loaded(&i, established);
        let tls = tls(&i, &errors);
        let stages = i.stages.as_ref().map(|st| {
            json!({
                "spec": st.spec,
                "peak_target": st.peak_target,
                "peak_open": st.peak_open,
                "memory_open": st.memory_open,
                "open_at_end": st.open_at_end,
                "closed_by_client": st.closed_by_client,
            })
        });
        let mut json = json!({
            "params": {
                "url": a.url, "transport": a.transport.name(), "bayeux_transport": bayeux_transport,
                "bayeux_path": (a.transport == Transport::Bayeux).then_some(&a.bayeux_path),
                "socketio_transport": socketio_transport,
                "socketio_path": (a.transport == Transport::Socketio).then_some(&a.socketio_path),
                "socketio_event": (a.transport == Transport::Socketio).then_some(&a.socketio_event),
                "token": a.token.is_some(),
                "conns": a.conns, "rate": a.rate, "duration": a.duration.as_secs_f64(),
                "procs": i.procs, "source": a.source, "channels": a.channels,
                "publish_rate": a.publish_rate, "size": a.size, "json_payload": a.json_payload, "publishers": a.publishers,
                "slow_readers": a.slow_readers, "slow_read_rate": a.slow_read_rate,
                "churn": a.churn, "broadcasts": a.broadcasts,
                "open_files_per_process": i.nofile,
            },
            "transport": a.transport.name(),
            "bayeux_transport": bayeux_transport,
            "socketio_transport": socketio_transport,
            "conns_target": a.conns,
            "conns_established": established,
            "ramp_secs": i.ramp_secs,
            "connect_rate_per_sec": connect_rate,
            "connect_rate_limited": i.rate_limited,
            "errors": errors,
            "server_pids": i.server_pids,
            "server_pss_bytes_before": i.server_before.map(|m| m.pss),
            "server_pss_bytes_open": i.server_open.map(|m| m.pss),
            "server_pss_bytes_per_conn": per_conn(server_pss, established),
            "server_rss_bytes_per_conn": per_conn(server_rss, established),
            "kernel_bytes_per_conn": per_conn(kernel, established),
            "kernel_counts_both_ends": i.server_local,
            "kernel_top_caches": top_caches,
            "client_bytes_per_conn": per_conn(Some(client_grown), established),
            "client_pss_bytes_open": client_open,
            "published": i.published.total(),
            "publish_errors": i.published.errors,
            "deliveries": deliveries,
            "deliveries_per_sec": deliveries_per_sec,
            "expected_deliveries": expected,
            "lost": lost,
            "duplicated": duplicated,
            "reordered": reordered,
            "foreign_frames": foreign,
            "gaps_reported": gaps,
            "latency_us": latency,
            "slow_readers": {
                "open_at_end": slow_open,
                "closed_by_server": slow_closed,
                "deliveries": slow_deliveries,
            },
            "loaded": loaded,
            "broadcasts": broadcasts(i.finals),
            "load": load(&i),
            "churn": {
                "closed_by_client": churned,
                "secs": churn_secs,
                "per_sec": if churn_secs > 0.0 { churned as f64 / churn_secs } else { 0.0 },
                "tcp_tw_peak": i.hold.iter().filter_map(|s| Some(s.kernel.as_ref()?.tcp_tw)).max(),
                "tcp_orphan_peak": i.hold.iter().filter_map(|s| Some(s.kernel.as_ref()?.tcp_orphan)).max(),
            },
            "ramp": ramp,
            "tls": tls,
        });
        // Apart from the literal above, which is at the json! macro's recursion limit.
        json["params"]["stages"] = json!(a.stages.as_ref().map(|s| s.spec()));
        json["params"]["publish_pipeline"] = json!(a.publish_pipeline);
        json["params"]["deflate"] = json!(a.deflate);
        json["websocket"] = wire::json(i.finals, a.websocket(), a.deflate);
        json["publish_schedule"] = schedule(&i);
        if a.stages.is_some() {
            // The stages replace them (`conns` is the largest target).
            json["params"]["rate"] = serde_json::Value::Null;
            json["params"]["duration"] = serde_json::Value::Null;
        }
        json["interrupted"] = json!(i.interrupted);
        json["stages"] = json!(stages);
        let ok = match &i.stages {
            Some(st) => st.peak_open == st.peak_target && errors.total() == 0,
            None => established == a.conns,
        } && lost == 0
            && duplicated == 0
            && reordered == 0
            && gaps == 0
            && i.published.errors == 0;
        let summary = summary(&json, &errors, i.server_local);
        let svg = svg(
            &json,
            rows,
            i.samples,
            &i.kernel_before,
            &hist,
            i.server_before,
        );
        Report {
            json,
            summary,
            svg,
            ok,
        }
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&self.json).expect("a Value always serializes") + "\n"
    }

    pub fn summary(&self) -> &str {
        &self.summary
    }

    pub fn svg(&self) -> &str {
        &self.svg
    }

    /// Every connection opened (with `--stages`: the peak target was reached, without an
    /// error), nothing was lost, duplicated or reordered, and the server reported no gap. A
    /// signal that ends the run (the normal end of `--duration 0`) does not make it fail.
    pub fn ok(&self) -> bool {
        self.ok
    }
}

fn fmt_bytes(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "n/a".to_string(), |b| format!("{b:.0} B"))
}

fn summary(j: &serde_json::Value, e: &Errors, server_local: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "== flood summary");
    if let Some(sig) = j["interrupted"].as_str() {
        let _ = writeln!(
            s,
            "interrupted by {sig}: the figures cover the run until then"
        );
    }
    if j["stages"].is_object() {
        let st = &j["stages"];
        let _ = writeln!(
            s,
            "stages {}: at most {} of {} open; {} open at the end, {} closed by flood; memory \
             read with {} open",
            st["spec"].as_str().unwrap_or("?"),
            st["peak_open"],
            st["peak_target"],
            st["open_at_end"],
            st["closed_by_client"],
            st["memory_open"],
        );
    }
    let _ = writeln!(
        s,
        "transport: {}{}",
        j["transport"].as_str().unwrap_or("?"),
        j["bayeux_transport"]
            .as_str()
            .or_else(|| j["socketio_transport"].as_str())
            .map_or_else(String::new, |t| format!(" over {t}"))
    );
    let _ = writeln!(
        s,
        "connections: {} of {} in {:.2} s ({:.0}/s{})",
        j["conns_established"],
        j["conns_target"],
        j["ramp_secs"].as_f64().unwrap_or(0.0),
        j["connect_rate_per_sec"].as_f64().unwrap_or(0.0),
        if j["stages"].is_object() {
            ", paced by --stages"
        } else if j["connect_rate_limited"].as_bool() == Some(true) {
            ", paced by --rate"
        } else {
            ", as fast as accepted"
        }
    );
    let _ = writeln!(
        s,
        "per connection: server PSS {}, server RSS {}, kernel {}{}, this client {}",
        fmt_bytes(&j["server_pss_bytes_per_conn"]),
        fmt_bytes(&j["server_rss_bytes_per_conn"]),
        fmt_bytes(&j["kernel_bytes_per_conn"]),
        if server_local {
            " (both ends: the server is on this machine)"
        } else {
            ""
        },
        fmt_bytes(&j["client_bytes_per_conn"]),
    );
    let t = &j["tls"];
    if t.is_object() {
        let _ = writeln!(
            s,
            "TLS (verify: {}, resumption {}): {} handshakes, {:.0}/s during the ramp; {} resumed; \
             failures: certificate {}, handshake {}",
            t["verify"].as_str().unwrap_or("?"),
            if t["resume"].as_bool() == Some(true) {
                "on"
            } else {
                "off"
            },
            t["handshakes"],
            t["handshakes_per_sec_ramp"].as_f64().unwrap_or(0.0),
            t["resumed"],
            t["failures"]["cert"],
            t["failures"]["handshake"],
        );
        if let Some(e) = t["first_error"].as_str() {
            let _ = writeln!(s, "  first TLS failure: {e}");
        }
    }
    for line in wire::summary(&j["websocket"]) {
        let _ = writeln!(s, "{line}");
    }
    if j["server_pids"].as_array().is_some_and(|a| a.is_empty()) {
        let _ = writeln!(
            s,
            "  (no server process found for the memory figures: pass --server-pid)"
        );
    }
    let gaps = j["gaps_reported"].as_u64().unwrap_or(0);
    if j["published"].as_u64().unwrap_or(0) > 0
        || j["deliveries"].as_u64().unwrap_or(0) > 0
        || gaps > 0
    {
        let l = &j["latency_us"];
        let _ = writeln!(
            s,
            "messages: {} published ({} errors), {} deliveries ({:.0}/s) of {} expected; lost {}, \
             duplicated {}, reordered {}; gaps reported by server {}",
            j["published"],
            j["publish_errors"],
            j["deliveries"],
            j["deliveries_per_sec"].as_f64().unwrap_or(0.0),
            j["expected_deliveries"],
            j["lost"],
            j["duplicated"],
            j["reordered"],
            gaps
        );
        let _ = writeln!(
            s,
            "latency (µs): p50 {} p90 {} p99 {} p99.9 {} max {}",
            l["p50"], l["p90"], l["p99"], l["p999"], l["max"]
        );
        let ld = &j["loaded"];
        let _ = writeln!(
            s,
            "while publishing, per connection: kernel {} (peak {}; TCP buffers {}, peak {}), \
             server PSS {} (peak {})",
            fmt_bytes(&ld["kernel_bytes_per_conn"]),
            fmt_bytes(&ld["kernel_peak_bytes_per_conn"]),
            fmt_bytes(&ld["tcp_buffer_bytes_per_conn"]),
            fmt_bytes(&ld["tcp_buffer_peak_bytes_per_conn"]),
            fmt_bytes(&ld["server_pss_bytes_per_conn"]),
            fmt_bytes(&ld["server_pss_peak_bytes_per_conn"]),
        );
    }
    let ps = &j["publish_schedule"];
    if !ps.is_null() {
        let _ = writeln!(
            s,
            "publish schedule {}: max lag {} µs (p50 {}, p99 {}), {} of {} publishes late (> {} µs), \
             {} waited for a free pipeline slot (--publish-pipeline {}); latency is from each \
             publish's scheduled time",
            if ps["kept"].as_bool() == Some(true) {
                "kept"
            } else {
                "NOT kept"
            },
            ps["lag_us"]["max"],
            ps["lag_us"]["p50"],
            ps["lag_us"]["p99"],
            ps["late"],
            ps["sent"],
            ps["late_after_us"],
            ps["waited_for_pipeline"],
            j["params"]["publish_pipeline"],
        );
    }
    if let Some(each) = j["broadcasts"]["each"].as_array().filter(|e| !e.is_empty()) {
        let times: Vec<String> = each
            .iter()
            .map(|b| {
                b["secs_to_all"]
                    .as_f64()
                    .map_or_else(|| "none".into(), |t| format!("{t:.2} s"))
            })
            .collect();
        let _ = writeln!(
            s,
            "broadcasts: {} (publish to last delivery: {}; median {})",
            each.len(),
            times.join(", "),
            j["broadcasts"]["secs_to_all_median"]
                .as_f64()
                .map_or_else(|| "n/a".into(), |t| format!("{t:.2} s"))
        );
    }
    let ld = &j["load"];
    if ld["published"].as_u64().unwrap_or(0) > 0 {
        let _ = writeln!(
            s,
            "publish load: {} published, {} delivered in {} from its start to the last delivery \
             ({}/s)",
            ld["published"],
            ld["deliveries"],
            ld["secs_to_last_delivery"]
                .as_f64()
                .map_or_else(|| "n/a".into(), |t| format!("{t:.2} s")),
            ld["deliveries_per_sec"]
                .as_f64()
                .map_or_else(|| "n/a".into(), |r| format!("{r:.0}"))
        );
    }
    if j["params"]["churn"].as_f64().unwrap_or(0.0) > 0.0 {
        let c = &j["churn"];
        let _ = writeln!(
            s,
            "churn: {} connections closed by this client and replaced ({:.0}/s); TIME-WAIT peak {}, \
             orphans peak {}",
            c["closed_by_client"],
            c["per_sec"].as_f64().unwrap_or(0.0),
            c["tcp_tw_peak"],
            c["tcp_orphan_peak"]
        );
    }
    if j["params"]["slow_readers"].as_f64().unwrap_or(0.0) > 0.0 {
        let sr = &j["slow_readers"];
        let _ = writeln!(
            s,
            "slow readers (not in loss or latency): {} open at the end, {} closed by the server \
             (slow consumers), {} messages read",
            sr["open_at_end"], sr["closed_by_server"], sr["deliveries"]
        );
    }
    if e.total() + e.closed_by_server > 0 {
        let kinds: Vec<String> = e
            .occurred()
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(s, "errors: {}", kinds.join(", "));
        for hint in hints(e) {
            let _ = writeln!(s, "  - {hint}");
        }
    }
    s
}

/// What to change, per kind of error.
pub fn hints(e: &Errors) -> Vec<&'static str> {
    let mut h = Vec::new();
    if e.refused > 0 {
        h.push(
            "refused: the server is not listening, or its accept queue overflowed: raise \
             net.core.somaxconn and the server's backlog, or lower --rate",
        );
    }
    if e.reset > 0 {
        h.push(
            "reset: the server dropped connections (its connection limit, or its open-files \
             limit): check its counters (/stats) and its ulimit -n",
        );
    }
    if e.timeout > 0 {
        h.push(
            "timeout: handshakes took longer than --connect-timeout: lower --rate, or raise \
             net.ipv4.tcp_max_syn_backlog and the accept backlog",
        );
    }
    if e.eaddrnotavail > 0 {
        h.push(
            "eaddrnotavail: out of ephemeral ports for this source/target pair: add --source \
             127.0.0.2-127.0.0.40, or widen net.ipv4.ip_local_port_range",
        );
    }
    if e.emfile > 0 {
        h.push("emfile: a client process ran out of open files: use more --procs");
    }
    if e.http_status > 0 {
        h.push(
            "http: the server refused the upgrade (limit reached? wrong path?): check --url and \
             the server's limits",
        );
    }
    if e.protocol > 0 {
        h.push(
            "protocol: the server's answer could not be parsed (malformed head, a long-poll \
             answer that is not the documented JSON, a frame or event over 64 MiB, RSV bits \
             that no extension agreed): does the server speak this --transport?",
        );
    }
    if e.ws_extension > 0 {
        h.push(
            "ws-extension: the upgrade's answer named an extension not offered (any, without \
             --deflate) or a bad permessage-deflate parameter (first failure above)",
        );
    }
    if e.inflate > 0 {
        h.push("inflate: a compressed message did not inflate (corrupt, or over 64 MiB)");
    }
    if e.bayeux > 0 {
        h.push(
            "bayeux: the server failed a meta reply or told the client to handshake again \
             (402 unknown client: expired after --bayeux-max-interval, or the server lost it; \
             503: its client limit; a handshake without a common connection type): check the \
             server's Bayeux counters and limits",
        );
    }
    if e.socketio > 0 {
        h.push(
            "socketio: the server refused the CONNECT (connect_error: a missing or refused \
             --token, a channel the token does not allow, an unknown namespace): check --token, \
             the channel and the server's Socket.IO settings",
        );
    }
    if e.tls_cert > 0 {
        h.push(
            "tls-cert: the server's certificate was refused (first failure above): give the CA \
             that signed it with --ca, use the name it was issued for in --url (localhost or the \
             IP in its subjectAltName), or --insecure to skip verification",
        );
    }
    if e.tls_handshake > 0 {
        h.push(
            "tls-handshake: the TLS handshake failed (first failure above): is this port TLS \
             (https:// and wss:// need the server's --tls-listen port)? Does the server offer \
             TLS 1.2 or 1.3?",
        );
    }
    if e.closed_by_server > 0 {
        h.push(
            "closed-by-server: established connections were closed (idle timeout, slow \
             consumer, shutdown): check the server's counters",
        );
    }
    h
}

/// The run's parameters as lines of `key value` pairs (the non-null, non-false ones of the
/// report's `params`), about 130 characters each: the text above `--plot`'s charts.
pub fn params_lines(params: &serde_json::Value) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let Some(obj) = params.as_object() else {
        return lines;
    };
    for (k, v) in obj {
        let v = match v {
            serde_json::Value::Null | serde_json::Value::Bool(false) => continue,
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let item = format!("{k} {v}");
        if !line.is_empty() && line.len() + item.len() + 2 > 130 {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(&item);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn svg(
    json: &serde_json::Value,
    rows: &[Row],
    samples: &[Sample],
    kernel_before: &Option<KernelMem>,
    hist: &Histogram<u64>,
    server_before: Option<ProcMem>,
) -> String {
    let pts = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter(|s| s.established > 0)
            .filter_map(|s| f(s).map(|v| (s.established as f64, v / s.established as f64)))
            .collect()
    };
    let pss = pts(&|s| Some(s.server?.pss.saturating_sub(server_before?.pss) as f64));
    let rss = pts(&|s| Some(s.server?.rss.saturating_sub(server_before?.rss) as f64));
    let kern = pts(&|s| Some(s.kernel.as_ref()?.growth_since(kernel_before.as_ref()?) as f64));
    let mem = plot::line_chart(
        "Memory per connection during the ramp",
        "connections established",
        "bytes per connection",
        &[
            plot::Series {
                name: "server PSS",
                points: &pss,
            },
            plot::Series {
                name: "server RSS",
                points: &rss,
            },
            plot::Series {
                name: "kernel",
                points: &kern,
            },
        ],
    );
    let over_time = timeline::svg(
        &params_lines(&json["params"]),
        rows,
        server_before.map(|m| m.pss),
    );
    let mut charts = vec![over_time, mem];
    if !hist.is_empty() {
        let pct: Vec<(f64, f64)> = [50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 99.99]
            .iter()
            .map(|&p| (p, hist.value_at_quantile(p / 100.0) as f64))
            .collect();
        charts.push(plot::percentile_chart("Delivery latency", &pct));
    }
    plot::stack(&charts)
}
