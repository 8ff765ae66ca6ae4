"""Sessions that end when they should (issue 10), end to end: real Envoy with the filter, the
real oidc-provider (refresh tokens rotated on every use, back-channel logout, revocation,
userinfo; see integration/op/op.mjs) and the echo backend.

Gateways here:
- `bc` (slot 0): the gateway the OP sends its back-channel logout notices to (oidc-provider
  registers one back-channel URI per client: the first gateway's), two workers, validation
  every 300 s (so anything that ends a session within a test is not validation).
- `validating` (slot 1): no back-channel notice reaches it; validates every second, two workers.
- per test (slots 2, 3): OP down behind a relay; a dedicated OP with short access tokens.
"""

import html.parser
import json
import os
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

import jwtutil
import stack

HTML = {"accept": "text/html,application/xhtml+xml"}
XHR = {"accept": "application/json", "x-requested-with": "XMLHttpRequest"}
BCL_EVENT = "http://schemas.openid.net/event/backchannel-logout"


# --- gateways ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bc(built, op, backend, gateways, logdir):
    cfg = stack.live_config(op.issuer, **{"session.validate_interval_s": 300})
    p = stack.start_gateway(gateways.ports[0], cfg, backend.port, op.port, logdir, name="envoy-live-bc", concurrency=2)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def validating(built, op, backend, gateways, logdir):
    cfg = stack.live_config(op.issuer, **{"session.validate_interval_s": 1})
    p = stack.start_gateway(gateways.ports[1], cfg, backend.port, op.port, logdir, name="envoy-live-validating", concurrency=2)
    yield p
    p.stop()


# --- helpers ------------------------------------------------------------------------------------


def user_name(prefix):
    """A user of its own per test: the OP's hooks (disable, groups) then touch no one else."""
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def backend_view(response, user=None):
    """The echo backend's JSON for a request the gateway let through (as `user`)."""
    assert response.status_code == 200, (response.status_code, response.headers.get("location"), response.text[:300])
    seen = response.json()
    assert "headers" in seen and "method" in seen, "an answer of the backend"
    if user is not None:
        assert seen["headers"].get("x-wam-user") == user, seen["headers"]
    return seen


def sends_to_login(response, op):
    return response.status_code == 302 and response.headers.get("location", "").startswith(op.issuer + "/auth?")


def copied(session):
    """The browser's cookies as one Cookie header: what a thief replays."""
    return stack.cookie_header(session.cookies.get_dict())


def get(gw, path, cookie, headers=HTML):
    """One request on a new connection (so requests spread over the workers)."""
    return requests.get(gw.url + path, headers={**headers, "cookie": cookie}, allow_redirects=False, timeout=10)


def wait_until_refused(gw, op, cookie, within, path="/ended"):
    """Polls with `cookie` until 10 requests in a row are sent to login (each on a new
    connection, so on both workers); until then each one must still reach the backend.
    Returns the seconds it took; fails after `within` seconds."""
    started = time.time()
    in_a_row = 0
    while in_a_row < 10:
        r = get(gw, path, cookie)
        if sends_to_login(r, op):
            in_a_row += 1
            continue
        backend_view(r)
        in_a_row = 0
        assert time.time() - started < within, f"the session still works {within}s later"
        time.sleep(0.05)
    return time.time() - started


def stats(op):
    return stack.op_stats(op.port)


def until(check, within, what):
    """Calls `check` until it answers something other than None or False (returned); fails
    after `within` s. (Not truthiness: a 401 Response is falsy.)"""
    deadline = time.time() + within
    while True:
        got = check()
        if got is not None and got is not False:
            return got
        assert time.time() < deadline, f"not within {within}s: {what}"
        time.sleep(0.1)


# Sessions here validate every second. Times are whole seconds (Envoy's clock as the filter
# sees it), so "the interval has passed" may take up to 2 s of wall time: tests wait for the
# validation to happen (polling) rather than sleep a fixed second.
DUE = 2.05


def wait_for_stat(op, key, at_least, within=3.0):
    deadline = time.time() + within
    while stats(op).get(key, 0) < at_least:
        assert time.time() < deadline, f"{key}: {stats(op).get(key, 0)} < {at_least}"
        time.sleep(0.05)


# --- logout at the OP -----------------------------------------------------------------------


def test_logout_at_the_op_ends_the_session_at_once_by_back_channel(bc, op):
    user = user_name("al")
    s = requests.Session()
    backend_view(stack.login(s, bc.url, "/bc", user), user)
    cookie = copied(s)
    before = stats(op)
    stack.op_logout(s, op.issuer)
    # The OP sent its notice before it answered, and the gateway took it (200).
    after = stats(op)
    assert after.get("backchannel:success:pa_wam", 0) == before.get("backchannel:success:pa_wam", 0) + 1
    assert after.get("backchannel:error:pa_wam", 0) == before.get("backchannel:error:pa_wam", 0)
    # Every worker refuses the session within a second (shared data, picked up by the tick).
    assert wait_until_refused(bc, op, cookie, within=1.5) < 1.5
    r = get(bc, "/api/x", cookie, XHR)
    assert r.status_code == 401 and r.json()["error"] == "login_required"


def test_logout_at_the_op_reaches_a_gateway_without_back_channel_by_validation(validating, op):
    user = user_name("bo")
    s = requests.Session()
    backend_view(stack.login(s, validating.url, "/v", user), user)
    cookie = copied(s)
    stack.op_logout(s, op.issuer)  # its notice goes to the `bc` gateway, not this one
    # The OP revoked the grant: the next validation (interval 1 s) ends the session.
    assert wait_until_refused(validating, op, cookie, within=DUE + 1.0) < DUE + 1.0
    r = get(validating, "/api/x", cookie, XHR)
    assert r.status_code == 401


# --- logout at the gateway ------------------------------------------------------------------


def test_gateway_logout_refuses_a_copied_cookie_and_revokes_the_refresh_token(bc, op):
    user = user_name("cy")
    s = requests.Session()
    backend_view(stack.login(s, bc.url, "/c", user), user)
    cookie = copied(s)
    assert stack.op_session(s, op.issuer)["clients"]["pa_wam"]["grantActive"] is True
    revoked = stats(op).get("revoked:RefreshToken:pa_wam", 0)
    out = s.get(bc.url + "/pa/oidc/logout", allow_redirects=False)
    assert out.status_code == 302
    loc = urllib.parse.urlsplit(out.headers["location"])
    assert f"{loc.scheme}://{loc.netloc}{loc.path}" == op.issuer + "/session/end"
    q = dict(urllib.parse.parse_qsl(loc.query))
    # RP-Initiated Logout 1.0: id_token_hint, or the client_id.
    if "id_token_hint" in q:
        hint = jwtutil.claims_of(q["id_token_hint"])
        assert jwtutil.verify(q["id_token_hint"], stack.op_jwks(op)) and hint["aud"] == "pa_wam" and hint["sub"] == user
    else:
        assert q["client_id"] == "pa_wam"
    # The browser does not go on to the OP: what follows is the gateway's doing alone. The
    # logout's answer came back only once both workers knew: the copy is refused at once, on
    # new connections spread over the two workers.
    for _ in range(20):
        assert sends_to_login(get(bc, "/ended", cookie), op)
    # RFC 7009: the refresh token was revoked at the OP, and with it the grant.
    wait_for_stat(op, "revoked:RefreshToken:pa_wam", revoked + 1)
    assert stats(op)["revoked:RefreshToken:pa_wam"] == revoked + 1
    assert stack.op_session(s, op.issuer)["clients"]["pa_wam"]["grantActive"] is False
    assert stack.CLIENT_SECRET not in bc.log()


# --- validation -------------------------------------------------------------------------------


def test_a_user_disabled_at_the_op_is_logged_out_at_the_next_validation(validating, op):
    user = user_name("di")
    s = requests.Session()
    backend_view(stack.login(s, validating.url, "/d", user), user)
    # Validation works while the user is enabled: the refresh grant succeeds, requests pass.
    refreshed = stats(op).get("grant:refresh_token", 0)

    def validated():
        backend_view(s.get(validating.url + "/d/still", headers=HTML, allow_redirects=False), user)
        return stats(op).get("grant:refresh_token", 0) > refreshed

    until(validated, DUE + 2.5, "a validation by refresh grant")
    cookie = copied(s)
    stack.op_disable_user(op, user)
    try:
        # An API or XHR request gets 401 at the next validation (until then: the backend).
        def refused():
            r = get(validating, "/api/d", cookie, XHR)
            if r.status_code == 401:
                return r
            backend_view(r, user)
            return None

        api = until(refused, DUE + 2.5, "401 for the disabled user's XHR")
        assert api.headers["content-type"] == "application/json" and api.json()["error"] == "login_required"
        browser = s.get(validating.url + "/d/page", headers=HTML, allow_redirects=False)
        assert sends_to_login(browser, op), (browser.status_code, browser.headers)
    finally:
        stack.op_enable_user(op, user)


def test_fifty_parallel_requests_on_two_workers_during_rotation_stay_logged_in(validating, op):
    user = user_name("pa")
    s = requests.Session()
    backend_view(stack.login(s, validating.url, "/p", user), user)
    jar = {k: v for k, v in s.cookies.get_dict().items() if k == "PA.wam" or k.startswith("PA.wam.")}
    refreshed = stats(op).get("grant:refresh_token", 0)
    for burst in range(2):
        time.sleep(DUE)  # the session is due for validation: its refresh token rotates now
        cookie = stack.cookie_header(jar)

        def one(i):
            r = get(validating, f"/burst/{burst}/{i}", cookie)
            return time.monotonic(), r

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(one, range(50)))
        statuses = sorted(r.status_code for _, r in answers)
        assert statuses == [200] * 50, statuses
        for _, r in answers:
            backend_view(r, user)
        updates = [c for _, r in answers for c in stack.set_cookies(r) if c["name"].startswith("PA.wam")]
        assert updates, "the rotated refresh token is written back in a cookie update"
        # The browser keeps what it was sent, in the order the answers arrived.
        for _, r in sorted(answers, key=lambda a: a[0]):
            stack.apply_set_cookies(jar, r)
        assert stack.session_chunks(jar), jar.keys()
    assert stats(op).get("grant:refresh_token", 0) >= refreshed + 2, "a rotation in each burst"
    backend_view(get(validating, "/after", stack.cookie_header(jar)), user)
    # No refresh token was presented twice (oidc-provider would have revoked the grant).
    assert stack.op_session(s, op.issuer)["clients"]["pa_wam"]["grantActive"] is True
    time.sleep(DUE)
    backend_view(get(validating, "/after/validation", stack.cookie_header(jar)), user)


def test_op_down_during_validation_grace_then_fail_closed(start_gateway, op):
    relay = stack.Relay(op.port)
    try:
        grace = 3
        cfg = stack.live_config(op.issuer, **{"session.validate_interval_s": 1, "session.validation_grace_s": grace})
        gw = start_gateway(cfg, slot=2, op_port=relay.port)
        user = user_name("gr")
        s = requests.Session()
        backend_view(stack.login(s, gw.url, "/g", user), user)
        logged_in = time.time()
        relay.down()
        # Due for validation, the OP unreachable: within the grace the session still works.
        def tried():
            backend_view(s.get(gw.url + "/g/grace", headers=HTML, allow_redirects=False), user)
            return relay.refused >= 1

        until(tried, DUE + 0.5, "a validation attempt while the OP is down")
        assert time.time() - logged_in < grace
        backend_view(s.get(gw.url + "/g/grace/again", headers=HTML, allow_redirects=False), user)
        # Whether the grace counts from the last validation or from the first failed one, it is
        # over by interval + grace + margin: then fail closed, never the backend.
        time.sleep(max(0.0, logged_in + DUE + grace + 1.0 - time.time()))
        for headers in (HTML, XHR, HTML):
            r = s.get(gw.url + "/g/closed", headers=headers, allow_redirects=False)
            assert r.status_code in (302, 401, 502, 503, 504), (r.status_code, r.text[:300])
            if r.status_code == 302:
                assert sends_to_login(r, op), r.headers
            assert "x-wam-user" not in r.text
    finally:
        relay.close()


# --- the cookie ---------------------------------------------------------------------------------


def test_a_chunked_session_round_trips_with_no_chunk_upstream_and_shrinks_at_validation(validating, op):
    user = user_name("ch")
    # Random group names: too large for one cookie, compressed or not.
    groups = [f"grp-{jwtutil.b64url(os.urandom(18))}" for _ in range(250)]
    stack.op_set_groups(op, user, groups)
    s = requests.Session()
    r = stack.login(s, validating.url, "/chunked", user)
    backend_view(r, user)
    callback = next(h for h in r.history if "/pa/oidc/cb" in h.url)
    sent = {c["name"]: c for c in stack.set_cookies(callback) if not stack.is_removal(c)}
    names = sorted(n for n in sent if stack.CHUNK.match(n) and n.startswith("PA.wam."))
    assert len(names) >= 2 and "PA.wam" not in sent, sorted(sent)
    assert names == [f"PA.wam.{i}" for i in range(len(names))]
    for n in names:
        assert len(f"{n}={sent[n]['value']}") <= 4096, (n, len(sent[n]["value"]))
        assert {"httponly", "path"} <= set(sent[n]["attrs"]), sent[n]["raw"]
    # Encrypted: neither the user's email nor a group name is readable in it.
    jar = stack.apply_set_cookies({}, r)
    joined = "".join(stack.session_chunks(jar))
    readable = [joined]
    for seg in joined.split("."):
        try:
            readable.append(jwtutil.b64url_decode(seg).decode("latin-1"))
        except ValueError:
            pass
    for text in readable:
        assert f"{user}@example.com" not in text and groups[0] not in text
    # The next request works, and the backend sees no chunk (other cookies pass).
    seen = backend_view(get(validating, "/next", stack.cookie_header(jar) + "; theme=dark"), user)
    assert seen["headers"]["x-wam-groups"] == ",".join(groups)
    assert "PA.wam" not in seen["headers"].get("cookie", "") and "theme=dark" in seen["headers"]["cookie"]
    # The groups shrink at the OP; the next validation brings them in, the session fits in one
    # cookie again and the stale chunks are cleared.
    stack.op_set_groups(op, user, ["small"])

    def shrunk():
        r = get(validating, "/shrunk", stack.cookie_header(jar))
        groups_seen = backend_view(r, user)["headers"]["x-wam-groups"]
        stack.apply_set_cookies(jar, r)
        return groups_seen == "small"

    until(shrunk, DUE + 1.0, "the new groups after validation")
    assert not [n for n in jar if n.startswith("PA.wam.") and stack.CHUNK.match(n)], sorted(jar)
    assert stack.session_chunks(jar) and "PA.wam" in jar
    seen = backend_view(get(validating, "/after", stack.cookie_header(jar)), user)
    assert seen["headers"]["x-wam-groups"] == "small" and "PA.wam" not in seen["headers"].get("cookie", "")


# --- POST preservation ------------------------------------------------------------------------


class Forms(html.parser.HTMLParser):
    """The forms of a page as a browser sees them: method, action, enctype, and the
    successful controls (name, value) in document order."""

    def __init__(self, text):
        super().__init__()
        self.forms = []
        self._textarea = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"method": (a.get("method") or "get").lower(), "action": a.get("action") or "", "enctype": a.get("enctype"), "fields": []})
        elif tag == "input" and self.forms and a.get("name") is not None and a.get("type", "text").lower() not in ("submit", "button", "image", "reset"):
            self.forms[-1]["fields"].append((a["name"], a.get("value") or ""))
        elif tag == "textarea" and self.forms and a.get("name") is not None:
            self._textarea = [a["name"], ""]

    def handle_data(self, data):
        if self._textarea is not None:
            self._textarea[1] += data

    def handle_endtag(self, tag):
        if tag == "textarea" and self._textarea is not None:
            self.forms[-1]["fields"].append(tuple(self._textarea))
            self._textarea = None


def csp_directives(value):
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0].lower()] = words[1:]
    return out


def test_a_form_post_that_needs_a_login_arrives_with_its_body_after_it(bc, op):
    origin = bc.url
    form = [("comment", "hello wörld & more=stuff"), ("tag", "a"), ("tag", "b+c"), ("empty", "")]
    body = urllib.parse.urlencode(form)
    browser_post = {
        "content-type": "application/x-www-form-urlencoded",
        "accept": "text/html,application/xhtml+xml",
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "document",
        "sec-fetch-site": "same-origin",
        "origin": origin,
    }
    s = requests.Session()
    first = s.post(origin + "/app/submit?x=1", data=body, headers=browser_post, allow_redirects=False)
    assert sends_to_login(first, op), (first.status_code, first.text[:300])
    # Kept encrypted: not in the URL to the OP, not readable in a cookie.
    kept = " ".join([first.headers["location"]] + [c["value"] for c in stack.set_cookies(first)])
    for plain in ("hello", "w%C3%B6rld", "wörld", "more%3Dstuff"):
        assert plain not in kept
    page = s.get(first.headers["location"], headers=HTML)
    user = user_name("po")
    done = stack.submit_login_form(s, page, user)
    # Back from the OP: a page that posts the body again, to this origin only.
    assert done.status_code == 200 and done.headers["content-type"].startswith("text/html"), (done.status_code, done.text[:300])
    csp = csp_directives(done.headers["content-security-policy"])
    assert csp["default-src"] == ["'none'"], csp
    assert csp.get("form-action") and set(csp["form-action"]) <= {"'self'", origin}, csp
    for sources in csp.values():
        for source in sources:
            assert source in ("'none'", "'self'", origin) or source.startswith(("'sha256-", "'sha384-", "'sha512-", "'nonce-")), csp
    posts = [f for f in Forms(done.text).forms if f["method"] == "post"]
    assert len(posts) == 1, done.text[:1000]
    repost = posts[0]
    assert repost["enctype"] in (None, "application/x-www-form-urlencoded")
    action = urllib.parse.urljoin(done.url, repost["action"])
    assert action == origin + "/app/submit?x=1"
    # The browser submits it (same origin), with the session the login set.
    r = s.post(action, data=urllib.parse.urlencode(repost["fields"]), headers={**browser_post, "referer": done.url}, allow_redirects=False)
    seen = backend_view(r, user)
    assert seen["method"] == "POST" and seen["path"] == "/app/submit?x=1"
    assert seen["content_type"].startswith("application/x-www-form-urlencoded")
    assert urllib.parse.parse_qsl(seen["body"], keep_blank_values=True) == form
    assert "PA.wam" not in seen["headers"].get("cookie", "")


# --- back-channel and front-channel logout tokens -------------------------------------------


def logout_claims(op, sub, sid, changes=None):
    now = int(time.time())
    claims = {"iss": op.issuer, "aud": "pa_wam", "iat": now, "exp": now + 120, "jti": uuid.uuid4().hex, "sub": sub, "sid": sid, "events": {BCL_EVENT: {}}}
    for k, v in (changes or {}).items():
        if v is None:
            claims.pop(k, None)
        else:
            claims[k] = v
    return claims


def unsigned(header, claims, key=b""):
    """A compact JWS with `header`: alg none (empty signature), or HS256 with `key`."""
    import hashlib
    import hmac

    signed = f"{jwtutil.b64url(json.dumps(header).encode())}.{jwtutil.b64url(json.dumps(claims).encode())}"
    sig = hmac.new(key, signed.encode(), hashlib.sha256).digest() if header["alg"] == "HS256" else b""
    return f"{signed}.{jwtutil.b64url(sig)}"


def backchannel(gw, token):
    return requests.post(gw.url + "/pa/oidc/backchannel", data={"logout_token": token}, timeout=10)


def test_bad_logout_tokens_are_refused_with_400_and_change_nothing(bc, op):
    user = user_name("lt")
    s = requests.Session()
    backend_view(stack.login(s, bc.url, "/lt", user), user)
    sid = stack.op_session(s, op.issuer)["clients"]["pa_wam"]["sid"]
    assert sid
    cookie = copied(s)
    public_rsa = json.dumps(next(k for k in stack.op_jwks(op)["keys"] if k["kid"] == "op-rsa-1")).encode()
    foreign = jwtutil.Key("ES256", kid="op-ec-1")  # the OP's key id, another key
    good = lambda **c: logout_claims(op, user, sid, c)  # noqa: E731
    replayed = stack.op_sign(op, logout_claims(op, "nobody", "no-such-sid"))
    assert backchannel(bc, replayed).status_code == 200  # valid, matches no session
    bad = {
        "alg RS384 (not allowed)": stack.op_sign(op, good(), {"alg": "RS384"}),
        "alg HS256 with the client secret": unsigned({"alg": "HS256", "typ": "logout+jwt"}, good(), stack.CLIENT_SECRET.encode()),
        "alg HS256 with the OP's public key": unsigned({"alg": "HS256", "kid": "op-rsa-1"}, good(), public_rsa),
        "alg none": unsigned({"alg": "none", "typ": "logout+jwt"}, good()),
        "signed by another key": foreign.sign(good(), typ="logout+jwt"),
        "wrong aud": stack.op_sign(op, good(aud="someone-else")),
        "wrong iss": stack.op_sign(op, good(iss=op.issuer + "/other")),
        "no events": stack.op_sign(op, good(events=None)),
        "another event": stack.op_sign(op, good(events={"http://schemas.openid.net/event/other": {}})),
        "a nonce": stack.op_sign(op, good(nonce="n-0123456789")),
        "no sid and no sub": stack.op_sign(op, good(sid=None, sub=None)),
        "iat in the future": stack.op_sign(op, good(iat=int(time.time()) + 3600, exp=int(time.time()) + 3720)),
        "expired": stack.op_sign(op, good(iat=int(time.time()) - 600, exp=int(time.time()) - 300)),
        "typ of an access token": stack.op_sign(op, good(), {"typ": "at+jwt"}),
        "replayed jti": replayed,
        "not a JWT": "not-a-jwt",
    }
    for why, token in bad.items():
        r = backchannel(bc, token)
        assert r.status_code == 400, (why, r.status_code, r.text[:200])
        backend_view(get(bc, "/lt/still", cookie), user)
    assert requests.post(bc.url + "/pa/oidc/backchannel", data={}, timeout=10).status_code == 400
    # The same claims, well signed: accepted, and the session ends on every worker.
    r = backchannel(bc, stack.op_sign(op, good(sub=None)))
    assert r.status_code == 200, r.text[:200]
    assert wait_until_refused(bc, op, cookie, within=1.5) < 1.5


def test_front_channel_logout_ends_the_session_of_that_op_sid(bc, op):
    user = user_name("fc")
    s = requests.Session()
    backend_view(stack.login(s, bc.url, "/fc", user), user)
    sid = stack.op_session(s, op.issuer)["clients"]["pa_wam"]["sid"]
    cookie = copied(s)
    front = bc.url + "/pa/oidc/frontchannel"
    # Another issuer, or no sid: refused (400). A sid of no session here: accepted, and no
    # session of this user ends.
    for q, status in (({"iss": op.issuer + "/other", "sid": sid}, 400), ({"iss": op.issuer}, 400), ({"iss": op.issuer, "sid": "no-such-sid"}, 200)):
        r = requests.get(front, params=q, timeout=10)
        assert r.status_code == status, (q, r.status_code)
        backend_view(get(bc, "/fc/still", cookie), user)
    # oidc-provider has no front-channel logout: the test calls it as the OP's iframe would.
    r = requests.get(front, params={"iss": op.issuer, "sid": sid}, headers=HTML, timeout=10)
    assert r.status_code == 200
    assert wait_until_refused(bc, op, cookie, within=1.5) < 1.5


# --- the OP's access token, kept and refreshed ----------------------------------------------


@pytest.fixture
def short_at_op(gateways, logdir):
    """An OP of its own whose web access tokens live 3 s (the gateway of slot 3 its client)."""
    p = stack.start_op(stack.free_port(), [gateways.urls[3]], logdir=logdir, env={"OP_WEB_ACCESS_TOKEN_TTL": "3"}, name="op-short-at")
    yield p
    p.stop()


def test_the_access_token_is_forwarded_and_refreshed_before_it_expires(start_gateway, short_at_op):
    op = short_at_op
    cfg = stack.live_config(
        op.issuer,
        **{"session.validate_interval_s": 300, "session.keep_access_token": True, "session.forward_access_token": True, "session.userinfo": True},
    )
    gw = start_gateway(cfg, slot=3, op_port=op.port)
    user = user_name("at")
    s = requests.Session()
    seen = backend_view(stack.login(s, gw.url, "/at", user), user)
    assert stats(op).get("/me", 0) >= 1, "session.userinfo: userinfo asked at login"
    scheme, _, first = seen["headers"]["authorization"].partition(" ")
    assert scheme == "Bearer" and first
    assert stack.introspect(op, first)["active"] is True
    # The client's own Authorization never reaches the backend in its place.
    spoofed = backend_view(s.get(gw.url + "/at/spoof", headers={**HTML, "authorization": "Bearer forged"}, allow_redirects=False), user)
    assert spoofed["headers"]["authorization"] != "Bearer forged"
    time.sleep(3.5)  # the first access token has expired by now
    seen = backend_view(s.get(gw.url + "/at/later", headers=HTML, allow_redirects=False), user)
    later = seen["headers"]["authorization"].partition(" ")[2]
    assert later != first
    assert stack.introspect(op, later)["active"] is True, "a token the backend gets is never expired"
    assert stats(op).get("grant:refresh_token", 0) >= 1
