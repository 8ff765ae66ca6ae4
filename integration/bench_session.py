"""Benchmark: a request with a valid session cookie, on one Envoy worker, through envoy-wam
against no filter and a no-op wasm filter. A further listener runs integration/floor-filter,
which makes only the host calls envoy-wam needs for such a request and nothing else: it shows
what the proxy-wasm boundary itself costs. With --compare, one more listener runs another
build of envoy-wam (e.g. the previous release) with the same configuration. Two more run the
native build (target/libenvoy_wam.so, an Envoy dynamic module) with the same configurations.

All variants are listeners of ONE Envoy (concurrency 1), measured in interleaved rounds; Envoy
runs on CPU 0 and wrk on CPU 1 (integration/benchlib.py). Routes answer with Envoy's
direct_response, so the numbers measure the filter chain, not a backend.

How to read it: per variant, the median req/s and Envoy's on-CPU time per request (µs, the
whole process; the worker thread alone in brackets) and the extra µs over no filter, which
is the filter's own cost per request and the steadier figure. Then comparisons, each a median
of per-round values: the req/s ratio and the CPU µs/request difference. Targets: envoy-wam /
no-op wasm >= 0.85 (the web-session issue); "envoy-wam / --compare build" near 1.0 and near
+0 µs means no regression. The last line is the report as JSON.

usage: .venv/bin/python integration/bench_session.py [--rounds N] [--seconds S] [--connections C] [--compare OTHER.wasm]
"""

import argparse
import os
import sys
import tempfile
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import stack  # noqa: E402
from benchlib import Variant, copy  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_arguments(ap)
    args = ap.parse_args()
    benchlib.check_compare(args)

    stack.build_wasm((stack.NOOP_DIR, stack.FLOOR_DIR), native=True)
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-")
    # The filter as the demo runs it (three identity headers), and with one identity header:
    # each header is one more host call on every request, the dominant cost of the hot path.
    # No policy (the implicit one: every path needs a session); valid for older builds too.
    config = benchlib.session_config()
    config_1h = copy(config)
    config_1h["identity_headers"] = config["identity_headers"][:1]
    headers = benchlib.session_headers(benchlib.mint_cookie(config, logdir))
    # Issue 10: the encrypted cookie (the default, above) against the signed one, and the hot
    # path with a revocation list that is not empty.
    config_signed = copy(config)
    config_signed["session"]["cookie_type"] = "signed"
    headers_signed = benchlib.session_headers(benchlib.mint_cookie(config_signed, logdir))

    variants = [
        Variant("none", "no filter", "none", headers=headers),
        Variant("noop", "no-op wasm filter", "noop", headers=headers),
        Variant("floor", "host calls only (floor-filter)", "noop", wasm=stack.FLOOR_WASM, headers=headers),
        Variant("wam", "envoy-wam, 3 identity headers", "wam", config, headers=headers),
        Variant("wam-1h", "envoy-wam, 1 identity header", "wam", config_1h, headers=headers),
        Variant("wam-signed", "envoy-wam, signed cookie", "wam", config_signed, headers=headers_signed),
        Variant("wam-revoked", "envoy-wam, 200 revocations listed", "wam", config, headers=headers),
        # Issue 13: the same core as an Envoy dynamic module (target/libenvoy_wam.so).
        Variant("native", "envoy-wam native, 3 identity headers", "wam-native", config, headers=headers),
        Variant("native-1h", "envoy-wam native, 1 identity header", "wam-native", config_1h, headers=headers),
    ]
    if args.compare:
        variants.append(Variant("wam-ref", "--compare build, 3 headers", "wam", config, wasm=os.path.abspath(args.compare), headers=headers_signed))

    envoy = benchlib.start(variants, logdir)
    try:
        # 200 front-channel logouts of other OP sessions: the list is not empty, and a session
        # is looked up in it (once per change of the list, then the hot path skips it).
        revoked = next(v for v in variants if v.name == "wam-revoked")
        iss = urllib.parse.quote(config["op"]["issuer"], safe="")
        for i in range(200):
            status, _ = benchlib.get(revoked, headers={}, path=f"/pa/oidc/frontchannel?iss={iss}&sid=other-{i}")
            assert status == 200, status
        # The filter must really be on the session path: a 200 with identity, not a redirect.
        benchlib.expect_200(variants)
        results = benchlib.measure(envoy, variants, args.rounds, args.seconds, args.connections)
    finally:
        envoy.stop()

    comparisons = [
        ("envoy-wam (3 headers) / no-op wasm", "wam", "noop", "target >= 0.85"),
        ("envoy-wam (1 header)  / no-op wasm", "wam-1h", "noop", ""),
        ("floor (host calls only) / no-op", "floor", "noop", "the proxy-wasm boundary"),
        ("envoy-wam (3 headers) / floor", "wam", "floor", "the filter's own logic"),
        ("envoy-wam (3 headers) / no filter", "wam", "none", ""),
        ("no-op wasm / no filter", "noop", "none", ""),
        ("encrypted cookie / signed cookie", "wam", "wam-signed", "issue 10 target: no slower"),
        ("200 revocations listed / none", "wam-revoked", "wam", "target: nothing measurable"),
        ("envoy-wam / --compare build", "wam", "wam-ref", "no regression: ~1.0, ~+0 µs"),
        ("native (3 headers) / no filter", "native", "none", "issue 13 target >= 0.85"),
        ("native (1 header) / no filter", "native-1h", "none", ""),
        ("native / wasm (3 headers)", "native", "wam", "issue 13: native vs wasm"),
        ("native / no-op wasm", "native", "noop", ""),
    ]
    benchlib.report(
        "valid-session request, one Envoy, 1 worker, one listener per variant",
        variants,
        results,
        comparisons,
        benchlib.settings(args),
        extra={"bench": "session"},
    )


if __name__ == "__main__":
    main()
