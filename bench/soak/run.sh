#!/usr/bin/env bash
# Soak: one edgecomet process under 15,000 connections for M minutes (default 30), with a
# publish load, 10% slow readers and connection churn; server memory, open files and the /stats
# gauges sampled every 10 s and fitted for a trend. Not part of the test command.
#
# Usage: bench/soak/run.sh [--minutes M] [--out DIR] [--skip-minutes S] [--no-netns]
#
# What runs (each flood is its own process: flood refuses --churn with --publish-rate, since a
# replacement connection misses what was published before it and loss could not be counted):
#   - edgecomet --workers 2 --max-queued-bytes 262144 on 127.0.0.1:PORT (other flags default:
#     WebSocket pings every 30 s of silence, pong timeout 10 s, history 64 per channel);
#   - flood A: A_CONNS (10,000) WebSocket subscribers on A_CHANNELS (10) channels, a publish load
#     of PUBLISH_RATE (20) messages/s of SIZE (1024) bytes, SLOW (10%) of the connections slow
#     readers reading SLOW_READ_RATE (512) B/s each (a quarter of what they are sent): loss,
#     duplication and order are checked for every other connection, the keep-up readers;
#   - flood B: B_CONNS (5,000) B_TRANSPORT (sse) subscribers on B_CHANNELS (10) other channels,
#     CHURN (50) of them closed and replaced each second, no publishing;
#   - a sampler (bench/soak/sampler.py) every INTERVAL (10) s: the server's RSS, PSS, open files,
#     threads, CPU time, the namespace's TCP socket counts and /stats (total and hub).
# Both floods hold for M minutes after their ramp (a few seconds), nice'd by NICE (5).
#
# Network namespace: as root (and without --no-netns) everything after the build runs in a
# network namespace of its own (unshare --net): its own loopback (no port shared with anything
# else on the machine) and its own TCP buffer limits, set to the kernel-tuning profile
# c1m-server's (tcp_rmem = tcp_wmem = "4096 16384 262144") without touching the machine's. With
# this machine's default 4 MiB send buffer max the kernel, not edgecomet, holds what a slow reader
# has not read (kernel-tuning/RESULTS.md, "TCP buffer sizes"), so --max-queued-bytes would never
# act. Without root, or with --no-netns, the machine's own namespace and sysctls are used.
#
# Writes to DIR (default bench/soak/results): run.log (everything printed), server.log,
# flood-a.log, flood-b.log (every 30th progress line), flood-a.json, flood-b.json (flood's
# reports), before.jsonl (one sample before the floods), samples.jsonl (t = seconds since the
# floods started), after.jsonl (one sample after they closed), meta.json (commands, commit,
# machine, exit statuses), summary.md (bench/soak/summary.py: the load, loss, slow readers,
# churn, and for every series first/last/min/max/mean and its least-squares slope per hour over
# t = skip..M minutes with a verdict).
#
# Environment: PORT (18400), A_CONNS, A_CHANNELS, PUBLISH_RATE, SIZE, SLOW, SLOW_READ_RATE,
# B_CONNS, B_CHANNELS, B_TRANSPORT, CHURN, RATE (2000 new connections/s per flood in the ramp),
# INTERVAL, NICE, SERVER_ARGS (more edgecomet flags).
# Exit status: 0 if nothing was lost, duplicated or reordered for the keep-up readers, no
# connection failed and every process lived to the end (summary.py says what counts); 1 if not;
# 2 if a precondition failed or the build failed.
set -uo pipefail
cd "$(dirname "$0")/../.."

MINUTES=30
OUT=bench/soak/results
SKIP_MINUTES=2
NETNS=1
ARGS="${SOAK_ARGS-$*}"
while [ $# -gt 0 ]; do
    case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --skip-minutes) SKIP_MINUTES="$2"; shift 2 ;;
    --no-netns) NETNS=0; shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak: unknown argument $1 (--help)" >&2; exit 2 ;;
    esac
done
PORT="${PORT:-18400}"
A_CONNS="${A_CONNS:-10000}"
A_CHANNELS="${A_CHANNELS:-10}"
PUBLISH_RATE="${PUBLISH_RATE:-20}"
SIZE="${SIZE:-1024}"
SLOW="${SLOW:-0.1}"
SLOW_READ_RATE="${SLOW_READ_RATE:-512}"
B_CONNS="${B_CONNS:-5000}"
B_CHANNELS="${B_CHANNELS:-10}"
B_TRANSPORT="${B_TRANSPORT:-sse}"
CHURN="${CHURN:-50}"
RATE="${RATE:-2000}"
INTERVAL="${INTERVAL:-10}"
NICE="${NICE:-5}"
SERVER_ARGS="${SERVER_ARGS:-}"
TCP_BUF="4096 16384 262144"

fail() {
    echo "soak: $*" >&2
    exit 2
}
[[ "$MINUTES" =~ ^[0-9]+$ ]] && [ "$MINUTES" -ge 1 ] || fail "--minutes takes a whole number >= 1"
HOLD=$((MINUTES * 60))
SKIP=$(awk -v m="$SKIP_MINUTES" 'BEGIN { printf "%d", m * 60 }')
[ "$SKIP" -lt "$HOLD" ] || fail "--skip-minutes must be less than --minutes"

# ---- Outside the namespace: preconditions, machine, build; then re-run inside.
if [ -z "${SOAK_INNER:-}" ]; then
    for c in cargo python3 jq ss; do
        command -v "$c" >/dev/null || fail "needs $c"
    done
    # The commit before anything is written (results in the tree would make it "dirty").
    # shellcheck source=bench/machine.sh
    . bench/machine.sh
    export SOAK_COMMIT="$COMMIT"
    mkdir -p "$OUT" || fail "cannot create $OUT"
    rm -f "$OUT"/{run.log,server.log,flood-a.log,flood-b.log,flood-a.json,flood-b.json} \
        "$OUT"/{before.jsonl,samples.jsonl,after.jsonl,meta.json,summary.md}
    exec > >(tee "$OUT/run.log") 2>&1
    print_machine
    echo "+ cargo build --release -p edgecomet -p edgecomet-flood"
    cargo build --release -p edgecomet -p edgecomet-flood || exit 2
    export SOAK_INNER=1
    if [ "$NETNS" = 1 ] && [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null; then
        echo "+ unshare --net (a network namespace for this run)"
        exec unshare --net env SOAK_NETNS=1 SOAK_ARGS="$ARGS" bash "$0" --minutes "$MINUTES" \
            --out "$OUT" --skip-minutes "$SKIP_MINUTES"
    fi
    [ "$NETNS" = 1 ] && echo "soak: not root (or no unshare): running in the machine's network namespace"
    export SOAK_NETNS=0
fi

# ---- The run.
t_start=$(date +%s.%N)
say() {
    echo "[$(awk -v a="$t_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%6.1f", b - a }') s] $*"
}
netns_desc=""
if [ "${SOAK_NETNS:-0}" = 1 ]; then
    ip link set lo up || fail "cannot bring up lo in the namespace"
    sysctl -q -w net.ipv4.tcp_rmem="$TCP_BUF" net.ipv4.tcp_wmem="$TCP_BUF" \
        net.ipv4.tcp_max_syn_backlog=4096 ||
        fail "cannot set the namespace's tcp_rmem/tcp_wmem"
    netns_desc="unshare --net; tcp_rmem = tcp_wmem = $TCP_BUF"
    say "network namespace: $netns_desc"
fi
for s in net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.ip_local_port_range net.core.somaxconn \
    net.ipv4.tcp_max_syn_backlog; do
    echo "sysctl:  $s = $(sysctl -n "$s" | tr '\t' ' ')"
done
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((A_CONNS + B_CONNS + 500)) ] ||
    fail "the server needs $((A_CONNS + B_CONNS + 500)) open files; the limit is $(ulimit -n)"
[ "$(ss -Hltn "sport = :$PORT" | wc -l)" -eq 0 ] || fail "port $PORT is in use (PORT=)"

server=""
flood_a=""
flood_b=""
sampler=""
flood_a_status=""
flood_b_status=""
server_exit=""
server_alive=false
# Stops a flood (its own session: setsid): SIGINT lets it write its report; then SIGKILL to the
# session (the coordinator and its worker processes).
stop_flood() {
    local pid="$1"
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -INT "$pid" 2>/dev/null
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null
}
stop_server() {
    [ -n "$server" ] && kill -0 "$server" 2>/dev/null || return 0
    kill -TERM "$server"
    for _ in $(seq 150); do
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$server" 2>/dev/null; then
        say "the server did not exit 15 s after SIGTERM: SIGKILL"
        kill -KILL "$server"
    fi
    wait "$server" 2>/dev/null
    server_exit=$?
    server=""
}
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    local p running=""
    for p in $flood_a $flood_b $sampler $server; do
        kill -0 "$p" 2>/dev/null && running=1
    done
    [ -n "$running" ] && say "stopping what is still running"
    stop_flood "$flood_a"
    stop_flood "$flood_b"
    [ -n "$flood_a" ] && kill -KILL -- "-$flood_a" 2>/dev/null
    [ -n "$flood_b" ] && kill -KILL -- "-$flood_b" 2>/dev/null
    [ -n "$sampler" ] && kill -TERM "$sampler" 2>/dev/null && wait "$sampler" 2>/dev/null
    stop_server
    exit "$status"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

server_cmd=(target/release/edgecomet --listen "127.0.0.1:$PORT" --workers 2
    --max-queued-bytes 262144)
# shellcheck disable=SC2206
[ -n "$SERVER_ARGS" ] && server_cmd+=($SERVER_ARGS)
echo "+ ${server_cmd[*]} &"
"${server_cmd[@]}" 2>"$OUT/server.log" &
server=$!
for _ in $(seq 100); do
    grep -q 'listening on' "$OUT/server.log" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$OUT/server.log"; server=""; fail "edgecomet did not start"; }
    sleep 0.1
done
grep -q 'listening on' "$OUT/server.log" || fail "edgecomet did not say it is listening"
say "$(head -1 "$OUT/server.log") (pid $server)"
stats_url="http://127.0.0.1:$PORT/stats"
sampler_cmd=(python3 bench/soak/sampler.py --pid "$server" --url "$stats_url")
"${sampler_cmd[@]}" --once --out "$OUT/before.jsonl" || fail "the sampler failed"

flood_common=(--rate "$RATE" --duration "$HOLD" --server-pid "$server" --connect-timeout 10)
flood_a_cmd=(target/release/flood --url "ws://127.0.0.1:$PORT/sub/soak" --transport ws
    --conns "$A_CONNS" --channels "$A_CHANNELS" --publish-rate "$PUBLISH_RATE" --size "$SIZE"
    --slow-readers "$SLOW" --slow-read-rate "$SLOW_READ_RATE" --source 127.0.0.2-127.0.0.3
    "${flood_common[@]}" --json "$OUT/flood-a.json")
flood_b_cmd=(target/release/flood --url "http://127.0.0.1:$PORT/sub/churn"
    --transport "$B_TRANSPORT" --conns "$B_CONNS" --channels "$B_CHANNELS" --churn "$CHURN"
    --source 127.0.0.4-127.0.0.5 "${flood_common[@]}" --json "$OUT/flood-b.json")
# Progress lines (one a second) are thinned to one in 30; the JSON report has everything.
thin() { awk '!/^\[/ || ++n % 30 == 1 { print; fflush() }'; }

t0=$(date +%s.%N)
"${sampler_cmd[@]}" --out "$OUT/samples.jsonl" --interval "$INTERVAL" --t0 "$t0" &
sampler=$!
echo "+ nice -n $NICE ${flood_a_cmd[*]} &"
setsid nice -n "$NICE" "${flood_a_cmd[@]}" > >(thin >"$OUT/flood-a.log") 2>&1 &
flood_a=$!
echo "+ nice -n $NICE ${flood_b_cmd[*]} &"
setsid nice -n "$NICE" "${flood_b_cmd[@]}" > >(thin >"$OUT/flood-b.log") 2>&1 &
flood_b=$!
say "floods started (A pid $flood_a, B pid $flood_b); holding $MINUTES min after the ramp"

# Watch: the server alive, a line a minute, and a deadline (the hold, plus the ramp and the
# floods' own drain and close) after which the floods are stopped.
deadline=$((HOLD + 180))
last_line=0
while :; do
    a_run=false
    b_run=false
    [ -n "$flood_a" ] && kill -0 "$flood_a" 2>/dev/null && a_run=true
    [ -n "$flood_b" ] && kill -0 "$flood_b" 2>/dev/null && b_run=true
    if ! $a_run && [ -n "$flood_a" ] && [ -z "$flood_a_status" ]; then
        wait "$flood_a"
        flood_a_status=$?
        say "flood A exited ($flood_a_status)"
    fi
    if ! $b_run && [ -n "$flood_b" ] && [ -z "$flood_b_status" ]; then
        wait "$flood_b"
        flood_b_status=$?
        say "flood B exited ($flood_b_status)"
    fi
    $a_run || $b_run || break
    if ! kill -0 "$server" 2>/dev/null; then
        wait "$server"
        server_exit=$?
        server=""
        say "THE SERVER IS GONE (exit $server_exit): stopping the floods"
        stop_flood "$flood_a"
        stop_flood "$flood_b"
        continue
    fi
    el=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%d", b - a }')
    if [ "$el" -ge "$deadline" ]; then
        say "the floods are still running $deadline s after their start: stopping them"
        stop_flood "$flood_a"
        stop_flood "$flood_b"
        continue
    fi
    if [ $((el - last_line)) -ge 60 ] && [ -s "$OUT/samples.jsonl" ]; then
        last_line=$el
        tail -1 "$OUT/samples.jsonl" | jq -r '"t=\(.t|floor) s: RSS \(.rss/1048576*10|round/10) MiB, PSS \((.pss//0)/1048576*10|round/10) MiB, open files \(.fds), ws \(.total.conns_ws_sub), sse \(.total.conns_sse), poll \(.total.conns_poll), closing \(.total.conns_closing), bytes_queued \(.total.bytes_queued), slow_consumers \(.total.slow_consumers), pong_timeouts \(.total.ws_pong_timeouts), messages_out \(.total.messages_out)"' 2>/dev/null |
            while read -r l; do say "$l"; done
    fi
    sleep 1
done
t_end=$(date +%s.%N)
kill -TERM "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
sampler=""

# After: the connection gauges back to idle (the sampler's own /stats request is the one HTTP
# connection left), then one more sample.
if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    server_alive=true
    for _ in $(seq 30); do
        n=$(curl -s --max-time 5 "$stats_url" | jq '.total | .conns_ws_sub + .conns_sse + .conns_poll + .conns_stream + .conns_closing + .conns_http' 2>/dev/null)
        [ "${n:-1}" -le 1 ] && break
        sleep 1
    done
    after_secs=$(awk -v a="$t_end" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    "${sampler_cmd[@]}" --once --out "$OUT/after.jsonl" --t0 "$t0"
    say "stopping the server (SIGTERM)"
    stop_server
    say "the server exited ($server_exit)"
fi
{ tail -c 2000 "$OUT/server.log" | grep -v '^$' | tail -5; } | sed 's/^/server: /'

jq -n --arg commit "$SOAK_COMMIT" --arg date "$(date -u +%Y-%m-%dT%H:%MZ)" \
    --arg args "$ARGS" --argjson minutes "$MINUTES" --argjson hold "$HOLD" --argjson skip "$SKIP" \
    --argjson interval "$INTERVAL" --arg netns "$netns_desc" \
    --arg server_cmd "${server_cmd[*]}" \
    --arg flood_a_cmd "nice -n $NICE ${flood_a_cmd[*]}" \
    --arg flood_b_cmd "nice -n $NICE ${flood_b_cmd[*]}" \
    --argjson a "${flood_a_status:-null}" --argjson b "${flood_b_status:-null}" \
    --argjson alive "$server_alive" --argjson sx "${server_exit:-null}" \
    --argjson after "${after_secs:-null}" \
    --arg nproc "$(nproc)" --arg cpu "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
    --arg kernel "$(uname -r)" --arg memory "$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" \
    --arg nofile "$(ulimit -Hn)" \
    '{commit: $commit, date: $date, args: $args, minutes: $minutes, hold_secs: $hold,
      skip_secs: $skip, interval: $interval, netns: $netns, server_cmd: $server_cmd,
      flood_a_cmd: $flood_a_cmd, flood_b_cmd: $flood_b_cmd, flood_a_status: $a,
      flood_b_status: $b, server_alive_at_end: $alive, server_exit: $sx, after_secs: $after,
      machine: {nproc: $nproc, cpu: $cpu, kernel: $kernel, memory: $memory, nofile_hard: $nofile}}' \
    >"$OUT/meta.json"
echo
python3 bench/soak/summary.py "$OUT"
status=$?
say "soak: $([ "$status" -eq 0 ] && echo PASS || echo FAIL)"
[ "$status" -eq 0 ] || exit 1
exit 0
