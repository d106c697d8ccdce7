#!/usr/bin/env bash
# Checks deploy/edgecomet.service (run by scripts/test.sh):
#   1. `systemd-analyze verify --man=no` on a copy whose ExecStart names the built binary (verify
#      checks that the binary exists); any line it prints fails the check, warnings included;
#   2. what the unit must say: LimitNOFILE of at least 1,048,576; TimeoutStopSec longer than the
#      drain (--shutdown-timeout-ms on ExecStart, 5000 ms when absent) by at least 5 s;
#      Restart=on-failure; KillSignal=SIGTERM; ExecReload sending SIGHUP; a User that is not root;
#   3. `systemd-analyze security --offline=yes`: the exposure score is printed, and must be below
#      3.0 ("OK");
#   4. the hardening does not break the server: the release binary runs under strace (installed
#      with apt when missing) through what it does in service — SSE, long-poll, the dashboard
#      stream, 200 WebSocket subscribers from flood with a publish load, a publish, SIGHUP,
#      SIGTERM's drain — and every system call it made must be in the unit's
#      SystemCallFilter=@system-service (expanded with `systemd-analyze syscall-filter`), and none
#      may make memory executable (MemoryDenyWriteExecute=yes: no mprotect with PROT_EXEC, no
#      mapping both writable and executable).
# Needs systemd-analyze (the Debian package systemd, installed with apt when missing, as root). It
# does not need systemd to be running: verify and security --offline read the unit file. If
# systemd-analyze cannot be had or cannot run here, the check fails loudly; with
# EDGECOMET_SKIP_DEPLOY_CHECK=1 it says SKIPPED and exits 0 (never in CI).
#
# deploy/Containerfile is not built here (no container engine on the test machine): see
# docs/deploy.md.
set -euo pipefail
cd "$(dirname "$0")/.."
UNIT=deploy/edgecomet.service

skip_or_fail() {
    if [ "${EDGECOMET_SKIP_DEPLOY_CHECK:-}" = 1 ]; then
        echo "deploy-check: SKIPPED: $*"
        exit 0
    fi
    echo "deploy-check: FAILED: $* (EDGECOMET_SKIP_DEPLOY_CHECK=1 skips, loudly)" >&2
    exit 1
}

if ! command -v systemd-analyze >/dev/null; then
    if [ "$(id -u)" = 0 ]; then
        echo "deploy-check: installing the Debian package systemd (systemd-analyze)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null ||
            skip_or_fail "apt-get install systemd failed"
    fi
    command -v systemd-analyze >/dev/null || skip_or_fail "no systemd-analyze (need root to apt-get install systemd)"
fi

BIN=$PWD/target/release/edgecomet
if [ ! -x "$BIN" ]; then
    echo "deploy-check: building the release binary"
    cargo build --release --quiet
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The same unit with the binary where it is on this machine.
sed "s|/usr/local/bin/edgecomet|$BIN|g" "$UNIT" >"$work/edgecomet.service"

status=0
fail() {
    echo "not ok - $*"
    status=1
}

out=$(systemd-analyze verify --man=no "$work/edgecomet.service" 2>&1) || {
    rc=$?
    case $out in
        *"Failed to"*"bus"* | *"Operation not permitted"* | *"not been booted with systemd"*)
            skip_or_fail "systemd-analyze verify cannot run here (exit $rc): $out" ;;
    esac
    fail "systemd-analyze verify (exit $rc): $out"
}
if [ -n "$out" ]; then
    fail "systemd-analyze verify printed: $out"
elif [ $status = 0 ]; then
    echo "ok - systemd-analyze verify $UNIT ($(systemd-analyze --version | head -1))"
fi

val() { sed -n "s/^$1=//p" "$UNIT" | tail -1; }
nofile=$(val LimitNOFILE)
[[ $nofile =~ ^[0-9]+$ ]] && [ "$nofile" -ge 1048576 ] || fail "LimitNOFILE=$nofile: want at least 1048576"
drain_ms=$(val ExecStart | sed -n 's/.*--shutdown-timeout-ms[ =]\([0-9]*\).*/\1/p')
drain_ms=${drain_ms:-5000}
stop=$(val TimeoutStopSec)
[[ $stop =~ ^[0-9]+$ ]] && [ $((stop * 1000)) -ge $((drain_ms + 5000)) ] ||
    fail "TimeoutStopSec=$stop: want at least the drain (${drain_ms} ms) + 5 s"
[ "$(val Restart)" = on-failure ] || fail "Restart=$(val Restart): want on-failure"
[ "$(val KillSignal)" = SIGTERM ] || fail "KillSignal=$(val KillSignal): want SIGTERM"
[[ $(val ExecReload) == *"kill -HUP \$MAINPID"* ]] || fail "ExecReload=$(val ExecReload): want kill -HUP \$MAINPID"
user=$(val User)
[ -n "$user" ] && [ "$user" != root ] || fail "User=$user: want a dedicated user"
[ $status = 0 ] && echo "ok - $UNIT: LimitNOFILE=$nofile, TimeoutStopSec=${stop}s > drain ${drain_ms} ms, Restart=on-failure, KillSignal=SIGTERM, ExecReload SIGHUP, User=$user"

sec=$(systemd-analyze security --offline=yes "$work/edgecomet.service" 2>&1) || true
score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$sec")
if [ -z "$score" ]; then
    fail "systemd-analyze security --offline=yes gave no score: $(tail -3 <<<"$sec")"
elif awk -v s="$score" 'BEGIN { exit !(s < 3.0) }'; then
    echo "ok - systemd-analyze security: exposure $score (below 3.0)"
else
    fail "systemd-analyze security: exposure $score, want below 3.0"
fi

# ---- 4. the syscall filter and MemoryDenyWriteExecute against the binary's own system calls ----
if ! command -v strace >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "deploy-check: installing the Debian package strace"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace >/dev/null || true
fi
command -v strace >/dev/null || skip_or_fail "no strace (need root to apt-get install strace)"
FLOOD=$PWD/target/release/flood
if [ ! -x "$FLOOD" ]; then
    echo "deploy-check: building target/release/flood"
    cargo build --release --quiet -p edgecomet-flood
fi
filter=$(sed -n 's/^SystemCallFilter=//p' "$UNIT")
python3 - "$filter" >"$work/allowed" <<'PY'
import subprocess, sys
seen, calls = set(), set()
def expand(name):
    if not name.startswith("@"):
        calls.add(name)
        return
    if name in seen:
        return
    seen.add(name)
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines()[1:]:
        w = line.strip()
        if w and not w.startswith("#"):
            expand(w)
for name in sys.argv[1].split():
    expand(name)
print("\n".join(sorted(calls)))
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
strace -f -qq -o "$work/trace" "$BIN" --listen "127.0.0.1:$port" --shutdown-timeout-ms 500 >"$work/server.log" 2>&1 &
tracer=$!
for _ in $(seq 100); do curl -s -o /dev/null "$base/stats" && break; sleep 0.1; done
curl -s -N --max-time 2 "$base/dashboard/events" -o /dev/null &
curl -s -N --max-time 2 "$base/sub/x?transport=sse" -o /dev/null &
curl -s --max-time 2 -H 'Accept: application/json' "$base/sub/x" -o /dev/null &
"$FLOOD" --url "ws://127.0.0.1:$port/sub/s" --conns 200 --rate 1000 --duration 2 --publish-rate 50 --drain 1 >"$work/flood.log" 2>&1 ||
    fail "flood under strace: $(tail -3 "$work/flood.log")"
curl -s -o /dev/null -d hi "$base/pub/x"
curl -s -o /dev/null "$base/dashboard"
for j in $(jobs -p); do [ "$j" = "$tracer" ] || wait "$j" || true; done
server=$(pgrep -P "$tracer" | head -1)
kill -HUP "$server"
sleep 0.3
kill -TERM "$server"
wait "$tracer" || true
grep -q "draining" "$work/server.log" || fail "the server under strace did not drain: $(tail -3 "$work/server.log")"
sed -n 's/^[0-9]* *\([a-z_0-9]*\)(.*/\1/p' "$work/trace" | sort -u >"$work/used"
outside=$(comm -23 "$work/used" "$work/allowed" | tr '\n' ' ')
if [ -n "$outside" ]; then
    fail "system calls outside SystemCallFilter=$filter: $outside"
else
    echo "ok - all $(wc -l <"$work/used") system calls the server made (WebSocket, SSE, long-poll, dashboard, publish, SIGHUP, drain) are in SystemCallFilter=$filter"
fi
wx=$(grep -E '^[0-9]+ +(mprotect|pkey_mprotect)\(.*PROT_EXEC|^[0-9]+ +mmap\(.*PROT_WRITE\|PROT_EXEC' "$work/trace" | head -3 || true)
# The dynamic loader maps the libraries executable before main; those mmaps are read+exec of
# files, which MemoryDenyWriteExecute allows. What it forbids is matched above.
if [ -n "$wx" ]; then
    fail "MemoryDenyWriteExecute=yes would refuse: $wx"
else
    echo "ok - no mprotect(PROT_EXEC) nor writable+executable mapping (MemoryDenyWriteExecute=yes holds)"
fi
exit $status
