"""Live reconfiguration (issue 12, item 4) end to end: Envoy takes its listener, and with it the
filter's configuration, from a watched file (LDS, `path_config_source` with
`watched_directory`); a new file is moved into place while the gateway serves.

- A valid new configuration (a second session key, first; a policy that lets `staff` into
  /admin/) is taken while a slow request is in the backend: that request completes, the
  session signed with the old key still works, and the policy change holds for new
  connections.
- An invalid one (a session key too short) is refused: Envoy counts a rejected update, the
  log names the field, envoy-wam's reload stats say so, and the previous configuration keeps
  serving. A valid one after it is taken again.
- Once Envoy has drained and dropped a replaced configuration, its caches leave the
  cache-size gauge (the wasm build withdraws them when its VM goes; the native build when the
  worker next starts a configuration or ticks).

Connections opened before an update keep the filter chain they started on until Envoy drains
them (`--drain-time-s`), so every check after an update uses a new connection.
"""

import base64
import json
import os
import threading
import time

import pytest
import requests

import stack


HTML = {"accept": "text/html"}
SLOT = 3  # the gateway port this module uses (conftest's Gateways)


def key(seed):
    return base64.b64encode(bytes([seed]) * 32).decode()


def config(op, keys, admin_groups):
    return stack.wam_config(
        op.issuer,
        **{
            "session.signing_keys": keys,
            "access_log_fields": True,
            "heartbeat": {"detailed": True},
            "policy": {
                "default_decision": "deny",
                "applications": [
                    {
                        "name": "portal",
                        "hosts": ["*"],
                        "context_root": "/",
                        "type": "web",
                        "resources": [
                            {"name": "root", "paths": ["/*"]},
                            {"name": "admin", "paths": ["/admin/*"], "rules": [{"type": "attribute", "claim": "groups", "one_of": admin_groups}]},
                        ],
                    }
                ],
            },
        },
    )


class LdsGateway:
    """Envoy (two workers) whose one listener comes from a watched file."""

    def __init__(self, op, backend, port, logdir, cfg, concurrency=2, args=()):
        self.port, self.op, self.backend = port, op, backend
        self.admin = stack.free_port()
        self.dir = os.path.join(logdir, f"lds-{port}")
        boot = stack.lds_bootstrap(self.bootstrap(cfg), self.dir)
        boot["stats_config"] = {"stats_tags": stack.wam_stats_tags()}
        self.envoy = stack.start_envoy(port, boot, concurrency=concurrency, logdir=logdir, name=f"envoy-lds-{port}", args=args)
        self.url = self.envoy.url

    def bootstrap(self, cfg):
        return stack.envoy_bootstrap(self.port, self.admin, "wam", cfg, self.backend.port, self.op.port)

    def swap(self, cfg):
        """Moves a listener with `cfg` into place; returns once Envoy took or refused it."""
        before = self.lds()
        stack.write_lds(self.dir, self.bootstrap(cfg)["static_resources"]["listeners"])
        deadline = time.time() + 15
        while time.time() < deadline:
            now = self.lds()
            if now["update_success"] + now["update_rejected"] > before["update_success"] + before["update_rejected"]:
                return now["update_success"] > before["update_success"]
            time.sleep(0.05)
        raise AssertionError(f"Envoy neither took nor refused the new listener:\n{self.envoy.log()[-3000:]}")

    def lds(self):
        s = stack.admin_stats(self.admin, "listener_manager.lds")
        return {k.rsplit(".", 1)[1]: v for k, v in s.items()}

    def reload_stats(self):
        s = stack.admin_stats(self.admin, "envoy_wam.config_")
        return {k.rsplit(".", 1)[1]: v for k, v in s.items()}

    def get(self, path, cookie, **headers):
        """One request on a connection of its own (see the module's docstring)."""
        h = {**HTML, "cookie": cookie, "connection": "close", **headers}
        return requests.get(self.url + path, headers=h, allow_redirects=False, timeout=30)

    def stop(self):
        self.envoy.stop()


@pytest.fixture
def lds(built, op, backend, gateways, logdir):
    started = []

    def start(cfg, **kw):
        g = LdsGateway(op, backend, gateways.ports[SLOT], logdir, cfg, **kw)
        started.append(g)
        return g

    yield start
    for g in started:
        g.stop()


def session_cookie(op, gateway_url):
    """bob (group staff only) logs in through the gateway; his session cookie as a header."""
    s = requests.Session()
    done = stack.login(s, gateway_url, "/", username="bob")
    assert done.status_code == 200, done.text[:300]
    assert done.json()["headers"]["x-wam-user"] == "bob"
    return "; ".join(f"{k}={v}" for k, v in s.cookies.items() if k.startswith("PA.wam"))


def test_a_new_configuration_is_taken_without_losing_requests_or_sessions(lds, op):
    k1 = {"kid": "k1", "secret": key(1)}
    k2 = {"kid": "k2", "secret": key(2)}
    gw = lds(config(op, [k1], ["admins"]))
    bob = session_cookie(op, gw.url)
    assert gw.get("/admin/x", bob).status_code == 403, "bob is not an admin under the first configuration"
    assert gw.reload_stats() == {"config_last_reload_success": 1, "config_reload_failed": 0}

    # A request still in the backend when the listener is replaced.
    slow = {}

    def in_flight():
        started = time.time()
        r = gw.get("/slow", bob, **{"x-echo-delay": "3"})
        slow.update(status=r.status_code, user=r.json()["headers"].get("x-wam-user"), took=time.time() - started)

    t = threading.Thread(target=in_flight)
    t.start()
    time.sleep(0.5)
    assert gw.swap(config(op, [k2, k1], ["admins", "staff"])), "the valid configuration was refused"
    assert t.is_alive(), "the swap came after the slow request ended: no request was in flight"

    # New connections get the new configuration once the workers have it.
    deadline = time.time() + 10
    while gw.get("/admin/x", bob).status_code != 200:
        assert time.time() < deadline, "the policy change never took effect"
        time.sleep(0.1)
    t.join(timeout=30)
    assert slow.get("status") == 200 and slow.get("user") == "bob", slow
    assert slow["took"] >= 3
    # bob's cookie was signed with k1: still configured, still valid.
    r = gw.get("/", bob)
    assert r.status_code == 200 and r.json()["headers"]["x-wam-user"] == "bob"
    assert gw.reload_stats() == {"config_last_reload_success": 1, "config_reload_failed": 0}

    # A configuration the filter refuses: Envoy keeps the listener it has.
    bad = config(op, [{"kid": "k3", "secret": base64.b64encode(b"short").decode()}, k1], ["admins"])
    assert not gw.swap(bad), "an invalid configuration was taken"
    assert gw.lds()["update_rejected"] == 1
    assert "invalid configuration at `session.signing_keys[0].secret`" in gw.envoy.log()
    assert gw.reload_stats() == {"config_last_reload_success": 0, "config_reload_failed": 1}
    time.sleep(0.5)
    assert gw.get("/admin/x", bob).status_code == 200, "the configuration before the refused one stopped serving"
    assert gw.get("/", bob).json()["headers"]["x-wam-user"] == "bob"

    # Fixed, it is taken; a session key no longer configured ends its sessions.
    assert gw.swap(config(op, [k2], ["admins"]))
    deadline = time.time() + 10
    while gw.get("/admin/x", bob, accept="application/json").status_code != 401:
        assert time.time() < deadline, "the session signed with the removed key k1 still works"
        time.sleep(0.1)
    assert gw.reload_stats() == {"config_last_reload_success": 1, "config_reload_failed": 1}
    r = requests.get(gw.url + "/pa/heartbeat.ping", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ready"


def test_a_login_started_before_a_change_completes_after_it(lds, op):
    """The login transaction (its cookie sealed with a session key still configured) survives
    the change: the callback lands on the new configuration and signs bob in."""
    k1 = {"kid": "k1", "secret": key(1)}
    k2 = {"kid": "k2", "secret": key(2)}
    gw = lds(config(op, [k1], ["admins"]))
    s = requests.Session()
    page = s.get(gw.url + "/admin/x", headers=HTML, allow_redirects=True, timeout=10)
    assert "/interaction/" in page.url, page.url
    assert gw.swap(config(op, [k2, k1], ["admins", "staff"]))
    s.close()  # the callback goes on a new connection: the new configuration
    time.sleep(1)
    done = stack.submit_login_form(s, page, "bob")
    assert done.status_code == 200, done.text[:300]
    assert done.json()["headers"]["x-wam-user"] == "bob"
    assert done.json()["path"] == "/admin/x", "bob is let into /admin/ by the new policy"


def test_a_replaced_configurations_caches_leave_the_cache_gauges(lds, op):
    """The cache-size gauges count the caches that exist: once Envoy has drained and dropped
    the old listener (and with it the old configuration's caches and, natively, its tier), only
    the new configuration's entries are in them. One worker, a drain of one second."""
    k1 = {"kid": "k1", "secret": key(1)}
    gw = lds(config(op, [k1], ["admins"]), concurrency=1, args=("--drain-time-s", "1"))
    bob = session_cookie(op, gw.url)
    assert gw.get("/", bob).status_code == 200

    # The native build's process-wide tier has a gauge of its own, which must follow alike.
    gauges = ["envoy_wam_cache_entries"] + (["envoy_wam_shared_cache_entries"] if stack.BUILD == "native" else [])

    def sessions(name):
        return stack.prometheus_samples(gw.admin).get((name, frozenset({("cache", "sessions")})))

    def settles(want, timeout=10):
        deadline = time.time() + timeout
        for name in gauges:
            while sessions(name) != want:
                assert time.time() < deadline, f"{name}{{cache=sessions}} is {sessions(name)}, not {want}"
                time.sleep(0.1)

    settles(1)  # bob's session, verified and cached by the first configuration
    assert gw.swap(config(op, [k1], ["admins", "staff"]))
    # The old filter chain drains for a second (Envoy updates the listener in place), then
    # Envoy drops it with its filter configuration.
    deadline = time.time() + 15
    while True:
        s = stack.admin_stats(gw.admin, "listener_manager.total_")
        draining = [s.get(f"listener_manager.total_{k}_draining") for k in ("filter_chains", "listeners")]
        if draining == [0, 0]:
            break
        assert time.time() < deadline, f"the old filter chain never finished draining: {draining}"
        time.sleep(0.2)
    time.sleep(0.5)
    # bob again, on the new configuration: its own cache holds his session now; the old
    # configuration's entry is gone from the gauge with it.
    assert gw.get("/admin/x", bob).status_code == 200
    settles(1)
    time.sleep(0.5)  # a few ticks more: it stays so
    assert gw.get("/", bob).status_code == 200
    settles(1)


def test_a_logged_out_session_stays_out_after_a_change(lds, op):
    """A logout is remembered across a reload: the revocation list outlives the configuration
    (Envoy's shared data in the wasm build; the process-wide store, kept per filter name, in
    the native build), so the logged-out cookie, still signed with a configured key, does not
    open again under the new configuration."""
    k1 = {"kid": "k1", "secret": key(1)}
    gw = lds(config(op, [k1], ["admins"]))
    bob = session_cookie(op, gw.url)
    assert gw.get("/x", bob).status_code == 200
    r = gw.get("/pa/oidc/logout", bob, **{"sec-fetch-site": "same-origin", "origin": gw.url})
    assert r.status_code == 302 and r.headers["location"].startswith(op.issuer + "/session/end?"), r.status_code
    time.sleep(0.5)  # every worker takes the list in at its next tick
    assert gw.get("/x", bob).status_code == 302, "logged out before the change"
    assert gw.swap(config(op, [k1], ["admins", "staff"]))
    time.sleep(1)
    for _ in range(4):  # new connections: the new configuration, on either worker
        r = gw.get("/x", bob)
        assert r.status_code == 302 and r.headers.get("location", "").startswith(op.issuer + "/auth?"), (r.status_code, r.headers.get("location"))
