//! The removals of identity headers a request does not carry are marked, so the host layer
//! makes no host call for them: with several web sessions every request removes the others'
//! identity headers, and each removal would otherwise cost a call across the proxy-wasm boundary.

mod common;

use common::*;
use envoy_wam::http::Forward;
use serde_json::json;

fn config() -> serde_json::Value {
    merge(
        base_config(),
        json!({
            "identity_headers": [{"header": "x-wam-user", "claim": "sub"},
                                 {"header": "x-wam-groups", "claim": "groups"}],
            "web_sessions": [{
                "name": "partner",
                "op": {"issuer": "https://partner.example.net", "cluster": "partner_op",
                       "authorization_endpoint": "https://partner.example.net/authorize",
                       "token_endpoint": "https://partner.example.net/token",
                       "jwks_uri": "https://partner.example.net/jwks"},
                "client": {"client_id": "gw_partner", "client_secret": "partner-secret-value"},
                "session": {"cookie_name": "PA.partner", "signing_keys": [
                    {"kid": "k1", "secret": "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk"}]},
                "identity_headers": [{"header": "x-partner-user", "claim": "sub"},
                                     {"header": "x-partner-groups", "claim": "groups"}]
            }],
            "policy": {"applications": [
                {"name": "corp", "hosts": ["gw.example.com"], "context_root": "/",
                 "resources": [{"name": "all", "paths": ["/*"]},
                               {"name": "open", "paths": ["/open/*"], "unprotected": true}]},
                {"name": "partner", "hosts": ["gw.example.com"], "context_root": "/partner",
                 "web_session": "partner", "resources": [{"name": "all", "paths": ["/*"]}]}
            ]}
        }),
    )
}

/// The identity operations a host layer carries out (`Forward::header_changes`, which both
/// hosts apply): (header, value) in order.
fn made(fwd: &Forward) -> Vec<(String, Option<String>)> {
    let identity = |name: &str| fwd.identity.iter().any(|(n, _)| n == name);
    fwd.header_changes()
        .filter(|(name, _)| identity(name))
        .map(|(n, v)| op(n, v))
        .collect()
}

fn op(name: &str, value: Option<&str>) -> (String, Option<String>) {
    (name.to_string(), value.map(str::to_string))
}

#[test]
fn only_removals_of_headers_the_request_carries_are_made() {
    let mut gw = Gateway::with(&config());
    let cookie = session_cookie(&gw.settings.default_web().session.keys, "alice", &["staff"]);
    // A client copy of one partner header: that removal is made, the other is not needed.
    let h = head(
        "GET",
        "/corp",
        &[("cookie", &cookie), ("x-partner-user", "mallory")],
    );
    let fwd = forward(gw.request(&h));
    assert_eq!(fwd.identity.len(), 4, "{fwd:?}");
    assert_eq!(
        made(&fwd),
        [
            op("x-wam-user", Some("alice")),
            op("x-wam-groups", Some("staff")),
            op("x-partner-user", None),
        ]
    );

    // Without a session (an unprotected resource): every removal, only of what was sent.
    let h = head("GET", "/open/x", &[("x-wam-groups", "admins")]);
    let fwd = forward(gw.request(&h));
    assert_eq!(made(&fwd), [op("x-wam-groups", None)]);
    assert!(fwd.identity.iter().all(|(_, v)| v.is_none()));
}
