//! Several OPs: named web sessions that applications choose, each with its own OP, client,
//! cookie and keys; and named token providers that API applications accept, matched by `iss`.

mod common;

use common::two_ops::*;
use common::*;
use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, RequestFlow};
use envoy_wam::http::{Action, CalloutResult, LocalResponse};
use serde_json::{json, Map, Value};

const BROWSER: (&str, &str) = ("accept", "text/html");

fn config(cookie_name: &str) -> Value {
    two_op_config(cookie_name, "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk")
}

/// A browser's sign-in at `path`: the redirect's query and the transaction cookie.
fn start(gw: &mut Gateway, path: &str) -> (String, Map<String, Value>, String) {
    let r = respond(gw.request(&head("GET", path, &[BROWSER])));
    assert_eq!(r.status, 302, "{r:?}");
    let location = r.header_value("location").unwrap().to_string();
    let txn = pair(&set_cookies(&r)[0]);
    (location.clone(), query(&location), txn)
}

/// The callback with `txn`, and the OP's answers; the gateway's final answer.
fn finish(
    gw: &mut Gateway,
    op: &Op,
    issuer: &str,
    client: &str,
    callback: &str,
    q: &Map<String, Value>,
    txn: &str,
) -> LocalResponse {
    let mut flow = RequestFlow::new();
    let cb = format!("{callback}?code=c&state={}", q["state"].as_str().unwrap());
    let h = head("GET", &cb, &[BROWSER, ("cookie", txn)]);
    let token = callout(gw.request_in(&mut flow, &h));
    let nonce = q["nonce"].as_str().unwrap();
    let id_token = op.sign(json!({
        "iss": issuer, "sub": "alice", "aud": client, "exp": NOW + 300, "iat": NOW,
        "nonce": nonce
    }));
    let body = json!({"id_token": id_token, "token_type": "Bearer", "access_token": "at"});
    let answer = CalloutResult::Response {
        status: 200,
        body: body.to_string().into_bytes(),
    };
    let mut action = gw.answer(&mut flow, &h, answer);
    assert!(token.cluster == "op" || token.cluster == "partner_op");
    if let Action::Callout(_) = action {
        let jwks = CalloutResult::Response {
            status: 200,
            body: op.jwks(),
        };
        action = gw.answer(&mut flow, &h, jwks);
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

#[test]
fn the_top_level_sections_are_the_default_web_session() {
    let s = Settings::from_json(base_config().to_string().as_bytes()).unwrap();
    assert_eq!(s.web_sessions.len(), 1);
    let web = s.default_web();
    assert_eq!(web.name, "default");
    assert_eq!(web.callback_path, "/pa/oidc/cb");
    assert_eq!(web.logout_path, "/pa/oidc/logout");
    assert_eq!(s.op(web.op).issuer, ISSUER);
}

#[test]
fn each_application_signs_in_at_its_own_op_with_its_own_client() {
    let mut gw = Gateway::with(&config("PA.partner"));
    let (location, q, txn) = start(&mut gw, "/partner/page");
    assert!(location.starts_with("https://partner.example.net/authorize?"));
    assert_eq!(q["client_id"], "gw_partner");
    assert_eq!(
        q["redirect_uri"],
        "https://gw.example.com/pa/oidc/cb/partner"
    );
    assert!(txn.starts_with("PA.partner.txn."), "{txn}");

    let (location, q, txn) = start(&mut gw, "/corp/page");
    assert!(location.starts_with("https://op.example.com/auth?"));
    assert_eq!(q["client_id"], "pa_wam");
    assert_eq!(q["redirect_uri"], "https://gw.example.com/pa/oidc/cb");
    assert!(txn.starts_with("PA.wam.txn."), "{txn}");
}

#[test]
fn a_session_of_one_web_session_is_refused_by_the_others_applications() {
    // The same cookie name for both: only the keys tell them apart.
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&config("PA.wam"));
    let (_, q, txn) = start(&mut gw, "/partner/page");
    let partner_cb = "/pa/oidc/cb/partner";
    let r = finish(
        &mut gw,
        &partner,
        PARTNER,
        "gw_partner",
        partner_cb,
        &q,
        &txn,
    );
    assert_eq!(r.status, 302, "{r:?}");
    let partner_cookie = session_of(&r, "PA.wam");

    let ok = forward(gw.request(&head("GET", "/partner/x", &[("cookie", &partner_cookie)])));
    let user = ok.identity.iter().find(|(n, _)| n == "x-partner-user");
    assert_eq!(user.and_then(|(_, v)| v.as_deref()), Some("alice"));
    // The other web session's header goes upstream removed, never as a client sent it.
    assert!(ok
        .identity
        .iter()
        .any(|(n, v)| n == "x-wam-user" && v.is_none()));

    let r = respond(gw.request(&head(
        "GET",
        "/corp",
        &[BROWSER, ("cookie", &partner_cookie)],
    )));
    assert_eq!(r.status, 302);
    assert!(r
        .header_value("location")
        .unwrap()
        .starts_with("https://op.example.com/auth?"));

    let (_, q, txn) = start(&mut gw, "/corp");
    let r = finish(&mut gw, &corp, ISSUER, "pa_wam", "/pa/oidc/cb", &q, &txn);
    let corp_cookie = session_of(&r, "PA.wam");
    forward(gw.request(&head("GET", "/corp", &[("cookie", &corp_cookie)])));
    let r = respond(gw.request(&head(
        "GET",
        "/partner/x",
        &[BROWSER, ("cookie", &corp_cookie)],
    )));
    assert_eq!(r.status, 302, "the corporate session is no partner session");
}

#[test]
fn a_login_of_one_op_cannot_be_completed_at_the_others_callback() {
    let mut gw = Gateway::with(&config("PA.partner"));
    let (_, q, txn) = start(&mut gw, "/corp");
    // The corporate transaction, renamed as the partner's: its keys do not open it.
    let renamed = txn.replacen("PA.wam.txn.", "PA.partner.txn.", 1);
    for cookie in [txn.as_str(), renamed.as_str()] {
        let cb = format!(
            "/pa/oidc/cb/partner?code=c&state={}",
            q["state"].as_str().unwrap()
        );
        let r = respond(gw.request(&head("GET", &cb, &[BROWSER, ("cookie", cookie)])));
        assert_eq!(r.status, 403, "{r:?}");
    }
}

#[test]
fn an_answer_naming_another_issuer_is_refused_before_its_code_is_redeemed() {
    let mut gw = Gateway::with(&config("PA.partner"));
    let (_, q, txn) = start(&mut gw, "/partner/x");
    let cb = format!(
        "/pa/oidc/cb/partner?code=c&state={}&iss={}",
        q["state"].as_str().unwrap(),
        url::form_urlencoded::byte_serialize(ISSUER.as_bytes()).collect::<String>()
    );
    let r = respond(gw.request(&head("GET", &cb, &[BROWSER, ("cookie", &txn)])));
    assert_eq!(r.status, 403);
}

#[test]
fn an_id_token_signed_by_the_other_op_is_refused() {
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&config("PA.partner"));
    // Warm the partner OP's keys with a good login first.
    let (_, q, txn) = start(&mut gw, "/partner/x");
    let r = finish(
        &mut gw,
        &partner,
        PARTNER,
        "gw_partner",
        "/pa/oidc/cb/partner",
        &q,
        &txn,
    );
    assert_eq!(r.status, 302);
    let (_, q, txn) = start(&mut gw, "/partner/x");
    // The same kid, the corporate key, the partner's issuer.
    let r = finish(
        &mut gw,
        &corp,
        PARTNER,
        "gw_partner",
        "/pa/oidc/cb/partner",
        &q,
        &txn,
    );
    assert_eq!(r.status, 403, "{r:?}");
}

/// Alice signs in at `/corp` and at `/partner/x`: the two session cookies (`name=value`).
fn sign_in_at_both(gw: &mut Gateway, corp: &Op, partner: &Op) -> (String, String) {
    let (_, q, txn) = start(gw, "/corp");
    let r = finish(gw, corp, ISSUER, "pa_wam", "/pa/oidc/cb", &q, &txn);
    let corp_cookie = session_of(&r, "PA.wam");
    let (_, q, txn) = start(gw, "/partner/x");
    let cb = "/pa/oidc/cb/partner";
    let r = finish(gw, partner, PARTNER, "gw_partner", cb, &q, &txn);
    (corp_cookie, session_of(&r, "PA.partner"))
}

#[test]
fn logout_ends_only_its_own_web_session_at_its_own_op() {
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&config("PA.partner"));
    let (corp_cookie, partner_cookie) = sign_in_at_both(&mut gw, &corp, &partner);
    let both = format!("{corp_cookie}; {partner_cookie}");

    let r = respond(gw.request_ticked(&head(
        "GET",
        "/pa/oidc/logout/partner",
        &[BROWSER, ("cookie", &both)],
    )));
    assert_eq!(r.status, 302, "{r:?}");
    assert!(r
        .header_value("location")
        .unwrap()
        .starts_with("https://partner.example.net/logout?"));
    let cleared = set_cookies(&r);
    assert!(
        cleared.iter().all(|c| !c.starts_with("PA.wam=")),
        "{cleared:?}"
    );
    assert!(
        cleared.iter().any(|c| c.starts_with("PA.partner=;")),
        "{cleared:?}"
    );

    let r = respond(gw.request(&head(
        "GET",
        "/partner/x",
        &[BROWSER, ("cookie", &partner_cookie)],
    )));
    assert_eq!(r.status, 302, "the partner session is over");
    forward(gw.request(&head("GET", "/corp", &[("cookie", &corp_cookie)])));
}

#[test]
fn a_back_channel_logout_of_one_op_ends_no_session_of_the_other() {
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&config("PA.partner"));
    let (corp_cookie, partner_cookie) = sign_in_at_both(&mut gw, &corp, &partner);

    // The partner OP logs out its `alice`: the corporate `alice` is someone else.
    let token = partner.logout_token(json!({
        "iss": PARTNER, "aud": "gw_partner", "iat": NOW, "exp": NOW + 60, "jti": "j1",
        "sub": "alice", "events": {"http://schemas.openid.net/event/backchannel-logout": {}}
    }));
    let h = head(
        "POST",
        "/pa/oidc/backchannel/partner",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    let mut flow = RequestFlow::new();
    let action = gw.request_in(&mut flow, &h);
    assert!(matches!(action, Action::ReadBody { .. }), "{action:?}");
    let body = format!("logout_token={token}").into_bytes();
    let action = gw.body(&mut flow, &h, envoy_wam::http::Body::Complete(body));
    let r = respond(gw.released(&mut flow, &h, action));
    assert_eq!(r.status, 200, "{r:?}");

    let r = respond(gw.request(&head(
        "GET",
        "/partner/x",
        &[BROWSER, ("cookie", &partner_cookie)],
    )));
    assert_eq!(r.status, 302, "the partner's alice is logged out");
    forward(gw.request(&head("GET", "/corp", &[("cookie", &corp_cookie)])));

    // And a partner logout token at the corporate endpoint is refused (wrong issuer).
    let h = head(
        "POST",
        "/pa/oidc/backchannel",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    let mut flow = RequestFlow::new();
    gw.request_in(&mut flow, &h);
    let token = partner.logout_token(json!({
        "iss": PARTNER, "aud": "pa_wam", "iat": NOW, "exp": NOW + 60, "jti": "j2",
        "sub": "alice", "events": {"http://schemas.openid.net/event/backchannel-logout": {}}
    }));
    let body = format!("logout_token={token}").into_bytes();
    let action = gw.body(&mut flow, &h, envoy_wam::http::Body::Complete(body));
    let r = match action {
        Action::Callout(_) => respond(gw.answer(
            &mut flow,
            &h,
            CalloutResult::Response {
                status: 200,
                body: corp.jwks(),
            },
        )),
        other => respond(other),
    };
    assert_eq!(r.status, 400, "{r:?}");
    forward(gw.request(&head("GET", "/corp", &[("cookie", &corp_cookie)])));
}

#[test]
fn an_op_without_endpoints_holds_up_only_its_own_applications() {
    let mut cfg = config("PA.partner");
    cfg["web_sessions"][0]["op"] =
        json!({"issuer": PARTNER, "cluster": "partner_op", "discovery": true});
    let mut gw = Gateway::with(&cfg);
    let r = respond(gw.request(&head("GET", "/partner/x", &[BROWSER])));
    assert_eq!((r.status, r.header_value("retry-after")), (503, Some("5")));
    let r = respond(gw.request(&head("GET", "/corp", &[BROWSER])));
    assert_eq!(r.status, 302);
    // Discovery is due only for the partner OP.
    let due = gw.vm.discoveries_due(&gw.settings, NOW);
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1.cluster, "partner_op");
}

fn api_config() -> Value {
    merge(
        base_config(),
        json!({
            "token_providers": [
                {"name": "corp", "validation": "jwt", "audiences": ["api"],
                 "op": {"issuer": ISSUER, "cluster": "op", "jwks_uri": "https://op.example.com/jwks"}},
                {"name": "partner", "validation": "jwt", "audiences": ["api"],
                 "op": {"issuer": PARTNER, "cluster": "partner_op",
                        "jwks_uri": "https://partner.example.net/jwks"}}
            ],
            "policy": {"applications": [
                {"name": "both", "hosts": ["gw.example.com"], "context_root": "/api", "type": "api",
                 "api": {"token_providers": ["corp", "partner"]},
                 "resources": [{"name": "all", "paths": ["/*"]}]},
                {"name": "corp-only", "hosts": ["gw.example.com"], "context_root": "/corp-api",
                 "type": "api", "api": {"token_providers": ["corp"]},
                 "resources": [{"name": "all", "paths": ["/*"]}]}
            ]}
        }),
    )
}

fn bearer(op: &Op, iss: &str) -> String {
    op.sign(json!({"iss": iss, "sub": "svc", "aud": "api", "exp": NOW + 300, "iat": NOW}))
}

/// A bearer request at `path`, with the JWKS `jwks` given if it is asked for.
fn api_call(gw: &mut Gateway, path: &str, token: &str, jwks: &Op) -> Action {
    let auth = format!("Bearer {token}");
    let h = head("GET", path, &[("authorization", auth.as_str())]);
    let mut flow = RequestFlow::new();
    match gw.request_in(&mut flow, &h) {
        Action::Callout(c) => {
            assert!(c.path.ends_with("/jwks"));
            let keys = CalloutResult::Response {
                status: 200,
                body: jwks.jwks(),
            };
            gw.answer(&mut flow, &h, keys)
        }
        other => other,
    }
}

#[test]
fn an_api_accepts_tokens_of_each_of_its_providers_checked_with_that_providers_keys() {
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&api_config());
    forward(api_call(&mut gw, "/api/x", &bearer(&corp, ISSUER), &corp));
    forward(api_call(
        &mut gw,
        "/api/x",
        &bearer(&partner, PARTNER),
        &partner,
    ));
    // The partner's issuer, signed with the corporate key (same kid): the partner's keys check
    // it, and refuse it.
    let forged = bearer(&corp, PARTNER);
    let r = respond(api_call(&mut gw, "/api/x", &forged, &partner));
    assert_eq!(r.status, 401, "{r:?}");
    // An issuer no provider has: refused without any key fetch.
    let stranger = bearer(&corp, "https://evil.example.org");
    let auth = format!("Bearer {stranger}");
    let r = respond(gw.request(&head("GET", "/api/x", &[("authorization", auth.as_str())])));
    assert_eq!(r.status, 401);
}

#[test]
fn a_token_good_for_one_api_is_not_reused_for_an_api_of_other_providers() {
    let (corp, partner) = (Op::new(), Op::new());
    let mut gw = Gateway::with(&api_config());
    let token = bearer(&partner, PARTNER);
    forward(api_call(&mut gw, "/api/x", &token, &partner));
    let auth = format!("Bearer {token}");
    let r = respond(gw.request(&head(
        "GET",
        "/corp-api/x",
        &[("authorization", auth.as_str())],
    )));
    assert_eq!(
        r.status, 401,
        "cached as valid for /api, but /corp-api accepts only corp"
    );
    forward(api_call(
        &mut gw,
        "/corp-api/x",
        &bearer(&corp, ISSUER),
        &corp,
    ));
}

fn refused(cfg: Value) -> String {
    Settings::from_json(cfg.to_string().as_bytes())
        .unwrap_err()
        .field
}

#[test]
fn names_are_checked_at_load() {
    let mut cfg = config("PA.partner");
    cfg["policy"]["applications"][1]["web_session"] = json!("nobody");
    assert_eq!(refused(cfg), "policy.applications[1].web_session");

    let mut cfg = config("PA.partner");
    cfg["web_sessions"][0]["name"] = json!("default");
    assert_eq!(refused(cfg), "web_sessions[0].name");

    let mut cfg = config("PA.partner");
    cfg["web_sessions"][0]["name"] = json!("Partner/x");
    assert_eq!(refused(cfg), "web_sessions[0].name");

    let mut cfg = config("PA.partner");
    cfg["web_sessions"][0]["client"]["redirect_uri"] = json!("https://gw.example.com/pa/oidc/cb");
    assert_eq!(refused(cfg), "web_sessions[0].client.redirect_uri");

    let mut cfg = config("PA.partner");
    cfg["web_sessions"][0]["session"]["idle_timeout_s"] = json!(0);
    assert_eq!(refused(cfg), "web_sessions[0].session.idle_timeout_s");

    let mut cfg = api_config();
    cfg["policy"]["applications"][0]["api"]["token_providers"] = json!(["corp", "nobody"]);
    assert_eq!(
        refused(cfg),
        "policy.applications[0].api.token_providers[1]"
    );

    let mut cfg = api_config();
    cfg["token_providers"][1]["op"]["issuer"] = json!(ISSUER);
    assert_eq!(
        refused(cfg),
        "policy.applications[0].api.token_providers[1]"
    );

    let mut cfg = api_config();
    cfg["token_providers"][1]["name"] = json!("corp");
    assert_eq!(refused(cfg), "token_providers[1].name");

    let mut cfg = api_config();
    cfg["token_providers"][0]["op"] = json!({"issuer": ISSUER, "cluster": "op"});
    assert_eq!(refused(cfg), "token_providers[0].op.jwks_uri");

    let mut cfg = api_config();
    cfg["policy"]["applications"][0]["api"]["audiences"] = json!(["x"]);
    assert_eq!(refused(cfg), "policy.applications[0].api.audiences");
}

#[test]
fn heartbeat_and_unknown_callbacks() {
    let mut gw = Gateway::with(&config("PA.partner"));
    let r = respond(gw.request(&head("GET", "/pa/heartbeat.ping", &[])));
    assert_eq!(r.status, 200);
    // A misspelt callback of a web session is refused, not passed to a backend.
    let r = respond(gw.request(&head("GET", "/PA/oidc/cb/partner?code=c", &[])));
    assert_eq!(r.status, 400);
    let _: HeaderList = head("GET", "/", &[]);
}

/// `config` with a JWT identity site for the applications `apps` name.
fn with_site(mut cfg: Value, subject: Option<Value>) -> Value {
    let mut site = json!({"name": "ids", "type": "jwt", "audience": "https://site",
                          "inject": {"header": "x-site-jwt"}});
    if let Some(s) = subject {
        site["subject"] = s;
    }
    cfg["authtoken"] = json!({"issuer": "envoy-wam",
        "keys": [{"kid": "gw", "alg": "ES256", "private_key_pem": GW_KEY}]});
    cfg["site_authenticators"] = json!([site]);
    cfg
}

#[test]
fn a_site_serves_the_users_of_one_web_session() {
    // Both applications behind one site: its token would not say which OP's `alice` it is.
    let mut cfg = with_site(config("PA.partner"), None);
    for app in [0, 1] {
        cfg["policy"]["applications"][app]["site_authenticator"] = json!("ids");
    }
    assert_eq!(refused(cfg), "policy.applications[1].site_authenticator");

    // Named: only that web session's applications may use it.
    let mut cfg = with_site(
        config("PA.partner"),
        Some(json!({"web_session": "partner"})),
    );
    cfg["policy"]["applications"][0]["site_authenticator"] = json!("ids");
    assert_eq!(refused(cfg), "policy.applications[0].site_authenticator");

    let mut cfg = with_site(config("PA.partner"), Some(json!({"web_session": "nobody"})));
    cfg["policy"]["applications"][1]["site_authenticator"] = json!("ids");
    assert_eq!(refused(cfg), "site_authenticators[0].subject.web_session");

    let mut cfg = with_site(
        config("PA.partner"),
        Some(json!({"web_session": "partner"})),
    );
    cfg["policy"]["applications"][1]["site_authenticator"] = json!("ids");
    let partner = Op::new();
    let mut gw = Gateway::with(&cfg);
    let (_, q, txn) = start(&mut gw, "/partner/x");
    let r = finish(
        &mut gw,
        &partner,
        PARTNER,
        "gw_partner",
        "/pa/oidc/cb/partner",
        &q,
        &txn,
    );
    let cookie = session_of(&r, "PA.partner");
    let f = forward(gw.request(&head("GET", "/partner/x", &[("cookie", &cookie)])));
    let jwt = f.request_headers.iter().find(|(n, _)| n == "x-site-jwt");
    assert!(jwt.and_then(|(_, v)| v.as_ref()).is_some(), "{f:?}");
}

#[test]
fn a_site_named_for_a_token_provider_mediates_no_session() {
    let mut cfg = with_site(api_config(), Some(json!({"token_provider": "partner"})));
    cfg["policy"]["applications"][0]["type"] = json!("both");
    cfg["policy"]["applications"][0]["site_authenticator"] = json!("ids");
    let partner = Op::new();
    let mut gw = Gateway::with(&cfg);
    let f = forward(api_call(
        &mut gw,
        "/api/x",
        &bearer(&partner, PARTNER),
        &partner,
    ));
    assert!(f
        .request_headers
        .iter()
        .any(|(n, v)| n == "x-site-jwt" && v.is_some()));
    // A corporate token is good for the application, but not mediated for this site.
    let corp = Op::new();
    let r = respond(api_call(&mut gw, "/api/x", &bearer(&corp, ISSUER), &corp));
    assert_eq!(r.status, 403, "{r:?}");

    let mut cfg = with_site(api_config(), Some(json!({"token_provider": "partner"})));
    cfg["policy"]["applications"][1]["site_authenticator"] = json!("ids");
    assert_eq!(refused(cfg), "policy.applications[1].site_authenticator");
}
