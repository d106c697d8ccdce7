#!/usr/bin/env bash
# Socket.IO / Engine.IO tests (tests/socketio/, issue 19): the official socket.io-client 4.8.4 and
# raw Engine.IO v4 / Socket.IO v5 requests against a server.
#
#   scripts/socketio-tests.sh --reference                       the official socket.io 4.8.4 server,
#                                                               in-process, set up as the contract
#                                                               says (validates the tests)
#   scripts/socketio-tests.sh --edgecomet-bin target/release/edgecomet [--edgecomet-args "ARGS"]
#                                                               [--recovery-args "FLAGS {ms}"]
#
# Other options are run.js's (tests/socketio/README.md): --only REGEX, --verbose. Installs the
# Debian packages nodejs/npm when missing (as root) and the npm packages pinned in
# tests/socketio/package-lock.json with `npm ci` when the lockfile changed (stamp in the
# git-ignored tests/socketio/node_modules/).
#
# Prints "ok - NAME" / "not ok - NAME: DETAILS" / "skip - NAME (REASON)" per test; exit status 1
# if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/tests/socketio

if [ "$#" -eq 0 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "socketio-tests: need node and npm (run as root to apt-get install nodejs npm)" >&2
        exit 1
    fi
    echo "socketio-tests: installing the Debian packages nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

stamp=$DIR/node_modules/.stamp-$(cat "$DIR/package.json" "$DIR/package-lock.json" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "socketio-tests: npm ci (tests/socketio/package-lock.json changed or first run)"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
fi

# run.js lists the edgecomet processes it starts (one per set of flags the tests need) in PIDFILE;
# whatever is still listed when this script exits, however it exits, is killed.
work=$(mktemp -d)
export SOCKETIO_TESTS_PIDFILE=$work/pids
runner=
cleanup() {
    if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
        kill -TERM "$runner" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$runner" 2>/dev/null || true
    fi
    if [ -f "$SOCKETIO_TESTS_PIDFILE" ]; then
        while read -r p; do
            [ -n "$p" ] && kill -KILL -- "$p" 2>/dev/null || true
        done <"$SOCKETIO_TESTS_PIDFILE"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run.js bounds itself (150 s, then 8 s to stop); the outer timeout is the backstop.
timeout -k 5 170 node "$DIR/run.js" "$@" &
runner=$!
rc=0
wait "$runner" || rc=$?
runner=
if [ "$rc" = 124 ]; then
    echo "not ok - socketio tests: timed out after 170 s"
elif [ "$rc" -gt 128 ]; then
    echo "not ok - socketio tests: the runner died (exit status $rc)"
fi
exit "$rc"
