"""kernel-tuning/experiment KNOB[,KNOB...] VALUE... [options] -- FLOOD-ARGS

For each VALUE: set KNOB to it (the old value saved first), start a fresh edgecomet, run flood
with FLOOD-ARGS against it, stop the server, put KNOB back. Then write the results as JSON, a
Markdown table and an SVG chart (value against server and kernel bytes per connection, connect
rate, latency p50/p99, errors; with a publish load also the memory while publishing) into
--out. KNOB is restored after every value, also when a run fails or is interrupted.

Several knobs, comma-separated, are set together: a VALUE applies to each of them, or gives one
value per knob separated by " / " (e.g. "4096 131072 6291456 / 4096 16384 4194304"). The VALUE
`current` leaves the knobs as they are: the baseline measured in the same session.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import ktune

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (summary key, column title); a column is shown when some run has a value for it.
METRICS = [
    ("server_pss_bytes_per_conn", "server B/conn"),
    ("kernel_bytes_per_conn", "kernel B/conn"),
    ("connect_rate_per_sec", "connects/s"),
    ("latency_p50_us", "p50 us"),
    ("latency_p99_us", "p99 us"),
    ("deliveries_per_sec", "deliveries/s"),
    ("loaded_kernel_bytes_per_conn", "publishing: kernel B/conn"),
    ("loaded_tcp_buffer_peak_bytes_per_conn", "publishing: TCP buffers peak B/conn"),
    ("loaded_server_pss_peak_bytes_per_conn", "publishing: server peak B/conn"),
    ("slow_closed_by_server", "slow readers closed"),
    ("churn_per_sec", "replaced/s"),
    ("tcp_tw_peak", "TIME-WAIT peak"),
    ("eaddrnotavail", "EADDRNOTAVAIL"),
    ("errors", "errors"),
    ("lost", "lost"),
]


def summarize(report):
    """The figures of one flood JSON report that the table and chart show."""
    lat = report.get("latency_us") or {}
    errors = report.get("errors") or {}
    loaded = report.get("loaded") or {}
    slow = report.get("slow_readers") or {}
    publishing = bool(report.get("published"))
    params = report.get("params") or {}
    churn = report.get("churn") or {}
    churning = bool(params.get("churn"))
    return {
        "conns_established": report.get("conns_established"),
        "server_pss_bytes_per_conn": report.get("server_pss_bytes_per_conn"),
        "kernel_bytes_per_conn": report.get("kernel_bytes_per_conn"),
        "connect_rate_per_sec": report.get("connect_rate_per_sec"),
        "latency_p50_us": lat.get("p50") if lat.get("count") else None,
        "latency_p99_us": lat.get("p99") if lat.get("count") else None,
        "errors": sum(v for v in errors.values() if isinstance(v, (int, float))),
        "errors_by_kind": {k: v for k, v in errors.items() if v},
        "lost": report.get("lost"),
        "deliveries_per_sec": report.get("deliveries_per_sec") if publishing else None,
        "loaded_kernel_bytes_per_conn":
            loaded.get("kernel_bytes_per_conn") if publishing else None,
        "loaded_tcp_buffer_peak_bytes_per_conn":
            loaded.get("tcp_buffer_peak_bytes_per_conn") if publishing else None,
        "loaded_server_pss_peak_bytes_per_conn":
            loaded.get("server_pss_peak_bytes_per_conn") if publishing else None,
        "slow_closed_by_server": slow.get("closed_by_server")
        if params.get("slow_readers") else None,
        "churn_per_sec": churn.get("per_sec") if churning else None,
        "tcp_tw_peak": churn.get("tcp_tw_peak") if churning else None,
        "eaddrnotavail": errors.get("eaddrnotavail") if churning else None,
    }


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.1f" % v
    return str(v)


def shown(rows):
    return [m for m in METRICS if any(r["summary"].get(m[0]) is not None for r in rows)]


def median(vals):
    vals = sorted(v for v in vals if isinstance(v, (int, float)))
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def medians(rows):
    """One row per value: the median of each metric over its rounds."""
    out = []
    for v in dict.fromkeys(r["value"] for r in rows):
        runs = [r for r in rows if r["value"] == v]
        keys = set(k for r in runs for k in r["summary"])
        out.append({"value": v, "rounds": len(runs),
                    "summary": {k: median(r["summary"].get(k) for r in runs) for k in keys}})
    return out


def table(knob, rows):
    ms = shown(rows)
    rounds = any(r.get("round", 1) > 1 for r in rows)
    out = ["| %s |%s conns | %s |" % (knob, " round |" if rounds else "",
                                      " | ".join(m[1] for m in ms)),
           "|---|%s---|%s|" % ("---|" if rounds else "", "|".join("---" for _ in ms))]
    for r in rows:
        s = r["summary"]
        out.append("| `%s` |%s %s | %s |" % (r["value"], " %s |" % r["round"] if rounds else "",
                                             fmt(s.get("conns_established")),
                                             " | ".join(fmt(s.get(m[0])) for m in ms)))
    if rounds:
        out += ["", "Medians over the rounds:", ""]
        out.append(table(knob, medians(rows)).rstrip("\n"))
    return "\n".join(out) + "\n"


def esc(s):
    return (str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def svg(knob, rows, panels=None):
    """One small bar chart per metric, the values of KNOB along x (categories: values such as
    "4096 4096 65536" are not numbers). Default panels: server and kernel bytes per connection,
    connect rate, latency p99, and with a publish load the memory while publishing."""
    names = dict(METRICS)
    if panels is None:
        have = {m[0] for m in shown(rows)}
        panels = [k for k in ("server_pss_bytes_per_conn", "kernel_bytes_per_conn",
                              "connect_rate_per_sec", "latency_p99_us",
                              "loaded_kernel_bytes_per_conn",
                              "loaded_server_pss_peak_bytes_per_conn", "churn_per_sec",
                              "tcp_tw_peak", "eaddrnotavail") if k in have]
    w, ph, top, left = 640, 150, 40, 70
    h = top + len(panels) * (ph + 50) + 10
    n = max(len(rows), 1)
    bw = (w - left - 20) / n
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" '
             'font-family="sans-serif" font-size="11">' % (w, h),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="%d" y="20" font-size="14">%s</text>' % (left, esc(knob))]
    for i, key in enumerate(panels):
        y0 = top + i * (ph + 50)
        vals = [r["summary"].get(key) for r in rows]
        vmax = max([v for v in vals if isinstance(v, (int, float))] or [0]) or 1
        parts.append('<text x="%d" y="%d">%s (max %s)</text>'
                     % (left, y0 + 12, esc(names.get(key, key)), fmt(vmax)))
        parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>'
                     % (left, y0 + ph, w - 20, y0 + ph))
        for j, v in enumerate(vals):
            x = left + j * bw + bw * 0.15
            if isinstance(v, (int, float)):
                bh = (ph - 20) * v / vmax
                parts.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#4a7ab5">'
                             '<title>%s: %s</title></rect>'
                             % (x, y0 + ph - bh, bw * 0.7, bh, esc(rows[j]["value"]), fmt(v)))
                parts.append('<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>'
                             % (x + bw * 0.35, y0 + ph - bh - 3, fmt(v)))
            parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>'
                         % (x + bw * 0.35, y0 + ph + 14, esc(rows[j]["value"])))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def start_server(binary, extra):
    log = open(os.path.join("/tmp", "ktune-server-%d.log" % os.getpid()), "w+")
    p = subprocess.Popen([binary, "--listen", "127.0.0.1:0"] + extra, stdout=log,
                         stderr=subprocess.STDOUT)
    for _ in range(200):
        log.seek(0)
        m = re.search(r"listening on ([0-9.:]+)", log.read())
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            break
        time.sleep(0.05)
    p.kill()
    raise RuntimeError("edgecomet did not start")


def stop_server(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def values_for(knobs, value):
    """The value of each knob for VALUE (None: leave it), or ValueError."""
    if value == "current":
        return [None] * len(knobs)
    parts = [" ".join(p.split()) for p in value.split("/")]
    if len(parts) == 1:
        return parts * len(knobs)
    if len(parts) != len(knobs) or not all(parts):
        raise ValueError("%r: give one value, or one per knob (%d) separated by /"
                         % (value, len(knobs)))
    return parts


def run_value(a, value, flood_args, rnd=1):
    state = os.path.join(a.out, "saved-%d.conf" % os.getpid())
    knobs = a.knob.split(",")
    old = [ktune.read(k) for k in knobs]
    for k, o in zip(knobs, old):
        if o is None:
            raise RuntimeError("%s: not present in this kernel" % k)
    ktune.save_state(state, list(zip(knobs, old)), "experiment")
    server = None
    try:
        for k, v in zip(knobs, values_for(knobs, value)):
            if v is None:
                continue
            ktune.write(k, v)
            now = ktune.read(k)
            if now != v:
                raise RuntimeError("%s: wrote %r, reads back %r" % (k, v, now))
        server, addr = start_server(a.server_bin, a.server_args.split())
        report = os.path.join(a.out, "flood-%s%s.json" % (
            re.sub(r"[^0-9A-Za-z]+", "_", value).strip("_"),
            "-round%d" % rnd if a.repeat > 1 else ""))
        args = [x.replace("{addr}", addr) for x in flood_args]
        if not any(x == "--url" or x.startswith("--url=") for x in args):
            args = ["--url", "ws://%s/sub/experiment" % addr] + args
        cmd = [a.flood_bin] + args + ["--server-pid", str(server.pid), "--json", report]
        print("+ %s = %s: %s" % (a.knob, value, " ".join(cmd)), flush=True)
        rc = subprocess.run(cmd).returncode
        with open(report) as f:
            summary = summarize(json.load(f))
        return {"value": value, "flood_exit": rc, "summary": summary, "command": cmd}
    finally:
        if server is not None:
            stop_server(server)
        back = True
        for k, o in zip(knobs, old):
            ktune.write(k, o)
            if ktune.read(k) != o:
                back = False
                print("WARNING: %s did not go back to %s (state kept in %s)" % (k, o, state),
                      file=sys.stderr)
        if back:
            os.remove(state)


def interrupt(*_):
    raise KeyboardInterrupt()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        sys.stderr.write("usage: kernel-tuning/experiment KNOB[,KNOB...] VALUE... [options] "
                         "-- FLOOD-ARGS\n")
        return 2
    cut = argv.index("--")
    ap = argparse.ArgumentParser(prog="kernel-tuning/experiment")
    ap.add_argument("knob")
    ap.add_argument("values", nargs="+")
    ap.add_argument("--out", help="results folder (default kernel-tuning/results/KNOB-TIME)")
    ap.add_argument("--server-bin", default=os.path.join(ROOT, "target/release/edgecomet"))
    ap.add_argument("--server-args", default="--workers 2")
    ap.add_argument("--flood-bin", default=os.path.join(ROOT, "target/release/flood"))
    ap.add_argument("--repeat", type=int, default=1, help="runs per value (in rounds)")
    ap.add_argument("--pause", type=float, default=0,
                    help="seconds to wait after each run (e.g. 60 for TIME-WAIT sockets of a "
                         "run to expire before the next)")
    a = ap.parse_args(argv[:cut])
    flood_args = argv[cut + 1:]
    if os.geteuid() != 0:
        sys.stderr.write("kernel-tuning/experiment: needs root to set %s\n" % a.knob)
        return 1
    a.out = a.out or os.path.join(ROOT, "kernel-tuning", "results", "%s-%s" % (
        a.knob.replace(",", "+"), time.strftime("%Y%m%d-%H%M%S")))
    os.makedirs(a.out, exist_ok=True)
    rows = []
    try:
        knobs = a.knob.split(",")
        for v in a.values:
            values_for(knobs, v)
        # SIGTERM unwinds like Ctrl-C: run_value's finally puts the knobs back.
        signal.signal(signal.SIGTERM, interrupt)
        for rnd in range(a.repeat):
            for v in a.values:
                r = run_value(a, v, flood_args, rnd + 1)
                r["round"] = rnd + 1
                rows.append(r)
                if a.pause > 0:
                    time.sleep(a.pause)
    except KeyboardInterrupt:
        sys.stderr.write("kernel-tuning/experiment: interrupted (%s back to the old values)\n"
                         % a.knob)
        return 130
    except (RuntimeError, OSError, ValueError) as e:
        # run_value has put the knob back already.
        sys.stderr.write("kernel-tuning/experiment: %s (%s is back to its old value)\n"
                         % (e, a.knob))
        return 1
    result = {"knob": a.knob, "values": a.values, "flood_args": flood_args,
              "server": [a.server_bin] + a.server_args.split(), "runs": rows,
              "medians": medians(rows)}
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(table(a.knob, rows))
    with open(os.path.join(a.out, "chart.svg"), "w") as f:
        f.write(svg(a.knob, medians(rows)))
    print(table(a.knob, rows))
    print("results: %s/{results.json,table.md,chart.svg}" % a.out)
    return 0
