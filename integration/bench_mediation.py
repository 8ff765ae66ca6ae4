"""Benchmark (issue 5): a valid-session request whose mediated token is cached, against the same
request without mediation, on one Envoy worker (target: mediated / plain >= 0.95). Also a JWT
identity mapping (signed once, cached) and a no-op wasm filter for reference.

One Envoy with one policy: /plain (no mediation), /sts (token exchange at the real
oidc-provider as STS, which verifies the gateway's subject token at <gateway>/pa/authtoken/JWKS)
and /jwt (JWT identity mapping). The first request to each fills the cache; wrk then measures
cached requests only (the OP's exchange count is checked before and after). Routes answer
with direct_response. Interleaved rounds, medians of per-round ratios.

usage: .venv/bin/python integration/bench_mediation.py [--rounds N] [--seconds S] [--connections C]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwtutil  # noqa: E402
import stack  # noqa: E402
from bench_session import mint_cookie, wrk  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()

    stack.build_wasm((stack.NOOP_DIR,))
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-mediation-")
    gw_port, op_port = stack.free_port(), stack.free_port()
    gw_url = f"http://127.0.0.1:{gw_port}"
    op = stack.start_op(op_port, [gw_url], logdir=logdir, env={"STS_TOKEN_TTL": "3600"})
    procs = [op]
    try:
        base = stack.wam_config(op.issuer, **{"session.activity_refresh_s": 3600, "session.idle_timeout_s": 7200})
        cookie = mint_cookie(base, logdir)
        key = jwtutil.Key("ES256", "bench-gw")
        cfg = json.loads(json.dumps(base))
        cache = {"max_entries": 10000, "idle_timeout_s": 1800, "max_lifetime_s": 14400}
        cfg["site_authenticators"] = [
            {
                "name": "sts",
                "type": "token_exchange",
                "sts": {"cluster": "op", "token_endpoint": f"{op.issuer}/token", "client_id": "pa_sts", "client_secret": stack.CLIENT_SECRET, "auth_method": "client_secret_basic", "timeout_ms": 3000},
                "requested_token_type": stack.TT_ACCESS_TOKEN,
                "audience": "https://orders.internal",
                "inject": {"header": "authorization"},
                "cache": cache,
            },
            {"name": "jwtmap", "type": "jwt", "audience": "https://orders.internal", "claims": ["sub", "email", "groups"], "lifetime_s": 3600, "inject": {"header": "x-wam-jwt"}, "cache": cache},
        ]
        cfg["authtoken"] = {"issuer": "envoy-wam", "lifetime_s": 300, "keys": [{"kid": key.kid, "alg": "ES256", "private_key_pem": key.pem}]}

        def app(name, root, **extra):
            return {"name": name, "hosts": ["*"], "context_root": root, "type": "web", "resources": [{"name": "all", "paths": ["/*"]}], **extra}

        cfg["policy"] = {"default_decision": "deny", "applications": [app("plain", "/plain"), app("sts", "/sts", site_authenticator="sts"), app("jwt", "/jwt", site_authenticator="jwtmap")]}

        headers = [f"cookie: theme=dark; PA.wam={cookie}", "accept: text/html", "x-wam-user: spoofed"]
        wam = stack.start_envoy(gw_port, stack.envoy_bootstrap(gw_port, stack.free_port(), "wam", cfg, op_port=op_port), concurrency=1, logdir=logdir, name="bench-wam")
        procs.append(wam)
        noop_port = stack.free_port()
        noop = stack.start_envoy(noop_port, stack.envoy_bootstrap(noop_port, stack.free_port(), "noop"), concurrency=1, logdir=logdir, name="bench-noop")
        procs.append(noop)
        if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            for p in (wam, noop):
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(p.p.pid)], capture_output=True)
        targets = {"noop": noop.url + "/plain/x", "plain": wam.url + "/plain/x", "sts": wam.url + "/sts/x", "jwt": wam.url + "/jwt/x"}
        hdrs = dict(h.split(": ", 1) for h in headers)
        for name in ("plain", "sts", "jwt"):  # allowed, and the caches filled
            with urllib.request.urlopen(urllib.request.Request(targets[name], headers=hdrs)) as r:
                assert r.status == 200, (name, r.status)
        exchanges = stack.op_stats(op_port).get("grant:token-exchange:issued", 0)
        assert exchanges == 1, f"expected one exchange to fill the cache, saw {exchanges}"

        for url in targets.values():
            wrk(url, 1, args.connections, headers)
        results = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                results[name].append(wrk(url, args.seconds, args.connections, headers))
        after = stack.op_stats(op_port).get("grant:token-exchange", 0)
        assert after == 1, f"the measured requests made {after - 1} more exchanges: the cache did not hold"
    finally:
        for p in reversed(procs):
            p.stop()

    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"valid-session request, 1 Envoy worker, {args.rounds} rounds x {args.seconds}s, {args.connections} connections")
    for name in targets:
        print(f"  {name:6} median {med[name]:8.0f} req/s   ({' '.join(f'{v:.0f}' for v in results[name])})")

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(results[a], results[b]))

    ratios = {
        "mediated (STS, cached) / plain": (ratio("sts", "plain"), "target >= 0.95"),
        "JWT identity mapping / plain": (ratio("jwt", "plain"), ""),
        "plain / no-op wasm": (ratio("plain", "noop"), ""),
    }
    for label, (value, note) in ratios.items():
        print(f"    {label:32} {value:.3f}   {note}")
    print(json.dumps({"median_rps": med, "ratios": {k: round(v, 3) for k, (v, _) in ratios.items()}}))


if __name__ == "__main__":
    main()
