//! Review of the shared tier (issue 13, commit 9a4b592): attacks on the native build's
//! process-wide L2, played on two workers (two `VmState`s) sharing a plain-map tier that keeps
//! what the real one (`host::native::shared_caches`) keeps, with the same "later JWKS wins" rule.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::flow::{HeaderList, RequestFlow};
use envoy_wam::http::{Action, CalloutResult};
use serde_json::{json, Value};

mod common;
use common::fake_tier::{FakeTier as Tier, Process};
use common::two_ops::two_op_config;
use common::*;

fn config() -> Value {
    json!({
        "op": {
            "issuer": ISSUER,
            "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks",
            "timeout_ms": 2000
        },
        "client": {"client_id": "pa_wam", "client_secret": "top-secret-value"},
        "session": {
            "signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([9u8; 32])}]
        },
        "identity_headers": [{"header": "x-wam-user", "claim": "sub"}],
        "policy": {
            "applications": [
                {"name": "orders", "hosts": ["api.example.com"], "type": "api",
                 "api": {"validation": "jwt", "audiences": ["https://api.example.com"]},
                 "resources": [{"name": "root", "paths": ["/*"]}]},
                {"name": "billing", "hosts": ["billing.example.com"], "type": "api",
                 "api": {"validation": "jwt", "audiences": ["https://billing.example.com"]},
                 "resources": [{"name": "root", "paths": ["/*"]}]}
            ]
        }
    })
}

impl Process {
    fn new(tier: Option<Arc<Tier>>) -> Self {
        Self::with(&config(), tier)
    }

    fn request(&mut self, w: usize, flow: &mut RequestFlow, h: &HeaderList, now: u64) -> Action {
        self.request_in(w, flow, h, now)
    }

    fn answer(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        h: &HeaderList,
        jwks: Vec<u8>,
        now: u64,
    ) -> Action {
        let r = CalloutResult::Response {
            status: 200,
            body: jwks,
        };
        self.answer_at(w, flow, h, r, now)
    }
}

fn bearer(host: &str, token: &str) -> HeaderList {
    at(
        host,
        "GET",
        "/x",
        &[("authorization", &format!("Bearer {token}"))],
    )
}

fn token(op: &Op, sub: &str, aud: &str, now: u64) -> String {
    op.sign(json!({"iss": ISSUER, "sub": sub, "aud": aud, "exp": now + 600, "iat": now}))
}

/// The OP's set after a rotation that removed `old`'s key: only `new`'s, as kid op-ec-2.
fn only_new(new: &Op) -> Vec<u8> {
    let mut set: Value = serde_json::from_slice(&new.jwks()).unwrap();
    set["keys"][0]["kid"] = json!("op-ec-2");
    set.to_string().into_bytes()
}

/// A JWKS request sent before the OP dropped a (compromised) key but answered after a later
/// request got the set without it must not make the set with the key the tier's "latest":
/// a worker that holds the new set, shown a token signed with the dropped key, must not take
/// the old set from the tier and let the token through (without a tier it refetches and
/// refuses).
#[test]
fn a_slow_jwks_answer_from_before_a_rotation_does_not_bring_a_dropped_key_back() {
    let old = Op::new();
    let mut new = Op::new();
    new.key = new.key.with_key_id("op-ec-2");
    let api = "https://api.example.com";
    let run = |tier: Option<Arc<Tier>>| {
        let mut p = Process::new(tier);
        // Worker 1 asks for the keys before the rotation (a token of the old key).
        let h1 = bearer("api.example.com", &token(&old, "before", api, NOW + 99));
        let mut slow = RequestFlow::new();
        assert_eq!(
            callout(p.request(1, &mut slow, &h1, NOW + 99)).path,
            "/jwks"
        );
        // The OP drops the old key; worker 0 fetches the new set and answers at once.
        let h0 = bearer("api.example.com", &token(&new, "after", api, NOW + 100));
        let mut fast = RequestFlow::new();
        assert_eq!(
            callout(p.request(0, &mut fast, &h0, NOW + 100)).path,
            "/jwks"
        );
        forward(p.answer(0, &mut fast, &h0, only_new(&new), NOW + 100));
        // Worker 1's answer, sent before the rotation, arrives last.
        forward(p.answer(1, &mut slow, &h1, old.jwks(), NOW + 101));
        // A token signed with the dropped key, at worker 0 once its refetch throttle is over.
        let forged = bearer("api.example.com", &token(&old, "mallory", api, NOW + 400));
        p.request(0, &mut RequestFlow::new(), &forged, NOW + 400)
    };
    let alone = run(None);
    assert_eq!(callout(alone).path, "/jwks", "without a tier: refetched");
    let shared = run(Some(Arc::new(Tier::default())));
    assert!(
        !matches!(shared, Action::Forward(_)),
        "the dropped key came back from the tier: {shared:?}"
    );
}

/// Guard: a token accepted by one worker for one application is not accepted from the tier by
/// another worker for an application whose provider wants another audience.
#[test]
fn a_verdict_for_one_applications_audience_is_not_reused_for_another() {
    let op = Op::new();
    let mut p = Process::new(Some(Arc::new(Tier::default())));
    let t = token(&op, "svc", "https://api.example.com", NOW);
    let orders = bearer("api.example.com", &t);
    let mut flow = RequestFlow::new();
    assert_eq!(callout(p.request(0, &mut flow, &orders, NOW)).path, "/jwks");
    forward(p.answer(0, &mut flow, &orders, op.jwks(), NOW));
    let billing = bearer("billing.example.com", &t);
    let refused = p.request(1, &mut RequestFlow::new(), &billing, NOW + 1);
    assert_eq!(respond(refused).status, 401);
}

fn header<'f>(f: &'f envoy_wam::http::Forward, name: &str) -> Option<&'f str> {
    f.identity
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_deref())
}

/// Guard: two web sessions with the same cookie name and secret (each derives its own keys
/// from it). A cookie one worker verified for the default web session is, at the other worker,
/// no session of the partner web session: the tier is asked per web session.
#[test]
fn a_session_in_the_tier_serves_only_the_web_session_that_verified_it() {
    let secret = URL_SAFE_NO_PAD.encode([9u8; 32]);
    let cfg = two_op_config("PA.wam", &secret);
    let tier = Arc::new(Tier::default());
    let mut p = Process::with(&cfg, Some(tier.clone()));
    let cookie = session_cookie(&p.settings.default_web().session.keys, "alice", &[]);
    let corp = at("gw.example.com", "GET", "/x", &[("cookie", &cookie)]);
    let f = forward(p.request(0, &mut RequestFlow::new(), &corp, NOW));
    assert_eq!(header(&f, "x-wam-user"), Some("alice"));
    assert_eq!(tier.sessions.lock().unwrap().len(), 1, "told to the tier");
    let partner = at(
        "gw.example.com",
        "GET",
        "/partner/x",
        &[("cookie", &cookie)],
    );
    let r = respond(p.request(1, &mut RequestFlow::new(), &partner, NOW + 1));
    assert_eq!(r.status, 401);
    // The same cookie at the default web session on worker 1: from the tier.
    let f = forward(p.request(1, &mut RequestFlow::new(), &corp, NOW + 2));
    assert_eq!(header(&f, "x-wam-user"), Some("alice"));
}
