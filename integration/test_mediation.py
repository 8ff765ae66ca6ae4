"""Token mediation (issue 5) end to end: real Envoy with the filter, the real oidc-provider as
the Security Token Service (RFC 8693 token exchange for the client pa_sts), the echo backend.

Applications (all hosts):
  /bm   api (JWT), mediated by `orders-sts`: the client's access token is exchanged
  /wm   web, mediated by `orders-sts`: a JWT the gateway signs (authtoken) is exchanged; the
        STS checks it against <gateway>/pa/authtoken/JWKS
  /sm   api (JWT), mediated by `short-sts` (audience https://short.example.test: 3 s tokens)
  /dm   api (JWT), mediated by `dead-sts` (its cluster points at a closed port)
  /rm   api (JWT), mediated by `refused-sts` (the STS refuses its audience: invalid_target)
  /deny api (JWT), mediated by `orders-sts`, but its rule refuses every request
  /jm   web, JWT identity mapping `orders-jwt` (no STS): header x-wam-jwt
  /plain web, no mediation
"""

import time

import pytest
import requests

import jwtutil
import stack

AUDIENCE = "https://orders.internal"
GW_ISSUER = "envoy-wam"  # what the STS expects (op.mjs GATEWAY_TOKEN_ISSUER default)
HTML = {"accept": "text/html,application/xhtml+xml"}


def sts(op, cluster="op"):
    return {
        "cluster": cluster,
        "token_endpoint": f"{op.issuer}/token",
        "client_id": "pa_sts",
        "client_secret": stack.CLIENT_SECRET,
        "auth_method": "client_secret_basic",
        "timeout_ms": 3000,
    }


def mediation_config(op, key):
    cfg = stack.wam_config(op.issuer)
    cfg["op"]["introspection_endpoint"] = f"{op.issuer}/token/introspection"
    cfg["api"] = {"realm": "envoy-wam", "cache_max_ttl_s": 300, "negative_ttl_s": 1}
    exchange = {
        "type": "token_exchange",
        "requested_token_type": stack.TT_ACCESS_TOKEN,
        "inject": {"header": "authorization"},
        "cache": {"max_entries": 1000, "idle_timeout_s": 1800, "max_lifetime_s": 14400},
    }
    cfg["site_authenticators"] = [
        {**exchange, "name": "orders-sts", "sts": sts(op), "audience": AUDIENCE},
        {**exchange, "name": "short-sts", "sts": sts(op), "audience": stack.SHORT_RESOURCE},
        {**exchange, "name": "dead-sts", "sts": sts(op, "sts-dead"), "audience": AUDIENCE},
        {**exchange, "name": "refused-sts", "sts": sts(op), "audience": "https://refused.invalid"},
        {
            "name": "orders-jwt",
            "type": "jwt",
            "audience": AUDIENCE,
            "claims": ["sub", "email", "groups"],
            "lifetime_s": 300,
            "inject": {"header": "x-wam-jwt"},
            "cache": {"max_entries": 1000, "idle_timeout_s": 1800, "max_lifetime_s": 14400},
        },
    ]
    cfg["authtoken"] = {"issuer": GW_ISSUER, "lifetime_s": 300, "keys": [{"kid": key.kid, "alg": "ES256", "private_key_pem": key.pem}]}
    api = {"type": "api", "api": {"validation": "jwt", "audiences": [stack.API_RESOURCE], "forward_token": True}}

    def app(name, root, extra, **more):
        return {"name": name, "hosts": ["*"], "context_root": root, **extra, "resources": [{"name": "all", "paths": ["/*"]}], **more}

    cfg["policy"] = {
        "default_decision": "deny",
        "applications": [
            app("bearer-mediated", "/bm", api, site_authenticator="orders-sts"),
            app("web-mediated", "/wm", {"type": "web"}, site_authenticator="orders-sts"),
            app("short-mediated", "/sm", api, site_authenticator="short-sts"),
            app("dead-mediated", "/dm", api, site_authenticator="dead-sts"),
            app("refused-mediated", "/rm", api, site_authenticator="refused-sts"),
            app("denied-mediated", "/deny", api, site_authenticator="orders-sts", rules=[{"type": "scope", "all": ["no-such-scope"]}]),
            app("jwt-mapped", "/jm", {"type": "web"}, site_authenticator="orders-jwt"),
            app("plain", "/plain", {"type": "web"}),
        ],
    }
    return cfg


@pytest.fixture(scope="module")
def gw_key():
    return jwtutil.Key("ES256", "gw-test-1")


@pytest.fixture(scope="module")
def med_gw(built, op, backend, gateways, logdir, gw_key):
    # gateways.ports[2] is one of the origins whose /pa/authtoken/JWKS the STS trusts.
    p = stack.start_gateway(gateways.ports[2], mediation_config(op, gw_key), backend.port, op.port, logdir, name="envoy-mediation", clusters={"sts-dead": stack.free_port()})
    yield p
    p.stop()


def exchanges(op):
    return stack.op_stats(op.port).get("grant:token-exchange", 0)


def bearer(token):
    return {"authorization": f"Bearer {token}", "accept": "application/json"}


def backend_saw(r):
    assert r.status_code == 200, (r.status_code, r.text[:500])
    return r.json()["headers"]


def mediated(headers):
    auth = headers.get("authorization", "")
    assert auth.startswith("Bearer "), headers
    return auth[len("Bearer ") :]


def test_bearer_request_gets_the_mediated_token_not_the_original(med_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    before = exchanges(op)
    h = backend_saw(requests.get(med_gw.url + "/bm/orders/1", headers=bearer(token)))
    site_token = mediated(h)
    assert site_token != token and token not in str(h)
    assert jwtutil.verify(site_token, stack.op_jwks(op)), "issued and signed by the STS"
    claims = jwtutil.claims_of(site_token)
    assert claims["aud"] == AUDIENCE and claims["act"] == {"sub": "pa_sts"}
    assert claims["sub"] == "api_client" and claims["iss"] == op.issuer
    assert exchanges(op) - before == 1


def test_the_mediated_token_is_cached(med_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    before = exchanges(op)
    seen = {mediated(backend_saw(requests.get(med_gw.url + f"/bm/orders/{i}", headers=bearer(token)))) for i in range(8)}
    assert len(seen) == 1, "the same mediated token for every request"
    assert exchanges(op) - before == 1, "eight requests, one exchange"
    # Another subject token is another cache entry.
    other = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    backend_saw(requests.get(med_gw.url + "/bm/orders/x", headers=bearer(other)))
    assert exchanges(op) - before == 2


def test_an_expired_mediated_token_is_exchanged_again(med_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    before = exchanges(op)
    first = mediated(backend_saw(requests.get(med_gw.url + "/sm/a", headers=bearer(token))))
    assert jwtutil.claims_of(first)["exp"] - jwtutil.claims_of(first)["iat"] == 3
    assert mediated(backend_saw(requests.get(med_gw.url + "/sm/b", headers=bearer(token)))) == first
    assert exchanges(op) - before == 1
    time.sleep(3.5)
    second = mediated(backend_saw(requests.get(med_gw.url + "/sm/c", headers=bearer(token))))
    assert second != first and exchanges(op) - before == 2
    assert jwtutil.claims_of(second)["exp"] > time.time()


def test_sts_down_is_503_and_nothing_is_forwarded(med_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    r = requests.get(med_gw.url + "/dm/orders/1", headers=bearer(token))
    assert r.status_code in (502, 503), (r.status_code, r.text[:300])
    assert '"headers"' not in r.text and token not in r.text


def test_sts_slow_is_504(start_gateway, op, gw_key):
    sink = stack.Sink()
    try:
        cfg = mediation_config(op, gw_key)
        cfg["site_authenticators"][2]["sts"]["timeout_ms"] = 700
        gw = start_gateway(cfg, clusters={"sts-dead": sink.port})
        token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
        started = time.time()
        r = requests.get(gw.url + "/dm/orders/1", headers=bearer(token))
        assert r.status_code == 504, r.text[:300]
        assert time.time() - started < 5
    finally:
        sink.close()


def test_sts_refusing_is_an_error_not_a_pass_through(med_gw, op):
    """The STS answers 400 invalid_target (it serves no tokens for *.invalid): the request is
    answered with an error, never forwarded without the token it needs."""
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    before = exchanges(op)
    r = requests.get(med_gw.url + "/rm/orders/1", headers=bearer(token))
    assert r.status_code in (502, 503), (r.status_code, r.text[:300])
    assert '"headers"' not in r.text and token not in r.text
    assert exchanges(op) - before == 1


def test_a_denied_request_never_reaches_the_sts(med_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    before = exchanges(op)
    r = requests.get(med_gw.url + "/deny/orders/1", headers=bearer(token))
    assert r.status_code == 403
    assert exchanges(op) == before, "mediation runs after the rules"


def test_web_session_is_mediated_with_a_gateway_signed_subject_token(med_gw, op):
    s = requests.Session()
    before = exchanges(op)
    r = stack.login(s, med_gw.url, "/wm/home", "alice")
    h = backend_saw(r)
    site_token = mediated(h)
    assert jwtutil.verify(site_token, stack.op_jwks(op))
    claims = jwtutil.claims_of(site_token)
    assert claims["sub"] == "alice" and claims["aud"] == AUDIENCE and claims["act"] == {"sub": "pa_sts"}
    assert "PA.wam" not in h.get("cookie", ""), "the session cookie never reaches the site"
    assert s.cookies.get("PA.wam") not in str(h)
    # Cached per session and site.
    for i in range(5):
        assert mediated(backend_saw(s.get(med_gw.url + f"/wm/p{i}", headers=HTML, allow_redirects=False))) == site_token
    assert exchanges(op) - before == 1
    # The session cookie and the mediated token stay out of the log; the user never sees it.
    log = med_gw.log()
    assert site_token not in log and s.cookies.get("PA.wam") not in log


def test_jwt_identity_mapping(med_gw, op, gw_key):
    s = requests.Session()
    h = backend_saw(stack.login(s, med_gw.url, "/jm/home", "bob"))
    token = h["x-wam-jwt"]
    jwks = requests.get(med_gw.url + "/pa/authtoken/JWKS", timeout=5).json()
    assert [k["kid"] for k in jwks["keys"]] == [gw_key.kid]
    assert not {"d"} & set(jwks["keys"][0]), "no private key material"
    assert jwtutil.verify(token, jwks), "verifiable with the gateway's published keys"
    header, claims, _, _ = jwtutil.jwt_parts(token)
    assert header["alg"] == "ES256" and header["kid"] == gw_key.kid
    assert claims["iss"] == GW_ISSUER and claims["aud"] == AUDIENCE
    assert claims["sub"] == "bob" and claims["email"] == "bob@example.com" and claims["groups"] == ["staff"]
    assert 0 < claims["exp"] - time.time() <= 300 + 5
    # Signed once per session and site, not on every request.
    for i in range(4):
        assert backend_saw(s.get(med_gw.url + f"/jm/p{i}", headers=HTML, allow_redirects=False))["x-wam-jwt"] == token
    # Spoofed copies from the client are replaced; no STS involved.
    h2 = backend_saw(s.get(med_gw.url + "/jm/spoof", headers={**HTML, "x-wam-jwt": "forged"}, allow_redirects=False))
    assert h2["x-wam-jwt"] == token


def test_unmediated_application_gets_no_site_token(med_gw, op):
    s = requests.Session()
    h = backend_saw(stack.login(s, med_gw.url, "/plain/x", "alice"))
    assert "authorization" not in h and "x-wam-jwt" not in h
    h = backend_saw(s.get(med_gw.url + "/plain/y", headers={**HTML, "x-wam-jwt": "forged"}, allow_redirects=False))
    assert h.get("x-wam-jwt") in (None, "forged")  # not ours to clean unless configured
