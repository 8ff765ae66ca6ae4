//! Bearer-token API access and access policies through the public, sans-IO API: token checks
//! with their callouts, the cache and single flight, and policy decisions with sessions.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, RequestFlow, VmState};
use envoy_wam::http::{Action, CalloutResult, Forward, Wake};
use serde_json::{json, Map, Value};

mod common;
use common::*;

const API: &str = "https://api.example.com";

fn config() -> Value {
    json!({
        "op": {
            "issuer": ISSUER,
            "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks",
            "introspection_endpoint": "https://op.example.com/token/introspection",
            "timeout_ms": 2000
        },
        "client": {"client_id": "pa_wam", "client_secret": "top-secret-value"},
        "session": {
            "signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([9u8; 32])}],
            "claims": ["groups"]
        },
        "identity_headers": [
            {"header": "x-wam-user", "claim": "sub"},
            {"header": "x-wam-client", "claim": "client_id"}
        ],
        "api": {"negative_ttl_s": 10},
        "authtoken": {"issuer": "envoy-wam", "keys": [{"kid": "gw", "alg": "ES256", "private_key_pem": GW_KEY}]},
        "site_authenticators": [
            {"name": "ids", "type": "jwt", "audience": "https://site", "claims": ["groups"],
             "inject": {"header": "x-site-jwt"}}
        ],
        "policy": {
            "unprotected_paths": ["/favicon.ico"],
            "applications": [
                {
                    "name": "orders", "hosts": ["api.example.com"], "context_root": "/api",
                    "type": "api",
                    "api": {"validation": "jwt", "audiences": [API]},
                    "resources": [
                        {"name": "read", "paths": ["/orders/*"], "methods": ["GET"], "audit": true,
                         "rules": [{"type": "scope", "all": ["orders:read"]}]},
                        {"name": "write", "paths": ["/orders/*"], "methods": ["POST"],
                         "rules": [{"type": "scope", "all": ["orders:write"]}]}
                    ]
                },
                {
                    "name": "opaque", "hosts": ["intro.example.com"], "type": "api",
                    "api": {"validation": "introspection", "forward_token": true},
                    "resources": [{"name": "root", "paths": ["/*"]}]
                },
                {
                    "name": "other-api", "hosts": ["other.example.com"], "type": "api",
                    "api": {"validation": "jwt", "audiences": ["https://other.example.com"]},
                    "resources": [{"name": "root", "paths": ["/*"]}]
                },
                {
                    "name": "sited", "hosts": ["sited.example.com"], "type": "web",
                    "site_authenticator": "ids",
                    "resources": [{"name": "pub", "paths": ["/pub/*"], "unprotected": true},
                                  {"name": "root", "paths": ["/*"]}]
                },
                {
                    "name": "portal", "hosts": ["gw.example.com"], "type": "web",
                    "resources": [
                        {"name": "admin", "paths": ["/admin/*"], "audit": true,
                         "rules": [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]},
                        {"name": "public", "paths": ["/public/*"], "unprotected": true},
                        {"name": "root", "paths": ["/*"]}
                    ]
                }
            ]
        }
    })
}

struct Gateway {
    settings: Settings,
    vm: VmState,
    rng: Rng,
}

impl Gateway {
    fn new() -> Self {
        let settings = Settings::from_json(config().to_string().as_bytes()).unwrap();
        Self {
            vm: VmState::new(&settings),
            settings,
            rng: Rng(7),
        }
    }

    fn request(&mut self, flow: &mut RequestFlow, h: &HeaderList, now: u64) -> Action {
        flow.on_request(&self.settings, &mut self.vm, h, now, &mut self.rng)
    }

    fn answer(&mut self, flow: &mut RequestFlow, h: &HeaderList, r: CalloutResult) -> Action {
        flow.on_callout(&self.settings, &mut self.vm, h, r, NOW, &mut self.rng)
    }

    fn wake(&mut self, flow: &mut RequestFlow, h: &HeaderList, why: Wake) -> Action {
        flow.on_wake(&self.settings, &mut self.vm, h, why, NOW, &mut self.rng)
    }

    fn session_cookie(&self, sub: &str, groups: &[&str]) -> String {
        common::session_cookie(&self.settings.default_web().session.keys, sub, groups)
    }
}

fn at(host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> HeaderList {
    let mut all = vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", host),
        (":path", path),
        (":source-address", "10.1.2.3:5555"),
    ];
    all.extend_from_slice(headers);
    HeaderList::new(all)
}

fn access_token(op: &Op, tweak: impl FnOnce(&mut Map<String, Value>)) -> String {
    let mut c = json!({
        "iss": ISSUER, "sub": "svc-1", "aud": API, "exp": NOW + 600, "iat": NOW,
        "scope": "orders:read", "client_id": "api_client"
    });
    tweak(c.as_object_mut().unwrap());
    op.sign(c)
}

fn header<'f>(f: &'f Forward, name: &str) -> Option<Option<&'f str>> {
    f.identity
        .iter()
        .chain(f.request_headers.iter())
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_deref())
}

fn keys(op: &Op) -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        body: op.jwks(),
    }
}

#[test]
fn jwt_bearer_token_fetches_keys_once_then_is_served_from_the_cache() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let token = access_token(&op, |_| {});
    let auth = format!("Bearer {token}");
    let h = at(
        "api.example.com",
        "GET",
        "/api/orders/7",
        &[("authorization", &auth), ("x-wam-user", "mallory")],
    );
    let mut flow = RequestFlow::new();
    let c = callout(gw.request(&mut flow, &h, NOW));
    assert_eq!((c.method, c.path.as_str()), ("GET", "/jwks"));
    let f = forward(gw.answer(&mut flow, &h, keys(&op)));
    assert_eq!(header(&f, "x-wam-user"), Some(Some("svc-1")));
    assert_eq!(header(&f, "x-wam-client"), Some(Some("api_client")));
    assert_eq!(
        header(&f, "authorization"),
        Some(None),
        "the token is not forwarded unless asked"
    );
    let log: Vec<String> = flow.take_log().into_iter().map(|l| l.message).collect();
    let audit = log
        .iter()
        .find(|l| l.starts_with("audit: "))
        .expect("audited");
    let record: Value = serde_json::from_str(&audit["audit: ".len()..]).unwrap();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["subject"], "svc-1");
    assert_eq!(record["application"], "orders");
    assert_eq!(record["client_ip"], "10.1.2.3");
    assert!(!audit.contains(&token[..20]), "no token in audit lines");

    // Same token again: no callout at all.
    let f = forward(gw.request(&mut RequestFlow::new(), &h, NOW + 1));
    assert_eq!(header(&f, "x-wam-user"), Some(Some("svc-1")));
}

#[test]
fn bearer_refusals_follow_rfc6750() {
    let op = Op::new();
    let mut gw = Gateway::new();
    // Load the keys with a first good token.
    let good = format!("Bearer {}", access_token(&op, |_| {}));
    let h = at(
        "api.example.com",
        "GET",
        "/api/orders/1",
        &[("authorization", &good)],
    );
    let mut flow = RequestFlow::new();
    callout(gw.request(&mut flow, &h, NOW));
    forward(gw.answer(&mut flow, &h, keys(&op)));

    let none = respond(gw.request(
        &mut RequestFlow::new(),
        &at("api.example.com", "GET", "/api/orders/1", &[]),
        NOW,
    ));
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header_value("www-authenticate"),
        Some("Bearer realm=\"envoy-wam\"")
    );
    assert_eq!(
        none.header_value("location"),
        None,
        "never a login redirect"
    );

    let cases: Vec<(String, u32, &str)> = vec![
        (
            access_token(&op, |c| drop(c.insert("exp".into(), json!(NOW - 120)))),
            401,
            "error=\"invalid_token\"",
        ),
        (
            access_token(&op, |c| {
                drop(c.insert("aud".into(), json!("https://other")))
            }),
            401,
            "error=\"invalid_token\"",
        ),
        (
            access_token(&op, |c| {
                drop(c.insert("scope".into(), json!("profile")));
            }),
            403,
            "error=\"insufficient_scope\", scope=\"orders:read\"",
        ),
    ];
    for (token, status, challenge) in cases {
        let auth = format!("Bearer {token}");
        let h = at(
            "api.example.com",
            "GET",
            "/api/orders/1",
            &[("authorization", &auth)],
        );
        let r = respond(gw.request(&mut RequestFlow::new(), &h, NOW));
        assert_eq!(r.status, status);
        let www = r.header_value("www-authenticate").unwrap();
        assert!(www.contains(challenge), "{www}");
    }
    let bad = respond(gw.request(
        &mut RequestFlow::new(),
        &at(
            "api.example.com",
            "GET",
            "/api/orders/1",
            &[("authorization", "Bearer a b c")],
        ),
        NOW,
    ));
    assert_eq!(bad.status, 400);
    assert!(bad
        .header_value("www-authenticate")
        .unwrap()
        .contains("invalid_request"));
}

fn introspection(active: bool, scope: &str) -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        body: json!({"active": active, "sub": "bob", "client_id": "api_client",
                     "scope": scope, "exp": NOW + 300})
        .to_string()
        .into_bytes(),
    }
}

#[test]
fn concurrent_requests_with_one_opaque_token_make_one_introspection_call() {
    let mut gw = Gateway::new();
    let h = at(
        "intro.example.com",
        "GET",
        "/x",
        &[("authorization", "Bearer opaque-token-1")],
    );
    let mut leader = RequestFlow::for_context(1);
    let mut second = RequestFlow::for_context(2);
    let mut third = RequestFlow::for_context(3);
    let c = callout(gw.request(&mut leader, &h, NOW));
    assert_eq!(c.path, "/token/introspection");
    assert!(String::from_utf8_lossy(&c.body).contains("token=opaque-token-1"));
    assert!(
        !c.headers
            .iter()
            .any(|(_, v)| v.contains("top-secret-value")),
        "the secret is encoded in the Basic credential"
    );
    assert_eq!(gw.request(&mut second, &h, NOW), Action::Wait);
    assert_eq!(gw.request(&mut third, &h, NOW), Action::Wait);
    let f = forward(gw.answer(&mut leader, &h, introspection(true, "a")));
    assert_eq!(header(&f, "x-wam-user"), Some(Some("bob")));
    assert_eq!(header(&f, "authorization"), None, "forward_token keeps it");
    let woken = std::mem::take(&mut gw.vm.woken);
    assert_eq!(woken, vec![(2, Wake::Ready), (3, Wake::Ready)]);
    for flow in [&mut second, &mut third] {
        let f = forward(gw.wake(flow, &h, Wake::Ready));
        assert_eq!(header(&f, "x-wam-user"), Some(Some("bob")));
    }
}

#[test]
fn introspection_failures_fail_closed_for_every_waiting_request() {
    let mut gw = Gateway::new();
    let h = at(
        "intro.example.com",
        "GET",
        "/x",
        &[("authorization", "Bearer opaque-2")],
    );
    let mut leader = RequestFlow::for_context(1);
    let mut waiter = RequestFlow::for_context(2);
    callout(gw.request(&mut leader, &h, NOW));
    assert_eq!(gw.request(&mut waiter, &h, NOW), Action::Wait);
    let r = respond(gw.answer(&mut leader, &h, CalloutResult::TimedOut));
    assert_eq!(r.status, 504);
    let woken = std::mem::take(&mut gw.vm.woken);
    assert_eq!(woken, vec![(2, Wake::Fail(504))]);
    assert_eq!(
        respond(gw.wake(&mut waiter, &h, Wake::Fail(504))).status,
        504
    );
    // Nothing was cached: the next request asks again.
    callout(gw.request(&mut RequestFlow::for_context(3), &h, NOW));

    // An inactive token is refused, and the refusal is remembered briefly.
    let h = at(
        "intro.example.com",
        "GET",
        "/x",
        &[("authorization", "Bearer revoked-1")],
    );
    let mut flow = RequestFlow::for_context(4);
    callout(gw.request(&mut flow, &h, NOW));
    let r = respond(gw.answer(&mut flow, &h, introspection(false, "")));
    assert_eq!(r.status, 401);
    let r = respond(gw.request(&mut RequestFlow::for_context(5), &h, NOW + 5));
    assert_eq!(r.status, 401, "negative cache, no callout");
    callout(gw.request(&mut RequestFlow::for_context(6), &h, NOW + 11));
}

#[test]
fn a_leader_that_goes_away_releases_its_waiters() {
    let mut gw = Gateway::new();
    let h = at(
        "intro.example.com",
        "GET",
        "/x",
        &[("authorization", "Bearer opaque-3")],
    );
    let mut leader = RequestFlow::for_context(1);
    let mut waiter = RequestFlow::for_context(2);
    callout(gw.request(&mut leader, &h, NOW));
    assert_eq!(gw.request(&mut waiter, &h, NOW), Action::Wait);
    leader.on_abandon(&mut gw.vm, NOW);
    let woken = std::mem::take(&mut gw.vm.woken);
    assert_eq!(woken, vec![(2, Wake::Ready)]);
    let c = callout(gw.wake(&mut waiter, &h, Wake::Ready));
    assert_eq!(c.path, "/token/introspection", "the waiter takes over");
}

#[test]
fn web_policy_groups_unprotected_and_unknown_applications() {
    let mut gw = Gateway::new();
    let alice = gw.session_cookie("alice", &["staff", "admins"]);
    let bob = gw.session_cookie("bob", &["staff"]);
    let page = |cookie: &str| {
        at(
            "gw.example.com",
            "GET",
            "/admin/users",
            &[("cookie", cookie), ("accept", "text/html")],
        )
    };
    let f = forward(gw.request(&mut RequestFlow::new(), &page(&alice), NOW));
    assert_eq!(header(&f, "x-wam-user"), Some(Some("alice")));

    let mut flow = RequestFlow::new();
    let r = respond(gw.request(&mut flow, &page(&bob), NOW));
    assert_eq!(r.status, 403);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("reference:"), "{body}");
    let log: Vec<String> = flow.take_log().into_iter().map(|l| l.message).collect();
    let audit = log.iter().find(|l| l.starts_with("audit: ")).unwrap();
    assert!(audit.contains("\"decision\":\"deny\""), "{audit}");
    assert!(!audit.contains("PA.wam"), "no cookie in audit lines");

    // No session: a browser is sent to log in.
    let r = respond(gw.request(
        &mut RequestFlow::new(),
        &at(
            "gw.example.com",
            "GET",
            "/admin/users",
            &[("accept", "text/html")],
        ),
        NOW,
    ));
    assert_eq!(r.status, 302);

    // Unprotected: no session needed, and spoofed identity headers are removed.
    let f = forward(gw.request(
        &mut RequestFlow::new(),
        &at(
            "gw.example.com",
            "GET",
            "/public/logo.png",
            &[("x-wam-user", "mallory")],
        ),
        NOW,
    ));
    assert_eq!(header(&f, "x-wam-user"), Some(None));
    let f = forward(gw.request(
        &mut RequestFlow::new(),
        &at("any.example.com", "GET", "/favicon.ico", &[]),
        NOW,
    ));
    assert_eq!(header(&f, "x-wam-user"), Some(None));

    // No application for this host: denied by default.
    let r = respond(gw.request(
        &mut RequestFlow::new(),
        &at(
            "unknown.example.com",
            "GET",
            "/",
            &[("cookie", &alice), ("accept", "text/html")],
        ),
        NOW,
    ));
    assert_eq!(r.status, 403);
}

#[test]
fn a_token_accepted_by_one_application_is_checked_again_by_another() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let auth = format!("Bearer {}", access_token(&op, |_| {}));
    let mut flow = RequestFlow::new();
    let orders = at(
        "api.example.com",
        "GET",
        "/api/orders/1",
        &[("authorization", &auth)],
    );
    callout(gw.request(&mut flow, &orders, NOW));
    forward(gw.answer(&mut flow, &orders, keys(&op)));
    // Same worker, same token, an application that accepts another audience: refused.
    let other = at(
        "other.example.com",
        "GET",
        "/x",
        &[("authorization", &auth)],
    );
    let r = respond(gw.request(&mut RequestFlow::new(), &other, NOW));
    assert_eq!(
        r.status, 401,
        "the cached result of `orders` does not hold for `other-api`"
    );

    // An opaque token the introspection application accepted is no JWT for `orders`.
    let intro = at(
        "intro.example.com",
        "GET",
        "/x",
        &[("authorization", "Bearer opaque-9")],
    );
    let mut flow = RequestFlow::for_context(5);
    callout(gw.request(&mut flow, &intro, NOW));
    forward(gw.answer(&mut flow, &intro, introspection(true, "orders:read")));
    let as_jwt = at(
        "api.example.com",
        "GET",
        "/api/orders/1",
        &[("authorization", "Bearer opaque-9")],
    );
    assert_eq!(
        respond(gw.request(&mut RequestFlow::new(), &as_jwt, NOW)).status,
        401
    );
}

#[test]
fn tokens_checked_while_the_keys_are_fetched_wait_for_them() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let first = format!(
        "Bearer {}",
        access_token(&op, |c| drop(c.insert("sub".into(), json!("one"))))
    );
    let second = format!(
        "Bearer {}",
        access_token(&op, |c| drop(c.insert("sub".into(), json!("two"))))
    );
    let h1 = at(
        "api.example.com",
        "GET",
        "/api/orders/1",
        &[("authorization", &first)],
    );
    let h2 = at(
        "api.example.com",
        "GET",
        "/api/orders/2",
        &[("authorization", &second)],
    );
    let mut leader = RequestFlow::for_context(1);
    let mut other = RequestFlow::for_context(2);
    assert_eq!(callout(gw.request(&mut leader, &h1, NOW)).path, "/jwks");
    assert_eq!(
        gw.request(&mut other, &h2, NOW),
        Action::Wait,
        "not refused for an unknown key"
    );
    let f = forward(gw.answer(&mut leader, &h1, keys(&op)));
    assert_eq!(header(&f, "x-wam-user"), Some(Some("one")));
    assert_eq!(std::mem::take(&mut gw.vm.woken), vec![(2, Wake::Ready)]);
    let f = forward(gw.wake(&mut other, &h2, Wake::Ready));
    assert_eq!(header(&f, "x-wam-user"), Some(Some("two")));
}

#[test]
fn a_mediated_site_never_gets_a_client_made_token_or_site_header() {
    let mut gw = Gateway::new();
    let h = at(
        "sited.example.com",
        "GET",
        "/pub/page",
        &[
            ("authorization", "Bearer client-token"),
            ("x-site-jwt", "forged"),
        ],
    );
    let f = forward(gw.request(&mut RequestFlow::new(), &h, NOW));
    assert_eq!(header(&f, "authorization"), Some(None));
    assert_eq!(header(&f, "x-site-jwt"), Some(None));

    // With a session, the site gets the gateway's JWT and still not the client's token.
    let alice = gw.session_cookie("alice", &["staff"]);
    let h = at(
        "sited.example.com",
        "GET",
        "/app",
        &[
            ("cookie", &alice),
            ("authorization", "Bearer client-token"),
            ("x-site-jwt", "forged"),
        ],
    );
    let f = forward(gw.request(&mut RequestFlow::new(), &h, NOW));
    assert_eq!(header(&f, "authorization"), Some(None));
    let jwt = header(&f, "x-site-jwt").flatten().unwrap();
    assert!(jwt.starts_with("eyJ") && jwt != "forged");
}

#[test]
fn a_mediated_token_is_never_shared_by_sessions_with_other_claims() {
    let mut gw = Gateway::new();
    let jwt_for = |gw: &mut Gateway, groups: &[&str]| {
        let cookie = gw.session_cookie("alice", groups);
        let h = at("sited.example.com", "GET", "/app", &[("cookie", &cookie)]);
        let f = forward(gw.request(&mut RequestFlow::new(), &h, NOW));
        header(&f, "x-site-jwt").flatten().unwrap().to_string()
    };
    let staff = jwt_for(&mut gw, &["staff"]);
    let admins = jwt_for(&mut gw, &["admins"]);
    // Same `sub`, other groups: another token, carrying that session's groups.
    assert_ne!(staff, admins);
    let payload = |jwt: &str| {
        let part = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    };
    assert_eq!(payload(&admins)["groups"], json!(["admins"]));
    // And the same session's token is served from the cache.
    assert_eq!(jwt_for(&mut gw, &["staff"]), staff);
}
