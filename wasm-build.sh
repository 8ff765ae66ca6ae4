#!/usr/bin/env bash
# Builds the release filter, target/envoy_wam.wasm, and prints its path (stdout), size and
# sha256 (stderr). cargo builds it for wasm32-wasip1; binaryen's wasm-opt -Oz then shrinks it
# (by about a fifth) and the result must stay under the project's budget of 1.5 MiB. wasm-opt runs only when cargo's
# output changed.
set -euo pipefail
cd "$(dirname "$0")"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    rustup target add wasm32-wasip1 >&2
fi
if ! command -v wasm-opt >/dev/null; then
    echo "error: wasm-opt (Debian package binaryen) is missing; scripts/setup.sh installs it" >&2
    exit 1
fi
cargo build --quiet --release --target wasm32-wasip1 --lib "$@" >&2
raw=target/wasm32-wasip1/release/envoy_wam.wasm
wasm=target/envoy_wam.wasm
stamp=target/envoy_wam.wasm.input-sha256
sum=$(sha256sum "$raw" | cut -d' ' -f1)
if [ ! -f "$wasm" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    # The features are the ones rustc's wasm32-wasip1 target emits; V8 in Envoy runs them all.
    wasm-opt -Oz --strip-debug --strip-producers \
        --enable-bulk-memory --enable-sign-ext --enable-mutable-globals \
        --enable-nontrapping-float-to-int --enable-multivalue --enable-reference-types \
        "$raw" -o "$wasm.tmp"
    mv "$wasm.tmp" "$wasm"
    echo "$sum" >"$stamp"
fi
size=$(stat -c %s "$wasm")
echo "$PWD/$wasm"
echo "size: $size bytes (before wasm-opt: $(stat -c %s "$raw")); sha256: $(sha256sum "$wasm" | cut -d' ' -f1)" >&2
if [ "$size" -gt 1572864 ]; then echo "error: $wasm is larger than the 1.5 MiB budget" >&2; exit 1; fi
