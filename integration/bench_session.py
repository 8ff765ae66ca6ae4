"""Benchmark: requests per second for a request with a valid session cookie, on one Envoy
worker, through envoy-wam against the same Envoy with no filter and with a no-op wasm filter.
A fourth Envoy runs integration/floor-filter, which makes only the host calls envoy-wam needs
for such a request and nothing else: it shows what the proxy-wasm boundary itself costs.
All run in the same run, measured in interleaved rounds; the report is the median of each and
the ratios (the target for the web-session issue: envoy-wam >= 0.85x the no-op filter).

Routes answer with Envoy's direct_response, so the numbers measure the filter chain, not a
backend. Envoy runs on CPU 0 and wrk on CPU 1 when taskset is available.

usage: .venv/bin/python integration/bench_session.py [--rounds N] [--seconds S] [--connections C]
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402


def pinned(cpu, argv):
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1:
        return ["taskset", "-c", str(cpu)] + argv
    return argv


def wrk(url, seconds, connections, headers):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(pinned(1, argv + [url]), capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or "Non-2xx" in out:
        raise RuntimeError(f"wrk against {url} did not get clean 200s:\n{out}")
    return float(m.group(1))


def mint_cookie(config, logdir):
    path = os.path.join(logdir, "bench-config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--example", "mint_session", "--", path, "alice", "email=alice@example.com", "groups=staff"],
        cwd=stack.ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--compare", metavar="WASM", help="another build of envoy-wam (e.g. an older release) to run side by side")
    args = ap.parse_args()

    stack.build_wasm((stack.NOOP_DIR, stack.FLOOR_DIR))
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-")
    # The filter as the demo runs it (three identity headers), and with one identity header:
    # each header is one more host call on every request, the dominant cost of the hot path.
    config = stack.wam_config("http://127.0.0.1:9", **{"session.activity_refresh_s": 3600, "session.idle_timeout_s": 7200})
    config_1h = json.loads(json.dumps(config))
    config_1h["identity_headers"] = config["identity_headers"][:1]
    cookie = mint_cookie(config, logdir)
    headers = [f"cookie: theme=dark; PA.wam={cookie}", "accept: text/html", "x-wam-user: spoofed"]

    targets = {}
    procs = []
    try:
        for name, kind, cfg, wasm in (
            ("none", "none", None, None),
            ("noop", "noop", None, None),
            ("floor", "noop", None, stack.FLOOR_WASM),
            ("wam", "wam", config, None),
            ("wam-1h", "wam", config_1h, None),
        ) + ((("wam-ref", "wam", config, args.compare),) if args.compare else ()):
            port = stack.free_port()
            bootstrap = stack.envoy_bootstrap(port, stack.free_port(), kind, cfg, wasm=wasm)
            p = stack.start_envoy(port, bootstrap, concurrency=1, logdir=logdir, name=f"bench-{name}")
            # Pin Envoy (all its threads) to CPU 0, away from wrk.
            if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(p.p.pid)], capture_output=True)
            procs.append(p)
            targets[name] = p.url + "/bench"
        # The filter must really be on the session path: a 200 with identity, not a redirect.
        req = urllib.request.Request(targets["wam"], headers=dict(h.split(": ", 1) for h in headers))
        with urllib.request.urlopen(req) as r:
            assert r.status == 200, r.status

        for name, url in targets.items():  # warm-up (JIT, connection setup)
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
    labels = {
        "none": "no filter",
        "noop": "no-op wasm filter",
        "floor": "host calls only (floor-filter)",
        "wam": "envoy-wam, 3 identity headers",
        "wam-1h": "envoy-wam, 1 identity header",
        "wam-ref": "--compare build, 3 headers",
    }
    for name in targets:
        runs = " ".join(f"{v:.0f}" for v in results[name])
        print(f"  {labels[name]:31} median {med[name]:8.0f} req/s   ({runs})")
    # Ratios are taken within each round (the targets ran back to back), then the median over
    # rounds: drifts of the machine's speed between rounds cancel out.
    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(results[a], results[b]))

    ratios = {
        "envoy-wam (3 headers) / no-op wasm": (ratio("wam", "noop"), "target >= 0.85"),
        "envoy-wam (1 header)  / no-op wasm": (ratio("wam-1h", "noop"), ""),
        "floor (host calls only) / no-op": (ratio("floor", "noop"), "the proxy-wasm boundary"),
        "envoy-wam (3 headers) / floor": (ratio("wam", "floor"), "the filter's own logic"),
        "envoy-wam (3 headers) / no filter": (ratio("wam", "none"), ""),
        "no-op wasm / no filter": (ratio("noop", "none"), ""),
    }
    if args.compare:
        ratios["envoy-wam / --compare build"] = (ratio("wam", "wam-ref"), "")
    print("  ratios (median of per-round ratios):")
    for label, (value, note) in ratios.items():
        print(f"    {label:36} {value:.3f}   {note}")
    print(json.dumps({"median_rps": med, "ratios": {k: round(v, 3) for k, (v, _) in ratios.items()}}))


if __name__ == "__main__":
    main()
