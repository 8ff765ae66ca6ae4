"""Soak (issue 12, item 7; a script, not a CI test): a long mixed load through the demo's
Envoy (envoy/envoy-demo.yaml, two workers) against the real OP and the echo backend, watching
Envoy's memory and its wasm VMs.

What it sends, by default 10^6 requests (--requests):
- valid sessions of 10,000 distinct users (cookies minted for the demo's key by
  examples/mint_session.rs; a re-issued cookie replaces the client's copy, as a browser's);
- bearer tokens of 10,000 distinct clients (JWTs signed by the OP's own key through its test
  hook /__sign, for the demo's orders API);
- junk session cookies and junk bearer tokens (random, never seen twice);
- mediated requests: /jwt-site/ (a JWT the gateway signs) for every user, /sts-site/ (a token
  exchange at the OP's STS) for a subset of users (--sts-users, to bound the OP's work);
- whole logins through the OP's form (alice or bob).

It runs in phases. Warm-up fills each cache on purpose, one after the other: every user's
session, every client's token, every user's JWT-site token, the STS users' tokens; each is
sent once to EACH worker (the client learns which worker holds each of its connections from
Envoy's per-worker listener stats), so a worker's cache holds exactly one entry per key and
Envoy's RSS growth in that phase, divided by keys x workers, is the bytes per cached entry.
Then the mixed phase sends the rest at random (--mix), sampling Envoy's RSS (and any
envoy_wam cache gauges in /stats) every few seconds.

It reports RSS at start, after warm-up and at the end, bytes per cached entry per cache,
requests and errors by kind, and Envoy's wasm VM stats before and after (a VM that crashed and
was replaced shows as more VMs created, or as vm_reload counts). A final line is the whole
report as JSON. Memory after warm-up must stay flat: every cache is bounded (10,000 entries
per worker by default, sessions always 10,000), so after warm-up nothing should grow beyond
the allocator's slack.

Deviations from the demo, and why: sessions are not revalidated at the OP
(`session.validate_interval_s` 0: minted sessions have no OP session to validate against), the
access log goes to /dev/null instead of the terminal, and Envoy logs at `warn` (the demo's
audit lines would write a line per API call). Ports are free ones, not 8080/9000.

usage: .venv/bin/python integration/soak.py [--requests N] [--users N] [--clients N]
           [--sts-users N] [--processes N] [--sample-every S] [--mix kind=weight,...] [--native]
"""

import argparse
import base64
import concurrent.futures
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stack  # noqa: E402

DEMO = os.path.join(stack.ROOT, "envoy", "envoy-demo.yaml")
API_AUDIENCE = "https://api.example.test"
DEFAULT_MIX = "session=0.50,bearer=0.25,junk_cookie=0.07,junk_token=0.07,jwt_site=0.06,sts_site=0.0495,login=0.0005"
WORKERS = 2


# --- the demo, on free ports -----------------------------------------------------------------


def native_filter_lines(lines):
    """The demo's wasm filter swapped for the native build (the same JSON configuration):
    the lines from `- name: envoy.filters.http.wasm` to its `value: |` replaced."""
    first = next(i for i, l in enumerate(lines) if l.strip() == "- name: envoy.filters.http.wasm")
    value = next(i for i in range(first, len(lines)) if lines[i].strip() == "value: |")
    pad = " " * (len(lines[first]) - len(lines[first].lstrip()))
    lines[first : value + 1] = [
        pad + "- name: envoy.filters.http.dynamic_modules",
        pad + "  typed_config:",
        pad + '    "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter',
        pad + "    dynamic_module_config: {module: {local: {filename: target/libenvoy_wam.so}}, do_not_close: true, metrics_namespace: wasmcustom}",
        pad + "    filter_name: envoy-wam",
        pad + "    filter_config:",
        pad + '      "@type": type.googleapis.com/google.protobuf.StringValue',
        pad + "      value: |",
    ]
    return lines


def demo_bootstrap(ports, native=False):
    """envoy-demo.yaml with its ports replaced, sessions not revalidated, the access log to
    /dev/null (and, `native`, the native build in place of the wasm filter). Returns (YAML
    text, the filter's configuration as a dict)."""
    text = open(DEMO).read()
    for old, new in (("9901", ports["admin"]), ("8080", ports["gateway"]), ("8081", ports["backend"]), ("9000", ports["op"]), ("9001", ports["partner_op"])):
        text = re.sub(rf"\b{old}\b", str(new), text)
    lines = text.split("\n")
    if native:
        lines = native_filter_lines(lines)
    # The filter's JSON: the literal block after `value: |`.
    start = next(i for i, l in enumerate(lines) if l.strip() == "value: |") + 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) >= indent):
        end += 1
    config = json.loads("\n".join(l[indent:] for l in lines[start:end]))
    config["session"]["validate_interval_s"] = 0
    lines[start:end] = [" " * indent + json.dumps(config)]
    out = []
    for l in lines:
        if "StdoutAccessLog" in l:
            pad = len(l) - len(l.lstrip())
            l = l.replace("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", "envoy.extensions.access_loggers.file.v3.FileAccessLog")
            out += [l, " " * pad + "path: /dev/null"]
        else:
            out.append(l)
    return "\n".join(out), config


def start_stack(logdir, ports, native=False):
    gw_urls = [f"http://localhost:{ports['gateway']}", f"http://127.0.0.1:{ports['gateway']}"]
    op = stack.start_op(ports["op"], gw_urls, logdir=logdir, issuer=f"http://localhost:{ports['op']}")
    # The demo's partner OP (web session `partner`), as envoy/demo.sh starts it: the soak sends
    # it nothing, but the gateway is ready (its heartbeat) only once every OP is.
    partner_env = {
        "GATEWAY_CALLBACK_PATH": "/pa/oidc/cb/partner",
        "BACKCHANNEL_PATH": "/pa/oidc/backchannel/partner",
        "POST_LOGOUT_PATHS": "/partner/",
        "OP_COOKIE_PREFIX": "partner",
    }
    partner = stack.start_op(ports["partner_op"], gw_urls, logdir=logdir, issuer=f"http://localhost:{ports['partner_op']}", env=partner_env, name="partner-op")
    backend = stack.start_backend(ports["backend"], logdir=logdir)
    text, config = demo_bootstrap(ports, native)
    path = os.path.join(logdir, "envoy-soak.yaml")
    with open(path, "w") as f:
        f.write(text)
    envoy = stack.Proc("envoy", [stack.ENVOY, "-c", path, "--concurrency", str(WORKERS), "--disable-hot-restart", "-l", "warn"], cwd=stack.ROOT, logdir=logdir)
    envoy.wait_until(lambda: stack.http_ok(f"http://127.0.0.1:{ports['admin']}/ready"))
    envoy.wait_until(lambda: stack.http_ok(f"http://127.0.0.1:{ports['gateway']}/pa/heartbeat.ping"))
    return (op, partner), backend, envoy, config


# --- credentials ------------------------------------------------------------------------------


def mint_cookies(config, users, logdir):
    path = os.path.join(logdir, "soak-config.json")
    with open(path, "w") as f:
        json.dump(config, f)
    out = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--example", "mint_session", "--", path, "user", "email=user@example.com", "groups=staff", "--count", str(users)],
        cwd=stack.ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"mint_session failed:\n{out.stderr[-2000:]}")
    cookies = out.stdout.split()
    assert len(cookies) == users, len(cookies)
    return cookies


def sign_tokens(op, clients):
    """One access token per client, signed by the OP's key (RS256, kid op-rsa-1)."""
    now = int(time.time())

    def one(i):
        claims = {"iss": op.issuer, "aud": API_AUDIENCE, "sub": f"client-{i}", "client_id": f"client-{i}", "scope": "orders:read", "iat": now, "exp": now + 86400, "jti": f"soak-{i}"}
        return stack.op_sign(op, claims, header={"typ": "at+jwt"})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(clients)))


def junk_cookie(rng):
    return base64.urlsafe_b64encode(rng.randbytes(rng.randrange(40, 400))).decode().rstrip("=")


def junk_token(rng):
    parts = [base64.urlsafe_b64encode(rng.randbytes(n)).decode().rstrip("=") for n in (24, 120, 64)]
    return ".".join(parts) if rng.random() < 0.5 else parts[1]


# --- Envoy from outside ---------------------------------------------------------------------


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def worker_cx(admin, gw_port):
    """{worker index: connections accepted so far} from Envoy's per-worker listener stats."""
    s = stack.admin_stats(admin, f"listener.127.0.0.1_{gw_port}.worker_")
    out = {}
    for name, v in s.items():
        m = re.search(r"\.worker_(\d+)\.downstream_cx_total$", name)
        if m:
            out[int(m.group(1))] = v
    return out


def gauges(admin):
    """envoy_wam's own stats, if the build defines any (cache sizes once metrics exist)."""
    return {k: v for k, v in stack.admin_stats(admin, "envoy_wam").items() if "config_" not in k}


def envoy_heap_kib(admin):
    """Envoy's own heap in use (tcmalloc, admin /memory). The wasm VMs' linear memory is mapped
    outside it, so RSS minus this is mostly the VMs (and V8)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/memory", timeout=5) as r:
            return int(json.load(r).get("allocated", 0)) // 1024
    except (OSError, ValueError):
        return None


def wasm_stats(admin):
    return stack.admin_stats(admin, "wasm")


# --- the client processes ---------------------------------------------------------------------


class Client:
    """One load process: a keep-alive connection to each Envoy worker."""

    def __init__(self, idx, ports, creds, lock):
        self.idx, self.ports, self.creds = idx, ports, creds
        self.host = f"localhost:{ports['gateway']}"
        self.rng = random.Random(1000 + idx)
        self.cookies = dict(enumerate(creds["cookies"]))  # this process's copy (re-issued ones replace)
        self.conns = {}
        self.lock = lock
        with lock:
            self._connect()
        self.counts, self.errors, self.samples = {}, {}, {}
        self.reconnects = 0

    def _connect(self):
        """Opens connections until it has one on each worker it lacks (learnt from the
        per-worker accept counts, under the lock the processes share)."""
        spare = []
        for _ in range(60):
            before = worker_cx(self.ports["admin"], self.ports["gateway"])
            c = http.client.HTTPConnection("127.0.0.1", self.ports["gateway"], timeout=30)
            c.request("GET", "/pa/heartbeat.ping", headers={"host": self.host})
            c.getresponse().read()
            after = worker_cx(self.ports["admin"], self.ports["gateway"])
            grown = [w for w in after if after[w] > before.get(w, 0)]
            if len(grown) == 1 and grown[0] not in self.conns:
                self.conns[grown[0]] = c
            else:
                spare.append(c)
            if len(self.conns) == WORKERS:
                break
        for c in spare:
            c.close()
        if len(self.conns) < WORKERS:
            raise RuntimeError(f"could not get a connection on each of {WORKERS} workers: {sorted(self.conns)}")

    def send(self, worker, method, path, headers):
        c = self.conns[worker]
        h = {"host": self.host, **headers}
        for attempt in (0, 1):
            try:
                c.request(method, path, headers=h)
                r = c.getresponse()
                return r.status, r.getheaders(), r.read()
            except (http.client.HTTPException, OSError):
                # Envoy closed the keep-alive connection: reconnect to the same worker.
                c.close()
                if attempt:
                    raise
                self.conns.pop(worker)
                self.reconnects += 1
                with self.lock:
                    self._connect()
                c = self.conns[worker]
        raise AssertionError("unreachable")

    def note(self, kind, ok, why=""):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if not ok:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            kept = self.samples.setdefault(kind, [])
            if len(kept) < 5:
                kept.append(why[:300])

    # One request of each kind; `key` picks the user or client; `worker` the connection.
    def session(self, key, worker, path="/"):
        status, headers, body = self.send(worker, "GET", path, {"accept": "text/html", "cookie": f"PA.wam={self.cookies[key]}"})
        for name, value in headers:
            if name.lower() == "set-cookie" and value.startswith("PA.wam="):
                self.cookies[key] = value.split(";", 1)[0].split("=", 1)[1]
        return status, body

    def do(self, kind, key, worker):
        try:
            if kind == "session":
                status, body = self.session(key, worker, f"/page/{key % 97}")
                ok = status == 200 and f'"x-wam-user": "user-{key}"'.encode() in body
            elif kind == "bearer":
                status, _, body = self.send(worker, "GET", f"/api/orders/{key % 89}", {"authorization": f"Bearer {self.creds['tokens'][key]}", "accept": "application/json"})
                ok = status == 200 and f'"x-wam-user": "client-{key}"'.encode() in body
            elif kind == "junk_cookie":
                status, _, body = self.send(worker, "GET", "/", {"accept": "text/html", "cookie": f"PA.wam={junk_cookie(self.rng)}"})
                ok = status == 302
            elif kind == "junk_token":
                status, _, body = self.send(worker, "GET", "/api/orders/1", {"authorization": f"Bearer {junk_token(self.rng)}", "accept": "application/json"})
                ok = status in (400, 401)
            elif kind == "jwt_site":
                status, body = self.session(key, worker, "/jwt-site/x")
                ok = status == 200 and b'"x-site-jwt": "ey' in body
            elif kind == "sts_site":
                status, body = self.session(key, worker, "/sts-site/x")
                ok = status == 200 and b'"authorization": "Bearer ' in body
            elif kind == "login":
                import requests

                s = requests.Session()
                done = stack.login(s, f"http://localhost:{self.ports['gateway']}", "/", username=self.rng.choice(["alice", "bob"]))
                status, body = done.status_code, done.content
                ok = status == 200 and b"x-wam-user" in body
            else:
                raise ValueError(kind)
            self.note(kind, ok, f"HTTP {status}: {body[:200]!r}")
        except Exception as e:  # noqa: BLE001 - every failure is counted, the soak goes on
            self.note(kind, False, f"{type(e).__name__}: {e}")

    def result(self):
        out = {"counts": self.counts, "errors": self.errors, "samples": self.samples, "reconnects": self.reconnects}
        self.counts, self.errors, self.samples = {}, {}, {}
        self.reconnects = 0
        return out


def client_main(idx, ports, creds, lock, jobs, results):
    try:
        client = Client(idx, ports, creds, lock)
    except Exception as e:  # noqa: BLE001
        results.put({"fatal": f"{type(e).__name__}: {e}"})
        return
    results.put({"ready": idx})
    while True:
        job = jobs.get()
        if job is None:
            return
        if job[0] == "warm":
            _, kind, keys = job
            for key in keys:
                for worker in range(WORKERS):
                    client.do(kind, key, worker)
        elif job[0] == "mix":
            _, n, mix, seed = job
            rng = random.Random(seed)
            kinds, weights = zip(*mix.items())
            for kind in rng.choices(kinds, weights, k=n):
                pool = creds["sts_users"] if kind == "sts_site" else (len(creds["tokens"]) if kind == "bearer" else len(creds["cookies"]))
                client.do(kind, rng.randrange(pool), rng.randrange(WORKERS))
        results.put(client.result())


# --- the run ----------------------------------------------------------------------------------


def merge(total, part):
    for section in ("counts", "errors"):
        for k, v in part.get(section, {}).items():
            total[section][k] = total[section].get(k, 0) + v
    total["reconnects"] = total.get("reconnects", 0) + part.get("reconnects", 0)
    for k, v in part.get("samples", {}).items():
        total["samples"].setdefault(k, []).extend(v[: 5 - len(total["samples"].get(k, []))])


def run_jobs(jobs, results, parts, sampler=None):
    """Hands out one job per process and waits for all of them, sampling meanwhile."""
    for job in parts:
        jobs.put(job)
    total = {"counts": {}, "errors": {}, "samples": {}}
    got = 0
    while got < len(parts):
        try:
            part = results.get(timeout=1)
        except Exception:  # queue.Empty
            if sampler:
                sampler()
            continue
        merge(total, part)
        got += 1
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000, help="all requests, warm-up included (default 10^6)")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=10_000)
    ap.add_argument("--sts-users", type=int, default=2_000)
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--sample-every", type=float, default=5.0)
    ap.add_argument("--mix", default=DEFAULT_MIX)
    ap.add_argument("--native", action="store_true", help="the native build (target/libenvoy_wam.so) in place of the .wasm")
    args = ap.parse_args()
    mix = {k: float(v) for k, v in (p.split("=") for p in args.mix.split(","))}

    stack.build_wasm((), native=args.native)
    logdir = tempfile.mkdtemp(prefix="envoy-wam-soak-")
    ports = {name: stack.free_port() for name in ("gateway", "admin", "backend", "op", "partner_op")}
    (op, partner), backend, envoy, config = start_stack(logdir, ports, args.native)
    pid, admin = envoy.p.pid, ports["admin"]
    t0 = time.time()
    report = {"settings": {**vars(args), "workers": WORKERS, "logdir": logdir}}
    try:
        print(f"soak: Envoy pid {pid}, logs in {logdir}; minting {args.users} cookies, signing {args.clients} tokens", flush=True)
        creds = {"cookies": mint_cookies(config, args.users, logdir), "tokens": sign_tokens(op, args.clients), "sts_users": min(args.sts_users, args.users)}
        wasm_before = wasm_stats(admin)
        ctx = mp.get_context("fork")
        lock, jobs, results = ctx.Lock(), ctx.Queue(), ctx.Queue()
        procs = [ctx.Process(target=client_main, args=(i, ports, creds, lock, jobs, results), daemon=True) for i in range(args.processes)]
        for p in procs:
            p.start()
        for _ in procs:
            msg = results.get(timeout=120)
            if "fatal" in msg:
                raise RuntimeError(msg["fatal"])
        rss = {"start": rss_kib(pid)}
        heap = {"start": envoy_heap_kib(admin)}
        print(f"soak: RSS at start {rss['start']} KiB", flush=True)

        def split(keys):
            return [keys[i :: args.processes] for i in range(args.processes)]

        totals = {"counts": {}, "errors": {}, "samples": {}}
        per_entry = {}
        sent = 0
        phases = [("sessions", "session", args.users), ("bearer tokens", "bearer", args.clients), ("jwt-site tokens", "jwt_site", args.users), ("sts-site tokens", "sts_site", creds["sts_users"])]
        for name, kind, n in phases:
            before = rss_kib(pid)
            started = time.time()
            part = run_jobs(jobs, results, [("warm", kind, keys) for keys in split(list(range(n)))])
            merge(totals, part)
            time.sleep(1)  # let the ticks run
            after = rss_kib(pid)
            entries = n * WORKERS
            per_entry[name] = {"entries": entries, "rss_growth_kib": after - before, "bytes_per_entry": round((after - before) * 1024 / entries) if entries else None}
            sent += n * WORKERS
            print(f"soak: warm-up {name}: {n} keys x {WORKERS} workers in {time.time() - started:.0f}s, RSS +{after - before} KiB ({per_entry[name]['bytes_per_entry']} B/entry), errors {part['errors']}", flush=True)
        rss["after_warmup"] = rss_kib(pid)
        heap["after_warmup"] = envoy_heap_kib(admin)
        remaining = max(0, args.requests - sent)
        samples = []
        last = [0.0]

        def sample():
            if time.time() - last[0] < args.sample_every:
                return
            last[0] = time.time()
            s = {"t": round(time.time() - t0, 1), "rss_kib": rss_kib(pid), "envoy_heap_kib": envoy_heap_kib(admin), **gauges(admin)}
            samples.append(s)
            print(f"soak: t={s['t']}s RSS {s['rss_kib']} KiB, Envoy heap {s['envoy_heap_kib']} KiB {json.dumps({k: v for k, v in s.items() if k not in ('t', 'rss_kib', 'envoy_heap_kib')})}", flush=True)

        mixed_start = time.time()
        chunk = 20_000  # jobs of this many requests, so samples and progress come often
        parts, seed = [], 0
        while remaining > 0:
            n = min(chunk, remaining)
            parts.append(("mix", n, mix, seed))
            remaining -= n
            seed += 1
        for i in range(0, len(parts), args.processes):
            batch = parts[i : i + args.processes]
            part = run_jobs(jobs, results, batch, sample)
            merge(totals, part)
            sent += sum(p[1] for p in batch)
            if not envoy.alive():
                raise RuntimeError(f"Envoy exited:\n{envoy.log()[-3000:]}")
        mixed_s = time.time() - mixed_start
        time.sleep(1)
        rss["end"] = rss_kib(pid)
        heap["end"] = envoy_heap_kib(admin)
        last[0] = 0
        sample()
        wasm_after = wasm_stats(admin)
        for _ in procs:
            jobs.put(None)
        for p in procs:
            p.join(timeout=10)
        # What the caches may hold at most (per worker: the session cache's fixed 10,000, the
        # token cache's and each site's configured bounds), at the bytes per entry measured.
        caps = {
            "sessions": 10_000,
            "bearer tokens": config.get("api", {}).get("cache_max_entries", 10_000),
            "jwt-site tokens": 10_000,
            "sts-site tokens": 10_000,
        }
        bound_kib = sum(caps[n] * WORKERS * (p["bytes_per_entry"] or 0) for n, p in per_entry.items()) // 1024
        vm = {k: {"before": wasm_before.get(k), "after": v} for k, v in wasm_after.items() if "envoy-wam" in k or "runtime" in k}
        errors = sum(totals["errors"].values())
        report.update(
            requests=sum(totals["counts"].values()),
            mixed_requests_per_s=round((sent - sum(p["entries"] for p in per_entry.values())) / mixed_s, 1) if mixed_s else None,
            counts=totals["counts"],
            errors=totals["errors"],
            error_samples=totals["samples"],
            reconnects=totals.get("reconnects", 0),
            rss_kib=rss,
            envoy_heap_kib=heap,
            rss_growth_after_warmup_kib=rss["end"] - rss["after_warmup"],
            rss_growth_since_start_kib=rss["end"] - rss["start"],
            cache_bound_kib=bound_kib,
            bytes_per_cached_entry=per_entry,
            wasm_vm=vm,
            envoy_alive=envoy.alive(),
            samples=samples,
            seconds=round(time.time() - t0, 1),
        )
        print()
        print(f"soak: {report['requests']} requests in {report['seconds']}s ({report['mixed_requests_per_s']} req/s in the mixed phase), {errors} errors {totals['errors']}")
        print(f"  RSS KiB: start {rss['start']}, after warm-up {rss['after_warmup']}, end {rss['end']} (growth after warm-up {report['rss_growth_after_warmup_kib']:+d} KiB)")
        print(f"  Envoy's own heap KiB (outside the wasm VMs): start {heap['start']}, after warm-up {heap['after_warmup']}, end {heap['end']}")
        print(f"  growth since start {report['rss_growth_since_start_kib']:+d} KiB; full caches at the measured sizes would take {bound_kib} KiB ({', '.join(f'{n} {c}' for n, c in caps.items())} per worker)")
        for name, p in per_entry.items():
            print(f"  {name}: {p['entries']} entries, RSS +{p['rss_growth_kib']} KiB, {p['bytes_per_entry']} bytes per entry")
        print(f"  wasm VMs: {json.dumps(vm)}")
        if totals["samples"]:
            print(f"  error samples: {json.dumps(totals['samples'])[:2000]}")
        print(json.dumps({k: v for k, v in report.items() if k != "samples"}))
        with open(os.path.join(logdir, "soak-report.json"), "w") as f:
            json.dump(report, f, indent=1)
    finally:
        envoy.stop()
        backend.stop()
        op.stop()
        partner.stop()


if __name__ == "__main__":
    main()
