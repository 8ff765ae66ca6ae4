//! The whole web-session flow through the public, sans-IO API: a request without a session,
//! the OP's callback, the token and JWKS callouts, and requests with the resulting cookie.

use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, RequestFlow, VmState};
use envoy_wam::http::{Action, CalloutResult, LocalResponse};
use serde_json::{json, Map, Value};

mod common;
use common::*;

fn config() -> Value {
    merge(
        base_config(),
        json!({
            "op": {"end_session_endpoint": "https://op.example.com/session/end"},
            "session": {"claims": ["email"]},
            "identity_headers": [
                {"header": "X-WAM-User", "claim": "sub"},
                {"header": "X-WAM-Email", "claim": "email"},
                {"header": "X-WAM-Groups", "claim": "groups"}
            ]
        }),
    )
}

impl Op {
    fn id_token(
        &self,
        nonce: &str,
        now: u64,
        tweak: impl FnOnce(&mut Map<String, Value>),
    ) -> String {
        let mut claims = json!({
            "iss": ISSUER, "sub": "alice", "aud": "pa_wam", "exp": now + 300, "iat": now,
            "nonce": nonce, "email": "alice@example.com", "groups": ["staff", "admins"]
        });
        tweak(claims.as_object_mut().unwrap());
        self.sign(claims)
    }
}

struct Gateway {
    settings: Settings,
    vm: VmState,
    rng: Rng,
    /// The browser's login-slot counter cookie (`name=value`), as the last login set it.
    counter: Option<String>,
}

const BROWSER: (&str, &str) = ("accept", "text/html,application/xhtml+xml");

impl Gateway {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: Value) -> Self {
        let settings = Settings::from_json(config.to_string().as_bytes()).unwrap();
        Self {
            vm: VmState::new(&settings),
            settings,
            rng: Rng(42),
            counter: None,
        }
    }

    fn request(&mut self, flow: &mut RequestFlow, head: &HeaderList, now: u64) -> Action {
        flow.on_request(&self.settings, &mut self.vm, head, now, &mut self.rng)
    }

    fn answer(&mut self, flow: &mut RequestFlow, result: CalloutResult, now: u64) -> Action {
        flow.on_callout(
            &self.settings,
            &mut self.vm,
            &HeaderList::default(),
            result,
            now,
            &mut self.rng,
        )
    }

    /// Starts a login at `path`; returns the authorization URL's query and the txn cookie.
    fn start_login(&mut self, path: &str, now: u64) -> (Map<String, Value>, String) {
        self.start_login_at(path, now, "https://op.example.com/auth?")
    }

    fn start_login_at(
        &mut self,
        path: &str,
        now: u64,
        endpoint: &str,
    ) -> (Map<String, Value>, String) {
        let counter = self.counter.clone().unwrap_or_default();
        let h = head("GET", path, &[BROWSER, ("cookie", &counter)]);
        let r = respond(self.request(&mut RequestFlow::new(), &h, now));
        assert_eq!(r.status, 302);
        let sets: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(sets.len(), 2, "{sets:?}");
        assert!(sets[1].starts_with("PA.wam.txn.next=") && sets[1].contains("Path=/;"));
        self.counter = Some(cookie_pair(sets[1]).to_string());
        let location = r.header_value("location").unwrap();
        assert!(location.starts_with(endpoint), "{location}");
        let query: Map<String, Value> = url::Url::parse(location)
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), Value::from(v.into_owned())))
            .collect();
        let set = r.header_value("set-cookie").unwrap().to_string();
        (query, set)
    }
}

impl Gateway {
    /// Comes back to the callback of the login `q` with `cookie`, answers the token callout with
    /// `token_answer(nonce)` and a JWKS callout, if one follows, with the OP's keys; returns the
    /// gateway's final answer.
    fn complete(
        &mut self,
        op: &Op,
        q: &Map<String, Value>,
        cookie: &str,
        now: u64,
        token_answer: impl FnOnce(&str) -> CalloutResult,
    ) -> LocalResponse {
        let mut flow = RequestFlow::new();
        let cb = format!("/pa/oidc/cb?code=c&state={}", q["state"].as_str().unwrap());
        let c = callout(self.request(
            &mut flow,
            &head("GET", &cb, &[BROWSER, ("cookie", cookie)]),
            now,
        ));
        assert_eq!(c.path, "/token");
        match self.answer(&mut flow, token_answer(q["nonce"].as_str().unwrap()), now) {
            Action::Callout(c) => {
                assert_eq!(c.path, "/jwks");
                let keys = CalloutResult::Response {
                    status: 200,
                    body: op.jwks(),
                };
                respond(self.answer(&mut flow, keys, now))
            }
            other => respond(other),
        }
    }
}

fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

fn set_cookies(r: &LocalResponse) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect()
}

fn token_response(id_token: &str) -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        body: json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})
            .to_string()
            .into_bytes(),
    }
}

/// Runs a login to the end and returns the session cookie pair (`PA.wam=…`).
fn login(gw: &mut Gateway, op: &Op, path: &str) -> String {
    let (query, txn_cookie) = gw.start_login(path, NOW);
    let r = gw.complete(op, &query, cookie_pair(&txn_cookie), NOW + 6, |nonce| {
        token_response(&op.id_token(nonce, NOW + 5, |_| {}))
    });
    assert_eq!(r.status, 302, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header_value("location"), Some(path));
    let cookies = set_cookies(&r);
    let session = cookies.iter().find(|c| c.starts_with("PA.wam=")).unwrap();
    assert!(
        session.contains("HttpOnly")
            && session.contains("Secure")
            && session.contains("SameSite=Lax")
            && session.contains("Path=/;")
    );
    assert!(session.contains("Max-Age=14400"));
    let cleared = cookies
        .iter()
        .find(|c| c.starts_with("PA.wam.txn."))
        .unwrap();
    assert!(cleared.contains("Max-Age=0"), "the transaction is consumed");
    cookie_pair(session).to_string()
}

#[test]
fn heartbeat_needs_no_session() {
    let mut gw = Gateway::new();
    let r = respond(gw.request(
        &mut RequestFlow::new(),
        &head("GET", "/pa/heartbeat.ping", &[]),
        NOW,
    ));
    assert_eq!((r.status, r.body.as_slice()), (200, &b"OK"[..]));
}

#[test]
fn navigation_without_session_redirects_to_the_op() {
    let mut gw = Gateway::new();
    let (q, txn_cookie) = gw.start_login("/app/page?x=1", NOW);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "pa_wam");
    assert_eq!(q["redirect_uri"], "https://gw.example.com/pa/oidc/cb");
    assert_eq!(q["scope"], "openid profile email");
    assert_eq!(q["code_challenge_method"], "S256");
    for p in ["state", "nonce", "code_challenge"] {
        assert!(q[p].as_str().unwrap().len() >= 43, "{p}");
    }
    assert!(txn_cookie.starts_with("PA.wam.txn."));
    assert!(
        txn_cookie.contains("Path=/pa/oidc/cb;")
            && txn_cookie.contains("HttpOnly")
            && txn_cookie.contains("Max-Age=600")
    );
    assert!(!txn_cookie.contains("top-secret-value"));
}

#[test]
fn api_calls_without_session_get_401_not_a_redirect() {
    let mut gw = Gateway::new();
    for h in [
        head("GET", "/api/x", &[("accept", "application/json")]),
        head("POST", "/form", &[BROWSER]),
        head(
            "GET",
            "/x",
            &[BROWSER, ("x-requested-with", "XMLHttpRequest")],
        ),
        head("GET", "/x", &[BROWSER, ("sec-fetch-mode", "cors")]),
    ] {
        let r = respond(gw.request(&mut RequestFlow::new(), &h, NOW));
        assert_eq!(r.status, 401, "{h:?}");
        assert!(r.header_value("www-authenticate").is_some());
        assert_eq!(r.header_value("content-type"), Some("application/json"));
    }
}

#[test]
fn full_login_then_requests_carry_identity() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let session = login(&mut gw, &op, "/app/page?x=1");

    let cookie = format!("theirs=1; {session}; other=2");
    let h = head(
        "GET",
        "/app/page?x=1",
        &[
            ("cookie", &cookie),
            ("x-wam-user", "mallory"),
            ("X-WAM-Groups", "admins"),
        ],
    );
    let f = forward(gw.request(&mut RequestFlow::new(), &h, NOW + 10));
    let all: Vec<_> = f.identity.iter().chain(f.request_headers.iter()).collect();
    let get = |n: &str| all.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
    assert_eq!(get("x-wam-user"), Some(Some("alice".into())));
    assert_eq!(get("x-wam-email"), Some(Some("alice@example.com".into())));
    assert_eq!(get("x-wam-groups"), Some(Some("staff,admins".into())));
    assert_eq!(
        get("cookie"),
        Some(Some("theirs=1; other=2".into())),
        "session cookie never goes upstream"
    );
    assert!(
        f.response_cookies.is_empty(),
        "no re-issue within the activity refresh interval"
    );
}

#[test]
fn jwks_is_fetched_once_and_reused() {
    let op = Op::new();
    let mut gw = Gateway::new();
    login(&mut gw, &op, "/a");
    // Second login on the same VM: token callout, then straight to the session (no JWKS callout).
    let (q, txn) = gw.start_login("/b", NOW);
    let mut flow = RequestFlow::new();
    let cb = format!("/pa/oidc/cb?state={}&code=c2", q["state"].as_str().unwrap());
    callout(gw.request(
        &mut flow,
        &head("GET", &cb, &[("cookie", cookie_pair(&txn))]),
        NOW,
    ));
    let r = respond(gw.answer(
        &mut flow,
        token_response(&op.id_token(q["nonce"].as_str().unwrap(), NOW, |_| {})),
        NOW,
    ));
    assert_eq!(r.status, 302);
}

#[test]
fn parallel_logins_in_two_tabs_both_complete() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let (q1, c1) = gw.start_login("/one", NOW);
    let (q2, c2) = gw.start_login("/two", NOW);
    assert_ne!(
        cookie_pair(&c1).split('=').next(),
        cookie_pair(&c2).split('=').next()
    );
    let both = format!("{}; {}", cookie_pair(&c1), cookie_pair(&c2));
    for (q, want) in [(&q2, "/two"), (&q1, "/one")] {
        let r = gw.complete(&op, q, &both, NOW, |nonce| {
            token_response(&op.id_token(nonce, NOW, |_| {}))
        });
        assert_eq!(r.header_value("location"), Some(want));
    }
}

#[test]
fn login_cookies_rotate_through_a_few_slots_and_always_fit() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let names: Vec<String> = (0..5)
        .map(|i| {
            let (_, c) = gw.start_login(&format!("/p{i}"), NOW);
            cookie_pair(&c).split('=').next().unwrap().to_string()
        })
        .collect();
    // The oldest slot is taken again: repeated navigations never pile up cookies.
    assert_eq!(
        names,
        [
            "PA.wam.txn.0",
            "PA.wam.txn.1",
            "PA.wam.txn.2",
            "PA.wam.txn.0",
            "PA.wam.txn.1"
        ]
    );
    // A return URL too long for the cookie returns to the root, and the cookie still fits.
    let long = format!("/{}", "a".repeat(3000));
    let (q, c) = gw.start_login(&long, NOW);
    assert!(c.len() < 4096, "{}", c.len());
    let r = gw.complete(&op, &q, cookie_pair(&c), NOW, |nonce| {
        token_response(&op.id_token(nonce, NOW, |_| {}))
    });
    assert_eq!(r.header_value("location"), Some("/"));
}

#[test]
fn callback_refuses_state_mismatch_and_missing_transaction() {
    let mut gw = Gateway::new();
    let (q, txn) = gw.start_login("/a", NOW);
    let state = q["state"].as_str().unwrap();
    let forged = format!("{}X", &state[..42]);
    let cases = [
        (
            format!("/pa/oidc/cb?code=c&state={forged}"),
            Some(cookie_pair(&txn).to_string()),
            403,
        ),
        (format!("/pa/oidc/cb?code=c&state={state}"), None, 403),
        (
            "/pa/oidc/cb?code=c".to_string(),
            Some(cookie_pair(&txn).to_string()),
            400,
        ),
        // Expired transaction (login took longer than login_timeout_s).
        (
            format!("/pa/oidc/cb?code=c&state={state}"),
            Some(cookie_pair(&txn).to_string()),
            403,
        ),
    ];
    for (i, (path, cookie, status)) in cases.iter().enumerate() {
        let mut hs = vec![BROWSER];
        if let Some(c) = cookie {
            hs.push(("cookie", c));
        }
        let now = if i == 3 { NOW + 601 } else { NOW + 1 };
        let r = respond(gw.request(&mut RequestFlow::new(), &head("GET", path, &hs), now));
        assert_eq!(r.status, *status, "case {i}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains("reference"), "{body}");
        assert!(!body.contains(state));
    }
}

#[test]
fn op_error_response_shows_a_clear_page() {
    let mut gw = Gateway::new();
    let (q, txn) = gw.start_login("/a", NOW);
    let path = format!(
        "/pa/oidc/cb?error=access_denied&error_description=nope&state={}",
        q["state"].as_str().unwrap()
    );
    let r = respond(gw.request(
        &mut RequestFlow::new(),
        &head("GET", &path, &[BROWSER, ("cookie", cookie_pair(&txn))]),
        NOW,
    ));
    assert_eq!(r.status, 401);
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(
        body.contains("did not grant access") && body.contains("access_denied"),
        "{body}"
    );
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("PA.wam.txn.") && c.contains("Max-Age=0")));
}

fn callback_outcome(
    gw: &mut Gateway,
    op: &Op,
    token_answer: impl FnOnce(&str) -> CalloutResult,
) -> LocalResponse {
    let (q, txn) = gw.start_login("/a", NOW);
    gw.complete(op, &q, cookie_pair(&txn), NOW, token_answer)
}

#[test]
#[allow(clippy::type_complexity)]
fn op_failures_fail_closed_with_502_or_504() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let cases: Vec<(Box<dyn FnOnce(&str) -> CalloutResult>, u32)> = vec![
        (Box::new(|_| CalloutResult::TimedOut), 504),
        (Box::new(|_| CalloutResult::Failed), 502),
        (
            Box::new(|_| CalloutResult::Response {
                status: 200,
                body: b"<html>garbage".to_vec(),
            }),
            502,
        ),
        (
            Box::new(|_| CalloutResult::Response {
                status: 400,
                body: br#"{"error":"invalid_grant"}"#.to_vec(),
            }),
            502,
        ),
        (
            Box::new(|_| CalloutResult::Response {
                status: 503,
                body: Vec::new(),
            }),
            502,
        ),
    ];
    for (answer, status) in cases {
        let r = callback_outcome(&mut gw, &op, answer);
        assert_eq!(r.status, status);
        assert!(
            set_cookies(&r).iter().all(|c| !c.starts_with("PA.wam=")),
            "no session"
        );
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains("top-secret-value"));
    }
    // JWKS unreachable.
    let mut gw = Gateway::new();
    let (q, txn) = gw.start_login("/a", NOW);
    let mut flow = RequestFlow::new();
    let cb = format!("/pa/oidc/cb?code=c&state={}", q["state"].as_str().unwrap());
    callout(gw.request(
        &mut flow,
        &head("GET", &cb, &[BROWSER, ("cookie", cookie_pair(&txn))]),
        NOW,
    ));
    callout(gw.answer(
        &mut flow,
        token_response(&op.id_token(q["nonce"].as_str().unwrap(), NOW, |_| {})),
        NOW,
    ));
    assert_eq!(
        respond(gw.answer(&mut flow, CalloutResult::TimedOut, NOW)).status,
        504
    );
}

#[test]
#[allow(clippy::type_complexity)]
fn bad_id_tokens_make_no_session() {
    let op = Op::new();
    let other = Op::new();
    let mut gw = Gateway::new();
    let cases: Vec<Box<dyn FnOnce(&str) -> String>> = vec![
        Box::new(|_| op.id_token("wrong-nonce", NOW, |_| {})),
        Box::new(|n| {
            op.id_token(n, NOW, |c| {
                drop(c.insert("aud".into(), "someone-else".into()))
            })
        }),
        Box::new(|n| {
            op.id_token(n, NOW, |c| {
                drop(c.insert("iss".into(), "https://evil".into()))
            })
        }),
        Box::new(|n| op.id_token(n, NOW - 1000, |_| {})),
        Box::new(|n| other.id_token(n, NOW, |_| {})),
    ];
    for make in cases {
        let r = callback_outcome(&mut gw, &op, |n| token_response(&make(n)));
        assert_eq!(r.status, 403);
        assert!(set_cookies(&r).iter().all(|c| !c.starts_with("PA.wam=")));
    }
}

#[test]
fn tampered_or_expired_session_means_login_again() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let session = login(&mut gw, &op, "/a");
    // Flip one character inside the signature (not the last: its low bits are padding).
    let at = session.len() - 10;
    let flipped = if &session[at..at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    let tampered = format!("{}{}{}", &session[..at], flipped, &session[at + 1..]);
    for (cookie, now) in [
        (tampered, NOW + 10),
        (session.clone(), NOW + 3600 + 6),
        (session.clone(), NOW + 14400 + 10),
    ] {
        let r = respond(gw.request(
            &mut RequestFlow::new(),
            &head("GET", "/a", &[BROWSER, ("cookie", &cookie)]),
            now,
        ));
        assert_eq!(r.status, 302);
        assert!(r
            .header_value("location")
            .unwrap()
            .starts_with("https://op.example.com/auth?"));
    }
    // A fresh VM (another worker) accepts the same cookie: no shared state is needed.
    let mut other_worker = Gateway::new();
    forward(other_worker.request(
        &mut RequestFlow::new(),
        &head("GET", "/a", &[("cookie", &session)]),
        NOW + 10,
    ));
}

#[test]
fn activity_slides_the_idle_timeout() {
    let op = Op::new();
    let mut gw = Gateway::new();
    let mut session = login(&mut gw, &op, "/a");
    // Keep visiting every 50 minutes: the idle timeout (60 min) never hits, until the
    // absolute lifetime (240 min) does.
    let mut now = NOW + 6;
    for _ in 0..4 {
        now += 50 * 60;
        let f = forward(gw.request(
            &mut RequestFlow::new(),
            &head("GET", "/a", &[("cookie", &session)]),
            now,
        ));
        let renewed = f.response_cookies.first().expect("re-issued");
        // The same old cookie again (a client that ignored Set-Cookie): no second re-issue.
        let again = forward(gw.request(
            &mut RequestFlow::new(),
            &head("GET", "/a", &[("cookie", &session)]),
            now + 1,
        ));
        assert!(again.response_cookies.is_empty());
        assert!(renewed.contains(&format!("Max-Age={}", NOW + 6 + 14400 - now)));
        session = cookie_pair(renewed).to_string();
    }
    now += 50 * 60;
    let r = respond(gw.request(
        &mut RequestFlow::new(),
        &head("GET", "/a", &[BROWSER, ("cookie", &session)]),
        now,
    ));
    assert_eq!(r.status, 302, "absolute lifetime reached");
}

#[test]
fn return_target_is_never_another_site() {
    let mut gw = Gateway::new();
    let (q, txn) = gw.start_login("//evil.example/x", NOW);
    let op = Op::new();
    let r = gw.complete(&op, &q, cookie_pair(&txn), NOW, |nonce| {
        token_response(&op.id_token(nonce, NOW, |_| {}))
    });
    assert_eq!(r.header_value("location"), Some("/"));
    // A backslash is ambiguous to some servers: refused before any login starts.
    let h = head("GET", "/\\evil.example", &[BROWSER]);
    assert_eq!(
        respond(gw.request(&mut RequestFlow::new(), &h, NOW)).status,
        400
    );
}

#[test]
fn logout_clears_the_session_and_goes_to_the_op() {
    let mut gw = Gateway::new();
    let r = respond(gw.request(
        &mut RequestFlow::new(),
        &head("GET", "/pa/oidc/logout", &[]),
        NOW,
    ));
    assert_eq!(r.status, 302);
    let loc = r.header_value("location").unwrap();
    assert!(loc.starts_with("https://op.example.com/session/end?client_id=pa_wam&post_logout_redirect_uri=https%3A%2F%2Fgw.example.com%2F"), "{loc}");
    let clear = r.header_value("set-cookie").unwrap();
    assert!(clear.starts_with("PA.wam=;") && clear.contains("Max-Age=0"));

    let mut cfg = config();
    cfg["logout"] = json!({"use_end_session_endpoint": false});
    let mut gw = Gateway::with(cfg);
    let r = respond(gw.request(
        &mut RequestFlow::new(),
        &head("GET", "/pa/oidc/logout", &[]),
        NOW,
    ));
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("signed out"));
}

#[test]
fn client_secret_post_and_forwarded_proto() {
    let mut cfg = config();
    cfg["client"]["auth_method"] = json!("client_secret_post");
    let mut gw = Gateway::with(cfg);
    let h = HeaderList::new([
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "gw.example.com"),
        (":path", "/"),
        ("x-forwarded-proto", "https"),
        BROWSER,
    ]);
    let r = respond(gw.request(&mut RequestFlow::new(), &h, NOW));
    assert!(r
        .header_value("location")
        .unwrap()
        .contains("redirect_uri=https%3A%2F%2Fgw.example.com%2Fpa%2Foidc%2Fcb"));
}

#[test]
fn discovery_fills_in_the_endpoints_before_the_first_login() {
    let mut cfg = config();
    cfg["op"] = json!({"issuer": ISSUER, "cluster": "op", "discovery": true});
    let mut gw = Gateway::with(cfg);
    // Before discovery answers: logins wait (503, retry), health checks do not.
    let r = respond(gw.request(&mut RequestFlow::new(), &head("GET", "/x", &[BROWSER]), NOW));
    assert_eq!((r.status, r.header_value("retry-after")), (503, Some("5")));
    let c = gw
        .vm
        .discoveries_due(&gw.settings, NOW)
        .pop()
        .expect("a discovery callout is due")
        .1;
    assert_eq!(c.path, "/.well-known/openid-configuration");
    assert!(
        gw.vm.discoveries_due(&gw.settings, NOW + 1).is_empty(),
        "one at a time"
    );
    gw.vm.on_discovery(&gw.settings, 0, CalloutResult::TimedOut);
    assert!(
        gw.vm.discoveries_due(&gw.settings, NOW + 2).is_empty(),
        "spaced retries"
    );
    assert!(!gw.vm.discoveries_due(&gw.settings, NOW + 5).is_empty());
    let doc = json!({
        "issuer": ISSUER,
        "authorization_endpoint": "https://op.example.com/as/authorize",
        "token_endpoint": "https://op.example.com/as/token",
        "jwks_uri": "https://op.example.com/as/jwks"
    });
    let line = gw.vm.on_discovery(
        &gw.settings,
        0,
        CalloutResult::Response {
            status: 200,
            body: doc.to_string().into_bytes(),
        },
    );
    assert!(line.message.contains("discovered"), "{}", line.message);
    let (q, txn) = gw.start_login_at("/x", NOW + 6, "https://op.example.com/as/authorize?");
    let mut flow = RequestFlow::new();
    let cb = format!("/pa/oidc/cb?code=c&state={}", q["state"].as_str().unwrap());
    let c = callout(gw.request(
        &mut flow,
        &head("GET", &cb, &[("cookie", cookie_pair(&txn))]),
        NOW + 6,
    ));
    assert_eq!(c.path, "/as/token");
    assert!(
        gw.vm.discoveries_due(&gw.settings, NOW + 100).is_empty(),
        "no more fetches once known"
    );
}
