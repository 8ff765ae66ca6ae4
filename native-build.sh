#!/usr/bin/env bash
# Builds the native filter, target/libenvoy_wam.so: the same core as target/envoy_wam.wasm,
# loaded by Envoy as a dynamic module (ABI v0.2.0 of Envoy 1.40; see README, "Choosing a
# build"). Cargo profile `native`: release with opt-level 3 and panic = "unwind" (every hook
# catches panics; see src/host/native/abi/hooks.rs). Prints the .so's path (stdout) and its size and
# sha256 (stderr).
set -euo pipefail
cd "$(dirname "$0")"
cargo build --quiet --profile native --lib "$@" >&2
so=target/libenvoy_wam.so
cp target/native/libenvoy_wam.so "$so.tmp"
mv "$so.tmp" "$so"
echo "$PWD/$so"
echo "size: $(stat -c %s "$so") bytes; sha256: $(sha256sum "$so" | cut -d' ' -f1)" >&2
