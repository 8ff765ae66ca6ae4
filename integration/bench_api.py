"""Benchmark (issue 4): requests per second for a request with a cached bearer JWT, on one Envoy
worker, through envoy-wam against Envoy's native jwt_authn filter (JWT cache on) validating an
equivalent token, with a no-op wasm filter and no filter for reference. RS256 and ES256.

The token is signed by a key generated here. jwt_authn gets the public key inline
(local_jwks); envoy-wam fetches the same JWKS from a tiny HTTP server at <issuer>/jwks (its
cluster `op`), once. Both check iss, aud and exp and put `sub` into x-wam-user; envoy-wam's
policy is one API application with one resource and no rules. Routes answer with
direct_response. Interleaved rounds; the report is medians and the median of per-round ratios
(target: envoy-wam / native >= 1.0).

usage: .venv/bin/python integration/bench_api.py [--rounds N] [--seconds S] [--connections C]
"""

import argparse
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwtutil  # noqa: E402
import stack  # noqa: E402
from bench_session import wrk  # noqa: E402

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
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--only", help="comma-separated subset of targets (none, noop, native-RS256, wam-RS256, native-ES256, wam-ES256)")
    args = ap.parse_args()

    stack.build_wasm((stack.NOOP_DIR,))
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-api-")
    keys = {"RS256": jwtutil.Key("RS256", "bench-rsa"), "ES256": jwtutil.Key("ES256", "bench-ec")}
    jwks = {"keys": [k.jwk for k in keys.values()]}
    server = serve_jwks(jwks)
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    now = int(time.time())
    tokens = {
        alg: k.sign({"iss": issuer, "aud": AUDIENCE, "sub": "api_client", "client_id": "api_client", "scope": "orders:read", "iat": now, "exp": now + 86400}, typ="at+jwt")
        for alg, k in keys.items()
    }

    targets = {}  # name -> (url, headers)
    procs = []
    try:
        plan = [("none", "none", None, [], "RS256"), ("noop", "noop", None, [], "RS256")]
        for alg in ("RS256", "ES256"):
            plan.append((f"native-{alg}", "none", None, [jwt_authn_filter(issuer, jwks)], alg))
            plan.append((f"wam-{alg}", "wam", wam_api_config(issuer), [], alg))
        if args.only:
            plan = [t for t in plan if t[0] in args.only.split(",")]
        for name, kind, cfg, native, alg in plan:
            port = stack.free_port()
            bootstrap = stack.envoy_bootstrap(port, stack.free_port(), kind, cfg, op_port=server.server_address[1] if kind == "wam" else None, http_filters=native)
            p = stack.start_envoy(port, bootstrap, concurrency=1, logdir=logdir, name=f"bench-{name}")
            if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(p.p.pid)], capture_output=True)
            procs.append(p)
            targets[name] = (p.url + "/orders/1", [f"authorization: Bearer {tokens[alg]}", "accept: application/json", "x-wam-user: spoofed"])
        # Both filters really validate: the token passes, a tampered one does not.
        for name in [n for n in ("native-RS256", "wam-RS256", "native-ES256", "wam-ES256") if n in targets]:
            url, headers = targets[name]
            hdrs = dict(h.split(": ", 1) for h in headers)
            with urllib.request.urlopen(urllib.request.Request(url, headers=hdrs)) as r:
                assert r.status == 200, (name, r.status)
            hdrs["authorization"] = hdrs["authorization"][:-6] + "AAAAAA"
            try:
                urllib.request.urlopen(urllib.request.Request(url, headers=hdrs))
                raise AssertionError(f"{name} let a tampered token through")
            except urllib.error.HTTPError as e:
                assert e.code == 401, (name, e.code)

        for url, headers in targets.values():  # warm-up (JIT, caches, connections)
            wrk(url, 1, args.connections, headers)
        results = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (url, headers) in targets.items():
                results[name].append(wrk(url, args.seconds, args.connections, headers))
    finally:
        for p in procs:
            p.stop()
        server.shutdown()

    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"cached bearer JWT, 1 Envoy worker, {args.rounds} rounds x {args.seconds}s, {args.connections} connections")
    for name in targets:
        runs = " ".join(f"{v:.0f}" for v in results[name])
        print(f"  {name:14} median {med[name]:8.0f} req/s   ({runs})")

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(results[a], results[b]))

    wanted = [
        ("envoy-wam / native jwt_authn (RS256)", "wam-RS256", "native-RS256", "target >= 1.0"),
        ("envoy-wam / native jwt_authn (ES256)", "wam-ES256", "native-ES256", "target >= 1.0"),
        ("envoy-wam (RS256) / no-op wasm", "wam-RS256", "noop", ""),
        ("native jwt_authn (RS256) / no filter", "native-RS256", "none", ""),
        ("no-op wasm / no filter", "noop", "none", ""),
    ]
    ratios = {label: (ratio(a, b), note) for label, a, b, note in wanted if a in results and b in results}
    print("  ratios (median of per-round ratios):")
    for label, (value, note) in ratios.items():
        print(f"    {label:38} {value:.3f}   {note}")
    print(json.dumps({"median_rps": med, "ratios": {k: round(v, 3) for k, (v, _) in ratios.items()}}))


if __name__ == "__main__":
    main()
