#!/usr/bin/env bash
# Every test: formatting, the native unit and flow tests of the core, the fuzz targets' build,
# the .wasm build (size checked), the native build (.so), and the end-to-end tests against real
# Envoy, oidc-provider and headless chromium, for both builds (ENVOY_WAM_BUILDS, default both).
# Installs what it needs first (scripts/setup.sh). CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")"

scripts/setup.sh
cargo fmt --all -- --check
cargo test --all-targets --all-features
# Every shipped configuration passes the config checker (errors fail the run; warnings, such
# as the demos' public key, are printed).
cargo run --quiet --bin envoy-wam -- check envoy/envoy-demo.yaml envoy/envoy-native-demo.yaml envoy/envoy-compose.yaml envoy/envoy-lds.yaml
scripts/fuzz-build.sh  # the fuzz targets still build (running them: scripts/fuzz.sh)
./wasm-build.sh >/dev/null
./native-build.sh >/dev/null
ENVOY_WAM_BUILDS=${ENVOY_WAM_BUILDS:-wasm,native} .venv/bin/pytest -q -p no:cacheprovider integration "$@"
