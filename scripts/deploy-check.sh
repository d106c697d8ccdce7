#!/usr/bin/env bash
# Checks deploy/edgecomet.service (run by scripts/test.sh):
#   1. `systemd-analyze verify --man=no` on a copy whose ExecStart names the built binary (verify
#      checks that the binary exists); any line it prints fails the check, warnings included;
#   2. what the unit must say: LimitNOFILE of at least 1,048,576; TimeoutStopSec longer than the
#      drain (--shutdown-timeout-ms on ExecStart, 5000 ms when absent) by at least 5 s;
#      Restart=on-failure; KillSignal=SIGTERM; ExecReload sending SIGHUP; a User that is not root;
#   3. `systemd-analyze security --offline=yes`: the exposure score is printed, and must be below
#      3.0 ("OK").
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
exit $status
