"""Benchmark (issue 3): a request with a valid session cookie on one Envoy worker, through
envoy-wam without a policy (the implicit one: every path needs a session) and with a realistic
policy: 12 web applications of 16 resources each on distinct context roots, global unprotected
paths, and the request's resource (/app7/section11/items/42/detail, deep in the route table,
routed to app7's resource r11) guarded by nested rule sets on the groups and email claims, a
network rule and a method rule. No filter and a no-op wasm filter for reference; the native
build (target/libenvoy_wam.so, issue 13) with both configurations beside the .wasm. With
--compare, one more listener runs another build of envoy-wam (e.g. the previous release) with
the same policy configuration.

All variants are listeners of ONE Envoy (concurrency 1), measured in interleaved rounds; Envoy
on CPU 0, wrk on CPU 1 (integration/benchlib.py). Every variant must answer the benchmark
request with 200 first (a request that matches no resource is refused). The cookie is minted
with examples/mint_session.rs from the configuration without the policy (the session keys are
the same in both).

How to read it: per variant, median req/s and Envoy's on-CPU µs per request, and the extra µs
over no filter; then comparisons (medians of per-round values) as req/s ratio and CPU µs
difference. "with policy / without" is what routing and evaluating the policy costs (target:
>= 0.95, i.e. the policy adds under 5%; the µs difference is the absolute cost). "envoy-wam /
--compare build" near 1.0 and +0 µs means no regression. The last line is the report as JSON.

usage: .venv/bin/python integration/bench_policy.py [--rounds N] [--seconds S] [--connections C] [--compare OTHER.wasm]
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import stack  # noqa: E402
from benchlib import Variant, copy  # noqa: E402

PATH = "/app7/section11/items/42/detail"  # deep in the route table: app7, resource r11


def realistic_policy(apps=12, resources=15):
    rule_sets = [
        {"name": "admins", "rules": [{"type": "attribute", "claim": "groups", "equals": "admins"}]},
        {
            "name": "staff",
            "mode": "any",
            "rules": [
                {
                    "type": "all",
                    "rules": [
                        {"type": "attribute", "claim": "groups", "one_of": ["staff", "contractors"]},
                        {"type": "attribute", "claim": "email", "like": "*@example.com"},
                    ],
                },
                {"type": "rule_set", "name": "admins"},
            ],
        },
        {"name": "internal", "rules": [{"type": "network", "cidrs": ["10.0.0.0/8", "127.0.0.0/8", "::1/128"]}]},
    ]
    applications = []
    for a in range(apps):
        res = []
        for r in range(resources):
            res.append(
                {
                    "name": f"r{r}",
                    "paths": [f"/section{r}/*", f"/section{r}/items/*/detail"],
                    "methods": ["GET", "POST"],
                    "rules": [{"type": "rule_set", "name": "staff"}, {"type": "method", "methods": ["GET", "HEAD", "POST"]}],
                }
            )
        res.append({"name": "home", "paths": ["/*"], "rules": [{"type": "rule_set", "name": "internal"}]})
        applications.append(
            {
                "name": f"app{a}",
                "hosts": ["*"],
                "context_root": f"/app{a}",
                "type": "web",
                "rules": [{"type": "rule_set", "name": "internal"}],
                "resources": res,
            }
        )
    return {
        "default_decision": "deny",
        "unprotected_paths": ["/favicon.ico", "/static/*", "/public/*"],
        "rule_sets": rule_sets,
        "applications": applications,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_arguments(ap)
    args = ap.parse_args()
    benchlib.check_compare(args)

    stack.build_wasm((stack.NOOP_DIR,), native=True)
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-policy-")
    config = benchlib.session_config()
    with_policy = copy(config)
    with_policy["policy"] = realistic_policy()
    headers = benchlib.session_headers(benchlib.mint_cookie(config, logdir))

    variants = [
        Variant("none", "no filter", "none", path=PATH, headers=headers),
        Variant("noop", "no-op wasm filter", "noop", path=PATH, headers=headers),
        Variant("wam", "envoy-wam, no policy", "wam", config, path=PATH, headers=headers),
        Variant("wam-policy", "envoy-wam, realistic policy", "wam", with_policy, path=PATH, headers=headers),
        # Issue 13: the native build (the .so), same configurations.
        Variant("so", "envoy-wam native build, no policy", "wam-native", config, path=PATH, headers=headers),
        Variant("so-policy", "envoy-wam native build, realistic policy", "wam-native", with_policy, path=PATH, headers=headers),
    ]
    if args.compare:
        variants.append(Variant("ref-policy", "--compare build, realistic policy", "wam", with_policy, wasm=os.path.abspath(args.compare), path=PATH, headers=headers))

    # Really allowed by the policy (routed to its resource), not refused or redirected.
    results = benchlib.run(variants, logdir, args)

    comparisons = [
        ("with policy / without", "wam-policy", "wam", "target >= 0.95 (policy adds < 5%)"),
        ("without policy / no-op wasm", "wam", "noop", ""),
        ("with policy / no filter", "wam-policy", "none", ""),
        ("envoy-wam / --compare build (policy)", "wam-policy", "ref-policy", "no regression: ~1.0, ~+0 µs"),
        ("native: with policy / without", "so-policy", "so", "issue 13; target >= 0.95"),
        ("native with policy / no filter", "so-policy", "none", ""),
        ("native / wasm, with policy", "so-policy", "wam-policy", "issue 13: native vs wasm"),
    ]
    benchlib.report(
        "valid-session request with and without a realistic policy, one Envoy, 1 worker, one listener per variant",
        variants,
        results,
        comparisons,
        benchlib.settings(args),
        extra={"bench": "policy"},
    )


if __name__ == "__main__":
    main()
