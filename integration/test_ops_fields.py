"""Operating the gateway (issue 12, items 5 and 6) end to end: Envoy's own access log prints
envoy-wam's subject, application, resource and decision (`access_log_fields`, written to filter
state as `wasm.envoy_wam.*` by either build), and the detailed heartbeat tells a load balancer whether this
gateway can sign anyone in.
"""

import json
import os
import time

import requests

import stack

import pytest


HTML = {"accept": "text/html"}


def portal(op, **extra):
    return stack.wam_config(
        op.issuer,
        **{
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
                            {"name": "admin", "paths": ["/admin/*"], "rules": [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]},
                        ],
                    }
                ],
            },
            **extra,
        },
    )


def start(op, backend, gateways, logdir, cfg, name, slot=2, op_port=None):
    port = gateways.ports[slot]
    log = os.path.join(logdir, f"{name}-access.log")
    boot = stack.envoy_bootstrap(port, stack.free_port(), "wam", cfg, backend.port, op_port or op.port, access_log=log)
    envoy = stack.start_envoy(port, boot, concurrency=1, logdir=logdir, name=name)
    envoy.access_log = log
    return envoy


def access_lines(envoy, count, timeout=10):
    """The access log's first `count` lines (Envoy flushes the file about once a second)."""
    deadline = time.time() + timeout
    while True:
        lines = []
        if os.path.exists(envoy.access_log):
            with open(envoy.access_log) as f:
                lines = [json.loads(line) for line in f if line.strip()]
        if len(lines) >= count or time.time() > deadline:
            return lines
        time.sleep(0.2)


def test_the_access_log_names_subject_application_resource_and_decision(built, op, backend, gateways, logdir):
    envoy = start(op, backend, gateways, logdir, portal(op), "envoy-access-log")
    try:
        url = envoy.url
        anonymous = requests.get(url + "/docs", headers=HTML, allow_redirects=False, timeout=10)
        assert anonymous.status_code == 302
        s = requests.Session()
        stack.login(s, url, "/", username="bob")
        assert s.get(url + "/admin/", headers=HTML, timeout=10).status_code == 403
        assert s.get(url + "/hello", headers=HTML, timeout=10).status_code == 200
        lines = access_lines(envoy, 6)
        mine = [l for l in lines if l["path"] in ("/docs", "/admin/", "/hello")]
        by_path = {l["path"]: l for l in mine}
        assert by_path["/docs"] == {**by_path["/docs"], "status": 302, "subject": None, "application": "portal", "resource": "root", "decision": "login"}
        assert by_path["/admin/"] == {**by_path["/admin/"], "status": 403, "subject": "bob", "application": "portal", "resource": "admin", "decision": "deny"}
        assert by_path["/hello"] == {**by_path["/hello"], "status": 200, "subject": "bob", "application": "portal", "resource": "root", "decision": "allow"}
        # The gateway's own endpoints carry none of it (the callback's line has no decision).
        cb = [l for l in lines if l["path"].startswith("/pa/oidc/cb")]
        assert cb and cb[0]["decision"] is None
        # Each field is written once per request (the native build's filter state is
        # read-only: Envoy reports a second write of a key as a bug).
        assert "FilterStateAccessViolation" not in envoy.log() and "envoy_bug" not in envoy.log()
    finally:
        envoy.stop()


def test_the_detailed_heartbeat_says_whether_sign_in_can_work(built, op, backend, gateways, logdir):
    envoy = start(op, backend, gateways, logdir, portal(op), "envoy-heartbeat")
    try:
        r = requests.get(envoy.url + "/pa/heartbeat.ping", timeout=5)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        body = r.json()
        assert body["status"] == "ready"
        assert body["ops"][0] == {"issuer": op.issuer, "ready": True, "endpoints": "configured", "jwks": {"state": "not_fetched", "keys": 0, "age_s": None}}
        stack.login(requests.Session(), envoy.url, "/", username="alice")
        jwks = requests.get(envoy.url + "/pa/heartbeat.ping", timeout=5).json()["ops"][0]["jwks"]
        assert jwks["state"] == "loaded" and jwks["keys"] >= 1 and jwks["age_s"] is not None
    finally:
        envoy.stop()

    # Discovery at an OP that cannot be reached: not ready, 503, and the body says why.
    dead = stack.free_port()
    cfg = portal(op)
    cfg["op"] = {"issuer": op.issuer, "cluster": "op", "discovery": True, "timeout_ms": 500}
    envoy = start(op, backend, gateways, logdir, cfg, "envoy-heartbeat-down", op_port=dead)
    try:
        r = requests.get(envoy.url + "/pa/heartbeat.ping", timeout=5)
        assert r.status_code == 503
        assert r.json()["status"] == "not_ready"
        assert r.json()["ops"][0]["endpoints"] == "missing"
    finally:
        envoy.stop()
