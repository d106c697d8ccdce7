#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ (CI: the "fuzz targets build" step of scripts/test.sh).
# Installs the pinned cargo-fuzz into ~/.cargo/bin when it is missing or another version.
#
# Works on stable Rust: the targets are built with `--sanitizer none`, which still passes
# cargo-fuzz's SanitizerCoverage flags (-Cpasses=sancov-module, inline 8-bit counters, pc table,
# trace-compares: all stable -C options), so libFuzzer gets real coverage feedback. Debug
# assertions and overflow checks are on (cargo-fuzz's default without -O). AddressSanitizer needs
# -Zsanitizer, which stable rustc refuses; FUZZ_SANITIZER=address opts into it by setting
# RUSTC_BOOTSTRAP=1 (the parsers are safe Rust, so it mostly guards httparse's unsafe code).
#
# After building, each binary is started once with -runs=0 to check that libFuzzer sees the
# coverage counters; the script fails if it does not. A warm run (nothing changed) takes ~1 s.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SANITIZER=${FUZZ_SANITIZER:-none}
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version 2>/dev/null | grep -qxF "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "fuzz-build: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

if [ "$SANITIZER" != none ]; then
    export RUSTC_BOOTSTRAP=1
fi

cargo fuzz build --sanitizer "$SANITIZER"

triple=$(rustc -vV | sed -n 's/^host: //p')
for target in $(cargo fuzz list); do
    bin=fuzz/target/$triple/release/$target
    # Capture first: `grep -q` closing the pipe early would trip pipefail.
    out=$("$bin" -runs=0 2>&1) || true
    if ! grep -q 'inline 8-bit counters' <<<"$out"; then
        echo "fuzz-build: $bin has no SanitizerCoverage counters" >&2
        exit 1
    fi
    echo "fuzz-build: $bin ok ($(grep -o '[0-9]* inline 8-bit counters' <<<"$out" | head -n 1))"
done
