"""Security review 3 (issue 10: sessions that end when they should), end to end through
Envoy 1.40: each test states what the gateway must do; each failed on the code as reviewed and
passes since the fixes.

The request bodies the gateway reads (a back-channel logout, a form post kept through a login)
make the request go on "held", stripped, to /.envoy-wam/held-for-body, while the filter reads
the body; it must then end with the gateway's own answer. Nothing of the client may reach a
backend, and no backend's answer may reach the client.
"""

import socket
import threading
import time

import pytest

import h2mini
import stack

FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def gw(built, op, backend, gateways, logdir):
    cfg = stack.live_config(op.issuer)
    p = stack.start_gateway(gateways.ports[2], cfg, backend.port, op.port, logdir, name="envoy-review3", concurrency=2)
    yield p
    p.stop()


class EarlyBackend:
    """A backend that answers as soon as a request's headers arrive, without reading its body
    (as many servers answer a 404 or 405), and records the heads it got."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.heads = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        head = b""
        while b"\r\n\r\n" not in head:
            got = conn.recv(4096)
            if not got:
                return
            head += got
        self.heads.append(head)
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nbackend-early")
        time.sleep(1)
        conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def early_gw(built, op, logdir):
    backend = EarlyBackend()
    p = stack.start_gateway(stack.free_port(), stack.live_config(op.issuer), backend.port, op.port, logdir, name="envoy-review3-early")
    yield p, backend
    p.stop()
    backend.close()


def h2_post(gw, path, body, trailers, extra=()):
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", f"127.0.0.1:{gw.port}"), (":path", path), ("content-type", FORM), *extra]
    return h2mini.request(gw.port, headers, [body], trailers=trailers)


NAVIGATE = (("accept", "text/html"), ("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "navigate"))


def slow_post(port, path, body, headers=()):
    """An HTTP/1.1 POST whose body follows its headers half a second later; the raw answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: {FORM}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{n}: {v}\r\n" for n, v in headers)
        s.sendall(head.encode() + b"\r\n")
        time.sleep(0.5)
        try:
            s.sendall(body)
        except OSError:
            pass
        out = b""
        try:
            while b"\r\n\r\n" not in out or len(out.split(b"\r\n\r\n", 1)[1]) < 10:
                got = s.recv(65536)
                if not got:
                    break
                out += got
        except OSError:
            pass
        return out


# --- a held request's body is never forwarded ----------------------------------------------------


def test_trailers_do_not_carry_a_back_channel_body_to_the_backend(gw):
    """HTTP/2 trailers after the body: the filter let them through, and with them the body it
    held, to the backend, whose answer went to the client; the logout token was never read."""
    a = h2_post(gw, "/pa/oidc/backchannel", b"logout_token=not-a-jwt", [("x-trailer", "1")])
    assert b"held-for-body" not in a.data and b"not-a-jwt" not in a.data, a
    assert a.status == 400 and b"malformed logout token" in a.data, a


def test_trailers_do_not_carry_a_form_post_to_the_backend(gw):
    """An anonymous form post to a protected path, its body followed by trailers: the backend got
    the body; now the post signs in (302), the body kept, never forwarded."""
    a = h2_post(gw, "/protected/form", b"secret=posted-by-anyone", [("x-trailer", "1")], NAVIGATE)
    assert b"posted-by-anyone" not in a.data and b"held-for-body" not in a.data, a
    assert a.status == 302, a


def test_a_backend_answering_a_held_request_early_is_not_the_answer(early_gw):
    """A backend that answers before reading the body: its answer (to a request the gateway
    never allowed) went to the client, and the back-channel logout was silently lost (an OP
    reading 200 would think it was delivered). Now the gateway answers: 503, retry."""
    p, backend = early_gw
    out = slow_post(p.port, "/pa/oidc/backchannel", b"logout_token=abc")
    if stack.BUILD == "native":
        # The native build stops the request in its headers hook and reads the body there:
        # nothing reaches the backend, and the logout token is read (and refused).
        assert not backend.heads, "the native build let a request on before reading its body"
        assert b"backend-early" not in out, out
        assert out.startswith(b"HTTP/1.1 400") and b"malformed logout token" in out, out
        return
    assert backend.heads, "the held request reached the backend (the case under test)"
    assert b"backend-early" not in out, out
    assert out.startswith(b"HTTP/1.1 503") and b"temporarily_unavailable" in out, out


def test_a_backend_answering_a_held_form_post_early_is_not_the_answer(early_gw):
    p, _ = early_gw
    out = slow_post(p.port, "/protected/form", b"a=1", [("accept", "text/html"), ("sec-fetch-site", "same-origin"), ("sec-fetch-mode", "navigate")])
    assert b"backend-early" not in out, out
    assert out.startswith(b"HTTP/1.1 302"), out
