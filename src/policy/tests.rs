use serde_json::{json, Map, Value};

use super::*;
use crate::gateway::HeaderList;

const MON_10_UTC: u64 = 1_700_481_600; // Monday 2023-11-20 12:00 UTC

fn policy(v: Value) -> Policy {
    compile(&RawPolicy::from_json(v.to_string().as_bytes()).unwrap()).unwrap()
}

fn refused(v: Value) -> ConfigErrorView {
    let e = RawPolicy::from_json(v.to_string().as_bytes())
        .and_then(|raw| compile(&raw))
        .unwrap_err();
    ConfigErrorView(e.field, e.message)
}
#[derive(Debug)]
struct ConfigErrorView(String, String);

fn app(rules: Value, resources: Value) -> Value {
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
                app.evaluate(resource, &facts, &mut RateLimits::default())
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

    r.headers = HeaderList::new([("X-Tenant", "blue, green"), ("accept", "text/html")]);
    assert!(r.allowed(&one_rule(
        json!({"type": "header", "header": "X-Tenant", "equals": "green"})
    )));
    assert!(!r.allowed(&one_rule(
        json!({"type": "header", "header": "x-tenant", "equals": "red"})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "header", "header": "x-tenant", "present": true})
    )));
    assert!(r.allowed(&one_rule(
        json!({"type": "header", "header": "x-nope", "present": true, "negate": true})
    )));

    r.query = "a=1&mode=read%20only&mode=x";
    assert!(r.allowed(&one_rule(
        json!({"type": "query", "param": "mode", "equals": "read only"})
    )));
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
        Target::App { resource, .. } => resource.map(|r| r.name.clone()),
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
    assert_eq!(app_of("app.example.com", "/api"), "exact-api");
    assert_eq!(app_of("app.example.com", "/apiary"), "exact");
    assert_eq!(app_of("app.example.com:8443", "/p/x"), "port");
    assert_eq!(app_of("app.example.com", "/p/x"), "exact");
    assert_eq!(app_of("a.b.example.com", "/x"), "wild");
    assert_eq!(app_of("example.com", "/x"), "any");
    assert_eq!(app_of("other", "/health"), "Unprotected");
    assert_eq!(app_of("other", "/static/a.js"), "Unprotected");
    // Inside the API app, a path matching no resource has no resource (app rules only).
    assert!(matches!(
        p.route("app.example.com", "/api/v2", "GET"),
        Target::App { resource: None, .. }
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
    assert_eq!(RequestFacts::split_path("/a?b=1#f"), ("/a", "b=1"));
    assert_eq!(RequestFacts::split_path(""), ("", ""));
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
