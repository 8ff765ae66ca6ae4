//! Micro-benchmark of what metrics cost the hot path: a valid-session request through the
//! whole flow (route, session cookie from the worker's cache, policy, identity headers),
//! natively, with `metrics` on and off, in many short interleaved rounds; prints the median
//! ns per request of each (this thread's CPU time from /proc/thread-self/schedstat, which a
//! loaded machine disturbs less than the wall clock) and the heap allocations per request
//! (counting must add none).
//!
//! cargo run --release --example bench_metrics

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, RequestFlow, VmState};
use envoy_wam::http::Action;
use envoy_wam::login::Entropy;
use envoy_wam::metrics::Counter;
use envoy_wam::session::Session;
use serde_json::{json, Map};

/// Counts allocations, to show that counting allocates nothing.
struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;

struct Rng(u64);
impl Entropy for Rng {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for b in buf {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (self.0 >> 33) as u8;
        }
        true
    }
}

const NOW: u64 = 1_800_000_000;
const REQUESTS: usize = 20_000;
const ROUNDS: usize = 61;

/// This thread's time on CPU so far, in ns (Linux); the wall clock elsewhere.
fn cpu_ns(wall: Instant) -> u128 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| wall.elapsed().as_nanos())
}

fn settings(metrics: bool) -> Settings {
    // Twelve applications (as bench_policy.py), the request's the last one by host.
    let apps: Vec<_> = (0..12)
        .map(|i| {
            json!({"name": format!("app-{i}"), "hosts": [format!("app{i}.example.com")],
                   "resources": [{"name": "admin", "paths": ["/admin/*"],
                                  "rules": [{"type": "attribute", "claim": "groups", "one_of": ["admins"]}]},
                                 {"name": "root", "paths": ["/*"]}]})
        })
        .collect();
    let config = json!({
        "op": {"issuer": "https://op.example.com", "cluster": "op",
               "authorization_endpoint": "https://op.example.com/auth",
               "token_endpoint": "https://op.example.com/token",
               "jwks_uri": "https://op.example.com/jwks"},
        "client": {"client_id": "pa_wam", "client_secret": "s",
                   "redirect_uri": "https://gw.example.com/pa/oidc/cb"},
        "session": {"signing_keys": [{"kid": "k1", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}],
                    "claims": ["groups"]},
        "identity_headers": [{"header": "x-wam-user", "claim": "sub"},
                             {"header": "x-wam-groups", "claim": "groups"}],
        "policy": {"applications": apps},
        "metrics": metrics
    });
    Settings::from_json(config.to_string().as_bytes()).unwrap()
}

struct Variant {
    settings: Settings,
    vm: VmState,
    request: HeaderList,
}

impl Variant {
    fn new(metrics: bool) -> Self {
        let settings = settings(metrics);
        let mut claims = Map::new();
        claims.insert("groups".into(), json!(["staff"]));
        let session = Session {
            sid: "sid-1".into(),
            sub: "alice".into(),
            auth_time: NOW,
            created_at: NOW,
            expires_at: NOW + 3600,
            last_activity: NOW,
            claims,
            op: Default::default(),
        };
        let cookie = format!(
            "theme=dark; PA.wam={}",
            session
                .encode(&settings.web(0).session.keys, &mut Rng(1))
                .unwrap()
        );
        let request = HeaderList::new(vec![
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "app11.example.com"),
            (":path", "/orders/7"),
            ("accept", "text/html"),
            ("cookie", &cookie),
        ]);
        Self {
            vm: VmState::new(&settings),
            settings,
            request,
        }
    }

    /// ns per request and allocations per request over `n` requests.
    fn run(&mut self, n: usize) -> (f64, f64) {
        let mut rng = Rng(2);
        let wall = Instant::now();
        let allocs = ALLOCS.load(Relaxed);
        let start = cpu_ns(wall);
        for _ in 0..n {
            let action = RequestFlow::new().on_request(
                &self.settings,
                &mut self.vm,
                &self.request,
                NOW,
                &mut rng,
            );
            assert!(matches!(black_box(action), Action::Forward(_)));
        }
        let allocs = (ALLOCS.load(Relaxed) - allocs) as f64 / n as f64;
        let ns = (cpu_ns(wall) - start) as f64 / n as f64;
        // What the host's tick would do ten times a second.
        self.vm.metrics.take_counts(|i, v| {
            black_box((i, v));
        });
        (ns, allocs)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    // `again` is the same as `on`: how far two identical variants differ on this machine.
    let mut variants = [Variant::new(true), Variant::new(false), Variant::new(true)];
    for v in variants.iter_mut() {
        v.run(REQUESTS);
    }
    let mut ns: [Vec<f64>; 3] = Default::default();
    let mut allocs = [0.0; 3];
    for round in 0..ROUNDS {
        for k in 0..3 {
            let i = (round + k) % 3;
            let (t, a) = variants[i].run(REQUESTS);
            ns[i].push(t);
            allocs[i] = a;
        }
    }
    assert_eq!(
        variants[0].vm.metrics.get(Counter::SessionValid),
        0,
        "taken"
    );
    let diff = |a: usize, b: usize| median(ns[a].iter().zip(&ns[b]).map(|(x, y)| x - y).collect());
    println!(
        "valid-session request through the flow, natively, 12 applications, {ROUNDS} rounds of {REQUESTS}"
    );
    for (i, label) in ["metrics on ", "metrics off", "on, again "]
        .iter()
        .enumerate()
    {
        let m = median(ns[i].clone());
        println!(
            "  {label}: {m:7.1} ns/request, {:.2} allocations/request",
            allocs[i]
        );
    }
    println!(
        "  on - off   : {:+7.1} ns/request (median of per-round differences)",
        diff(0, 1)
    );
    println!(
        "  on - again : {:+7.1} ns/request (the noise: same variant twice)",
        diff(0, 2)
    );
}
