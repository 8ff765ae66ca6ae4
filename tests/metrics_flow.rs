//! What the flow counts (`envoy_wam::metrics`): each request once, however often it is rerun
//! after a callout, by its outcome.

use envoy_wam::flow::RequestFlow;
use envoy_wam::http::{Action, CalloutResult};
use envoy_wam::metrics::{Counter, Upstream};
use envoy_wam::revocation::Revoked;
use envoy_wam::session::Session;
use serde_json::{json, Map, Value};

mod common;
use common::*;

const API: &str = "https://api.example.com";
const BROWSER: (&str, &str) = ("accept", "text/html");

fn config() -> Value {
    merge(
        base_config(),
        json!({
            "session": {"claims": ["groups"], "idle_timeout_s": 600},
            "identity_headers": [{"header": "x-wam-user", "claim": "sub"}],
            "authtoken": {"issuer": "envoy-wam", "keys": [{"kid": "gw", "alg": "ES256", "private_key_pem": GW_KEY}]},
            "site_authenticators": [
                {"name": "ids", "type": "jwt", "audience": "https://site", "claims": ["groups"],
                 "inject": {"header": "x-site-jwt"}}
            ],
            "policy": {"applications": [
                {"name": "orders", "hosts": ["api.example.com"], "type": "api",
                 "api": {"validation": "jwt", "audiences": [API]},
                 "resources": [{"name": "r", "paths": ["/*"], "rules": [{"type": "scope", "all": ["orders:read"]}]}]},
                {"name": "portal", "hosts": ["gw.example.com"], "type": "web",
                 "resources": [
                    {"name": "admin", "paths": ["/admin/*"],
                     "rules": [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]},
                    {"name": "root", "paths": ["/*"]}]},
                {"name": "sited", "hosts": ["sited.example.com"], "type": "web",
                 "site_authenticator": "ids", "resources": [{"name": "root", "paths": ["/*"]}]}
            ]}
        }),
    )
}

fn cookie_of(gw: &Gateway, sub: &str, groups: &[&str]) -> String {
    session_cookie(&gw.settings.web(0).session.keys, sub, groups)
}

/// A cookie for a session with the given times.
fn timed_cookie(gw: &Gateway, expires_at: u64, last_activity: u64) -> String {
    let s = Session {
        sid: "sid-timed".into(),
        sub: "carol".into(),
        auth_time: NOW - 7200,
        expires_at,
        last_activity,
        claims: Map::new(),
        created_at: NOW - 7200,
        op: Default::default(),
    };
    format!(
        "PA.wam={}",
        s.encode(&gw.settings.web(0).session.keys, &mut Rng(3))
            .unwrap()
    )
}

fn token(op: &Op, scope: &str, exp: u64) -> String {
    op.sign(
        json!({"iss": ISSUER, "sub": "svc", "aud": API, "exp": exp, "iat": NOW, "scope": scope}),
    )
}

#[test]
fn session_checks_are_counted_by_what_the_cookie_was() {
    let mut gw = Gateway::with(&config());
    let page = |c: &str| at("gw.example.com", "GET", "/home", &[BROWSER, ("cookie", c)]);
    let valid = cookie_of(&gw, "alice", &["staff"]);
    forward(gw.request(&page(&valid)));
    forward(gw.request(&page(&valid)));
    let tampered = format!("{}x", valid);
    respond(gw.request(&page(&tampered)));
    respond(gw.request(&page(&timed_cookie(&gw, NOW - 1, NOW - 10))));
    respond(gw.request(&page(&timed_cookie(&gw, NOW + 3600, NOW - 601))));
    respond(gw.request(&at("gw.example.com", "GET", "/home", &[BROWSER])));
    gw.vm
        .revoked
        .revoke(Revoked::Session("sid-bob".into()), NOW, NOW + 3600, NOW);
    // (A logout a moment ago: the refusal is held until the ticks release it.)
    respond(gw.request_ticked(&page(&cookie_of(&gw, "bob", &[]))));
    let m = &gw.vm.metrics;
    assert_eq!(m.get(Counter::SessionValid), 2);
    assert_eq!(m.get(Counter::SessionInvalid), 1);
    assert_eq!(m.get(Counter::SessionExpired), 1);
    assert_eq!(m.get(Counter::SessionIdle), 1);
    assert_eq!(m.get(Counter::SessionNone), 1);
    assert_eq!(m.get(Counter::SessionRevoked), 1);
    // Each request that needed a login was a decision `login` and started one.
    assert_eq!(m.decisions("portal", "allow"), 2);
    assert_eq!(m.decisions("portal", "login"), 5);
    assert_eq!(m.get(Counter::LoginStarted), 5);
}

#[test]
fn a_signed_cookie_tells_expired_from_forged() {
    let mut c = config();
    c["session"]["cookie_type"] = json!("signed");
    let mut gw = Gateway::with(&c);
    let page = |c: &str| at("gw.example.com", "GET", "/", &[BROWSER, ("cookie", c)]);
    respond(gw.request(&page(&timed_cookie(&gw, NOW - 1, NOW - 10))));
    let valid = cookie_of(&gw, "alice", &[]);
    let forged = valid.replace("PA.wam=", "PA.wam=x");
    respond(gw.request(&page(&forged)));
    forward(gw.request(&page(&valid)));
    assert_eq!(gw.vm.metrics.get(Counter::SessionExpired), 1);
    assert_eq!(gw.vm.metrics.get(Counter::SessionInvalid), 1);
    assert_eq!(gw.vm.metrics.get(Counter::SessionValid), 1);
}

#[test]
fn decisions_per_application_and_mediation_once_per_request() {
    let mut gw = Gateway::with(&config());
    let staff = cookie_of(&gw, "alice", &["staff"]);
    let admin = cookie_of(&gw, "root", &["admins"]);
    let admin_page = |c: &str| {
        at(
            "gw.example.com",
            "GET",
            "/admin/x",
            &[BROWSER, ("cookie", c)],
        )
    };
    assert_eq!(respond(gw.request(&admin_page(&staff))).status, 403);
    forward(gw.request(&admin_page(&admin)));
    let site = at("sited.example.com", "GET", "/", &[("cookie", &staff)]);
    forward(gw.request(&site));
    forward(gw.request(&site));
    let m = &gw.vm.metrics;
    assert_eq!(m.decisions("portal", "deny"), 1);
    assert_eq!(m.decisions("portal", "allow"), 1);
    assert_eq!(m.decisions("sited", "allow"), 2);
    assert_eq!(m.decisions("orders", "allow"), 0);
    assert_eq!(m.get(Counter::MediationMiss), 1);
    assert_eq!(m.get(Counter::MediationSigned), 1);
    assert_eq!(m.get(Counter::MediationHit), 1);
    assert_eq!(
        gw.vm.cache_sizes(),
        [2, 0, 1],
        "two cookies, one site token"
    );
}

#[test]
fn bearer_tokens_cache_verdicts_and_keys_fetched_once() {
    let op = Op::new();
    let mut gw = Gateway::with(&config());
    let call = |t: &str| {
        let auth = format!("Bearer {t}");
        at("api.example.com", "GET", "/x", &[("authorization", &auth)])
    };
    let good = call(&token(&op, "orders:read", NOW + 600));
    // First sight: a miss, the keys are fetched (one JWKS fetch), then the verdict.
    let mut flow = RequestFlow::new();
    let c = callout(gw.request_in(&mut flow, &good));
    assert_eq!(c.path, "/jwks");
    assert_eq!(flow.awaiting(), Some(Upstream::Jwks));
    let keys = CalloutResult::Response {
        status: 200,
        body: op.jwks(),
    };
    forward(gw.answer(&mut flow, &good, keys));
    forward(gw.request(&good));
    let expired = call(&token(&op, "orders:read", NOW - 600));
    assert_eq!(respond(gw.request(&expired)).status, 401);
    assert_eq!(respond(gw.request(&expired)).status, 401);
    assert_eq!(respond(gw.request(&call("not a token!"))).status, 400);
    let no_scope = call(&token(&op, "other", NOW + 600));
    assert_eq!(respond(gw.request(&no_scope)).status, 403);
    respond(gw.request(&at("api.example.com", "GET", "/x", &[])));
    let m = &gw.vm.metrics;
    assert_eq!(m.get(Counter::JwksOk), 1);
    // good (miss, then hit), expired (miss, hit), the malformed token and no_scope (misses);
    // the request without a token is not looked up.
    assert_eq!(m.get(Counter::BearerMiss), 4);
    assert_eq!(m.get(Counter::BearerHit), 2);
    assert_eq!(m.get(Counter::BearerValid), 3, "good twice, no_scope once");
    assert_eq!(m.get(Counter::BearerExpired), 2);
    assert_eq!(m.get(Counter::BearerMalformed), 1);
    assert_eq!(m.get(Counter::BearerMissing), 1);
    assert_eq!(m.decisions("orders", "allow"), 2);
    assert_eq!(m.decisions("orders", "deny"), 1);
    assert_eq!(m.decisions("orders", "login"), 1);
}

#[test]
fn logins_started_completed_and_failed_by_reason() {
    let op = Op::new();
    let mut gw = Gateway::with(&config());
    let start = respond(gw.request(&at("gw.example.com", "GET", "/home", &[BROWSER])));
    let location = start.header_value("location").unwrap();
    let q: Map<String, Value> = url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
        .collect();
    let txn = start.header_value("set-cookie").unwrap();
    let txn = txn.split(';').next().unwrap().to_string();
    let cb = |state: &str| {
        at(
            "gw.example.com",
            "GET",
            &format!("/pa/oidc/cb?code=c&state={state}"),
            &[BROWSER, ("cookie", &txn)],
        )
    };
    // A callback whose state is no login of this browser.
    assert_eq!(respond(gw.request(&cb("nope"))).status, 403);
    // The token endpoint times out.
    let state = q["state"].as_str().unwrap();
    let mut flow = RequestFlow::new();
    callout(gw.request_in(&mut flow, &cb(state)));
    assert_eq!(flow.awaiting(), Some(Upstream::OpToken));
    assert_eq!(
        respond(gw.answer(&mut flow, &cb(state), CalloutResult::TimedOut)).status,
        504
    );
    // The same login again (a retry within the transaction's life), answered this time.
    let mut flow = RequestFlow::new();
    callout(gw.request_in(&mut flow, &cb(state)));
    let id_token = op.sign(json!({
        "iss": ISSUER, "sub": "alice", "aud": "pa_wam", "exp": NOW + 300, "iat": NOW,
        "nonce": q["nonce"], "groups": ["staff"]
    }));
    let answer = CalloutResult::Response {
        status: 200,
        body: json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})
            .to_string()
            .into_bytes(),
    };
    callout(gw.answer(&mut flow, &cb(state), answer));
    let keys = CalloutResult::Response {
        status: 200,
        body: op.jwks(),
    };
    assert_eq!(respond(gw.answer(&mut flow, &cb(state), keys)).status, 302);
    assert_eq!(flow.awaiting(), None);
    let m = &gw.vm.metrics;
    assert_eq!(m.get(Counter::LoginStarted), 1);
    assert_eq!(m.get(Counter::LoginFailedState), 1);
    assert_eq!(m.get(Counter::LoginFailedTimeout), 1);
    assert_eq!(m.get(Counter::LoginCompleted), 1);
    assert_eq!(m.get(Counter::JwksOk), 1);
}

#[test]
fn nothing_is_counted_with_metrics_off() {
    let mut c = config();
    c["metrics"] = json!(false);
    let mut gw = Gateway::with(&c);
    let valid = cookie_of(&gw, "alice", &["staff"]);
    forward(gw.request(&at("gw.example.com", "GET", "/", &[("cookie", &valid)])));
    respond(gw.request(&at("gw.example.com", "GET", "/", &[BROWSER])));
    assert!(!gw.vm.metrics.enabled());
    assert_eq!(gw.vm.metrics.get(Counter::SessionValid), 0);
    assert_eq!(gw.vm.metrics.decisions("portal", "allow"), 0);
    let mut any = false;
    gw.vm.metrics.take_counts(|_, _| any = true);
    assert!(!any);
    assert!(matches!(
        gw.request(&at("gw.example.com", "GET", "/", &[("cookie", &valid)])),
        Action::Forward(_)
    ));
}
