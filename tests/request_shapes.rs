//! Request shapes that must fail closed, driven through the whole flow natively: paths, hosts,
//! methods, headers and cookies as an attacker sends them, and what goes upstream when a request
//! is allowed.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use envoy_wam::config::Settings;
use envoy_wam::flow::HeaderList;
use envoy_wam::http::{Action, Forward};
use serde_json::{json, Value};

fn config() -> Value {
    json!({
        "op": {
            "issuer": ISSUER, "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks",
            "end_session_endpoint": "https://op.example.com/session/end"
        },
        "client": {"client_id": "pa_wam", "client_secret": "top-secret-value"},
        "session": {
            "signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([9u8; 32])}],
            "claims": ["groups"]
        },
        "identity_headers": [
            {"header": "x-wam-user", "claim": "sub"},
            {"header": "x-wam-groups", "claim": "groups"}
        ],
        "policy": {
            "unprotected_paths": ["/favicon.ico"],
            "applications": [
                {"name": "portal", "hosts": ["gw.example.com", "*.apps.example.com"], "type": "web",
                 "resources": [
                    {"name": "root", "paths": ["/*"]},
                    {"name": "public", "paths": ["/public/*"], "unprotected": true},
                    {"name": "admin", "paths": ["/admin/*"],
                     "rules": [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]}]},
                {"name": "secure", "hosts": ["secure.test"], "type": "web",
                 "resources": [{"name": "root", "paths": ["/*"],
                    "rules": [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]}]},
                {"name": "orders", "hosts": ["gw.example.com"], "context_root": "/api", "type": "api",
                 "api": {"validation": "jwt", "audiences": ["https://api"]},
                 "resources": [
                    {"name": "read", "paths": ["/*"], "methods": ["GET"]},
                    {"name": "write", "paths": ["/*"], "methods": ["POST"]}]},
                {"name": "cs", "hosts": ["cs.example.com"], "type": "web", "case_sensitive_paths": true,
                 "resources": [{"name": "root", "paths": ["/*"]},
                    {"name": "admin", "paths": ["/admin/*"],
                     "rules": [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]}]}
            ]
        }
    })
}

impl Gateway {
    fn new() -> Self {
        Self::with(&config())
    }

    fn send(&mut self, h: &HeaderList) -> Action {
        self.request(h)
    }

    fn status(&mut self, h: &HeaderList) -> u32 {
        match self.send(h) {
            Action::Respond(r) => r.status,
            Action::Forward(_) => 200,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn cookie(&self, sub: &str, groups: &[&str]) -> String {
        session_cookie(&self.settings.default_web().session.keys, sub, groups)
    }
}

fn req(host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> HeaderList {
    at(host, method, path, headers)
}

/// The request as the host would send it upstream: `removed`, then `identity` and
/// `request_headers` in order (set replaces every copy, `None` removes).
fn upstream(mut h: Vec<(String, Vec<u8>)>, f: &Forward) -> Vec<(String, Vec<u8>)> {
    for name in &f.removed {
        h.retain(|(n, _)| n != name);
    }
    for (name, value) in f.identity.iter().chain(f.request_headers.iter()) {
        h.retain(|(n, _)| n != name);
        if let Some(v) = value {
            h.push((name.clone(), v.as_bytes().to_vec()));
        }
    }
    h
}

fn values<'a>(h: &'a [(String, Vec<u8>)], name: &str) -> Vec<&'a [u8]> {
    h.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
        .collect()
}

fn pairs(h: &HeaderList) -> Vec<(String, Vec<u8>)> {
    h.to_vec()
}

#[test]
fn hostile_paths_are_the_admin_resource_or_refused() {
    let mut gw = Gateway::new();
    let bob = gw.cookie("bob", &["staff"]);
    let alice = gw.cookie("alice", &["admins"]);
    let host = "gw.example.com";
    for path in [
        "/admin",
        "/admin/",
        "/ADMIN/",
        "/Admin/x",
        "/admin;x/",
        "/admin;/",
        "/%61dmin/",
        "//admin/",
        "/public/../admin/",
        "/public/%2e%2e/admin/",
        "/public/%2e%2e;/admin/",
        "/public/.%2e;/admin/",
        "/public/%2e.;/admin/",
        "/public/..;/admin/",
    ] {
        let as_bob = req(host, "GET", path, &[("cookie", &bob)]);
        assert_eq!(gw.status(&as_bob), 403, "bob {path}");
        // alice gets in, and the backend gets the path the policy decided on.
        let f = forward(gw.send(&req(host, "GET", path, &[("cookie", &alice)])));
        let sent = upstream(pairs(&req(host, "GET", path, &[])), &f);
        let sent_path = String::from_utf8(values(&sent, ":path")[0].to_vec()).unwrap();
        assert!(
            sent_path.eq_ignore_ascii_case("/admin")
                || sent_path.eq_ignore_ascii_case("/admin/")
                || sent_path.eq_ignore_ascii_case("/admin/x"),
            "{path} went upstream as {sent_path}"
        );
        assert!(
            !sent_path.contains([';', '%']) && !sent_path.contains(".."),
            "{sent_path}"
        );
    }
    for path in [
        "/admin%2f",
        "/public%2f..%2fadmin/",
        "/admin%5c",
        "/public\\..\\admin\\",
        "/..",
        "/a/../..",
        "/%zz",
        "/%00",
        "/a%01b",
        "/%ff",
        "admin",
        "*",
        "/admin#x",
    ] {
        let r = respond(gw.send(&req(host, "GET", path, &[("cookie", &bob)])));
        assert_eq!(r.status, 400, "{path}");
    }
}

#[test]
fn unreadable_or_repeated_request_lines_are_refused() {
    let mut gw = Gateway::new();
    let mut no_path = HeaderList::new([(":method", "GET"), (":authority", "gw.example.com")]);
    assert_eq!(gw.status(&no_path), 400);
    no_path.push(":path", b"/x\xff");
    assert_eq!(gw.status(&no_path), 400);
    let mut two_paths = req("gw.example.com", "GET", "/public/x", &[]);
    two_paths.push(":path", b"/admin/");
    assert_eq!(gw.status(&two_paths), 400);
    let mut two_hosts = req("gw.example.com", "GET", "/public/x", &[]);
    two_hosts.push(":authority", b"secure.test");
    assert_eq!(gw.status(&two_hosts), 400);
}

#[test]
fn hosts_are_normalised_and_userinfo_refused() {
    let mut gw = Gateway::new();
    let bob = gw.cookie("bob", &["staff"]);
    for host in [
        "secure.test",
        "secure.test.",
        "SECURE.TEST",
        "secure.test.:443",
    ] {
        assert_eq!(
            gw.status(&req(host, "GET", "/x", &[("cookie", &bob)])),
            403,
            "{host}"
        );
    }
    for host in [
        "gw.example.com@secure.test",
        "secure.test@gw.example.com",
        "a b",
        "h:x",
    ] {
        assert_eq!(
            gw.status(&req(host, "GET", "/x", &[("cookie", &bob)])),
            400,
            "{host}"
        );
    }
    // No application for the host: refused, never a `*` fallback.
    assert_eq!(
        gw.status(&req("evil.example", "GET", "/x", &[("cookie", &bob)])),
        403
    );
}

#[test]
fn requests_no_resource_serves_are_refused_by_path_or_method() {
    let mut gw = Gateway::new();
    for method in ["PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = respond(gw.send(&req("gw.example.com", method, "/api/orders/1", &[])));
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header_value("allow"), Some("GET, POST"));
    }
    // GET without a token: the resource exists, so a challenge.
    assert_eq!(
        gw.status(&req("gw.example.com", "GET", "/api/orders/1", &[])),
        401
    );
}

#[test]
fn case_sensitive_applications_opt_out() {
    let mut gw = Gateway::new();
    let bob = gw.cookie("bob", &["staff"]);
    assert_eq!(
        gw.status(&req(
            "cs.example.com",
            "GET",
            "/admin/x",
            &[("cookie", &bob)]
        )),
        403
    );
    // `/ADMIN/x` is another resource (the root one) for this application, by its choice.
    assert_eq!(
        gw.status(&req(
            "cs.example.com",
            "GET",
            "/ADMIN/x",
            &[("cookie", &bob)]
        )),
        200
    );
}

#[test]
fn spoofed_identity_headers_and_gateway_cookies_never_go_upstream() {
    let mut gw = Gateway::new();
    let bob = gw.cookie("bob", &["staff"]);
    let mut h = req(
        "gw.example.com",
        "GET",
        "/app",
        &[
            ("x_wam_user", "alice"),
            ("X_Wam_Groups", "admins"),
            ("x-wam_user", "alice"),
            ("x-wam-user", "alice"),
            ("cookie", "theme=dark"),
            ("cookie", &bob),
        ],
    );
    h.push("x-wam-user", b"alice");
    h.push("cookie", b"PA.wam=stale; lang=\xff; PA.wam.txn.0=x; keep=1");
    let f = forward(gw.send(&h));
    let sent = upstream(pairs(&h), &f);
    assert_eq!(values(&sent, "x-wam-user"), vec![b"bob".as_slice()]);
    assert_eq!(values(&sent, "x-wam-groups"), vec![b"staff".as_slice()]);
    for spoof in ["x_wam_user", "x_wam_groups", "x-wam_user"] {
        assert!(values(&sent, spoof).is_empty(), "{spoof} survived");
    }
    assert_eq!(
        values(&sent, "cookie"),
        vec![b"theme=dark; keep=1".as_slice()]
    );

    // Anonymous on an unprotected resource: no identity at all goes upstream.
    let mut h = req(
        "gw.example.com",
        "GET",
        "/public/x",
        &[("x_wam_user", "alice")],
    );
    h.push("cookie", b"PA.wam=whatever");
    let f = forward(gw.send(&h));
    let sent = upstream(pairs(&h), &f);
    assert!(values(&sent, "x-wam-user").is_empty() && values(&sent, "x_wam_user").is_empty());
    assert!(values(&sent, "cookie").is_empty());
}

#[test]
fn redirects_go_to_configured_or_named_hosts_only() {
    let mut gw = Gateway::new();
    let browser = [("accept", "text/html")];
    let location = |gw: &mut Gateway, host: &str| {
        let r = respond(gw.send(&req(host, "GET", "/app", &browser)));
        assert_eq!(r.status, 302, "{host}");
        r.header_value("location").unwrap().to_string()
    };
    assert!(location(&mut gw, "gw.example.com")
        .contains("redirect_uri=https%3A%2F%2Fgw.example.com%2Fpa%2Foidc%2Fcb"));
    assert!(location(&mut gw, "a.apps.example.com")
        .contains("redirect_uri=https%3A%2F%2Fa.apps.example.com%2Fpa%2Foidc%2Fcb"));

    // A `*` application needs a configured redirect URI; with it, any Host gets that one.
    let mut star = config();
    star["policy"]["applications"][0]["hosts"] = json!(["*"]);
    let e = Settings::from_json(star.to_string().as_bytes()).unwrap_err();
    assert_eq!(e.field, "client.redirect_uri");
    star["client"]["redirect_uri"] = json!("https://gw.example.com/pa/oidc/cb");
    let mut gw = Gateway::with(&star);
    let loc = location(&mut gw, "evil.example");
    assert!(
        loc.contains("redirect_uri=https%3A%2F%2Fgw.example.com%2Fpa%2Foidc%2Fcb"),
        "{loc}"
    );
    let r = respond(gw.send(&req("evil.example", "GET", "/pa/oidc/logout", &[])));
    let loc = r.header_value("location").unwrap();
    assert!(
        loc.contains("post_logout_redirect_uri=https%3A%2F%2Fgw.example.com%2F"),
        "{loc}"
    );
}

#[test]
fn a_cross_site_logout_only_asks() {
    let mut gw = Gateway::new();
    let bob = gw.cookie("bob", &["staff"]);
    for extra in [
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
        ("origin", "https://evil.example"),
        ("origin", "null"),
    ] {
        let r = respond(gw.send(&req(
            "gw.example.com",
            "GET",
            "/pa/oidc/logout",
            &[("cookie", &bob), extra],
        )));
        assert_eq!(r.status, 200, "{extra:?}");
        assert!(r.header_value("set-cookie").is_none(), "{extra:?}");
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.contains("<form method=\"post\" action=\"/pa/oidc/logout\">"));
    }
    // The button posts from the gateway's own origin: that ends the session (the answer is
    // held until the other workers have ticked).
    let r = respond(gw.request_ticked(&req(
        "gw.example.com",
        "POST",
        "/pa/oidc/logout",
        &[
            ("cookie", &bob),
            ("origin", "https://gw.example.com"),
            ("sec-fetch-site", "same-origin"),
        ],
    )));
    assert_eq!(r.status, 302);
    assert!(r
        .header_value("set-cookie")
        .unwrap()
        .starts_with("PA.wam=;"));
}

#[test]
fn a_claim_that_cannot_be_a_header_value_never_goes_upstream() {
    let mut gw = Gateway::new();
    // A session minted with such a claim (the gateway would not issue one): no session.
    let cookie = gw.cookie("bob", &["staff\r\nx-admin: 1"]);
    let r = gw.send(&req(
        "gw.example.com",
        "GET",
        "/app",
        &[("cookie", &cookie)],
    ));
    assert!(
        matches!(r, Action::Respond(ref r) if r.status == 401),
        "{r:?}"
    );
}

#[test]
fn near_misses_of_endpoints_and_windows_names_are_refused() {
    let mut gw = Gateway::new();
    let bob = gw.cookie("bob", &["staff"]);
    for path in [
        "/PA/oidc/cb?code=c&state=s",
        "/pa/oidc/cb/",
        "/pa/oidc/logout/",
        "/Pa/Oidc/Logout",
        "/ADMINI~1/x",
        "/admin::$DATA",
        "/adm%C4%B1n/x",
        "/%E2%84%AApi/x",
    ] {
        assert_eq!(
            gw.status(&req("gw.example.com", "GET", path, &[("cookie", &bob)])),
            400,
            "{path}"
        );
    }
    // `~` elsewhere is an ordinary character.
    assert_eq!(
        gw.status(&req(
            "gw.example.com",
            "GET",
            "/~bob/x",
            &[("cookie", &bob)]
        )),
        200
    );
}

#[test]
fn the_authority_goes_upstream_as_the_decision_read_it() {
    let mut gw = Gateway::new();
    let alice = gw.cookie("alice", &["admins"]);
    for (sent, upstream_host) in [
        ("SECURE.TEST.", Some("secure.test")),
        ("secure.test:8443", Some("secure.test")),
        ("secure.test", None),
    ] {
        let h = req(sent, "GET", "/x", &[("cookie", &alice)]);
        let f = forward(gw.send(&h));
        let authority = f
            .request_headers
            .iter()
            .find(|(n, _)| n == ":authority")
            .and_then(|(_, v)| v.as_deref());
        assert_eq!(authority, upstream_host, "{sent}");
    }
}

#[test]
fn a_method_override_that_names_another_method_is_refused() {
    let mut gw = Gateway::new();
    let bob = gw.cookie("bob", &["staff"]);
    for (name, value) in [
        ("x-http-method-override", "DELETE"),
        ("X_HTTP_Method", "delete"),
        ("x-method-override", "PUT"),
    ] {
        let h = req(
            "gw.example.com",
            "POST",
            "/app",
            &[("cookie", &bob), (name, value)],
        );
        assert_eq!(gw.status(&h), 400, "{name}");
    }
    let h = req(
        "gw.example.com",
        "POST",
        "/app?_method=DELETE",
        &[("cookie", &bob)],
    );
    assert_eq!(gw.status(&h), 400);
    // Naming the request's own method changes nothing.
    let h = req(
        "gw.example.com",
        "POST",
        "/app",
        &[("cookie", &bob), ("x-http-method-override", "POST")],
    );
    assert_eq!(gw.status(&h), 200);
}

#[test]
fn every_spelling_of_the_method_override_parameter_counts() {
    let mut gw = Gateway::new();
    let bob = gw.cookie("bob", &["staff"]);
    for query in ["_METHOD=DELETE", "%5Fmethod=DELETE", "a=1&_Method=put"] {
        let path = format!("/app?{query}");
        let h = req("gw.example.com", "POST", &path, &[("cookie", &bob)]);
        assert_eq!(gw.status(&h), 400, "{query}");
    }
}
