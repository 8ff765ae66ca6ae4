"""Web sessions end to end: real Envoy with the filter, the real oidc-provider, the echo backend.
Each test is one thing a user of the gateway relies on."""

import base64
import json
import socket
import threading
import time
import urllib.parse

import pytest
import requests

import stack

HTML = {"accept": "text/html,application/xhtml+xml"}


def backend_view(response):
    assert response.status_code == 200, response.text[:500]
    return response.json()


def session_cookie(s):
    return s.cookies.get("PA.wam")


def logged_in(gateway, path="/", user="alice"):
    s = requests.Session()
    r = stack.login(s, gateway.url, path, user)
    return s, r


def test_heartbeat_needs_no_session(gateway):
    r = requests.get(gateway.url + "/pa/heartbeat.ping")
    assert (r.status_code, r.text) == (200, "OK")


def test_login_through_the_op_lands_on_the_page_first_asked_for(gateway, op):
    s, r = logged_in(gateway, "/app/page?x=1&y=%2F", "alice")
    assert r.url == gateway.url + "/app/page?x=1&y=%2F"
    seen = backend_view(r)
    assert seen["path"] == "/app/page?x=1&y=%2F"
    assert seen["headers"]["x-wam-user"] == "alice"
    assert seen["headers"]["x-wam-email"] == "alice@example.com"
    assert seen["headers"]["x-wam-groups"] == "staff,admins"
    assert "PA.wam" not in seen["headers"].get("cookie", ""), "the session cookie never reaches the backend"
    # The next request needs no OP at all.
    before = stack.op_stats(op.port)
    again = backend_view(s.get(gateway.url + "/other", headers=HTML, allow_redirects=False))
    assert again["headers"]["x-wam-user"] == "alice"
    assert stack.op_stats(op.port) == before


def test_the_redirect_to_the_op_is_a_pkce_authorization_request(gateway, op):
    r = requests.get(gateway.url + "/x", headers=HTML, allow_redirects=False)
    assert r.status_code == 302
    url = urllib.parse.urlsplit(r.headers["location"])
    assert f"{url.scheme}://{url.netloc}" == op.issuer and url.path == "/auth"
    q = dict(urllib.parse.parse_qsl(url.query))
    assert q["response_type"] == "code" and q["client_id"] == "pa_wam"
    assert q["redirect_uri"] == gateway.url + "/pa/oidc/cb"
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert len(q["state"]) >= 43 and len(q["nonce"]) >= 43
    assert set(q["scope"].split()) == {"openid", "profile", "email", "groups"}
    txn = r.headers["set-cookie"]
    assert "Path=/pa/oidc/cb" in txn and "HttpOnly" in txn and "SameSite=Lax" in txn


def test_session_cookie_attributes(gateway):
    s = requests.Session()
    first = s.get(gateway.url + "/", headers=HTML, allow_redirects=True)
    r = stack.submit_login_form(s, first, "bob")
    # The callback's answer is the first hop back at the gateway.
    callback = next(h for h in r.history if "/pa/oidc/cb" in h.url)
    assert callback.status_code == 302 and callback.headers["location"] == "/"
    cookies = callback.raw.headers.getlist("set-cookie")
    session = next(c for c in cookies if c.startswith("PA.wam="))
    for attr in ("Path=/;", "HttpOnly", "SameSite=Lax", "Max-Age=14400"):
        assert attr in session, session
    assert any(c.startswith("PA.wam.txn.") and "Max-Age=0" in c for c in cookies), "transaction consumed"
    assert backend_view(r)["headers"]["x-wam-groups"] == "staff"


def test_api_and_xhr_requests_without_session_get_401(gateway):
    for method, headers in [
        ("GET", {"accept": "application/json"}),
        ("POST", HTML),
        ("GET", {**HTML, "x-requested-with": "XMLHttpRequest"}),
    ]:
        r = requests.request(method, gateway.url + "/api/data", headers=headers, allow_redirects=False)
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/json"
        assert r.json()["error"] == "login_required"
        assert "www-authenticate" in r.headers


def test_spoofed_identity_headers_are_removed(gateway):
    s, _ = logged_in(gateway, "/", "bob")
    # Raw HTTP, to send several copies in different letter cases.
    cookie = f"PA.wam={session_cookie(s)}"
    host, port = "127.0.0.1", gateway.port
    req = (
        f"GET /spoof HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n"
        "X-WAM-User: admin\r\nx-wam-user: root\r\nX-Wam-Groups: admins\r\nx-wam-email: evil@example.com\r\n"
        "Connection: close\r\n\r\n"
    )
    with socket.create_connection((host, port)) as c:
        c.sendall(req.encode())
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["headers"]["x-wam-user"] == "bob"
    assert body["headers"]["x-wam-groups"] == "staff"
    assert body["headers"]["x-wam-email"] == "bob@example.com"
    # Without a session, nothing gets through at all (no forwarding of spoofed headers).
    r = requests.get(gateway.url + "/spoof", headers={"x-wam-user": "admin", "accept": "application/json"})
    assert r.status_code == 401


def test_a_claim_the_user_lacks_still_removes_the_clients_header(gateway):
    s, _ = logged_in(gateway, "/", "carol")  # carol has no groups
    seen = backend_view(s.get(gateway.url + "/g", headers={"x-wam-groups": "admins"}))
    assert seen["headers"].get("x-wam-groups", "") == ""


def test_tampered_cookie_means_login_again(gateway):
    s, _ = logged_in(gateway)
    value = session_cookie(s)
    # The default cookie is a compact JWE (dir, A256GCM): header..iv.ciphertext.tag.
    header, key, iv, ciphertext, tag = value.split(".")
    assert key == "" and json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["enc"] == "A256GCM"

    def flip(segment, at):
        return segment[:at] + ("A" if segment[at] != "A" else "B") + segment[at + 1 :]

    def b64(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    other_header = b64({"alg": "dir", "enc": "A128GCM", "kid": "demo-1"})
    unsigned_jwt = f"{b64({'alg': 'none'})}.{b64({'iss': 'envoy-wam', 'sub': 'admin', 'exp': 4102444800})}."
    forgeries = (
        f"{header}..{iv}.{flip(ciphertext, 3)}.{tag}",
        f"{header}..{iv}.{ciphertext}.{flip(tag, 2)}",
        f"{header}..{flip(iv, 1)}.{ciphertext}.{tag}",
        f"{other_header}..{iv}.{ciphertext}.{tag}",
        unsigned_jwt,
        "garbage",
    )
    for forged in forgeries:
        r = requests.get(gateway.url + "/x", headers={**HTML, "cookie": f"PA.wam={forged}"}, allow_redirects=False)
        assert r.status_code == 302 and "/auth?" in r.headers["location"], forged


def test_state_mismatch_is_refused_and_the_transaction_cannot_be_replayed(gateway):
    s = requests.Session()
    first = s.get(gateway.url + "/a", headers=HTML, allow_redirects=False)
    state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(first.headers["location"]).query))["state"]
    # A callback with another state: refused, whatever the code.
    r = s.get(gateway.url + f"/pa/oidc/cb?code=abc&state={'x' * 43}", headers=HTML)
    assert r.status_code == 403 and "reference" in r.text
    # Finish the real login; then replay its callback URL: the transaction is gone.
    login_page = s.get(first.headers["location"], headers=HTML)
    done = stack.submit_login_form(s, login_page, "alice")
    assert backend_view(done)["path"] == "/a"
    callback_url = next(h.url for h in done.history if "/pa/oidc/cb" in h.url)
    assert state in callback_url
    replay = requests.get(callback_url, headers=HTML, allow_redirects=False)
    assert replay.status_code == 403


def test_two_tabs_logging_in_at_once_both_land(gateway):
    s = requests.Session()
    tab1 = s.get(gateway.url + "/tab/one", headers=HTML, allow_redirects=True)
    tab2 = s.get(gateway.url + "/tab/two", headers=HTML, allow_redirects=True)
    r2 = stack.submit_login_form(s, tab2, "alice")
    assert backend_view(r2)["path"] == "/tab/two"
    # Tab one's OP interaction still completes (the OP now knows alice) and lands on its page.
    r1 = s.get(tab1.url, allow_redirects=True) if "/interaction/" in tab1.url else tab1
    if "/interaction/" in r1.url:
        r1 = stack.submit_login_form(s, r1, "alice")
    assert backend_view(r1)["path"] == "/tab/one"


def test_logout_clears_the_session_and_ends_it_at_the_op(gateway, op):
    s, _ = logged_in(gateway)
    r = s.get(gateway.url + "/pa/oidc/logout", allow_redirects=False)
    assert r.status_code == 302
    loc = urllib.parse.urlsplit(r.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == op.issuer + "/session/end"
    q = dict(urllib.parse.parse_qsl(loc.query))
    assert q["client_id"] == "pa_wam" and q["post_logout_redirect_uri"] == gateway.url + "/"
    assert session_cookie(s) is None
    # The OP's end-session page answers (it asks the user to confirm).
    assert s.get(r.headers["location"]).status_code == 200
    after = s.get(gateway.url + "/x", headers=HTML, allow_redirects=False)
    assert after.status_code == 302 and "/auth?" in after.headers["location"]


def test_es256_id_tokens_and_client_secret_post(start_gateway, op):
    for client_id, method in [("pa_wam_es", "client_secret_basic"), ("pa_wam_post", "client_secret_post")]:
        cfg = stack.wam_config(op.issuer, client_id=client_id, **{"client.auth_method": method})
        gw = start_gateway(cfg)
        s = requests.Session()
        r = stack.login(s, gw.url, "/es", "alice")
        assert backend_view(r)["headers"]["x-wam-user"] == "alice", client_id
        gw.stop()


def test_idle_timeout_and_sliding_activity(start_gateway, op):
    cfg = stack.wam_config(op.issuer, **{"session.idle_timeout_s": 3, "session.activity_refresh_s": 1})
    gw = start_gateway(cfg)
    s = requests.Session()
    stack.login(s, gw.url, "/", "alice")
    # Activity every second keeps the session past the idle timeout (the cookie is re-issued).
    first_cookie = session_cookie(s)
    for _ in range(5):
        time.sleep(1)
        assert backend_view(s.get(gw.url + "/busy", headers=HTML, allow_redirects=False))["headers"]["x-wam-user"] == "alice"
    assert session_cookie(s) != first_cookie, "re-issued as activity slid"
    # Then idle for longer than the timeout: login again.
    time.sleep(4.5)
    r = s.get(gw.url + "/idle", headers=HTML, allow_redirects=False)
    assert r.status_code == 302 and "/auth?" in r.headers["location"]


def test_absolute_lifetime_ends_even_a_busy_session(start_gateway, op):
    cfg = stack.wam_config(op.issuer, **{"session.max_lifetime_s": 3, "session.activity_refresh_s": 1})
    gw = start_gateway(cfg)
    s = requests.Session()
    stack.login(s, gw.url, "/", "alice")
    deadline = time.time() + 6
    while time.time() < deadline:
        r = s.get(gw.url + "/busy", headers=HTML, allow_redirects=False)
        if r.status_code == 302:
            assert "/auth?" in r.headers["location"]
            return
        time.sleep(0.5)
    pytest.fail("session outlived its absolute lifetime")


def test_op_down_answers_502(start_gateway, op):
    closed = stack.free_port()  # nothing listens there
    gw = start_gateway(op_port=closed)
    s = requests.Session()
    first = s.get(gw.url + "/down", headers=HTML, allow_redirects=False)
    # The browser still reaches the real OP (its URL is the issuer's), logs in, and comes back:
    # only the gateway's callouts go to the dead cluster.
    page = s.get(first.headers["location"], headers=HTML)
    r = stack.submit_login_form(s, page, "alice")
    assert r.status_code == 502
    assert "could not be reached" in r.text
    assert stack.CLIENT_SECRET not in r.text and "code=" not in r.text
    assert "PA.wam" not in s.cookies


def test_op_slow_answers_504(start_gateway, op):
    # A server that accepts connections and never answers.
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        sink.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(sink.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        cfg = stack.wam_config(op.issuer, **{"op.timeout_ms": 700})
        gw = start_gateway(cfg, op_port=sink.getsockname()[1])
        s = requests.Session()
        first = s.get(gw.url + "/slow", headers=HTML, allow_redirects=False)
        page = s.get(first.headers["location"], headers=HTML)
        started = time.time()
        r = stack.submit_login_form(s, page, "alice")
        assert r.status_code == 504
        assert "did not answer in time" in r.text
        assert time.time() - started < 5
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        sink.close()


def test_invalid_configuration_is_refused_with_the_field_named(start_gateway, op):
    cfg = stack.wam_config(op.issuer)
    cfg["session"]["signing_keys"][0]["secret"] = "c2hvcnQ="
    gw = start_gateway(cfg, wait=False)
    deadline = time.time() + 20
    while gw.alive() and time.time() < deadline:
        time.sleep(0.1)
    assert not gw.alive(), "Envoy must refuse to start with a configuration the filter rejects"
    log = gw.log()
    assert "invalid configuration at `session.signing_keys[0].secret`" in log
    assert cfg["client"]["client_secret"] not in log


def test_secrets_and_codes_stay_out_of_the_log(gateway, op):
    logged_in(gateway)
    log = gateway.log()
    assert stack.CLIENT_SECRET not in log
    assert "code=" not in log and "id_token" not in log
    assert "login: sub=alice" in log


def test_discovery_finds_the_op_endpoints(start_gateway, op):
    cfg = stack.wam_config(op.issuer)
    cfg["op"] = {"issuer": op.issuer, "cluster": "op", "discovery": True, "timeout_ms": 3000}
    gw = start_gateway(cfg)
    deadline = time.time() + 10
    while True:  # the first tick fetches the document; until then logins get 503
        r = requests.get(gw.url + "/d", headers=HTML, allow_redirects=False)
        if r.status_code != 503 or time.time() > deadline:
            break
        assert r.headers["retry-after"]
        time.sleep(0.2)
    assert r.status_code == 302 and r.headers["location"].startswith(op.issuer + "/auth?")
    s = requests.Session()
    assert backend_view(stack.login(s, gw.url, "/d", "alice"))["headers"]["x-wam-user"] == "alice"
    assert "discovered the endpoints" in gw.log()
    out = s.get(gw.url + "/pa/oidc/logout", allow_redirects=False)
    assert out.headers["location"].startswith(op.issuer + "/session/end?")


def raw_request(port, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(head)
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data


def test_non_utf8_and_hostile_headers_do_not_crash_the_vm(gateway):
    s, _ = logged_in(gateway, "/", "alice")
    good = f"PA.wam={session_cookie(s)}".encode()
    hostile = [
        b"Cookie: PA.wam=\xff\xfe\xfd\r\nAccept: text/html\r\n",
        b"Cookie: " + good + b"; x=\xff\r\nX-Wam-User: \xc3\x28\r\n",
        b"Authorization: Bearer \xff\r\nAccept: text/html\r\n",
        b"Cookie: " + b"PA.wam=" + b"A" * 6000 + b"\r\n",
    ]
    for i, extra in enumerate(hostile):
        head = b"GET /hostile/" + str(i).encode() + b"?q=\xff HTTP/1.1\r\nHost: x\r\n" + extra + b"Connection: close\r\n\r\n"
        status = raw_request(gateway.port, head).split(b" ", 2)[1]
        assert status in (b"200", b"302", b"400", b"401"), (i, status)
    # The worker's VM is alive and still serves sessions.
    r = s.get(gateway.url + "/after", allow_redirects=False)
    assert backend_view(r)["headers"]["x-wam-user"] == "alice"
    assert "panicked" not in gateway.log() and "Function: proxy_on" not in gateway.log()
