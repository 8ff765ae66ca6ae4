#!/usr/bin/env bash
# Builds every cargo-fuzz target (fuzz/), so CI proves they still compile against the crate.
# Installs what is missing first (the nightly toolchain, cargo-fuzz). Quiet when all is well;
# on failure prints the build output and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
fi

# -O -a: optimised, with debug assertions and overflow checks (what scripts/fuzz.sh runs).
if ! cargo +nightly fuzz build -O -a >"$log" 2>&1; then
    cat "$log" >&2
    echo "fuzz-build: building the fuzz targets failed" >&2
    exit 1
fi
