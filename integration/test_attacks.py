"""Hostile request shapes against the gateway, end to end: real Envoy with the filter, real
sessions from the OP, the echo backend (which reports how a servlet container, nginx and IIS
would resolve the path it received).

A web-access-management gateway is judged by the request it should have stopped. Every shape
here is sent as raw bytes over a socket (no client library normalises it first) three times: as
an anonymous client, as bob (a real session; group `staff`, not `admins`) and with a
client-credentials token that has no scope. The whole module runs twice: with Envoy's own
normalisation on (normalize_path, merge_slashes, escaped slashes UNESCAPE_AND_REDIRECT,
underscore headers REJECT_REQUEST, strip_trailing_host_dot) and with all of it off (Envoy's
defaults), where the filter alone stands between the request and the backend.

What it proves:
- Paths: one canonical reading (decode once, drop `;` parameters, resolve dot segments, merge
  slashes) decides the resource, and is what the backend receives; case does not dodge a
  resource; `/admin/*` covers `/admin`. Shapes a backend would read otherwise are refused with
  400: an encoded `/` or `\\`, a raw `\\`, `..` above the root, an invalid escape, a segment
  IIS would trim into another resource. Whatever is forwarded resolves to the same path in
  Tomcat, nginx and IIS, and that path is the resource's.
- Nothing that a path trick, a case, a Host, an absolute-form target or a method produces
  reaches /admin/* (admins only) or the `secure` application for bob, or anything protected
  for an anonymous client or a token without scope.
- Methods: an API path whose method no resource allows is 405 with Allow; the scope check
  still answers 403 insufficient_scope for the methods it knows.
- Hosts: normalised (case, trailing dot) before applications are chosen; an authority with
  userinfo or characters no host has is 400; the login and logout redirects never carry a
  host the client chose.
- Headers: a client can never supply an identity header, also not spelled with `_`; the
  session cookie never reaches the backend, in a second Cookie header or next to non-UTF-8
  bytes either.
- Unauthenticated: a browser navigation is sent to the OP, anything else gets 401.
- Logout: a cross-site GET answers a confirmation page (a POST form) and keeps the session;
  a same-origin one still signs out.
"""

import json
import urllib.parse

import pytest
import requests

import stack

JSON = "application/json"
HTML = "text/html,application/xhtml+xml"
IDENTITY = ("x-wam-user", "x-wam-email", "x-wam-groups")
BOB = {"x-wam-user": "bob", "x-wam-email": "bob@example.com", "x-wam-groups": "staff"}
CALLBACK = "/pa/oidc/cb"


def policy():
    scope = lambda s: [{"type": "scope", "all": [s]}]  # noqa: E731
    admins = [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]
    return {
        "applications": [
            {
                "name": "portal",
                "hosts": ["*"],
                "context_root": "/",
                "type": "web",
                "resources": [
                    {"name": "root", "paths": ["/*"]},
                    {"name": "public", "paths": ["/public/*"], "unprotected": True},
                    {"name": "admin", "paths": ["/admin/*"], "audit": True, "rules": admins},
                ],
            },
            {
                "name": "secure",
                "hosts": ["secure.test"],
                "context_root": "/",
                "type": "web",
                "resources": [{"name": "root", "paths": ["/*"], "rules": admins}],
            },
            {
                "name": "orders-api",
                "hosts": ["*"],
                "context_root": "/api",
                "type": "api",
                "api": {"validation": "jwt", "audiences": [stack.API_RESOURCE]},
                "resources": [
                    {"name": "read", "paths": ["/*"], "methods": ["GET"], "rules": scope("orders:read")},
                    {"name": "write", "paths": ["/*"], "methods": ["POST"], "rules": scope("orders:write")},
                ],
            },
        ],
    }


def config(op, gw_url):
    cfg = stack.wam_config(op.issuer)
    cfg["client"]["redirect_uri"] = gw_url + CALLBACK
    # The gateway's clock counts whole seconds: a token issued this very second is not future-dated.
    cfg["clock_skew_s"] = 1
    cfg["api"] = {"realm": "envoy-wam"}
    cfg["policy"] = policy()
    return cfg


@pytest.fixture(scope="module", params=["envoy-normalizes", "envoy-raw"])
def gw(request, built, op, backend, gateways, logdir):
    """The gateway, once with Envoy's own normalisation on and once with it off."""
    normalize = request.param == "envoy-normalizes"
    port = gateways.ports[3]
    url = f"http://127.0.0.1:{port}"
    p = stack.start_gateway(port, config(op, url), backend.port, op.port, logdir, name=f"envoy-attacks-{request.param}", normalize=normalize)
    p.normalize = normalize
    yield p
    p.stop()


@pytest.fixture(scope="module")
def bob(gw):
    """bob's session cookie value (one login per gateway)."""
    s = requests.Session()
    r = stack.login(s, gw.url, "/", "bob")
    assert r.status_code == 200 and r.json()["headers"]["x-wam-user"] == "bob", r.text[:300]
    return s.cookies.get("PA.wam")


@pytest.fixture(scope="module")
def token(op):
    """An access token for the orders API with no scope at all."""
    answer = stack.client_credentials(op, stack.API_RESOURCE, scope=None)
    assert not answer.get("scope"), answer
    return answer["access_token"]


@pytest.fixture(params=["anonymous", "bob", "token"])
def who(request, bob, token):
    """(name, the headers that carry the identity)."""
    if request.param == "bob":
        return "bob", [("cookie", f"PA.wam={bob}")]
    if request.param == "token":
        return "token", [("authorization", f"Bearer {token}")]
    return "anonymous", []


# --- raw HTTP/1.1 ------------------------------------------------------------------------------


def send(gw, target, headers=(), method="GET", host=None, accept=JSON, body=b""):
    """One request as exactly these bytes (stack.raw_http), with an Accept header."""
    head = [("accept", accept)] if accept else []
    return stack.raw_http(gw.port, target, head + list(headers), method=method, host=host, body=body)


# --- what a forwarded request must look like -----------------------------------------------------


def forwarded(r, path, identity=None):
    """The backend's view of an allowed request: exactly the vouched identity (None: none), no
    identity header spelled with `_`, no session cookie, and a path every server model reads
    as `path` (the resource the gateway decided on)."""
    assert r.status == 200, r
    seen = r.json()
    h = seen["headers"]
    if identity is None:
        assert not [k for k in h if k in IDENTITY], h
    else:
        assert {k: h.get(k) for k in IDENTITY} == identity, h
    assert not [k for k in h if "_" in k and k.replace("_", "-") in IDENTITY], h
    cookies = h.get("cookie", [])
    for c in cookies if isinstance(cookies, list) else [cookies]:
        assert "pa.wam" not in c.lower(), h
    res = seen["resolved"]
    assert res["servlet"] is not None and res["nginx"] is not None and res["iis"] is not None, seen
    assert res["servlet"].lower() == res["nginx"].lower() == res["iis"] == path.lower(), (path, seen["path"], res)
    return seen


def refused(r, status):
    assert r.status == status, r
    assert b'"resolved"' not in r.body, r  # not the backend's answer


# --- paths --------------------------------------------------------------------------------------

# Where a path shape lands once the gateway has read it: (resource, canonical path) or "bad".
ADMIN, ROOT, PUBLIC, BAD = "admin", "root", "public", "bad"

SHAPES = [
    ("/admin", ADMIN),
    ("/admin/", ADMIN),
    ("/ADMIN/", ADMIN),
    ("/Admin/x", ADMIN),
    ("/admin;x/", ADMIN),
    ("/admin;/", ADMIN),
    ("/%61dmin/", ADMIN),
    ("//admin/", ADMIN),
    ("/public/../admin/", ADMIN),
    ("/public/%2e%2e/admin/", ADMIN),
    ("/public/%2e%2e;/admin/", ADMIN),
    ("/public/.%2e;/admin/", ADMIN),
    ("/public/%2e.;/admin/", ADMIN),
    ("/public/..;/admin/", ADMIN),
    ("/admin%2f", BAD),
    ("/admin%2F", BAD),
    ("/public%2f..%2fadmin/", BAD),
    ("/admin%5c", BAD),
    ("/public\\..\\admin\\", BAD),
    ("/..", BAD),
    ("/public/../../admin/", BAD),
    ("/%zz", BAD),
    ("/admin%00/", BAD),
    ("/a%01b", BAD),
    ("/a\x01b", BAD),
    ("/a%c3%28", BAD),
    ("/%ff", BAD),
    ("/admin./", BAD),
    ("/admin%20/", BAD),
    ("/admin%2e/", BAD),
    # Shapes that are allowed, and what the backend must receive.
    ("/public/x", (PUBLIC, "/public/x")),
    ("/public/./x", (PUBLIC, "/public/x")),
    ("/public//x", (PUBLIC, "/public/x")),
    ("/public;jsessionid=1/x", (PUBLIC, "/public/x")),
    ("/%70ublic/x", (PUBLIC, "/public/x")),
    ("/admin/../public/x", (PUBLIC, "/public/x")),
    ("/admin/..;/public/x", (PUBLIC, "/public/x")),
    ("/x", (ROOT, "/x")),
    ("/x;y/z", (ROOT, "/x/z")),
    ("/x/%2e/z", (ROOT, "/x/z")),
]

# Envoy's own answers, found by running it (Envoy 1.40): (status, Location, body); None: any.
ENVOY_REDIRECT = lambda location: (307, location, None)  # noqa: E731  escaped slash, UNESCAPE_AND_REDIRECT
ENVOY_BAD_REQUEST = (400, None, b"Bad Request")  # its HTTP/1 codec refuses the request (text/plain)
ENVOY_EMPTY_400 = (400, None, b"")  # normalize_path refuses the path (no body)

# Where Envoy answers before the filter sees the request: with its normalisation on ...
ENVOY_OWN_NORMALIZING = {
    "/admin%2f": ENVOY_REDIRECT("/admin/"),
    "/admin%2F": ENVOY_REDIRECT("/admin/"),
    "/public%2f..%2fadmin/": ENVOY_REDIRECT("/admin/"),
    "/admin%5c": ENVOY_REDIRECT("/admin/"),
    "/admin%00/": ENVOY_EMPTY_400,
}
# ... and in both modes (a raw control character in the target).
ENVOY_OWN_ALWAYS = {
    "/a\x01b": ENVOY_BAD_REQUEST,
}
# Where, with its normalisation on, the path Envoy hands the filter lands elsewhere than the
# raw path would (Envoy reads a backslash as `/` and stops `..` at the root).
ENVOY_LANDS = {
    "/..": (ROOT, "/"),
    "/public\\..\\admin\\": ADMIN,
    "/public/../../admin/": ADMIN,
}


def envoy_answered(r, own):
    status, location, body = own
    assert r.status == status and r.header("location") == location, r
    if body is not None:
        assert r.body == body, r
    if body:
        assert r.header("content-type") == "text/plain", r


# What each identity gets in each place (JSON requests; a web refusal without a session is 401).
REFUSAL = {
    ADMIN: {"anonymous": 401, "bob": 403, "token": 401},
    ROOT: {"anonymous": 401, "token": 401},
    BAD: {"anonymous": 400, "bob": 400, "token": 400},
}


@pytest.mark.parametrize("target,lands", SHAPES, ids=[s[0] for s in SHAPES])
def test_path_shapes(gw, who, target, lands):
    name, headers = who
    own = ENVOY_OWN_ALWAYS.get(target) or (ENVOY_OWN_NORMALIZING.get(target) if gw.normalize else None)
    if own:
        envoy_answered(send(gw, target, headers), own)
        return
    if gw.normalize and target in ENVOY_LANDS:
        lands = ENVOY_LANDS[target]
    r = send(gw, target, headers)
    kind, path = lands if isinstance(lands, tuple) else (lands, None)
    status = REFUSAL.get(kind, {}).get(name)
    if status:
        refused(r, status)
    else:
        seen = forwarded(r, path, BOB if (kind == ROOT and name == "bob") else None)
        # The backend receives the canonical path itself (re-encoded where needed).
        assert seen["path"] == path, seen["path"]


def test_browser_navigation_goes_to_login_and_the_rest_gets_401(gw, op):
    for target in ("/admin/", "/ADMIN/", "/admin;x/", "/x"):
        r = send(gw, target, accept=HTML)
        assert r.status == 302 and r.header("location").startswith(op.issuer + "/auth?"), (target, r)
    assert send(gw, "/admin/", method="POST", accept=HTML).status == 401
    assert send(gw, "/admin/", accept=JSON).status == 401
    assert send(gw, "/x", method="DELETE", accept=HTML).status == 401


def test_absolute_form_target(gw, who):
    name, headers = who
    r = send(gw, "http://other.example/admin", headers)
    refused(r, REFUSAL[ADMIN][name])
    r = send(gw, "http://other.example/public/../admin/", headers)
    refused(r, REFUSAL[ADMIN][name])


# --- methods ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_api_method_no_resource_allows_is_405(gw, who, method):
    r = send(gw, "/api/orders/1", who[1], method=method)
    refused(r, 405)
    assert r.header("content-type").startswith("application/json"), r
    r.json()
    allow = {m.strip().upper() for m in (r.header("allow") or "").split(",") if m.strip()}
    assert {"GET", "POST"} <= allow and not allow & {"PUT", "DELETE", "PATCH"}, r


def test_api_scope_less_token(gw, token):
    for method in ("GET", "POST"):
        r = send(gw, "/api/orders/1", [("authorization", f"Bearer {token}")], method=method)
        refused(r, 403)
        assert r.header("content-type").startswith("application/json"), r
        assert 'error="insufficient_scope"' in r.header("www-authenticate"), r


def test_api_without_token_is_401(gw, bob):
    # A session cookie is no credential for an API.
    for headers in ([], [("cookie", f"PA.wam={bob}")]):
        for method in ("GET", "POST"):
            r = send(gw, "/api/orders/1", headers, method=method)
            refused(r, 401)
            assert r.header("www-authenticate").startswith("Bearer "), r


# --- hosts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["secure.test", "secure.test.", "SECURE.TEST", "Secure.Test.", "secure.test:80"])
def test_host_spellings_reach_the_secure_application(gw, who, host):
    name, headers = who
    for target in ("/x", "/public/x"):
        r = send(gw, target, headers, host=host)
        refused(r, 403 if name == "bob" else 401)


@pytest.mark.parametrize("host", ["localhost:{port}@evil.example", "{port}@evil.example", "evil.example@127.0.0.1:{port}", "user:pw@secure.test"])
def test_authority_with_userinfo_is_400(gw, who, host):
    # Envoy passes these on, in both modes: the filter must refuse them.
    r = send(gw, "/public/x", who[1], host=host.format(port=gw.port))
    refused(r, 400)


@pytest.mark.parametrize("host", ["secure.test/x", "exa mple", "a\\b", "a<b"])
def test_authority_with_characters_no_host_has_is_envoys_400(gw, who, host):
    envoy_answered(send(gw, "/public/x", who[1], host=host), ENVOY_BAD_REQUEST)


def test_login_redirect_never_carries_the_clients_host(gw, op):
    for host in ("evil.example", "evil.example:8080", "EVIL.example."):
        r = send(gw, "/x", host=host, accept=HTML)
        assert r.status == 302, r
        location = r.header("location")
        assert location.startswith(op.issuer + "/auth?"), r
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        assert q["redirect_uri"] == [gw.url + CALLBACK], q


def test_logout_redirect_never_carries_the_clients_host(gw, op):
    r = send(gw, "/pa/oidc/logout", host="evil.example", accept=HTML)
    assert r.status == 302, r
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(r.header("location")).query)
    assert "evil" not in r.header("location").lower(), r
    assert q["post_logout_redirect_uri"] == [gw.url + "/"], q


# --- identity headers and cookies ---------------------------------------------------------------

SPOOFS = [("x_wam_user", "admin"), ("X_Wam_Groups", "admins"), ("x-wam_user", "admin"), ("x_wam-email", "admin@example.com")]


@pytest.mark.parametrize("spoof", SPOOFS, ids=[s[0] for s in SPOOFS])
def test_identity_headers_spelled_with_underscores(gw, who, spoof):
    name, headers = who
    for target, identity in (("/public/x", None), ("/x", BOB if name == "bob" else None)):
        r = send(gw, target, headers + [spoof])
        if gw.normalize:
            # headers_with_underscores_action REJECT_REQUEST: Envoy refuses the request itself.
            envoy_answered(r, ENVOY_BAD_REQUEST)
        elif target == "/x" and name != "bob":
            refused(r, 401)
        else:
            forwarded(r, target, identity)


def test_session_cookie_in_a_second_cookie_header(gw, who, bob):
    name, headers = who
    r = send(gw, "/public/x", headers + [("cookie", "theme=dark"), ("cookie", f"PA.wam={bob}; lang=en")])
    forwarded(r, "/public/x")
    r = send(gw, "/public/x", headers + [("cookie", "theme=dark"), ("cookie", "PA.wam=forged; lang=en")])
    forwarded(r, "/public/x")


def test_session_cookie_next_to_non_utf8_bytes(gw, who, bob):
    name, headers = who
    for value in (b"theme=\xff\xfe; PA.wam=" + bob.encode(), b"PA.wam=" + bob.encode() + b"; x=\xc3\x28", b"PA.wam=\xff" + bob.encode()):
        r = send(gw, "/public/x", headers + [("cookie", value)])
        forwarded(r, "/public/x")


# --- logout -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signal", [("sec-fetch-site", "cross-site"), ("origin", "http://evil.example")], ids=["sec-fetch-site", "origin"])
def test_cross_site_logout_asks_and_keeps_the_session(gw, bob, signal):
    cookie = ("cookie", f"PA.wam={bob}")
    r = send(gw, "/pa/oidc/logout", [cookie, signal], accept=HTML)
    assert r.status == 200, r
    assert r.header("content-type").startswith("text/html"), r
    page = r.text.lower()
    assert "<form" in page and 'method="post"' in page, r.text
    assert not [c for c in r.all("set-cookie") if c.lower().startswith("pa.wam=")], r
    forwarded(send(gw, "/x", [cookie]), "/x", BOB)


def test_same_origin_logout_still_signs_out(gw, op):
    s = requests.Session()
    r = stack.login(s, gw.url, "/", "carol")
    assert r.status_code == 200 and r.json()["headers"]["x-wam-user"] == "carol", r.text[:300]
    cookie = ("cookie", f"PA.wam={s.cookies.get('PA.wam')}")
    r = send(gw, "/pa/oidc/logout", [cookie, ("sec-fetch-site", "same-origin"), ("origin", gw.url)], accept=HTML)
    assert r.status == 302 and r.header("location").startswith(op.issuer + "/session/end?"), r
    assert [c for c in r.all("set-cookie") if c.lower().startswith("pa.wam=;") or c.lower().startswith("pa.wam=") and "max-age=0" in c.lower()], r
