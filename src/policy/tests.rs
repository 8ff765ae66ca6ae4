use serde_json::{json, Map, Value};

use super::route::strip_port;
use super::*;
use crate::request::HeaderList;

const MON_10_UTC: u64 = 1_700_481_600; // Monday 2023-11-20 12:00 UTC

fn policy(v: Value) -> Policy {
    let v = with_roots(v);
    compile(&RawPolicy::from_json(v.to_string().as_bytes()).unwrap()).unwrap()
}

/// Fixtures written before every application needed a resource: each application without
/// `resources` gets a root resource (which is what it meant).
fn with_roots(mut v: Value) -> Value {
    let apps = v.get_mut("applications").and_then(Value::as_array_mut);
    for app in apps.into_iter().flatten() {
        if let Some(o) = app.as_object_mut() {
            o.entry("resources")
                .or_insert_with(|| json!([{"name": "root", "paths": ["/*"]}]));
        }
    }
    v
}

fn refused(v: Value) -> ConfigErrorView {
    let v = with_roots(v);
    let e = RawPolicy::from_json(v.to_string().as_bytes())
        .and_then(|raw| compile(&raw))
        .unwrap_err();
    ConfigErrorView(e.field, e.message)
}
#[derive(Debug)]
struct ConfigErrorView(String, String);

/// An application with `rules` and `resources`, and a root resource for the rest (every
/// request must match a resource; the root one has no rules of its own).
fn app(rules: Value, resources: Value) -> Value {
    let mut resources = resources;
    if let Some(list) = resources.as_array_mut() {
        list.push(json!({"name": "root", "paths": ["/*"]}));
    }
    json!({"applications": [{"name": "a", "hosts": ["a.example"], "rules": rules, "resources": resources}]})
}

/// A policy whose application has exactly one rule.
fn one_rule(rule: Value) -> Policy {
    policy(app(json!([rule]), json!([])))
}

struct Req {
    method: &'static str,
    path: &'static str,
    query: &'static str,
    headers: HeaderList,
    ip: Option<IpAddr>,
    now: u64,
    claims: Map<String, Value>,
    scopes: Vec<String>,
    logged_in: bool,
}

fn req() -> Req {
    Req {
        method: "GET",
        path: "/",
        query: "",
        headers: HeaderList::default(),
        ip: Some("192.0.2.7".parse().unwrap()),
        now: MON_10_UTC,
        claims: json!({"groups": ["staff", "Admins"], "email": "Bob@Example.com", "level": 3})
            .as_object()
            .unwrap()
            .clone(),
        scopes: vec!["read".into(), "write".into()],
        logged_in: true,
    }
}

impl Req {
    fn decide<'p>(&self, p: &'p Policy) -> Decision<'p> {
        let facts = RequestFacts {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            client_ip: self.ip,
            now: self.now,
            now_ms: self.now * 1000,
            identity: self.logged_in.then_some(Identity {
                sub: "bob",
                claims: &self.claims,
                scopes: &self.scopes,
            }),
        };
        match p.route("a.example", self.path, self.method) {
            Target::App { app, resource } => {
                app.evaluate(Some(resource), &facts, &mut RateLimits::default())
            }
            t => panic!("unexpected target {t:?}"),
        }
    }
    fn allowed(&self, p: &Policy) -> bool {
        self.decide(p).allowed()
    }
}

#[test]
fn attribute_equals_one_of_like_lists_case_and_negation() {
    let r = req();
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "groups", "equals": "staff"})
    )));
    assert!(!r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "groups", "equals": "admins"})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "groups", "equals": "admins", "case_insensitive": true})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "groups", "one_of": ["x", "Admins"]})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "email", "like": "*@example.com", "case_insensitive": true})
    )));
    assert!(!r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "email", "like": "*@example.com"})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "level", "equals": "3"})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "sub", "equals": "bob"})
    )));
    assert!(!r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "groups", "equals": "staff", "negate": true})
    )));
    // A missing claim matches nothing, so its negation passes.
    assert!(!r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "nope", "equals": "x"})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "nope", "equals": "x", "negate": true})
    )));
}

#[test]
fn scope_all_and_any() {
    let r = req();
    assert!(r.allowed(&one_rule(
        json!({"type": "scope", "all": ["read", "write"]})
    )));
    assert!(!r.allowed(&one_rule(
        json!({"type": "scope", "all": ["read", "admin"]})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "scope", "any": ["admin", "read"]})
    )));
    assert!(!r.allowed(&one_rule(json!({"type": "scope", "any": ["admin"]}))));
}

#[test]
fn identity_rules_without_identity_ask_for_login() {
    let mut r = req();
    r.logged_in = false;
    let p = policy(app(
        json!([{"type": "attribute", "claim": "groups", "equals": "staff"}]),
        json!([{"name": "anon", "paths": ["/anon/*"], "anonymous": true},
               {"name": "open", "paths": ["/open/*"], "unprotected": true}]),
    ));
    assert_eq!(
        r.decide(&p),
        Decision::new(Outcome::NeedIdentity, "authentication")
    );
    r.path = "/anon/x";
    assert_eq!(r.decide(&p).outcome, Outcome::NeedIdentity);
    assert_eq!(r.decide(&p).rule, "applications[0].rules[0]");
    // Unprotected: logging in would not help, and the identity is ignored even when present.
    r.path = "/open/x";
    assert_eq!(r.decide(&p).outcome, Outcome::Forbidden);
    r.logged_in = true;
    assert_eq!(r.decide(&p).outcome, Outcome::Forbidden);
    r.path = "/anon/x";
    assert!(r.allowed(&p));
}

#[test]
fn network_v4_v6_mapped_and_negated() {
    let mut r = req();
    let p = one_rule(json!({"type": "network", "cidrs": ["192.0.2.0/24", "2001:db8::/32"]}));
    assert!(r.allowed(&p));
    r.ip = Some("::ffff:192.0.2.9".parse().unwrap());
    assert!(r.allowed(&p));
    r.ip = Some("2001:db8:1::5".parse().unwrap());
    assert!(r.allowed(&p));
    r.ip = Some("198.51.100.1".parse().unwrap());
    assert!(!r.allowed(&p));
    r.ip = None;
    assert!(!r.allowed(&p));
    let neg = one_rule(json!({"type": "network", "cidrs": ["10.0.0.0/8"], "negate": true}));
    assert!(!r.allowed(&neg), "unknown address never passes");
    r.ip = Some("10.1.2.3".parse().unwrap());
    assert!(!r.allowed(&neg));
    r.ip = Some("11.1.2.3".parse().unwrap());
    assert!(r.allowed(&neg));
    let all = one_rule(json!({"type": "network", "cidrs": ["0.0.0.0/0", "::/0", "203.0.113.5"]}));
    assert!(r.allowed(&all));
}

#[test]
fn time_days_hours_offset_and_midnight() {
    let mut r = req(); // Monday 12:00 UTC
    let office = |off: &str| {
        one_rule(
            json!({"type": "time", "days": ["mon", "Tuesday"], "from": "08:00", "to": "13:00", "utc_offset": off}),
        )
    };
    assert!(r.allowed(&office("Z")));
    assert!(!r.allowed(&office("+02:00"))); // 14:00 local
    assert!(r.allowed(&office("-03:30"))); // 08:30 local
    r.now = MON_10_UTC - 13 * 3600; // Sunday 23:00 UTC
    assert!(!r.allowed(&office("+00:00")));
    assert!(r.allowed(&office("+10:00"))); // Monday 09:00 local
    let night = one_rule(json!({"type": "time", "from": "22:00", "to": "06:00"}));
    assert!(r.allowed(&night));
    r.now = MON_10_UTC;
    assert!(!r.allowed(&night));
}

#[test]
fn time_local_day_follows_offset() {
    let mut r = req();
    r.now = MON_10_UTC - 13 * 3600; // Sunday 23:00 UTC = Monday 09:00 at +10:00
    let p = one_rule(json!({"type": "time", "days": ["mon"], "utc_offset": "+10:00"}));
    assert!(r.allowed(&p));
}

#[test]
fn method_header_and_query_rules() {
    let mut r = req();
    let m = one_rule(json!({"type": "method", "methods": ["get", "HEAD"]}));
    assert!(r.allowed(&m));
    r.method = "POST";
    assert!(!r.allowed(&m));

    // A value the client chose passes a test only when every copy a backend could read does:
    // list items, repeated headers, `_` spellings, repeated or case-varied query parameters.
    r.headers = HeaderList::new([("X-Tenant", "green"), ("accept", "text/html")]);
    let green = one_rule(json!({"type": "header", "header": "X-Tenant", "equals": "green"}));
    assert!(r.allowed(&green));
    r.headers = HeaderList::new([("X-Tenant", "blue, green")]);
    assert!(!r.allowed(&green));
    r.headers = HeaderList::new([("X-Tenant", "green"), ("x_tenant", "blue")]);
    assert!(!r.allowed(&green));
    r.headers = HeaderList::new([("X-Tenant", "green")]);
    r.headers.push("x-tenant", b"\xffgreen");
    assert!(!r.allowed(&green));
    assert!(!r.allowed(&one_rule(
        json!({"type": "header", "header": "x-tenant", "equals": "red"})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "header", "header": "x-tenant", "present": true})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "header", "header": "x-nope", "present": true, "negate": true})
    )));
    r.headers = HeaderList::new([("x_nope", "1")]);
    assert!(!r.allowed(&one_rule(
        json!({"type": "header", "header": "x-nope", "present": true, "negate": true})
    )));

    let read_only = one_rule(json!({"type": "query", "param": "mode", "equals": "read only"}));
    r.query = "a=1&mode=read%20only";
    assert!(r.allowed(&read_only));
    for q in [
        "mode=read%20only&mode=x",
        "mode=x&mode=read%20only",
        "mode=read%20only&MODE=x",
    ] {
        r.query = q;
        assert!(!r.allowed(&read_only), "{q}");
    }
    assert!(!r.allowed(&one_rule(
        json!({"type": "query", "param": "mode", "equals": "write"})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "query", "param": "b", "present": true, "negate": true})
    )));
}

#[test]
fn redirect_rule() {
    let p = policy(app(
        json!([{"type": "any", "rules": [
            {"type": "network", "cidrs": ["10.0.0.0/8"]},
            {"type": "redirect", "name": "to-vpn", "url": "https://vpn.example/", "status": 307}
        ]}]),
        json!([]),
    ));
    let d = req().decide(&p);
    assert_eq!(
        d.outcome,
        Outcome::Redirect {
            url: "https://vpn.example/",
            status: 307
        }
    );
    assert_eq!(d.rule, "to-vpn");
}

#[test]
fn all_any_nesting_and_named_sets() {
    let p = policy(json!({
        "rule_sets": [
            {"name": "admins", "mode": "any", "rules": [
                {"type": "attribute", "claim": "groups", "equals": "root"},
                {"type": "rule_set", "name": "office"}
            ]},
            {"name": "office", "rules": [
                {"type": "network", "cidrs": ["192.0.2.0/24"]},
                {"type": "method", "name": "reads", "methods": ["GET"]}
            ]}
        ],
        "applications": [{"name": "a", "hosts": ["a.example"],
            "rules": [{"type": "rule_set", "name": "admins"}],
            "resources": [{"name": "r", "paths": ["/*"], "rules": [
                {"type": "all", "rules": [
                    {"type": "scope", "any": ["read"]},
                    {"type": "any", "name": "inner", "rules": [
                        {"type": "attribute", "claim": "groups", "equals": "nobody"},
                        {"type": "attribute", "claim": "groups", "equals": "staff"}
                    ]}
                ]}
            ]}]}]
    }));
    let mut r = req();
    let d = r.decide(&p);
    assert!(d.allowed());
    // A passing `all` reports itself: here the resource's rule list.
    assert_eq!(d.rule, "a:r");
    r.method = "POST";
    let d = r.decide(&p);
    // `any` of [root (fails), office (fails at `reads`)]: the last refusal is reported.
    assert_eq!(d, Decision::new(Outcome::Forbidden, "reads"));
    r.method = "GET";
    r.claims.insert("groups".into(), json!(["other"]));
    let d = r.decide(&p);
    assert_eq!(
        d,
        Decision::new(
            Outcome::Forbidden,
            "applications[0].resources[0].rules[0].rules[1].rules[1]"
        )
    );
}

#[test]
fn all_stops_at_first_failure_and_any_at_first_success() {
    let p = one_rule(json!({"type": "all", "rules": [
        {"type": "method", "name": "m1", "methods": ["POST"]},
        {"type": "redirect", "name": "never", "url": "https://x.example/"}
    ]}));
    assert_eq!(req().decide(&p).rule, "m1");
    let p = one_rule(json!({"type": "any", "rules": [
        {"type": "method", "name": "m1", "methods": ["GET"]},
        {"type": "redirect", "name": "never", "url": "https://x.example/"}
    ]}));
    assert!(req().allowed(&p));
    let any = Node {
        label: "set".into(),
        kind: Kind::Any(vec![Node {
            label: "m1".into(),
            kind: Kind::Method(vec!["GET".into()]),
            rejection: None,
        }]),
        rejection: None,
    };
    let headers = HeaderList::default();
    let facts = RequestFacts {
        method: "GET",
        path: "/",
        query: "",
        headers: &headers,
        client_ip: None,
        now: 0,
        now_ms: 0,
        identity: None,
    };
    let mut limits = RateLimits::default();
    let mut cx = Cx {
        facts: &facts,
        limits: &mut limits,
        app: "a",
        resource: None,
    };
    assert_eq!(evaluate(&any, &mut cx), Decision::new(Outcome::Allow, "m1"));
    // An empty rule list allows, an empty `any` does not.
    assert!(req().allowed(&policy(app(json!([]), json!([])))));
    assert!(!req().allowed(&one_rule(json!({"type": "any", "rules": []}))));
}

#[test]
fn any_prefers_login_over_refusal() {
    let mut r = req();
    r.logged_in = false;
    let p = policy(app(
        json!([{"type": "any", "rules": [
            {"type": "attribute", "claim": "groups", "equals": "staff"},
            {"type": "network", "cidrs": ["10.0.0.0/8"]}
        ]}]),
        json!([{"name": "anon", "paths": ["/*"], "anonymous": true}]),
    ));
    assert_eq!(r.decide(&p).outcome, Outcome::NeedIdentity);
}

#[test]
fn application_rules_run_before_resource_rules() {
    let p = policy(app(
        json!([{"type": "method", "name": "app", "methods": ["GET"]}]),
        json!([{"name": "r", "paths": ["/*"], "rules": [{"type": "method", "name": "res", "methods": ["POST"]}]}]),
    ));
    let mut r = req();
    assert_eq!(r.decide(&p).rule, "res");
    r.method = "PUT";
    assert_eq!(r.decide(&p).rule, "app");
}

fn resource_name(p: &Policy, host: &str, path: &str, method: &str) -> Option<String> {
    match p.route(host, path, method) {
        Target::App { resource, .. } => Some(resource.name.clone()),
        _ => None,
    }
}

#[test]
fn automatic_order_most_specific_first() {
    let p = policy(
        json!({"applications": [{"name": "a", "hosts": ["h"], "resources": [
            {"name": "all", "paths": ["/*"]},
            {"name": "admin", "paths": ["/admin/*"]},
            {"name": "admin-css", "paths": ["/admin/*.css"]},
            {"name": "exact", "paths": ["/admin/login"]},
            {"name": "post-only", "paths": ["/admin/users/*"], "methods": ["POST"]}
        ]}]}),
    );
    assert_eq!(resource_name(&p, "h", "/x", "GET").as_deref(), Some("all"));
    assert_eq!(
        resource_name(&p, "h", "/admin/a", "GET").as_deref(),
        Some("admin")
    );
    assert_eq!(
        resource_name(&p, "h", "/admin/a.css", "GET").as_deref(),
        Some("admin-css")
    );
    assert_eq!(
        resource_name(&p, "h", "/admin/login", "GET").as_deref(),
        Some("exact")
    );
    assert_eq!(
        resource_name(&p, "h", "/admin/users/1", "POST").as_deref(),
        Some("post-only")
    );
    // Method mismatch falls through to the next pattern.
    assert_eq!(
        resource_name(&p, "h", "/admin/users/1", "GET").as_deref(),
        Some("admin")
    );
}

#[test]
fn manual_order_first_match_wins() {
    let p = policy(
        json!({"applications": [{"name": "a", "hosts": ["h"], "ordering": "manual", "resources": [
            {"name": "all", "paths": ["/*"]},
            {"name": "admin", "paths": ["/admin/*"]}
        ]}]}),
    );
    assert_eq!(
        resource_name(&p, "h", "/admin/a", "GET").as_deref(),
        Some("all")
    );
}

#[test]
fn host_and_context_root_matching() {
    let p = policy(
        json!({"default_decision": "allow", "unprotected_paths": ["/health", "/static/*"], "applications": [
            {"name": "any", "hosts": ["*"], "resources": [{"name": "r", "paths": ["/*"]}]},
            {"name": "wild", "hosts": ["*.example.com"], "resources": [{"name": "r", "paths": ["/*"]}]},
            {"name": "exact", "hosts": ["App.Example.com"], "resources": [{"name": "r", "paths": ["/*"]}]},
            {"name": "exact-api", "hosts": ["app.example.com"], "context_root": "/api/", "type": "api",
             "api": {"validation": "introspection"},
             "resources": [{"name": "r", "paths": ["/v1/*"]}]},
            {"name": "port", "hosts": ["app.example.com:8443"], "context_root": "/p"}
        ]}),
    );
    let app_of = |host: &str, path: &str| match p.route(host, path, "GET") {
        Target::App { app, .. } => app.name.clone(),
        t => format!("{t:?}"),
    };
    assert_eq!(app_of("app.example.com", "/x"), "exact");
    assert_eq!(app_of("APP.example.com:443", "/x"), "exact");
    assert_eq!(app_of("app.example.com", "/api/v1/x"), "exact-api");
    // `/api` is the application's, but none of its resources serves it.
    assert!(app_of("app.example.com", "/api")
        .starts_with("NoResource { app: Application { name: \"exact-api\""));
    assert_eq!(app_of("app.example.com", "/apiary"), "exact");
    assert_eq!(app_of("app.example.com:8443", "/p/x"), "port");
    assert_eq!(app_of("app.example.com", "/p/x"), "exact");
    assert_eq!(app_of("a.b.example.com", "/x"), "wild");
    assert_eq!(app_of("example.com", "/x"), "any");
    // A global unprotected path still names the application whose backend gets it.
    let unprotected_for = |host: &str, path: &str| match p.route(host, path, "GET") {
        Target::Unprotected(app) => app.map(|a| a.name.clone()),
        t => panic!("{t:?}"),
    };
    assert_eq!(unprotected_for("other", "/health").as_deref(), Some("any"));
    assert_eq!(
        unprotected_for("app.example.com", "/static/a.js").as_deref(),
        Some("exact")
    );
    // Inside the API app, a path matching no resource is refused, not left to the app's rules.
    assert!(matches!(
        p.route("app.example.com", "/api/v2", "GET"),
        Target::NoResource { .. }
    ));

    let none = policy(json!({"applications": []}));
    assert!(matches!(
        none.route("h", "/", "GET"),
        Target::NoApplication(DefaultDecision::Deny)
    ));
    assert!(matches!(p.route("", "/", "GET"), Target::App { .. }));
}

#[test]
fn app_type_tells_api_requests() {
    assert!(!AppType::Web.is_api_request(true, None));
    assert!(AppType::Api.is_api_request(false, Some("text/html")));
    assert!(AppType::Both.is_api_request(true, Some("text/html")));
    assert!(!AppType::Both.is_api_request(false, Some("text/html,application/xhtml+xml")));
    assert!(AppType::Both.is_api_request(false, Some("application/json")));
}

#[test]
fn glob_and_helpers_do_not_panic() {
    assert!(glob(b"*", b""));
    assert!(glob(b"/a/*/c", b"/a/b/x/c"));
    assert!(!glob(b"/a/*/c", b"/a/b/x/d"));
    assert!(glob(b"**a*", b"xxa"));
    assert!(!glob(b"", b"x"));
    assert_eq!(strip_port("[::1]:80"), "[::1]");
    assert_eq!(strip_port("::1"), "::1");
    let p = policy(app(json!([]), json!([])));
    for (h, path) in [("", ""), ("\u{e9}:", "\u{e9}"), (":", "?"), ("[", "//")] {
        let _ = p.route(h, path, "");
    }
}

#[test]
fn malformed_configuration_names_the_field() {
    let rule = |r: Value| {
        app(
            json!([]),
            json!([{"name": "r", "paths": ["/*"], "rules": [{"type": "method", "methods": ["GET"]}, r]}]),
        )
    };
    let at = "applications[0].resources[0].rules[1]";
    let cases: Vec<(Value, String)> = vec![
        (
            rule(json!({"type": "network", "cidrs": ["10.0.0.0/33"]})),
            format!("{at}.cidrs[0]"),
        ),
        (
            rule(json!({"type": "network", "cidrs": ["10.0.0.1/8"]})),
            format!("{at}.cidrs[0]"),
        ),
        (
            rule(json!({"type": "network", "cidrs": ["nope"]})),
            format!("{at}.cidrs[0]"),
        ),
        (
            rule(json!({"type": "network", "cidrs": []})),
            format!("{at}.cidrs"),
        ),
        (
            rule(json!({"type": "attribute", "claim": "g"})),
            at.to_string(),
        ),
        (
            rule(json!({"type": "attribute", "claim": "g", "equals": "a", "like": "b"})),
            at.to_string(),
        ),
        (
            rule(json!({"type": "attribute", "claim": "", "equals": "a"})),
            format!("{at}.claim"),
        ),
        (
            rule(json!({"type": "attribute", "claim": "g", "one_of": []})),
            format!("{at}.one_of"),
        ),
        (
            rule(json!({"type": "scope", "all": ["a"], "any": ["b"]})),
            at.to_string(),
        ),
        (
            rule(json!({"type": "scope", "all": ["a b"]})),
            format!("{at}.all"),
        ),
        (
            rule(json!({"type": "time", "days": ["funday"]})),
            format!("{at}.days[0]"),
        ),
        (
            rule(json!({"type": "time", "from": "25:00"})),
            format!("{at}.from"),
        ),
        (
            rule(json!({"type": "time", "to": "8:00"})),
            format!("{at}.to"),
        ),
        (
            rule(json!({"type": "time", "from": "08:00", "to": "08:00"})),
            format!("{at}.to"),
        ),
        (
            rule(json!({"type": "time", "utc_offset": "+15:00"})),
            format!("{at}.utc_offset"),
        ),
        (
            rule(json!({"type": "method", "methods": ["G T"]})),
            format!("{at}.methods[0]"),
        ),
        (
            rule(json!({"type": "header", "header": "bad header", "present": true})),
            format!("{at}.header"),
        ),
        (
            rule(json!({"type": "query", "param": "", "present": true})),
            format!("{at}.param"),
        ),
        (
            rule(json!({"type": "redirect", "url": "ftp://x"})),
            format!("{at}.url"),
        ),
        (
            rule(json!({"type": "redirect", "url": "https://x", "status": 200})),
            format!("{at}.status"),
        ),
        (
            rule(json!({"type": "rule_set", "name": "missing"})),
            format!("{at}.name"),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "context_root": "app"}]}),
            "applications[0].context_root".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": []}]}),
            "applications[0].hosts".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["a.*.com"]}]}),
            "applications[0].hosts[0]".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "resources": [{"name": "r", "paths": ["x"]}]}]}),
            "applications[0].resources[0].paths[0]".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "resources": [{"name": "r", "paths": ["/"], "unprotected": true, "anonymous": true}]}]}),
            "applications[0].resources[0].anonymous".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "resources": [{"name": "r", "paths": ["/"], "methods": []}]}]}),
            "applications[0].resources[0].methods".into(),
        ),
        (
            json!({"unprotected_paths": ["health"]}),
            "unprotected_paths[0]".into(),
        ),
        (
            json!({"default_decision": "maybe"}),
            "default_decision".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "extra": 1}]}),
            "applications[0].extra".into(),
        ),
        (
            json!({"rule_sets": [{"name": "x", "rules": []}, {"name": "x", "rules": []}]}),
            "rule_sets[1].name".into(),
        ),
        (
            json!({"rule_sets": [{"name": "x", "rules": [{"type": "rule_set", "name": "y"}]},
                                 {"name": "y", "rules": [{"type": "rule_set", "name": "x"}]}]}),
            "rule_sets[1].rules[0].name".into(),
        ),
        (
            json!({"rule_sets": [{"name": "x", "rules": [{"type": "network", "cidrs": ["1.2.3.4/40"]}]}]}),
            "rule_sets[0].rules[0].cidrs[0]".into(),
        ),
    ];
    for (config, field) in cases {
        let ConfigErrorView(got, message) = refused(config.clone());
        assert_eq!(got, field, "{config}: {message}");
        assert!(!message.is_empty());
    }
}

#[test]
fn unknown_rule_fields_and_types_are_refused() {
    for r in [
        json!({"type": "network", "cidr": ["10.0.0.0/8"]}),
        json!({"type": "teleport"}),
        json!({"type": "attribute", "claim": "g", "equals": "a", "colour": 1}),
    ] {
        let ConfigErrorView(field, message) = refused(app(json!([r.clone()]), json!([])));
        assert!(
            field.starts_with("applications[0].rules[0]"),
            "{r}: {field} {message}"
        );
    }
}

impl Req {
    fn decide_with<'p>(&self, p: &'p Policy, limits: &mut RateLimits, now_ms: u64) -> Decision<'p> {
        let facts = RequestFacts {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: &self.headers,
            client_ip: self.ip,
            now: now_ms / 1000,
            now_ms,
            identity: self.logged_in.then_some(Identity {
                sub: "bob",
                claims: &self.claims,
                scopes: &self.scopes,
            }),
        };
        match p.route("a.example", self.path, self.method) {
            Target::App { app, resource } => app.evaluate(Some(resource), &facts, limits),
            t => panic!("unexpected target {t:?}"),
        }
    }
}

#[test]
fn application_api_settings_and_site_authenticator() {
    let p = policy(json!({"applications": [
        {"name": "w", "hosts": ["w"]},
        {"name": "a", "hosts": ["a"], "type": "api", "site_authenticator": "orders-sts",
         "api": {"validation": "jwt", "audiences": ["https://api.example.test"], "forward_token": true}},
        {"name": "b", "hosts": ["b"], "type": "both", "api": {"validation": "introspection"}}
    ]}));
    let apps = p.applications();
    assert_eq!(apps[0].api, None);
    assert_eq!(apps[0].site_authenticator, None);
    assert_eq!(
        apps[1].api,
        Some(AppApi {
            validation: Validation::Jwt,
            audiences: vec!["https://api.example.test".into()],
            forward_token: true,
            token_providers: Vec::new(),
            providers: Vec::new()
        })
    );
    assert_eq!(apps[1].site_authenticator.as_deref(), Some("orders-sts"));
    let b = apps[2].api.as_ref().unwrap();
    assert_eq!(
        (b.validation, b.audiences.len(), b.forward_token),
        (Validation::Introspection, 0, false)
    );
}

#[test]
fn client_ip_from_downstream_and_trusted_hops() {
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(client_ip(Some("192.0.2.1:5678"), None, 0), ip("192.0.2.1"));
    assert_eq!(
        client_ip(Some("[2001:db8::1]:443"), None, 0),
        ip("2001:db8::1")
    );
    assert_eq!(client_ip(Some("2001:db8::1"), None, 0), ip("2001:db8::1"));
    assert_eq!(client_ip(Some("[::1]"), None, 0), ip("::1"));
    assert_eq!(client_ip(Some("nonsense"), None, 0), None);
    assert_eq!(client_ip(None, Some("1.1.1.1"), 0), None);
    // Zero hops: X-Forwarded-For is the client's to write, so it is ignored.
    assert_eq!(
        client_ip(Some("10.0.0.1:1"), Some("1.1.1.1"), 0),
        ip("10.0.0.1")
    );
    let xff = "203.0.113.9, 198.51.100.2 ,10.0.0.5";
    assert_eq!(client_ip(Some("10.0.0.1:1"), Some(xff), 1), ip("10.0.0.5"));
    assert_eq!(
        client_ip(Some("10.0.0.1:1"), Some(xff), 2),
        ip("198.51.100.2")
    );
    assert_eq!(
        client_ip(Some("10.0.0.1:1"), Some(xff), 3),
        ip("203.0.113.9")
    );
    assert_eq!(client_ip(Some("10.0.0.1:1"), Some(xff), 4), None);
    assert_eq!(client_ip(Some("10.0.0.1:1"), None, 1), None);
    assert_eq!(client_ip(None, Some("1.1.1.1, junk"), 1), None);
    assert_eq!(client_ip(None, Some("1.1.1.1,,2.2.2.2"), 2), None);
    assert_eq!(
        client_ip(None, Some("[2001:db8::7]:80"), 1),
        ip("2001:db8::7")
    );
    assert_eq!(client_ip(None, Some(""), 1), None);
    assert_eq!(client_ip(None, Some("1.1.1.1"), 255), None);

    let p = policy(json!({"xff_trusted_hops": 2}));
    assert_eq!(p.xff_trusted_hops, 2);
    assert_eq!(policy(json!({})).xff_trusted_hops, 0);
}

#[test]
fn implicit_policy_is_one_web_app_needing_a_session() {
    let p = Policy::implicit();
    assert_eq!(p.default_decision, DefaultDecision::Deny);
    let Target::App { app, resource } = p.route("any.host:8080", "/x/y?z", "DELETE") else {
        panic!("no app");
    };
    assert_eq!(
        (app.name.as_str(), app.app_type, app.context_root()),
        ("default", AppType::Web, "/")
    );
    assert_eq!(resource.name, "root");
    let mut r = req();
    let mut limits = RateLimits::default();
    assert!(r.decide_with(&p, &mut limits, 0).allowed());
    r.logged_in = false;
    assert_eq!(
        r.decide_with(&p, &mut limits, 0).outcome,
        Outcome::NeedIdentity
    );
}

#[test]
fn regex_paths_in_manual_order() {
    let p = policy(
        json!({"unprotected_paths": ["~^/pub/[a-z]+\\.js$"], "applications": [
            {"name": "a", "hosts": ["h"], "context_root": "/shop", "ordering": "manual", "resources": [
                {"name": "item", "paths": ["~^/items/[0-9]+$"], "methods": ["GET"]},
                {"name": "items", "paths": ["/items/*"]},
                {"name": "any-edit", "paths": ["~/edit$", "/x"]}
            ]}
        ]}),
    );
    let name = |path: &str, m: &str| resource_name(&p, "h", path, m);
    assert_eq!(name("/shop/items/42", "GET").as_deref(), Some("item"));
    assert_eq!(name("/shop/items/42", "PUT").as_deref(), Some("items"));
    assert_eq!(name("/shop/items/4x2", "GET").as_deref(), Some("items"));
    assert_eq!(name("/shop/a/b/edit", "GET").as_deref(), Some("any-edit"));
    assert_eq!(name("/shop/x", "GET").as_deref(), Some("any-edit"));
    assert_eq!(name("/shop/y", "GET"), None);
    // Regexes see the path relative to the context root.
    assert_eq!(name("/items/42", "GET"), None);
    assert!(matches!(
        p.route("h", "/pub/app.js", "GET"),
        Target::Unprotected(_)
    ));
    assert!(!matches!(
        p.route("h", "/pub/app.jsx", "GET"),
        Target::Unprotected(_)
    ));
}

#[test]
fn regex_path_needs_manual_ordering() {
    let ConfigErrorView(field, message) = refused(json!({"applications": [
        {"name": "a", "hosts": ["h"], "resources": [{"name": "r", "paths": ["/a", "~^/b$"]}]}
    ]}));
    assert_eq!(field, "applications[0].resources[0].paths[1]");
    assert!(message.contains("applications[0].ordering"), "{message}");
}

#[test]
fn matches_test_on_claims_headers_and_query() {
    let mut r = req();
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "email", "matches": "^[a-z]+@example\\.com$", "case_insensitive": true})
    )));
    assert!(!r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "email", "matches": "^[a-z]+@example\\.com$"})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "groups", "matches": "^adm"  , "case_insensitive": true})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "groups", "matches": "^ADMINS$", "case_insensitive": true})
    )));
    assert!(!r.allowed(&one_rule(
        json!({"type": "attribute", "claim": "groups", "matches": "^sta", "negate": true})
    )));
    r.headers = HeaderList::new([("x-client-version", "2.13.0")]);
    assert!(r.allowed(&one_rule(
        json!({"type": "header", "header": "x-client-version", "matches": "^2\\.1[0-9]\\."})
    )));
    r.query = "id=abc-123";
    assert!(r.allowed(&one_rule(
        json!({"type": "query", "param": "id", "matches": "^[a-z]{3}-[0-9]{3}$"})
    )));
    assert!(!r.allowed(&one_rule(
        json!({"type": "query", "param": "id", "matches": "^[0-9]+$"})
    )));
}

#[test]
fn bad_and_oversized_regexes_are_refused() {
    let at = "applications[0].rules[0]";
    for (rule, field) in [
        (
            json!({"type": "attribute", "claim": "g", "matches": "(unclosed"}),
            format!("{at}.matches"),
        ),
        (
            json!({"type": "header", "header": "h", "matches": "a{1000}{1000}"}),
            format!("{at}.matches"),
        ),
        (
            json!({"type": "query", "param": "q", "matches": "x".repeat(2000)}),
            format!("{at}.matches"),
        ),
        (
            json!({"type": "query", "param": "q", "matches": format!("{}a{}", "(".repeat(100), ")".repeat(100))}),
            format!("{at}.matches"),
        ),
        (
            json!({"type": "query", "param": "q", "matches": "a", "like": "b"}),
            at.to_string(),
        ),
    ] {
        let ConfigErrorView(got, message) = refused(app(json!([rule.clone()]), json!([])));
        assert_eq!(got, field, "{rule}: {message}");
    }
    let ConfigErrorView(got, _) = refused(
        json!({"applications": [{"name": "a", "hosts": ["h"], "ordering": "manual",
        "resources": [{"name": "r", "paths": ["~[z-a]"]}]}]}),
    );
    assert_eq!(got, "applications[0].resources[0].paths[0]");
}

#[test]
fn scope_refusal_names_the_scopes() {
    let r = req();
    let p = one_rule(json!({"type": "scope", "all": ["read", "orders:write", "admin"]}));
    let d = r.decide(&p);
    assert_eq!(d.outcome, Outcome::Forbidden);
    assert_eq!(d.scope, Some("read orders:write admin"));
    let p = one_rule(json!({"type": "scope", "any": ["read"]}));
    let d = r.decide(&p);
    assert_eq!((d.outcome, d.scope), (Outcome::Allow, None));
    // Another rule's refusal carries no scope.
    let p = one_rule(json!({"type": "method", "methods": ["PUT"]}));
    let d = r.decide(&p);
    assert_eq!(d.scope, None);
}

fn error_handler(body: &str) -> Value {
    json!({"type": "error", "status": 403, "content_type": "application/json", "body": body})
}

#[test]
fn innermost_rejection_handler_wins() {
    let p = policy(json!({
        "rule_sets": [{"name": "set", "rules": [
            {"type": "method", "name": "set-inner", "methods": ["GET"]},
            {"type": "method", "name": "set-handled", "methods": ["GET", "PUT"], "rejection": error_handler("rule-in-set")}
        ], "rejection": error_handler("set")}],
        "applications": [{"name": "a", "hosts": ["a.example"], "ordering": "manual",
            "rejection": error_handler("app"),
            "rules": [{"type": "header", "name": "app-rule", "header": "x-block", "present": true, "negate": true}],
            "resources": [
                {"name": "r1", "paths": ["/r1"], "rejection": error_handler("resource"), "rules": [
                    {"type": "any", "name": "inline", "rejection": error_handler("inline"), "rules": [
                        {"type": "query", "name": "q-handled", "param": "q", "equals": "1", "rejection": error_handler("rule")},
                        {"type": "query", "name": "q-plain", "param": "z", "equals": "1"}
                    ]},
                    {"type": "rule_set", "name": "set"},
                    {"type": "time", "name": "never", "from": "00:00", "to": "00:01"}
                ]},
                {"name": "r2", "paths": ["/r2"], "rules": [{"type": "method", "name": "m", "methods": ["PUT"]}]},
                {"name": "r3", "paths": ["/r3"], "rules": [{"type": "attribute", "claim": "sub", "equals": "nobody"}]}
            ]}]
    }));
    let body = |d: &Decision| -> String {
        let h = d.handler.expect("a handler");
        String::from_utf8(h.render("c", "ref", d.rule).2).unwrap()
    };
    let mut r = req();
    r.path = "/r1";
    r.method = "POST";
    r.query = "q=1&z=1";
    // `any` fails at its last refusal (q-plain, no handler) -> the inline set's handler.
    r.query = "q=2";
    let d = r.decide(&p);
    assert_eq!((d.rule, body(&d).as_str()), ("q-plain", "inline"));
    r.query = "q=1";
    // A rule in a named set without its own handler -> the set's handler.
    let d = r.decide(&p);
    assert_eq!((d.rule, body(&d).as_str()), ("set-inner", "set"));
    r.method = "DELETE";
    let d = r.decide(&p);
    assert_eq!((d.rule, body(&d).as_str()), ("set-inner", "set"));
    r.method = "GET";
    // A plain resource rule -> the resource's handler.
    let d = r.decide(&p);
    assert_eq!((d.rule, body(&d).as_str()), ("never", "resource"));
    // Resource without a handler -> the application's.
    r.path = "/r2";
    let d = r.decide(&p);
    assert_eq!((d.rule, body(&d).as_str()), ("m", "app"));
    // Application rules never use a resource's handler.
    r.path = "/r1";
    r.headers = HeaderList::new([("x-block", "1")]);
    let d = r.decide(&p);
    assert_eq!((d.rule, body(&d).as_str()), ("app-rule", "app"));
    // Logging in is not a refusal: no handler.
    r.logged_in = false;
    let d = r.decide(&p);
    assert_eq!((d.outcome, d.handler), (Outcome::NeedIdentity, None));
}

#[test]
fn rule_handler_itself_and_no_handler() {
    let p = one_rule(json!({"type": "method", "name": "m", "methods": ["PUT"],
        "rejection": {"type": "redirect", "url": "https://help.example/denied"}}));
    let d = req().decide(&p);
    assert_eq!(
        d.handler,
        Some(&Rejection::Redirect {
            url: "https://help.example/denied".into(),
            status: 302
        })
    );
    let (status, headers, body) = d.handler.unwrap().render("x", "y", "z");
    assert_eq!(status, 302);
    assert!(headers.contains(&("location".into(), "https://help.example/denied".into())));
    assert!(body.is_empty());
    let p = one_rule(json!({"type": "method", "methods": ["PUT"]}));
    let d = req().decide(&p);
    assert_eq!((d.outcome, d.handler), (Outcome::Forbidden, None));
}

#[test]
fn rejection_rendering_escapes_for_the_content_type() {
    let evil = "</p><script>\"x\"&'y'\n";
    let html = Rejection::Error {
        status: 451,
        content_type: "text/html; charset=utf-8".into(),
        body: Template::parse("<p>{code} {reference} {rule} {other} {code</p>"),
    };
    let (status, headers, body) = html.render(evil, "R-1", "r<1>");
    assert_eq!(status, 451);
    assert!(headers.contains(&("content-type".into(), "text/html; charset=utf-8".into())));
    assert!(headers.contains(&("cache-control".into(), "no-store".into())));
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "<p>&lt;/p&gt;&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39; R-1 r&lt;1&gt; {other} {code</p>"
    );
    let json = Rejection::Error {
        status: 403,
        content_type: "application/problem+json".into(),
        body: Template::parse("{\"error\":\"{code}\",\"ref\":\"{reference}\"}"),
    };
    let (_, _, body) = json.render(evil, "R-2", "");
    let text = String::from_utf8(body).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"], evil);
    assert_eq!(v["ref"], "R-2");
    assert!(!text.contains('<'));
    let plain = Rejection::Error {
        status: 400,
        content_type: "text/plain".into(),
        body: Template::parse("é {code}"),
    };
    assert_eq!(plain.render("a\r\nb", "", "").2, "é ab".as_bytes());
}

#[test]
fn malformed_rejection_handlers_are_refused() {
    let with = |h: Value| {
        app(
            json!([{"type": "method", "methods": ["GET"], "rejection": h}]),
            json!([]),
        )
    };
    let at = "applications[0].rules[0].rejection";
    for (config, field) in [
        (
            with(json!({"type": "error", "status": 200, "body": "x"})),
            format!("{at}.status"),
        ),
        (
            with(json!({"type": "error", "status": 600, "body": "x"})),
            format!("{at}.status"),
        ),
        (
            with(json!({"type": "error", "content_type": "html", "body": "x"})),
            format!("{at}.content_type"),
        ),
        (
            with(json!({"type": "error", "content_type": "text/html\r\nx: y", "body": "x"})),
            format!("{at}.content_type"),
        ),
        (
            with(json!({"type": "error", "body": "x".repeat(70_000)})),
            format!("{at}.body"),
        ),
        (
            with(json!({"type": "redirect", "url": "javascript:alert(1)"})),
            format!("{at}.url"),
        ),
        (
            with(json!({"type": "redirect", "url": "https://x", "status": 200})),
            format!("{at}.status"),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "rejection": {"type": "error", "status": 999, "body": ""}}]}),
            "applications[0].rejection.status".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "resources": [{"name": "r", "paths": ["/"],
                "rejection": {"type": "error", "status": 399, "body": ""}}]}]}),
            "applications[0].resources[0].rejection.status".into(),
        ),
        (
            json!({"rule_sets": [{"name": "s", "rules": [], "rejection": {"type": "redirect", "url": "nope"}}]}),
            "rule_sets[0].rejection.url".into(),
        ),
    ] {
        let ConfigErrorView(got, message) = refused(config.clone());
        assert_eq!(got, field, "{config}: {message}");
    }
    // Unknown handler types and fields, and handlers on a rule-set reference, are refused.
    for config in [
        with(json!({"type": "teapot"})),
        with(json!({"type": "error", "body": "", "colour": 1})),
        app(
            json!([{"type": "rule_set", "name": "s", "rejection": {"type": "error", "body": ""}}]),
            json!([]),
        ),
    ] {
        let ConfigErrorView(got, _) = refused(config.clone());
        assert!(
            got.starts_with("applications[0].rules[0]"),
            "{config}: {got}"
        );
    }
}

fn limited(per: &str, extra: Value) -> Policy {
    let mut rule = json!({"type": "rate_limit", "name": "rl", "requests": 1, "interval_s": 10, "burst": 3, "per": per});
    if let (Some(r), Some(e)) = (rule.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    policy(app(
        json!([rule]),
        json!([{"name": "one", "paths": ["/one"], "anonymous": true}, {"name": "two", "paths": ["/two"], "anonymous": true}]),
    ))
}

#[test]
fn rate_limit_burst_then_refill() {
    let p = limited("identity", json!({}));
    let mut limits = RateLimits::default();
    let r = req();
    let t0 = 1_000_000;
    for _ in 0..3 {
        assert!(r.decide_with(&p, &mut limits, t0).allowed());
    }
    let d = r.decide_with(&p, &mut limits, t0);
    assert_eq!(d.outcome, Outcome::RateLimited { retry_after_s: 10 });
    assert_eq!((d.rule, d.handler), ("rl", None));
    // 1 request per 10 s: 4 s later, 6 s to go; 10 s later, one more.
    assert_eq!(
        r.decide_with(&p, &mut limits, t0 + 4_000).outcome,
        Outcome::RateLimited { retry_after_s: 6 }
    );
    assert!(r.decide_with(&p, &mut limits, t0 + 10_000).allowed());
    assert!(!r.decide_with(&p, &mut limits, t0 + 10_000).allowed());
    // A long pause refills to the burst, not beyond.
    let later = t0 + 3_600_000;
    for _ in 0..3 {
        assert!(r.decide_with(&p, &mut limits, later).allowed());
    }
    assert!(!r.decide_with(&p, &mut limits, later).allowed());
    // A clock stepping back refills nothing and does not panic.
    assert!(!r.decide_with(&p, &mut limits, 0).allowed());
    assert_eq!(limits.len(), 1);
}

#[test]
fn rate_limit_keys() {
    let t = 5_000;
    let drain = |p: &Policy, r: &Req, limits: &mut RateLimits| {
        for _ in 0..3 {
            assert!(r.decide_with(p, limits, t).allowed());
        }
        assert!(!r.decide_with(p, limits, t).allowed());
    };
    // Per identity: another subject has its own bucket; without identity, the address.
    let p = limited("identity", json!({}));
    let mut limits = RateLimits::default();
    let mut r = req();
    r.path = "/one";
    drain(&p, &r, &mut limits);
    r.logged_in = false;
    drain(&p, &r, &mut limits);
    r.ip = Some("192.0.2.99".parse().unwrap());
    drain(&p, &r, &mut limits);
    r.ip = None; // no identity, no address: one shared bucket
    drain(&p, &r, &mut limits);
    assert_eq!(limits.len(), 4);

    // Per client address.
    let p = limited("client_address", json!({}));
    let mut limits = RateLimits::default();
    let mut r = req();
    r.path = "/one";
    drain(&p, &r, &mut limits);
    r.ip = Some("2001:db8::1".parse().unwrap());
    drain(&p, &r, &mut limits);

    // Per OAuth client: client_id, else azp, else the address.
    let p = limited("oauth_client", json!({}));
    let mut limits = RateLimits::default();
    let mut r = req();
    r.path = "/one";
    r.claims.insert("client_id".into(), json!("app-1"));
    drain(&p, &r, &mut limits);
    r.ip = Some("198.51.100.1".parse().unwrap()); // same client, other address: still limited
    assert!(!r.decide_with(&p, &mut limits, t).allowed());
    r.claims.remove("client_id");
    r.claims.insert("azp".into(), json!("app-2"));
    drain(&p, &r, &mut limits);
    r.claims.remove("azp");
    drain(&p, &r, &mut limits);

    // Per resource: shared by everyone, one bucket per resource.
    let p = limited("resource", json!({}));
    let mut limits = RateLimits::default();
    let mut r = req();
    r.path = "/one";
    drain(&p, &r, &mut limits);
    r.ip = Some("198.51.100.1".parse().unwrap());
    r.logged_in = false;
    assert!(!r.decide_with(&p, &mut limits, t).allowed());
    r.path = "/two";
    drain(&p, &r, &mut limits);
}

#[test]
fn rate_limit_handler_and_rule_ids() {
    let p = policy(json!({
        "rule_sets": [{"name": "s", "rules": [
            {"type": "rate_limit", "name": "shared", "requests": 1, "interval_s": 60, "burst": 1, "per": "identity"}
        ], "rejection": error_handler("set")}],
        "applications": [{"name": "a", "hosts": ["a.example"], "ordering": "manual", "resources": [
            {"name": "x", "paths": ["/x"], "rules": [{"type": "rule_set", "name": "s"}]},
            {"name": "y", "paths": ["/y"], "rules": [{"type": "rule_set", "name": "s"}]},
            {"name": "z", "paths": ["/z"], "rules": [{"type": "rate_limit", "requests": 1, "interval_s": 60,
                "per": "identity", "rejection": {"type": "error", "status": 429, "content_type": "text/plain", "body": "slow down"}}]}
        ]}]
    }));
    let mut limits = RateLimits::default();
    let mut r = req();
    r.path = "/x";
    assert!(r.decide_with(&p, &mut limits, 0).allowed());
    // The set's refusal handler does not turn a rate limit into its error page.
    let d = r.decide_with(&p, &mut limits, 0);
    assert_eq!(
        (d.outcome.clone(), d.handler),
        (Outcome::RateLimited { retry_after_s: 60 }, None)
    );
    // One rule, one bucket, wherever the set is used.
    r.path = "/y";
    assert!(!r.decide_with(&p, &mut limits, 0).allowed());
    r.path = "/z";
    assert!(r.decide_with(&p, &mut limits, 0).allowed());
    let d = r.decide_with(&p, &mut limits, 0);
    assert_eq!(d.handler.map(Rejection::status), Some(429));
    assert_eq!(limits.len(), 2);
    // Ids follow the configuration: compiling it again gives the same ones.
    let ids = |p: &Policy| {
        let mut out = Vec::new();
        fn walk(n: &Node, out: &mut Vec<u32>) {
            match &n.kind {
                Kind::All(v) | Kind::Any(v) => v.iter().for_each(|c| walk(c, out)),
                Kind::Shared(s) => walk(s, out),
                Kind::RateLimit { limit, .. } => out.push(limit.id),
                _ => {}
            }
        }
        for a in p.applications() {
            for res in a.resources() {
                walk(&res.rules, &mut out);
            }
        }
        out
    };
    assert_eq!(ids(&p), vec![0, 0, 1]);
}

#[test]
fn rate_limit_buckets_are_bounded() {
    let limit = ratelimit::Limit {
        id: 0,
        capacity: 2.0,
        per_ms: 1.0 / 1000.0,
    };
    let mut limits = RateLimits::new(1000);
    for i in 0..10_000u32 {
        // Each key takes one token: its bucket is not full, so eviction must drop old ones.
        assert!(limits.take(&limit, &i.to_string(), u64::from(i)).is_ok());
        assert!(limits.len() <= 1000);
    }
    // The most recent keys survived: the last one is still drained by one.
    assert!(limits.take(&limit, "9999", 10_000).is_ok());
    assert_eq!(limits.take(&limit, "9999", 10_000), Err(1));
    // Idle buckets (full again) go first; time far ahead frees everything.
    assert!(limits.take(&limit, "new", u64::MAX).is_ok());
    assert!(limits.len() <= 1000);
    assert!(RateLimits::new(0).take(&limit, "", 0).is_ok());
}

#[test]
fn malformed_rate_limits_are_refused() {
    let at = "applications[0].rules[0]";
    let rl = |extra: Value| {
        let mut r =
            json!({"type": "rate_limit", "requests": 10, "interval_s": 60, "per": "identity"});
        if let (Some(o), Some(e)) = (r.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        app(json!([r]), json!([]))
    };
    for (config, field) in [
        (rl(json!({"requests": 0})), format!("{at}.requests")),
        (rl(json!({"interval_s": 0})), format!("{at}.interval_s")),
        (rl(json!({"burst": 0})), format!("{at}.burst")),
        (rl(json!({"per": "planet"})), at.to_string()),
        (rl(json!({"requests": -1})), at.to_string()),
        (
            rl(json!({"rejection": {"type": "error", "status": 99, "body": ""}})),
            format!("{at}.rejection.status"),
        ),
    ] {
        let ConfigErrorView(got, message) = refused(config.clone());
        assert!(got.starts_with(&field), "{config}: {got} {message}");
    }
}

#[test]
fn malformed_api_settings_and_hops_are_refused() {
    for (config, field) in [
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "type": "api"}]}),
            "applications[0].api",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "type": "both"}]}),
            "applications[0].api",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "type": "api", "api": {"validation": "jwt"}}]}),
            "applications[0].api.audiences",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "type": "api", "api": {"validation": "jwt", "audiences": [""]}}]}),
            "applications[0].api.audiences[0]",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "type": "api", "api": {"validation": "magic"}}]}),
            "applications[0].api.validation",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "type": "api", "api": {"validation": "introspection", "audience": "x"}}]}),
            "applications[0].api.audience",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "site_authenticator": ""}]}),
            "applications[0].site_authenticator",
        ),
        (json!({"xff_trusted_hops": 11}), "xff_trusted_hops"),
        (json!({"xff_trusted_hops": -1}), "xff_trusted_hops"),
    ] {
        let ConfigErrorView(got, message) = refused(config.clone());
        assert_eq!(got, field, "{config}: {message}");
    }
}

#[test]
fn audit_record_is_json_without_query_or_secrets() {
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    let rec = AuditRecord {
        time: 1_700_000_000_123,
        request_id: "req-1",
        subject: Some("bob"),
        client_ip: Some(ip),
        application: "orders",
        resource: None,
        method: "GET",
        // The canonical path, without the query (the flow never hands the query over): a
        // decoded `?` in it is part of the resource that was served.
        path: "/orders/1?.pdf",
        decision: AuditRecord::decision_name(&Outcome::RateLimited { retry_after_s: 3 }),
        rule: "rl\"x",
        elapsed_us: 42,
    };
    let line = rec.to_json();
    assert!(!line.contains('\n'), "{line}");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v,
        json!({"time": 1_700_000_000_123u64, "request_id": "req-1", "subject": "bob", "client_ip": "192.0.2.7",
               "application": "orders", "resource": null, "method": "GET", "path": "/orders/1?.pdf",
               "decision": "rate_limited", "rule": "rl\"x", "elapsed_us": 42})
    );
    for (o, name) in [
        (Outcome::Allow, "allow"),
        (Outcome::NeedIdentity, "login"),
        (Outcome::Forbidden, "deny"),
        (
            Outcome::Redirect {
                url: "u",
                status: 302,
            },
            "redirect",
        ),
    ] {
        assert_eq!(AuditRecord::decision_name(&o), name);
    }
    let long = "/".repeat(10_000);
    let rec = AuditRecord { path: &long, ..rec };
    assert!(rec.to_json().len() < 3000);
}

fn read(v: Value) -> RawPolicy {
    RawPolicy::from_json(v.to_string().as_bytes()).unwrap()
}

/// Field and message of a policy the reader (not the compiler) refuses.
fn unreadable(v: Value) -> (String, String) {
    let e = RawPolicy::from_json(v.to_string().as_bytes()).unwrap_err();
    (e.field, e.message)
}

#[test]
fn reader_refuses_unknown_fields_at_any_depth() {
    let nested = |r: Value| {
        app(
            json!([]),
            json!([{"name": "r", "paths": ["/"], "rules": [{"type": "method", "methods": ["GET"]},
                {"type": "any", "rules": [{"type": "network", "cidrs": ["10.0.0.0/8"]}, r]}]}]),
        )
    };
    let at = "applications[0].resources[0].rules[1].rules[1]";
    for (config, field, key) in [
        (json!({"idel": 1}), "idel".to_string(), "idel"),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "api": {"validation": "jwt", "audience": "x"}}]}),
            "applications[0].api.audience".into(),
            "audience",
        ),
        (
            json!({"rule_sets": [{"name": "s", "rules": [], "colour": 1}]}),
            "rule_sets[0].colour".into(),
            "colour",
        ),
        (
            nested(json!({"type": "attribute", "claim": "g", "equals": "a", "colour": 1})),
            format!("{at}.colour"),
            "colour",
        ),
        // A test field on a rule that takes none, and a handler's unknown field.
        (
            nested(json!({"type": "network", "cidrs": ["10.0.0.0/8"], "equals": "x"})),
            format!("{at}.equals"),
            "equals",
        ),
        (
            nested(
                json!({"type": "rule_set", "name": "s", "rejection": {"type": "error", "body": ""}}),
            ),
            format!("{at}.rejection"),
            "rejection",
        ),
        (
            nested(json!({"type": "method", "methods": ["GET"],
                "rejection": {"type": "redirect", "url": "https://x", "body": ""}})),
            format!("{at}.rejection.body"),
            "body",
        ),
    ] {
        let (got, message) = unreadable(config.clone());
        assert_eq!(got, field, "{config}: {message}");
        assert!(
            message.starts_with(&format!("unknown field `{key}`")),
            "{config}: {message}"
        );
    }
}

#[test]
fn reader_refuses_wrong_types_at_any_depth() {
    let nested = |r: Value| {
        app(
            json!([]),
            json!([{"name": "r", "paths": ["/"], "rules": [{"type": "all", "rules": [r]}]}]),
        )
    };
    let at = "applications[0].resources[0].rules[0].rules[0]";
    for (config, field, message) in [
        (json!([]), "(root)".to_string(), "must be an object"),
        (
            json!({"applications": {}}),
            "applications".into(),
            "must be an array",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": "h"}]}),
            "applications[0].hosts".into(),
            "must be an array of strings",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h", 1]}]}),
            "applications[0].hosts[1]".into(),
            "must be a string",
        ),
        (
            json!({"applications": [{"name": 1, "hosts": ["h"]}]}),
            "applications[0].name".into(),
            "must be a string",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "type": "desktop"}]}),
            "applications[0].type".into(),
            "must be one of `web`, `api`, `both`",
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "mode": null}]}),
            "applications[0].mode".into(),
            "must be one of `all`, `any`",
        ),
        (
            json!({"xff_trusted_hops": 256}),
            "xff_trusted_hops".into(),
            "must be an integer from 0 to 255",
        ),
        (
            json!({"xff_trusted_hops": 1.5}),
            "xff_trusted_hops".into(),
            "must be an integer from 0 to 255",
        ),
        (
            json!({"unprotected_paths": null}),
            "unprotected_paths".into(),
            "must be an array of strings",
        ),
        (nested(json!("method")), at.to_string(), "must be an object"),
        (
            nested(json!({"type": "attribute", "claim": 5, "equals": "a"})),
            format!("{at}.claim"),
            "must be a string",
        ),
        (
            nested(json!({"type": "header", "header": "h", "present": "yes"})),
            format!("{at}.present"),
            "must be true or false",
        ),
        (
            nested(json!({"type": "query", "param": "q", "one_of": "a"})),
            format!("{at}.one_of"),
            "must be an array of strings",
        ),
        (
            nested(json!({"type": "redirect", "url": "https://x", "status": "302"})),
            format!("{at}.status"),
            "must be an integer from 0 to 65535",
        ),
        (
            nested(
                json!({"type": "rate_limit", "requests": -1, "interval_s": 1, "per": "identity"}),
            ),
            format!("{at}.requests"),
            "must be an integer from 0 to 4294967295",
        ),
        (
            nested(json!({"type": "rate_limit", "requests": 1, "interval_s": 1, "per": "planet"})),
            format!("{at}.per"),
            "must be one of `identity`, `client_address`, `oauth_client`, `resource`",
        ),
        (
            nested(json!({"type": "any", "rules": {}})),
            format!("{at}.rules"),
            "must be an array",
        ),
        (
            nested(json!({"type": 7})),
            format!("{at}.type"),
            "must be a string",
        ),
        (
            nested(json!({"type": "method", "methods": ["GET"], "rejection": "deny"})),
            format!("{at}.rejection"),
            "must be an object",
        ),
    ] {
        let (got, m) = unreadable(config.clone());
        assert_eq!(
            (got.as_str(), m.as_str()),
            (field.as_str(), message),
            "{config}"
        );
    }
}

#[test]
fn reader_refuses_missing_fields_and_rule_types() {
    let at = "applications[0].rules[0]";
    let rule = |r: Value| app(json!([r]), json!([]));
    for (config, field, message) in [
        (
            rule(json!({"claim": "g", "equals": "a"})),
            format!("{at}.type"),
            "missing field `type`".to_string(),
        ),
        (
            rule(json!({"type": "teleport"})),
            format!("{at}.type"),
            format!("unknown type `teleport`, expected one of {}",
                "`all`, `any`, `rule_set`, `attribute`, `scope`, `network`, `time`, `method`, `header`, `query`, `redirect`, `rate_limit`"),
        ),
        (
            rule(json!({"type": "method", "methods": ["GET"], "rejection": {"body": ""}})),
            format!("{at}.rejection.type"),
            "missing field `type`".into(),
        ),
        (
            rule(json!({"type": "method", "methods": ["GET"], "rejection": {"type": "teapot"}})),
            format!("{at}.rejection.type"),
            "unknown type `teapot`, expected one of `error`, `redirect`".into(),
        ),
        (
            rule(json!({"type": "attribute", "equals": "a"})),
            format!("{at}.claim"),
            "missing field `claim`".into(),
        ),
        (
            rule(json!({"type": "rate_limit", "requests": 1, "interval_s": 1})),
            format!("{at}.per"),
            "missing field `per`".into(),
        ),
        (
            rule(json!({"type": "all"})),
            format!("{at}.rules"),
            "missing field `rules`".into(),
        ),
        (
            rule(json!({"type": "method", "methods": ["GET"], "rejection": {"type": "error"}})),
            format!("{at}.rejection.body"),
            "missing field `body`".into(),
        ),
        (
            json!({"applications": [{"name": "a"}]}),
            "applications[0].hosts".into(),
            "missing field `hosts`".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "api": {}}]}),
            "applications[0].api.validation".into(),
            "missing field `validation`".into(),
        ),
        (
            json!({"applications": [{"name": "a", "hosts": ["h"], "resources": [{"name": "r"}]}]}),
            "applications[0].resources[0].paths".into(),
            "missing field `paths`".into(),
        ),
        (
            json!({"rule_sets": [{"name": "s"}]}),
            "rule_sets[0].rules".into(),
            "missing field `rules`".into(),
        ),
    ] {
        let (got, m) = unreadable(config.clone());
        assert_eq!((got, m), (field, message), "{config}");
    }
    let e = RawPolicy::from_json(b"{\"applications\": [").unwrap_err();
    assert!(e.message.contains("EOF"), "{e:?}");
}

#[test]
fn reader_defaults() {
    let raw = read(json!({}));
    assert_eq!(raw.default_decision, DefaultDecision::Deny);
    assert!(raw.unprotected_paths.is_empty() && raw.rule_sets.is_empty());
    assert!(raw.applications.is_empty());
    assert_eq!(raw.xff_trusted_hops, 0);

    let rules = json!([
        {"type": "attribute", "claim": "g"},
        {"type": "scope"},
        {"type": "network", "cidrs": []},
        {"type": "time"},
        {"type": "redirect", "url": "https://x"},
        {"type": "rate_limit", "requests": 1, "interval_s": 2, "per": "resource"},
        {"type": "method", "methods": [], "rejection": {"type": "error", "body": "b"}},
        {"type": "method", "methods": [], "rejection": {"type": "redirect", "url": "https://x"}},
        // null stands for "absent" in optional fields.
        {"type": "header", "header": "h", "name": null, "rejection": null, "equals": null,
         "one_of": null, "like": null, "matches": null},
    ]);
    let raw = read(json!({
        "rule_sets": [{"name": "s", "rules": []}],
        "applications": [{"name": "a", "hosts": ["h"], "api": {"validation": "introspection"},
            "site_authenticator": null, "rules": rules,
            "resources": [{"name": "r", "paths": ["/"], "methods": null}]}],
    }));
    let set = &raw.rule_sets[0];
    assert_eq!(set.mode, Mode::All);
    assert!(set.rejection.is_none());

    let a = &raw.applications[0];
    assert_eq!(a.context_root, "/");
    assert_eq!(a.app_type, AppType::Web);
    assert_eq!(a.ordering, Ordering::Automatic);
    assert_eq!(a.mode, Mode::All);
    assert!(a.site_authenticator.is_none() && a.rejection.is_none());
    let api = a.api.as_ref().unwrap();
    assert_eq!(api.validation, Some(Validation::Introspection));
    assert!(api.audiences.is_empty() && !api.forward_token);

    let r = &a.resources[0];
    assert!(r.methods.is_none() && r.rejection.is_none() && r.rules.is_empty());
    assert!(!r.unprotected && !r.anonymous && !r.audit);
    assert_eq!(r.mode, Mode::All);

    let no_test = |t: &RawTest| {
        assert!(t.equals.is_none() && t.one_of.is_none() && t.like.is_none());
        assert!(t.matches.is_none() && !t.present && !t.case_insensitive && !t.negate);
    };
    let mut rules = a.rules.iter();
    match rules.next().unwrap() {
        RawRule::Attribute {
            name,
            rejection,
            test,
            ..
        } => {
            assert!(name.is_none() && rejection.is_none());
            no_test(test);
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        rules.next().unwrap(),
        RawRule::Scope {
            name: None,
            rejection: None,
            all: None,
            any: None
        }
    ));
    assert!(matches!(
        rules.next().unwrap(),
        RawRule::Network { negate: false, .. }
    ));
    match rules.next().unwrap() {
        RawRule::Time {
            days,
            from,
            to,
            utc_offset,
            ..
        } => {
            assert!(days.is_none() && from.is_none() && to.is_none());
            assert_eq!(utc_offset, "+00:00");
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        rules.next().unwrap(),
        RawRule::Redirect { status: 302, .. }
    ));
    assert!(matches!(
        rules.next().unwrap(),
        RawRule::RateLimit {
            burst: None,
            per: Per::Resource,
            ..
        }
    ));
    match rules.next().unwrap() {
        RawRule::Method {
            rejection:
                Some(RawRejection::Error {
                    status,
                    content_type,
                    ..
                }),
            ..
        } => assert_eq!(
            (*status, content_type.as_str()),
            (403, "text/html; charset=utf-8")
        ),
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        rules.next().unwrap(),
        RawRule::Method {
            rejection: Some(RawRejection::Redirect { status: 302, .. }),
            ..
        }
    ));
    match rules.next().unwrap() {
        RawRule::Header {
            name,
            rejection,
            test,
            ..
        } => {
            assert!(name.is_none() && rejection.is_none());
            no_test(test);
        }
        r => panic!("{r:?}"),
    }
}

#[test]
fn reader_keeps_what_is_written() {
    let raw = read(json!({
        "default_decision": "allow", "xff_trusted_hops": 2, "unprotected_paths": ["/h"],
        "applications": [{"name": "a", "hosts": ["h"], "context_root": "/app", "type": "both",
            "ordering": "manual", "mode": "any", "site_authenticator": "s",
            "api": {"validation": "jwt", "audiences": ["x"], "forward_token": true},
            "resources": [{"name": "r", "paths": ["/"], "methods": ["GET"], "unprotected": true,
                "anonymous": true, "audit": true, "mode": "any"}],
            "rules": [{"type": "query", "name": "n", "param": "q", "one_of": ["a"],
                "case_insensitive": true, "negate": true, "present": false},
                {"type": "rate_limit", "requests": 4294967295u64, "interval_s": 1, "burst": 3,
                 "per": "oauth_client"}]}],
    }));
    assert_eq!(raw.default_decision, DefaultDecision::Allow);
    assert_eq!((raw.xff_trusted_hops, raw.unprotected_paths.len()), (2, 1));
    let a = &raw.applications[0];
    assert_eq!(
        (a.context_root.as_str(), a.app_type, a.ordering, a.mode),
        ("/app", AppType::Both, Ordering::Manual, Mode::Any)
    );
    assert_eq!(a.site_authenticator.as_deref(), Some("s"));
    let api = a.api.as_ref().unwrap();
    assert_eq!(api.validation, Some(Validation::Jwt));
    assert!(api.forward_token && api.audiences == ["x"]);
    let r = &a.resources[0];
    assert!(r.unprotected && r.anonymous && r.audit && r.mode == Mode::Any);
    assert_eq!(r.methods.as_deref(), Some(&["GET".to_string()][..]));
    match &a.rules[0] {
        RawRule::Query {
            name, param, test, ..
        } => {
            assert_eq!((name.as_deref(), param.as_str()), (Some("n"), "q"));
            assert_eq!(test.one_of.as_deref(), Some(&["a".to_string()][..]));
            assert!(test.case_insensitive && test.negate && !test.present);
        }
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        a.rules[1],
        RawRule::RateLimit {
            requests: u32::MAX,
            burst: Some(3),
            per: Per::OauthClient,
            ..
        }
    ));
}

#[test]
fn reader_refuses_duplicate_keys() {
    // serde_json's Value keeps the last of duplicate keys; a second `rules` must not silently
    // replace the first.
    let e = RawPolicy::from_json(
        br#"{"applications": [{"name": "a", "hosts": ["h"],
            "rules": [{"type": "method", "methods": ["GET"]}], "rules": []}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.field, "applications[0].rules");
    assert!(e.message.starts_with("duplicate field `rules`"), "{e:?}");
    let e = RawPolicy::from_json(br#"{"xff_trusted_hops": 1, "xff_trusted_hops": 2}"#).unwrap_err();
    assert_eq!(e.field, "xff_trusted_hops");
}

#[test]
fn an_application_without_resources_is_refused_and_says_how_to_fix_it() {
    let raw = json!({"applications": [{"name": "a", "hosts": ["h"]}]});
    let e = compile(&RawPolicy::from_json(raw.to_string().as_bytes()).unwrap()).unwrap_err();
    assert_eq!(e.field, "applications[0].resources");
    assert!(e.message.contains("\"paths\": [\"/*\"]"), "{}", e.message);
}

#[test]
fn paths_match_case_insensitively_unless_the_application_opts_out() {
    let res = json!([{"name": "admin", "paths": ["/Admin/*"]}, {"name": "re", "paths": ["~^/Reg/[a-z]+$"]}]);
    let p = policy(json!({"applications": [
        {"name": "a", "hosts": ["a.example"], "context_root": "/App", "ordering": "manual", "resources": res},
        {"name": "cs", "hosts": ["cs.example"], "case_sensitive_paths": true,
         "resources": [{"name": "admin", "paths": ["/admin/*"]}]}
    ]}));
    for path in ["/app/admin/x", "/APP/ADMIN/", "/App/Admin", "/app/admin"] {
        assert_eq!(
            resource_name(&p, "a.example", path, "GET").as_deref(),
            Some("admin"),
            "{path}"
        );
    }
    assert_eq!(
        resource_name(&p, "a.example", "/APP/REG/abc", "GET").as_deref(),
        Some("re")
    );
    assert!(matches!(
        p.route("a.example", "/app/administrator", "GET"),
        Target::NoResource { .. }
    ));
    assert_eq!(
        resource_name(&p, "cs.example", "/admin", "GET").as_deref(),
        Some("admin")
    );
    assert!(matches!(
        p.route("cs.example", "/ADMIN/x", "GET"),
        Target::NoResource { .. }
    ));
}

#[test]
fn a_request_no_resource_serves_is_refused_with_the_methods_that_would_do() {
    let p = policy(
        json!({"applications": [{"name": "api", "hosts": ["*"], "context_root": "/api",
        "resources": [
            {"name": "read", "paths": ["/*"], "methods": ["GET"]},
            {"name": "write", "paths": ["/orders/*"], "methods": ["POST", "GET"]}
        ]}]}),
    );
    let Target::NoResource { allowed, .. } = p.route("h", "/api/orders/1", "DELETE") else {
        panic!("DELETE must match no resource");
    };
    assert_eq!(allowed, vec!["POST", "GET"]);
    assert!(matches!(p.route("h", "/api/x", "GET"), Target::App { .. }));
    assert!(matches!(
        p.route("h", "/other", "GET"),
        Target::NoApplication(_)
    ));
}

/// review13b: a rule on a header named with an underscore sees every spelling a CGI-style
/// backend reads as it (`x-tenant` and `x-tenant`'s mixes, not only `x_tenant`).
#[test]
fn header_rule_named_with_an_underscore_sees_the_dashed_spellings() {
    let mut r = req();
    let green = one_rule(json!({"type": "header", "header": "x_tenant", "equals": "green"}));
    r.headers = HeaderList::new([("x_tenant", "green")]);
    assert!(r.allowed(&green));
    for forged in ["x-tenant", "X-Tenant", "x_tenant"] {
        r.headers = HeaderList::new([("x_tenant", "green"), (forged, "blue")]);
        assert!(!r.allowed(&green), "{forged}");
    }
    r.headers = HeaderList::new([("x-tenant", "green")]);
    assert!(r.allowed(&green), "the dashed spelling is the same header");
    let absent =
        one_rule(json!({"type": "header", "header": "x_admin", "present": true, "negate": true}));
    r.headers = HeaderList::new([("x-admin", "1")]);
    assert!(!r.allowed(&absent));
}
