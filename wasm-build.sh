#!/usr/bin/env bash
# Builds the release filter: target/wasm32-wasip1/release/envoy_wam.wasm (and prints path, size, sha256).
set -euo pipefail
cd "$(dirname "$0")"
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    rustup target add wasm32-wasip1 >&2
fi
cargo build --quiet --release --target wasm32-wasip1 --lib "$@" >&2
wasm=target/wasm32-wasip1/release/envoy_wam.wasm
size=$(stat -c %s "$wasm")
echo "$PWD/$wasm"
echo "size: $size bytes; sha256: $(sha256sum "$wasm" | cut -d' ' -f1)" >&2
if [ "$size" -gt 1048576 ]; then echo "error: $wasm is larger than 1 MiB" >&2; exit 1; fi
