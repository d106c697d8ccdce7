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

if [ "$#" -eq 0 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi

# The install, the pid file and the backstop (170 s; run.js bounds itself below it) are shared
# with the other Node suite: scripts/node-suite.sh.
exec scripts/node-suite.sh socketio tests/socketio SOCKETIO_TESTS_PIDFILE 170 "$@"
