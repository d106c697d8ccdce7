#!/usr/bin/env bash
# 100,000 idle WebSocket connections to edgecomet on one box with a 20,000 open-files cap per
# process: NSERVERS edgecomet processes (one worker each) share one port through SO_REUSEPORT,
# so each holds about 100,000 / NSERVERS connections, and flood spreads its connections over ten
# source addresses (and as many client processes as its own open-files limit needs).
#
# Prints the machine, the commit, the exact commands and the key figures; flood's JSON report
# goes to target/compare/100k.json, the servers' logs to target/compare/100k-server-N.log.
#
# Environment: PORT (default 18090), NSERVERS (default 6), CONNS (default 100000),
# FLOOD_ARGS (appended to the flood command).
# Exit status: 0 if flood opened every connection cleanly, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT="${PORT:-18090}"
NSERVERS="${NSERVERS:-6}"
CONNS="${CONNS:-100000}"
OUT=target/compare
JSON="$OUT/100k.json"

pids=()
sampler=""
cleanup() {
    if [ -n "$sampler" ]; then
        kill "$sampler" 2>/dev/null || true
        wait "$sampler" 2>/dev/null || true
    fi
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

elapsed() {
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

run() {
    echo "+ $*"
    "$@"
}

# Sockets listening on the port.
listeners() {
    ss -Hltn "sport = :$PORT" | wc -l
}

if [ "$(listeners)" -ne 0 ]; then
    echo "port $PORT is in use; pick another with PORT=" >&2
    exit 2
fi
command -v jq >/dev/null || { echo "needs jq" >&2; exit 2; }

t0=$(date +%s.%N)
# shellcheck source=bench/machine.sh
. bench/machine.sh
commit="$COMMIT"

print_machine
for s in net.core.somaxconn net.ipv4.tcp_max_syn_backlog net.ipv4.ip_local_port_range fs.file-max; do
    echo "sysctl:  $s = $(sysctl -n "$s" | tr '\t' ' ')"
done

echo "== build"
run cargo build --release -p edgecomet -p edgecomet-flood
mkdir -p "$OUT"
rm -f "$JSON"

echo "== $NSERVERS edgecomet processes on 127.0.0.1:$PORT (SO_REUSEPORT)"
for i in $(seq 1 "$NSERVERS"); do
    echo "+ target/release/edgecomet --workers 1 --ws-ping-interval 0 --listen 127.0.0.1:$PORT &"
    target/release/edgecomet --workers 1 --ws-ping-interval 0 --listen "127.0.0.1:$PORT" \
        >"$OUT/100k-server-$i.log" 2>&1 &
    pids+=("$!")
done
for _ in $(seq 100); do
    [ "$(listeners)" -ge "$NSERVERS" ] && break
    sleep 0.1
done
for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "server pid $p exited; see $OUT/100k-server-*.log" >&2; exit 1; }
done
if [ "$(listeners)" -lt "$NSERVERS" ]; then
    echo "only $(listeners) of $NSERVERS sockets listen on :$PORT" >&2
    exit 1
fi
echo "server pids: ${pids[*]}"

# Highest open-fd count of each server process, sampled every 2 s (how evenly SO_REUSEPORT
# spread the connections, against the 20,000 cap).
fdmax="$OUT/100k-fdmax.txt"
(
    declare -A max
    while sleep 2; do
        line=""
        for p in "${pids[@]}"; do
            n=$(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l) || n=0
            [ "$n" -gt "${max[$p]:-0}" ] && max[$p]=$n
            line+="$p:${max[$p]} "
        done
        echo "$line" >"$fdmax"
    done
) &
sampler=$!

echo "== flood"
start=$(date +%s.%N)
status=0
# shellcheck disable=SC2086
run target/release/flood --url "ws://127.0.0.1:$PORT/sub/idle" --conns "$CONNS" \
    --source 127.0.0.2-127.0.0.11 --rate 20000 --duration 10 --json "$JSON" ${FLOOD_ARGS:-} \
    || status=1
echo "(flood took $(elapsed "$start") s)"
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=""
cleanup

echo "== key figures (commit $commit)"
if [ ! -f "$JSON" ]; then
    echo "no report ($JSON)"
    exit 1
fi
jq -r '
  def r: if type == "number" then round else "n/a" end;
  "established:        \(.conns_established) of \(.conns_target)",
  "ramp:               \(.ramp_secs * 100 | round / 100) s, \(.connect_rate_per_sec | round)/s",
  "client processes:   \(.params.procs) (open files each: \(.params.open_files_per_process))",
  "server pids:        \(.server_pids | map(tostring) | join(",")) (\(.server_pids | length) processes)",
  "server PSS/conn:    \(.server_pss_bytes_per_conn | r) B (summed over the server processes)",
  "server RSS/conn:    \(.server_rss_bytes_per_conn | r) B",
  "server PSS total:   \((.server_pss_bytes_open - .server_pss_bytes_before) / 1048576 | round) MiB grown, \(.server_pss_bytes_open / 1048576 | round) MiB with all open",
  "kernel/conn:        \(.kernel_bytes_per_conn | r) B (both ends)",
  "client/conn:        \(.client_bytes_per_conn | r) B",
  "errors:             \(.errors | to_entries | map(select(.value != 0) | "\(.key) \(.value)") | join(", ") | if . == "" then "none" else . end)"
' "$JSON"
echo "server fds (max):   $(cat "$fdmax" 2>/dev/null || echo n/a) (pid:count; cap 20000)"
echo "== run-100k: $([ $status -eq 0 ] && echo PASS || echo FAIL) in $(elapsed "$t0") s"
exit $status
