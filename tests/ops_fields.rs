//! Operating a gateway (issue 12): the access-log fields the flow hands the host with its
//! answer, and the detailed heartbeat.

mod common;

use common::*;
use envoy_wam::flow::{AccessFields, RequestFlow};
use envoy_wam::http::Action;
use serde_json::{json, Value};

fn config(access_log_fields: bool) -> Value {
    merge(
        base_config(),
        json!({
            "access_log_fields": access_log_fields,
            "heartbeat": {"detailed": true},
            "policy": {"applications": [
                {"name": "portal", "hosts": ["gw.example.com"], "context_root": "/", "type": "web",
                 "resources": [
                    {"name": "root", "paths": ["/*"]},
                    {"name": "public", "paths": ["/public/*"], "unprotected": true},
                    {"name": "admin", "paths": ["/admin/*"],
                     "rules": [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]}]},
                {"name": "orders", "hosts": ["gw.example.com"], "context_root": "/api", "type": "api",
                 "api": {"validation": "jwt", "audiences": ["https://api.example.com"]},
                 "resources": [{"name": "all", "paths": ["/*"]}]}
            ]}
        }),
    )
}

/// The fields `flow` hands over with its answer to `path` (with `cookie`, if any).
fn fields(gw: &mut Gateway, path: &str, cookie: Option<&str>) -> (Action, Option<AccessFields>) {
    let mut headers = vec![("accept", "text/html")];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    let mut flow = RequestFlow::new();
    let action = gw.request_in(&mut flow, &at("gw.example.com", "GET", path, &headers));
    (action, flow.take_access_fields())
}

fn expect(
    sub: Option<&str>,
    app: Option<&str>,
    res: Option<&str>,
    dec: &'static str,
) -> Option<AccessFields> {
    Some(AccessFields {
        subject: sub.map(str::to_string),
        application: app.map(str::to_string),
        resource: res.map(str::to_string),
        decision: Some(dec),
    })
}

#[test]
fn each_outcome_hands_the_access_log_its_fields() {
    let mut gw = Gateway::with(&config(true));
    let alice = session_cookie(
        &gw.settings.default_web().session.keys,
        "alice",
        &["admins"],
    );
    let bob = session_cookie(&gw.settings.default_web().session.keys, "bob", &["staff"]);

    let (a, f) = fields(&mut gw, "/admin/x", Some(&alice));
    assert!(matches!(a, Action::Forward(_)));
    assert_eq!(
        f,
        expect(Some("alice"), Some("portal"), Some("admin"), "allow")
    );

    let (a, f) = fields(&mut gw, "/admin/x", Some(&bob));
    assert_eq!(respond(a).status, 403);
    assert_eq!(
        f,
        expect(Some("bob"), Some("portal"), Some("admin"), "deny")
    );

    let (a, f) = fields(&mut gw, "/", None);
    assert_eq!(respond(a).status, 302);
    assert_eq!(f, expect(None, Some("portal"), Some("root"), "login"));

    let (_, f) = fields(&mut gw, "/public/a", None);
    // An unprotected resource is the policy's decision; a global unprotected path is not.
    assert_eq!(f, expect(None, Some("portal"), Some("public"), "allow"));

    // A bearer token that is not one: refused before any key is fetched.
    let mut flow = RequestFlow::new();
    let junk = at(
        "gw.example.com",
        "GET",
        "/api/x",
        &[("authorization", "Bearer junk")],
    );
    let a = gw.request_in(&mut flow, &junk);
    assert_eq!(respond(a).status, 401);
    let f = flow.take_access_fields();
    assert_eq!(
        f,
        expect(None, Some("orders"), Some("all"), "invalid_identity")
    );

    let mut flow = RequestFlow::new();
    let a = gw.request_in(&mut flow, &at("other.example.com", "GET", "/", &[]));
    assert_eq!(respond(a).status, 403);
    assert_eq!(
        flow.take_access_fields(),
        expect(None, None, None, "refused")
    );
    assert_eq!(flow.take_access_fields(), None, "handed over once");
}

#[test]
fn without_the_switch_nothing_is_kept() {
    let mut gw = Gateway::with(&config(false));
    let alice = session_cookie(
        &gw.settings.default_web().session.keys,
        "alice",
        &["admins"],
    );
    let (a, f) = fields(&mut gw, "/admin/x", Some(&alice));
    assert!(matches!(a, Action::Forward(_)));
    assert_eq!(f, None);
}

#[test]
fn the_detailed_heartbeat_says_what_sign_in_needs() {
    let mut gw = Gateway::with(&config(false));
    let r = respond(gw.request(&at("gw.example.com", "GET", "/pa/heartbeat.ping", &[])));
    assert_eq!(r.status, 200);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["ops"][0]["issuer"], ISSUER);
    assert_eq!(body["ops"][0]["endpoints"], "configured");
    assert_eq!(body["ops"][0]["jwks"]["state"], "not_fetched");

    // Discovery that has not answered: this worker cannot send anyone to the OP.
    let mut discovering = config(false);
    discovering["op"] = json!({"issuer": ISSUER, "cluster": "op", "discovery": true});
    let mut gw = Gateway::with(&discovering);
    let r = respond(gw.request(&at("gw.example.com", "GET", "/pa/heartbeat.ping", &[])));
    assert_eq!(r.status, 503);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["ops"][0]["endpoints"], "missing");
}
