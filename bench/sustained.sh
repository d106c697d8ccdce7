#!/usr/bin/env bash
# Sustained fan-out (issue 20): N WebSocket subscribers on one channel, RATE messages/s of SIZE
# bytes published for DURATION seconds (N × RATE deliveries/s asked), against `edgecomet
# --workers 2` on loopback. The configurations alternate within each round (1,000 then 10,000
# subscribers, ROUNDS times), each run against a fresh server. Per run: deliveries/s, lost,
# latency p50/p99/max (flood measures it from each message's scheduled send time), how the
# publisher kept its schedule (max lag, late sends, waits for a full pipeline), and over a
# window of the hold (from 2 s after every subscriber is open, WINDOW seconds): the server's and
# flood's CPU (in cores) and the server's write syscalls (write, writev, sendto, sendmsg; from
# the syscall tracepoints with `perf stat`) against the messages it delivered in that window
# (`/stats` messages_out). Then the medians per configuration.
#
# Usage: bench/sustained.sh [ROUNDS=3] [DURATION=20] [SIZE=128]
# Environment: CONFIGS ("1000 10000"), RATE (100), PIPELINE (64: flood's --publish-pipeline),
# WINDOW (10, at most DURATION - 4), SERVER_ARGS (extra edgecomet flags), FLOOD_ARGS (extra
# flood flags, e.g. --procs 2), OUT (a directory that
# keeps every run's files; default: a temporary one, removed).
# Needs the release binaries (cargo build --release -p edgecomet -p edgecomet-flood) and
# python3; perf for the write counts (without it they are n/a). Loopback only; every run is
# bounded (flood stops after DURATION plus its drain; the script waits for it at most
# DURATION + 90 s) and the script stops every process it started, also on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${2:-20}"
SIZE="${3:-128}"
CONFIGS="${CONFIGS:-1000 10000}"
RATE="${RATE:-100}"
PIPELINE="${PIPELINE:-64}"
WINDOW="${WINDOW:-10}"
SERVER_ARGS="${SERVER_ARGS:-}"
FLOOD_ARGS="${FLOOD_ARGS:-}"
if [ "$WINDOW" -gt $((DURATION - 4)) ]; then
    echo "WINDOW ($WINDOW) must be at most DURATION - 4 ($((DURATION - 4)))" >&2
    exit 2
fi
for b in target/release/edgecomet target/release/flood; do
    [ -x "$b" ] || { echo "$b missing: cargo build --release -p edgecomet -p edgecomet-flood" >&2; exit 2; }
done
if [ -n "${OUT:-}" ]; then
    dir="$OUT"
    mkdir -p "$dir"
    keep=1
else
    dir=$(mktemp -d)
    keep=0
fi
srv=""
fl=""
cleanup() {
    [ -n "$fl" ] && kill -INT "$fl" 2>/dev/null && sleep 1 && kill -KILL "$fl" 2>/dev/null
    [ -n "$srv" ] && kill "$srv" 2>/dev/null && { wait "$srv" 2>/dev/null || true; }
    [ "$keep" = 0 ] && rm -rf "$dir"
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM
perf_ok=0
if command -v perf >/dev/null && perf stat -e syscalls:sys_enter_writev true >/dev/null 2>&1; then
    perf_ok=1
fi
tck=$(getconf CLK_TCK)

# CPU ticks (user + system) of the given processes and their children (flood's workers).
ticks() {
    local total=0 p
    for p in "$@" $(for q in "$@"; do pgrep -P "$q" || true; done); do
        if [ -r "/proc/$p/stat" ]; then
            total=$((total + $(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat")))
        fi
    done
    echo "$total"
}
# The server's messages_out, summed over its workers.
delivered() {
    python3 -c 'import json, sys, urllib.request
s = json.load(urllib.request.urlopen("http://" + sys.argv[1] + "/stats", timeout=5))
print(sum(w["messages_out"] for w in s["workers"]))' "$1"
}
# The server's publish-to-write histogram (publish read to this worker's last write of the
# message; one observation per message per worker), cumulative buckets summed over workers, JSON.
buckets() {
    python3 -c 'import collections, json, re, sys, urllib.request
b = collections.Counter()
for l in urllib.request.urlopen("http://" + sys.argv[1] + "/metrics", timeout=5).read().decode().splitlines():
    m = re.match(r"edgecomet_publish_write_seconds_bucket\{worker=\"\d+\",le=\"([^\"]+)\"\} (\d+)", l)
    if m:
        b[m.group(1)] += int(m.group(2))
print(json.dumps(b))' "$1"
}
subscribed() {
    python3 -c 'import json, sys, urllib.request
s = json.load(urllib.request.urlopen("http://" + sys.argv[1] + "/stats", timeout=5))
print(sum(w["conns_ws_sub"] for w in s["workers"]))' "$1"
}

echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src flood-client || echo ' (with uncommitted changes)'), $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "+ target/release/edgecomet --listen 127.0.0.1:0 --workers 2 $SERVER_ARGS"
echo "+ target/release/flood --url ws://ADDR/sub/sustained --conns N --publish-rate $RATE --size $SIZE --publish-pipeline $PIPELINE --duration ${DURATION}s $FLOOD_ARGS --json FILE"
echo "window: ${WINDOW} s from 2 s after all N are open; perf write counts: $([ $perf_ok = 1 ] && echo yes || echo 'n/a (no perf)')"
: >"$dir/rows.jsonl"
for r in $(seq 1 "$ROUNDS"); do
    for n in $CONFIGS; do
        tag="n$n-r$r"
        # (Made here: the background job's redirection is done in the child, maybe after sed.)
        : >"$dir/$tag-server.log"
        # shellcheck disable=SC2086
        target/release/edgecomet --listen 127.0.0.1:0 --workers 2 $SERVER_ARGS >"$dir/$tag-server.log" 2>&1 &
        srv=$!
        addr=""
        for _ in $(seq 1 100); do
            addr=$(sed -n 's/^edgecomet: listening on \([0-9.:]*\) .*/\1/p' "$dir/$tag-server.log" || true)
            [ -n "$addr" ] && break
            sleep 0.05
        done
        [ -n "$addr" ] || { echo "the server did not start:"; cat "$dir/$tag-server.log"; exit 1; }
        load=$(cut -d' ' -f1 /proc/loadavg)
        # shellcheck disable=SC2086
        target/release/flood --url "ws://$addr/sub/sustained" --conns "$n" --publish-rate "$RATE" \
            --size "$SIZE" --publish-pipeline "$PIPELINE" --duration "${DURATION}s" $FLOOD_ARGS \
            --json "$dir/$tag.json" >"$dir/$tag-flood.log" 2>&1 &
        fl=$!
        for _ in $(seq 1 600); do
            [ "$(subscribed "$addr")" -ge "$n" ] && break
            kill -0 "$fl" 2>/dev/null || break
            sleep 0.1
        done
        sleep 2
        c0=$(ticks "$srv")
        f0=$(ticks "$fl")
        d0=$(delivered "$addr")
        b0=$(buckets "$addr")
        t0=$(date +%s.%N)
        if [ $perf_ok = 1 ]; then
            perf stat -x, -e syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg \
                -p "$srv" -o "$dir/$tag-perf.csv" sleep "$WINDOW" 2>/dev/null
        else
            sleep "$WINDOW"
        fi
        t1=$(date +%s.%N)
        c1=$(ticks "$srv")
        f1=$(ticks "$fl")
        d1=$(delivered "$addr")
        b1=$(buckets "$addr")
        writes=null
        if [ -s "$dir/$tag-perf.csv" ]; then
            writes=$(awk -F, '/syscalls:/ { s += $1 } END { print s + 0 }' "$dir/$tag-perf.csv")
        fi
        # flood stops by itself after DURATION and its drain; bounded here too.
        for _ in $(seq 1 $(((DURATION + 90) * 10))); do
            kill -0 "$fl" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$fl" 2>/dev/null; then
            echo "flood did not stop: interrupting it"
            kill -INT "$fl"
        fi
        wait "$fl" || true
        fl=""
        kill "$srv"
        wait "$srv" || true
        srv=""
        [ -s "$dir/$tag.json" ] || { echo "flood wrote no report:"; tail -5 "$dir/$tag-flood.log"; exit 1; }
        python3 - "$dir/$tag.json" "$n" "$r" "$load" "$t0" "$t1" "$c0" "$c1" "$f0" "$f1" "$d0" "$d1" \
            "$writes" "$tck" "$b0" "$b1" >>"$dir/rows.jsonl" <<'EOF'
import json, sys
f, n, r, load, t0, t1, c0, c1, f0, f1, d0, d1, writes, tck, b0, b1 = sys.argv[1:]
j = json.load(open(f))
b0, b1 = json.loads(b0), json.loads(b1)
les = sorted((float(k), k) for k in b1 if k != "+Inf")
count = b1.get("+Inf", 0) - b0.get("+Inf", 0)
def server_q(q):
    # The upper bound (ms) of the bucket that holds quantile q of the window's observations.
    for v, k in les:
        if count and b1[k] - b0.get(k, 0) >= q * count:
            return v * 1000
    return None
secs = float(t1) - float(t0)
ps = j.get("publish_schedule") or {}
dw = int(d1) - int(d0)
w = None if writes == "null" else int(writes)
print(json.dumps({
    "n": int(n), "round": int(r), "load1": float(load),
    "deliveries_per_sec": j["deliveries_per_sec"], "lost": j["lost"],
    "expected": j["expected_deliveries"], "deliveries": j["deliveries"],
    "p50_ms": j["latency_us"]["p50"] / 1000, "p99_ms": j["latency_us"]["p99"] / 1000,
    "max_ms": j["latency_us"]["max"] / 1000,
    "lag_max_ms": (ps.get("lag_us") or {}).get("max", 0) / 1000,
    "late": ps.get("late"), "sent": ps.get("sent"),
    "waited": ps.get("waited_for_pipeline"),
    "server_cpu": (int(c1) - int(c0)) / int(tck) / secs,
    "flood_cpu": (int(f1) - int(f0)) / int(tck) / secs,
    "window_secs": secs, "window_deliveries": dw, "writes": w,
    "deliveries_per_write": (dw / w) if w else None,
    "server_p50_ms_le": server_q(0.50), "server_p99_ms_le": server_q(0.99),
}))
EOF
        tail -1 "$dir/rows.jsonl" | python3 -c 'import json, sys
x = json.loads(sys.stdin.read())
dpw = "n/a" if x["deliveries_per_write"] is None else "%.2f" % x["deliveries_per_write"]
print("round %d, %5d subscribers: %8.0f deliveries/s, lost %d, latency p50 %.1f p99 %.1f max %.1f ms, "
      "publish lag max %.1f ms (%s of %s late, %s waited), CPU server %.2f flood %.2f, "
      "%s deliveries per write, server publish-to-write p50 <= %s p99 <= %s ms, load %.2f" % (
      x["round"], x["n"], x["deliveries_per_sec"], x["lost"],
      x["p50_ms"], x["p99_ms"], x["max_ms"], x["lag_max_ms"], x["late"], x["sent"], x["waited"],
      x["server_cpu"], x["flood_cpu"], dpw, x["server_p50_ms_le"], x["server_p99_ms_le"], x["load1"]))'
    done
done
python3 - "$dir/rows.jsonl" "$RATE" "$SIZE" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rate, size = sys.argv[2], sys.argv[3]
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(v, f):
    return "n/a" if v is None else f % v
print()
print(f"medians ({rate} messages/s of {size} B, one channel, edgecomet --workers 2):")
cols = ["subscribers", "runs", "asked/s", "deliveries/s", "lost", "p50 ms", "p99 ms", "max ms",
        "pub lag max ms", "late pubs", "server CPU", "flood CPU", "deliv/write",
        "server p99 ms ≤", "load1"]
print("| " + " | ".join(cols) + " |")
print("|" + "---|" * len(cols))
for n in sorted({r["n"] for r in rows}):
    rs = [r for r in rows if r["n"] == n]
    print("| " + " | ".join([
        f"{n:,}", str(len(rs)), f"{n * float(rate):,.0f}",
        f"{med([r['deliveries_per_sec'] for r in rs]):,.0f}",
        str(sum(r["lost"] for r in rs)),
        fmt(med([r["p50_ms"] for r in rs]), "%.1f"), fmt(med([r["p99_ms"] for r in rs]), "%.1f"),
        fmt(med([r["max_ms"] for r in rs]), "%.1f"), fmt(med([r["lag_max_ms"] for r in rs]), "%.1f"),
        fmt(med([r["late"] for r in rs]), "%.0f"),
        fmt(med([r["server_cpu"] for r in rs]), "%.2f"), fmt(med([r["flood_cpu"] for r in rs]), "%.2f"),
        fmt(med([r["deliveries_per_write"] for r in rs]), "%.2f"),
        fmt(med([r["server_p99_ms_le"] for r in rs]), "%g"),
        fmt(med([r["load1"] for r in rs]), "%.2f"),
    ]) + " |")
print("(lost: the sum over the runs; latency from each message's scheduled send time to its "
      "read by flood; CPU in cores over the window; deliv/write: the server's messages_out over "
      "its write syscalls in the window; server p99: the bucket bound of the server's own "
      "publish-to-last-write histogram in the window, which leaves out the publisher and flood)")
EOF
[ "$keep" = 1 ] && echo "files in $dir"
exit 0
