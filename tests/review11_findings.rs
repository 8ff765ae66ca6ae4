//! Review of issue 11 (several OPs: web sessions and token providers). Each test states the
//! secure behaviour; those named `finding_*` fail on 391bb6e and show a finding, the others
//! are probes that pass and pin what was found safe.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::two_ops::*;
use common::*;
use envoy_wam::config::Settings;
use envoy_wam::flow::RequestFlow;
use envoy_wam::http::{Action, Body, CalloutResult, LocalResponse};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

const BROWSER: (&str, &str) = ("accept", "text/html");

/// Both web sessions with the same secret (base_config's).
fn config(cookie_name: &str) -> Value {
    two_op_config(cookie_name, &URL_SAFE_NO_PAD.encode([9u8; 32]))
}

fn start(gw: &mut Gateway, path: &str) -> (Map<String, Value>, String) {
    let r = respond(gw.request(&head("GET", path, &[BROWSER])));
    assert_eq!(r.status, 302, "{r:?}");
    let location = r.header_value("location").unwrap().to_string();
    (query(&location), pair(&set_cookies(&r)[0]))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    gw: &mut Gateway,
    op: &Op,
    issuer: &str,
    client: &str,
    callback: &str,
    q: &Map<String, Value>,
    txn: &str,
    extra: Value,
) -> LocalResponse {
    let mut flow = RequestFlow::new();
    let cb = format!("{callback}?code=c&state={}", q["state"].as_str().unwrap());
    let h = head("GET", &cb, &[BROWSER, ("cookie", txn)]);
    callout(gw.request_in(&mut flow, &h));
    let mut claims = json!({
        "iss": issuer, "sub": "alice", "aud": client, "exp": NOW + 300, "iat": NOW,
        "nonce": q["nonce"].as_str().unwrap()
    });
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    let body = json!({"id_token": op.sign(claims), "token_type": "Bearer", "access_token": "at"});
    let mut action = gw.answer(
        &mut flow,
        &h,
        CalloutResult::Response {
            status: 200,
            body: body.to_string().into_bytes(),
        },
    );
    if let Action::Callout(_) = action {
        action = gw.answer(
            &mut flow,
            &h,
            CalloutResult::Response {
                status: 200,
                body: op.jwks(),
            },
        );
    }
    respond(action)
}

fn session_of(r: &LocalResponse, name: &str) -> String {
    set_cookies(r)
        .iter()
        .find(|c| c.starts_with(&format!("{name}=")) && !c.contains("Max-Age=0"))
        .map(|c| pair(c))
        .unwrap_or_else(|| panic!("no {name} cookie in {r:?}"))
}

fn login_partner(gw: &mut Gateway, partner: &Op, cookie: &str, extra: Value) -> String {
    let (q, txn) = start(gw, "/partner/x");
    let r = finish(
        gw,
        partner,
        PARTNER,
        "gw_partner",
        "/pa/oidc/cb/partner",
        &q,
        &txn,
        extra,
    );
    assert_eq!(r.status, 302, "{r:?}");
    session_of(&r, cookie)
}

fn login_corp(gw: &mut Gateway, corp: &Op, extra: Value) -> String {
    let (q, txn) = start(gw, "/corp");
    let r = finish(gw, corp, ISSUER, "pa_wam", "/pa/oidc/cb", &q, &txn, extra);
    assert_eq!(r.status, 302, "{r:?}");
    session_of(&r, "PA.wam")
}

fn backchannel(gw: &mut Gateway, path: &str, token: &str, keys: &Op) -> LocalResponse {
    let h = head(
        "POST",
        path,
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    let mut flow = RequestFlow::new();
    let action = gw.request_in(&mut flow, &h);
    assert!(matches!(action, Action::ReadBody { .. }), "{action:?}");
    let body = format!("logout_token={token}").into_bytes();
    let action = match gw.body(&mut flow, &h, Body::Complete(body)) {
        Action::Callout(_) => gw.answer(
            &mut flow,
            &h,
            CalloutResult::Response {
                status: 200,
                body: keys.jwks(),
            },
        ),
        other => other,
    };
    respond(gw.released(&mut flow, &h, action))
}

fn refused_field(cfg: &Value) -> Option<String> {
    Settings::from_json(cfg.to_string().as_bytes())
        .err()
        .map(|e| e.field)
}

const PROVIDERS: &str = r#"[
    {"name": "corp", "validation": "jwt", "audiences": ["api"],
     "op": {"issuer": "https://op.example.com", "cluster": "op",
            "jwks_uri": "https://op.example.com/jwks"}},
    {"name": "partner", "validation": "jwt", "audiences": ["api"],
     "op": {"issuer": "https://partner.example.net", "cluster": "partner_op",
            "jwks_uri": "https://partner.example.net/jwks"}}
]"#;

fn api_call(
    gw: &mut Gateway,
    path: &str,
    token: &str,
    jwks: &Op,
    extra: &[(&str, &str)],
) -> Action {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    let h = head("GET", path, &headers);
    let mut flow = RequestFlow::new();
    match gw.request_in(&mut flow, &h) {
        Action::Callout(c) if c.path.ends_with("/jwks") => gw.answer(
            &mut flow,
            &h,
            CalloutResult::Response {
                status: 200,
                body: jwks.jwks(),
            },
        ),
        other => other,
    }
}

fn bearer_for(op: &Op, iss: &str, sub: &str) -> String {
    op.sign(json!({"iss": iss, "sub": sub, "aud": "api", "exp": NOW + 300, "iat": NOW}))
}

fn jwt_claims(token: &str) -> Map<String, Value> {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn site_jwt(f: &envoy_wam::http::Forward) -> String {
    f.request_headers
        .iter()
        .find(|(n, _)| n == "x-site-jwt")
        .and_then(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no site JWT in {f:?}"))
}

fn with_jwt_site(mut cfg: Value) -> Value {
    cfg["authtoken"] = json!({"issuer": "envoy-wam",
        "keys": [{"kid": "gw", "alg": "ES256", "private_key_pem": GW_KEY}]});
    cfg["site_authenticators"] = json!([{"name": "ids", "type": "jwt", "audience": "https://site",
        "inject": {"header": "x-site-jwt"}}]);
    cfg
}

/// The claims that tell who a site JWT is for (not when it was made).
fn identity_part(token: &str) -> Map<String, Value> {
    let mut c = jwt_claims(token);
    for k in ["jti", "iat", "exp", "nbf"] {
        c.remove(k);
    }
    c
}

// ------------------------------------------------------------------------------------------
// Finding 1: a JWT identity-mapping site without `subject` mixes two OPs' users through API
// (bearer) applications: site_sources::resolve skips `api` applications and never looks at
// the providers of `both` ones.

/// An API application accepting the corporate and the partner provider, behind a JWT site
/// that names no subject: the corporate `alice` and the partner `alice` get the same identity.
#[test]
fn finding_jwt_site_without_subject_mixes_the_users_of_two_providers() {
    let mut cfg = with_jwt_site(base_config());
    cfg["token_providers"] = serde_json::from_str(PROVIDERS).unwrap();
    cfg["policy"] = json!({"applications": [
        {"name": "api", "hosts": ["gw.example.com"], "context_root": "/api", "type": "api",
         "api": {"token_providers": ["corp", "partner"]}, "site_authenticator": "ids",
         "resources": [{"name": "all", "paths": ["/*"]}]}
    ]});
    if refused_field(&cfg).is_some() {
        return; // refused at load: fixed
    }
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&cfg);
    let a = forward(api_call(
        &mut gw,
        "/api/x",
        &bearer_for(&corp, ISSUER, "alice"),
        &corp,
        &[],
    ));
    let b = forward(api_call(
        &mut gw,
        "/api/x",
        &bearer_for(&partner, PARTNER, "alice"),
        &partner,
        &[],
    ));
    let (a, b) = (identity_part(&site_jwt(&a)), identity_part(&site_jwt(&b)));
    assert_ne!(
        a, b,
        "the site gets the same identity for two different people (corp alice, partner alice)"
    );
}

/// A web application of the corporate web session and an API application of the partner
/// provider share one JWT site without `subject`: accepted, and both `alice`s look alike.
#[test]
fn finding_jwt_site_without_subject_mixes_a_web_session_and_another_ops_provider() {
    let mut cfg = with_jwt_site(config("PA.partner"));
    cfg["token_providers"] = serde_json::from_str(PROVIDERS).unwrap();
    let apps = cfg["policy"]["applications"].as_array_mut().unwrap();
    apps[0]["site_authenticator"] = json!("ids");
    apps.push(
        json!({"name": "papi", "hosts": ["gw.example.com"], "context_root": "/papi",
        "type": "api", "api": {"token_providers": ["partner"]}, "site_authenticator": "ids",
        "resources": [{"name": "all", "paths": ["/*"]}]}),
    );
    if refused_field(&cfg).is_some() {
        return; // refused at load: fixed
    }
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&cfg);
    let cookie = login_corp(&mut gw, &corp, json!({}));
    let a = forward(gw.request(&head("GET", "/corp", &[("cookie", &cookie)])));
    let b = forward(api_call(
        &mut gw,
        "/papi/x",
        &bearer_for(&partner, PARTNER, "alice"),
        &partner,
        &[],
    ));
    assert_ne!(
        identity_part(&site_jwt(&a)),
        identity_part(&site_jwt(&b)),
        "corp alice (session) and partner alice (bearer) get the same site identity"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 2: revocation entries of the default web session are not scoped, those of a named
// one are `<name>\x1f<value>`: a default-OP value containing `<name>\x1f` names a partner
// session.

#[test]
fn finding_a_default_op_logout_token_can_end_a_partner_session() {
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&config("PA.partner"));
    let partner_cookie = login_partner(&mut gw, &partner, "PA.partner", json!({}));
    forward(gw.request(&head("GET", "/partner/x", &[("cookie", &partner_cookie)])));

    // The corporate OP (its key, its issuer, its client) logs out a subject of its own whose
    // identifier happens to contain U+001F.
    let token = corp.logout_token(json!({
        "iss": ISSUER, "aud": "pa_wam", "iat": NOW, "exp": NOW + 60, "jti": "x1",
        "sub": "partner\u{1f}alice",
        "events": {"http://schemas.openid.net/event/backchannel-logout": {}}
    }));
    let r = backchannel(&mut gw, "/pa/oidc/backchannel", &token, &corp);
    assert_eq!(r.status, 200, "{r:?}");
    let r = gw.request(&head(
        "GET",
        "/partner/x",
        &[BROWSER, ("cookie", &partner_cookie)],
    ));
    assert!(
        matches!(r, Action::Forward(_)),
        "a corporate logout ended the partner's alice: {r:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Finding 3: configuration accepted that should not be.

/// A web session's cookie name inside another's `<name>.` namespace (here: the default
/// session's chunk 1) is accepted; the default session's logout then clears the partner
/// session's cookie, and a chunked corporate session would overwrite it.
#[test]
fn finding_a_cookie_name_inside_another_web_sessions_namespace_is_accepted() {
    let cfg = config("PA.wam.1");
    if refused_field(&cfg).is_some() {
        return;
    }
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&cfg);
    let corp_cookie = login_corp(&mut gw, &corp, json!({}));
    let partner_cookie = login_partner(&mut gw, &partner, "PA.wam.1", json!({}));
    let both = format!("{corp_cookie}; {partner_cookie}");
    let r = respond(gw.request_ticked(&head(
        "GET",
        "/pa/oidc/logout",
        &[BROWSER, ("cookie", &both)],
    )));
    let cleared = set_cookies(&r);
    assert!(
        !cleared.iter().any(|c| c.starts_with("PA.wam.1=;")),
        "the corporate logout clears the partner session cookie: {cleared:?}"
    );
}

/// `web_sessions[i].session.revocation_list_entries` is read and checked, then ignored: the
/// list has the default session's size.
#[test]
fn finding_a_named_sessions_revocation_list_entries_is_ignored() {
    let mut cfg = config("PA.partner");
    cfg["web_sessions"][0]["session"]["revocation_list_entries"] = json!(500_000);
    let Ok(s) = Settings::from_json(cfg.to_string().as_bytes()) else {
        return;
    };
    assert!(
        s.revocation_list_entries >= 500_000,
        "configured 500000 for the partner session, the list holds {}",
        s.revocation_list_entries
    );
}

/// An introspection provider's `audiences` are accepted and never checked: a token the OP
/// issued for another API passes.
#[test]
fn finding_an_introspection_providers_audiences_are_not_enforced() {
    let mut cfg = base_config();
    cfg["token_providers"] = json!([
        {"name": "partner", "validation": "introspection", "audiences": ["api"],
         "client": {"client_id": "gw", "client_secret": "introspection-secret"},
         "op": {"issuer": PARTNER, "cluster": "partner_op",
                "introspection_endpoint": "https://partner.example.net/introspect"}}
    ]);
    cfg["policy"] = json!({"applications": [
        {"name": "api", "hosts": ["gw.example.com"], "context_root": "/api", "type": "api",
         "api": {"token_providers": ["partner"]},
         "resources": [{"name": "all", "paths": ["/*"]}]}
    ]});
    if refused_field(&cfg).is_some() {
        return;
    }
    let mut gw = Gateway::with(&cfg);
    let h = head(
        "GET",
        "/api/x",
        &[("authorization", "Bearer opaque-token-1")],
    );
    let mut flow = RequestFlow::new();
    let c = callout(gw.request_in(&mut flow, &h));
    assert!(c.path.ends_with("/introspect"));
    let answer = json!({"active": true, "sub": "svc", "aud": "payroll-api",
                        "iss": PARTNER, "exp": NOW + 300});
    let a = gw.answer(
        &mut flow,
        &h,
        CalloutResult::Response {
            status: 200,
            body: answer.to_string().into_bytes(),
        },
    );
    assert!(
        !matches!(a, Action::Forward(_)),
        "a token for `payroll-api` passed a provider configured for `api`"
    );
}

// ------------------------------------------------------------------------------------------
// Probes that hold (no finding): kept as regression tests.

/// Spellings of a named web session's endpoints never reach a backend: they are the endpoint
/// itself or refused.
#[test]
fn probe_spellings_of_named_endpoints_never_go_upstream() {
    let mut gw = Gateway::with(&config("PA.partner"));
    for path in [
        "/pa/oidc/cb/%70artner",
        "/pa/oidc/cb/PARTNER",
        "/pa/oidc/cb/Partner",
        "/pa/oidc/cb/partner/",
        "/pa/oidc/cb//partner",
        "/pa/oidc/cb/./partner",
        "/pa/oidc/cb/x/../partner",
        "/pa/oidc/cb/x/..;/partner",
        "/pa/oidc/cb/partner;x=1",
        "/pa/oidc/cb;x=1/partner",
        "/pa/oidc/cb/partner%2f",
        "/pa/oidc/cb%2fpartner",
        "/pa/oidc/cb/partner.",
        "/pa/oidc/cb/partner%20",
        "/pa/oidc/cb/partner%00",
        "/pa/oidc/cb/partner%3bx",
        "/pa/oidc/cb/partner\\",
        "/pa/oidc/cb\\partner",
        "/pa/oidc/logout/PARTNER",
        "/pa/oidc/logout/partner/",
        "/pa/oidc/logout/partner;x",
        "/pa/oidc/backchannel/partner/",
        "/pa/oidc/frontchannel/Partner",
        "/PA/OIDC/CB/PARTNER",
    ] {
        let a = gw.request(&head("GET", &format!("{path}?code=c&state=s"), &[BROWSER]));
        assert!(
            !matches!(a, Action::Forward(_)),
            "{path} went upstream with the code: {a:?}"
        );
    }
}

/// A client's copy of either web session's identity header (or a spelling a backend reads as
/// it) never reaches a backend, whatever the application, with or without a session.
#[test]
fn probe_identity_headers_of_every_web_session_are_removed_everywhere() {
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&config("PA.wam"));
    let partner_cookie = login_partner(&mut gw, &partner, "PA.wam", json!({}));
    let corp_cookie = login_corp(&mut gw, &corp, json!({}));
    let spoof = [("x-partner-user", "mallory"), ("x-wam-user", "mallory")];
    for (path, cookie) in [("/corp", &corp_cookie), ("/partner/x", &partner_cookie)] {
        let mut h = vec![("cookie", cookie.as_str())];
        h.extend_from_slice(&spoof);
        let f = forward(gw.request(&head("GET", path, &h)));
        for name in ["x-partner-user", "x-wam-user"] {
            let op = f.identity.iter().find(|(n, _)| n == name);
            assert!(
                op.is_some(),
                "{path}: {name} is not overwritten or removed: {f:?}"
            );
            assert_ne!(op.unwrap().1.as_deref(), Some("mallory"));
        }
    }
    // Underscore spellings (CGI reads x_partner_user as x-partner-user).
    let f = forward(gw.request(&head(
        "GET",
        "/corp",
        &[("cookie", &corp_cookie), ("x_partner_user", "mallory")],
    )));
    assert!(f.removed.iter().any(|n| n == "x_partner_user"), "{f:?}");
}

/// A bearer result cached for one application is not reused with another web session's
/// identity headers, even when both accept the same provider.
#[test]
fn probe_a_cached_bearer_result_carries_the_headers_of_its_own_web_session() {
    let mut cfg = config("PA.partner");
    cfg["token_providers"] = serde_json::from_str(PROVIDERS).unwrap();
    let apps = cfg["policy"]["applications"].as_array_mut().unwrap();
    apps.push(
        json!({"name": "capi", "hosts": ["gw.example.com"], "context_root": "/capi",
        "type": "api", "api": {"token_providers": ["corp"]},
        "resources": [{"name": "all", "paths": ["/*"]}]}),
    );
    apps.push(
        json!({"name": "papi", "hosts": ["gw.example.com"], "context_root": "/papi",
        "type": "api", "web_session": "partner", "api": {"token_providers": ["corp"]},
        "resources": [{"name": "all", "paths": ["/*"]}]}),
    );
    let corp = Op::new();
    let mut gw = Gateway::with(&cfg);
    let token = bearer_for(&corp, ISSUER, "svc");
    let a = forward(api_call(&mut gw, "/capi/x", &token, &corp, &[]));
    let b = forward(api_call(&mut gw, "/papi/x", &token, &corp, &[]));
    let get = |f: &envoy_wam::http::Forward, n: &str| {
        f.identity
            .iter()
            .find(|(h, _)| h == n)
            .and_then(|(_, v)| v.clone())
    };
    assert_eq!(get(&a, "x-wam-user").as_deref(), Some("svc"));
    assert_eq!(get(&a, "x-partner-user"), None);
    assert_eq!(get(&b, "x-partner-user").as_deref(), Some("svc"));
    assert_eq!(get(&b, "x-wam-user"), None);
}

/// The `iss` peek: duplicate keys, a non-string `iss`, padding, a huge payload and nested
/// objects give no issuer (the token then goes to the application's only provider, or to
/// none), never a wrong one.
#[test]
fn probe_the_unverified_issuer_of_odd_payloads() {
    use envoy_wam::bearer::unverified_issuer;
    let tok = |payload: &str| format!("e30.{}.c2ln", URL_SAFE_NO_PAD.encode(payload));
    assert_eq!(
        unverified_issuer(&tok(r#"{"iss":"https://a"}"#)).as_deref(),
        Some("https://a")
    );
    for odd in [
        r#"{"iss":"https://a","iss":"https://b"}"#.to_string(),
        r#"{"iss":1}"#.to_string(),
        r#"{"iss":null}"#.to_string(),
        r#"{"iss":["https://a"]}"#.to_string(),
        r#"{"iss":{"x":"https://a"}}"#.to_string(),
        format!(r#"{{"iss":"https://a","x":"{}"}}"#, "y".repeat(20_000)),
    ] {
        assert_eq!(
            unverified_issuer(&tok(&odd)),
            None,
            "{}",
            &odd[..odd.len().min(60)]
        );
    }
    let padded = format!(
        "e30.{}.c2ln",
        base64::engine::general_purpose::URL_SAFE.encode(r#"{"iss":"https://a"} "#)
    );
    assert!(padded.contains('='));
    // Quirk (harmless): a payload that is a JSON array reads as `{"iss": ...}` to the derived
    // struct (serde accepts sequences for structs); the validator's claims type refuses it, so
    // such a token only picks a provider and is then refused.
    assert_eq!(
        unverified_issuer(&tok(r#"["https://a"]"#)).as_deref(),
        Some("https://a")
    );
    assert!(serde_json::from_str::<JWTClaims<Map<String, Value>>>(r#"["https://a"]"#).is_err());
    assert_eq!(unverified_issuer(&padded), None);
    // The validator's own claims type refuses a duplicate `iss` too (serde's duplicate_field),
    // so the peek and the check never read different issuers.
    let dup = r#"{"iss":"https://a","iss":"https://b","aud":"api","exp":1}"#;
    assert!(serde_json::from_str::<JWTClaims<Map<String, Value>>>(dup).is_err());
    assert_eq!(unverified_issuer("a.b"), None);
    assert_eq!(unverified_issuer("a.b.c.d.e"), None);
    // The escaped spelling is the same key to serde.
    assert_eq!(
        unverified_issuer(&tok(r#"{"\u0069ss":"https://a"}"#)).as_deref(),
        Some("https://a")
    );
}

/// A token whose payload names `iss` twice (the partner's, then the corporate one), signed by
/// either OP: never accepted by an application of both providers nor by a single-provider one.
#[test]
fn probe_a_token_with_two_iss_keys_is_refused() {
    // JWTClaims writes `iss`; a flattened custom claim renamed `iss` writes it again.
    #[derive(Serialize, Deserialize)]
    struct Dup {
        #[serde(rename = "iss")]
        second: String,
    }
    let mut cfg = base_config();
    cfg["token_providers"] = serde_json::from_str(PROVIDERS).unwrap();
    cfg["policy"] = json!({"applications": [
        {"name": "both", "hosts": ["gw.example.com"], "context_root": "/api", "type": "api",
         "api": {"token_providers": ["corp", "partner"]},
         "resources": [{"name": "all", "paths": ["/*"]}]},
        {"name": "corp-only", "hosts": ["gw.example.com"], "context_root": "/capi", "type": "api",
         "api": {"token_providers": ["corp"]},
         "resources": [{"name": "all", "paths": ["/*"]}]}
    ]});
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&cfg);
    for (first, second) in [(PARTNER, ISSUER), (ISSUER, PARTNER)] {
        for signer in [&corp, &partner] {
            let claims = Claims::with_custom_claims(
                Dup {
                    second: second.into(),
                },
                Duration::from_secs(300),
            )
            .with_issuer(first)
            .with_audience("api")
            .with_subject("alice");
            let mut claims = claims;
            at_now(&mut claims);
            let token = signer.key.sign(claims).unwrap();
            let payload = String::from_utf8(
                URL_SAFE_NO_PAD
                    .decode(token.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(payload.matches("\"iss\"").count(), 2, "{payload}");
            for path in ["/api/x", "/capi/x"] {
                let a = api_call(&mut gw, path, &token, signer, &[]);
                assert!(
                    !matches!(a, Action::Forward(_)),
                    "{path}: a token with iss {first} and {second} passed: {payload}"
                );
            }
        }
    }
    // Control: the same construction with one `iss` is accepted (the refusals above are for
    // the duplicate, not for the times or the audience).
    #[derive(Serialize, Deserialize)]
    struct Other {
        other: String,
    }
    let mut claims =
        Claims::with_custom_claims(Other { other: "x".into() }, Duration::from_secs(300))
            .with_issuer(ISSUER)
            .with_audience("api")
            .with_subject("alice");
    at_now(&mut claims);
    forward(api_call(
        &mut gw,
        "/api/x",
        &corp.key.sign(claims).unwrap(),
        &corp,
        &[],
    ));
}

/// The gateway's clock in the tests is [`NOW`], not the wall clock jwt-simple stamps.
fn at_now<T>(c: &mut JWTClaims<T>) {
    c.issued_at = Some(Duration::from_secs(NOW));
    c.invalid_before = Some(Duration::from_secs(NOW));
    c.expires_at = Some(Duration::from_secs(NOW + 300));
}

/// A mediated session token is never served to another web session's user of the same `sub`:
/// two sites, one per web session, and a web session's site refuses the other's.
#[test]
fn probe_mediated_tokens_per_web_session() {
    let mut cfg = with_jwt_site(config("PA.partner"));
    cfg["site_authenticators"][0]["subject"] = json!({"web_session": "partner"});
    cfg["policy"]["applications"][1]["site_authenticator"] = json!("ids");
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&cfg);
    let corp_cookie = login_corp(&mut gw, &corp, json!({}));
    let partner_cookie = login_partner(&mut gw, &partner, "PA.partner", json!({}));
    let f = forward(gw.request(&head("GET", "/partner/x", &[("cookie", &partner_cookie)])));
    site_jwt(&f);
    // The corporate cookie at the partner application: a sign-in, not the partner's token.
    let r = respond(gw.request(&head(
        "GET",
        "/partner/x",
        &[BROWSER, ("cookie", &corp_cookie)],
    )));
    assert_eq!(r.status, 302);
}

/// Identical secrets, identical cookie names, chunked sessions: the partner's chunks do not
/// open as the corporate session, nor the reverse.
#[test]
fn probe_chunked_sessions_with_colliding_names_and_secrets() {
    let mut cfg = config("PA.wam");
    cfg["session"]["claims"] = json!(["big"]);
    cfg["session"]["max_cookie_chunks"] = json!(5);
    cfg["web_sessions"][0]["session"]["claims"] = json!(["big"]);
    cfg["web_sessions"][0]["session"]["max_cookie_chunks"] = json!(5);
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&cfg);
    let big = json!({"big": "z".repeat(6000)});
    let (q, txn) = start(&mut gw, "/partner/x");
    let r = finish(
        &mut gw,
        &partner,
        PARTNER,
        "gw_partner",
        "/pa/oidc/cb/partner",
        &q,
        &txn,
        big.clone(),
    );
    assert_eq!(r.status, 302, "{r:?}");
    let chunks: Vec<String> = set_cookies(&r)
        .iter()
        .filter(|c| c.starts_with("PA.wam.") && !c.contains("Max-Age=0") && !c.contains(".txn."))
        .map(|c| pair(c))
        .collect();
    assert!(chunks.len() >= 2, "{chunks:?}");
    let jar = chunks.join("; ");
    forward(gw.request(&head("GET", "/partner/x", &[("cookie", &jar)])));
    let r = respond(gw.request(&head("GET", "/corp", &[BROWSER, ("cookie", &jar)])));
    assert_eq!(
        r.status, 302,
        "partner chunks opened as a corporate session"
    );
    let _ = corp;
}

/// One OP whose discovery names another issuer: its applications get 503, the other OP's
/// applications and APIs keep working.
#[test]
fn probe_a_provider_whose_discovery_names_another_issuer_fails_closed_alone() {
    let mut cfg = config("PA.partner");
    cfg["token_providers"] = serde_json::from_str(PROVIDERS).unwrap();
    cfg["token_providers"][1]["op"] =
        json!({"issuer": PARTNER, "cluster": "partner_op", "discovery": true});
    let apps = cfg["policy"]["applications"].as_array_mut().unwrap();
    apps.push(
        json!({"name": "api", "hosts": ["gw.example.com"], "context_root": "/api",
        "type": "api", "api": {"token_providers": ["corp", "partner"]},
        "resources": [{"name": "all", "paths": ["/*"]}]}),
    );
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&cfg);
    let due = gw.vm.discoveries_due(&gw.settings, NOW);
    assert_eq!(due.len(), 1);
    let doc = json!({"issuer": "https://evil.example.org",
        "authorization_endpoint": "https://evil.example.org/a",
        "token_endpoint": "https://evil.example.org/t",
        "jwks_uri": "https://evil.example.org/jwks"});
    gw.vm.on_discovery(
        &gw.settings,
        due[0].0,
        CalloutResult::Response {
            status: 200,
            body: doc.to_string().into_bytes(),
        },
    );
    let a = api_call(
        &mut gw,
        "/api/x",
        &bearer_for(&partner, PARTNER, "svc"),
        &partner,
        &[],
    );
    assert!(!matches!(a, Action::Forward(_)), "{a:?}");
    forward(api_call(
        &mut gw,
        "/api/x",
        &bearer_for(&corp, ISSUER, "svc"),
        &corp,
        &[],
    ));
    login_corp(&mut gw, &corp, json!({}));
}

/// A web session's identity header named `authorization` is accepted; as the other web
/// sessions' "foreign" header it is then removed from their API applications' requests, so a
/// partner setting silently strips the bearer token a corporate API forwards (`forward_token`).
#[test]
fn finding_an_identity_header_named_authorization_is_accepted_and_strips_other_apis_tokens() {
    let mut cfg = config("PA.partner");
    cfg["web_sessions"][0]["identity_headers"] =
        json!([{"header": "Authorization", "claim": "sub"}]);
    cfg["token_providers"] = serde_json::from_str(PROVIDERS).unwrap();
    let apps = cfg["policy"]["applications"].as_array_mut().unwrap();
    apps.push(
        json!({"name": "capi", "hosts": ["gw.example.com"], "context_root": "/capi",
        "type": "api", "api": {"token_providers": ["corp"], "forward_token": true},
        "resources": [{"name": "all", "paths": ["/*"]}]}),
    );
    if refused_field(&cfg).is_some() {
        return;
    }
    let corp = Op::new();
    let mut gw = Gateway::with(&cfg);
    let f = forward(api_call(
        &mut gw,
        "/capi/x",
        &bearer_for(&corp, ISSUER, "svc"),
        &corp,
        &[],
    ));
    let stripped = f
        .identity
        .iter()
        .chain(f.request_headers.iter())
        .any(|(n, v)| n == "authorization" && v.is_none());
    assert!(!stripped, "the forwarded bearer token is removed: {f:?}");
}

/// An API application accepting two providers cannot tell (nor tell its backend) which one
/// vouched for a token: a JWT's `iss` is not among the claims that rules and identity headers
/// read (jwt-simple takes the registered claims out), so a rule cannot require the corporate
/// issuer, and an identity header for `iss` is always removed.
#[test]
fn finding_a_multi_provider_api_cannot_tell_or_say_which_issuer_vouched() {
    let mut cfg = base_config();
    cfg["identity_headers"] = json!([{"header": "x-wam-user", "claim": "sub"},
                                     {"header": "x-wam-iss", "claim": "iss"}]);
    cfg["token_providers"] = serde_json::from_str(PROVIDERS).unwrap();
    cfg["policy"] = json!({"applications": [
        {"name": "api", "hosts": ["gw.example.com"], "context_root": "/api", "type": "api",
         "api": {"token_providers": ["corp", "partner"]},
         "resources": [
            {"name": "admin", "paths": ["/admin/*"],
             "rules": [{"type": "attribute", "claim": "iss", "equals": ISSUER}]},
            {"name": "all", "paths": ["/*"]}]}
    ]});
    let corp = Op::new();
    let mut gw = Gateway::with(&cfg);
    let token = bearer_for(&corp, ISSUER, "alice");
    let f = forward(api_call(&mut gw, "/api/x", &token, &corp, &[]));
    let iss = f
        .identity
        .iter()
        .find(|(n, _)| n == "x-wam-iss")
        .and_then(|(_, v)| v.clone());
    assert_eq!(
        iss.as_deref(),
        Some(ISSUER),
        "the backend cannot learn the issuer: corp alice and partner alice look alike ({f:?})"
    );
    let a = api_call(&mut gw, "/api/admin/x", &token, &corp, &[]);
    assert!(
        matches!(a, Action::Forward(_)),
        "a rule requiring the corporate issuer refuses the corporate token: {a:?}"
    );
}

/// A token provider found by discovery must publish the sign-in endpoints it never uses: a
/// JWT-only issuer whose document has no `authorization_endpoint` / `token_endpoint` (a
/// client-credentials or workload issuer) is never ready, and its API answers 503 for good
/// (fail-closed: availability only).
#[test]
fn finding_a_discovered_token_provider_needs_sign_in_endpoints_it_never_uses() {
    let mut cfg = base_config();
    cfg["token_providers"] = serde_json::from_str(PROVIDERS).unwrap();
    cfg["token_providers"][1]["op"] =
        json!({"issuer": PARTNER, "cluster": "partner_op", "discovery": true});
    cfg["policy"] = json!({"applications": [
        {"name": "api", "hosts": ["gw.example.com"], "context_root": "/api", "type": "api",
         "api": {"token_providers": ["partner"]},
         "resources": [{"name": "all", "paths": ["/*"]}]}
    ]});
    let mut gw = Gateway::with(&cfg);
    let due = gw.vm.discoveries_due(&gw.settings, NOW);
    assert_eq!(due.len(), 1);
    let doc = json!({"issuer": PARTNER, "jwks_uri": "https://partner.example.net/jwks"});
    gw.vm.on_discovery(
        &gw.settings,
        due[0].0,
        CalloutResult::Response {
            status: 200,
            body: doc.to_string().into_bytes(),
        },
    );
    let partner = Op::new();
    let a = api_call(
        &mut gw,
        "/api/x",
        &bearer_for(&partner, PARTNER, "svc"),
        &partner,
        &[],
    );
    assert!(
        matches!(a, Action::Forward(_)),
        "a JWT provider with a JWKS is refused for lack of sign-in endpoints: {a:?}"
    );
}
