"""The OpenID Provider on its own (no gateway, no filter): what the gateway relies on.

A client's side of the authorization-code flow with PKCE, done here by hand: the
authorization request, oidc-provider's development login form, the code captured from the
redirect (never followed: no gateway listens there), the code exchange at the token endpoint,
and the ID token checked (signature against the JWKS, alg, claims) for the three clients
pa_wam (client_secret_basic, RS256), pa_wam_post (client_secret_post) and pa_wam_es (ES256).

Then what the API and mediation issues rely on: client_credentials tokens for resources (JWT
and opaque), introspection by the gateway, revocation, and the RFC 8693 token exchange of the
STS, checked here too.
"""

import base64
import hashlib
import http.server
import json
import secrets
import threading
import time
import urllib.parse

import pytest
import requests

import jwtutil
import stack

SCOPE = "openid profile email groups"


# --- small helpers: PKCE here; JWT decoding and signature checks in jwtutil (stdlib only) ---

from jwtutil import b64url_decode, b64url_int, es256_valid, jwt_parts, rs256_valid  # noqa: E402,F401


def pkce_pair():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


# --- the flow -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def discovery(op):
    r = requests.get(f"{op.issuer}/.well-known/openid-configuration", timeout=5)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def redirect_uri(gateways):
    # Registered with the OP (conftest's gateway URLs); nothing listens there in this module.
    return f"{gateways.urls[0]}/pa/oidc/cb"


def authorize(session, op, client_id, redirect_uri, username, challenge, state="st-1", nonce="n-1", **extra):
    """Authorization request, login at the dev form, and the redirects up to (not into) the
    redirect URI. Returns the query parameters of that last redirect."""
    params = {
        "client_id": client_id,
        "response_type": "code",
        "scope": SCOPE,
        "redirect_uri": redirect_uri,
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        **extra,
    }
    params = {k: v for k, v in params.items() if v is not None}
    r = session.get(f"{op.issuer}/auth?" + urllib.parse.urlencode(params), headers={"accept": "text/html"}, allow_redirects=False, timeout=10)
    seen_form = False
    for _ in range(10):
        if r.status_code in (302, 303):
            location = urllib.parse.urljoin(r.url, r.headers["location"])
            if location.startswith(redirect_uri):
                assert seen_form or "error" in location, "redirected back without a login"
                return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
            r = session.get(location, allow_redirects=False, timeout=10)
            continue
        assert r.status_code == 200, f"{r.status_code} at {r.url}: {r.text[:500]}"
        assert not seen_form, f"a second page after the login form (a consent step?) at {r.url}:\n{r.text[-1500:]}"
        assert "/interaction/" in r.url and 'name="login"' in r.text and 'name="password"' in r.text
        seen_form = True
        m = stack.FORM_ACTION.search(r.text)
        data = {name: value for name, value in stack.HIDDEN.findall(r.text)}
        assert data == {"prompt": "login"}
        data.update(login=username, password="whatever")
        r = session.post(urllib.parse.urljoin(r.url, m.group(1)), data=data, allow_redirects=False, timeout=10)
    raise AssertionError("too many redirects")


def redeem(op, client_id, code, verifier, redirect_uri, auth_method="client_secret_basic", secret=stack.CLIENT_SECRET):
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}
    kwargs = {}
    if auth_method == "client_secret_basic":
        # RFC 6749 2.3.1: form-urlencode id and secret before base64 (oidc-provider insists).
        kwargs["auth"] = (urllib.parse.quote(client_id, safe=""), urllib.parse.quote(secret, safe=""))
    else:
        form.update(client_id=client_id, client_secret=secret)
    return requests.post(f"{op.issuer}/token", data=form, timeout=10, **kwargs)


def test_discovery_paths(op, discovery):
    i = op.issuer
    assert discovery["issuer"] == i
    assert discovery["authorization_endpoint"] == f"{i}/auth"
    assert discovery["token_endpoint"] == f"{i}/token"
    assert discovery["jwks_uri"] == f"{i}/jwks"
    assert discovery["end_session_endpoint"] == f"{i}/session/end"
    assert discovery["introspection_endpoint"] == f"{i}/token/introspection"
    assert discovery["revocation_endpoint"] == f"{i}/token/revocation"
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert {"RS256", "ES256"} <= set(discovery["id_token_signing_alg_values_supported"])
    assert {"client_secret_basic", "client_secret_post"} <= set(discovery["token_endpoint_auth_methods_supported"])
    assert "groups" in discovery["scopes_supported"]
    # The filter configuration the tests use names the same endpoints (those it names).
    cfg = stack.wam_config(i)["op"]
    for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "end_session_endpoint"):
        assert cfg.get(key, discovery[key]) == discovery[key], key


def test_discovery_urls_follow_the_host_header(op):
    """An oidc-provider oddity worth knowing: the endpoint URLs in its discovery document are
    built from the request's Host header, only `issuer` is fixed. Fetch it with the issuer's
    host[:port] as the authority (the filter's callouts do) to get the issuer's URLs."""
    r = requests.get(f"http://127.0.0.1:{op.port}/.well-known/openid-configuration", headers={"host": "op.internal:1234"}, timeout=5)
    doc = r.json()
    assert doc["issuer"] == op.issuer
    assert doc["token_endpoint"] == "http://op.internal:1234/token"


def test_jwks_has_public_rsa_and_ec_keys(discovery):
    keys = requests.get(discovery["jwks_uri"], timeout=5).json()["keys"]
    by_alg = {k["alg"]: k for k in keys}
    assert by_alg["RS256"]["kty"] == "RSA" and by_alg["RS256"]["use"] == "sig"
    assert by_alg["ES256"]["kty"] == "EC" and by_alg["ES256"]["crv"] == "P-256"
    assert all(k.get("kid") for k in keys)
    for k in keys:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k), "private key material in the JWKS"


@pytest.mark.parametrize(
    "client_id,auth_method,alg",
    [
        ("pa_wam", "client_secret_basic", "RS256"),
        ("pa_wam_post", "client_secret_post", "RS256"),
        ("pa_wam_es", "client_secret_basic", "ES256"),
    ],
)
def test_code_flow_with_pkce(op, discovery, redirect_uri, client_id, auth_method, alg):
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    answer = authorize(requests.Session(), op, client_id, redirect_uri, "alice", challenge, state=state, nonce=nonce)
    assert answer.get("state") == state and answer.get("iss") == op.issuer and "error" not in answer, answer

    r = redeem(op, client_id, answer["code"], verifier, redirect_uri, auth_method)
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"].lower() == "bearer" and "id_token" in tokens

    header, claims, signed, sig = jwt_parts(tokens["id_token"])
    assert header["alg"] == alg
    jwks = requests.get(discovery["jwks_uri"], timeout=5).json()["keys"]
    jwk = next(k for k in jwks if k["kid"] == header["kid"])
    assert (rs256_valid if alg == "RS256" else es256_valid)(jwk, signed, sig)
    # A flipped bit does not verify (the checks above are real checks).
    bad = bytes([sig[0] ^ 1]) + sig[1:]
    assert not (rs256_valid if alg == "RS256" else es256_valid)(jwk, signed, bad)

    now = time.time()
    assert claims["iss"] == op.issuer and claims["aud"] == client_id
    assert claims["nonce"] == nonce and claims["exp"] > now > claims["iat"] - 60
    assert claims["sub"] == "alice" and claims["email"] == "alice@example.com"
    assert claims["email_verified"] is True and claims["name"] == "Alice"
    assert claims["groups"] == ["staff", "admins"]


@pytest.mark.parametrize("user,groups", [("bob", ["staff"]), ("carol", [])])
def test_groups_per_user(op, redirect_uri, user, groups):
    verifier, challenge = pkce_pair()
    answer = authorize(requests.Session(), op, "pa_wam", redirect_uri, user, challenge)
    r = redeem(op, "pa_wam", answer["code"], verifier, redirect_uri)
    assert r.status_code == 200, r.text
    claims = jwt_parts(r.json()["id_token"])[1]
    assert claims["sub"] == user and claims["email"] == f"{user}@example.com" and claims["groups"] == groups


def test_second_login_reuses_the_op_session(op, redirect_uri):
    """Like a browser: the OP's session cookie (host 127.0.0.1, not Secure) is kept by the
    jar, and a second authorization request needs no form at all."""
    s = requests.Session()
    _, challenge = pkce_pair()
    authorize(s, op, "pa_wam", redirect_uri, "alice", challenge)
    assert "_session" in {c.name for c in s.cookies if c.domain == "127.0.0.1" and not c.secure}
    _, challenge = pkce_pair()
    r = s.get(
        f"{op.issuer}/auth?"
        + urllib.parse.urlencode(
            {"client_id": "pa_wam_es", "response_type": "code", "scope": SCOPE, "redirect_uri": redirect_uri, "state": "again", "code_challenge": challenge, "code_challenge_method": "S256"}
        ),
        allow_redirects=False,
        timeout=10,
    )
    for _ in range(5):
        location = urllib.parse.urljoin(r.url, r.headers["location"])
        if location.startswith(redirect_uri):
            break
        r = s.get(location, allow_redirects=False, timeout=10)
    answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
    assert answer["state"] == "again" and "code" in answer


def test_pkce_is_required(op, redirect_uri):
    r = requests.get(
        f"{op.issuer}/auth?"
        + urllib.parse.urlencode({"client_id": "pa_wam", "response_type": "code", "scope": SCOPE, "redirect_uri": redirect_uri, "state": "s"}),
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code in (302, 303)
    answer = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(r.headers["location"]).query))
    assert answer["error"] == "invalid_request" and "PKCE" in answer["error_description"], answer


def test_wrong_verifier_secret_or_reuse_is_refused(op, redirect_uri):
    verifier, challenge = pkce_pair()
    answer = authorize(requests.Session(), op, "pa_wam", redirect_uri, "alice", challenge)
    code = answer["code"]
    r = redeem(op, "pa_wam", code, verifier, redirect_uri, secret="wrong-secret")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = redeem(op, "pa_wam", code, pkce_pair()[0], redirect_uri)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # Neither failure used the code up (oidc-provider consumes it only on success) ...
    r = redeem(op, "pa_wam", code, verifier, redirect_uri)
    assert r.status_code == 200, r.text
    # ... and success does: a replayed code is refused.
    r = redeem(op, "pa_wam", code, verifier, redirect_uri)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_unregistered_redirect_uri_is_refused(op):
    _, challenge = pkce_pair()
    r = requests.get(
        f"{op.issuer}/auth?"
        + urllib.parse.urlencode(
            {"client_id": "pa_wam", "response_type": "code", "scope": "openid", "redirect_uri": "http://127.0.0.1:1/pa/oidc/cb", "code_challenge": challenge, "code_challenge_method": "S256"}
        ),
        allow_redirects=False,
        timeout=10,
    )
    assert r.status_code == 400 and "redirect_uri" in r.text


def test_rp_initiated_logout_returns_to_the_gateway(op, gateways, redirect_uri):
    s = requests.Session()
    verifier, challenge = pkce_pair()
    answer = authorize(s, op, "pa_wam", redirect_uri, "alice", challenge)
    id_token = redeem(op, "pa_wam", answer["code"], verifier, redirect_uri).json()["id_token"]
    post_logout = f"{gateways.urls[0]}/"
    r = s.get(
        f"{op.issuer}/session/end?" + urllib.parse.urlencode({"id_token_hint": id_token, "post_logout_redirect_uri": post_logout, "state": "bye"}),
        timeout=10,
    )
    # oidc-provider asks the user to confirm with a form (xsrf token in a hidden field).
    assert r.status_code == 200, r.text[:500]
    m = stack.FORM_ACTION.search(r.text)
    data = dict(stack.HIDDEN.findall(r.text))
    assert m and "xsrf" in data, r.text[-1500:]
    data["logout"] = "yes"
    r = s.post(urllib.parse.urljoin(r.url, m.group(1)), data=data, allow_redirects=False, timeout=10)
    assert r.status_code in (302, 303)
    assert r.headers["location"] == post_logout + "?state=bye"


def test_request_counters(op, redirect_uri):
    requests.post(f"{op.issuer}/__stats/reset", timeout=5).raise_for_status()
    assert requests.get(f"{op.issuer}/__stats", timeout=5).json() == {}
    requests.get(f"{op.issuer}/jwks", timeout=5)
    requests.get(f"{op.issuer}/jwks", timeout=5)
    verifier, challenge = pkce_pair()
    answer = authorize(requests.Session(), op, "pa_wam", redirect_uri, "alice", challenge)
    redeem(op, "pa_wam", answer["code"], verifier, redirect_uri)
    stats = stack.op_stats(op.port)
    assert stats["/jwks"] == 2 and stats["/token"] == 1 and stats["/auth"] == 1
    assert "/__stats" not in stats



@pytest.mark.parametrize("client_id", ["pa_wam", "pa_wam_post", "pa_wam_es"])
@pytest.mark.parametrize("auth_method", ["client_secret_basic", "client_secret_post"])
def test_basic_and_post_both_accepted(op, redirect_uri, client_id, auth_method):
    """oidc-provider treats client_secret_basic and client_secret_post as one family: a client
    registered with either may use both (pa_wam_post is registered with _post all the same)."""
    verifier, challenge = pkce_pair()
    answer = authorize(requests.Session(), op, client_id, redirect_uri, "alice", challenge)
    r = redeem(op, client_id, answer["code"], verifier, redirect_uri, auth_method)
    assert r.status_code == 200, r.text


# --- API tokens (client_credentials + resource indicators), introspection, revocation -------

ORDERS = "orders:read orders:write"


def test_jwt_access_token_for_a_resource(op):
    answer = stack.client_credentials(op, stack.API_RESOURCE, ORDERS)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 600 and answer["scope"] == ORDERS
    token = answer["access_token"]
    header, claims, _, _ = jwt_parts(token)
    assert header["alg"] == "RS256" and header["typ"] == "at+jwt" and header["kid"]
    assert jwtutil.verify(token, stack.op_jwks(op)), "signed by the OP's published key"
    assert not jwtutil.verify(token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB"), stack.op_jwks(op))
    now = time.time()
    assert claims["iss"] == op.issuer and claims["aud"] == stack.API_RESOURCE
    assert claims["client_id"] == "api_client" and claims["sub"] == "api_client"
    assert claims["scope"] == ORDERS and claims["exp"] - claims["iat"] == 600 and claims["exp"] > now
    assert claims["jti"]


def test_es256_resource_short_resource_and_scope_subset(op):
    token = stack.client_credentials_token(op, stack.ES_RESOURCE, "orders:read")
    header, claims, _, _ = jwt_parts(token)
    assert header["alg"] == "ES256" and jwtutil.verify(token, stack.op_jwks(op))
    assert claims["scope"] == "orders:read" and claims["aud"] == stack.ES_RESOURCE
    short = stack.client_credentials(op, stack.SHORT_RESOURCE)
    assert short["expires_in"] == 3
    c = jwt_parts(short["access_token"])[1]
    assert c["exp"] - c["iat"] == 3 and c["aud"] == stack.SHORT_RESOURCE


def test_client_credentials_refusals(op):
    for form, status, error in [
        ({"resource": "https://unknown.example.test"}, 400, "invalid_target"),
        ({"resource": stack.API_RESOURCE, "scope": "openid"}, 400, "invalid_scope"),
    ]:
        got, answer = stack._post_form(f"{op.issuer}/token", {"grant_type": "client_credentials", **form}, "api_client")
        assert (got, answer["error"]) == (status, error), answer
    # The gateway's own client has no client_credentials grant.
    got, answer = stack._post_form(f"{op.issuer}/token", {"grant_type": "client_credentials", "resource": stack.API_RESOURCE}, "pa_wam")
    assert got == 400 and answer["error"] in ("invalid_request", "unauthorized_client"), answer


def test_opaque_token_introspection_and_revocation(op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, "orders:read")
    assert token.count(".") == 0, "opaque, not a JWT"
    seen = stack.introspect(op, token)  # as pa_wam, the gateway
    assert seen["active"] is True and seen["client_id"] == "api_client" and seen["scope"] == "orders:read"
    assert seen["aud"] == stack.OPAQUE_RESOURCE and seen["iss"] == op.issuer and seen["token_type"] == "Bearer"
    assert seen["exp"] > time.time()
    assert "sub" not in seen, "a client_credentials token has no user; the gateway falls back to client_id"
    # Only the token's own client may revoke it.
    got, answer = stack._post_form(f"{op.issuer}/token/revocation", {"token": token}, "pa_wam")
    assert got == 400 and answer["error"] == "invalid_request"
    assert stack.introspect(op, token)["active"] is True
    stack.revoke(op, token)
    assert stack.introspect(op, token) == {"active": False}
    assert stack.introspect(op, "not-a-token") == {"active": False}


def test_introspection_needs_the_gateways_credentials(op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE)
    r = requests.post(f"{op.issuer}/token/introspection", data={"token": token}, auth=("pa_wam", "wrong"), timeout=5)
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_jwt_access_tokens_are_not_introspectable(op):
    """oidc-provider refuses to introspect its structured (JWT) access tokens: JWT resources
    are validated locally by the gateway, opaque ones by introspection."""
    token = stack.client_credentials_token(op, stack.API_RESOURCE)
    got, answer = stack._post_form(f"{op.issuer}/token/introspection", {"token": token}, "pa_wam")
    assert got == 400 and answer["error"] == "unsupported_token_type", answer


def test_short_opaque_token_expires(op):
    token = stack.client_credentials_token(op, stack.OPAQUE_SHORT_RESOURCE)
    assert stack.introspect(op, token)["active"] is True
    time.sleep(3.5)
    assert stack.introspect(op, token) == {"active": False}


# --- the STS: RFC 8693 token exchange --------------------------------------------------------


def check_exchanged(op, answer, sub, aud, ttl=300, scope=None):
    assert set(answer) >= {"access_token", "issued_token_type", "token_type", "expires_in"}, answer
    assert answer["issued_token_type"] == stack.TT_ACCESS_TOKEN and answer["token_type"] == "Bearer"
    assert answer["expires_in"] == ttl
    token = answer["access_token"]
    assert jwtutil.verify(token, stack.op_jwks(op))
    header, claims, _, _ = jwt_parts(token)
    assert header["alg"] == "RS256"
    assert claims["iss"] == op.issuer and claims["sub"] == sub and claims["aud"] == aud
    assert claims["act"] == {"sub": "pa_sts"} and claims["client_id"] == "pa_sts"
    assert claims["exp"] - claims["iat"] == ttl and claims["exp"] > time.time() and claims["jti"]
    if scope is not None:
        assert claims.get("scope") == scope
    return claims


@pytest.mark.parametrize("resource", [stack.OPAQUE_RESOURCE, stack.API_RESOURCE])
def test_token_exchange_of_an_access_token(op, resource):
    stack.reset_op_stats(op.port)
    subject = stack.client_credentials_token(op, resource, "orders:read")
    status, answer = stack.token_exchange(op, subject, audience="https://orders.internal")
    assert status == 200, answer
    check_exchanged(op, answer, "api_client", "https://orders.internal", scope="orders:read")
    # Several audiences, and the requested scope instead of the subject's.
    status, answer = stack.token_exchange(op, subject, audience=["https://a.internal", "https://b.internal"], scope="orders:read")
    assert status == 200, answer
    check_exchanged(op, answer, "api_client", ["https://a.internal", "https://b.internal"])
    # An audience that is a resource with short tokens gets short tokens.
    status, answer = stack.token_exchange(op, subject, audience=stack.SHORT_RESOURCE)
    assert status == 200 and answer["expires_in"] == 3, answer
    stats = stack.op_stats(op.port)
    assert stats["grant:token-exchange"] == 3 and stats["grant:token-exchange:issued"] == 3


def test_token_exchange_refusals(op):
    opaque = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE)
    jwt = stack.client_credentials_token(op, stack.API_RESOURCE)
    revoked = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE)
    stack.revoke(op, revoked)
    h, p, sig = jwt.split(".")
    forged_claims = {**jwt_parts(jwt)[1], "sub": "admin"}
    forged = f"{h}.{jwtutil.b64url(json.dumps(forged_claims).encode())}.{sig}"
    own_key = jwtutil.Key("RS256", "op-rsa-1")  # the OP's kid, another key
    self_signed = own_key.sign({"iss": op.issuer, "sub": "admin", "aud": stack.API_RESOURCE, "exp": int(time.time()) + 60})
    stack.reset_op_stats(op.port)
    cases = [
        ({"subject_token": forged}, "invalid_grant"),
        ({"subject_token": self_signed}, "invalid_grant"),
        ({"subject_token": revoked}, "invalid_grant"),
        ({"subject_token": "no-such-token"}, "invalid_grant"),
        ({"subject_token": jwt, "subject_token_type": stack.TT_JWT}, "invalid_grant"),  # not a gateway's
        ({"subject_token": opaque, "subject_token_type": "urn:example:unknown"}, "invalid_request"),
        ({"subject_token": opaque, "requested_token_type": "urn:ietf:params:oauth:token-type:saml2"}, "invalid_request"),
        ({"subject_token": opaque, "actor_token": jwt, "actor_token_type": stack.TT_ACCESS_TOKEN}, "invalid_request"),
        ({"subject_token": ""}, "invalid_request"),
    ]
    for form, error in cases:
        status, answer = stack.token_exchange(op, audience="https://orders.internal", **form)
        assert (status, answer.get("error")) == (400, error), (form, answer)
        assert "access_token" not in answer
    status, answer = stack.token_exchange(op, opaque, audience="https://refused.invalid")
    assert (status, answer.get("error")) == (400, "invalid_target"), answer
    assert stack.op_stats(op.port).get("grant:token-exchange:issued", 0) == 0
    # Only pa_sts may exchange; and only with its secret.
    status, answer = stack.token_exchange(op, opaque, audience="x", client_id="api_client")
    assert status == 400 and answer["error"] in ("invalid_request", "unauthorized_client"), answer
    r = requests.post(
        f"{op.issuer}/token",
        data={"grant_type": stack.TOKEN_EXCHANGE, "subject_token": opaque, "subject_token_type": stack.TT_ACCESS_TOKEN},
        auth=("pa_sts", "wrong"),
        timeout=5,
    )
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


class JwksServer:
    """Serves a JWKS at /pa/authtoken/JWKS on a registered gateway port, as a gateway would."""

    def __init__(self, port, jwks):
        body = json.dumps(jwks).encode()

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                ok = self.path == "/pa/authtoken/JWKS"
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body) if ok else 0))
                self.end_headers()
                if ok:
                    self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_token_exchange_of_a_gateway_signed_jwt(op, gateways):
    """A web session's subject token: a short-lived JWT the gateway signs, its keys at
    <gateway>/pa/authtoken/JWKS (here a stand-in server on the last registered gateway port)."""
    key = jwtutil.Key("ES256", f"gw-{secrets.token_hex(4)}")
    jwks = JwksServer(gateways.ports[-1], key.jwks())
    try:
        now = int(time.time())
        good = {"iss": "envoy-wam", "aud": f"{op.issuer}/token", "sub": "alice", "email": "alice@example.com", "groups": ["staff", "admins"], "iat": now, "exp": now + 60, "jti": secrets.token_hex(8)}
        status, answer = stack.token_exchange(op, key.sign(good), stack.TT_JWT, audience="https://orders.internal")
        assert status == 200, answer
        claims = check_exchanged(op, answer, "alice", "https://orders.internal")
        assert claims["groups"] == ["staff", "admins"] and claims["email"] == "alice@example.com"
        # RSA gateway keys work as well; no aud is accepted too.
        rsa = jwtutil.Key("RS256", "gw-rsa")
        jwks.close()
        jwks = JwksServer(gateways.ports[-1], {"keys": [key.jwk, rsa.jwk]})
        no_aud = {k: v for k, v in good.items() if k != "aud"}
        status, answer = stack.token_exchange(op, rsa.sign(no_aud), stack.TT_JWT, audience="https://orders.internal")
        assert status == 200, answer

        other = jwtutil.Key("ES256", key.kid)  # same kid, not the published key
        for token in [
            key.sign({**good, "iss": "someone-else"}),
            key.sign({**good, "exp": now - 5}),
            key.sign({**good, "aud": "https://elsewhere.example"}),
            key.sign({k: v for k, v in good.items() if k != "exp"}),
            other.sign(good),
            key.sign(good)[:-8] + "AAAAAAAA",
        ]:
            status, answer = stack.token_exchange(op, token, stack.TT_JWT, audience="https://orders.internal")
            assert (status, answer.get("error")) == (400, "invalid_grant"), (jwt_parts(token)[1], answer)
    finally:
        jwks.close()
    # With the gateway's JWKS gone, nothing verifies.
    status, answer = stack.token_exchange(op, key.sign(good), stack.TT_JWT, audience="https://orders.internal")
    assert (status, answer.get("error")) == (400, "invalid_grant")
