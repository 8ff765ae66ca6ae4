"""The OpenID Provider on its own (no gateway, no filter): what the gateway relies on.

A client's side of the authorization-code flow with PKCE, done here by hand: the
authorization request, oidc-provider's development login form, the code captured from the
redirect (never followed: no gateway listens there), the code exchange at the token endpoint,
and the ID token checked (signature against the JWKS, alg, claims) for the three clients
pa_wam (client_secret_basic, RS256), pa_wam_post (client_secret_post) and pa_wam_es (ES256).
"""

import base64
import hashlib
import json
import secrets
import time
import urllib.parse

import pytest
import requests

import stack

SCOPE = "openid profile email groups"


# --- small helpers: PKCE, JWT decoding and signature checks (stdlib only) -----------------


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64url_int(s):
    return int.from_bytes(b64url_decode(s), "big")


def pkce_pair():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def jwt_parts(token):
    h, p, s = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p)), f"{h}.{p}".encode(), b64url_decode(s)


def rs256_valid(jwk, signed, sig):
    """RSASSA-PKCS1-v1_5 with SHA-256."""
    n, e = b64url_int(jwk["n"]), b64url_int(jwk["e"])
    k = (n.bit_length() + 7) // 8
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(signed).digest()
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(digest_info)) + b"\x00" + digest_info
    return len(sig) == k and pow(int.from_bytes(sig, "big"), e, n).to_bytes(k, "big") == expected


# NIST P-256
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
A = P - 3
G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)


def _add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        m = (3 * x1 * x1 + A) * pow(2 * y1, -1, P) % P
    else:
        m = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (m * m - x1 - x2) % P
    return x3, (m * (x1 - x3) - y1) % P


def _mul(k, point):
    result = None
    while k:
        if k & 1:
            result = _add(result, point)
        point = _add(point, point)
        k >>= 1
    return result


def es256_valid(jwk, signed, sig):
    """ECDSA P-256 with SHA-256; the JWS signature is r || s, 32 bytes each."""
    if len(sig) != 64:
        return False
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (0 < r < N and 0 < s < N):
        return False
    q = (b64url_int(jwk["x"]), b64url_int(jwk["y"]))
    z = int.from_bytes(hashlib.sha256(signed).digest(), "big")
    w = pow(s, -1, N)
    point = _add(_mul(z * w % N, G), _mul(r * w % N, q))
    return point is not None and point[0] % N == r


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
