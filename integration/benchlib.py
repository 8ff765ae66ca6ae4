"""Shared machinery for the integration/bench_*.py benchmarks, following the project's
measuring rules for a small, noisy VM:

- Every variant runs in ONE Envoy process (--concurrency 1: one worker thread), one listener
  per variant (no filter, no-op wasm, envoy-wam, ...), each on its own port with its own
  http_filters, and the rounds are interleaved: within a round every variant runs once,
  back to back (the starting variant rotates from round to round).
- Envoy (all its threads) is pinned to CPU 0 and the load generator wrk to CPU 1.
- The report gives, per variant, the median throughput (req/s) and Envoy's on-CPU time per
  request: the sum of the first field of /proc/PID/task/*/schedstat (ns on CPU) over the
  wrk run, divided by the requests wrk completed in that run (the worker thread's alone
  too). CPU per request is steadier than throughput on a shared machine: it does not move
  when the VM loses cycles to a neighbour, only when the work per request changes.
- Comparisons are medians of per-round values: throughput ratios (a / b) and CPU
  differences (a - b, in µs per request), so drifts of the machine between rounds cancel.
  A final line is the whole report as JSON.

How to read it: "extra µs" over the no-filter variant is what a filter costs per request on
this machine; a ratio of 0.90 means 10% fewer requests per second than the reference.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402

ENVOY_CPU = 0
WRK_CPU = 1


def can_pin():
    return bool(shutil.which("taskset")) and (os.cpu_count() or 1) > 1


def copy(obj):
    return json.loads(json.dumps(obj))


# --- variants and the one bootstrap ----------------------------------------------------------


class Variant:
    """One listener of the benchmark's Envoy.

    `kind` is "none", "noop" or "wam" as in stack.envoy_bootstrap; `config` the envoy-wam
    configuration (for "wam"); `wasm` another .wasm file (e.g. the floor filter, or a
    --compare build of envoy-wam); `http_filters` native filters before the wasm filter
    (e.g. jwt_authn); `path` and `headers` what wrk sends (headers as "name: value");
    `clusters` {name: port} the listener's filter needs (the `op` cluster is `op_port`)."""

    def __init__(self, name, label, kind="none", config=None, wasm=None, http_filters=None, path="/bench", headers=(), op_port=None, clusters=None, backend_port=None, access_log=None, secrets=None):
        self.name, self.label, self.kind = name, label, kind
        self.config, self.wasm = config, wasm
        self.http_filters = list(http_filters or [])
        self.path, self.headers = path, list(headers)
        self.op_port, self.clusters, self.backend_port = op_port, dict(clusters or {}), backend_port
        self.access_log = access_log  # a file for Envoy's access log (stack.ACCESS_LOG_FORMAT)
        self.secrets = list(secrets or [])  # static SDS secrets its filters name (e.g. oauth2's)
        self.port = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}{self.path}"

    def header_dict(self):
        return dict(h.split(": ", 1) for h in self.headers)


def bootstrap(variants, admin_port=None):
    """One Envoy bootstrap with one listener per variant (ports assigned here unless set).

    Each listener is rendered by stack.envoy_bootstrap (so it gets the same normalisation
    and, for envoy-wam configurations that need one, client.redirect_uri for its own URL),
    then the listeners and clusters are merged. Each wasm filter gets its own vm_id, so
    every variant runs in its own wasm VM as it would in its own Envoy."""
    admin_port = admin_port or stack.free_port()
    listeners, clusters, secrets = [], {}, {}
    for v in variants:
        if v.port is None:
            v.port = stack.free_port()
        config = v.config
        if v.kind == "wam" and config is not None:
            config = stack.with_redirect_uri(config, f"http://127.0.0.1:{v.port}")
        one = stack.envoy_bootstrap(
            v.port,
            admin_port,
            filter=v.kind,
            config=config,
            backend_port=v.backend_port,
            op_port=v.op_port,
            wasm=v.wasm,
            clusters=v.clusters,
            http_filters=copy(v.http_filters),
            access_log=v.access_log,
        )
        (listener,) = one["static_resources"]["listeners"]
        listener["name"] = f"bench-{v.name}"
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                hcm = f["typed_config"]
                hcm["stat_prefix"] = f"bench-{v.name}"
                for hf in hcm.get("http_filters", []):
                    if hf["name"] == "envoy.filters.http.wasm":
                        hf["typed_config"]["config"]["vm_config"]["vm_id"] = f"bench-{v.name}"
        listeners.append(listener)
        for c in one["static_resources"]["clusters"]:
            old = clusters.get(c["name"])
            if old is not None and old != c:
                raise ValueError(f"two variants define cluster {c['name']} differently")
            clusters[c["name"]] = c
        for s in v.secrets:
            if secrets.get(s["name"], s) != s:
                raise ValueError(f"two variants define secret {s['name']} differently")
            secrets[s["name"]] = s
    resources = {"listeners": listeners, "clusters": list(clusters.values())}
    if secrets:
        resources["secrets"] = list(secrets.values())
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": resources,
    }


def start(variants, logdir=None, name="bench-envoy"):
    """Starts the one Envoy (concurrency 1) serving every variant, pinned to CPU 0."""
    logdir = logdir or tempfile.mkdtemp(prefix="envoy-wam-bench-")
    boot = bootstrap(variants)
    envoy = stack.start_envoy(variants[0].port, boot, concurrency=1, logdir=logdir, name=name)
    admin = boot["admin"]["address"]["socket_address"]["port_value"]
    # Listeners are ready with the server; wait anyway until each port accepts.
    for v in variants:
        envoy.wait_until(lambda v=v: _accepts(v.port), timeout=30)
    if can_pin():
        subprocess.run(["taskset", "-a", "-p", "-c", str(ENVOY_CPU), str(envoy.p.pid)], capture_output=True, check=True)
    envoy.admin_port = admin
    return envoy


def _accepts(port):
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


def get(variant, headers=None, path=None):
    """One request to the variant (its headers unless given): (status, body)."""
    url = f"http://127.0.0.1:{variant.port}{path or variant.path}"
    req = urllib.request.Request(url, headers=variant.header_dict() if headers is None else headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def expect_200(variants):
    """Every variant really answers its benchmark request with 200 (not a redirect to a
    login, not a refusal): otherwise the numbers would measure the wrong path."""
    for v in variants:
        status, body = get(v)
        if status != 200:
            raise RuntimeError(f"{v.name}: {v.url} answered {status}, not 200: {body[:300]!r}")


# --- CPU time ------------------------------------------------------------------------------


def _task_ns(pid, tid):
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # the thread ended meanwhile


def cpu_sample(pid):
    """(ns on CPU of the whole process, ns of its worker thread(s)) from schedstat."""
    total = worker = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        ns = _task_ns(pid, tid)
        total += ns
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().startswith("wrk:worker"):
                    worker += ns
        except OSError:
            pass
    return total, worker


# --- wrk -----------------------------------------------------------------------------------

_UNITS = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}


def parse_wrk(out):
    """(requests completed, req/s) from wrk's output; raises unless every answer was a 2xx."""
    m = re.search(r"^\s*(\d+) requests in ", out, re.M)
    r = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m or not r or "Non-2xx" in out:
        raise RuntimeError(f"wrk did not get clean 2xx answers:\n{out}")
    return int(m.group(1)), float(r.group(1))


def wrk(variant, seconds, connections, pid=None):
    """One wrk run against the variant (wrk on CPU 1). Returns a dict with requests, rps and,
    given Envoy's pid, cpu_us (process) and worker_us per request."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s"]
    for h in variant.headers:
        argv += ["-H", h]
    argv.append(variant.url)
    if can_pin():
        argv = ["taskset", "-c", str(WRK_CPU)] + argv
    before = cpu_sample(pid) if pid else None
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    after = cpu_sample(pid) if pid else None
    try:
        requests, rps = parse_wrk(out)
    except RuntimeError as e:
        raise RuntimeError(f"{variant.name} ({variant.url}): {e}") from None
    run = {"requests": requests, "rps": rps}
    if pid and requests:
        run["cpu_us"] = (after[0] - before[0]) / 1000 / requests
        run["worker_us"] = (after[1] - before[1]) / 1000 / requests
    return run


def run(variants, logdir, args, check=None):
    """Starts the one Envoy, checks that every variant answers its request with 200 (and runs
    `check(envoy)`, e.g. that a filter really validates), measures `args.rounds` interleaved
    rounds and stops Envoy. Returns what `measure` returns."""
    envoy = start(variants, logdir)
    try:
        expect_200(variants)
        if check:
            check(envoy)
        return measure(envoy, variants, args.rounds, args.seconds, args.connections)
    finally:
        envoy.stop()


def measure(envoy, variants, rounds, seconds, connections, warmup=1):
    """A warm-up run per variant, then `rounds` interleaved rounds. Returns
    {variant name: [run, ...]} in round order."""
    pid = envoy.p.pid
    for v in variants:
        wrk(v, warmup, connections, pid)
    results = {v.name: [] for v in variants}
    for r in range(rounds):
        k = r % len(variants)  # rotate who goes first: no variant always follows the same one
        for v in variants[k:] + variants[:k]:
            results[v.name].append(wrk(v, seconds, connections, pid))
    return results


# --- the report ----------------------------------------------------------------------------


def report(title, variants, results, comparisons, settings=None, baseline="none", extra=None):
    """Prints the report and a final JSON line; returns the JSON object.

    `comparisons` is a list of (label, a, b, note): the throughput ratio a / b and the CPU
    difference a - b (µs/request), both medians over rounds. `baseline` is the no-filter
    variant the "extra µs" column is measured from."""
    names = [v.name for v in variants]
    labels = {v.name: v.label for v in variants}

    def series(name, key):
        return [run[key] for run in results[name] if key in run]

    med_rps = {n: statistics.median(series(n, "rps")) for n in names}
    cpu = {n: statistics.median(series(n, "cpu_us")) for n in names if series(n, "cpu_us")}
    worker = {n: statistics.median(series(n, "worker_us")) for n in names if series(n, "worker_us")}

    def per_round(a, b, key, op):
        pairs = [(x[key], y[key]) for x, y in zip(results[a], results[b]) if key in x and key in y]
        return statistics.median(op(x, y) for x, y in pairs) if pairs else None

    extra_us = {}
    if baseline in results:
        for n in names:
            d = per_round(n, baseline, "cpu_us", lambda x, y: x - y)
            if d is not None:
                extra_us[n] = d

    print(title)
    if settings:
        print("  " + ", ".join(f"{k} {v}" for k, v in settings.items()) + f"; Envoy on CPU {ENVOY_CPU}, wrk on CPU {WRK_CPU}" + ("" if can_pin() else " (NOT pinned: no taskset or one CPU)"))
    width = max(len(labels[n]) for n in names)
    print(f"  {'':{width}}    req/s   CPU µs/req (worker)  extra µs   runs (req/s)")
    for n in names:
        runs = " ".join(f"{x['rps']:.0f}" for x in results[n])
        c = f"{cpu[n]:7.1f} ({worker.get(n, 0):5.1f})" if n in cpu else f"{'-':>15}"
        e = f"{extra_us[n]:+8.1f}" if n in extra_us else f"{'':8}"
        print(f"  {labels[n]:{width}} {med_rps[n]:8.0f}   {c}      {e}   {runs}")
    ratios, diffs = {}, {}
    for label, a, b, note in comparisons:
        if a not in results or b not in results:
            continue
        ratios[label] = per_round(a, b, "rps", lambda x, y: x / y)
        diffs[label] = per_round(a, b, "cpu_us", lambda x, y: x - y)
    if ratios:
        lw = max(len(label) for label in ratios)
        print("  comparisons (medians of per-round values): req/s ratio, CPU µs/request difference")
        for label, a, b, note in comparisons:
            if label in ratios:
                d = diffs[label]
                ds = f"{d:+7.1f} µs" if d is not None else "      -   "
                print(f"    {label:{lw}}  {ratios[label]:.3f}  {ds}   {note}")
    out = {
        "settings": settings or {},
        "median_rps": {n: round(v, 1) for n, v in med_rps.items()},
        "cpu_us_per_req": {n: round(v, 2) for n, v in cpu.items()},
        "worker_us_per_req": {n: round(v, 2) for n, v in worker.items()},
        "extra_us_over_none": {n: round(v, 2) for n, v in extra_us.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "cpu_us_diff": {k: (round(v, 2) if v is not None else None) for k, v in diffs.items()},
        **(extra or {}),
    }
    print(json.dumps(out))
    return out


# --- common pieces -------------------------------------------------------------------------


def add_arguments(ap, compare=True):
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    if compare:
        ap.add_argument("--compare", metavar="WASM", help="another build of envoy-wam (e.g. the previous release), run as one more listener with the same configuration")


def settings(args):
    s = {"rounds": args.rounds, "seconds": args.seconds, "connections": args.connections}
    if getattr(args, "compare", None):
        s["compare"] = os.path.abspath(args.compare)
    return s


def check_compare(args):
    if getattr(args, "compare", None) and not os.path.isfile(args.compare):
        raise SystemExit(f"--compare: no such file {args.compare}")


def mint_cookie(config, logdir, web_session=None):
    """A valid session cookie value for `config` (examples/mint_session.rs, built here): of
    the default web session, or of the named `web_session`."""
    # The filter refuses a configuration that would need client.redirect_uri without one; any
    # URL does here (the cookie depends only on the session keys).
    config = stack.with_redirect_uri(config, "http://127.0.0.1:1")
    path = os.path.join(logdir, "bench-config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    which = ["--web-session", web_session] if web_session else []
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--example", "mint_session", "--", *which, path, "alice", "email=alice@example.com", "groups=staff"],
        cwd=stack.ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"mint_session failed:\n{out.stderr[-2000:]}")
    return out.stdout.strip()


def session_config(op_issuer="http://127.0.0.1:9"):
    """envoy-wam's configuration for session benchmarks: sessions that neither refresh nor
    idle out during the run."""
    return stack.wam_config(op_issuer, **{"session.activity_refresh_s": 3600, "session.idle_timeout_s": 7200})


def session_headers(cookie, cookie_name="PA.wam"):
    return [f"cookie: theme=dark; {cookie_name}={cookie}", "accept: text/html", "x-wam-user: spoofed"]
