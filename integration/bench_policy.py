"""Benchmark (issue 3): a request with a valid session cookie on one Envoy worker, through
envoy-wam without a policy (the implicit one: every path needs a session) and with a realistic
policy: 12 web applications of 15 resources each on distinct context roots, global unprotected
paths, and the request's resource guarded by nested rule sets on the groups and email claims,
a network rule and a method rule. A no-op wasm filter for reference. Interleaved rounds,
medians of per-round ratios (target: the policy adds under 5%, i.e. with/without >= 0.95).

The cookie is minted with examples/mint_session.rs from the configuration without the policy
(the session keys are the same in both).

usage: .venv/bin/python integration/bench_policy.py [--rounds N] [--seconds S] [--connections C]
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
import stack  # noqa: E402
from bench_session import mint_cookie, wrk  # noqa: E402


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
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()

    stack.build_wasm((stack.NOOP_DIR,))
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-policy-")
    config = stack.wam_config("http://127.0.0.1:9", **{"session.activity_refresh_s": 3600, "session.idle_timeout_s": 7200})
    with_policy = json.loads(json.dumps(config))
    with_policy["policy"] = realistic_policy()
    cookie = mint_cookie(config, logdir)
    headers = [f"cookie: theme=dark; PA.wam={cookie}", "accept: text/html", "x-wam-user: spoofed"]
    path = "/app7/section11/items/42/detail"  # deep in the route table

    targets = {}
    procs = []
    try:
        for name, kind, cfg in (("noop", "noop", None), ("wam", "wam", config), ("wam-policy", "wam", with_policy)):
            port = stack.free_port()
            p = stack.start_envoy(port, stack.envoy_bootstrap(port, stack.free_port(), kind, cfg), concurrency=1, logdir=logdir, name=f"bench-{name}")
            if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(p.p.pid)], capture_output=True)
            procs.append(p)
            targets[name] = p.url + path
        hdrs = dict(h.split(": ", 1) for h in headers)
        for name in ("wam", "wam-policy"):  # really allowed by the policy, not refused or redirected
            with urllib.request.urlopen(urllib.request.Request(targets[name], headers=hdrs)) as r:
                assert r.status == 200, (name, r.status)
        for url in targets.values():
            wrk(url, 1, args.connections, headers)
        results = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                results[name].append(wrk(url, args.seconds, args.connections, headers))
    finally:
        for p in procs:
            p.stop()

    med = {name: statistics.median(v) for name, v in results.items()}
    print(f"valid-session request, 1 Envoy worker, {args.rounds} rounds x {args.seconds}s, {args.connections} connections")
    for name in targets:
        print(f"  {name:11} median {med[name]:8.0f} req/s   ({' '.join(f'{v:.0f}' for v in results[name])})")

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(results[a], results[b]))

    ratios = {
        "with policy / without": (ratio("wam-policy", "wam"), "target >= 0.95 (policy adds < 5%)"),
        "without policy / no-op wasm": (ratio("wam", "noop"), ""),
    }
    for label, (value, note) in ratios.items():
        print(f"    {label:30} {value:.3f}   {note}")
    print(json.dumps({"median_rps": med, "ratios": {k: round(v, 3) for k, (v, _) in ratios.items()}}))


if __name__ == "__main__":
    main()
