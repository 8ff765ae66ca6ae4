"""API access with OAuth bearer tokens (issue 4), end to end: real Envoy with the filter, tokens
from the real oidc-provider (client_credentials grant for api_client), the echo backend.

The gateway's policy has three API applications:
  /api/...        JWT validation, audiences https://api.example.test (+ short, es), token forwarded
  /opaque/...     introspection at the OP (as pa_wam), token forwarded
  /noforward/...  JWT validation, forward_token false
each with a resource /read/* needing orders:read and /write/* needing orders:write.
"""

import base64
import json
import threading
import time

import pytest
import requests

import jwtutil
import stack

REALM = "envoy-wam"
READ_WRITE = "orders:read orders:write"


def scoped_resources():
    return [
        {"name": "read", "paths": ["/read/*"], "rules": [{"type": "scope", "all": ["orders:read"]}]},
        {"name": "write", "paths": ["/write/*"], "rules": [{"type": "scope", "all": ["orders:write"]}]},
    ]


def api_config(issuer, **api):
    cfg = stack.wam_config(issuer)
    cfg["op"]["introspection_endpoint"] = f"{issuer}/token/introspection"
    # The gateway's clock counts whole seconds: one second of skew keeps a token issued this very
    # second from looking future-dated, and expiry tests wait that second longer.
    cfg["clock_skew_s"] = 1
    cfg["identity_headers"] = [
        {"header": "x-wam-user", "claim": "sub"},
        {"header": "x-wam-client", "claim": "client_id"},
        {"header": "x-wam-scope", "claim": "scope"},
    ]
    cfg["api"] = {"realm": REALM, "algorithms": ["RS256", "ES256"], "cache_max_ttl_s": 3, "negative_ttl_s": 3, **api}
    jwt_audiences = [stack.API_RESOURCE, stack.SHORT_RESOURCE, stack.ES_RESOURCE]
    cfg["policy"] = {
        "default_decision": "deny",
        "applications": [
            {
                "name": "orders-api",
                "hosts": ["*"],
                "context_root": "/api",
                "type": "api",
                "api": {"validation": "jwt", "audiences": jwt_audiences, "forward_token": True},
                "resources": scoped_resources(),
            },
            {
                "name": "orders-opaque",
                "hosts": ["*"],
                "context_root": "/opaque",
                "type": "api",
                "api": {"validation": "introspection", "forward_token": True},
                "resources": scoped_resources(),
            },
            {
                "name": "orders-noforward",
                "hosts": ["*"],
                "context_root": "/noforward",
                "type": "api",
                "api": {"validation": "jwt", "audiences": jwt_audiences, "forward_token": False},
                "resources": scoped_resources(),
            },
        ],
    }
    return cfg


@pytest.fixture(scope="module")
def api_gw(built, op, backend, gateways, logdir):
    # One worker: the token cache is per worker, so call counts are exact.
    p = stack.start_gateway(gateways.ports[2], api_config(op.issuer), backend.port, op.port, logdir, name="envoy-api")
    yield p
    p.stop()


def bearer(token):
    return {"authorization": f"Bearer {token}", "accept": "application/json"}


def seen(r):
    assert r.status_code == 200, (r.status_code, r.headers, r.text[:500])
    return r.json()


def challenge(r):
    """The WWW-Authenticate challenge as a dict of its parameters (and "scheme")."""
    value = r.headers.get("www-authenticate", "")
    scheme, _, rest = value.partition(" ")
    out = {"scheme": scheme}
    for part in rest.split(","):
        k, _, v = part.strip().partition("=")
        if k:
            out[k] = v.strip('"')
    return out


def assert_invalid_token(r):
    assert r.status_code == 401, (r.status_code, r.text[:300])
    c = challenge(r)
    assert c["scheme"] == "Bearer" and c["realm"] == REALM and c.get("error") == "invalid_token", r.headers
    assert "location" not in r.headers


def introspections(op):
    return stack.op_stats(op.port).get("/token/introspection", 0)


# --- JWT validation ---------------------------------------------------------------------------


def test_valid_jwt_reaches_the_backend_with_identity(api_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, READ_WRITE)
    got = seen(requests.get(api_gw.url + "/api/read/1", headers={**bearer(token), "x-wam-user": "spoofed"}))
    h = got["headers"]
    assert h["x-wam-user"] == "api_client" and h["x-wam-client"] == "api_client"
    assert set(h["x-wam-scope"].replace(",", " ").split()) == {"orders:read", "orders:write"}
    assert h["authorization"] == f"Bearer {token}", "forward_token: true passes the token on"
    assert seen(requests.post(api_gw.url + "/api/write/1", headers=bearer(token)))["method"] == "POST"


def test_es256_access_token(api_gw, op):
    token = stack.client_credentials_token(op, stack.ES_RESOURCE, "orders:read")
    assert jwtutil.jwt_parts(token)[0]["alg"] == "ES256"
    assert seen(requests.get(api_gw.url + "/api/read/es", headers=bearer(token)))["headers"]["x-wam-client"] == "api_client"


def test_no_token_gets_a_bearer_challenge_not_a_login(api_gw):
    for headers in ({"accept": "application/json"}, {"accept": "text/html"}, {}):
        r = requests.get(api_gw.url + "/api/read/1", headers=headers, allow_redirects=False)
        assert r.status_code == 401, (headers, r.status_code)
        c = challenge(r)
        assert c["scheme"] == "Bearer" and c["realm"] == REALM
        assert "error" not in c, "RFC 6750 3.1: no error code when the request had no token"
        assert "location" not in r.headers


def test_other_schemes_and_malformed_headers_are_not_a_token(api_gw):
    for value in ("Basic YTpi", "Bearer", "Bearer ", "bearer"):
        r = requests.get(api_gw.url + "/api/read/1", headers={"authorization": value}, allow_redirects=False)
        assert r.status_code in (400, 401) and "location" not in r.headers, value
        assert challenge(r)["scheme"] == "Bearer"


def test_expired_token_is_invalid(api_gw, op):
    token = stack.client_credentials_token(op, stack.SHORT_RESOURCE, "orders:read")  # lives 3 s
    assert seen(requests.get(api_gw.url + "/api/read/short", headers=bearer(token)))
    time.sleep(5.2)  # 3 s of life, 1 s of skew, 1 s of clock granularity
    # The cached result ends with the token (min(exp, now + cache_max_ttl_s)).
    assert_invalid_token(requests.get(api_gw.url + "/api/read/short", headers=bearer(token)))


def test_wrong_audience_is_invalid(api_gw, op):
    token = stack.client_credentials_token(op, stack.OTHER_RESOURCE, READ_WRITE)
    assert_invalid_token(requests.get(api_gw.url + "/api/read/1", headers=bearer(token)))
    # An opaque token is not a JWT: refused by the JWT application too.
    opaque = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, READ_WRITE)
    assert_invalid_token(requests.get(api_gw.url + "/api/read/1", headers=bearer(opaque)))


def test_tampered_and_forged_tokens_are_invalid(api_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    h, p, sig = token.split(".")
    claims = jwtutil.claims_of(token)
    more = jwtutil.b64url(json.dumps({**claims, "scope": READ_WRITE, "sub": "admin"}).encode())
    none_header = jwtutil.b64url(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    hs_header = jwtutil.b64url(json.dumps({"alg": "HS256", "kid": jwtutil.jwt_parts(token)[0]["kid"]}).encode())
    stranger = jwtutil.Key("RS256", jwtutil.jwt_parts(token)[0]["kid"])  # the OP's kid, not its key
    forged = [
        f"{h}.{more}.{sig}",
        f"{h}.{p}.{sig[:20]}{'A' if sig[20] != 'A' else 'B'}{sig[21:]}",
        f"{none_header}.{p}.",
        f"{hs_header}.{p}.{sig}",
        stranger.sign(claims, typ="at+jwt"),
        "not.a.jwt",
        "garbage",
    ]
    for t in forged:
        assert_invalid_token(requests.get(api_gw.url + "/api/read/1", headers=bearer(t)))
    # The genuine token still works.
    assert seen(requests.get(api_gw.url + "/api/read/1", headers=bearer(token)))


def test_missing_scope_is_403_insufficient_scope(api_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read")
    r = requests.post(api_gw.url + "/api/write/1", headers=bearer(token))
    assert r.status_code == 403, r.text[:300]
    c = challenge(r)
    assert c["scheme"] == "Bearer" and c.get("error") == "insufficient_scope" and c.get("scope") == "orders:write", r.headers
    assert seen(requests.get(api_gw.url + "/api/read/1", headers=bearer(token)))


def test_jwks_is_fetched_once_for_many_tokens(api_gw, op):
    tokens = [stack.client_credentials_token(op, stack.API_RESOURCE, "orders:read") for _ in range(3)]
    seen(requests.get(api_gw.url + "/api/read/warm", headers=bearer(tokens[0])))
    before = stack.op_stats(op.port).get("/jwks", 0)
    for t in tokens * 3:
        seen(requests.get(api_gw.url + "/api/read/many", headers=bearer(t)))
    assert stack.op_stats(op.port).get("/jwks", 0) == before


def test_forward_token_false_removes_the_authorization_header(api_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, READ_WRITE)
    h = seen(requests.get(api_gw.url + "/noforward/read/1", headers=bearer(token)))["headers"]
    assert "authorization" not in h and h["x-wam-client"] == "api_client"
    assert token not in json.dumps(h)


def test_no_application_is_default_deny(api_gw, op):
    token = stack.client_credentials_token(op, stack.API_RESOURCE, READ_WRITE)
    assert requests.get(api_gw.url + "/elsewhere/read/1", headers=bearer(token)).status_code == 403


# --- introspection ------------------------------------------------------------------------------


def test_opaque_token_by_introspection_is_cached(api_gw, op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, READ_WRITE)
    before = introspections(op)
    for i in range(6):
        h = seen(requests.get(api_gw.url + f"/opaque/read/{i}", headers=bearer(token)))["headers"]
        assert h["x-wam-client"] == "api_client" and h["authorization"] == f"Bearer {token}"
    assert introspections(op) - before == 1, "one introspection for six requests with one token"


def test_opaque_token_scope_is_enforced(api_gw, op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, "orders:read")
    assert seen(requests.get(api_gw.url + "/opaque/read/1", headers=bearer(token)))
    r = requests.put(api_gw.url + "/opaque/write/1", headers=bearer(token))
    assert r.status_code == 403 and challenge(r).get("error") == "insufficient_scope"


def test_revoked_token_is_refused_once_the_cache_expires(api_gw, op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, READ_WRITE)
    assert seen(requests.get(api_gw.url + "/opaque/read/r", headers=bearer(token)))
    stack.revoke(op, token)
    assert stack.introspect(op, token) == {"active": False}
    time.sleep(4.2)  # cache_max_ttl_s is 3 (whole seconds: an entry lives 2 to 3 s)
    assert_invalid_token(requests.get(api_gw.url + "/opaque/read/r", headers=bearer(token)))


def test_unknown_opaque_tokens_are_negatively_cached(api_gw, op):
    bad = "x" * 43
    before = introspections(op)
    for _ in range(5):
        assert_invalid_token(requests.get(api_gw.url + "/opaque/read/1", headers=bearer(bad)))
    assert introspections(op) - before == 1, "a flood of one bad token is one introspection"
    time.sleep(4.2)  # negative_ttl_s is 3
    assert_invalid_token(requests.get(api_gw.url + "/opaque/read/1", headers=bearer(bad)))
    assert introspections(op) - before == 2


def test_concurrent_requests_with_a_new_token_make_one_introspection(api_gw, op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, READ_WRITE)
    before = introspections(op)
    results = []
    barrier = threading.Barrier(12)

    def call(i):
        barrier.wait()
        results.append(requests.get(api_gw.url + f"/opaque/read/c{i}", headers=bearer(token)).status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 12
    assert introspections(op) - before == 1, "single flight: one callout for concurrent requests"


def test_tokens_stay_out_of_the_log(api_gw, op):
    token = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, READ_WRITE)
    seen(requests.get(api_gw.url + "/opaque/read/log", headers=bearer(token)))
    jwt = stack.client_credentials_token(op, stack.API_RESOURCE, READ_WRITE)
    seen(requests.get(api_gw.url + "/api/read/log", headers=bearer(jwt)))
    log = api_gw.log()
    assert token not in log and jwt not in log and jwt.split(".")[2] not in log
    assert stack.CLIENT_SECRET not in log
    assert base64.b64encode(f"pa_wam:{stack.CLIENT_SECRET}".encode()).decode() not in log


# --- the OP down or slow --------------------------------------------------------------------


def test_op_down_answers_503_or_502_and_never_forwards(start_gateway, op):
    closed = stack.free_port()
    gw = start_gateway(api_config(op.issuer), op_port=closed)
    opaque = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, READ_WRITE)
    jwt = stack.client_credentials_token(op, stack.API_RESOURCE, READ_WRITE)
    for path, token in (("/opaque/read/1", opaque), ("/api/read/1", jwt)):  # introspection; JWKS
        r = requests.get(gw.url + path, headers=bearer(token))
        assert r.status_code in (502, 503), (path, r.status_code, r.text[:300])
        assert "headers" not in r.text, "never passed through to the backend"


def test_op_slow_answers_504(start_gateway, op):
    sink = stack.Sink()
    try:
        cfg = api_config(op.issuer)
        cfg["op"]["timeout_ms"] = 700
        gw = start_gateway(cfg, op_port=sink.port)
        opaque = stack.client_credentials_token(op, stack.OPAQUE_RESOURCE, READ_WRITE)
        started = time.time()
        r = requests.get(gw.url + "/opaque/read/1", headers=bearer(opaque))
        assert r.status_code == 504, r.text[:300]
        assert time.time() - started < 5
    finally:
        sink.close()


def test_api_configuration_errors_name_the_field(start_gateway, op):
    cfg = api_config(op.issuer)
    del cfg["policy"]["applications"][0]["api"]["audiences"]
    gw = start_gateway(cfg, wait=False)
    deadline = time.time() + 20
    while gw.alive() and time.time() < deadline:
        time.sleep(0.1)
    assert not gw.alive(), "Envoy must refuse a jwt application without audiences"
    assert "invalid configuration at `policy.applications[0].api" in gw.log()
