#!/usr/bin/env bash
# The demo: Envoy with envoy-wam on http://localhost:8080 in front of an echo backend, the
# OpenID Provider on http://localhost:9000, and a partner's OpenID Provider (a second
# oidc-provider, its own users) on http://localhost:9001 for the /partner/ application.
# Stays in the foreground; Ctrl-C stops everything.
# `envoy/demo.sh --lds`: the same demo with its listener (and the filter's configuration) from
# envoy/lds/listener.yaml, which Envoy watches: move a new version over it to reconfigure live.
# `--native` runs the native build (an Envoy dynamic module, envoy/envoy-native-demo.yaml)
# instead of the .wasm (envoy/envoy-demo.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
config=envoy/envoy-demo.yaml
case "${1:-}" in
--lds) config=envoy/envoy-lds.yaml ;;
--native) config=envoy/envoy-native-demo.yaml ;;
"") ;;
*) echo "usage: envoy/demo.sh [--lds | --native]" >&2; exit 2 ;;
esac

scripts/setup.sh
if [ "$config" = envoy/envoy-native-demo.yaml ]; then
    ./native-build.sh >/dev/null
else
    ./wasm-build.sh >/dev/null
fi

pids=()
stop() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo stopped"
}
trap stop EXIT INT TERM

OP_HOST=127.0.0.1 OP_PORT=9000 OP_ISSUER=http://localhost:9000 GATEWAY_URLS=http://localhost:8080,http://127.0.0.1:8080 \
    node integration/op/op.mjs &
pids+=($!)
# The partner OP: its own users and groups, its clients' callback and back-channel paths are the
# gateway's web session `partner`, its cookies named apart from the first OP's (same host).
OP_HOST=127.0.0.1 OP_PORT=9001 OP_ISSUER=http://localhost:9001 GATEWAY_URLS=http://localhost:8080,http://127.0.0.1:8080 \
    GATEWAY_CALLBACK_PATH=/pa/oidc/cb/partner BACKCHANNEL_PATH=/pa/oidc/backchannel/partner \
    POST_LOGOUT_PATHS=/partner/ OP_COOKIE_PREFIX=partner \
    OP_GROUPS='{"carol": ["partners", "buyers"], "dave": ["partners"]}' \
    node integration/op/op.mjs &
pids+=($!)
.venv/bin/python integration/backend/echo.py 8081 &
pids+=($!)
.venv/bin/envoy -c "$config" --concurrency 2 --disable-hot-restart \
    -l warn --component-log-level wasm:info,dynamic_modules:info &
pids+=($!)

up() {
    curl -sf -o /dev/null http://127.0.0.1:8080/pa/heartbeat.ping &&
        curl -sf -o /dev/null http://127.0.0.1:9000/.well-known/openid-configuration &&
        curl -sf -o /dev/null http://127.0.0.1:9001/.well-known/openid-configuration &&
        curl -sf -o /dev/null http://127.0.0.1:8081/
}
for _ in $(seq 150); do
    up && break
    sleep 0.2
done
if ! up; then
    echo "demo: not up after 30s (are ports 8080, 8081, 9000, 9001 and 9901 free?)" >&2
    exit 1
fi
cat <<MSG

  envoy-wam demo is up ($config). Log in as alice (groups staff, admins) or bob (staff), any password.
    protected app:    http://localhost:8080/
    admins only:      http://localhost:8080/admin/   (bob gets 403; decisions audited in the log)
    no login needed:  http://localhost:8080/public/
    JWT mapping:      http://localhost:8080/jwt-site/ (the backend gets x-site-jwt, signed by the
                      gateway; keys at http://localhost:8080/pa/authtoken/JWKS)
    token exchange:   http://localhost:8080/sts-site/ (the backend gets a token from the STS)
    logout:           http://localhost:8080/pa/oidc/logout
    OpenID Provider:  http://localhost:9000/
  A second OP, for partners (web session "partner": its own cookie PA.partner and headers
  x-partner-*). Log in as carol (groups partners, buyers) or dave (partners), any password:
    partner app:      http://localhost:8080/partner/  (logging in here does not log you into /,
                      nor the reverse)
    buyers only:      http://localhost:8080/partner/orders/  (dave gets 403)
    partner logout:   http://localhost:8080/pa/oidc/logout/partner  (ends only the partner session)
    partner OP:       http://localhost:9001/
  An API call with an OAuth access token (the API accepts tokens of both OPs: use 9001 for the
  partner's):
    TOKEN=\$(curl -s -u api_client:demo-secret-change-me-0123456789abcdef http://localhost:9000/token \\
      -d grant_type=client_credentials -d scope=orders:read -d resource=https://api.example.test | jq -r .access_token)
    curl -H "Authorization: Bearer \$TOKEN" http://localhost:8080/api/orders/1
  Metrics (examples/prometheus.yml scrapes them; examples/grafana-envoy-wam.json shows them):
    curl -s http://localhost:9901/stats/prometheus | grep '^envoy_wam_'
  Envoy's access log (this terminal) names each request's subject, application, resource and
  decision; http://localhost:8080/pa/heartbeat.ping says whether sign-in can work.
  Press Ctrl-C to stop.

MSG
wait -n "${pids[@]}"
