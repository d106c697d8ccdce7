#!/usr/bin/env bash
# edgecomet vs nginx + nchan at 15,000 WebSocket connections, measured with flood.
#
# Builds the release binaries, then for each server in turn: starts it on 127.0.0.1, runs flood
# (15,000 connections at 5,000/s, held 10 s while 100 messages/s of 64 bytes go out over 10
# channels), stops it. Prints the machine, the commit, the versions, the exact commands and a
# side-by-side table. JSON reports: target/compare/edgecomet.json and target/compare/nchan.json;
# server logs next to them.
#
# Environment: PORT1 (edgecomet, default 18081), PORT2 (nginx, default 18082), PUBLISH_RATE
# (default 100), FLOOD_ARGS (appended to both flood commands).
# Needs: nginx and libnginx-mod-nchan (apt-get install nginx libnginx-mod-nchan), jq.
# Exit status: 0 if both flood runs were clean (all connections, nothing lost), 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."

PORT1="${PORT1:-18081}"
PORT2="${PORT2:-18082}"
OUT=target/compare
CONF=bench/compare/nchan.conf
NCHAN_SO=/usr/lib/nginx/modules/ngx_nchan_module.so
PUBLISH_RATE="${PUBLISH_RATE:-100}"
FLOOD_COMMON=(--conns 15000 --rate 5000 --duration 10 --publish-rate "$PUBLISH_RATE" --size 64
    --channels 10)

server_pid=""
prefix=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ -n "$prefix" ]; then
        rm -rf "$prefix"
    fi
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

listening() {
    [ -n "$(ss -Hltn "sport = :$1")" ]
}

# Waits until something listens on port $1 while process $2 is alive (10 s at most).
wait_listen() {
    local i
    for i in $(seq 100); do
        if ! kill -0 "$2" 2>/dev/null; then
            echo "server (pid $2) exited before listening on :$1" >&2
            return 1
        fi
        if listening "$1"; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on :$1 after 10 s" >&2
    return 1
}

# CPU seconds (user + system, all threads) used so far by process $1 and its child processes
# (nginx's workers).
cpu_secs() {
    local tck p total=0
    tck=$(getconf CLK_TCK)
    for p in "$1" $(pgrep -P "$1" || true); do
        # Fields 14 and 15 of /proc/PID/stat (after the command in parentheses); a process
        # that is gone counts as 0.
        total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null |
            awk '{ t = $12 + $13 } END { print t + 0 }')))
    done
    awk -v t="$total" -v k="$tck" 'BEGIN { printf "%.1f", t / k }'
}

stop_server() {
    local cpu
    cpu=$(cpu_secs "$server_pid")
    echo "server CPU: $cpu s user+system since it started ($1)"
    echo "$cpu" >"$OUT/$1.cpu"
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=""
}

for p in "$PORT1" "$PORT2"; do
    if listening "$p"; then
        echo "port $p is in use; pick another with PORT1=/PORT2=" >&2
        exit 2
    fi
done
command -v nginx >/dev/null && [ -f "$NCHAN_SO" ] || {
    echo "needs nginx and $NCHAN_SO: apt-get install nginx libnginx-mod-nchan" >&2
    exit 2
}
command -v jq >/dev/null || { echo "needs jq" >&2; exit 2; }

t0=$(date +%s.%N)
# shellcheck source=bench/machine.sh
. bench/machine.sh
commit="$COMMIT"

print_machine
echo "nginx:   $(nginx -v 2>&1 | sed 's/^nginx version: //')"
echo "nchan:   libnginx-mod-nchan $(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"

echo "== build"
run cargo build --release -p edgecomet -p edgecomet-flood
mkdir -p "$OUT"
rm -f "$OUT"/{edgecomet,nchan}.{json,cpu}
status=0

echo "== edgecomet on 127.0.0.1:$PORT1"
start=$(date +%s.%N)
echo "+ target/release/edgecomet --workers 2 --ws-ping-interval 0 --listen 127.0.0.1:$PORT1 &"
target/release/edgecomet --workers 2 --ws-ping-interval 0 --listen "127.0.0.1:$PORT1" \
    >"$OUT/edgecomet.log" 2>&1 &
server_pid=$!
wait_listen "$PORT1" "$server_pid"
# shellcheck disable=SC2086
run target/release/flood --url "ws://127.0.0.1:$PORT1/sub/flood" "${FLOOD_COMMON[@]}" \
    --json "$OUT/edgecomet.json" ${FLOOD_ARGS:-} || status=1
stop_server edgecomet
echo "(edgecomet took $(elapsed "$start") s)"

echo "== nginx + nchan on 127.0.0.1:$PORT2"
start=$(date +%s.%N)
prefix="$(mktemp -d /tmp/nchan-bench.XXXXXX)"
mkdir -p "$prefix/logs" "$prefix/tmp"
sed "s/127\.0\.0\.1:18082/127.0.0.1:$PORT2/" "$CONF" >"$prefix/nchan.conf"
echo "+ nginx -c $prefix/nchan.conf -p $prefix/ -e $prefix/logs/error.log -g 'daemon off;' &"
echo "  ($prefix/nchan.conf is $CONF with the port set to $PORT2)"
nginx -c "$prefix/nchan.conf" -p "$prefix/" -e "$prefix/logs/error.log" -g 'daemon off;' \
    >"$OUT/nchan.log" 2>&1 &
server_pid=$!
wait_listen "$PORT2" "$server_pid"
# shellcheck disable=SC2086
run target/release/flood --url "ws://127.0.0.1:$PORT2/sub/flood" "${FLOOD_COMMON[@]}" \
    --json "$OUT/nchan.json" ${FLOOD_ARGS:-} || status=1
stop_server nchan
cp "$prefix/logs/error.log" "$OUT/nchan-error.log"
echo "(nginx + nchan took $(elapsed "$start") s)"

echo "== comparison (commit $commit; per-connection figures are growth with all connections open)"
row() { # label, jq expression
    printf '%-28s %18s %18s\n' "$1" \
        "$(jq -r "$2" "$OUT/edgecomet.json" 2>/dev/null || echo n/a)" \
        "$(jq -r "$2" "$OUT/nchan.json" 2>/dev/null || echo n/a)"
}
printf '%-28s %18s %18s\n' "" edgecomet nginx+nchan
row "established" '"\(.conns_established) of \(.conns_target)"'
row "connect time (ramp_secs)" '.ramp_secs * 100 | round / 100'
row "connect rate /s" '.connect_rate_per_sec | round'
row "flood processes" '.params.procs'
row "server pids" '.server_pids | map(tostring) | join(",")'
row "server PSS B/conn" '.server_pss_bytes_per_conn // "n/a" | if type == "number" then round else . end'
row "server RSS B/conn" '.server_rss_bytes_per_conn // "n/a" | if type == "number" then round else . end'
row "kernel B/conn (both ends)" '.kernel_bytes_per_conn // "n/a" | if type == "number" then round else . end'
row "client B/conn" '.client_bytes_per_conn // "n/a" | if type == "number" then round else . end'
row "published (errors)" '"\(.published) (\(.publish_errors))"'
row "deliveries / expected" '"\(.deliveries) / \(.expected_deliveries)"'
row "lost / dup / reordered" '"\(.lost) / \(.duplicated) / \(.reordered)"'
row "latency p50 µs" '.latency_us.p50'
row "latency p90 µs" '.latency_us.p90'
row "latency p99 µs" '.latency_us.p99'
row "latency p99.9 µs" '.latency_us.p999'
row "latency max µs" '.latency_us.max'
printf '%-28s %18s %18s\n' "server CPU s (whole life)" \
    "$(cat "$OUT/edgecomet.cpu" 2>/dev/null || echo n/a)" "$(cat "$OUT/nchan.cpu" 2>/dev/null || echo n/a)"
row "errors" '.errors | to_entries | map(select(.value != 0) | "\(.key) \(.value)") | join(", ") | if . == "" then "none" else . end'
echo "== run-compare: $([ $status -eq 0 ] && echo PASS || echo FAIL) in $(elapsed "$t0") s"
exit $status
