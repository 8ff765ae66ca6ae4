//! What operators depend on: key rotation at the OP, refusals that are not cached, and log
//! lines that say what happened. Driven natively through the public, sans-IO API.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, Level, LogLine, RequestFlow, VmState};
use envoy_wam::http::{Action, CalloutResult};
use envoy_wam::session::Session;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

mod common;
use common::*;

const API: &str = "https://api.example.com";

fn config(api: Value) -> Value {
    json!({
        "op": {
            "issuer": ISSUER,
            "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks",
            "introspection_endpoint": "https://op.example.com/token/introspection",
            "timeout_ms": 2000,
            "jwks_min_refetch_interval_s": 30
        },
        "client": {"client_id": "pa_wam", "client_secret": "top-secret-value",
                   "redirect_uri": "https://gw.example.com/pa/oidc/cb"},
        "session": {
            "signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([9u8; 32])}]
        },
        "identity_headers": [{"header": "x-wam-user", "claim": "sub"}],
        "api": api,
        "authtoken": {"issuer": "https://gw.example.com", "keys": [{"kid": "gw", "alg": "ES256",
                      "private_key_pem": ES256KeyPair::generate().to_pem().unwrap()}]},
        "site_authenticators": [{
            "name": "orders-sts", "type": "token_exchange",
            "sts": {"cluster": "sts", "token_endpoint": "https://sts.example.com/token",
                    "client_id": "pa_sts", "client_secret": "sts-secret"},
            "audience": "https://orders.internal", "inject": {"header": "authorization"}
        }],
        "policy": {
            "applications": [
                {
                    "name": "orders", "hosts": ["api.example.com"], "type": "api",
                    "api": {"validation": "jwt", "audiences": [API]},
                    "resources": [{"name": "root", "paths": ["/*"]}]
                },
                {
                    "name": "sited", "hosts": ["sited.example.com"], "type": "web",
                    "site_authenticator": "orders-sts",
                    "resources": [{"name": "root", "paths": ["/*"]}]
                },
                {
                    "name": "portal", "hosts": ["gw.example.com"], "type": "web",
                    "resources": [{"name": "root", "paths": ["/*"]}]
                },
                {
                    "name": "opaque", "hosts": ["intro.example.com"], "type": "api",
                    "api": {"validation": "introspection"},
                    "resources": [{"name": "root", "paths": ["/*"]}]
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
    fn new(api: Value) -> Self {
        let settings = Settings::from_json(config(api).to_string().as_bytes()).unwrap();
        Self {
            vm: VmState::new(&settings),
            settings,
            rng: Rng(11),
        }
    }

    fn request(&mut self, flow: &mut RequestFlow, h: &HeaderList, now: u64) -> Action {
        flow.on_request(&self.settings, &mut self.vm, h, now, &mut self.rng)
    }

    fn answer(
        &mut self,
        flow: &mut RequestFlow,
        h: &HeaderList,
        r: CalloutResult,
        now: u64,
    ) -> Action {
        flow.on_callout(&self.settings, &mut self.vm, h, r, now, &mut self.rng)
    }
}

/// An OP key with its own `kid`.
fn key(kid: &str) -> ES256KeyPair {
    ES256KeyPair::generate().with_key_id(kid)
}

/// The JWKS answer publishing `keys`.
fn jwks(keys: &[&ES256KeyPair]) -> CalloutResult {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| {
            let point = k.public_key().public_key().to_bytes_uncompressed();
            json!({
                "kty": "EC", "crv": "P-256", "kid": k.key_id().clone().unwrap(), "use": "sig",
                "alg": "ES256", "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65])
            })
        })
        .collect();
    CalloutResult::Response {
        status: 200,
        body: json!({ "keys": keys }).to_string().into_bytes(),
    }
}

fn access_token(key: &ES256KeyPair, now: u64) -> String {
    let claims = json!({
        "iss": ISSUER, "sub": "svc-1", "aud": API, "exp": now + 600, "iat": now,
    });
    let claims: JWTClaims<Map<String, Value>> = serde_json::from_value(claims).unwrap();
    key.sign(claims).unwrap()
}

fn api_call(host: &str, token: &str) -> HeaderList {
    let auth = format!("Bearer {token}");
    HeaderList::new(vec![
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", host),
        (":path", "/orders/1"),
        ("authorization", &auth),
    ])
}

fn messages(log: Vec<LogLine>) -> Vec<String> {
    log.into_iter().map(|l| l.message).collect()
}

#[test]
fn a_key_rotated_right_after_the_routine_fetch_is_accepted_at_once() {
    let mut gw = Gateway::new(json!({}));
    let (old, new, bogus) = (key("k-old"), key("k-new"), key("k-bogus"));

    // Routine first fetch at t.
    let h = api_call("api.example.com", &access_token(&old, NOW));
    let mut flow = RequestFlow::new();
    let c = callout(gw.request(&mut flow, &h, NOW));
    assert_eq!(c.path, "/jwks");
    forward(gw.answer(&mut flow, &h, jwks(&[&old]), NOW));

    // The OP rotates; a token with the new kid at t+1 refetches and is accepted.
    let h = api_call("api.example.com", &access_token(&new, NOW + 1));
    let mut flow = RequestFlow::new();
    let c = callout(gw.request(&mut flow, &h, NOW + 1));
    assert_eq!(
        c.path, "/jwks",
        "the routine fetch must not throttle this one"
    );
    let f = forward(gw.answer(&mut flow, &h, jwks(&[&old, &new]), NOW + 1));
    assert!(f
        .identity
        .iter()
        .any(|(n, v)| n == "x-wam-user" && v.as_deref() == Some("svc-1")));

    // A second unknown kid right after: throttled, and the log says so.
    let h = api_call("api.example.com", &access_token(&bogus, NOW + 2));
    let mut flow = RequestFlow::new();
    let r = respond(gw.request(&mut flow, &h, NOW + 2));
    assert_eq!(r.status, 401);
    let log = messages(flow.take_log());
    assert!(
        log.contains(
            &"bearer token refused: unknown signing key (kid \"k-bogus\": refetch throttled, last fetch 1 s ago)"
                .to_string()
        ),
        "{log:?}"
    );

    // Once the throttle has run out, an unknown kid is fetched for (once), then refused.
    let mut flow = RequestFlow::new();
    let c = callout(gw.request(&mut flow, &h, NOW + 31));
    assert_eq!(c.path, "/jwks");
    let r = respond(gw.answer(&mut flow, &h, jwks(&[&old, &new]), NOW + 31));
    assert_eq!(r.status, 401);
    let log = messages(flow.take_log());
    assert!(
        log.iter()
            .any(|l| l.ends_with("(kid \"k-bogus\": not in the JWKS just fetched)")),
        "{log:?}"
    );
}

#[test]
fn a_token_without_kid_among_several_keys_says_so() {
    let mut gw = Gateway::new(json!({}));
    let (a, b) = (key("a"), key("b"));
    let h = api_call("api.example.com", &access_token(&a, NOW));
    let mut flow = RequestFlow::new();
    callout(gw.request(&mut flow, &h, NOW));
    forward(gw.answer(&mut flow, &h, jwks(&[&a, &b]), NOW));

    let anonymous = ES256KeyPair::from_bytes(&a.to_bytes()).unwrap();
    let h = api_call("api.example.com", &access_token(&anonymous, NOW + 1));
    let mut flow = RequestFlow::new();
    assert_eq!(respond(gw.request(&mut flow, &h, NOW + 1)).status, 401);
    let log = messages(flow.take_log());
    assert!(
        log.contains(
            &"bearer token refused: unknown signing key (no kid: several keys and no kid)"
                .to_string()
        ),
        "{log:?}"
    );
}

fn inactive() -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        body: br#"{"active": false}"#.to_vec(),
    }
}

/// Runs one request to its end, answering every callout with `answer`; returns the final
/// action and the number of callouts it made.
fn drive(
    gw: &mut Gateway,
    flow: &mut RequestFlow,
    h: &HeaderList,
    first: Action,
    answer: impl Fn() -> CalloutResult,
) -> (Action, usize) {
    let (mut action, mut callouts) = (first, 0);
    while let Action::Callout(_) = action {
        callouts += 1;
        assert!(callouts < 10, "runaway callouts");
        action = gw.answer(flow, h, answer(), NOW);
    }
    (action, callouts)
}

#[test]
fn zero_negative_ttl_refuses_with_one_introspection_and_caches_nothing() {
    let mut gw = Gateway::new(json!({"negative_ttl_s": 0}));
    let h = api_call("intro.example.com", "revoked-token");
    for ctx in 1..=2 {
        let mut flow = RequestFlow::for_context(ctx);
        let first = gw.request(&mut flow, &h, NOW);
        let (action, callouts) = drive(&mut gw, &mut flow, &h, first, inactive);
        assert_eq!(
            callouts, 1,
            "request {ctx}: one introspection, then its answer"
        );
        let r = respond(action);
        assert_eq!(r.status, 401);
        assert!(r
            .header_value("www-authenticate")
            .is_some_and(|v| v.contains("invalid_token")));
    }

    // A request waiting on the check is woken, checks the token itself, and gets its 401 too.
    let mut leader = RequestFlow::for_context(3);
    let mut waiter = RequestFlow::for_context(4);
    callout(gw.request(&mut leader, &h, NOW));
    assert_eq!(gw.request(&mut waiter, &h, NOW), Action::Wait);
    assert_eq!(
        respond(gw.answer(&mut leader, &h, inactive(), NOW)).status,
        401
    );
    let woken = std::mem::take(&mut gw.vm.woken);
    assert_eq!(woken, vec![(4, envoy_wam::http::Wake::Ready)]);
    let first = waiter.on_wake(
        &gw.settings,
        &mut gw.vm,
        &h,
        envoy_wam::http::Wake::Ready,
        NOW,
        &mut gw.rng,
    );
    let (action, callouts) = drive(&mut gw, &mut waiter, &h, first, inactive);
    assert_eq!((respond(action).status, callouts), (401, 1));
}

fn http(status: u16) -> CalloutResult {
    CalloutResult::Response {
        status,
        body: b"<html>oops</html>".to_vec(),
    }
}

/// Starts a login and comes back to the callback; returns the flow waiting for the token
/// endpoint, its request, and the login's nonce.
fn at_callback(gw: &mut Gateway, now: u64) -> (RequestFlow, HeaderList, String) {
    let browser = ("accept", "text/html");
    let r = respond(gw.request(&mut RequestFlow::new(), &head("GET", "/x", &[browser]), now));
    assert_eq!(r.status, 302);
    let location = url::Url::parse(r.header_value("location").unwrap()).unwrap();
    let param = |name: &str| {
        let found = location.query_pairs().find(|(k, _)| k == name);
        found.unwrap().1.into_owned()
    };
    let txn = r
        .header_value("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let cb = format!("/pa/oidc/cb?code=c&state={}", param("state"));
    let h = head("GET", &cb, &[browser, ("cookie", txn)]);
    let mut flow = RequestFlow::new();
    assert_eq!(callout(gw.request(&mut flow, &h, now)).path, "/token");
    (flow, h, param("nonce"))
}

fn id_token(key: &ES256KeyPair, nonce: &str, now: u64) -> CalloutResult {
    let claims = json!({"iss": ISSUER, "sub": "alice", "aud": "pa_wam", "exp": now + 300,
                        "iat": now, "nonce": nonce});
    let claims: JWTClaims<Map<String, Value>> = serde_json::from_value(claims).unwrap();
    let id_token = key.sign(claims).unwrap();
    CalloutResult::Response {
        status: 200,
        body: json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})
            .to_string()
            .into_bytes(),
    }
}

#[test]
fn a_login_signed_with_a_key_rotated_after_the_routine_fetch_succeeds() {
    let mut gw = Gateway::new(json!({}));
    let (old, new, bogus) = (key("k-old"), key("k-new"), key("k-bogus"));
    let (mut flow, h, nonce) = at_callback(&mut gw, NOW);
    let c = callout(gw.answer(&mut flow, &h, id_token(&old, &nonce, NOW), NOW));
    assert_eq!(c.path, "/jwks");
    assert_eq!(
        respond(gw.answer(&mut flow, &h, jwks(&[&old]), NOW)).status,
        302
    );

    let (mut flow, h, nonce) = at_callback(&mut gw, NOW + 1);
    let c = callout(gw.answer(&mut flow, &h, id_token(&new, &nonce, NOW + 1), NOW + 1));
    assert_eq!(
        c.path, "/jwks",
        "the routine fetch must not throttle this one"
    );
    let r = respond(gw.answer(&mut flow, &h, jwks(&[&old, &new]), NOW + 1));
    assert_eq!(r.status, 302, "signed in");

    let (mut flow, h, nonce) = at_callback(&mut gw, NOW + 2);
    let r = respond(gw.answer(&mut flow, &h, id_token(&bogus, &nonce, NOW + 2), NOW + 2));
    assert_eq!(r.status, 403);
    let line = logged(&mut flow, "ID token refused");
    assert!(
        line.message.starts_with(
            "ID token refused: ID token signed with an unknown key (kid \"k-bogus\": refetch \
             throttled, last fetch 1 s ago) (status=403 reference="
        ),
        "{line:?}"
    );
}

fn logged(flow: &mut RequestFlow, text: &str) -> LogLine {
    let log = flow.take_log();
    log.iter()
        .find(|l| l.message.contains(text))
        .cloned()
        .unwrap_or_else(|| panic!("no line with {text:?} in {log:?}"))
}

#[test]
fn an_op_answering_5xx_is_logged_with_its_status() {
    // Token endpoint: the browser gets 502 as before, the log names the status.
    let mut gw = Gateway::new(json!({}));
    let (mut flow, h, _) = at_callback(&mut gw, NOW);
    assert_eq!(
        respond(gw.answer(&mut flow, &h, http(500), NOW)).status,
        502
    );
    let line = logged(&mut flow, "token endpoint answered HTTP 500");
    assert!(!line.message.contains("could not be reached"));

    let (mut flow, h, _) = at_callback(&mut gw, NOW);
    assert_eq!(
        respond(gw.answer(&mut flow, &h, http(504), NOW)).status,
        504
    );
    logged(&mut flow, "token endpoint answered HTTP 504 (a timeout");
    let (mut flow, h, _) = at_callback(&mut gw, NOW);
    let r = respond(gw.answer(&mut flow, &h, CalloutResult::Failed, NOW));
    assert_eq!(r.status, 502);
    logged(&mut flow, "token endpoint could not be reached");

    // JWKS for a bearer token.
    let k = key("k1");
    let h = api_call("api.example.com", &access_token(&k, NOW));
    let mut flow = RequestFlow::new();
    callout(gw.request(&mut flow, &h, NOW));
    assert_eq!(
        respond(gw.answer(&mut flow, &h, http(500), NOW)).status,
        502
    );
    logged(&mut flow, "JWKS answered HTTP 500");

    // Introspection.
    let h = api_call("intro.example.com", "opaque-1");
    let mut flow = RequestFlow::new();
    callout(gw.request(&mut flow, &h, NOW));
    assert_eq!(
        respond(gw.answer(&mut flow, &h, http(502), NOW)).status,
        502
    );
    logged(&mut flow, "introspection endpoint answered HTTP 502");
    let mut flow = RequestFlow::new();
    callout(gw.request(&mut flow, &h, NOW));
    assert_eq!(
        respond(gw.answer(&mut flow, &h, http(503), NOW)).status,
        502
    );
    logged(
        &mut flow,
        "introspection endpoint answered HTTP 503 (unavailable, or Envoy",
    );

    // The STS of a site: 503 to the client as before.
    let session = Session {
        sid: "sid-1".into(),
        sub: "alice".into(),
        auth_time: NOW,
        expires_at: NOW + 3600,
        last_activity: NOW,
        claims: Map::new(),
        created_at: 0,
        op: Default::default(),
    };
    let cookie = format!(
        "PA.wam={}",
        session
            .encode(&gw.settings.default_web().session.keys, &mut common::Rng(3))
            .unwrap()
    );
    let h = HeaderList::new(vec![
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "sited.example.com"),
        (":path", "/x"),
        ("cookie", &cookie),
    ]);
    let mut flow = RequestFlow::new();
    assert_eq!(callout(gw.request(&mut flow, &h, NOW)).cluster, "sts");
    assert_eq!(
        respond(gw.answer(&mut flow, &h, http(500), NOW)).status,
        503
    );
    logged(
        &mut flow,
        "token exchange for site `orders-sts` failed: answered HTTP 500",
    );
}

fn discovering() -> Gateway {
    let mut c = config(json!({}));
    c["op"] = json!({"issuer": ISSUER, "cluster": "op", "discovery": true});
    let settings = Settings::from_json(c.to_string().as_bytes()).unwrap();
    Gateway {
        vm: VmState::new(&settings),
        settings,
        rng: Rng(5),
    }
}

#[test]
fn discovery_5xx_and_another_issuer_are_told_apart() {
    let mut gw = discovering();
    let browser = head("GET", "/x", &[("accept", "text/html")]);
    gw.vm.discoveries_due(&gw.settings, NOW).pop().unwrap();
    let line = gw.vm.on_discovery(&gw.settings, 0, http(500));
    assert_eq!(line.level, Level::Warn);
    assert_eq!(
        line.message,
        "discovery at https://op.example.com failed: answered HTTP 500; retrying in 5s"
    );
    let r = respond(gw.request(&mut RequestFlow::new(), &browser, NOW));
    assert_eq!((r.status, r.header_value("retry-after")), (503, Some("5")));
    assert!(String::from_utf8_lossy(&r.body).contains("starting up"));

    let doc = json!({
        "issuer": "https://other.example.com",
        "authorization_endpoint": "https://op.example.com/auth",
        "token_endpoint": "https://op.example.com/token",
        "jwks_uri": "https://op.example.com/jwks"
    });
    let answer = CalloutResult::Response {
        status: 200,
        body: doc.to_string().into_bytes(),
    };
    gw.vm.discoveries_due(&gw.settings, NOW + 5).pop().unwrap();
    let line = gw.vm.on_discovery(&gw.settings, 0, answer);
    assert_eq!(line.level, Level::Error);
    assert_eq!(
        line.message,
        "discovery at https://op.example.com failed: the document names issuer \
         https://other.example.com, not the configured https://op.example.com; sign-in is \
         refused until the configuration or the OP is fixed; retrying in 5s"
    );
    let r = respond(gw.request(&mut RequestFlow::new(), &browser, NOW + 5));
    assert_eq!(r.status, 503);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        body.contains("op_misconfigured") && body.contains("misconfigured"),
        "{body}"
    );
    assert!(!body.contains("starting up"));
    assert_eq!(r.header_value("retry-after"), None);
}

#[test]
fn refused_token_lines_are_rate_limited_per_worker() {
    let mut gw = Gateway::new(json!({"negative_ttl_s": 0}));
    let k = key("k1");
    let h = api_call("api.example.com", &access_token(&k, NOW));
    let mut flow = RequestFlow::new();
    callout(gw.request(&mut flow, &h, NOW));
    forward(gw.answer(&mut flow, &h, jwks(&[&k]), NOW));

    let mut lines = Vec::new();
    for i in 0..25u64 {
        // Each token differs (no cache hit), each is refused for its audience.
        let claims = json!({"iss": ISSUER, "sub": format!("s{i}"), "aud": "https://else",
                            "exp": NOW + 600, "iat": NOW});
        let claims: JWTClaims<Map<String, Value>> = serde_json::from_value(claims).unwrap();
        let h = api_call("api.example.com", &k.sign(claims).unwrap());
        let mut flow = RequestFlow::new();
        let now = NOW + i / 5; // 5 a second for 5 s
        assert_eq!(respond(gw.request(&mut flow, &h, now)).status, 401);
        lines.extend(messages(flow.take_log()));
    }
    let refused = lines
        .iter()
        .filter(|l| l.starts_with("bearer token refused"))
        .count();
    assert_eq!(refused, 10, "{lines:#?}");
    assert_eq!(gw.vm.refused_lines.roll(NOW + 4), None);
    let told = gw.vm.refused_lines.roll(NOW + 10).map(|l| l.message);
    assert_eq!(told.as_deref(), Some("15 refused-token lines suppressed"));
}
