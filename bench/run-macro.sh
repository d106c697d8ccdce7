#!/usr/bin/env bash
# Builds the release binaries and runs both macro benchmarks (idle_memory, broadcast) with their
# defaults, printing the machine, the commit and the exact commands, so the output can be quoted.
# Extra arguments: IDLE_ARGS="..." and BROADCAST_ARGS="..." (appended to the commands).
# JSON results go to target/macro/. Exit status: 0 if both passed, 1 otherwise.
set -u
cd "$(dirname "$0")/.."

elapsed() {
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

run() {
    echo "+ $*"
    "$@"
}

# shellcheck source=bench/machine.sh
. bench/machine.sh
commit="$COMMIT"

print_machine

echo "== build"
run cargo build --release -p edgecomet -p edgecomet-bench --bins || exit 2

mkdir -p target/macro
status=0

# bayeux-lp / bayeux-ws: Bayeux clients parked in /meta/connect (PSS limit 400 B a client, issue
# 20's target; bench/RESULTS.md, "Bayeux idle cost (issue 20)").
for transport in ws sse longpoll bayeux-lp bayeux-ws; do
    echo "== idle_memory ($transport)"
    start=$(date +%s.%N)
    # shellcheck disable=SC2086
    run target/release/idle_memory --transport "$transport" \
        --json "target/macro/idle_memory-$transport.json" ${IDLE_ARGS:-} || status=1
    echo "(idle_memory $transport took $(elapsed "$start") s)"
done

echo "== broadcast"
start=$(date +%s.%N)
# shellcheck disable=SC2086
run target/release/broadcast --json target/macro/broadcast.json ${BROADCAST_ARGS:-} || status=1
echo "(broadcast took $(elapsed "$start") s)"

echo "== run-macro: $([ $status -eq 0 ] && echo PASS || echo FAIL) (commit $commit)"
exit $status
