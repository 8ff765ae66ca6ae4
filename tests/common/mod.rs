//! What the native flow tests share: a deterministic RNG, a test OP with an ES256 key, request
//! heads, and unwrapping the core's actions.
#![allow(dead_code)]

pub mod fake_tier;
pub mod two_ops;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, RequestFlow, VmState};
use envoy_wam::http::{Action, Body, Callout, CalloutResult, Forward, LocalResponse, Wake};
use envoy_wam::login::Entropy;
use envoy_wam::session::KeyRing;
use envoy_wam::session::Session;
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

pub const NOW: u64 = 1_800_000_000;
pub const ISSUER: &str = "https://op.example.com";

pub struct Rng(pub u64);
impl Entropy for Rng {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for b in buf {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *b = (self.0 >> 33) as u8;
        }
        true
    }
}

pub struct Op {
    pub key: ES256KeyPair,
}

impl Op {
    pub fn new() -> Self {
        Self {
            key: ES256KeyPair::generate().with_key_id("op-ec-1"),
        }
    }

    pub fn jwks(&self) -> Vec<u8> {
        let point = self.key.public_key().public_key().to_bytes_uncompressed();
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "kid": "op-ec-1", "use": "sig", "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65])
        }]})
        .to_string()
        .into_bytes()
    }

    /// Signs `claims` (a JSON object) with the OP's key.
    pub fn sign(&self, claims: Value) -> String {
        let claims: JWTClaims<Map<String, Value>> = serde_json::from_value(claims).unwrap();
        self.key.sign(claims).unwrap()
    }

    /// A logout token signed by the OP (`typ: logout+jwt`).
    pub fn logout_token(&self, claims: Value) -> String {
        let claims: JWTClaims<Map<String, Value>> = serde_json::from_value(claims).unwrap();
        let opts = HeaderOptions {
            signature_type: Some("logout+jwt".into()),
            ..Default::default()
        };
        self.key.sign_with_options(claims, &opts).unwrap()
    }
}

pub fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> HeaderList {
    let mut all = vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", "gw.example.com"),
        (":path", path),
    ];
    all.extend_from_slice(headers);
    HeaderList::new(all)
}

pub fn respond(a: Action) -> LocalResponse {
    match a {
        Action::Respond(r) => r,
        other => panic!("expected a local response, got {other:?}"),
    }
}

pub fn callout(a: Action) -> Callout {
    match a {
        Action::Callout(c) => c,
        other => panic!("expected a callout, got {other:?}"),
    }
}

pub fn forward(a: Action) -> Forward {
    match a {
        Action::Forward(f) => f,
        other => panic!("expected the request to go upstream, got {other:?}"),
    }
}

/// A session cookie (`PA.wam=...`) for `sub` in `groups`, signed with `keys`, valid for an hour
/// from [`NOW`]: what a login at the OP would have given.
pub fn session_cookie(keys: &KeyRing, sub: &str, groups: &[&str]) -> String {
    let mut claims = Map::new();
    claims.insert("groups".into(), json!(groups));
    let s = Session {
        sid: format!("sid-{sub}"),
        sub: sub.into(),
        auth_time: NOW,
        expires_at: NOW + 3600,
        last_activity: NOW,
        claims,
        created_at: 0,
        op: Default::default(),
    };
    format!("PA.wam={}", s.encode(keys, &mut Rng(7)).unwrap())
}

/// A request head for `host`, with the pseudo-headers Envoy gives the filter.
pub fn at(host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> HeaderList {
    let mut all = vec![
        (":method", method),
        (":scheme", "https"),
        (":authority", host),
        (":path", path),
    ];
    all.extend_from_slice(headers);
    HeaderList::new(all)
}

/// One worker's gateway: a configuration, its VM state and a deterministic RNG.
pub struct Gateway {
    pub settings: Settings,
    pub vm: VmState,
    pub rng: Rng,
}

impl Gateway {
    pub fn with(config: &Value) -> Self {
        let settings = Settings::from_json(config.to_string().as_bytes()).unwrap();
        Self {
            vm: VmState::new(&settings),
            settings,
            rng: Rng(7),
        }
    }

    /// A new request through the whole flow, at [`NOW`].
    pub fn request(&mut self, h: &HeaderList) -> Action {
        RequestFlow::new().on_request(&self.settings, &mut self.vm, h, NOW, &mut self.rng)
    }

    /// A request whose answer the gateway holds for a few root ticks (a logout, until the other
    /// workers know of it): the ticks run, and the released answer is returned.
    pub fn request_ticked(&mut self, h: &HeaderList) -> Action {
        let mut flow = RequestFlow::new();
        let action = flow.on_request(&self.settings, &mut self.vm, h, NOW, &mut self.rng);
        self.released(&mut flow, h, action)
    }

    /// `action` of `flow`, or, when it is an answer held for ticks (one that ended sessions,
    /// until the other workers know of it), that answer once the ticks released it.
    pub fn released(&mut self, flow: &mut RequestFlow, h: &HeaderList, action: Action) -> Action {
        if action != Action::Wait || !flow.holds_answer() {
            return action;
        }
        for _ in 0..3 {
            self.vm.on_tick(&self.settings, NOW);
            if !std::mem::take(&mut self.vm.woken).is_empty() {
                return flow.on_wake(
                    &self.settings,
                    &mut self.vm,
                    h,
                    Wake::Ready,
                    NOW,
                    &mut self.rng,
                );
            }
        }
        action
    }

    /// A new request through `flow`, whose later steps the caller drives, at [`NOW`].
    pub fn request_in(&mut self, flow: &mut RequestFlow, h: &HeaderList) -> Action {
        flow.on_request(&self.settings, &mut self.vm, h, NOW, &mut self.rng)
    }

    /// The body `flow` asked for (`Action::ReadBody`) arrives, at [`NOW`].
    pub fn body(&mut self, flow: &mut RequestFlow, h: &HeaderList, body: Body) -> Action {
        flow.on_body(&self.settings, &mut self.vm, h, body, NOW, &mut self.rng)
    }

    /// The answer to `flow`'s callout arrives, at [`NOW`].
    pub fn answer(
        &mut self,
        flow: &mut RequestFlow,
        h: &HeaderList,
        result: CalloutResult,
    ) -> Action {
        flow.on_callout(&self.settings, &mut self.vm, h, result, NOW, &mut self.rng)
    }
}

/// What every web-session test configuration starts from: the OP's authorization, token and
/// JWKS endpoints, the client with its redirect URI, and one session signing key. A test
/// [`merge`]s its own sections over it, so only what it changes is written out.
pub fn base_config() -> Value {
    json!({
        "op": {
            "issuer": ISSUER,
            "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks",
            "timeout_ms": 2000
        },
        "client": {"client_id": "pa_wam", "client_secret": "top-secret-value",
                   "redirect_uri": "https://gw.example.com/pa/oidc/cb"},
        "session": {
            "signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([9u8; 32])}]
        }
    })
}

/// `base` with `over` laid on it: objects merge key by key, any other value (arrays included)
/// replaces what was there.
pub fn merge(mut base: Value, over: Value) -> Value {
    match (&mut base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                let old = b.remove(&k).unwrap_or(Value::Null);
                b.insert(k, merge(old, v));
            }
            base
        }
        (_, over) => over,
    }
}

/// The gateway's own ES256 signing key (`authtoken`) in test configurations.
pub const GW_KEY: &str = "-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfyv0FJtKZ8bZIYjO\n\
VB+fnPuAMcMa6VgFu8XsrF1UUu6hRANCAAT1tD44epT/ta2PQKzRv7Q/Bz1fE5z8\n\
xdvWepu+aFdDME922kc5BMST/1bpsT/we6tcJv455hS6f4+XRRgQFmb2\n\
-----END PRIVATE KEY-----\n";
