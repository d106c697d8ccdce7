#!/usr/bin/env bash
# Usage: scripts/fuzz-run.sh TARGET SECONDS [extra libFuzzer flags...]
# Runs one fuzz target for at most SECONDS (libFuzzer -max_total_time) on fuzz/corpus/TARGET,
# which is seeded from fuzz/seeds/TARGET. New inputs are kept in the corpus, crashes go to
# fuzz/artifacts/TARGET/ (all git-ignored). The full log is fuzz/target/TARGET.log; the final
# stats are printed at the end. Exits non-zero if the target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2

if ! build_log=$(scripts/fuzz-build.sh 2>&1); then
    echo "$build_log" >&2
    exit 1
fi

corpus=fuzz/corpus/$target
artifacts=fuzz/artifacts/$target
mkdir -p "$corpus" "$artifacts"
if [ -d "fuzz/seeds/$target" ]; then
    cp -n "fuzz/seeds/$target"/* "$corpus"/ 2>/dev/null || true
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
bin=fuzz/target/$triple/release/$target
log=fuzz/target/$target.log

echo "fuzz-run: $target for ${seconds}s, corpus $corpus ($(ls "$corpus" | wc -l) inputs), log $log"
status=0
"$bin" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$artifacts/" \
    "$@" "$corpus" >"$log" 2>&1 || status=$?

# The last status line (#runs, cov, ft, corp, exec/s) and libFuzzer's final counters.
grep -E '^#[0-9]+' "$log" | tail -n 1 || true
grep -E '^(Done [0-9]+ runs|stat::)' "$log" || true
if [ "$status" -ne 0 ]; then
    echo "fuzz-run: $target failed (exit $status); see $log and $artifacts/" >&2
    grep -E -A3 "panicked at|^==[0-9]+== ERROR|Test unit written to" "$log" >&2 || true
fi
exit "$status"
