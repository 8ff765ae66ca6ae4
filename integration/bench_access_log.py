"""Benchmark (issue 12, item 5): what `access_log_fields` costs a valid-session request: the
flow keeps subject, application, resource and decision, and the host writes them into Envoy's
filter state (four set_property calls). Measured without an access log (the filter's share
alone) and with Envoy's file access log printing them (to /dev/null; with the switch off the
same format prints `-`).

All variants are listeners of ONE Envoy (concurrency 1), measured in interleaved rounds; Envoy
on CPU 0, wrk on CPU 1 (integration/benchlib.py). Routes answer with direct_response.

usage: .venv/bin/python integration/bench_access_log.py [--rounds N] [--seconds S] [--connections C]
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import stack  # noqa: E402
from benchlib import Variant, copy  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_arguments(ap, compare=False)
    args = ap.parse_args()

    stack.build_wasm(())
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-")
    off = benchlib.session_config()
    on = copy(off)
    on["access_log_fields"] = True
    headers = benchlib.session_headers(benchlib.mint_cookie(off, logdir))
    variants = [
        Variant("off", "fields off, no access log", "wam", off, headers=headers),
        Variant("on", "fields on, no access log", "wam", on, headers=headers),
        Variant("off-log", "fields off, access log", "wam", off, headers=headers, access_log="/dev/null"),
        Variant("on-log", "fields on, access log", "wam", on, headers=headers, access_log="/dev/null"),
    ]
    results = benchlib.run(variants, logdir, args)
    comparisons = [
        ("fields on / off (no access log)", "on", "off", "the filter's share"),
        ("fields on / off (access log)", "on-log", "off-log", "as deployed"),
        ("access log / none (fields off)", "off-log", "off", "Envoy's access log itself"),
    ]
    benchlib.report(
        "valid-session request with and without access_log_fields, one Envoy, 1 worker",
        variants,
        results,
        comparisons,
        benchlib.settings(args),
        baseline="off",
        extra={"bench": "access_log"},
    )


if __name__ == "__main__":
    main()
