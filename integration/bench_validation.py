"""Benchmark: what session validation at the OP costs (issue 10).

One Envoy (1 worker) with envoy-wam validating sessions every second against the real OP, one
logged-in browser session sending requests back to back for a while. A request that finds its
session due leads a refresh-token grant at the OP and answers with the successor cookie; the
others take the hot path. Reports the median and p90 latency of both kinds, how many refresh
grants the OP saw per interval (the target: one per interval, whatever the request rate), and
the extra latency a validating request pays (about one OP round trip).

usage: .venv/bin/python integration/bench_validation.py [--seconds S]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import requests  # noqa: E402
import stack  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    stack.build_wasm(())
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-")
    gw_port, op_port, be_port = stack.free_port(), stack.free_port(), stack.free_port()
    op = stack.start_op(op_port, [f"http://127.0.0.1:{gw_port}"], logdir=logdir)
    backend = stack.start_backend(be_port, logdir=logdir)
    cfg = stack.live_config(op.issuer, **{"session.validate_interval_s": 1})
    gw = stack.start_gateway(gw_port, cfg, be_port, op_port, logdir=logdir, name="envoy-bench-validation")
    try:
        s = requests.Session()
        r = stack.login(s, f"http://127.0.0.1:{gw_port}", "/bench", "bench")
        assert r.status_code == 200, r.status_code
        before = stack.op_stats(op_port).get("grant:refresh_token", 0)
        hot, validating = [], []
        end = time.time() + args.seconds
        while time.time() < end:
            t = time.perf_counter()
            r = s.get(f"http://127.0.0.1:{gw_port}/bench", headers={"accept": "text/html", "connection": "close"}, allow_redirects=False)
            ms = (time.perf_counter() - t) * 1000
            assert r.status_code == 200, r.status_code
            renewed = any(c.startswith("PA.wam") for c in r.headers.get("set-cookie", "").split(", "))
            (validating if renewed else hot).append(ms)
        refreshes = stack.op_stats(op_port).get("grant:refresh_token", 0) - before
    finally:
        gw.stop()
        op.stop()
        backend.stop()

    def q(xs, p):
        return statistics.quantiles(xs, n=10)[p - 1] if len(xs) >= 10 else max(xs)

    print("session validation every 1 s, one session, requests back to back")
    print(f"  requests: {len(hot) + len(validating)} in {args.seconds:.0f} s; refresh grants at the OP: {refreshes} "
          f"({refreshes / args.seconds:.2f} per second; target: one per interval)")
    print(f"  hot path      median {statistics.median(hot):.2f} ms  p90 {q(hot, 9):.2f} ms  ({len(hot)} requests)")
    if validating:
        print(f"  validating    median {statistics.median(validating):.2f} ms  p90 {q(validating, 9):.2f} ms  ({len(validating)} requests)")
        print(f"  a validation costs its request {statistics.median(validating) - statistics.median(hot):.2f} ms (one OP round trip)")


if __name__ == "__main__":
    main()
