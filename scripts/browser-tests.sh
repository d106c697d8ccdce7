#!/usr/bin/env bash
# Real-browser tests (tests/browser/): headless system chromium driven by puppeteer-core against
# the release binary, pages served cross-origin by a small Node server; EventSource, fetch
# long-polling, WebSocket, dojox/socket 1.17 (LongPoll, WebSocket, Reconnect), and CometD/Bayeux
# with the official CometD 9 JavaScript client (npm cometd, ES modules) over callback-polling,
# long-polling and websocket in turn, each registered alone: handshake, 100 messages from
# POST /pub, wildcards, publish from the page, remoteCall echo, disconnect; each test checked on
# the wire (a recording proxy) to use that transport only: JSONP GETs; credentialed JSON POSTs
# with CORS preflights; one WebSocket upgrade to /cometd and text frames. Socket.IO with the
# official socket.io-client 4 (npm): polling then the upgrade while messages flow, websocket only,
# polling only, emit("publish") with an ack, connect_error (namespace, channel, tokens), connection
# state recovery across a proxy cut, binary echo against a --socketio-conformance edgecomet. Authorization: a page
# gets a private push address and receives what a page of another origin sends it by JSONP;
# against a second server with --token-secret, EventSource and WebSocket with ?token= (valid,
# refused, ended at exp with close 4001 / event: expired).
#
# Two passes: plaintext (http:// pages, http:// and ws:// to edgecomet), then every test again over
# TLS (`run.js --tls`: https:// pages, https:// and wss:// to edgecomet's --tls-listen port, a test
# CA made with the openssl CLI at run time and trusted in chromium's NSS database with certutil;
# see tests/browser/README.md). Then the dashboard (tests/browser/dashboard.js): /dashboard in
# chromium during a flood run, its figures against /stats. BROWSER_TESTS_PASSES="plain", "tls"
# or "dashboard" runs one of them.
#
# Installs what it needs on a fresh Debian machine (as root): the Debian packages chromium,
# nodejs/npm, openssl and libnss3-tools (certutil) when missing, and the npm packages pinned in tests/browser/package-lock.json with
# `npm ci` when the lockfile changed (stamp in the git-ignored tests/browser/node_modules/).
# Builds target/release/edgecomet when missing; EDGECOMET_BIN=PATH tests another binary.
#
# Prints "ok - NAME" / "not ok - NAME: DETAILS" per test; exit status 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=$ROOT/tests/browser

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "browser-tests: need root to apt-get install $*" >&2
        return 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if [ -z "${CHROMIUM_BIN:-}" ] && [ ! -x /usr/lib/chromium/chromium ] && ! command -v chromium >/dev/null; then
    echo "browser-tests: installing the Debian package chromium"
    apt_install chromium
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "browser-tests: installing the Debian packages nodejs and npm"
    apt_install nodejs npm
fi
PASSES=${BROWSER_TESTS_PASSES:-plain tls dashboard}
if [[ " $PASSES " == *" tls "* ]]; then
    if ! command -v openssl >/dev/null; then
        echo "browser-tests: installing the Debian package openssl (the test CA)"
        apt_install openssl
    fi
    if ! command -v certutil >/dev/null; then
        echo "browser-tests: installing the Debian package libnss3-tools (certutil: chromium's NSS database)"
        apt_install libnss3-tools
    fi
fi

stamp=$DIR/node_modules/.stamp-$(cat "$DIR/package.json" "$DIR/package-lock.json" | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    echo "browser-tests: npm ci (tests/browser/package-lock.json changed or first run)"
    (cd "$DIR" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
fi

export EDGECOMET_BIN=${EDGECOMET_BIN:-$ROOT/target/release/edgecomet}
if [ ! -x "$EDGECOMET_BIN" ]; then
    echo "browser-tests: building the release binary"
    cargo build --release --quiet
fi

# The runner lists every process it starts in PIDFILE (a negative number is a process group);
# whatever is still listed when this script exits, however it exits, is killed.
work=$(mktemp -d)
export BROWSER_TESTS_PIDFILE=$work/pids
runner=
cleanup() {
    if [ -n "$runner" ] && kill -0 "$runner" 2>/dev/null; then
        kill -TERM "$runner" 2>/dev/null || true
        for _ in $(seq 1 40); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$runner" 2>/dev/null || true
    fi
    if [ -f "$BROWSER_TESTS_PIDFILE" ]; then
        while read -r p; do
            [ -n "$p" ] && kill -KILL -- "$p" 2>/dev/null || true
        done <"$BROWSER_TESTS_PIDFILE"
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# One pass: run.js bounds itself (110 s); the outer timeout is the backstop.
run_pass() {
    local name=$1
    shift
    local rc=0
    timeout -k 5 120 node "$DIR/run.js" "$@" &
    runner=$!
    wait "$runner" || rc=$?
    runner=
    if [ "$rc" = 124 ]; then
        echo "not ok - browser tests ($name): timed out after 120 s"
    elif [ "$rc" -gt 128 ]; then
        echo "not ok - browser tests ($name): the runner died (exit status $rc)"
    fi
    return "$rc"
}

# The dashboard pass: /dashboard in chromium while flood runs (tests/browser/dashboard.js bounds
# itself to 100 s). DASHBOARD_SCREENSHOT=FILE keeps its screenshot (docs/dashboard.png is one).
run_dashboard() {
    local rc=0
    local shot=()
    [ -n "${DASHBOARD_SCREENSHOT:-}" ] && shot=(--screenshot "$DASHBOARD_SCREENSHOT")
    if [ ! -x "${FLOOD_BIN:-$ROOT/target/release/flood}" ]; then
        echo "browser-tests: building target/release/flood"
        cargo build --release --quiet -p edgecomet-flood
    fi
    timeout -k 5 110 node "$DIR/dashboard.js" "${shot[@]}" &
    runner=$!
    wait "$runner" || rc=$?
    runner=
    if [ "$rc" = 124 ]; then
        echo "not ok - dashboard: timed out after 110 s"
    elif [ "$rc" -gt 128 ]; then
        echo "not ok - dashboard: the runner died (exit status $rc)"
    fi
    return "$rc"
}

status=0
for pass in $PASSES; do
    case $pass in
        plain) echo "# browser tests, plaintext pass"; run_pass plain || status=$? ;;
        tls) echo "# browser tests, TLS pass"; run_pass tls --tls || status=$? ;;
        dashboard) echo "# the dashboard under a flood run"; run_dashboard || status=$? ;;
        *) echo "browser-tests: unknown pass '$pass' in BROWSER_TESTS_PASSES (plain, tls, dashboard)" >&2; exit 2 ;;
    esac
    [ "$status" -gt 128 ] && break # interrupted
done
exit "$status"
