#!/usr/bin/env bash
# Run the Autobahn|Testsuite fuzzing client against a running WebSocket echo
# endpoint and compare the results with the committed golden file.
#
#   scripts/autobahn/run.sh URL [--update] [--expected PATH] [--ca PATH] [--cases PATTERNS]
#
#   URL          echo endpoint, e.g. ws://127.0.0.1:9001/echo or wss://127.0.0.1:9443/echo
#                (the server must already be running; this script does not start it)
#   --update     write the results to the expected file instead of comparing
#   --expected   golden file (default: $EXPECTED or tests/autobahn/expected-results.json)
#   --ca         wss: verify the server's certificate against this CA (PEM) and the URL's
#                host (name or IP). Without it wstest does not verify at all (Twisted's
#                ClientContextFactory, no SNI); with it wstest uses Twisted's
#                optionsForClientTLS (the server spec's "hostname") with SSL_CERT_FILE=PATH
#                as its only trust root, so a certificate it does not accept fails every case.
#   --cases      run only these cases (comma-separated, wstest's patterns: "1.*,2.*") instead
#                of the template's list, and compare only them (--update replaces only them)
#
# Environment:
#   EXPECTED             golden file path (same as --expected)
#   AUTOBAHN_OUT         work dir for config, log and report (default: target/autobahn)
#   AUTOBAHN_TIMEOUT     wstest time limit in seconds (default: 1800)
#   AUTOBAHN_WAIT        seconds to wait for URL to become reachable (default: 10)
#   AUTOBAHN_PYTHON, AUTOBAHN_TOOLS   see install.sh
#
# The HTML/JSON report is left in $AUTOBAHN_OUT/report (open index.html).
# Exit status: 0 results match (or were updated), 1 differences, 2 usage error,
# other non-zero: setup / server / wstest failure.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

usage() { sed -n '2,28p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "autobahn: error: $*" >&2; exit 1; }

URL=""
UPDATE=0
CA=""
CASES=""
EXPECTED="${EXPECTED:-$REPO_ROOT/tests/autobahn/expected-results.json}"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --update) UPDATE=1 ;;
        --expected) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; EXPECTED="$2"; shift ;;
        --expected=*) EXPECTED="${1#--expected=}" ;;
        --ca) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; CA="$2"; shift ;;
        --ca=*) CA="${1#--ca=}" ;;
        --cases) [[ $# -ge 2 ]] || { usage >&2; exit 2; }; CASES="$2"; shift ;;
        --cases=*) CASES="${1#--cases=}" ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "autobahn: unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) [[ -z "$URL" ]] || { echo "autobahn: more than one URL given" >&2; exit 2; }
           URL="$1" ;;
    esac
    shift
done
[[ -n "$URL" ]] || { usage >&2; exit 2; }
[[ "$URL" =~ ^wss?:// ]] || die "URL must start with ws:// or wss://, got: $URL"
if [[ -n "$CA" ]]; then
    [[ "$URL" == wss://* ]] || die "--ca is for wss:// URLs"
    [[ -r "$CA" ]] || die "cannot read the CA file $CA"
    CA="$(cd "$(dirname "$CA")" && pwd)/$(basename "$CA")"
fi

OUT="${AUTOBAHN_OUT:-$REPO_ROOT/target/autobahn}"
TIMEOUT="${AUTOBAHN_TIMEOUT:-1800}"
WAIT="${AUTOBAHN_WAIT:-10}"
command -v python3 >/dev/null || die "python3 is required"
command -v timeout >/dev/null || die "timeout (coreutils) is required"

"$SCRIPT_DIR/install.sh"
WSTEST="${AUTOBAHN_TOOLS:-$REPO_ROOT/.tools/autobahn}/bin/wstest"

# 1. Is the endpoint up and speaking WebSocket? Do a real opening handshake
#    (and a clean close) so a wrong path or a non-WebSocket port fails here
#    instead of producing 500 "failed" cases.
python3 - "$URL" "$WAIT" "$CA" <<'PY' || exit 1
import base64, hashlib, os, socket, ssl, sys, time
from urllib.parse import urlsplit

url, wait, ca = sys.argv[1], float(sys.argv[2]), sys.argv[3] or None
u = urlsplit(url)
host, port = u.hostname, u.port or (443 if u.scheme == "wss" else 80)
path = (u.path or "/") + ("?" + u.query if u.query else "")
hosthdr = u.netloc.rsplit("@", 1)[-1]

def probe():
    s = socket.create_connection((host, port), timeout=5)
    try:
        if u.scheme == "wss":
            s = ssl.create_default_context(cafile=ca).wrap_socket(s, server_hostname=host)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n" % (path, hosthdr, key)).encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        head = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        status = head.split("\r\n", 1)[0]
        if not status.startswith("HTTP/1.1 101"):
            return "handshake rejected: %r" % (status or "(connection closed)")
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if accept not in head:
            return "bad Sec-WebSocket-Accept in response"
        # masked close frame, status 1000; wait briefly for the server's close
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8"))
        s.sendall(b"\x88\x82" + mask + payload)
        try:
            s.settimeout(2)
            s.recv(64)
        except OSError:
            pass
        return None
    finally:
        s.close()

deadline = time.monotonic() + wait
while True:
    try:
        err = probe()
    except OSError as e:
        err = "cannot connect to %s:%s: %s" % (host, port, e)
    if err is None:
        sys.exit(0)
    if time.monotonic() >= deadline:
        print("autobahn: error: %s is not reachable: %s" % (url, err), file=sys.stderr)
        print("autobahn: (start the echo server first; run.sh does not start it)", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
PY

# 2. Write the config from the template.
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)" # wstest runs in $OUT: a relative AUTOBAHN_OUT would not resolve there
REPORT="$OUT/report"
CONFIG="$OUT/fuzzingclient.json"
LOG="$OUT/wstest.log"
rm -rf "$REPORT"
python3 - "$SCRIPT_DIR/fuzzingclient.json" "$CONFIG" "$URL" "$REPORT" "$CA" "$CASES" <<'PY'
import json, sys
from urllib.parse import urlsplit
template, out, url, report, ca, cases = sys.argv[1:]
with open(template) as f:
    spec = json.load(f)
spec["outdir"] = report
if cases:
    spec["cases"] = [c.strip() for c in cases.split(",") if c.strip()]
assert len(spec["servers"]) == 1, "template must have exactly one server"
spec["servers"][0]["url"] = url
if ca:
    # wstest then connects with optionsForClientTLS(hostname): SNI, chain and name verified.
    spec["servers"][0]["hostname"] = urlsplit(url).hostname
with open(out, "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
PY

# 3. Run the fuzzing client.
echo "autobahn: running wstest fuzzingclient against $URL${CA:+ (certificate verified against $CA)} (log: $LOG)" >&2
start=$(date +%s)
rc=0
(cd "$OUT" && if [[ -n "$CA" ]]; then export SSL_CERT_FILE="$CA"; unset SSL_CERT_DIR; fi
    timeout --kill-after=10 "$TIMEOUT" "$WSTEST" -m fuzzingclient -s "$CONFIG") \
    >"$LOG" 2>&1 || rc=$?
elapsed=$(( $(date +%s) - start ))
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    tail -n 20 "$LOG" >&2
    die "wstest timed out after ${TIMEOUT}s (set AUTOBAHN_TIMEOUT to raise the limit)"
elif [[ $rc -ne 0 ]]; then
    tail -n 20 "$LOG" >&2
    die "wstest exited with status $rc (full log: $LOG)"
fi
if grep -q "^Connection to .* failed" "$LOG"; then
    grep "^Connection to .* failed" "$LOG" | head -n 3 >&2
    echo "autobahn: warning: wstest lost the server mid-run; remaining cases were not run" >&2
fi
[[ -f "$REPORT/index.json" ]] || { tail -n 20 "$LOG" >&2; die "wstest produced no $REPORT/index.json"; }
echo "autobahn: wstest finished in ${elapsed}s; report: $REPORT/index.html" >&2

# 4. Compare with (or update) the golden file.
args=(--report "$REPORT" --expected "$EXPECTED" --cases "$CASES")
[[ $UPDATE -eq 1 ]] && args+=(--update)
exec python3 "$SCRIPT_DIR/compare.py" "${args[@]}"
