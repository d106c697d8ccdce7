#!/usr/bin/env bash
# One million concurrent WebSocket subscribers on this machine, all receiving broadcasts.
#
# The open-files cap here is 20,000 per process, so the million is held by NPROC edgecomet
# processes sharing one port (`--processes`, SO_REUSEPORT, scaled out through a redis-server of
# this run's own) and by as many flood worker processes as flood's own limit needs, connecting
# from NSOURCES loopback source addresses (each source x target pair has its own ephemeral ports;
# connect(2) slows to a crawl past half of them, so each source stays under half).
#
# Steps: build; apply the kernel-tuning profiles c1m-loadgen then c1m-server (the server's
# buffer sizes win; every old value saved and restored at the end, whatever happens); start
# redis-server and `edgecomet --processes NPROC`; run flood: CONNS connections as fast as
# accepted, BROADCASTS single messages each waited for until all CONNS have it, then a publish
# load of LOAD_RATE messages a second for LOAD_SECS seconds on the same channel; then SIGTERM to
# the launcher (every process drains), redis stopped, sysctls restored.
#
# Writes to OUT (default bench/c1m/results): flood.json (flood's report), flood.jsonl (its
# figures of every second), flood.svg (its charts of the run), stats.json (/stats of
# one process with the sums over all of them, read while every connection was open),
# stats-end.json (the same after flood closed its connections: the message counters),
# run.log (everything printed) and summary.md. (Connections per process come from /stats, not
# from listing /proc/PID/fd: a listing gives every socket a proc inode and a dentry, ~0.9 KB of
# kernel memory each, that stay cached. Something outside edgecomet on this machine lists the
# fds of every process anyway: see bench/RESULTS.md, One million WebSocket subscribers.)
#
# TLS=1: the subscribers connect over wss:// to --tls-listen on TLS_PORT (default PORT + 1), with
# a CA and an ECDSA P-256 certificate made for the run with the openssl CLI (in OUT/.tls, removed
# at the end); publishes and /stats stay on the plaintext port.
#
# NETNS=1 (the default) runs all of it in a network namespace of its own (`unshare --net`),
# made after the profiles are applied in the machine's namespace. c1m-server's
# net.ipv4.tcp_child_ehash_entries gives the new namespace an established-connections hash of
# 4,194,304 buckets; the machine's own is sized at boot from its memory (262,144 on this 24 GiB
# box) for the 2,000,000 sockets of a million loopback connections, and every received segment
# is looked up in it (bench/RESULTS.md, One million WebSocket subscribers). NETNS=0 runs in the
# machine's namespace. FLOOD_SCHED=batch runs flood under SCHED_BATCH (`chrt --batch`): a flood
# process woken by a delivery does not preempt the server process that sent it.
#
# SERVER=raw runs the same steps against `rawfan` (bench/src/bin/rawfan.rs) instead of
# edgecomet: NPROC processes that accept the upgrade and write each published message to every
# subscriber with one write(2) each in a tight loop, and nothing else (no redis-server, no
# /stats). It is the floor under edgecomet's broadcast on this machine: the same sockets, the
# same flood, only the server's own work taken away. Not with TLS=1.
#
# Needs root (sysctl), redis-server, jq, curl, and about 14 GiB of available memory; NETNS=1
# also unshare and ip (util-linux, iproute2) and Linux 6.1 or later.
# Environment: PORT (18300), REDIS_PORT (16390), NPROC (60), CONNS (1000000), NSOURCES (40),
# BROADCASTS (3), LOAD_RATE (0.15), LOAD_SECS (40), DRAIN (90), TLS (0), TLS_PORT, NETNS (1),
# FLOOD_SCHED (normal), SERVER (edgecomet), OUT.
# Exit status: 0 if every connection opened and every message reached everyone, 1 otherwise,
# 2 if a precondition failed.
set -uo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../.."

PORT="${PORT:-18300}"
REDIS_PORT="${REDIS_PORT:-16390}"
NPROC="${NPROC:-60}"
CONNS="${CONNS:-1000000}"
NSOURCES="${NSOURCES:-40}"
BROADCASTS="${BROADCASTS:-3}"
LOAD_RATE="${LOAD_RATE:-0.15}"
LOAD_SECS="${LOAD_SECS:-40}"
DRAIN="${DRAIN:-90}"
OUT="${OUT:-bench/c1m/results}"
TLS="${TLS:-0}"
TLS_PORT="${TLS_PORT:-$((PORT + 1))}"
NETNS="${NETNS:-1}"
FLOOD_SCHED="${FLOOD_SCHED:-normal}"
case "$FLOOD_SCHED" in
    normal | batch) ;;
    *) echo "c1m: FLOOD_SCHED is normal or batch, not $FLOOD_SCHED" >&2; exit 2 ;;
esac
SERVER="${SERVER:-edgecomet}"
case "$SERVER" in
    edgecomet) ;;
    raw) [ "$TLS" = 0 ] || { echo "c1m: SERVER=raw has no TLS" >&2; exit 2; } ;;
    *) echo "c1m: SERVER is edgecomet or raw, not $SERVER" >&2; exit 2 ;;
esac

# NETNS=1: the profiles are applied in the machine's namespace first (their global keys: fs.*,
# tcp_mem, netdev_max_backlog, nf_conntrack_max; and tcp_child_ehash_entries, which sizes the
# namespace made next), then this script runs again inside a network namespace of its own and
# applies them there for the per-namespace keys. The machine's values are restored at the end.
if [ "$NETNS" = 1 ] && [ -z "${C1M_IN_NETNS:-}" ]; then
    # shellcheck source=bench/machine.sh
    . bench/machine.sh
    [ "$(id -u)" -eq 0 ] || { echo "c1m: needs root: the kernel-tuning profiles write /proc/sys" >&2; exit 2; }
    for c in unshare ip; do
        command -v "$c" >/dev/null || { echo "c1m: NETNS=1 needs $c (NETNS=0 runs without)" >&2; exit 2; }
    done
    [ -e /proc/sys/net/ipv4/tcp_child_ehash_entries ] ||
        { echo "c1m: no net.ipv4.tcp_child_ehash_entries (Linux 6.1+): run with NETNS=0" >&2; exit 2; }
    mkdir -p "$OUT"
    machine_state="$OUT/.ktune-saved-machine.conf"
    [ ! -f "$machine_state" ] || { echo "c1m: $machine_state exists: a previous run did not restore; run kernel-tuning/restore --state $machine_state" >&2; exit 2; }
    trap '{ echo "restoring the machine namespace'"'"'s sysctls"
        kernel-tuning/restore --state "$machine_state" 2>&1 | sed "s/^/  /"; } | tee -a "$OUT/run.log"
        rm -f "$OUT/.machine-apply.log"' EXIT
    { kernel-tuning/apply --state "$machine_state" c1m-loadgen
      kernel-tuning/apply --state "$machine_state" c1m-server; } >"$OUT/.machine-apply.log" 2>&1
    C1M_IN_NETNS=1 C1M_COMMIT="$COMMIT" unshare --net -- "$self" &
    child=$!
    trap 'kill -TERM "$child" 2>/dev/null' INT TERM
    wait "$child"
    status=$?
    while [ "$status" -gt 128 ] && kill -0 "$child" 2>/dev/null; do
        wait "$child"
        status=$?
    done
    exit "$status"
fi
# Every step is bounded: the whole run stays under 15 minutes.
FLOOD_TIMEOUT=600

# The commit before anything is written (results written into the tree would make it "dirty").
# shellcheck source=bench/machine.sh
. bench/machine.sh
# (The run inside the namespace takes it from the one outside, which wrote its state file first.)
COMMIT="${C1M_COMMIT:-$COMMIT}"
commit="$COMMIT"

mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

t0=$(date +%s.%N)
elapsed() {
    awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}
say() {
    echo "[$(elapsed) s] $*"
}
run() {
    echo "+ $*"
    "$@"
}

ktune_state="$OUT/.ktune-saved.conf"
launcher=""
redis=""
flood_pid=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ -n "$flood_pid" ] && kill -0 "$flood_pid" 2>/dev/null; then
        say "stopping flood"
        kill -INT "$flood_pid" 2>/dev/null
        sleep 5
        kill -KILL "$flood_pid" 2>/dev/null
        pkill -KILL -f 'flood --worker-plan' 2>/dev/null
    fi
    if [ -n "$launcher" ] && kill -0 "$launcher" 2>/dev/null; then
        say "SIGTERM to the $SERVER launcher ($launcher)"
        kill -TERM "$launcher"
        for _ in $(seq 600); do
            kill -0 "$launcher" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$launcher" 2>/dev/null; then
            say "launcher still running after 60 s: SIGKILL to it and its processes"
            pkill -KILL -P "$launcher" 2>/dev/null
            kill -KILL "$launcher" 2>/dev/null
        fi
        wait "$launcher" 2>/dev/null
        say "$SERVER stopped"
    fi
    if [ -n "$redis" ]; then
        kill -TERM "$redis" 2>/dev/null
        wait "$redis" 2>/dev/null
    fi
    if [ -f "$ktune_state" ]; then
        say "restoring sysctls"
        kernel-tuning/restore --state "$ktune_state" | sed 's/^/  /'
    fi
    say "done (exit $status)"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() {
    echo "c1m: $*" >&2
    exit 2
}

# Preconditions, before anything is changed.
[ "$(id -u)" -eq 0 ] || fail "needs root: the kernel-tuning profiles write /proc/sys"
for c in redis-server redis-cli jq curl cargo ss; do
    command -v "$c" >/dev/null || fail "needs $c"
done
avail_kib=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
need_kib=$((CONNS * 14000 / 1024)) # ~14 KB per connection: both ends, flood, headroom
[ "$avail_kib" -ge "$need_kib" ] || fail "needs about $((need_kib / 1048576)) GiB available, has $((avail_kib / 1048576)) GiB"
[ "$(ss -Hltn "sport = :$PORT" | wc -l)" -eq 0 ] || fail "port $PORT is in use (PORT=)"
[ "$(ss -Hltn "sport = :$REDIS_PORT" | wc -l)" -eq 0 ] || fail "port $REDIS_PORT is in use (REDIS_PORT=)"
[ ! -f "$ktune_state" ] || fail "$ktune_state exists: a previous run did not restore; run kernel-tuning/restore --state $ktune_state"

print_machine
ehash=$(sysctl -n net.ipv4.tcp_ehash_entries 2>/dev/null | tr -d -)
if [ -n "${C1M_IN_NETNS:-}" ]; then
    ip link set lo up || fail "could not bring up lo in the namespace"
    run_desc="a network namespace of its own (established hash ${ehash:-?} buckets)"
else
    run_desc="the machine's network namespace (established hash ${ehash:-?} buckets)"
fi
[ "$FLOOD_SCHED" = batch ] && run_desc="$run_desc, flood under SCHED_BATCH"
[ "$SERVER" = raw ] && run_desc="$run_desc; the server is rawfan, the bare write(2)-loop baseline, not edgecomet"
echo "netns:   $run_desc"

say "build"
run cargo build --release -p edgecomet -p edgecomet-flood || exit 2
if [ "$SERVER" = raw ]; then
    run cargo build --release -p edgecomet-bench --bin rawfan || exit 2
fi

if [ -f "$OUT/.machine-apply.log" ]; then
    say "kernel-tuning profiles in the machine's namespace (old values saved in $OUT/.ktune-saved-machine.conf)"
    sed 's/^/  /' "$OUT/.machine-apply.log"
    rm -f "$OUT/.machine-apply.log"
fi
say "kernel-tuning profiles (old values saved in $ktune_state)"
run kernel-tuning/apply --state "$ktune_state" c1m-loadgen | sed 's/^/  /'
run kernel-tuning/apply --state "$ktune_state" c1m-server | sed 's/^/  /'
for s in net.ipv4.ip_local_port_range net.ipv4.tcp_rmem net.ipv4.tcp_wmem net.ipv4.tcp_mem \
    net.core.somaxconn net.ipv4.tcp_max_syn_backlog fs.file-max; do
    echo "sysctl:  $s = $(sysctl -n "$s" 2>/dev/null | tr '\t' ' ' || echo "(not visible here: global, set in the machine's namespace)")"
done

if [ "$SERVER" = edgecomet ]; then
    say "redis-server on 127.0.0.1:$REDIS_PORT"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        >"$OUT/.redis.log" 2>&1 &
    redis=$!
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 || { echo "redis-server did not start"; exit 1; }
fi

mem_used() { # bytes in use: MemTotal - MemAvailable
    awk '/MemTotal/ { t = $2 } /MemAvailable/ { a = $2 } END { printf "%.0f\n", (t - a) * 1024 }' /proc/meminfo
}
used_before=$(mem_used)

server_cmd=(target/release/edgecomet --processes "$NPROC" --workers 1 --ws-ping-interval 0
    --broker "redis://127.0.0.1:$REDIS_PORT" --listen "127.0.0.1:$PORT")
sub_url="ws://127.0.0.1:$PORT/sub/all"
tls_args=()
if [ "$TLS" = 1 ]; then
    tdir="$OUT/.tls"
    mkdir -p "$tdir"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
    openssl req -x509 "${ec[@]}" -keyout "$tdir/ca.key" -out "$tdir/ca.pem" -days 2 -subj "/CN=c1m CA" 2>/dev/null &&
        openssl req "${ec[@]}" -keyout "$tdir/key.pem" -out "$tdir/srv.csr" -subj "/CN=localhost" 2>/dev/null &&
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tdir/ext.cnf" &&
        openssl x509 -req -in "$tdir/srv.csr" -CA "$tdir/ca.pem" -CAkey "$tdir/ca.key" -CAcreateserial \
            -out "$tdir/cert.pem" -days 2 -extfile "$tdir/ext.cnf" 2>/dev/null || { echo "openssl failed"; exit 1; }
    server_cmd+=(--tls-listen "127.0.0.1:$TLS_PORT" --tls-cert "$tdir/cert.pem" --tls-key "$tdir/key.pem")
    sub_url="wss://127.0.0.1:$TLS_PORT/sub/all"
    tls_args=(--ca "$tdir/ca.pem")
fi
if [ "$SERVER" = raw ]; then
    server_cmd=(target/release/rawfan --processes "$NPROC" --listen "127.0.0.1:$PORT")
    rm -f "$OUT/stats.json" # from an edgecomet run into the same OUT
fi
say "$SERVER: $NPROC processes"
echo "+ ${server_cmd[*]} &"
"${server_cmd[@]}" 2>"$OUT/.server.log" &
launcher=$!
stats() {
    curl -s --max-time 10 "http://127.0.0.1:$PORT/stats"
}
started() { # every process reports (edgecomet) or listens (rawfan)
    if [ "$SERVER" = raw ]; then
        [ "$(ss -Hltn "sport = :$PORT" | wc -l)" -eq "$NPROC" ]
    else
        [ "$(stats | jq -r '.processes.reporting // 0' 2>/dev/null)" = "$NPROC" ]
    fi
}
for _ in $(seq 300); do
    started && break
    kill -0 "$launcher" 2>/dev/null || { cat "$OUT/.server.log"; exit 1; }
    sleep 0.1
done
started || { echo "not all processes started"; exit 1; }
head -1 "$OUT/.server.log"

last_source="127.0.0.$((NSOURCES + 1))"
flood_cmd=(target/release/flood --url "$sub_url" "${tls_args[@]}" --conns "$CONNS"
    --source "127.0.0.2-$last_source" --rate max --connect-timeout 30
    --broadcasts "$BROADCASTS" --publish-rate "$LOAD_RATE" --duration "$LOAD_SECS"
    --drain "$DRAIN" --json "$OUT/flood.json" --jsonl "$OUT/flood.jsonl" --plot "$OUT/flood.svg")
if [ "$FLOOD_SCHED" = batch ]; then
    flood_cmd=(chrt --batch 0 "${flood_cmd[@]}")
fi
say "flood"
echo "+ ${flood_cmd[*]}"
# flood reports once a second; every 10th line is kept here (its JSON has everything).
timeout -s INT "$FLOOD_TIMEOUT" "${flood_cmd[@]}" > >(awk '!/^\[/ || ++n % 10 == 1') &
flood_pid=$!

# While flood holds: once every connection is open, the memory in use, the sums over the
# processes and the connections per process (open files minus the process's own few).
opened=""
while kill -0 "$flood_pid" 2>/dev/null; do
    if [ -z "$opened" ]; then
        if [ "$SERVER" = raw ]; then # flood's count of the second before
            n=$(tail -1 "$OUT/flood.jsonl" 2>/dev/null | jq -r '.open // 0' 2>/dev/null)
        else
            n=$(stats | jq -r '.processes.total.conns_ws_sub // 0' 2>/dev/null)
        fi
        if [ "${n:-0}" -ge "$CONNS" ]; then
            opened=1
            sleep 3
            used_open=$(mem_used)
            [ "$SERVER" = raw ] || stats >"$OUT/stats.json"
            say "all $CONNS open: memory in use grew by $(((used_open - used_before) / 1048576)) MiB"
        fi
    fi
    sleep 1
done
wait "$flood_pid"
status=$?
flood_pid=""
say "flood exited ($status)"
[ -f "$OUT/flood.json" ] || { echo "no flood report"; exit 1; }
# The counters at the end (summed over the processes; the connections are closed by now).
sleep 3
if [ "$SERVER" = raw ]; then
    echo '{}' >"$OUT/stats-end.json"
else
    stats >"$OUT/stats-end.json"
fi

# The summary.
if [ "$SERVER" = raw ]; then # from each process's line on the first broadcast
    per_proc=$(grep -o 'to [0-9]* subscribers' "$OUT/.server.log" | head -n "$NPROC" | awk '{ print $2 }' | sort -n)
else
    per_proc=$(jq -r '.processes.open_per_process[]' "$OUT/stats.json" 2>/dev/null | sort -n)
fi
fd_min=$(echo "$per_proc" | head -1)
fd_max=$(echo "$per_proc" | tail -1)
jq -r --arg commit "$commit" --arg nproc "$NPROC" --arg fdmin "${fd_min:-n/a}" \
    --arg fdmax "${fd_max:-n/a}" --arg used "$(( ${used_open:-0} - used_before ))" \
    --arg server "${server_cmd[*]}" --arg flood "${flood_cmd[*]}" \
    --arg date "$(date -u +%Y-%m-%d)" --arg kernel "$(uname -r)" --arg setup "$run_desc" \
    --arg kind "$SERVER" \
    --slurpfile fin "$OUT/stats-end.json" -f bench/c1m/summary.jq \
    "$OUT/flood.json" >"$OUT/summary.md" || { echo "summary failed"; exit 1; }
echo
cat "$OUT/summary.md"
rm -f "$OUT/.redis.log"
[ "$SERVER" = raw ] && rm -f "$OUT/stats-end.json" # the empty stand-in for /stats
rm -rf "$OUT/.tls"
mv "$OUT/.server.log" "$OUT/server.log" 2>/dev/null
say "c1m: $([ "$status" -eq 0 ] && echo PASS || echo FAIL)"
[ "$status" -eq 0 ] || exit 1
exit 0
