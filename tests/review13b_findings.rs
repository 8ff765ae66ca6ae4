//! review13b: findings of the review of the native revocation store, the borrowed headers and
//! the shared `Forward::header_changes`.

mod common;

use common::*;
use serde_json::json;

/// An identity header configured with an underscore (`x_wam_user`): a client's `x-wam-user`
/// (or `x-wam_user`) reads as the same header to a CGI, WSGI, PHP or Rack backend, so it must
/// not go upstream next to the gateway's value.
#[test]
fn a_dash_variant_of_an_underscore_identity_header_is_removed() {
    let config = merge(
        base_config(),
        json!({
            "identity_headers": [{"header": "x_wam_user", "claim": "sub"},
                                 {"header": "x-wam-groups", "claim": "groups"}],
            "policy": {"applications": [
                {"name": "corp", "hosts": ["gw.example.com"], "context_root": "/",
                 "resources": [{"name": "all", "paths": ["/*"]},
                               {"name": "open", "paths": ["/open/*"], "unprotected": true}]}
            ]}
        }),
    );
    let mut gw = Gateway::with(&config);
    let cookie = session_cookie(&gw.settings.default_web().session.keys, "alice", &["staff"]);
    for forged in ["x-wam-user", "x-wam_user", "X-Wam-User"] {
        for path in ["/corp", "/open/x"] {
            let h = head("GET", path, &[("cookie", &cookie), (forged, "admin")]);
            let fwd = forward(gw.request(&h));
            let lower = forged.to_ascii_lowercase();
            let removed = fwd.header_changes().any(|(n, v)| n == lower && v.is_none());
            assert!(removed, "{forged} on {path} goes upstream: {fwd:?}");
        }
    }
    // The exact names are still set or removed as before.
    let h = head(
        "GET",
        "/corp",
        &[("cookie", &cookie), ("x-wam-groups", "admins")],
    );
    let fwd = forward(gw.request(&h));
    assert!(fwd
        .header_changes()
        .any(|(n, v)| n == "x-wam-groups" && v == Some("staff")));
    assert!(fwd
        .header_changes()
        .any(|(n, v)| n == "x_wam_user" && v == Some("alice")));
}
