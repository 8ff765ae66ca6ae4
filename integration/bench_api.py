"""Benchmark (issue 4): a request with a cached bearer JWT, on one Envoy worker, through
envoy-wam against Envoy's native jwt_authn filter (JWT cache on) validating an equivalent
token, with a no-op wasm filter and no filter for reference; RS256 and ES256. With --compare,
one more listener per algorithm runs another build of envoy-wam (e.g. the previous release)
with the same configuration.

The token is signed by a key generated here. jwt_authn gets the public key inline
(local_jwks); envoy-wam fetches the same JWKS from a tiny HTTP server at <issuer>/jwks (its
cluster `op`), once. Both check iss, aud and exp and put `sub` into x-wam-user; envoy-wam's
policy is one API application with one resource and no rules. Both must accept the token and
refuse a tampered one (401) before anything is measured. Routes answer with direct_response.

All variants are listeners of ONE Envoy (concurrency 1), measured in interleaved rounds; Envoy
on CPU 0, wrk on CPU 1 (integration/benchlib.py).

How to read it: per variant, median req/s and Envoy's on-CPU µs per request, and the extra µs
over no filter (what validating a cached token costs); then comparisons (medians of per-round
values) as req/s ratio and CPU µs difference. Target: envoy-wam / native >= 1.0 (a negative µs
difference means envoy-wam is cheaper). The last line is the report as JSON.

usage: .venv/bin/python integration/bench_api.py [--rounds N] [--seconds S] [--connections C] [--compare OTHER.wasm] [--only NAMES]
"""

import argparse
import http.server
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import jwtutil  # noqa: E402
import stack  # noqa: E402
from benchlib import Variant  # noqa: E402

AUDIENCE = "https://api.example.test"


def serve_jwks(jwks):
    body = json.dumps(jwks).encode()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200 if self.path == "/jwks" else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def wam_api_config(issuer):
    cfg = stack.wam_config(issuer)
    cfg["identity_headers"] = [{"header": "x-wam-user", "claim": "sub"}]
    cfg["api"] = {"realm": "bench", "algorithms": ["RS256", "ES256"], "cache_max_ttl_s": 3600}
    cfg["policy"] = {
        "default_decision": "deny",
        "applications": [
            {
                "name": "api",
                "hosts": ["*"],
                "context_root": "/",
                "type": "api",
                "api": {"validation": "jwt", "audiences": [AUDIENCE], "forward_token": True},
                "resources": [{"name": "all", "paths": ["/*"]}],
            }
        ],
    }
    return cfg


def jwt_authn_filter(issuer, jwks):
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {
                "bench": {
                    "issuer": issuer,
                    "audiences": [AUDIENCE],
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "forward": True,
                    "claim_to_headers": [{"header_name": "x-wam-user", "claim_name": "sub"}],
                    "jwt_cache_config": {"jwt_cache_size": 1000},
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}],
        },
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_arguments(ap)
    ap.add_argument("--only", help="comma-separated subset of variants (none, noop, native-RS256, wam-RS256, so-RS256, ref-RS256, native-ES256, wam-ES256, so-ES256, ref-ES256; native- is Envoy's jwt_authn, so- envoy-wam's native build)")
    args = ap.parse_args()
    benchlib.check_compare(args)

    stack.build_wasm((stack.NOOP_DIR,), native=True)
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-api-")
    keys = {"RS256": jwtutil.Key("RS256", "bench-rsa"), "ES256": jwtutil.Key("ES256", "bench-ec")}
    jwks = {"keys": [k.jwk for k in keys.values()]}
    server = serve_jwks(jwks)
    jwks_port = server.server_address[1]
    issuer = f"http://127.0.0.1:{jwks_port}"
    now = int(time.time())
    tokens = {
        alg: k.sign({"iss": issuer, "aud": AUDIENCE, "sub": "api_client", "client_id": "api_client", "scope": "orders:read", "iat": now, "exp": now + 86400}, typ="at+jwt")
        for alg, k in keys.items()
    }

    def headers(alg):
        return [f"authorization: Bearer {tokens[alg]}", "accept: application/json", "x-wam-user: spoofed"]

    path = "/orders/1"
    variants = [
        Variant("none", "no filter", "none", path=path, headers=headers("RS256")),
        Variant("noop", "no-op wasm filter", "noop", path=path, headers=headers("RS256")),
    ]
    for alg in ("RS256", "ES256"):
        variants.append(Variant(f"native-{alg}", f"native jwt_authn, {alg}", "none", http_filters=[jwt_authn_filter(issuer, jwks)], path=path, headers=headers(alg)))
        variants.append(Variant(f"wam-{alg}", f"envoy-wam, {alg}", "wam", wam_api_config(issuer), op_port=jwks_port, path=path, headers=headers(alg)))
        # Issue 13: envoy-wam's native build (the .so), same configuration.
        variants.append(Variant(f"so-{alg}", f"envoy-wam native build, {alg}", "wam-native", wam_api_config(issuer), op_port=jwks_port, path=path, headers=headers(alg)))
        if args.compare:
            variants.append(Variant(f"ref-{alg}", f"--compare build, {alg}", "wam", wam_api_config(issuer), wasm=os.path.abspath(args.compare), op_port=jwks_port, path=path, headers=headers(alg)))
    if args.only:
        variants = [v for v in variants if v.name in args.only.split(",")]

    def tampered_refused(envoy):
        """The filters really validate: a tampered token is refused."""
        for v in variants:
            if v.name.split("-")[0] in ("native", "wam", "ref", "so"):
                hdrs = v.header_dict()
                hdrs["authorization"] = hdrs["authorization"][:-6] + "AAAAAA"
                status, _ = benchlib.get(v, hdrs)
                if status != 401:
                    raise RuntimeError(f"{v.name} answered a tampered token with {status}, not 401")

    try:
        results = benchlib.run(variants, logdir, args, tampered_refused)
    finally:
        server.shutdown()

    comparisons = [
        ("envoy-wam / native jwt_authn (RS256)", "wam-RS256", "native-RS256", "target >= 1.0"),
        ("envoy-wam / native jwt_authn (ES256)", "wam-ES256", "native-ES256", "target >= 1.0"),
        ("envoy-wam (RS256) / no-op wasm", "wam-RS256", "noop", ""),
        ("native jwt_authn (RS256) / no filter", "native-RS256", "none", ""),
        ("no-op wasm / no filter", "noop", "none", ""),
        ("envoy-wam / --compare build (RS256)", "wam-RS256", "ref-RS256", "no regression: ~1.0, ~+0 µs"),
        ("envoy-wam .so / native jwt_authn (RS256)", "so-RS256", "native-RS256", "issue 13 target >= 1.0"),
        ("envoy-wam .so / native jwt_authn (ES256)", "so-ES256", "native-ES256", "issue 13 target >= 1.0"),
        ("envoy-wam .so / .wasm (RS256)", "so-RS256", "wam-RS256", "issue 13: native vs wasm"),
        ("envoy-wam / --compare build (ES256)", "wam-ES256", "ref-ES256", "no regression: ~1.0, ~+0 µs"),
    ]
    benchlib.report(
        "cached bearer JWT, one Envoy, 1 worker, one listener per variant",
        variants,
        results,
        comparisons,
        benchlib.settings(args),
        extra={"bench": "api"},
    )


if __name__ == "__main__":
    main()
