"""Benchmark (issue 4): what verifying a bearer JWT never seen before costs, RS256 (2048-bit) and
ES256, on one Envoy worker.

Keys are generated here; envoy-wam (configured as in bench_api.py) fetches their JWKS from a tiny
HTTP server at <issuer>/jwks (its cluster `op`), once, during the warm-up. The warm-up also
verifies --warmup distinct tokens per algorithm, unmeasured: V8 first runs wasm code from its
baseline compiler and optimizes hot functions later, and the first few dozen verifications are
up to 1.5x slower. Then, per algorithm, N distinct tokens (distinct sub and jti) go one at a
time over one keep-alive connection, each request's latency measured: first-seen (the filter
parses and verifies the signature and the claims, then caches the result by token hash), then
the same tokens again (cached: a hash lookup); in chunks of --chunk tokens, the algorithms
alternating, so that slow drifts of the machine hit both phases alike. Everything else is
identical, so the difference is the verification cost in the filter; its inverse is the
ceiling of first-seen tokens per second per worker. The same requests through
a no-op wasm filter and no filter show what the rest of the path costs. Routes answer with
direct_response; Envoy runs on CPU 0 and this client on CPU 1 when there are two CPUs. Issue 13:
target `so` is the native build (target/libenvoy_wam.so) with the same configuration, in an Envoy
of its own like each target here.

usage: .venv/bin/python integration/bench_first_seen.py [--tokens N] [--warmup N] [--chunk N] [--only none,noop,wam,so]
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jwtutil  # noqa: E402
import stack  # noqa: E402
from bench_api import AUDIENCE, serve_jwks, wam_api_config  # noqa: E402

ALGS = ("RS256", "ES256")
WAM = {"wam": ".wasm", "so": "native .so"}  # the targets that are envoy-wam, by build


def make_tokens(key, issuer, n, tag):
    """n distinct tokens of the same length (the openssl CLI signs, a few at a time)."""
    now = int(time.time())

    def one(i):
        claims = {
            "iss": issuer,
            "aud": AUDIENCE,
            "sub": f"client-{tag}-{i:05d}",
            "client_id": "api_client",
            "scope": "orders:read",
            "jti": f"{tag}-{i:05d}-{os.urandom(6).hex()}",
            "iat": now,
            "exp": now + 30 * 86400,
        }
        return key.sign(claims, typ="at+jwt")

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(n)))


def latencies(port, tokens):
    """Each request's latency in microseconds, one at a time over one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = []
    try:
        for token in tokens:
            headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
            t0 = time.perf_counter_ns()
            conn.request("GET", "/orders/1", headers=headers)
            r = conn.getresponse()
            r.read()
            t1 = time.perf_counter_ns()
            if r.status != 200:
                raise RuntimeError(f"port {port}: {r.status} for a valid token")
            out.append((t1 - t0) / 1000)
    finally:
        conn.close()
    return out


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=300, help="distinct tokens per algorithm")
    ap.add_argument("--warmup", type=int, default=100, help="distinct tokens per algorithm verified before measuring")
    ap.add_argument("--chunk", type=int, default=50, help="tokens per first-seen/cached chunk")
    ap.add_argument("--only", default="none,noop,wam,so", help="comma-separated subset of targets (none, noop, wam; so: the native build, target/libenvoy_wam.so)")
    args = ap.parse_args()
    only = args.only.split(",")

    stack.build_wasm((stack.NOOP_DIR,) if "noop" in only else (), native="so" in only)
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the client on CPU 1, Envoy on CPU 0
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-first-seen-")
    keys = {"RS256": jwtutil.Key("RS256", "fs-rsa"), "ES256": jwtutil.Key("ES256", "fs-ec")}
    jwks = {"keys": [k.jwk for k in keys.values()]}
    server = serve_jwks(jwks)
    jwks_gets = [0]
    handler = server.RequestHandlerClass
    plain_get = handler.do_GET

    def counting_get(self):
        jwks_gets[0] += 1
        plain_get(self)

    handler.do_GET = counting_get
    issuer = f"http://127.0.0.1:{server.server_address[1]}"

    t0 = time.time()
    # Per algorithm: the warm-up tokens, then the N measured ones.
    warmups = {alg: make_tokens(k, issuer, max(1, args.warmup), f"{alg}-warm") for alg, k in keys.items()}
    warm = {alg: v[0] for alg, v in warmups.items()}
    tokens = {alg: make_tokens(k, issuer, args.tokens, alg) for alg, k in keys.items()}
    gen_s = time.time() - t0

    results = {}  # (target, alg, phase) -> [us]
    procs = {}
    try:
        for kind in ("none", "noop", "wam", "so"):
            if kind not in only:
                continue
            port = stack.free_port()
            filt = {"wam": "wam-wasm", "so": "wam-native"}.get(kind, kind)
            wam = kind in WAM
            bootstrap = stack.envoy_bootstrap(port, stack.free_port(), filt, wam_api_config(issuer) if wam else None, op_port=server.server_address[1] if wam else None)
            p = stack.start_envoy(port, bootstrap, concurrency=1, logdir=logdir, name=f"bench-{kind}")
            if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
                subprocess.run(["taskset", "-a", "-p", "-c", "0", str(p.p.pid)], capture_output=True)
            procs[kind] = p

        for kind in [k for k in WAM if k in procs]:
            # It really validates: the warm-up tokens pass (and fetch the JWKS), a tampered one does not.
            url = procs[kind].url + "/orders/1"
            for alg in ALGS:
                with urllib.request.urlopen(urllib.request.Request(url, headers={"authorization": f"Bearer {warm[alg]}", "accept": "application/json"})) as r:
                    assert r.status == 200, (alg, r.status)
                try:
                    urllib.request.urlopen(urllib.request.Request(url, headers={"authorization": f"Bearer {warm[alg][:-6]}AAAAAA", "accept": "application/json"}))
                    raise AssertionError(f"envoy-wam ({kind}) let a tampered {alg} token through")
                except urllib.error.HTTPError as e:
                    assert e.code == 401, (alg, e.code)

        for kind, p in procs.items():
            # Warm-up: the JIT for verification (distinct tokens) and the cache path (repeated).
            for alg in ALGS:
                latencies(p.port, warmups[alg])
                latencies(p.port, [warm[alg]] * 200)
            for alg in ALGS:
                results[(kind, alg, "first")], results[(kind, alg, "cached")] = [], []
            for i in range(0, args.tokens, args.chunk):
                for alg in ALGS:
                    chunk = tokens[alg][i : i + args.chunk]
                    results[(kind, alg, "first")] += latencies(p.port, chunk)
                    results[(kind, alg, "cached")] += latencies(p.port, chunk)
        wams = sum(1 for k in WAM if k in procs)
        assert jwks_gets[0] == wams, f"the JWKS was fetched {jwks_gets[0]} times, expected once per envoy-wam build ({wams})"
    finally:
        for p in procs.values():
            p.stop()
        server.shutdown()

    print(f"first-seen vs cached bearer JWT, 1 Envoy worker, {args.tokens} distinct tokens per algorithm, one keep-alive connection, sequential")
    print(f"  (warm-up {args.warmup} distinct tokens per algorithm; chunks of {args.chunk}; signing {2 * (args.tokens + max(1, args.warmup))} tokens with the openssl CLI took {gen_s:.1f}s)")
    print(f"  {'target':6} {'alg':6} {'phase':7} {'median us':>10} {'p90 us':>8} {'min us':>8}")
    summary = {}
    for kind in procs:
        for alg in ALGS:
            for phase in ("first", "cached"):
                v = results[(kind, alg, phase)]
                summary[f"{kind}-{alg}-{phase}"] = {"median_us": round(statistics.median(v), 1), "p90_us": round(pct(v, 0.9), 1)}
                print(f"  {kind:6} {alg:6} {phase:7} {statistics.median(v):10.1f} {pct(v, 0.9):8.1f} {min(v):8.1f}")

    verification = {}
    for kind in [k for k in WAM if k in procs]:
        print(f"  verification cost in envoy-wam, {WAM[kind]} (first-seen - cached):")
        for alg in ALGS:
            first, cached = results[(kind, alg, "first")], results[(kind, alg, "cached")]
            d_med = statistics.median(first) - statistics.median(cached)
            d_p90 = pct(first, 0.9) - pct(cached, 0.9)
            # The same token, first-seen and then cached: the median of the per-token differences.
            d_pair = statistics.median(a - b for a, b in zip(first, cached))
            ceiling = 1e6 / d_med if d_med > 0 else float("inf")
            verification[f"{kind}-{alg}"] = {"median_us": round(d_med, 1), "p90_us": round(d_p90, 1), "paired_median_us": round(d_pair, 1), "first_seen_per_s_per_worker": round(ceiling)}
            print(f"    {alg}: median {d_med:7.1f} us   p90 {d_p90:7.1f} us   per-token median {d_pair:7.1f} us   -> at most ~{ceiling:,.0f} first-seen tokens/s per worker")
        if "noop" in procs:
            for alg in ALGS:
                extra = statistics.median(results[(kind, alg, "cached")]) - statistics.median(results[("noop", alg, "cached")])
                print(f"    {alg}: a cached token costs {extra:.1f} us over the no-op wasm filter (median)")
    for alg in ALGS:
        w, n = verification.get(f"wam-{alg}"), verification.get(f"so-{alg}")
        if w and n and n["median_us"] > 0:
            print(f"  {alg}: the native build verifies in {n['median_us']:.0f} us against the wasm build's {w['median_us']:.0f} us ({w['median_us'] / n['median_us']:.1f}x faster)")
    print(json.dumps({"tokens": args.tokens, "warmup": args.warmup, "latency": summary, "verification": verification}))


if __name__ == "__main__":
    main()
