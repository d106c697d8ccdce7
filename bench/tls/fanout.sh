#!/usr/bin/env bash
# Fan-out over TLS against plaintext, in the same run: one edgecomet (--workers 2, both
# listeners), flood with N subscribers on one channel over ws:// and then over wss://,
# alternately, R rounds; each flood run sends B broadcasts of SIZE bytes (one message at a time:
# the next when everyone has the last) and reports the time from publish to the last delivery.
# Prints per run the median broadcast time and deliveries/s (N / median), then the medians per
# scheme and the ratio wss/ws.
#
# Usage: bench/tls/fanout.sh [N=10000] [ROUNDS=3] [BROADCASTS=10] [SIZE=128]
# Needs the release binaries (cargo build --release -p edgecomet -p edgecomet-flood), the
# openssl CLI and jq. flood decrypts on the same machine: its TLS work is in the figure too.
set -euo pipefail
cd "$(dirname "$0")/../.."
N="${1:-10000}"
ROUNDS="${2:-3}"
BROADCASTS="${3:-10}"
SIZE="${4:-128}"
dir=$(mktemp -d)
srv=""
cleanup() {
    [ -n "$srv" ] && kill "$srv" 2>/dev/null && wait "$srv" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT
ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${ec[@]}" -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req "${ec[@]}" -keyout "$dir/key.pem" -out "$dir/srv.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/ext.cnf"
openssl x509 -req -in "$dir/srv.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -out "$dir/cert.pem" -days 2 -extfile "$dir/ext.cnf" 2>/dev/null

echo "commit $(git rev-parse --short HEAD), $(nproc) cores, $(uname -r)"
echo "+ target/release/edgecomet --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 --workers 2 --ws-ping-interval 0 --tls-cert CERT --tls-key KEY"
target/release/edgecomet --listen 127.0.0.1:0 --tls-listen 127.0.0.1:0 --workers 2 \
    --ws-ping-interval 0 --tls-cert "$dir/cert.pem" --tls-key "$dir/key.pem" 2>"$dir/server.log" &
srv=$!
for _ in $(seq 1 100); do
    grep -q "listening on .* worker" "$dir/server.log" && break
    sleep 0.05
done
plain=$(sed -n 's/.*listening on \([0-9.:]*\) and.*/\1/p' "$dir/server.log")
tls=$(sed -n 's/.* and \([0-9.:]*\) (TLS).*/\1/p' "$dir/server.log")
declare -A rates
for r in $(seq 1 "$ROUNDS"); do
    for scheme in ws wss; do
        if [ "$scheme" = ws ]; then url="ws://$plain/sub/fan"; extra=(); else url="wss://$tls/sub/fan"; extra=(--ca "$dir/ca.pem"); fi
        cmd=(target/release/flood --url "$url" "${extra[@]}" --conns "$N" --rate max
            --broadcasts "$BROADCASTS" --size "$SIZE" --duration 1 --json "$dir/$scheme-$r.json")
        [ "$r" = 1 ] && echo "+ ${cmd[*]}"
        "${cmd[@]}" >"$dir/$scheme-$r.log" 2>&1 || { echo "flood failed:"; tail -5 "$dir/$scheme-$r.log"; exit 1; }
        med=$(jq -r '.broadcasts.secs_to_all_median' "$dir/$scheme-$r.json")
        rate=$(awk -v n="$N" -v s="$med" 'BEGIN { printf "%.0f", n / s }')
        rates[$scheme]+="$rate "
        echo "round $r $scheme: median broadcast $(awk -v s="$med" 'BEGIN { printf "%.1f", s * 1000 }') ms, $rate deliveries/s"
    done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
ws=$(echo "${rates[ws]}" | median)
wss=$(echo "${rates[wss]}" | median)
echo "fanout: $N subscribers, $SIZE-byte messages, medians of $ROUNDS runs x $BROADCASTS broadcasts: ws $ws deliveries/s, wss $wss deliveries/s, ratio $(awk -v a="$wss" -v b="$ws" 'BEGIN { printf "%.2f", a / b }')"
