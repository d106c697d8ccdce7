#!/usr/bin/env bash
# CometD / Bayeux tests (tests/cometd/, issue 5): the official CometD JavaScript client (npm cometd
# 9.0.0 with cometd-nodejs-client 2.0.0) and raw HTTP/WebSocket Bayeux requests against a server.
#
#   scripts/cometd-tests.sh --reference                         the official cometd-nodejs-server,
#                                                               in-process (validates the tests)
#   scripts/cometd-tests.sh --edgecomet-bin target/release/edgecomet [--edgecomet-args "ARGS"]
#   scripts/cometd-tests.sh --url http://127.0.0.1:8080/cometd  a server already running
#
# Other options are run.js's (tests/cometd/README.md): --transport, --only, --record, --controls,
# --verbose. Installs the Debian packages nodejs/npm when missing (as root) and the npm packages
# pinned in tests/cometd/package-lock.json with `npm ci` when the lockfile changed (stamp in the
# git-ignored tests/cometd/node_modules/).
#
# Prints "ok - NAME" / "not ok - NAME: DETAILS" / "skip - NAME (REASON)" per test; exit status 1
# if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/tests/cometd

if [ "$#" -eq 0 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "cometd-tests: need node and npm (run as root to apt-get install nodejs npm)" >&2
        exit 1
    fi
    echo "cometd-tests: installing the Debian packages nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

stamp=$DIR/node_modules/.stamp-$(cat "$DIR/package.json" "$DIR/package-lock.json" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "cometd-tests: npm ci (tests/cometd/package-lock.json changed or first run)"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
fi

# run.js lists the edgecomet processes it starts (the main one and the one with --token-secret) in
# PIDFILE; whatever is still listed when this script exits, however it exits, is killed.
work=$(mktemp -d)
export COMETD_TESTS_PIDFILE=$work/pids
runner=
cleanup() {
    if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
        kill -TERM "$runner" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$runner" 2>/dev/null || true
    fi
    if [ -f "$COMETD_TESTS_PIDFILE" ]; then
        while read -r p; do
            [ -n "$p" ] && kill -KILL -- "$p" 2>/dev/null || true
        done <"$COMETD_TESTS_PIDFILE"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run.js bounds itself (110 s, then 8 s to stop); the outer timeout is the backstop.
timeout -k 5 125 node "$DIR/run.js" "$@" &
runner=$!
rc=0
wait "$runner" || rc=$?
runner=
if [ "$rc" = 124 ]; then
    echo "not ok - cometd tests: timed out after 125 s"
elif [ "$rc" -gt 128 ]; then
    echo "not ok - cometd tests: the runner died (exit status $rc)"
fi
exit "$rc"
