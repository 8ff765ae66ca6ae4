//! Two OPs in one configuration: the default web session at the corporate OP (`/`), the
//! `partner` web session at the partner's (`/partner`), and what reading their answers needs.

use envoy_wam::http::LocalResponse;
use serde_json::{json, Map, Value};

use super::{base_config, merge};

pub const PARTNER: &str = "https://partner.example.net";

/// The `partner` web session, its cookie `cookie_name`, its keys from `secret` (base64).
pub fn partner_session(cookie_name: &str, secret: &str) -> Value {
    json!({
        "name": "partner",
        "op": {
            "issuer": PARTNER, "cluster": "partner_op",
            "authorization_endpoint": "https://partner.example.net/authorize",
            "token_endpoint": "https://partner.example.net/token",
            "jwks_uri": "https://partner.example.net/jwks",
            "end_session_endpoint": "https://partner.example.net/logout"
        },
        "client": {"client_id": "gw_partner", "client_secret": "partner-secret-value",
                   "redirect_uri": "https://gw.example.com/pa/oidc/cb/partner"},
        "session": {
            "cookie_name": cookie_name,
            "idle_timeout_s": 600,
            "signing_keys": [{"kid": "k1", "secret": secret}]
        },
        "identity_headers": [{"header": "x-partner-user", "claim": "sub"}]
    })
}

/// The corporate OP signs in `/`, the partner OP `/partner/` (see [`partner_session`]).
pub fn two_op_config(cookie_name: &str, secret: &str) -> Value {
    merge(
        base_config(),
        json!({
            "identity_headers": [{"header": "x-wam-user", "claim": "sub"}],
            "web_sessions": [partner_session(cookie_name, secret)],
            "policy": {"applications": [
                {"name": "corp", "hosts": ["gw.example.com"], "context_root": "/",
                 "resources": [{"name": "all", "paths": ["/*"]}]},
                {"name": "partner", "hosts": ["gw.example.com"], "context_root": "/partner",
                 "web_session": "partner", "resources": [{"name": "all", "paths": ["/*"]}]}
            ]}
        }),
    )
}

pub fn set_cookies(r: &LocalResponse) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.clone())
        .collect()
}

/// `name=value` of a `Set-Cookie`.
pub fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_string()
}

pub fn query(location: &str) -> Map<String, Value> {
    url::Url::parse(location)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
        .collect()
}
