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

if [ "$#" -eq 0 ]; then
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

# The install, the pid file and the backstop (125 s; run.js bounds itself below it) are shared
# with the other Node suite: scripts/node-suite.sh.
exec scripts/node-suite.sh cometd tests/cometd COMETD_TESTS_PIDFILE 125 "$@"
