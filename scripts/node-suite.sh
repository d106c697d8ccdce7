#!/usr/bin/env bash
# Runs a Node test suite of tests/ (tests/cometd/, tests/socketio/): what scripts/cometd-tests.sh
# and scripts/socketio-tests.sh share.
#
#   scripts/node-suite.sh NAME DIR PIDFILE_VAR SECONDS [run.js options...]
#
# Installs the Debian packages nodejs/npm when missing (as root) and the npm packages pinned in
# DIR/package-lock.json with `npm ci` when the lockfile changed (stamp in the git-ignored
# DIR/node_modules/). Then runs `node DIR/run.js OPTIONS` under a SECONDS backstop (run.js bounds
# itself below it). run.js lists the edgecomet processes it starts in the file named by the
# environment variable PIDFILE_VAR; whatever is still listed when this script exits, however it
# exits, is killed. Prints run.js's "ok - NAME" / "not ok - NAME: DETAILS" lines; exit status 1 if
# any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
name=$1
DIR=$ROOT/$2
pidvar=$3
seconds=$4
shift 4

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
        echo "$name-tests: need node and npm (run as root to apt-get install nodejs npm)" >&2
        exit 1
    fi
    echo "$name-tests: installing the Debian packages nodejs and npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

stamp=$DIR/node_modules/.stamp-$(cat "$DIR/package.json" "$DIR/package-lock.json" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "$name-tests: npm ci (${DIR#"$ROOT"/}/package-lock.json changed or first run)"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
fi

work=$(mktemp -d)
pidfile=$work/pids
export "$pidvar=$pidfile"
runner=
cleanup() {
    if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
        kill -TERM "$runner" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$runner" 2>/dev/null || true
    fi
    if [ -f "$pidfile" ]; then
        while read -r p; do
            [ -n "$p" ] && kill -KILL -- "$p" 2>/dev/null || true
        done <"$pidfile"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

timeout -k 5 "$seconds" node "$DIR/run.js" "$@" &
runner=$!
rc=0
wait "$runner" || rc=$?
runner=
if [ "$rc" = 124 ]; then
    echo "not ok - $name tests: timed out after $seconds s"
elif [ "$rc" -gt 128 ]; then
    echo "not ok - $name tests: the runner died (exit status $rc)"
fi
exit "$rc"
