"""The native build's shared caches across the workers of one Envoy (issue 13, "Shared state
where native allows it"): Envoy with --concurrency 2 and the listener's exact connection
balance, so two keep-alive connections opened together are held by different workers. Each
test checks that assumption from Envoy's per-worker listener stats before relying on it.

What a worker learned is then known to the other: a rate limit of N per Envoy allows N across
both workers; a token introspected on one is answered on the other without a second call at
the OP; the JWKS is fetched once per process; a session logged out on one is refused on the
other. Call counts come from the OP's own /__stats."""

import http.client
import json
import time

import pytest
import requests

import stack
from test_api_access import api_config

RATE = 4


def shared_config(issuer):
    cfg = api_config(issuer)
    apps = cfg["policy"]["applications"]
    for app in apps:
        if app["name"] == "orders-api":
            app["resources"].append(
                {
                    "name": "limited",
                    "paths": ["/limited/*"],
                    "rules": [{"type": "rate_limit", "requests": RATE, "interval_s": 3600, "per": "client_address"}],
                }
            )
    apps.append({"name": "web", "hosts": ["*"], "context_root": "/web", "type": "web", "resources": [{"name": "root", "paths": ["/*"]}]})
    return cfg


@pytest.fixture(scope="module")
def so():
    stack.build_native()
    return stack.WAM_SO


@pytest.fixture
def gw(so, op, backend, gateways, logdir):
    port = gateways.ports[3]
    bootstrap = stack.envoy_bootstrap(port, stack.free_port(), "wam-native", shared_config(op.issuer), backend.port, op.port)
    bootstrap["static_resources"]["listeners"][0]["connection_balance_config"] = {"exact_balance": {}}
    e = stack.start_envoy(port, bootstrap, concurrency=2, logdir=logdir, name="envoy-native-shared")
    yield e
    e.stop()


def worker_connections(gw):
    stats = stack.admin_stats(gw.admin_port, filter=r"worker_\d+\.downstream_cx_active")
    return sorted(v for k, v in stats.items() if k.startswith(f"listener.127.0.0.1_{gw.port}."))


@pytest.fixture
def two_workers(gw):
    """Two open keep-alive connections, one per worker (checked, not assumed), and at the end
    still the same two (http.client would silently reconnect, perhaps to the other worker)."""
    conns = [http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10) for _ in range(2)]
    try:
        for c in conns:
            c.connect()
        deadline = time.time() + 5
        while worker_connections(gw) != [1, 1] and time.time() < deadline:
            time.sleep(0.05)
        assert worker_connections(gw) == [1, 1], "exact balance did not give each worker one connection"
        socks = [c.sock for c in conns]
        yield conns
        assert [c.sock for c in conns] == socks, "a connection was reopened: its worker is unknown"
    finally:
        for c in conns:
            c.close()


def get(conn, path, headers=None):
    conn.request("GET", path, headers={"accept": "application/json", **(headers or {})})
    r = conn.getresponse()
    return r.status, r.read(), r


def bearer(token):
    return {"authorization": f"Bearer {token}"}


def calls(op, path):
    return stack.op_stats(op.port).get(path, 0)


def test_a_rate_limit_of_n_per_envoy_allows_n_across_both_workers(gw, two_workers, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    statuses = [get(two_workers[i % 2], f"/api/limited/{i}", bearer(token))[0] for i in range(3 * RATE)]
    assert statuses.count(200) == RATE, statuses
    assert statuses.count(429) == 2 * RATE, statuses


def test_an_introspection_on_one_worker_answers_the_other(gw, two_workers, op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, "orders:read")
    before = calls(op, "/token/introspection")
    one, other = two_workers
    status, body, _ = get(one, "/opaque/read/1", bearer(token))
    assert status == 200, body[:300]
    assert calls(op, "/token/introspection") == before + 1
    for i in range(3):
        status, body, _ = get(other, f"/opaque/read/{i}", bearer(token))
        assert status == 200, body[:300]
        assert json.loads(body)["headers"]["x-wam-client"] == "api_client"
    assert calls(op, "/token/introspection") == before + 1, "the other worker asked the OP again"


def test_the_jwks_is_fetched_once_per_process_not_per_worker(gw, two_workers, op):
    tokens = [stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read") for _ in range(2)]
    before = calls(op, "/jwks")
    one, other = two_workers
    assert get(one, "/api/read/1", bearer(tokens[0]))[0] == 200
    assert calls(op, "/jwks") == before + 1
    # Another token, on the other worker, which has never fetched the keys.
    assert get(other, "/api/read/2", bearer(tokens[1]))[0] == 200
    assert get(other, "/api/read/3", bearer(tokens[0]))[0] == 200
    assert calls(op, "/jwks") == before + 1, "the other worker fetched the JWKS itself"


def test_a_session_logged_out_on_one_worker_is_refused_on_the_other(gw, two_workers, op):
    # The two connections are opened first: the login's own (which requests may keep open)
    # then cannot unbalance the workers before they are placed.
    s = requests.Session()
    r = stack.login(s, gw.url, "/web/", "alice")
    assert r.status_code == 200, r.text[:300]
    cookie = stack.cookie_header({c.name: c.value for c in s.cookies if c.name.startswith("PA.wam")})
    s.close()
    one, other = two_workers
    for c in (one, other):
        status, body, _ = get(c, "/web/x", {"cookie": cookie})
        assert status == 200, body[:300]
        assert json.loads(body)["headers"]["x-wam-user"] == "alice"
    status, _, _ = get(one, "/pa/oidc/logout", {"cookie": cookie, "accept": "text/html"})
    assert status == 302
    # The other worker takes in the revocation at its next tick (100 ms; a worker with no
    # waiting request ticks at its next request, this one).
    time.sleep(0.3)
    status, _, r = get(other, "/web/x", {"cookie": cookie, "accept": "text/html"})
    assert status == 302 and "/auth?" in (r.getheader("location") or ""), status
