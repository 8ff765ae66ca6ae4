"""Benchmark: a request with a valid session cookie, on one Envoy worker, through envoy-wam
against no filter and a no-op wasm filter. A further listener runs integration/floor-filter,
which makes only the host calls envoy-wam needs for such a request and nothing else: it shows
what the proxy-wasm boundary itself costs. With --compare, one more listener runs another
build of envoy-wam (e.g. the previous release) with the same configuration. Two more run the
native build (target/libenvoy_wam.so, an Envoy dynamic module) with the same configurations,
and two run Envoy's own oauth2 filter on its valid-cookie path (integration/oauth2ref.py: the
cookies a signed-in user holds, tokens encrypted as by default and not), the reference the
issue names for a valid-session request; the bench checks first that they answer 200 from
the route, not a redirect to the OP, and redirect a tampered cookie. Issue 12: a
listener with `"metrics": false` shows what counting into Envoy's stats costs (`--metrics`:
only that comparison, with no filter and the no-op filter for reference, and a second
metrics-on listener whose difference from the first is the machine's noise; the same three for the
native build).

All variants are listeners of ONE Envoy (concurrency 1), measured in interleaved rounds; Envoy
runs on CPU 0 and wrk on CPU 1 (integration/benchlib.py). Routes answer with Envoy's
direct_response, so the numbers measure the filter chain, not a backend.

How to read it: per variant, the median req/s and Envoy's on-CPU time per request (µs, the
whole process; the worker thread alone in brackets) and the extra µs over no filter, which
is the filter's own cost per request and the steadier figure. Then comparisons, each a median
of per-round values: the req/s ratio and the CPU µs/request difference. Targets: envoy-wam /
no-op wasm >= 0.85 (the web-session issue); "envoy-wam / --compare build" near 1.0 and near
+0 µs means no regression. The last line is the report as JSON.

With --web-sessions (issue 11) it measures instead the valid-session path with two web
sessions (two OPs) against one, the same applications and policy in both: `/` and `/partner/`
are applications of the default web session in the one-session configuration, while in the
two-session ones `/partner/` has a web session of its own (its OP, cookie PA.partner and keys),
with identity headers of its own (x-partner-*, so each request also removes the other session's
three headers) or with the same header names as the default one. Target: no slower.

usage: .venv/bin/python integration/bench_session.py [--rounds N] [--seconds S] [--connections C] [--compare OTHER.wasm] [--metrics | --web-sessions]
"""

import argparse
import base64
import os
import re
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import jwtutil  # noqa: E402
import oauth2ref  # noqa: E402
import stack  # noqa: E402
from benchlib import Variant, copy  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    benchlib.add_arguments(ap)
    ap.add_argument("--web-sessions", action="store_true", help="two web sessions against one (issue 11) instead")
    ap.add_argument("--metrics", action="store_true", help="only envoy-wam with metrics on and off (and the references)")
    args = ap.parse_args()
    benchlib.check_compare(args)
    if args.web_sessions:
        return web_sessions(args)

    stack.build_wasm((stack.NOOP_DIR, stack.FLOOR_DIR, stack.FLOOR_NATIVE_DIR), native=True)
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-")
    # The filter as the demo runs it (three identity headers), and with one identity header:
    # each header is one more host call on every request, the dominant cost of the hot path.
    # No policy (the implicit one: every path needs a session); valid for older builds too.
    config = benchlib.session_config()
    config_1h = copy(config)
    config_1h["identity_headers"] = config["identity_headers"][:1]
    headers = benchlib.session_headers(benchlib.mint_cookie(config, logdir))
    # Issue 10: the encrypted cookie (the default, above) against the signed one, and the hot
    # path with a revocation list that is not empty.
    config_signed = copy(config)
    config_signed["session"]["cookie_type"] = "signed"
    headers_signed = benchlib.session_headers(benchlib.mint_cookie(config_signed, logdir))
    # Issue 12: the same filter with its metrics switched off (the default is on).
    config_nometrics = copy(config)
    config_nometrics["metrics"] = False

    variants = [
        Variant("none", "no filter", "none", headers=headers),
        Variant("noop", "no-op wasm filter", "noop", headers=headers),
        Variant("floor", "host calls only (floor-filter)", "noop", wasm=stack.FLOOR_WASM, headers=headers),
        Variant("wam", "envoy-wam, 3 identity headers", "wam", config, headers=headers),
        Variant("wam-1h", "envoy-wam, 1 identity header", "wam", config_1h, headers=headers),
        Variant("wam-signed", "envoy-wam, signed cookie", "wam", config_signed, headers=headers_signed),
        Variant("wam-revoked", "envoy-wam, 200 revocations listed", "wam", config, headers=headers),
        # Issue 13: the same core as an Envoy dynamic module (target/libenvoy_wam.so).
        Variant("native", "envoy-wam native, 3 identity headers", "wam-native", config, headers=headers),
        Variant("native-1h", "envoy-wam native, 1 identity header", "wam-native", config_1h, headers=headers),
        # The native references: a dynamic module doing nothing, and one making exactly the
        # dynamic-module calls of envoy-wam's valid-session request and nothing else.
        Variant("native-noop", "no-op dynamic module", "none", headers=headers, http_filters=[stack.native_filter("noop", so=stack.FLOOR_NATIVE_SO)]),
        Variant("native-floor", "host calls only (floor-native)", "none", headers=headers, http_filters=[stack.native_filter("floor", so=stack.FLOOR_NATIVE_SO)]),
        Variant("wam-nometrics", "envoy-wam, metrics off", "wam", config_nometrics, headers=headers),
    ]
    variants += oauth2_variants()
    if args.metrics:
        # The same filter twice more: how far two identical listeners differ on this machine.
        # And the native build the same way: its counts are handed to Envoy as each request
        # ends (src/host/native/stats.rs), not from a timer.
        variants = [v for v in variants if v.name in ("none", "noop", "wam", "wam-nometrics", "native")]
        variants.append(Variant("wam-again", "envoy-wam again (metrics on)", "wam", config, headers=headers))
        variants.append(Variant("native-nometrics", "envoy-wam native, metrics off", "wam-native", config_nometrics, headers=headers))
        variants.append(Variant("native-again", "envoy-wam native again (metrics on)", "wam-native", config, headers=headers))
    if args.compare:
        variants.append(Variant("wam-ref", "--compare build, 3 headers", "wam", config, wasm=os.path.abspath(args.compare), headers=headers_signed))

    def check(envoy):
        # 200 front-channel logouts of other OP sessions: the list is not empty, and a session
        # is looked up in it (once per change of the list, then the hot path skips it).
        revoked = next((v for v in variants if v.name == "wam-revoked"), None)
        iss = urllib.parse.quote(config["op"]["issuer"], safe="")
        for i in range(200 if revoked else 0):
            status, _ = benchlib.get(revoked, headers={}, path=f"/pa/oidc/frontchannel?iss={iss}&sid=other-{i}")
            assert status == 200, status
        benchlib.expect_200([revoked] if revoked else [])  # still a session with the list full
        check_oauth2(envoy, [v for v in variants if v.name.startswith("oauth2")])

    # The filter must really be on the session path: a 200 with identity, not a redirect.
    results = benchlib.run(variants, logdir, args, check)

    comparisons = [
        ("envoy-wam (3 headers) / no-op wasm", "wam", "noop", "target >= 0.85"),
        ("envoy-wam (1 header)  / no-op wasm", "wam-1h", "noop", ""),
        ("floor (host calls only) / no-op", "floor", "noop", "the proxy-wasm boundary"),
        ("envoy-wam (3 headers) / floor", "wam", "floor", "the filter's own logic"),
        ("envoy-wam (3 headers) / no filter", "wam", "none", ""),
        ("no-op wasm / no filter", "noop", "none", ""),
        ("encrypted cookie / signed cookie", "wam", "wam-signed", "issue 10 target: no slower"),
        ("200 revocations listed / none", "wam-revoked", "wam", "target: nothing measurable"),
        ("envoy-wam / --compare build", "wam", "wam-ref", "no regression: ~1.0, ~+0 µs"),
        ("native (3 headers) / no filter", "native", "none", "issue 13 target >= 0.85"),
        ("native (1 header) / no filter", "native-1h", "none", ""),
        ("native / wasm (3 headers)", "native", "wam", "issue 13: native vs wasm"),
        ("native / no-op wasm", "native", "noop", ""),
        ("native floor / no filter", "native-floor", "none", "the dynamic-module boundary"),
        ("native (3 headers) / native floor", "native", "native-floor", "the filter's own logic, natively"),
        ("no-op dynamic module / no filter", "native-noop", "none", ""),
        ("native / Envoy oauth2", "native", "oauth2", "issue 13: against Envoy's own filter"),
        ("wasm / Envoy oauth2", "wam", "oauth2", ""),
        ("Envoy oauth2 / no filter", "oauth2", "none", "tokens encrypted (its default)"),
        ("Envoy oauth2 / no filter, same cookies", "oauth2", "none-oauth2", "the filter's own cost"),
        ("Envoy oauth2 (plain tokens) / no filter", "oauth2-plain", "none", "disable_token_encryption"),
        ("native / Envoy oauth2 (plain tokens)", "native", "oauth2-plain", ""),
        ("metrics on / metrics off", "wam", "wam-nometrics", "issue 12 target: >= 0.98"),
        ("metrics on / on again", "wam", "wam-again", "the noise: the same listener twice"),
        ("native: metrics on / off", "native", "native-nometrics", "issue 13: the per-request flush, target >= 0.98"),
        ("native: metrics on / on again", "native", "native-again", "the noise, native"),
    ]
    benchlib.report(
        "valid-session request, one Envoy, 1 worker, one listener per variant",
        variants,
        results,
        comparisons,
        benchlib.settings(args),
        extra={"bench": "session"},
    )


def oauth2_variants():
    """Envoy's oauth2 filter with a signed-in user's cookies (tokens as an OP issues them: JWT
    access and ID tokens signed RS256, an opaque refresh token), one listener with the tokens
    encrypted (the filter's default) and one without."""
    key = jwtutil.Key("RS256", "bench-op")
    now = int(time.time())
    claims = {"iss": "https://op.example.test", "sub": "alice", "aud": "bench", "iat": now, "exp": now + 86400}
    access = key.sign({**claims, "aud": "https://api.example.test", "client_id": "bench", "scope": "openid email", "jti": "a1"}, typ="at+jwt")
    id_token = key.sign({**claims, "email": "alice@example.com", "groups": ["staff"], "auth_time": now, "nonce": "n-0S6_WzA2Mj", "sid": "s1"})
    tokens = (access, id_token, base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="))
    out = []
    # No filter with the oauth2 listeners' Cookie header (about 2.1 kB with the tokens
    # encrypted, against envoy-wam's one cookie): what parsing those headers costs Envoy alone.
    big = Variant("none-oauth2", "no filter, oauth2's cookies", "none")
    big.port = stack.free_port()
    big.headers = [f"cookie: theme=dark; {oauth2ref.cookie(big.port, tokens, True)}", "accept: text/html", "x-wam-user: spoofed"]
    out.append(big)
    for name, label, encrypt in (("oauth2", "Envoy oauth2, valid cookies", True), ("oauth2-plain", "Envoy oauth2, plain-token cookies", False)):
        v = Variant(name, label, "none", http_filters=[oauth2ref.http_filter(encrypt)], clusters={"oauth2_idp": 9}, secrets=oauth2ref.secrets())
        v.port = stack.free_port()  # the HMAC covers the Host, 127.0.0.1:<port>
        v.headers = [f"cookie: theme=dark; {oauth2ref.cookie(v.port, tokens, encrypt)}", "accept: text/html", "x-wam-user: spoofed"]
        out.append(v)
    return out


def check_oauth2(envoy, variants):
    """The oauth2 listeners answer from the route (200, its body) on the valid-cookie path, and
    redirect to the OP once the HMAC is wrong: the filter runs and takes the cookies as valid."""
    for v in variants:
        status, location, body = oauth2ref.status_without_redirect(v.port, v.path, v.header_dict())
        if status != 200 or body != b"hello\n":
            raise RuntimeError(f"{v.name}: Envoy's oauth2 answered {status} (location {location}), not 200 from the route")
        bad = v.header_dict()
        bad["cookie"] = bad["cookie"].replace("OauthHMAC=", "OauthHMAC=A", 1)
        status, location, _ = oauth2ref.status_without_redirect(v.port, v.path, bad)
        if status != 302 or "/authorize" not in (location or ""):
            raise RuntimeError(f"{v.name}: a tampered HMAC answered {status} (location {location}), not a redirect to the OP")
    with urllib.request.urlopen(f"http://127.0.0.1:{envoy.admin_port}/stats?filter=oauth_success", timeout=5) as r:
        text = r.read().decode()
    for v in variants:
        m = re.search(rf"^http\.bench-{re.escape(v.name)}\.(?:\S+\.)?oauth_success: (\d+)$", text, re.M)
        if not m or int(m.group(1)) < 1:
            raise RuntimeError(f"{v.name}: no oauth_success counted:\n{text}")


def web_sessions(args):
    """Two web sessions against one: the default session's path and the named one's."""
    stack.build_wasm((stack.NOOP_DIR,))
    logdir = tempfile.mkdtemp(prefix="envoy-wam-bench-")
    every = [{"name": "all", "paths": ["/*"]}]
    one = benchlib.session_config()
    one["policy"] = {
        "applications": [
            {"name": "corp", "hosts": ["*"], "context_root": "/", "type": "web", "resources": every},
            {"name": "partner", "hosts": ["*"], "context_root": "/partner", "type": "web", "resources": every},
        ]
    }
    partner = stack.web_session("partner", "http://127.0.0.1:10", "partner_op", **{"session.activity_refresh_s": 3600, "session.idle_timeout_s": 7200})
    two = copy(one)
    two["web_sessions"] = [partner]
    two["policy"]["applications"][1]["web_session"] = "partner"
    # The partner session with the default one's identity header names: no foreign headers.
    same = copy(two)
    same["web_sessions"][0]["identity_headers"] = copy(one["identity_headers"])

    corp = benchlib.session_headers(benchlib.mint_cookie(one, logdir))
    # One configuration's default keys are another's: mint_cookie for `two` with the same
    # default session gives a cookie each of them accepts.
    assert two["session"] == one["session"] and same["session"] == one["session"]
    partner_cookie = benchlib.session_headers(benchlib.mint_cookie(two, logdir, "partner"), "PA.partner")
    same_cookie = benchlib.session_headers(benchlib.mint_cookie(same, logdir, "partner"), "PA.partner")
    clusters = {"partner_op": 10}
    variants = [
        Variant("noop", "no-op wasm filter", "noop", headers=corp),
        Variant("ws1", "1 web session, /", "wam", one, headers=corp),
        Variant("ws2", "2 web sessions, /", "wam", two, headers=corp, clusters=clusters),
        Variant("ws2-same", "2 web sessions (same headers), /", "wam", same, headers=corp, clusters=clusters),
        Variant("ws1-p", "1 web session, /partner/", "wam", one, headers=corp, path="/partner/bench"),
        Variant("ws2-p", "2 web sessions, /partner/", "wam", two, headers=partner_cookie, path="/partner/bench", clusters=clusters),
        Variant("ws2-same-p", "2 web sessions (same headers), /partner/", "wam", same, headers=same_cookie, path="/partner/bench", clusters=clusters),
    ]
    if args.compare:
        ref = os.path.abspath(args.compare)
        variants += [
            Variant("ws1-ref", "--compare build, 1 web session, /", "wam", one, wasm=ref, headers=corp),
            Variant("ws2-ref", "--compare build, 2 web sessions, /", "wam", two, wasm=ref, headers=corp, clusters=clusters),
        ]
    results = benchlib.run(variants, logdir, args)
    comparisons = [
        ("1 web session: this build / --compare build", "ws1", "ws1-ref", ""),
        ("2 web sessions: this build / --compare build", "ws2", "ws2-ref", ""),
        ("2 web sessions / 1, --compare build", "ws2-ref", "ws1-ref", ""),
        ("2 web sessions / 1, default session at /", "ws2", "ws1", "target: no slower (>= ~1.0)"),
        ("2 (same headers) / 1, default session at /", "ws2-same", "ws1", "target: no slower"),
        ("2 web sessions / 1, partner session at /partner/", "ws2-p", "ws1-p", "target: no slower"),
        ("2 (same headers) / 1, partner session at /partner/", "ws2-same-p", "ws1-p", "target: no slower"),
        ("1 web session / no-op wasm", "ws1", "noop", ""),
    ]
    benchlib.report(
        "valid-session request, two web sessions against one, one Envoy, 1 worker",
        variants,
        results,
        comparisons,
        benchlib.settings(args),
        baseline="noop",
        extra={"bench": "session-web-sessions"},
    )


if __name__ == "__main__":
    main()
