"""Envoy's own `envoy.filters.http.oauth2` filter (1.40.0) as a reference for the benchmarks, on
its valid-cookie path: the filter configuration and cookies it accepts as a signed-in user's.

What the filter checks (source/extensions/filters/http/oauth2/filter.cc, OAuth2CookieValidator):
the OauthHMAC cookie must equal base64(HMAC-SHA256(hmac_secret, host "\\n" OauthExpires "\\n"
access token "\\n" id token "\\n" refresh token)), over the tokens as plain text, and OauthExpires
(epoch seconds) must be in the future. `host` is the request's Host (here 127.0.0.1:<port>, as
wrk and urllib send it) unless credentials.cookie_domain is set. By default (token encryption on)
the BearerToken, IdToken and RefreshToken cookies hold the tokens encrypted: base64url (no
padding) of a 16-byte IV followed by AES-256-CBC (PKCS#7) under SHA-256(hmac_secret); the filter
decrypts them on every request before checking the HMAC and rewrites the Cookie header. With
`encrypt=False` (the filter's disable_token_encryption) they are the tokens themselves.

On that path the filter then forwards the access token as `authorization: Bearer ...`
(forward_bearer_token) and the request goes on: the same work envoy-wam does for a valid
session (a cookie checked, an identity handed upstream), without envoy-wam's policy."""

import base64
import hashlib
import hmac
import http.client
import os
import subprocess
import time

HMAC_SECRET = "bench-oauth2-hmac-secret-0123456789abcdef"
TOKEN_SECRET = "bench-oauth2-client-secret"


def secrets():
    """The static SDS secrets the filter's credentials name."""

    def generic(name, value):
        return {"name": name, "generic_secret": {"secret": {"inline_string": value}}}

    return [generic("bench-oauth2-token", TOKEN_SECRET), generic("bench-oauth2-hmac", HMAC_SECRET)]


def http_filter(encrypt=True, idp_port=9):
    """The oauth2 filter. Its OP is never called on the valid-cookie path (a request without a
    valid cookie is redirected to the unreachable authorization endpoint instead)."""
    return {
        "name": "envoy.filters.http.oauth2",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.oauth2.v3.OAuth2",
            "config": {
                "token_endpoint": {"cluster": "oauth2_idp", "uri": f"http://127.0.0.1:{idp_port}/token", "timeout": "3s"},
                "authorization_endpoint": f"http://127.0.0.1:{idp_port}/authorize",
                "redirect_uri": "http://%REQ(:authority)%/callback",
                "redirect_path_matcher": {"path": {"exact": "/callback"}},
                "signout_path": {"path": {"exact": "/signout"}},
                "credentials": {"client_id": "bench", "token_secret": {"name": "bench-oauth2-token"}, "hmac_secret": {"name": "bench-oauth2-hmac"}},
                "auth_scopes": ["openid", "email"],
                "forward_bearer_token": True,
                "disable_token_encryption": not encrypt,
            },
        },
    }


def _encrypt(token):
    key = hashlib.sha256(HMAC_SECRET.encode()).digest()
    iv = os.urandom(16)
    ct = subprocess.run(["openssl", "enc", "-aes-256-cbc", "-K", key.hex(), "-iv", iv.hex()], input=token.encode(), capture_output=True, check=True).stdout
    return base64.urlsafe_b64encode(iv + ct).decode().rstrip("=")


def cookie(port, tokens, encrypt=True, lifetime_s=86400):
    """The Cookie header value of a signed-in user at 127.0.0.1:`port`: `tokens` is
    (access token, id token, refresh token), as an OP issued them."""
    access, id_token, refresh = tokens
    expires = str(int(time.time()) + lifetime_s)
    payload = "\n".join([f"127.0.0.1:{port}", expires, access, id_token, refresh])
    mac = base64.b64encode(hmac.new(HMAC_SECRET.encode(), payload.encode(), hashlib.sha256).digest()).decode()
    wrap = _encrypt if encrypt else (lambda t: t)
    return f"OauthHMAC={mac}; OauthExpires={expires}; BearerToken={wrap(access)}; IdToken={wrap(id_token)}; RefreshToken={wrap(refresh)}"


def status_without_redirect(port, path, headers):
    """(status, location, body) of one request, a redirect not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, r.getheader("location"), r.read()
    finally:
        conn.close()
