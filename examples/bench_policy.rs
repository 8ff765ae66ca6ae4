//! Micro-benchmark of the policy engine: 200 applications x 20 resources with nested rule
//! sets; routes and evaluates a mix of requests and prints the median cost per request.
//!
//! cargo run --release --example bench_policy

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::Instant;

use envoy_wam::flow::HeaderList;
use envoy_wam::policy::{compile, Identity, RateLimits, RawPolicy, RequestFacts, Target};
use serde_json::{json, Map, Value};

/// Counts live heap bytes, to size the compiled policy.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;

const APPS: usize = 200;
const RESOURCES: usize = 20;

fn config() -> Value {
    let rule_sets = json!([
        {"name": "office-hours", "rules": [
            {"type": "time", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "20:00", "utc_offset": "+01:00"},
            {"type": "network", "cidrs": ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"]}
        ]},
        {"name": "staff", "mode": "any", "rules": [
            {"type": "attribute", "claim": "groups", "one_of": ["admins", "auditors"]},
            {"type": "all", "rules": [
                {"type": "attribute", "claim": "groups", "equals": "staff"},
                {"type": "rule_set", "name": "office-hours"}
            ]}
        ]},
        {"name": "api-read", "mode": "all", "rules": [
            {"type": "scope", "any": ["orders:read", "orders:admin"]},
            {"type": "header", "header": "x-tenant", "one_of": ["blue", "green"]}
        ]}
    ]);
    let mut apps = Vec::new();
    for a in 0..APPS {
        let mut resources = Vec::new();
        for r in 0..RESOURCES {
            let rules = match r % 4 {
                0 => json!([{"type": "rule_set", "name": "staff"}]),
                1 => json!([{"type": "rule_set", "name": "api-read"},
                            {"type": "method", "methods": ["GET", "HEAD"]}]),
                2 => json!([{"type": "any", "rules": [
                        {"type": "attribute", "claim": "email", "like": "*@example.com", "case_insensitive": true},
                        {"type": "rule_set", "name": "staff"}]}]),
                _ => json!([{"type": "header", "header": "x-requested-with", "present": true},
                            {"type": "attribute", "claim": "department", "matches": "^(sales|ops)-[0-9]+$"}]),
            };
            let paths = match r % 3 {
                0 => json!([format!("/r{r}/*")]),
                1 => json!([format!("/r{r}/items/*"), format!("/r{r}/list")]),
                _ => json!([format!("/r{r}/*.json"), format!("/r{r}/exact")]),
            };
            resources.push(
                json!({"name": format!("res{r}"), "paths": paths, "rules": rules,
                                  "audit": r % 5 == 0}),
            );
        }
        apps.push(json!({
            "name": format!("app{a}"),
            "hosts": [format!("app{a}.example.com"), format!("app{a}.internal:8443")],
            "context_root": format!("/ctx{}", a % 7),
            "rules": [{"type": "network", "cidrs": ["0.0.0.0/0", "::/0"]}],
            "resources": resources
        }));
    }
    json!({"unprotected_paths": ["/favicon.ico", "/public/*"], "rule_sets": rule_sets, "applications": apps})
}

fn main() {
    let text = config().to_string();
    let raw = RawPolicy::from_json(text.as_bytes()).expect("parse");
    let before = LIVE.load(Relaxed);
    let t = Instant::now();
    let policy = compile(&raw).expect("compile");
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    let policy_bytes = LIVE.load(Relaxed) - before;
    drop(raw);

    let claims: Map<String, Value> = json!({
        "groups": ["staff", "engineering", "vpn-users", "wiki", "all"],
        "email": "Alice@Example.com", "department": "ops-42", "client_id": "web"
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let scopes = vec!["openid".to_string(), "orders:read".to_string()];
    let headers = HeaderList::new([
        ("x-tenant", "green"),
        ("x-requested-with", "XMLHttpRequest"),
        ("accept", "application/json"),
    ]);
    let ip: IpAddr = "10.1.2.3".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    // (host, path, method): first / middle / last application, resource hits and misses.
    let mut requests: Vec<(String, String, &str)> = Vec::new();
    for a in [0usize, 99, 199] {
        let host = format!("app{a}.example.com");
        let root = format!("/ctx{}", a % 7);
        for (path, method) in [
            ("/r0/page", "GET"),        // first resource, any-of rule sets
            ("/r9/a/b/c", "GET"),       // middle (wildcard)
            ("/r19/items/7", "GET"),    // last resource
            ("/r13/items/9", "GET"),    // scope + header + method
            ("/r14/data.json", "POST"), // like / nested any
            ("/r15/x", "GET"),          // header + regex on a claim
            ("/nowhere/at/all", "GET"), // resource miss: application rules only
            ("/r1/items/1", "DELETE"),  // scope ok, method refused
        ] {
            requests.push((host.clone(), format!("{root}{path}"), method));
        }
    }
    requests.push(("unknown.example.org".into(), "/x".into(), "GET"));
    requests.push(("app5.example.com".into(), "/public/logo.png".into(), "GET"));

    let mut limits = RateLimits::default();
    let now = 1_700_481_600u64; // a Monday, 12:00 UTC
    let mut run = |iterations: usize| -> (f64, usize) {
        let mut allowed = 0usize;
        let start = Instant::now();
        for _ in 0..iterations {
            for (host, path, method) in &requests {
                let facts = RequestFacts {
                    method,
                    path,
                    query: "",
                    headers: &headers,
                    client_ip: Some(ip),
                    now,
                    now_ms: now * 1000,
                    identity: Some(Identity {
                        sub: "alice",
                        claims: &claims,
                        scopes: &scopes,
                    }),
                };
                match black_box(&policy).route(black_box(host), path, method) {
                    Target::App { app, resource } => {
                        if app.evaluate(Some(resource), &facts, &mut limits).allowed() {
                            allowed += 1;
                        }
                    }
                    t => {
                        black_box(t);
                    }
                }
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / (iterations * requests.len()) as f64;
        (ns, allowed)
    };
    let route_only = |iterations: usize| -> f64 {
        let start = Instant::now();
        for _ in 0..iterations {
            for (host, path, method) in &requests {
                black_box(black_box(&policy).route(black_box(host), path, method));
            }
        }
        start.elapsed().as_nanos() as f64 / (iterations * requests.len()) as f64
    };
    let mut routes: Vec<f64> = (0..9).map(|_| route_only(2_000)).collect();
    routes.sort_by(f64::total_cmp);
    run(200); // warm-up
    let mut samples: Vec<f64> = (0..9).map(|_| run(2_000).0).collect();
    samples.sort_by(f64::total_cmp);
    let (_, allowed) = run(1);
    println!(
        "policy: {APPS} applications x {RESOURCES} resources, compiled in {compile_ms:.1} ms, ~{:.1} MiB heap",
        policy_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "request mix: {} requests ({allowed} allowed), route + evaluate: median {:.0} ns (min {:.0}, max {:.0}) over 9 runs",
        requests.len(),
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1]
    );
    println!("route alone: median {:.0} ns", routes[routes.len() / 2]);
}
