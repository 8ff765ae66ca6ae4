"""The OP of the tests, as the validated sessions of issue 10 need it (refresh tokens with
rotation, userinfo, back-channel logout, revocation, and the test hooks), checked without a
gateway: a dedicated oidc-provider whose back-channel logout URI is a listener here."""

import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import jwtutil
import stack


class Listener:
    """Stands in for the gateway: answers its callback, records back-channel logout POSTs."""

    def __init__(self):
        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                posts.append((self.path, self.headers.get("content-type"), body.decode()))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def rp():
    listener = Listener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def own_op(rp, logdir):
    p = stack.start_op(stack.free_port(), [rp.url], logdir=logdir, env={"OP_WEB_ACCESS_TOKEN_TTL": "5"}, name="op-sessions")
    yield p
    p.stop()


def test_web_clients_get_rotating_refresh_tokens(own_op, rp):
    _, tokens = stack.rp_login(own_op, rp.url, "alice")
    assert tokens["refresh_token"] and tokens["expires_in"] <= 5
    first = tokens["refresh_token"]
    status, again = stack.refresh_grant(own_op, first)
    assert status == 200, again
    assert again["refresh_token"] != first, "rotated"
    claims = jwtutil.claims_of(again["id_token"])
    assert claims["sub"] == "alice" and claims["groups"] == ["staff", "admins"] and claims["sid"]
    # The used one is refused, and (reuse detection) the whole grant with it.
    status, answer = stack.refresh_grant(own_op, first)
    assert (status, answer["error"]) == (400, "invalid_grant")
    status, answer = stack.refresh_grant(own_op, again["refresh_token"])
    assert (status, answer["error"]) == (400, "invalid_grant")


def test_userinfo_and_disabled_users(own_op, rp):
    _, tokens = stack.rp_login(own_op, rp.url, "dora")
    stack.op_set_groups(own_op, "dora", ["g1", "g2"])
    status, info = stack.userinfo(own_op, tokens["access_token"])
    assert status == 200
    assert info == {"sub": "dora", "email": "dora@example.com", "email_verified": True, "name": "Dora", "groups": ["g1", "g2"]}
    status, refreshed = stack.refresh_grant(own_op, tokens["refresh_token"])
    assert status == 200 and jwtutil.claims_of(refreshed["id_token"])["groups"] == ["g1", "g2"]
    stack.op_disable_user(own_op, "dora")
    try:
        assert stack.userinfo(own_op, refreshed["access_token"])[0] == 401
        status, answer = stack.refresh_grant(own_op, refreshed["refresh_token"])
        assert (status, answer["error"]) == (400, "invalid_grant")
    finally:
        stack.op_enable_user(own_op, "dora")
    # Enabled again: the refresh token was not consumed by the refused attempt.
    assert stack.refresh_grant(own_op, refreshed["refresh_token"])[0] == 200


def test_logout_at_the_op_sends_the_back_channel_notice_and_revokes(own_op, rp):
    browser, tokens = stack.rp_login(own_op, rp.url, "alice")
    view = stack.op_session(browser, own_op.issuer)
    sid = view["clients"]["pa_wam"]["sid"]
    assert view["accountId"] == "alice" and view["clients"]["pa_wam"]["grantActive"]
    assert jwtutil.claims_of(tokens["id_token"])["sid"] == sid
    rp.posts.clear()
    stack.op_logout(browser, own_op.issuer)
    assert len(rp.posts) == 1, rp.posts  # sent before the OP answered the confirm
    path, ctype, body = rp.posts[0]
    assert path == "/pa/oidc/backchannel" and ctype == "application/x-www-form-urlencoded"
    token = dict(urllib.parse.parse_qsl(body))["logout_token"]
    header, claims, _, _ = jwtutil.jwt_parts(token)
    assert jwtutil.verify(token, stack.op_jwks(own_op))
    assert header["typ"] == "logout+jwt" and header["alg"] == "RS256"
    assert claims["iss"] == own_op.issuer and claims["aud"] == "pa_wam"
    assert claims["sub"] == "alice" and claims["sid"] == sid and claims["jti"] and "nonce" not in claims
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}
    assert abs(claims["iat"] - time.time()) < 5
    assert stack.op_stats(own_op.port)["backchannel:success:pa_wam"] >= 1
    # The grant is gone: its refresh token too.
    assert stack.refresh_grant(own_op, tokens["refresh_token"])[0] == 400


def test_clients_revoke_their_own_refresh_tokens(own_op, rp):
    browser, tokens = stack.rp_login(own_op, rp.url, "bob")
    before = stack.op_stats(own_op.port).get("revoked:RefreshToken:pa_wam", 0)
    stack.revoke(own_op, tokens["refresh_token"], client_id="pa_wam")
    assert stack.op_stats(own_op.port)["revoked:RefreshToken:pa_wam"] == before + 1
    assert stack.refresh_grant(own_op, tokens["refresh_token"])[0] == 400
    assert stack.op_session(browser, own_op.issuer)["clients"]["pa_wam"]["grantActive"] is False
    assert stack.introspect(own_op, tokens["access_token"])["active"] is False


def test_sign_hook_signs_with_the_op_keys(own_op):
    now = int(time.time())
    claims = {"iss": own_op.issuer, "aud": "pa_wam", "iat": now, "jti": "j1", "sid": "s1", "events": {"http://schemas.openid.net/event/backchannel-logout": {}}}
    jwks = stack.op_jwks(own_op)
    rs = stack.op_sign(own_op, claims)
    header, got, _, _ = jwtutil.jwt_parts(rs)
    assert header == {"alg": "RS256", "typ": "logout+jwt", "kid": "op-rsa-1"} and got == claims
    assert jwtutil.verify(rs, jwks)
    es = stack.op_sign(own_op, claims, {"alg": "ES256", "typ": None})
    assert jwtutil.jwt_parts(es)[0] == {"alg": "ES256", "kid": "op-ec-1"} and jwtutil.verify(es, jwks)
    rs384 = stack.op_sign(own_op, claims, {"alg": "RS384"})
    assert jwtutil.jwt_parts(rs384)[0]["alg"] == "RS384"


def test_web_access_tokens_live_op_web_access_token_ttl(own_op, rp):
    _, tokens = stack.rp_login(own_op, rp.url, "erin")
    assert tokens["expires_in"] == 5
    assert stack.introspect(own_op, tokens["access_token"])["active"] is True
