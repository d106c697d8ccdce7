#!/usr/bin/env python3
"""The summary of a bench/soak/run.sh run: reads DIR/meta.json, DIR/samples.jsonl,
DIR/flood-a.json, DIR/flood-b.json and DIR/after.json, writes DIR/summary.md (also printed) and
exits 0 if the run passed, 1 if not (what failed is listed at the top of the summary).

Fails: a flood without a report or with a non-zero exit status, the server gone before the end
or exiting non-zero on SIGTERM; for the keep-up readers (flood A's connections that are not slow
readers) anything lost, duplicated, reordered or reported as a gap, a publish that failed, a
connection error (a keep-up reader closed by the server counts as one); flood B's connection
errors (failed reconnects). The flat/not-flat verdicts are reported, not failed on: a 30-minute
run is evidence to read, not a test.

Flat: a least-squares line through the samples of the steady window (from --skip seconds after
the floods started to the planned end of their hold). A series is flat when the slope is at most
FLAT_PER_HOUR (5 %) of its mean level per hour, or, for a series that only jitters around a small
level, when the slope is within two standard errors of zero (no trend the noise can tell).
"""

import json
import math
import os
import sys

FLAT_PER_HOUR = 0.05
MEMORY_SERIES = ("RSS (VmRSS)", "PSS", "RSS anonymous")

# The gauges of /stats (the other fields are counters, which only grow).
TOTAL_GAUGES = [
    "conns_http", "conns_ws_sub", "conns_ws_echo", "conns_sse", "conns_stream", "conns_poll",
    "conns_bayeux_poll", "conns_bayeux_ws", "conns_closing", "channels", "bytes_queued",
]
HUB_GAUGES = [
    "channel_states", "history_messages", "history_bytes", "sessions", "session_queued",
    "bayeux_clients", "bayeux_subscriptions", "bayeux_queued", "bayeux_unacked",
    "broker_subscriptions", "broker_connected",
]


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_samples(path):
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except ValueError:
                        pass
    except OSError:
        pass
    return rows


def series_of(rows):
    """name -> (unit, getter) for every series that is fitted."""
    out = [
        ("RSS (VmRSS)", "B", lambda r: r.get("rss")),
        ("PSS", "B", lambda r: r.get("pss")),
        ("RSS anonymous", "B", lambda r: r.get("rss_anon")),
        ("open files", "", lambda r: r.get("fds")),
        ("threads", "", lambda r: r.get("threads")),
    ]
    for g in TOTAL_GAUGES:
        if any((r.get("total") or {}).get(g) is not None for r in rows):
            out.append((f"total.{g}", "B" if g == "bytes_queued" else "",
                        lambda r, g=g: (r.get("total") or {}).get(g)))
    for g in HUB_GAUGES:
        if any((r.get("hub") or {}).get(g) is not None for r in rows):
            out.append((f"hub.{g}", "B" if g.endswith("bytes") else "",
                        lambda r, g=g: (r.get("hub") or {}).get(g)))
    for k, label in (("inuse", "TCP sockets in use (namespace)"),
                     ("orphan", "TCP orphans (namespace)"),
                     ("tw", "TCP TIME-WAIT (namespace)")):
        out.append((label, "", lambda r, k=k: (r.get("tcp") or {}).get(k)))
    return out


def fit(points):
    """Least squares y = a + b t over (t seconds, y): slope per hour, its standard error."""
    n = len(points)
    if n < 3:
        return None
    tm = sum(t for t, _ in points) / n
    ym = sum(y for _, y in points) / n
    sxx = sum((t - tm) ** 2 for t, _ in points)
    if sxx == 0:
        return None
    b = sum((t - tm) * (y - ym) for t, y in points) / sxx
    a = ym - b * tm
    res = sum((y - a - b * t) ** 2 for t, y in points)
    se = math.sqrt(res / (n - 2) / sxx) if n > 2 else float("inf")
    return {"mean": ym, "slope_h": b * 3600, "se_h": se * 3600}


def verdict(f, values):
    if f is None:
        return "too few samples"
    if all(v == values[0] for v in values):
        return "flat (constant)"
    level = abs(f["mean"])
    rel = abs(f["slope_h"]) / level if level else math.inf
    if rel <= FLAT_PER_HOUR:
        return "flat"
    if abs(f["slope_h"]) <= 2 * f["se_h"]:
        return "flat within noise (|slope| < 2 SE)"
    return "**RISING**" if f["slope_h"] > 0 else "**FALLING**"


def human(v, unit):
    if v is None:
        return "n/a"
    if unit == "B":
        a = abs(v)
        if a >= 1 << 20:
            return f"{v / 1048576:.2f} MiB"
        if a >= 1 << 10:
            return f"{v / 1024:.1f} KiB"
        return f"{v:.0f} B"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.1f}"
    return f"{int(v):,}"


def pct(x):
    return "n/a" if x is None or math.isinf(x) or math.isnan(x) else f"{x * 100:+.2f} %"


def counter(rows, name, where="total"):
    vals = [(r.get(where) or {}).get(name) for r in rows]
    vals = [v for v in vals if v is not None]
    return (vals[0], vals[-1]) if vals else (None, None)


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    meta = load_json(os.path.join(d, "meta.json")) or {}
    rows = load_samples(os.path.join(d, "samples.jsonl"))
    fa = load_json(os.path.join(d, "flood-a.json"))
    fb = load_json(os.path.join(d, "flood-b.json"))
    after = load_samples(os.path.join(d, "after.jsonl"))
    before = load_samples(os.path.join(d, "before.jsonl"))
    skip = float(meta.get("skip_secs", 120))
    hold = float(meta.get("hold_secs", 0))
    window = [r for r in rows if skip <= r["t"] <= hold]
    fails = []

    # Processes.
    for name, j, st in (("A", fa, meta.get("flood_a_status")), ("B", fb, meta.get("flood_b_status"))):
        if j is None:
            fails.append(f"flood {name} wrote no report")
        if st != 0:
            fails.append(f"flood {name} exited with status {st}")
    if not meta.get("server_alive_at_end", False):
        fails.append("the server was gone before the end")
    if meta.get("server_exit") not in (0, None) and meta.get("server_alive_at_end", False):
        fails.append(f"the server exited with status {meta.get('server_exit')} on SIGTERM")
    # Keep-up readers.
    if fa is not None:
        for k in ("lost", "duplicated", "reordered", "gaps_reported", "publish_errors"):
            if fa.get(k, 0):
                fails.append(f"flood A: {k} {fa[k]}")
        if not fa.get("expected_deliveries"):
            fails.append("flood A: no deliveries expected (nothing was measured)")
        ea = sum(v for v in (fa.get("errors") or {}).values() if isinstance(v, int))
        if ea:
            fails.append(f"flood A: {ea} connection errors {fa['errors']}")
    if fb is not None:
        eb = sum(v for v in (fb.get("errors") or {}).values() if isinstance(v, int))
        if eb:
            fails.append(f"flood B: {eb} connection errors {fb['errors']}")
    if len(window) < 3:
        fails.append(f"only {len(window)} samples in the steady window")

    L = []
    w = L.append
    mach = meta.get("machine", {})
    conns = (fa or {}).get("conns_target", 0) + (fb or {}).get("conns_target", 0)
    mins = meta.get("minutes", "?")
    w(f"# Soak: {conns:,} connections for {mins} minute{'' if mins == 1 else 's'}")
    w("")
    w(f"Commit {meta.get('commit', '?')}, {meta.get('date', '?')}, {mach.get('nproc', '?')} cores "
      f"({mach.get('cpu', '?')}), {mach.get('memory', '?')}, Linux {mach.get('kernel', '?')}. "
      f"Produced by `bench/soak/run.sh {meta.get('args', '')}`"
      + (f" in a network namespace of its own (loopback; `{meta['netns']}`)"
         if meta.get("netns") else " in the machine's own network namespace") + ":")
    w("")
    for k in ("server_cmd", "flood_a_cmd", "flood_b_cmd"):
        if meta.get(k):
            w(f"    {meta[k]}")
    w("")
    w(f"**{'PASS' if not fails else 'FAIL'}**" + ("" if not fails else ": " + "; ".join(fails)))
    w("")

    # The load.
    def g(j, *path, default=None):
        for p in path:
            if not isinstance(j, dict):
                return default
            j = j.get(p)
        return default if j is None else j

    w("## Load")
    w("")
    w("| | |")
    w("|---|---|")
    wt = [r["t"] for r in window]
    w(f"| duration | floods held {hold / 60:.1f} min after their ramp; {len(rows)} samples every "
      f"{meta.get('interval', 10)} s; steady window t = {skip:.0f}–{hold:.0f} s "
      f"({len(window)} samples{'' if not wt else f', {wt[0]:.0f}–{wt[-1]:.0f} s'}) |")
    if fa:
        pa = fa["params"]
        slow_n = g(fa, "slow_readers", "open_at_end", default=0) + g(fa, "slow_readers", "closed_by_server", default=0)
        w(f"| flood A (publish load) | {fa['conns_established']:,} of {fa['conns_target']:,} "
          f"{fa['transport']} connections in {fa['ramp_secs']:.1f} s, {pa['channels']} channels, "
          f"{slow_n:,} of them slow readers ({pa['slow_readers']:.0%}, {pa['slow_read_rate']} B/s each) |")
    if fb:
        pb = fb["params"]
        w(f"| flood B (churn) | {fb['conns_established']:,} of {fb['conns_target']:,} "
          f"{fb['transport']} connections in {fb['ramp_secs']:.1f} s, {pb['channels']} channels, "
          f"no publishing |")
    peak = max((sum((r.get("total") or {}).get(k, 0) for k in TOTAL_GAUGES if k.startswith("conns_"))
                for r in rows), default=0)
    w(f"| server connections (sum of the conns_* gauges) | peak {peak:,}; "
      f"open files peak {max((r.get('fds') or 0 for r in rows), default=0):,} (hard cap {mach.get('nofile_hard', '?')}) |")
    if fa:
        secs = fa["params"]["duration"]
        w(f"| publish load | {fa['published']:,} messages of {fa['params']['size']} B published "
          f"({fa['published'] / secs if secs else 0:.1f}/s of {fa['params']['publish_rate']}/s asked), "
          f"{fa['publish_errors']} errors |")
        w(f"| deliveries to keep-up readers | {fa['deliveries']:,} of {fa['expected_deliveries']:,} expected "
          f"({fa['deliveries_per_sec']:,.0f}/s) |")
        w(f"| **lost / duplicated / reordered / gaps** (keep-up readers) | **{fa['lost']} / {fa['duplicated']} / "
          f"{fa['reordered']} / {fa['gaps_reported']}** |")
        lat = fa["latency_us"]
        w(f"| latency, publish to delivery (ms) | p50 {lat['p50'] / 1000:.1f}, p99 {lat['p99'] / 1000:.1f}, "
          f"p99.9 {lat['p999'] / 1000:.1f}, max {lat['max'] / 1000:.1f} |")
        sr = fa["slow_readers"]
        w(f"| slow readers | closed by the server {sr['closed_by_server']:,}, still open at the end "
          f"{sr['open_at_end']:,}; they read {sr['deliveries']:,} messages (not counted above) |")
    last = rows[-1] if rows else {}
    end = after[-1] if after else last
    tot = end.get("total") or {}
    w(f"| server counters at the end | slow_consumers {tot.get('slow_consumers', 'n/a')}, "
      f"ws_pong_timeouts {tot.get('ws_pong_timeouts', 'n/a')}, drops {tot.get('drops', 'n/a')}, "
      f"close_timeouts {tot.get('close_timeouts', 'n/a')}, accepted {tot.get('accepted', 'n/a')}, "
      f"messages_out {tot.get('messages_out', 'n/a')}, http_errors {tot.get('http_errors', 'n/a')}, "
      f"refused {tot.get('refused', 'n/a')}, accept_errors {tot.get('accept_errors', 'n/a')} |")
    if fb:
        ch = fb["churn"]
        w(f"| churn (flood B) | {ch['closed_by_client']:,} connections closed and replaced in "
          f"{ch['secs']:.0f} s ({ch['per_sec']:.1f}/s of {fb['params']['churn']}/s asked); "
          f"TIME-WAIT peak {ch['tcp_tw_peak']} |")
    for name, j in (("A", fa), ("B", fb)):
        if j:
            errs = {k: v for k, v in (j.get("errors") or {}).items() if v}
            w(f"| flood {name} errors | {', '.join(f'{k} {v}' for k, v in errs.items()) or 'none'} |")
    if len(window) >= 2:
        c0, c1 = window[0].get("cpu_secs"), window[-1].get("cpu_secs")
        dt = window[-1]["t"] - window[0]["t"]
        if c0 is not None and c1 is not None and dt > 0:
            w(f"| server CPU in the window | {(c1 - c0) / dt * 100:.0f} % of one core |")
        a0, a1 = counter(window, "accepted")
        m0, m1 = counter(window, "messages_out")
        if a0 is not None and dt > 0:
            w(f"| rates in the window (/stats) | accepted {(a1 - a0) / dt:.1f}/s, "
              f"messages_out {(m1 - m0) / dt:,.0f}/s |")
    w("")

    # Flat or not.
    w(f"## Flat or not: t = {skip:.0f}–{hold:.0f} s")
    w("")
    w(f"Least-squares slope per hour over the steady window (the first {skip / 60:g} min, the "
      f"ramp, the slow readers being cut and the history filling, are left out). **flat**: |slope| ≤ "
      f"{FLAT_PER_HOUR:.0%} of the window's mean per hour (a level that would take 20 hours "
      f"to double; below that a short run cannot tell a slow leak from allocator steps and "
      f"sampling jitter); **flat within noise**: a series that only jitters (a queue, "
      f"connections in flight) whose slope is within two standard errors of zero. Anything "
      f"else is RISING or FALLING.")
    w("")
    w("| series | first | last | min | max | mean | slope / h | of mean / h | verdict |")
    w("|---|---|---|---|---|---|---|---|---|")
    zeros = []
    fits = {}
    for name, unit, get in series_of(rows):
        pts = [(r["t"], get(r)) for r in window if get(r) is not None]
        if not pts:
            continue
        vals = [v for _, v in pts]
        if all(v == 0 for v in vals):
            zeros.append(name)
            continue
        f = fit(pts)
        fits[name] = f
        rel = abs(f["slope_h"]) / abs(f["mean"]) if f and f["mean"] else None
        rel = (math.copysign(rel, f["slope_h"]) if rel is not None else None)
        w(f"| {name} | {human(vals[0], unit)} | {human(vals[-1], unit)} | {human(min(vals), unit)} | "
          f"{human(max(vals), unit)} | {human(f['mean'] if f else None, unit)} | "
          f"{human(f['slope_h'] if f else None, unit)} | {pct(rel)} | {verdict(f, vals)} |")
    w("")
    if zeros:
        w(f"Always 0 in the window: {', '.join(zeros)}.")
        w("")
    # A leak keeps rising to the end; allocator warm-up (arenas and free lists growing to the
    # load's working set) rises and then stops. The second half of the window tells them apart.
    half = [r for r in window if r["t"] >= (window[0]["t"] + window[-1]["t"]) / 2] if window else []
    if len(half) >= 3:
        w(f"Memory over the second half of the window only (t = {half[0]['t']:.0f}–{half[-1]['t']:.0f} s, "
          f"{len(half)} samples), where a leak would still be rising and a warm-up has stopped:")
        w("")
        w("| series | first | last | min | max | slope / h | of mean / h | verdict |")
        w("|---|---|---|---|---|---|---|---|")
        for name, unit, get in series_of(rows):
            if name not in MEMORY_SERIES:
                continue
            pts = [(r["t"], get(r)) for r in half if get(r) is not None]
            if len(pts) < 3:
                continue
            vals = [v for _, v in pts]
            hf = fit(pts)
            rel = abs(hf["slope_h"]) / abs(hf["mean"]) if hf and hf["mean"] else None
            rel = (math.copysign(rel, hf["slope_h"]) if rel is not None else None)
            w(f"| {name} | {human(vals[0], unit)} | {human(vals[-1], unit)} | {human(min(vals), unit)} | "
              f"{human(max(vals), unit)} | {human(hf['slope_h'] if hf else None, unit)} | {pct(rel)} | "
              f"{verdict(hf, vals)} |")
        w("")
    f = fits.get("RSS (VmRSS)")
    if f and len(window) >= 2:
        dt_h = (window[-1]["t"] - window[0]["t"]) / 3600
        a0, a1 = counter(window, "accepted")
        m0, m1 = counter(window, "messages_out")
        parts = []
        if a0 is not None and a1 > a0:
            parts.append(f"{f['slope_h'] * dt_h / (a1 - a0):+.2f} B per accepted connection")
        if m0 is not None and m1 > m0:
            parts.append(f"{f['slope_h'] * dt_h / (m1 - m0):+.4f} B per message sent")
        if parts:
            w("Read as a leak, the RSS slope would be " + ", or ".join(parts) + " (the window's "
              "counts from /stats).")
            w("")

    # Before and after.
    w("## Before the floods and after they closed")
    w("")
    w("| | before | after |")
    w("|---|---|---|")
    b0 = before[-1] if before else {}
    for label, key, unit in (("RSS", "rss", "B"), ("PSS", "pss", "B"), ("open files", "fds", ""),
                             ("threads", "threads", "")):
        w(f"| {label} | {human(b0.get(key), unit)} | {human(end.get(key), unit) if after else 'n/a'} |")
    for gname in TOTAL_GAUGES:
        bv, av = (b0.get("total") or {}).get(gname), ((end.get("total") or {}).get(gname) if after else None)
        if bv or av:
            w(f"| total.{gname} | {human(bv, '')} | {human(av, '')} |")
    for gname in ("channel_states", "history_messages", "history_bytes", "sessions", "session_queued"):
        bv, av = (b0.get("hub") or {}).get(gname), ((end.get("hub") or {}).get(gname) if after else None)
        if bv or av:
            w(f"| hub.{gname} | {human(bv, '')} | {human(av, '')} |")
    w("")
    if after and meta.get("after_secs") is not None:
        w(f"(\"after\": {meta['after_secs']:.0f} s after both floods exited, once the "
          f"connection gauges were back to their idle values or 30 s passed.)")
        w("")
    w("Files: `samples.jsonl` (every sample), `flood-a.json`, `flood-b.json` (flood's reports), "
      "`run.log`, `server.log`, `meta.json`.")
    text = "\n".join(L) + "\n"
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
