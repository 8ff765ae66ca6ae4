//! What the session lifecycle tests share: a gateway of two workers (two `VmState`s over one
//! shared store, as two Envoy workers share proxy-wasm shared data), a scripted OP that answers
//! the callouts, a browser cookie jar, and logout tokens.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::rc::Rc;

use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, RequestFlow, VmState};
use envoy_wam::http::{Action, Body, Callout, CalloutResult, Forward, LocalResponse, Wake};
use envoy_wam::revocation::MemoryStore;
use envoy_wam::session::Session;
use serde_json::{json, Value};

use super::*;

pub const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml");
pub const XHR: (&str, &str) = ("accept", "application/json");
pub const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// The OP's session id in the ID tokens of [`id_claims`].
pub const OP_SID: &str = "op-sid-1";
pub const CLIENT_SECRET: &str = "top-secret-value";

/// A gateway with every endpoint of the OP configured, validation every 60 s; `tweak` edits
/// the JSON configuration before it is read.
pub fn config(tweak: impl FnOnce(&mut Value)) -> Value {
    let mut v = merge(
        base_config(),
        json!({
            "op": {
                "end_session_endpoint": "https://op.example.com/session/end",
                "userinfo_endpoint": "https://op.example.com/me",
                "revocation_endpoint": "https://op.example.com/token/revocation"
            },
            "session": {
                "claims": ["email", "groups"],
                "validate_interval_s": 60,
                "validation_grace_s": 300
            },
            "identity_headers": [
                {"header": "x-wam-user", "claim": "sub"},
                {"header": "x-wam-email", "claim": "email"},
                {"header": "x-wam-groups", "claim": "groups"}
            ]
        }),
    );
    tweak(&mut v);
    v
}

/// The claims of alice's ID token at sign-in (`nonce` given) or refresh (`None`), at `iat`.
pub fn id_claims(nonce: Option<&str>, iat: u64) -> Value {
    let mut c = json!({
        "iss": ISSUER, "sub": "alice", "aud": "pa_wam", "exp": iat + 300, "iat": iat,
        "email": "alice@example.com", "groups": ["staff", "admins"], "sid": OP_SID
    });
    if let Some(n) = nonce {
        c["nonce"] = n.into();
    }
    c
}

/// A token endpoint answer: 200 with `body`.
pub fn ok_json(body: Value) -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        body: body.to_string().into_bytes(),
    }
}

pub fn status_json(status: u16, body: Value) -> CalloutResult {
    CalloutResult::Response {
        status,
        body: body.to_string().into_bytes(),
    }
}

/// The form fields of a callout's body.
pub fn form(c: &Callout) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&c.body).into_owned().collect()
}

pub fn callout_header<'a>(c: &'a Callout, name: &str) -> Option<&'a str> {
    c.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// What a header becomes upstream: the last operation on it (identity headers, then the other
/// request headers). `None`: untouched; `Some(None)`: removed.
pub fn upstream(f: &Forward, name: &str) -> Option<Option<String>> {
    f.identity
        .iter()
        .chain(f.request_headers.iter())
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

pub fn set_cookies(r: &LocalResponse) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.clone())
        .collect()
}

/// `name=value` of a `Set-Cookie`.
pub fn pair(set_cookie: &str) -> (&str, &str) {
    let p = set_cookie.split(';').next().unwrap();
    p.split_once('=').unwrap()
}

/// A browser's cookies for the gateway's host.
#[derive(Default, Clone, Debug)]
pub struct Jar(pub BTreeMap<String, String>);

impl Jar {
    /// Takes in `Set-Cookie`s: `Max-Age=0` deletes.
    pub fn apply<S: AsRef<str>>(&mut self, sets: &[S]) {
        for s in sets {
            let s = s.as_ref();
            let (n, v) = pair(s);
            if s.contains("Max-Age=0;") || v.is_empty() {
                self.0.remove(n);
            } else {
                self.0.insert(n.to_string(), v.to_string());
            }
        }
    }

    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The session cookie's names in the jar (`PA.wam`, `PA.wam.0`, …).
    pub fn session_names(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(String::as_str)
            .filter(|n| *n == "PA.wam" || (n.starts_with("PA.wam.") && !n.contains("txn")))
            .collect()
    }

    /// The session cookie's value, joined from its chunks.
    pub fn session_value(&self) -> String {
        if let Some(v) = self.0.get("PA.wam") {
            return v.clone();
        }
        let first = &self.0["PA.wam.0"];
        let (count, head) = first.split_once('~').unwrap();
        let mut all = head.to_string();
        for i in 1..count.parse::<usize>().unwrap() {
            all.push_str(&self.0[&format!("PA.wam.{i}")]);
        }
        all
    }
}

/// Answers a callout as the OP would; panics on a callout the test did not expect.
pub type Script<'a> = dyn FnMut(&Callout) -> CalloutResult + 'a;

/// Two workers of one Envoy, and the OP.
pub struct World {
    pub settings: Settings,
    pub store: Rc<MemoryStore>,
    pub vms: Vec<VmState>,
    pub rng: Rng,
    pub op: Op,
    /// Every callout made so far, in order.
    pub callouts: Vec<Callout>,
}

impl World {
    pub fn new(config: &Value) -> Self {
        let settings = Settings::from_json(config.to_string().as_bytes()).unwrap();
        let store = Rc::new(MemoryStore::default());
        let vms = (0..2)
            .map(|_| {
                let mut vm = VmState::new(&settings);
                vm.store = store.clone();
                vm
            })
            .collect();
        Self {
            settings,
            store,
            vms,
            rng: Rng(42),
            op: Op::new(),
            callouts: Vec::new(),
        }
    }

    /// Sessions decoded as the gateway reads them.
    pub fn decode(&self, value: &str, now: u64) -> Option<Session> {
        let s = &self.settings.default_web().session;
        Session::decode(value, &s.keys, now, s.idle_timeout_s)
    }

    /// Carries `action` through its callouts, answered by `op`, to a final action.
    pub fn settle(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        h: &HeaderList,
        mut action: Action,
        now: u64,
        op: &mut Script<'_>,
    ) -> Action {
        while let Action::Callout(c) = action {
            let result = op(&c);
            self.callouts.push(c);
            action = flow.on_callout(
                &self.settings,
                &mut self.vms[w],
                h,
                result,
                now,
                &mut self.rng,
            );
        }
        self.release_hold(w, flow, h, action, now)
    }

    /// An answer the gateway holds for a few root ticks (one that ended sessions, until the
    /// other workers know of it): worker `w` ticks until it is released. Other waits are
    /// returned as they are.
    fn release_hold(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        h: &HeaderList,
        action: Action,
        now: u64,
    ) -> Action {
        if action != Action::Wait || !flow.holds_answer() {
            return action;
        }
        for _ in 0..3 {
            let _ = self.vms[w].on_tick(&self.settings, now);
            if !std::mem::take(&mut self.vms[w].woken).is_empty() {
                let vm = &mut self.vms[w];
                return flow.on_wake(&self.settings, vm, h, Wake::Ready, now, &mut self.rng);
            }
        }
        action
    }

    /// A request on worker `w`, carried to its end through the OP's answers.
    pub fn run(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        h: &HeaderList,
        now: u64,
        op: &mut Script<'_>,
    ) -> Action {
        let first = self.start(w, flow, h, now);
        self.settle(w, flow, h, first, now, op)
    }

    /// Only the first step of a request (a callout stays unanswered).
    pub fn start(&mut self, w: usize, flow: &mut RequestFlow, h: &HeaderList, now: u64) -> Action {
        flow.on_request(&self.settings, &mut self.vms[w], h, now, &mut self.rng)
    }

    /// A request that expects no callout at all.
    pub fn quiet(&mut self, w: usize, h: &HeaderList, now: u64) -> Action {
        let mut flow = RequestFlow::new();
        let a = self.start(w, &mut flow, h, now);
        assert!(!matches!(a, Action::Callout(_)), "unexpected callout {a:?}");
        self.release_hold(w, &mut flow, h, a, now)
    }

    /// Wakes a parked request.
    pub fn wake(&mut self, w: usize, flow: &mut RequestFlow, h: &HeaderList, now: u64) -> Action {
        flow.on_wake(
            &self.settings,
            &mut self.vms[w],
            h,
            Wake::Ready,
            now,
            &mut self.rng,
        )
    }

    pub fn tick(&mut self, w: usize, now: u64) {
        let line = self.vms[w].on_tick(&self.settings, now);
        assert!(line.is_none(), "{line:?}");
    }

    /// The OP of a sign-in: the token endpoint answers `tokens` (its `id_token` filled in from
    /// `claims` with the login's nonce), the JWKS and UserInfo (`userinfo`, when asked).
    pub fn login_with(
        &mut self,
        w: usize,
        jar: &mut Jar,
        now: u64,
        claims: impl FnOnce(&mut Value),
        tokens: Value,
        userinfo: Option<Value>,
    ) -> LocalResponse {
        // Started without the session (as when it has ended); the callback carries it all.
        let mut without = jar.clone();
        without.0.retain(|n, _| n.starts_with("PA.wam.txn."));
        let h = at(
            "gw.example.com",
            "GET",
            "/app/page",
            &[BROWSER, ("cookie", &without.header())],
        );
        let r = respond(self.quiet(w, &h, now));
        assert_eq!(r.status, 302);
        jar.apply(&set_cookies(&r));
        let location = url::Url::parse(r.header_value("location").unwrap()).unwrap();
        let q: BTreeMap<String, String> = location.query_pairs().into_owned().collect();
        let mut id = id_claims(Some(&q["nonce"]), now);
        claims(&mut id);
        let mut tokens = tokens;
        tokens["id_token"] = self.op.sign(id).into();
        let cb = format!("/pa/oidc/cb?code=c&state={}", q["state"]);
        let h = at(
            "gw.example.com",
            "GET",
            &cb,
            &[BROWSER, ("cookie", &jar.header())],
        );
        let jwks = self.op.jwks();
        let mut op = |c: &Callout| match c.path.as_str() {
            "/token" => {
                assert_eq!(form(c)["grant_type"], "authorization_code");
                ok_json(tokens.clone())
            }
            "/jwks" => CalloutResult::Response {
                status: 200,
                body: jwks.clone(),
            },
            "/me" => ok_json(userinfo.clone().expect("no UserInfo call expected")),
            other => panic!("unexpected callout to {other}"),
        };
        let r = respond(self.run(w, &mut RequestFlow::new(), &h, now, &mut op));
        jar.apply(&set_cookies(&r));
        r
    }

    /// A sign-in of alice on worker `w` with the OP's usual answer; the browser's jar.
    pub fn login(&mut self, w: usize, now: u64) -> Jar {
        let mut jar = Jar::default();
        let r = self.login_with(w, &mut jar, now, |_| {}, tokens("at-1", "rt-1"), None);
        assert_eq!(r.status, 302, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header_value("location"), Some("/app/page"));
        jar
    }

    /// A page request with the jar's cookies (and `extra` headers).
    pub fn page(jar: &Jar, extra: &[(&str, &str)]) -> HeaderList {
        let cookie = jar.header();
        let mut hs = vec![BROWSER, ("cookie", cookie.as_str())];
        hs.extend_from_slice(extra);
        at("gw.example.com", "GET", "/app/page", &hs)
    }

    /// An XHR with the jar's cookies.
    pub fn xhr(jar: &Jar) -> HeaderList {
        let cookie = jar.header();
        at(
            "gw.example.com",
            "GET",
            "/app/data",
            &[XHR, ("cookie", cookie.as_str())],
        )
    }

    /// A back-channel logout POST of `token` to worker `w`.
    pub fn backchannel(&mut self, w: usize, token: &str, now: u64, op: &mut Script<'_>) -> Action {
        let (mut flow, h) = (RequestFlow::new(), Self::backchannel_post());
        let a = self.backchannel_in(w, &mut flow, token, now);
        self.settle(w, &mut flow, &h, a, now, op)
    }

    /// The request of a back-channel logout.
    pub fn backchannel_post() -> HeaderList {
        at(
            "gw.example.com",
            "POST",
            "/pa/oidc/backchannel",
            &[("content-type", "application/x-www-form-urlencoded")],
        )
    }

    /// The first steps of a back-channel logout of `token` through `flow` on worker `w`: the
    /// request, its body, and what the flow does then (the caller drives the rest).
    pub fn backchannel_in(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        token: &str,
        now: u64,
    ) -> Action {
        let h = Self::backchannel_post();
        match self.start(w, flow, &h, now) {
            Action::ReadBody { max } => assert!(max >= 4096, "{max}"),
            other => panic!("expected ReadBody, got {other:?}"),
        }
        let body = format!("logout_token={token}").into_bytes();
        flow.on_body(
            &self.settings,
            &mut self.vms[w],
            &h,
            Body::Complete(body),
            now,
            &mut self.rng,
        )
    }

    /// Request `h` through `lead` on worker `w` at `now` leads the session's validation, which
    /// the OP refuses (`invalid_grant`): its refusal is held.
    pub fn refused_at_validation(
        &mut self,
        w: usize,
        lead: &mut RequestFlow,
        h: &HeaderList,
        now: u64,
    ) {
        let c = callout(self.start(w, lead, h, now));
        let no = CalloutResult::Response {
            status: 401,
            body: br#"{"error":"invalid_grant"}"#.to_vec(),
        };
        let a = lead.on_callout(&self.settings, &mut self.vms[w], h, no, now, &mut self.rng);
        assert_eq!((a, lead.holds_answer()), (Action::Wait, true), "{c:?}");
    }

    /// The answer `flow` holds on worker `w`, released by that worker's last tick of the
    /// hold (two ticks after the first; the first one the caller ran).
    pub fn released_by_ticks(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        h: &HeaderList,
        now: u64,
    ) -> Action {
        self.tick(w, now);
        assert!(
            self.vms[w].woken.is_empty(),
            "released before its last tick"
        );
        self.tick(w, now);
        assert!(!std::mem::take(&mut self.vms[w].woken).is_empty());
        self.wake(w, flow, h, now)
    }

    /// A logout token signed by the OP (`typ: logout+jwt`).
    pub fn logout_token(&self, claims: Value) -> String {
        self.op.logout_token(claims)
    }
}

/// A token endpoint answer with these tokens (the ID token is added by the caller).
pub fn tokens(access: &str, refresh: &str) -> Value {
    json!({"access_token": access, "token_type": "Bearer", "refresh_token": refresh,
           "expires_in": 300})
}

/// Good logout-token claims for the OP's session, issued at `iat`.
pub fn logout_claims(iat: u64, jti: &str) -> Value {
    json!({
        "iss": ISSUER, "aud": "pa_wam", "iat": iat, "exp": iat + 120, "jti": jti,
        "sub": "alice", "sid": OP_SID, "events": { LOGOUT_EVENT: {} }
    })
}

/// An OP that must not be called.
pub fn no_op(c: &Callout) -> CalloutResult {
    panic!("unexpected callout {c:?}")
}
