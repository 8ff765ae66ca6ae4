"""Several OPs (issue 11), end to end: real Envoy with the filter, two real oidc-provider
instances (the corporate OP, the session-wide `op` fixture, and a partner OP started here with
its own users, cookies and keys; see stack.start_partner_op) and the echo backend.

The gateway's configuration (stack.two_op_config): the default web session signs `/` in at the
corporate OP (cookie PA.wam, identity headers x-wam-*); the web session `partner` signs
`/partner/` in at the partner OP (cookie PA.partner, headers x-partner-*, callback
/pa/oidc/cb/partner, cluster partner_op); the API `/api/` accepts JWT access tokens of both OPs
(token providers corp-tokens and partner-tokens).

Gateways here:
- `gw` (slot 0): both OPs send it their back-channel logout notices; two workers.
- per test (slots 1 to 3): the same cookie name for both web sessions; the partner OP down.
"""

import html
import time
import urllib.parse

import pytest
import requests

import stack

HTML = {"accept": "text/html,application/xhtml+xml"}
XHR = {"accept": "application/json", "x-requested-with": "XMLHttpRequest"}


# --- the partner OP and the gateway -----------------------------------------------------------


@pytest.fixture(scope="module")
def partner(gateways, logdir):
    p = stack.start_partner_op(stack.free_port(), gateways.urls, logdir=logdir)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def gw(built, op, partner, backend, gateways, logdir):
    cfg = stack.two_op_config(op.issuer, partner.issuer)
    p = stack.start_gateway(gateways.ports[0], cfg, backend.port, op.port, logdir, name="envoy-two-ops", concurrency=2, clusters={"partner_op": partner.port})
    yield p
    p.stop()


# --- helpers ------------------------------------------------------------------------------------


def backend_view(response):
    """The echo backend's JSON for a request the gateway let through."""
    assert response.status_code == 200, (response.status_code, response.headers.get("location"), response.text[:300])
    seen = response.json()
    assert "headers" in seen and "method" in seen, "an answer of the backend"
    return seen


def sends_to_login(response, at):
    """A 302 to the authorization endpoint of the OP `at`."""
    return response.status_code == 302 and response.headers.get("location", "").startswith(at.issuer + "/auth?")


def get(gw, path, cookie, headers=HTML):
    """One request with exactly `cookie` (a Cookie header), on a new connection."""
    return requests.get(gw.url + path, headers={**headers, "cookie": cookie}, allow_redirects=False, timeout=10)


def cookie_of(s, name):
    return s.cookies.get(name)


def logged_in(gw, path, user, s=None):
    """A browser (`s`, or a new one) that logged in as `user` at the application of `path`."""
    s = s or requests.Session()
    return s, backend_view(stack.login(s, gw.url, path, user))


def until_callback(s, gw, path, user):
    """A login at `path` up to the OP's redirect back to the gateway, not followed: the
    callback URL (code, state, iss), with the transaction cookie in the browser `s`."""
    page = s.get(gw.url + path, headers=HTML, allow_redirects=True, timeout=10)
    assert "/interaction/" in page.url, page.url
    action = urllib.parse.urljoin(page.url, html.unescape(stack.FORM_ACTION.search(page.text).group(1)))
    data = {n: html.unescape(v) for n, v in stack.HIDDEN.findall(page.text)}
    data.update({"login": user, "password": "any-password"})
    r = s.post(action, data=data, allow_redirects=False, timeout=10)
    for _ in range(10):
        location = urllib.parse.urljoin(r.url, r.headers["location"])
        if location.startswith(gw.url):
            return location
        r = s.get(location, allow_redirects=False, timeout=10)
    raise AssertionError("the OP never sent the browser back")


def all_cookies(s):
    """Every cookie of the browser, whatever its path, as one Cookie header."""
    return "; ".join(f"{c.name}={c.value}" for c in s.cookies)


def txn_cookies(s):
    return {c.name: c.value for c in s.cookies if ".txn." in c.name}


def wait_until_refused(gw, at, cookie, path, within=3.0):
    """Polls `path` with `cookie` until 10 answers in a row send to the login at `at` (new
    connections: both workers); until then each must reach the backend."""
    started = time.time()
    in_a_row = 0
    while in_a_row < 10:
        r = get(gw, path, cookie)
        if sends_to_login(r, at):
            in_a_row += 1
            continue
        backend_view(r)
        in_a_row = 0
        assert time.time() - started < within, f"the session still works {within}s later"
        time.sleep(0.05)


def discovered(gw, path, within=10.0):
    """Waits until the application at `path` no longer answers 503 (its OP's discovery
    document fetched after start-up)."""
    deadline = time.time() + within
    while requests.get(gw.url + path, headers=HTML, allow_redirects=False, timeout=10).status_code == 503:
        assert time.time() < deadline, f"{path}: still 503 after {within}s"
        time.sleep(0.1)


def bearer(token):
    return {"authorization": f"Bearer {token}", "accept": "application/json"}


# --- each application at its own OP ----------------------------------------------------------


def test_each_application_signs_in_at_its_own_op(gw, op, partner):
    r = requests.get(gw.url + "/partner/page", headers=HTML, allow_redirects=False)
    assert sends_to_login(r, partner), r.headers.get("location")
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))
    assert q["client_id"] == "pa_wam" and q["redirect_uri"] == gw.url + "/pa/oidc/cb/partner"
    assert r.headers["set-cookie"].startswith("PA.partner.txn.") and "Path=/pa/oidc/cb/partner" in r.headers["set-cookie"]

    r = requests.get(gw.url + "/page", headers=HTML, allow_redirects=False)
    assert sends_to_login(r, op), r.headers.get("location")
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))
    assert q["redirect_uri"] == gw.url + "/pa/oidc/cb"

    s = requests.Session()
    done = stack.login(s, gw.url, "/partner/page?x=1", "carol")
    assert any(h.url.startswith(gw.url + "/pa/oidc/cb/partner?") for h in done.history)
    seen = backend_view(done)
    assert seen["path"] == "/partner/page?x=1"
    h = seen["headers"]
    assert (h["x-partner-user"], h["x-partner-groups"], h["x-partner-email"]) == ("carol", "partners", "carol@example.com")
    assert not any(k.startswith("x-wam-") for k in h), h
    assert "PA.partner" not in h.get("cookie", "")

    s = requests.Session()
    seen = backend_view(stack.login(s, gw.url, "/home", "alice"))
    h = seen["headers"]
    assert (h["x-wam-user"], h["x-wam-groups"]) == ("alice", "staff,admins")
    assert not any(k.startswith("x-partner-") for k in h), h


def test_a_login_at_one_op_does_not_open_the_others_applications(gw, op, partner):
    s, _ = logged_in(gw, "/partner/", "dave")
    assert cookie_of(s, "PA.partner") and cookie_of(s, "PA.wam") is None
    assert sends_to_login(s.get(gw.url + "/home", headers=HTML, allow_redirects=False), op)
    assert s.get(gw.url + "/api/x", headers=XHR, allow_redirects=False).status_code == 401

    s2, _ = logged_in(gw, "/home", "alice")
    assert sends_to_login(s2.get(gw.url + "/partner/x", headers=HTML, allow_redirects=False), partner)

    # One browser, both sessions: each application sees its own user.
    logged_in(gw, "/home", "alice", s)
    assert backend_view(s.get(gw.url + "/partner/x", headers=HTML))["headers"]["x-partner-user"] == "dave"
    assert backend_view(s.get(gw.url + "/home", headers=HTML))["headers"]["x-wam-user"] == "alice"
    # Identity headers a client sends for the other web session are removed, never passed on.
    seen = backend_view(s.get(gw.url + "/partner/x", headers={**HTML, "x-wam-user": "admin"}))
    assert "x-wam-user" not in seen["headers"]
    seen = backend_view(s.get(gw.url + "/home", headers={**HTML, "x-partner-user": "admin"}))
    assert "x-partner-user" not in seen["headers"]


# --- a cookie or code of one is refused by the other -----------------------------------------


def test_a_callback_of_one_op_is_refused_at_the_others(gw, op, partner):
    s = requests.Session()
    callback = until_callback(s, gw, "/partner/cb-test", "carol")
    assert callback.startswith(gw.url + "/pa/oidc/cb/partner?")
    query = urllib.parse.urlsplit(callback).query
    partner_txn = txn_cookies(s)
    assert list(partner_txn) and all(n.startswith("PA.partner.txn.") for n in partner_txn)
    # The partner's code and state at the corporate callback: with the partner's transaction
    # cookie, and with it renamed as a corporate one. Refused before any code is redeemed.
    renamed = "; ".join(f"{n.replace('PA.partner.txn.', 'PA.wam.txn.')}={v}" for n, v in partner_txn.items())
    before = stack.op_stats(op.port).get("/token", 0), stack.op_stats(partner.port).get("/token", 0)
    for cookie in (all_cookies(s), renamed):
        r = get(gw, "/pa/oidc/cb?" + query, cookie)
        assert r.status_code == 403, (r.status_code, r.text[:300])
        assert not any(c["name"] == "PA.wam" for c in stack.set_cookies(r))
    assert (stack.op_stats(op.port).get("/token", 0), stack.op_stats(partner.port).get("/token", 0)) == before
    # The refused attempts consumed nothing: the real callback still completes.
    seen = backend_view(s.get(callback, headers=HTML, timeout=10))
    assert seen["path"] == "/partner/cb-test" and seen["headers"]["x-partner-user"] == "carol"

    # The reverse: a corporate code at the partner's callback, with the partner's transaction
    # (state matching), naming the corporate issuer, then without `iss`: never a session.
    s = requests.Session()
    partner_first = s.get(gw.url + "/partner/reverse", headers=HTML, allow_redirects=False)
    partner_state = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(partner_first.headers["location"]).query))["state"]
    corp = requests.Session()
    corp_callback = until_callback(corp, gw, "/reverse", "alice")
    corp_q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(corp_callback).query))
    assert corp_q["iss"] == op.issuer
    txn = "; ".join(f"{n}={v}" for n, v in stack.apply_set_cookies({}, partner_first).items())
    # RFC 9207's iss names the corporate OP: refused at once (403), nothing redeemed.
    tokens = stack.op_stats(partner.port).get("/token", 0)
    r = get(gw, "/pa/oidc/cb/partner?" + urllib.parse.urlencode({**corp_q, "state": partner_state}), txn)
    assert r.status_code == 403 and "another identity provider" in r.text, (r.status_code, r.text[:300])
    assert stack.op_stats(partner.port).get("/token", 0) == tokens
    # Without it: the code goes to the partner OP, which does not know it (invalid_grant).
    r = get(gw, "/pa/oidc/cb/partner?" + urllib.parse.urlencode({"code": corp_q["code"], "state": partner_state}), txn)
    assert r.status_code == 502, (r.status_code, r.text[:300])
    assert stack.op_stats(partner.port).get("/token", 0) == tokens + 1
    assert not any(c["name"] == "PA.partner" and not stack.is_removal(c) for c in stack.set_cookies(r))


def test_a_session_cookie_of_one_web_session_is_refused_by_the_other(gw, op, partner):
    s, _ = logged_in(gw, "/partner/", "carol")
    partner_cookie = cookie_of(s, "PA.partner")
    c, _ = logged_in(gw, "/home", "alice")
    corp_cookie = cookie_of(c, "PA.wam")
    # Each under the other's name.
    assert sends_to_login(get(gw, "/home", f"PA.wam={partner_cookie}"), op)
    assert sends_to_login(get(gw, "/partner/x", f"PA.partner={corp_cookie}"), partner)
    assert get(gw, "/home", f"PA.wam={partner_cookie}", XHR).status_code == 401
    # Each under its own name still works (the refusals above ended nothing).
    assert backend_view(get(gw, "/partner/x", f"PA.partner={partner_cookie}"))["headers"]["x-partner-user"] == "carol"
    assert backend_view(get(gw, "/home", f"PA.wam={corp_cookie}"))["headers"]["x-wam-user"] == "alice"


def test_the_same_cookie_name_for_both_web_sessions_still_keeps_them_apart(start_gateway, op, partner):
    cfg = stack.two_op_config(op.issuer, partner.issuer, partner={"session.cookie_name": "PA.wam"})
    g = start_gateway(cfg, slot=1, concurrency=2, clusters={"partner_op": partner.port})
    s, seen = logged_in(g, "/partner/", "dave")
    assert seen["headers"]["x-partner-user"] == "dave"
    partner_cookie = cookie_of(s, "PA.wam")
    assert partner_cookie and cookie_of(s, "PA.partner") is None
    # The partner's PA.wam is no corporate session.
    assert sends_to_login(get(g, "/home", f"PA.wam={partner_cookie}"), op)
    # A corporate login in the same browser takes the name over; it opens no partner page.
    logged_in(g, "/home", "alice", s)
    corp_cookie = cookie_of(s, "PA.wam")
    assert corp_cookie != partner_cookie
    assert sends_to_login(get(g, "/partner/x", f"PA.wam={corp_cookie}"), partner)
    assert backend_view(get(g, "/partner/x", f"PA.wam={partner_cookie}"))["headers"]["x-partner-user"] == "dave"


# --- one OP down ------------------------------------------------------------------------------


def test_an_unreachable_partner_op_holds_up_only_the_partner_application(start_gateway, op, partner):
    # The partner OP by discovery, its cluster a port where nothing listens.
    dead = stack.free_port()
    cfg = stack.two_op_config(op.issuer, partner.issuer, partner_discovery=True)
    g = start_gateway(cfg, slot=2, concurrency=2, clusters={"partner_op": dead})
    r = requests.get(g.url + "/partner/x", headers=HTML, allow_redirects=False, timeout=10)
    assert (r.status_code, r.headers.get("retry-after")) == (503, "5"), (r.status_code, r.text[:300])
    # An XHR needs no OP to be told it has no session.
    r = requests.get(g.url + "/partner/x", headers=XHR, allow_redirects=False, timeout=10)
    assert r.status_code == 401 and r.json()["error"] == "login_required"
    # A partner cookie (made by another gateway with the same keys would do; here any value):
    # no session, so no pass-through either.
    r = get(g, "/partner/x", "PA.partner=forged")
    assert r.status_code == 503, (r.status_code, r.text[:300])
    # The corporate application: a whole login and its pages.
    s, seen = logged_in(g, "/home", "alice")
    assert seen["headers"]["x-wam-user"] == "alice"
    assert backend_view(s.get(g.url + "/other", headers=HTML))["headers"]["x-wam-user"] == "alice"
    # The API: corporate tokens pass; partner tokens cannot be checked (their keys are out of
    # reach) and are never passed through.
    corp_token = stack.client_credentials_token(op, stack.API_RESOURCE)
    assert backend_view(requests.get(g.url + "/api/orders", headers=bearer(corp_token), timeout=10))["headers"]["x-wam-user"] == "api_client"
    partner_token = stack.client_credentials_token(partner, stack.API_RESOURCE)
    r = requests.get(g.url + "/api/orders", headers=bearer(partner_token), timeout=10)
    assert r.status_code in (502, 503, 504), (r.status_code, r.text[:300])
    # Still the partner application alone, a while later (discovery retried, still down).
    time.sleep(1)
    assert requests.get(g.url + "/partner/x", headers=HTML, allow_redirects=False, timeout=10).status_code == 503
    assert backend_view(s.get(g.url + "/again", headers=HTML))["headers"]["x-wam-user"] == "alice"


def test_the_partner_op_going_down_during_a_login_fails_only_that_login(start_gateway, op, partner):
    relay = stack.Relay(partner.port)
    try:
        cfg = stack.two_op_config(op.issuer, partner.issuer, partner_discovery=True)
        g = start_gateway(cfg, slot=3, concurrency=1, clusters={"partner_op": relay.port})
        discovered(g, "/partner/")
        s, seen = logged_in(g, "/partner/", "carol")
        assert seen["headers"]["x-partner-user"] == "carol"
        relay.down()
        # The browser still reaches the partner OP and logs in there; the gateway cannot
        # redeem the code: an error page, no session, nothing forwarded.
        other = requests.Session()
        callback = until_callback(other, g, "/partner/late", "dave")
        r = other.get(callback, headers=HTML, allow_redirects=False, timeout=15)
        assert r.status_code in (502, 503, 504), (r.status_code, r.text[:300])
        assert cookie_of(other, "PA.partner") is None
        assert relay.refused > 0
        # The corporate application logs in and serves meanwhile.
        _, seen = logged_in(g, "/home", "bob")
        assert seen["headers"]["x-wam-user"] == "bob"
        # The partner session made before keeps working (a stateless cookie, no validation).
        assert backend_view(s.get(g.url + "/partner/y", headers=HTML))["headers"]["x-partner-user"] == "carol"
    finally:
        relay.close()


# --- token providers --------------------------------------------------------------------------


def test_the_api_accepts_tokens_of_both_issuers_each_checked_with_its_own_keys(gw, op, partner):
    for at in (op, partner):
        token = stack.client_credentials_token(at, stack.API_RESOURCE, scope="orders:read")
        seen = backend_view(requests.get(gw.url + "/api/orders/1", headers=bearer(token), timeout=10))
        assert seen["headers"]["x-wam-user"] == "api_client"
    now = int(time.time())
    claims = {"iss": partner.issuer, "sub": "mallory", "aud": stack.API_RESOURCE, "iat": now, "exp": now + 300, "client_id": "api_client", "scope": "orders:read"}
    header = {"typ": "at+jwt"}
    # Signed by the partner OP (control): accepted.
    good = stack.op_sign(partner, claims, header)
    assert backend_view(requests.get(gw.url + "/api/orders/2", headers=bearer(good), timeout=10))["headers"]["x-wam-user"] == "mallory"
    # The partner's issuer, signed with the corporate OP's key (the same kid, op-rsa-1):
    # checked with the partner's keys, refused.
    forged = stack.op_sign(op, claims, header)
    r = requests.get(gw.url + "/api/orders/3", headers=bearer(forged), timeout=10)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], (r.status_code, r.headers)
    # And the other way round.
    forged = stack.op_sign(partner, {**claims, "iss": op.issuer}, header)
    r = requests.get(gw.url + "/api/orders/4", headers=bearer(forged), timeout=10)
    assert r.status_code == 401, (r.status_code, r.text[:300])
    # An issuer neither provider has.
    stranger = stack.op_sign(op, {**claims, "iss": "http://127.0.0.1:1"}, header)
    r = requests.get(gw.url + "/api/orders/5", headers=bearer(stranger), timeout=10)
    assert r.status_code == 401, (r.status_code, r.text[:300])


# --- logout -----------------------------------------------------------------------------------


def test_logout_of_the_partner_web_session_ends_only_it_at_the_partner_op(gw, op, partner):
    s, _ = logged_in(gw, "/partner/", "carol")
    logged_in(gw, "/home", "alice", s)
    partner_cookie, corp_cookie = cookie_of(s, "PA.partner"), cookie_of(s, "PA.wam")
    r = s.get(gw.url + "/pa/oidc/logout/partner", allow_redirects=False, timeout=10)
    assert r.status_code == 302, (r.status_code, r.text[:300])
    loc = urllib.parse.urlsplit(r.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == partner.issuer + "/session/end"
    q = dict(urllib.parse.parse_qsl(loc.query))
    assert q["client_id"] == "pa_wam" and q["post_logout_redirect_uri"] == gw.url + "/"
    changed = {c["name"]: c for c in stack.set_cookies(r)}
    assert stack.is_removal(changed["PA.partner"]) and "PA.wam" not in changed, list(changed)
    # The partner OP's end-session page answers (it asks to confirm).
    assert s.get(r.headers["location"], timeout=10).status_code == 200
    # A copy of the partner cookie is refused; the corporate session goes on.
    wait_until_refused(gw, partner, f"PA.partner={partner_cookie}", "/partner/x", within=1.5)
    assert backend_view(get(gw, "/home", f"PA.wam={corp_cookie}"))["headers"]["x-wam-user"] == "alice"
    assert sends_to_login(s.get(gw.url + "/partner/x", headers=HTML, allow_redirects=False), partner)


def test_logout_at_each_op_ends_only_its_own_web_session_by_back_channel(gw, op, partner):
    s, _ = logged_in(gw, "/partner/", "dave")
    logged_in(gw, "/home", "bob", s)
    partner_cookie, corp_cookie = f"PA.partner={cookie_of(s, 'PA.partner')}", f"PA.wam={cookie_of(s, 'PA.wam')}"

    before = stack.op_stats(partner.port)
    stack.op_logout(s, partner.issuer)
    after = stack.op_stats(partner.port)
    key = "backchannel:success:pa_wam"
    assert after.get(key, 0) == before.get(key, 0) + 1, after
    wait_until_refused(gw, partner, partner_cookie, "/partner/x", within=1.5)
    for _ in range(6):  # both workers
        assert backend_view(get(gw, "/home", corp_cookie))["headers"]["x-wam-user"] == "bob"

    # Now the corporate OP: its notice ends the corporate session, not a new partner one.
    logged_in(gw, "/partner/", "dave", s)
    partner_cookie = f"PA.partner={cookie_of(s, 'PA.partner')}"
    before = stack.op_stats(op.port)
    stack.op_logout(s, op.issuer)
    assert stack.op_stats(op.port).get(key, 0) == before.get(key, 0) + 1
    wait_until_refused(gw, op, corp_cookie, "/home", within=1.5)
    for _ in range(6):
        assert backend_view(get(gw, "/partner/x", partner_cookie))["headers"]["x-partner-user"] == "dave"


def test_front_channel_logout_of_the_partner_op_ends_only_the_partner_session(gw, op, partner):
    s, _ = logged_in(gw, "/partner/", "carol")
    logged_in(gw, "/home", "alice", s)
    partner_cookie, corp_cookie = f"PA.partner={cookie_of(s, 'PA.partner')}", f"PA.wam={cookie_of(s, 'PA.wam')}"
    sid = stack.op_session(s, partner.issuer)["clients"]["pa_wam"]["sid"]
    # The partner's iss and sid at the default web session's endpoint: not its OP (400).
    r = requests.get(gw.url + "/pa/oidc/frontchannel", params={"iss": partner.issuer, "sid": sid}, timeout=10)
    assert r.status_code == 400, r.status_code
    # The corporate issuer at the partner's endpoint: refused likewise.
    r = requests.get(gw.url + "/pa/oidc/frontchannel/partner", params={"iss": op.issuer, "sid": sid}, timeout=10)
    assert r.status_code == 400, r.status_code
    backend_view(get(gw, "/partner/still", partner_cookie))
    # oidc-provider has no front-channel logout: the test calls it as the OP's iframe would.
    r = requests.get(gw.url + "/pa/oidc/frontchannel/partner", params={"iss": partner.issuer, "sid": sid}, headers=HTML, timeout=10)
    assert r.status_code == 200
    wait_until_refused(gw, partner, partner_cookie, "/partner/x", within=1.5)
    for _ in range(6):
        assert backend_view(get(gw, "/home", corp_cookie))["headers"]["x-wam-user"] == "alice"
