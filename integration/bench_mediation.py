"""Benchmark (issue 5): a valid-session request whose mediated token is cached, against the same
request without mediation, on one Envoy worker (target: mediated / plain >= 0.95). Also a JWT
identity mapping (signed once, cached), and no filter and a no-op wasm filter for reference;
the native build (target/libenvoy_wam.so, issue 13) on the same three paths as `so-*`.
With --compare, one more listener runs another build of envoy-wam (e.g. the previous release)
with the same configuration on the STS path.

envoy-wam has one policy: /plain (no mediation), /sts (token exchange at the real
oidc-provider as STS, which verifies the gateway's subject token at <gateway>/pa/authtoken/JWKS)
and /jwt (JWT identity mapping). Each variant is its own listener (with its own wasm VM and
caches) of ONE Envoy (concurrency 1), measured in interleaved rounds; Envoy on CPU 0, wrk on
CPU 1 (integration/benchlib.py). The first request to each fills its cache; wrk then measures
cached requests only (the OP's exchange count is checked before and after). Routes answer
with direct_response.

How to read it: per variant, median req/s and Envoy's on-CPU µs per request, and the extra µs
over no filter; then comparisons (medians of per-round values) as req/s ratio and CPU µs
difference: "mediated / plain" is what injecting a cached mediated token costs (target >= 0.95;
the µs difference is the absolute cost). The last line is the report as JSON.

usage: .venv/bin/python integration/bench_mediation.py [--rounds N] [--seconds S] [--connections C] [--compare OTHER.wasm]
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import jwtutil  # noqa: E402
import stack  # noqa: E402
from benchlib import Variant, copy  # noqa: E402


def mediation_config(base, key, op):
    cfg = copy(base)
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
    return cfg


def exchanges(op_port):
    stats = stack.op_stats(op_port)
    return stats.get("grant:token-exchange", 0), stats.get("grant:token-exchange:issued", 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_arguments(ap)
    args = ap.parse_args()
    benchlib.check_compare(args)

    stack.build_wasm((stack.NOOP_DIR,), native=True)
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-mediation-")
    op_port = stack.free_port()
    # Ports first: the OP must know every gateway listener (redirect URIs, and the JWKS of the
    # subject tokens its STS accepts).
    names = ["none", "noop", "plain", "sts", "jwt", "so-plain", "so-sts", "so-jwt"] + (["ref-sts"] if args.compare else [])
    ports = {n: stack.free_port() for n in names}
    gateways = [f"http://127.0.0.1:{ports[n]}" for n in names if n not in ("none", "noop")]
    op = stack.start_op(op_port, gateways, logdir=logdir, env={"STS_TOKEN_TTL": "3600"})
    envoy = None
    try:
        base = benchlib.session_config(op.issuer)
        headers = benchlib.session_headers(benchlib.mint_cookie(base, logdir))
        cfg = mediation_config(base, jwtutil.Key("ES256", "bench-gw"), op)
        variants = [
            Variant("none", "no filter", "none", path="/plain/x", headers=headers),
            Variant("noop", "no-op wasm filter", "noop", path="/plain/x", headers=headers),
            Variant("plain", "envoy-wam, no mediation", "wam", cfg, op_port=op_port, path="/plain/x", headers=headers),
            Variant("sts", "envoy-wam, STS token (cached)", "wam", cfg, op_port=op_port, path="/sts/x", headers=headers),
            Variant("jwt", "envoy-wam, JWT mapping (cached)", "wam", cfg, op_port=op_port, path="/jwt/x", headers=headers),
            # Issue 13: the native build (the .so), same configuration.
            Variant("so-plain", "native build, no mediation", "wam-native", cfg, op_port=op_port, path="/plain/x", headers=headers),
            Variant("so-sts", "native build, STS token (cached)", "wam-native", cfg, op_port=op_port, path="/sts/x", headers=headers),
            Variant("so-jwt", "native build, JWT mapping (cached)", "wam-native", cfg, op_port=op_port, path="/jwt/x", headers=headers),
        ]
        if args.compare:
            variants.append(Variant("ref-sts", "--compare build, STS (cached)", "wam", cfg, wasm=os.path.abspath(args.compare), op_port=op_port, path="/sts/x", headers=headers))
        for v in variants:
            v.port = ports[v.name]

        envoy = benchlib.start(variants, logdir)
        benchlib.expect_200(variants)  # allowed, and the caches filled
        sts_listeners = sum(1 for v in variants if v.path.startswith("/sts/"))
        before = exchanges(op_port)
        assert before == (sts_listeners, sts_listeners), f"expected {sts_listeners} exchange(s) to fill the caches, saw (asked, issued) {before}"
        results = benchlib.measure(envoy, variants, args.rounds, args.seconds, args.connections)
        after = exchanges(op_port)
        assert after == before, f"the measured requests made more exchanges ({before} -> {after}): the cache did not hold"
    finally:
        if envoy:
            envoy.stop()
        op.stop()

    comparisons = [
        ("mediated (STS, cached) / plain", "sts", "plain", "target >= 0.95"),
        ("JWT identity mapping / plain", "jwt", "plain", ""),
        ("plain / no-op wasm", "plain", "noop", ""),
        ("envoy-wam / --compare build (STS)", "sts", "ref-sts", "no regression: ~1.0, ~+0 µs"),
        ("native: mediated (STS, cached) / plain", "so-sts", "so-plain", "issue 13; target >= 0.95"),
        ("native: JWT identity mapping / plain", "so-jwt", "so-plain", ""),
        ("native / wasm, STS (cached)", "so-sts", "sts", "issue 13: native vs wasm"),
        ("native plain / no filter", "so-plain", "none", ""),
    ]
    benchlib.report(
        "valid-session request with a cached mediated token, one Envoy, 1 worker, one listener per variant",
        variants,
        results,
        comparisons,
        benchlib.settings(args),
        extra={"bench": "mediation"},
    )


if __name__ == "__main__":
    main()
