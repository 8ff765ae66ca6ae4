"""Metrics (issue 12) end to end: after a scripted login, a request the policy denies, bearer
calls (one refused) and mediated calls (an STS exchange, then its cached token), the filter's
counters in Envoy's /stats/prometheus moved by exactly the expected amounts, every other
envoy-wam counter stayed at zero, the cache-size gauges show the entries, and the callout
latency histograms have the callouts. One worker, so which worker holds the JWKS is known.
"""

import json
import os
import re
import time
import urllib.request

import pytest
import requests

import stack


AUDIENCE = "https://orders.internal"


def metrics_config(op):
    cfg = stack.wam_config(op.issuer)
    cfg["site_authenticators"] = [
        {
            "name": "orders-sts",
            "type": "token_exchange",
            "sts": {
                "cluster": "op",
                "token_endpoint": f"{op.issuer}/token",
                "client_id": "pa_sts",
                "client_secret": stack.CLIENT_SECRET,
                "auth_method": "client_secret_basic",
                "timeout_ms": 3000,
            },
            "audience": AUDIENCE,
            "requested_token_type": stack.TT_ACCESS_TOKEN,
            "inject": {"header": "authorization"},
        }
    ]
    api = {"type": "api", "api": {"validation": "jwt", "audiences": [stack.API_RESOURCE]}}
    root = [{"name": "root", "paths": ["/*"]}]
    cfg["policy"] = {
        "default_decision": "deny",
        "applications": [
            {
                "name": "portal",
                "hosts": ["*"],
                "context_root": "/",
                "type": "web",
                "resources": [
                    {"name": "root", "paths": ["/*"]},
                    {"name": "admin", "paths": ["/admin/*"], "rules": [{"type": "attribute", "claim": "groups", "one_of": ["no-such-group"]}]},
                ],
            },
            {"name": "orders", "hosts": ["*"], "context_root": "/api", **api, "resources": root},
            {"name": "orders.mediated", "hosts": ["*"], "context_root": "/bm", **api, "site_authenticator": "orders-sts", "resources": root},
        ],
    }
    return cfg


@pytest.fixture(scope="module")
def metered(built, op, backend, gateways, logdir):
    port = gateways.ports[3]
    admin = stack.free_port()
    bootstrap = stack.envoy_bootstrap(port, admin, "wam", metrics_config(op), backend.port, op.port)
    bootstrap["stats_config"] = {"stats_tags": stack.wam_stats_tags()}
    # Histograms reach the admin endpoints when Envoy flushes its stats.
    bootstrap["stats_flush_interval"] = "0.5s"
    p = stack.start_envoy(port, bootstrap, concurrency=1, logdir=logdir, name="envoy-metrics")
    p.admin = admin
    yield p
    p.stop()


def counters(envoy):
    """Every envoy-wam counter: {(name, labels): value}."""
    # (The configuration-reload stats, envoy_wam_config_*, are not the filter's counts: they
    # are there with or without `metrics`, see test_reconfigure.py.)
    return {
        k: v
        for k, v in stack.prometheus_samples(envoy.admin).items()
        if not re.search(r"_(bucket|sum|count)$", k[0])
        and k[0] not in ("envoy_wam_cache_entries", "envoy_wam_shared_cache_entries")
        and not k[0].startswith("envoy_wam_config_")
    }


def key(name, **labels):
    return (f"envoy_wam_{name}", frozenset(labels.items()))


def settled(envoy, want, timeout=5):
    """The samples once `want` (a predicate on them) holds: the filter hands its counts to
    Envoy on its next tick (100 ms), histograms on Envoy's stats flush."""
    deadline = time.time() + timeout
    while True:
        samples = stack.prometheus_samples(envoy.admin)
        if want(samples) or time.time() > deadline:
            return samples
        time.sleep(0.1)


def bearer(token):
    return {"authorization": f"Bearer {token}", "accept": "application/json"}


def test_counters_move_by_exactly_what_happened(metered, op):
    before = counters(metered)
    assert before, "the counters are defined at configuration, before any request"
    assert all(v == 0 for v in before.values()), {k: v for k, v in before.items() if v}

    # A login: the first request has no cookie (a `login` decision, a login started), the
    # callback completes it (one JWKS fetch for the ID token), the return has the session.
    browser = requests.Session()
    r = stack.login(browser, metered.url, "/app/")
    assert r.status_code == 200 and r.json()["headers"]["x-wam-user"] == "alice"
    # A request the policy denies.
    r = browser.get(metered.url + "/admin/x", headers={"accept": "text/html"})
    assert r.status_code == 403
    # Bearer calls: a good token (a cache miss; the keys are loaded already), and garbage.
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    assert requests.get(metered.url + "/api/orders/1", headers=bearer(token)).status_code == 200
    assert requests.get(metered.url + "/api/orders/1", headers=bearer("garbage")).status_code == 401
    # Mediated calls with the same token: the token's verdict is cached (same checks), the
    # first exchanges it at the STS, the second uses the cached site token.
    for _ in range(2):
        r = requests.get(metered.url + "/bm/orders/2", headers=bearer(token))
        assert r.status_code == 200, r.text[:300]
        assert r.json()["headers"]["authorization"] != f"Bearer {token}"

    expected = {
        key("logins_started_total"): 1,
        key("logins_completed_total"): 1,
        key("jwks_fetches_total", result="ok"): 1,
        key("session_checks_total", result="none"): 1,
        key("session_checks_total", result="valid"): 2,
        key("decisions_total", app="portal", outcome="login"): 1,
        key("decisions_total", app="portal", outcome="allow"): 1,
        key("decisions_total", app="portal", outcome="deny"): 1,
        key("decisions_total", app="orders", outcome="allow"): 1,
        key("decisions_total", app="orders_mediated", outcome="allow"): 2,
        key("bearer_cache_total", result="miss"): 2,
        key("bearer_cache_total", result="hit"): 2,
        key("bearer_tokens_total", result="valid"): 3,
        key("bearer_tokens_total", result="invalid", reason="malformed"): 1,
        key("mediation_cache_total", result="miss"): 1,
        key("mediation_cache_total", result="hit"): 1,
        key("mediation_exchanges_total", status="ok"): 1,
    }
    samples = settled(metered, lambda s: all(s.get(k) == v for k, v in expected.items()))
    after = {k: v for k, v in samples.items() if k in before}
    moved = {k: after.get(k, 0) - before[k] for k in before if after.get(k, 0) != before[k]}
    assert moved == expected

    # The cache sizes: one session, two token verdicts (one refused), one site token.
    gauges = settled(metered, lambda s: s.get(key("cache_entries", cache="bearer")) == 2)
    assert gauges[key("cache_entries", cache="sessions")] == 1
    assert gauges[key("cache_entries", cache="bearer")] == 2
    assert gauges[key("cache_entries", cache="mediation")] == 1
    # The native build's process-wide tier holds what the worker learned the expensive way: the
    # same entries (one worker here). The wasm build has no tier, and no such gauge.
    shared = {c: key("shared_cache_entries", cache=c) for c in ("sessions", "bearer", "mediation")}
    if stack.BUILD == "native":
        tier = settled(metered, lambda s: s.get(shared["bearer"]) == 2)
        assert [tier[shared[c]] for c in ("sessions", "bearer", "mediation")] == [1, 2, 1]
    else:
        assert not any(k in gauges for k in shared.values())

    # One callout each to the token endpoint, the JWKS and the STS, timed.
    def count(upstream):
        return lambda s: s.get(key("callout_duration_ms_count", upstream=upstream))

    timed = settled(metered, lambda s: all(count(u)(s) == 1 for u in ("op_token", "jwks", "sts")), timeout=8)
    for upstream in ("op_token", "jwks", "sts"):
        assert count(upstream)(timed) == 1, upstream
        # Recorded in whole milliseconds: a loopback callout may take less than one.
        assert timed[key("callout_duration_ms_sum", upstream=upstream)] >= 0
    assert count("introspection")(timed) == 0


def test_plain_stats_use_envoys_dotted_names(metered):
    with urllib.request.urlopen(f"http://127.0.0.1:{metered.admin}/stats?filter=envoy_wam", timeout=5) as r:
        text = r.read().decode()
    assert "wasmcustom.envoy_wam.logins_started_total: " in text
    assert "wasmcustom.envoy_wam.decisions_total.app.portal.outcome.allow: " in text
    assert "wasmcustom.envoy_wam.callout_duration_ms.upstream.sts: " in text
    # Labels are the configuration's application names and fixed words, never request data.
    assert "alice" not in text and "/admin" not in text


def test_the_examples_name_real_metrics_and_the_same_labels(metered):
    """The dashboard queries only metrics Envoy really serves (with the labels it groups by),
    and every shipped copy of the stats tags is the one these tests run with."""
    samples = stack.prometheus_samples(metered.admin)
    served = {name for name, _ in samples}
    labels = {label for _, ls in samples for label, _ in ls}
    with open(os.path.join(stack.ROOT, "examples", "grafana-envoy-wam.json")) as f:
        dashboard = json.load(f)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 15
    for expr in exprs:
        for name in re.findall(r"envoy_wam_\w+", expr):
            assert name in served, (name, expr)
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in group.split(","):
                assert label.strip() in labels | {"le"}, (label, expr)
    want = [(t["tag_name"], t["regex"]) for t in stack.wam_stats_tags()]
    for path in ("examples/envoy-stats-tags.yaml", "envoy/envoy-demo.yaml", "envoy/envoy-native-demo.yaml", "envoy/envoy-compose.yaml", "envoy/istio-wasmplugin.yaml"):
        with open(os.path.join(stack.ROOT, path)) as f:
            text = f.read()
        found = re.findall(r"tag_name: (\w+),?\s+regex: '([^']+)'", text)
        assert found == want, path


def test_metrics_off_define_nothing(start_gateway, op):
    """`"metrics": false`: no envoy-wam stat exists, and the filter works as ever."""
    cfg = stack.wam_config(op.issuer, metrics=False)
    envoy = start_gateway(cfg, slot=1)
    r = requests.get(envoy.url + "/x", headers={"accept": "text/html"}, allow_redirects=False)
    assert r.status_code == 302
    time.sleep(0.3)  # a tick or two
    with urllib.request.urlopen(f"http://127.0.0.1:{envoy.admin_port}/stats/prometheus", timeout=5) as r:
        text = r.read().decode()
    # Only the configuration-reload stats, which do not depend on `metrics`.
    assert not re.search(r"^(# TYPE )?envoy_wam_(?!config_)", text, re.M)
    assert re.search(r"^envoy_wam_config_last_reload_success\{?\}? 1$", text, re.M), "the filter is configured and its stats served"
    if stack.BUILD == "wasm":
        # Envoy's own stats of the Wasm VM named envoy-wam (the native build has no VM).
        assert "envoy_wasm_envoy_wam_" in text
