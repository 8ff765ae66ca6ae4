"""Requests that wait on each other, end to end. A small proxy in front of the OP holds every
request to it for a moment, so that a second request arrives while the first one's callout is
under way, deterministically.

The case that matters most: two requests with the same new opaque token for two applications
mediated by different sites. The first one asks the introspection endpoint; the second waits.
When the answer comes, the first goes on to its STS exchange, and the second is woken inside the
first one's callback and needs an exchange of its own, which the filter must not send from
there (the SDK would deliver its answer to the first request's context, which may be gone by
then): the root context sends it on its next tick. Both must end with their own mediated token.
"""

import socket
import threading
import time

import pytest
import requests

import jwtutil
import stack

DELAY_S = 0.4


class SlowProxy:
    """Forwards TCP to `upstream_port`, holding each chunk from the client for DELAY_S."""

    def __init__(self, upstream_port):
        self.upstream = upstream_port
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            threading.Thread(target=self._pump, args=(client, up, DELAY_S), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, 0), daemon=True).start()

    @staticmethod
    def _pump(src, dst, delay):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        self.sock.close()


def config(op):
    cfg = stack.wam_config(op.issuer)
    cfg["op"]["introspection_endpoint"] = f"{op.issuer}/token/introspection"
    cfg["op"]["cluster"] = "op-slow"
    cfg["op"]["timeout_ms"] = 5000
    cfg["identity_headers"] = [{"header": "x-wam-client", "claim": "client_id"}]

    def site(name, audience):
        return {
            "name": name,
            "type": "token_exchange",
            "audience": audience,
            # The STS is reached directly (no delay), through its own cluster.
            "sts": {"cluster": "op", "token_endpoint": f"{op.issuer}/token", "client_id": "pa_sts",
                    "client_secret": stack.CLIENT_SECRET, "timeout_ms": 3000},
            "inject": {"header": "authorization"},
        }

    cfg["site_authenticators"] = [site("site-a", "https://a.example.test"), site("site-b", "https://b.example.test")]
    api = {"validation": "introspection"}
    root = [{"name": "root", "paths": ["/*"]}]
    cfg["policy"] = {
        "applications": [
            {"name": "a", "hosts": ["*"], "context_root": "/a", "type": "api", "api": api, "site_authenticator": "site-a", "resources": root},
            {"name": "b", "hosts": ["*"], "context_root": "/b", "type": "api", "api": api, "site_authenticator": "site-b", "resources": root},
            {"name": "c", "hosts": ["*"], "context_root": "/c", "type": "api", "api": api, "resources": root},
        ]
    }
    return cfg


@pytest.fixture(scope="module")
def slow_gw(built, op, backend, gateways, logdir):
    proxy = SlowProxy(op.port)
    p = stack.start_gateway(gateways.ports[3], config(op), backend.port, op.port, logdir, name="envoy-concurrency", clusters={"op-slow": proxy.port})
    yield p
    p.stop()
    proxy.close()


def fetch_all(calls):
    """Runs (url, headers) calls at once; returns the responses in order."""
    out = [None] * len(calls)

    def run(i, url, headers):
        out[i] = requests.get(url, headers=headers, timeout=15)

    threads = []
    for i, (url, headers) in enumerate(calls):
        t = threading.Thread(target=run, args=(i, url, headers))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # the first one is surely first
    for t in threads:
        t.join()
    return out


def stats(op):
    s = stack.op_stats(op.port)
    return s.get("/token/introspection", 0), s.get("grant:token-exchange", 0)


def test_a_woken_request_sends_its_own_exchange_from_the_root_context(slow_gw, op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, "orders:read")
    before = stats(op)
    bearer = {"authorization": f"Bearer {token}", "accept": "application/json"}
    first, second = fetch_all([(slow_gw.url + "/a/x", bearer), (slow_gw.url + "/b/x", bearer)])
    after = stats(op)
    assert (after[0] - before[0], after[1] - before[1]) == (1, 2), "one introspection, one exchange per site"
    for r, audience in ((first, "https://a.example.test"), (second, "https://b.example.test")):
        assert r.status_code == 200, (r.status_code, r.text[:300])
        seen = r.json()["headers"]["authorization"]
        assert seen != f"Bearer {token}", "the site never gets the client's token"
        assert jwtutil.claims_of(seen.split(" ", 1)[1])["aud"] == audience


def test_many_concurrent_requests_with_one_new_token_make_one_introspection_call(slow_gw, op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, "orders:read")
    before = stats(op)
    bearer = {"authorization": f"Bearer {token}", "accept": "application/json"}
    responses = fetch_all([(slow_gw.url + f"/c/{i}", bearer) for i in range(6)])
    assert [r.status_code for r in responses] == [200] * 6
    assert all(r.json()["headers"]["x-wam-client"] == "api_client" for r in responses)
    assert stats(op)[0] - before[0] == 1
