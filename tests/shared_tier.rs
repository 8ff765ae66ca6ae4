//! The caches' shared tier (the native build's process-wide L2), through the public sans-IO
//! API: two workers (two `VmState`s) share one tier, a plain-map fake of the trait that
//! counts what it answers. A miss in one worker's own caches finds what the other learned,
//! without a callout; expired entries are misses; a revoked session found there is refused;
//! rate limits are exact across the workers.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::flow::{HeaderList, RequestFlow};
use envoy_wam::http::{Action, CalloutResult};
use envoy_wam::revocation::Revoked;

use serde_json::{json, Value};

mod common;
use common::fake_tier::{FakeTier, Process};
use common::*;

fn config() -> Value {
    json!({
        "op": {
            "issuer": ISSUER,
            "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks",
            "introspection_endpoint": "https://op.example.com/token/introspection",
            "timeout_ms": 2000
        },
        "client": {"client_id": "pa_wam", "client_secret": "top-secret-value"},
        "session": {
            "signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([9u8; 32])}],
            "claims": ["groups"]
        },
        "identity_headers": [{"header": "x-wam-user", "claim": "sub"}],
        "authtoken": {"issuer": "envoy-wam", "keys": [{"kid": "gw", "alg": "ES256", "private_key_pem": GW_KEY}]},
        "site_authenticators": [
            {"name": "ids", "type": "jwt", "audience": "https://site", "claims": ["groups"],
             "inject": {"header": "x-site-jwt"}}
        ],
        "policy": {
            "applications": [
                {"name": "orders", "hosts": ["api.example.com"], "type": "api",
                 "api": {"validation": "jwt", "audiences": ["https://api.example.com"]},
                 "resources": [{"name": "root", "paths": ["/*"]}]},
                {"name": "opaque", "hosts": ["intro.example.com"], "type": "api",
                 "api": {"validation": "introspection"},
                 "resources": [{"name": "root", "paths": ["/*"]}]},
                {"name": "sited", "hosts": ["sited.example.com"], "type": "web",
                 "site_authenticator": "ids",
                 "resources": [{"name": "root", "paths": ["/*"]}]},
                {"name": "portal", "hosts": ["gw.example.com"], "type": "web",
                 "resources": [
                    {"name": "limited", "paths": ["/limited/*"],
                     "rules": [{"type": "rate_limit", "requests": 3, "interval_s": 3600,
                                "per": "client_address"}]},
                    {"name": "root", "paths": ["/*"]}]}
            ]
        }
    })
}

impl Process {
    fn new(tier: Option<Arc<FakeTier>>) -> Self {
        Self::with(&config(), tier)
    }

    fn request(&mut self, w: usize, h: &HeaderList, now: u64) -> Action {
        self.request_in(w, &mut RequestFlow::new(), h, now)
    }

    fn answer(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        h: &HeaderList,
        r: CalloutResult,
    ) -> Action {
        self.answer_at(w, flow, h, r, NOW)
    }

    /// Worker `w` fetches the keys for `h` (a new token) and lets it through.
    fn fetch_keys(&mut self, w: usize, h: &HeaderList, jwks: Vec<u8>, now: u64) {
        let mut flow = RequestFlow::new();
        assert_eq!(callout(self.request_in(w, &mut flow, h, now)).path, "/jwks");
        let keys = CalloutResult::Response {
            status: 200,
            body: jwks,
        };
        forward(self.answer_at(w, &mut flow, h, keys, now));
    }
}

fn jwt_request(token: &str) -> HeaderList {
    let auth = format!("Bearer {token}");
    at("api.example.com", "GET", "/x", &[("authorization", &auth)])
}

fn access_token(op: &Op, sub: &str) -> String {
    op.sign(
        json!({"iss": ISSUER, "sub": sub, "aud": "https://api.example.com",
                   "exp": NOW + 600, "iat": NOW}),
    )
}

fn user(f: &envoy_wam::http::Forward) -> Option<&str> {
    f.identity
        .iter()
        .find(|(n, _)| n == "x-wam-user")
        .and_then(|(_, v)| v.as_deref())
}

#[test]
fn a_token_and_the_keys_one_worker_learned_serve_the_other_without_a_callout() {
    let op = Op::new();
    let tier = Arc::new(FakeTier::default());
    let mut p = Process::new(Some(tier.clone()));
    let first = access_token(&op, "svc-1");
    let h = jwt_request(&first);
    // Worker 0 fetches the keys and verifies the token.
    let mut flow = RequestFlow::new();
    let c = callout(p.request_in(0, &mut flow, &h, NOW));
    assert_eq!(c.path, "/jwks");
    let keys = CalloutResult::Response {
        status: 200,
        body: op.jwks(),
    };
    assert_eq!(
        user(&forward(p.answer(0, &mut flow, &h, keys))),
        Some("svc-1")
    );
    // Worker 1 has neither: the same token is answered from the tier, no callout.
    let before = tier.hits();
    assert_eq!(user(&forward(p.request(1, &h, NOW + 1))), Some("svc-1"));
    assert_eq!(tier.hits(), before + 1, "one answer from the tier");
    // And then from worker 1's own cache: the tier is not asked again.
    assert_eq!(user(&forward(p.request(1, &h, NOW + 2))), Some("svc-1"));
    assert_eq!(
        tier.hits(),
        before + 1,
        "a hit in the worker's own cache asks no tier"
    );
    // A token worker 1 has never seen: verified there with the keys worker 0 fetched.
    let second = jwt_request(&access_token(&op, "svc-2"));
    assert_eq!(
        user(&forward(p.request(1, &second, NOW + 3))),
        Some("svc-2")
    );

    // Without a tier, worker 1 fetches the keys itself.
    let mut alone = Process::new(None);
    let keys = CalloutResult::Response {
        status: 200,
        body: op.jwks(),
    };
    let mut flow = RequestFlow::new();
    callout(alone.request_in(0, &mut flow, &h, NOW));
    forward(alone.answer(0, &mut flow, &h, keys));
    assert_eq!(callout(alone.request(1, &h, NOW + 1)).path, "/jwks");
}

/// The OP's JWKS after a rotation: `old`'s key (kid op-ec-1) and `new`'s, as op-ec-2.
fn rotated_jwks(old: &Op, new: &Op) -> Vec<u8> {
    let keys = |op: &Op| serde_json::from_slice::<Value>(&op.jwks()).unwrap()["keys"][0].clone();
    let mut second = keys(new);
    second["kid"] = json!("op-ec-2");
    json!({"keys": [keys(old), second]})
        .to_string()
        .into_bytes()
}

#[test]
fn a_worker_meeting_an_unknown_kid_takes_the_keys_another_fetched_after_a_rotation() {
    let old = Op::new();
    let mut new = Op::new();
    new.key = new.key.with_key_id("op-ec-2");
    let tier = Arc::new(FakeTier::default());
    let mut p = Process::new(Some(tier));
    // Both workers have the keys from before the rotation (worker 1 took worker 0's).
    p.fetch_keys(0, &jwt_request(&access_token(&old, "a")), old.jwks(), NOW);
    let h = jwt_request(&access_token(&old, "b"));
    assert_eq!(user(&forward(p.request(1, &h, NOW))), Some("b"));
    // The OP rotates; worker 0 meets the new kid and fetches the new set.
    p.fetch_keys(
        0,
        &jwt_request(&access_token(&new, "c")),
        rotated_jwks(&old, &new),
        NOW + 100,
    );
    // Worker 1 meets it too: its set lacks the kid, the tier has a later one. No callout.
    let h = jwt_request(&access_token(&new, "d"));
    assert_eq!(user(&forward(p.request(1, &h, NOW + 101))), Some("d"));

    // Without a tier, worker 1 fetches on its own.
    let mut alone = Process::new(None);
    alone.fetch_keys(1, &jwt_request(&access_token(&old, "a")), old.jwks(), NOW);
    alone.fetch_keys(
        0,
        &jwt_request(&access_token(&new, "c")),
        rotated_jwks(&old, &new),
        NOW + 100,
    );
    assert_eq!(callout(alone.request(1, &h, NOW + 101)).path, "/jwks");
}

fn introspection(exp: u64) -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        body: json!({"active": true, "sub": "bob", "exp": exp})
            .to_string()
            .into_bytes(),
    }
}

#[test]
fn an_introspection_result_is_shared_until_it_expires_and_not_after() {
    let tier = Arc::new(FakeTier::default());
    let mut p = Process::new(Some(tier.clone()));
    let h = at(
        "intro.example.com",
        "GET",
        "/x",
        &[("authorization", "Bearer opaque-1")],
    );
    let mut flow = RequestFlow::new();
    let c = callout(p.request_in(0, &mut flow, &h, NOW));
    assert_eq!(c.path, "/token/introspection");
    assert_eq!(
        user(&forward(p.answer(
            0,
            &mut flow,
            &h,
            introspection(NOW + 60)
        ))),
        Some("bob")
    );
    // Worker 1, within the result's life: from the tier.
    assert_eq!(user(&forward(p.request(1, &h, NOW + 59))), Some("bob"));
    // A third worker's view at the expiry: the tier's entry is a miss, so it asks again.
    let mut late = Process::new(Some(tier.clone()));
    let c = callout(late.request(1, &h, NOW + 60));
    assert_eq!(
        c.path, "/token/introspection",
        "an expired shared entry is a miss"
    );
}

#[test]
fn a_session_verified_by_one_worker_is_found_by_the_other_and_still_revocable() {
    let tier = Arc::new(FakeTier::default());
    let mut p = Process::new(Some(tier.clone()));
    let cookie = session_cookie(&p.settings.default_web().session.keys, "alice", &["staff"]);
    let h = at("gw.example.com", "GET", "/app", &[("cookie", &cookie)]);
    assert_eq!(user(&forward(p.request(0, &h, NOW))), Some("alice"));
    let before = tier.hits();
    assert_eq!(user(&forward(p.request(1, &h, NOW + 1))), Some("alice"));
    assert_eq!(
        tier.hits(),
        before + 1,
        "worker 1 found the session in the tier"
    );

    // Past its idle timeout or lifetime, a shared entry is no session.
    let mut late = Process::new(Some(tier.clone()));
    let hits = tier.hits();
    assert!(matches!(
        late.request(0, &h, NOW + 3600),
        Action::Respond(_)
    ));
    assert_eq!(tier.hits(), hits + 1, "found, and refused for its time");

    // A logout known to a worker ends the session it finds in the tier.
    let mut other = Process::new(Some(tier.clone()));
    other.workers[0]
        .revoked
        .revoke(Revoked::Session("sid-alice".into()), NOW, NOW + 7200, NOW);
    let hits = tier.hits();
    let mut flow = RequestFlow::new();
    let refused = other.request_in(0, &mut flow, &h, NOW + 2);
    // The logout is a moment old: the refusal is held until the other workers know of it.
    assert!(
        refused == Action::Wait && flow.holds_answer(),
        "revoked: {refused:?}"
    );
    assert_eq!(tier.hits(), hits + 1, "the session came from the tier");
}

#[test]
fn a_mediated_token_made_by_one_worker_is_sent_by_the_other() {
    let tier = Arc::new(FakeTier::default());
    let mut p = Process::new(Some(tier.clone()));
    let cookie = session_cookie(&p.settings.default_web().session.keys, "alice", &["staff"]);
    let h = at("sited.example.com", "GET", "/app", &[("cookie", &cookie)]);
    let site_jwt = |f: envoy_wam::http::Forward| {
        let (_, v) = f
            .identity
            .iter()
            .chain(f.request_headers.iter())
            .find(|(n, _)| n == "x-site-jwt")
            .cloned()
            .unwrap();
        v.unwrap()
    };
    let made = site_jwt(forward(p.request(0, &h, NOW)));
    // Each signing has its own `jti`: the same token on worker 1 means it was not signed again.
    assert_eq!(site_jwt(forward(p.request(1, &h, NOW + 1))), made);
    let mut alone = Process::new(None);
    let a = site_jwt(forward(alone.request(0, &h, NOW)));
    assert_ne!(
        site_jwt(forward(alone.request(1, &h, NOW + 1))),
        a,
        "per worker without a tier"
    );
}

#[test]
fn a_rate_limit_is_exact_across_workers_sharing_a_tier() {
    let tier = Arc::new(FakeTier::default());
    let mut shared = Process::new(Some(tier));
    let cookie = session_cookie(&shared.settings.default_web().session.keys, "alice", &[]);
    let h = at(
        "gw.example.com",
        "GET",
        "/limited/x",
        &[("cookie", &cookie)],
    );
    let count = |p: &mut Process| {
        (0..10)
            .filter(|i| match p.request(i % 2, &h, NOW) {
                Action::Forward(_) => true,
                Action::Respond(r) if r.status == 429 => false,
                other => panic!("{other:?}"),
            })
            .count()
    };
    assert_eq!(count(&mut shared), 3, "3 per Envoy, whichever worker");
    let mut alone = Process::new(None);
    assert_eq!(count(&mut alone), 6, "3 per worker without a tier");
}
