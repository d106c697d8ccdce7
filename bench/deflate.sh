#!/usr/bin/env bash
# permessage-deflate against plain WebSocket, in the same run (issue 21's goals):
#
# 1. Idle cost: a fresh edgecomet (defaults, --workers 2), flood holds N_IDLE WebSocket
#    subscribers for a few seconds, with --deflate (every subscriber agreed) and without,
#    alternately, ROUNDS rounds; flood's server PSS per connection of each run.
# 2. Fan-out: a fresh edgecomet, flood with N_FAN subscribers on one channel and BROADCASTS
#    broadcasts of SIZE bytes of JSON (--json-payload: a price feed's lines, which compress like
#    one), one at a time (the next when everyone has the last), with --deflate and without,
#    alternately, ROUNDS rounds: the median time from publish to the last delivery, deliveries/s,
#    and the bytes on the wire per delivery (flood's count of frame bytes as received).
#
# Prints every run, then the medians per mode and the ratios deflate/plain. The compression
# time per message is criterion's (`cargo bench -p edgecomet-bench --bench proto --
# ws_deflate`): it is paid once per message, whatever the number of subscribers.
#
# Usage: bench/deflate.sh [N_FAN=10000] [ROUNDS=3] [BROADCASTS=20] [SIZE=1KiB] [N_IDLE=15000]
# Needs the release binaries (cargo build --release -p edgecomet -p edgecomet-flood) and jq.
set -euo pipefail
cd "$(dirname "$0")/.."
N_FAN="${1:-10000}"
ROUNDS="${2:-3}"
BROADCASTS="${3:-20}"
SIZE="${4:-1KiB}"
N_IDLE="${5:-15000}"
dir=$(mktemp -d)
srv=""
stop() {
    if [ -n "$srv" ]; then
        kill "$srv" 2>/dev/null || true
        wait "$srv" 2>/dev/null || true
        srv=""
    fi
}
cleanup() {
    stop
    rm -rf "$dir"
}
trap cleanup EXIT

# shellcheck source=bench/machine.sh
. bench/machine.sh
print_machine

start() {
    target/release/edgecomet --listen 127.0.0.1:0 --workers 2 --ws-ping-interval 0 \
        2>"$dir/server.log" &
    srv=$!
    for _ in $(seq 1 200); do
        grep -q "listening on" "$dir/server.log" && break
        sleep 0.05
    done
    addr=$(sed -n 's/.*listening on \([0-9.:]*\).*/\1/p' "$dir/server.log" | head -n 1)
    [ -n "$addr" ] || { echo "server did not start:"; cat "$dir/server.log"; exit 1; }
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

declare -A pss rate wire
echo "+ target/release/edgecomet --listen 127.0.0.1:0 --workers 2 --ws-ping-interval 0 (a fresh one per run)"
for r in $(seq 1 "$ROUNDS"); do
    for mode in plain deflate; do
        extra=()
        [ "$mode" = deflate ] && extra=(--deflate)
        start
        cmd=(target/release/flood --url "ws://$addr/sub/idle" "${extra[@]}" --conns "$N_IDLE"
            --rate max --duration 3 --json "$dir/idle-$mode-$r.json")
        [ "$r" = 1 ] && echo "+ ${cmd[*]}"
        "${cmd[@]}" >"$dir/idle-$mode-$r.log" 2>&1 ||
            { echo "flood failed:"; tail -5 "$dir/idle-$mode-$r.log"; exit 1; }
        stop
        b=$(jq -r '.server_pss_bytes_per_conn' "$dir/idle-$mode-$r.json")
        agreed=$(jq -r '.websocket.deflate_negotiated // 0' "$dir/idle-$mode-$r.json")
        pss[$mode]+="$b "
        echo "round $r idle $mode: $(printf '%.0f' "$b") B server PSS per subscriber ($agreed agreed to permessage-deflate)"
    done
    for mode in plain deflate; do
        extra=()
        [ "$mode" = deflate ] && extra=(--deflate)
        start
        cmd=(target/release/flood --url "ws://$addr/sub/fan" "${extra[@]}" --conns "$N_FAN"
            --rate max --broadcasts "$BROADCASTS" --size "$SIZE" --json-payload --duration 1
            --json "$dir/fan-$mode-$r.json")
        [ "$r" = 1 ] && echo "+ ${cmd[*]}"
        "${cmd[@]}" >"$dir/fan-$mode-$r.log" 2>&1 ||
            { echo "flood failed:"; tail -5 "$dir/fan-$mode-$r.log"; exit 1; }
        stop
        f="$dir/fan-$mode-$r.json"
        med=$(jq -r '.broadcasts.secs_to_all_median' "$f")
        lost=$(jq -r '.lost' "$f")
        per=$(jq -r '(.websocket.wire_bytes / ((.websocket.frames_compressed + .websocket.frames_uncompressed) | if . == 0 then 1 else . end))' "$f")
        dps=$(awk -v n="$N_FAN" -v s="$med" 'BEGIN { printf "%.0f", n / s }')
        rate[$mode]+="$dps "
        wire[$mode]+="$per "
        echo "round $r fan-out $mode: median broadcast $(awk -v s="$med" 'BEGIN { printf "%.1f", s * 1000 }') ms, $dps deliveries/s, $(printf '%.0f' "$per") wire bytes per delivery, lost $lost"
    done
done
for mode in plain deflate; do
    echo "$mode: idle $(echo "${pss[$mode]}" | median | xargs printf '%.0f') B per subscriber; fan-out $(echo "${rate[$mode]}" | median) deliveries/s, $(echo "${wire[$mode]}" | median | xargs printf '%.0f') wire bytes per delivery (medians of $ROUNDS)"
done
awk -v a="$(echo "${pss[deflate]}" | median)" -v b="$(echo "${pss[plain]}" | median)" \
    -v c="$(echo "${rate[deflate]}" | median)" -v d="$(echo "${rate[plain]}" | median)" \
    -v e="$(echo "${wire[deflate]}" | median)" -v f="$(echo "${wire[plain]}" | median)" \
    'BEGIN { printf "deflate/plain: idle %.2f, deliveries/s %.2f, wire bytes %.2f\n", a / b, c / d, e / f }'
