//! Random traffic, many thousand requests: real sessions and signed tokens (valid, expired,
//! idle, tampered, for other audiences or issuers, unknown keys, `alg: none`), logins through
//! the callback, an OP and STS that answer callouts honestly or fail, and clients that forge
//! identity headers, site tokens and cookies. Never a panic (it would abort the worker's VM),
//! and every forwarded request carries upstream exactly the identity the OP vouched for: the
//! tests simulate what the host does with each `Forward` and check the resulting headers.

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, RequestFlow, VmState};
use envoy_wam::http::{Action, Callout, CalloutResult, Forward};
use jwt_simple::prelude::*;
use serde_json::{json, Value};

mod common;
#[path = "common/traffic.rs"]
mod traffic;

use common::{GW_KEY, ISSUER, NOW};
use traffic::*;

fn op_json() -> Value {
    json!({
        "issuer": ISSUER, "cluster": "op",
        "authorization_endpoint": "https://op.example.com/auth",
        "token_endpoint": "https://op.example.com/token",
        "jwks_uri": "https://op.example.com/jwks",
        "introspection_endpoint": "https://op.example.com/introspect"
    })
}

fn session_json() -> Value {
    json!({"signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([1u8; 32])}],
           "claims": ["groups"], "idle_timeout_s": 3600, "max_lifetime_s": 28800})
}

fn login_settings() -> Settings {
    let cfg = json!({
        "op": op_json(),
        "client": {"client_id": "pa_wam", "client_secret": "s",
                   "redirect_uri": "https://gw/pa/oidc/cb"},
        "session": session_json(),
        "identity_headers": [{"header": "x-wam-user", "claim": "sub"}]
    });
    Settings::from_json(cfg.to_string().as_bytes()).unwrap()
}

/// Cookie headers a browser (or an attacker) sends: sessions of the pool (valid or not),
/// transaction cookies, a site cookie, other cookies, junk and bytes that are not UTF-8.
fn add_cookies(h: &mut HeaderList, rng: &mut Lcg, w: &World, txn: &[String]) {
    let headers = match rng.below(10) {
        0 => 0,
        1..=7 => 1,
        _ => 2,
    };
    for _ in 0..headers {
        let mut value: Vec<u8> = Vec::new();
        for _ in 0..=rng.below(3) {
            let piece: Vec<u8> = match rng.below(12) {
                0..=4 => format!("PA.wam={}", w.any_session(rng)).into_bytes(),
                5 if !txn.is_empty() => txn[rng.below(txn.len() as u64) as usize].clone().into(),
                5 => b"PA.wam.txn.1=abc".to_vec(),
                6 => b"site=forged-site-token".to_vec(),
                7 => b"a=1".to_vec(),
                8 => b"PA.wam=\xff\xfe".to_vec(),
                9 => b"\xffx=1".to_vec(),
                10 => b" PA.wam.txn.next=2 ".to_vec(),
                _ => rng.junk().into_bytes(),
            };
            if !value.is_empty() {
                value.extend_from_slice(b"; ");
            }
            value.extend(piece);
        }
        h.push("cookie", &value);
    }
}

/// `PA.wam=<value>` of a `Set-Cookie`, when it sets a session (not when it clears one).
fn session_set(set_cookie: &str) -> Option<&str> {
    let v = set_cookie.strip_prefix("PA.wam=")?.split(';').next()?;
    (!v.is_empty()).then_some(v)
}

/// An ID token for `user` from the test OP, good or spoiled in one of several ways.
fn id_token(w: &World, rogue: &ES256KeyPair, u: &User, nonce: &str, now: u64, kind: u64) -> String {
    let mut c = json!({"iss": ISSUER, "sub": u.sub, "aud": "pa_wam", "exp": now + 300,
        "iat": now, "nonce": nonce, "groups": u.groups});
    let m = c.as_object_mut().unwrap();
    match kind {
        0 => {}
        1 => drop(m.insert("nonce".into(), json!("other-nonce"))),
        2 => drop(m.insert("aud".into(), json!("someone-else"))),
        3 => drop(m.insert("iss".into(), json!("https://evil.example.com"))),
        4 => drop(m.insert("exp".into(), json!(now - 900))),
        5 => {
            let claims: JWTClaims<serde_json::Map<String, Value>> =
                serde_json::from_value(c).unwrap();
            return rogue.sign(claims).unwrap();
        }
        _ => {
            let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"op-ec-1"}"#);
            return format!("{head}.{}.", URL_SAFE_NO_PAD.encode(c.to_string()));
        }
    }
    w.op.sign(c)
}

struct Login {
    state: String,
    nonce: String,
    /// The transaction cookie as the browser sends it back (`name=value`).
    cookie: String,
    code: String,
}

/// Sign-ins (the redirect, the callback with a real or a wrong transaction cookie, the token
/// endpoint answering good and spoiled ID tokens, the JWKS) mixed with requests that carry the
/// resulting sessions and minted ones: a session is opened only from an ID token the OP
/// vouched for, and every forwarded request carries exactly its session's user.
#[test]
fn random_logins_and_sessions_forward_only_the_vouched_identity() {
    let settings = login_settings();
    let mut vm = VmState::new(&settings);
    let mut w = World::new(&settings.default_web().session.keys, GW_KEY);
    let rogue = ES256KeyPair::generate().with_key_id("op-ec-1");
    let mut rng = Lcg(7);
    let mut logins: Vec<Login> = Vec::new();
    let mut used_codes = HashSet::new();
    let (mut opened, mut refused_logins, mut forwarded, mut identified) = (0, 0, 0, 0);
    for i in 0..6_000u64 {
        let now = NOW + i / 10;
        let mut entropy = Lcg(rng.next());
        let mut flow = RequestFlow::new();
        let txn: Vec<String> = logins.iter().map(|l| l.cookie.clone()).collect();
        match rng.below(10) {
            0 | 1 => {
                let path = rng.pick(&["/", "/app?x=1", "/deep/page", "/pa/x"]);
                let mut h = HeaderList::new([
                    (":method", "GET"),
                    (":path", path),
                    (":authority", "gw"),
                    ("accept", "text/html"),
                ]);
                add_cookies(&mut h, &mut rng, &w, &txn);
                let action = flow.on_request(&settings, &mut vm, &h, now, &mut entropy);
                let Action::Respond(r) = action else {
                    if let Action::Forward(f) = &action {
                        check_forward(&mut w, &h, f, true, Site::None, now);
                        forwarded += 1;
                    }
                    continue;
                };
                let Some(loc) = r.header_value("location") else {
                    continue;
                };
                let Ok(url) = url::Url::parse(loc) else {
                    continue;
                };
                let q = |k: &str| {
                    url.query_pairs()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.into_owned())
                };
                let (Some(state), Some(nonce)) = (q("state"), q("nonce")) else {
                    continue;
                };
                let set = r.header_value("set-cookie").unwrap();
                logins.push(Login {
                    state,
                    nonce,
                    cookie: set.split(';').next().unwrap().to_string(),
                    code: format!("code{i}"),
                });
                if logins.len() > 12 {
                    logins.remove(0);
                }
            }
            2 | 3 if !logins.is_empty() => {
                let at = rng.below(logins.len() as u64) as usize;
                let other = rng.below(logins.len() as u64) as usize;
                let (state, nonce, code) = {
                    let l = &logins[at];
                    (l.state.clone(), l.nonce.clone(), l.code.clone())
                };
                let mut cookie = match rng.below(8) {
                    0 => logins[other].cookie.clone(),
                    1 => format!("{}x", logins[at].cookie),
                    _ => logins[at].cookie.clone(),
                };
                if rng.one_in(3) {
                    cookie = format!("{}; {cookie}", w.sessions[0].0);
                }
                let error = if rng.one_in(10) {
                    "&error=access_denied"
                } else {
                    ""
                };
                let path = format!("/pa/oidc/cb?state={state}&code={code}{error}");
                let mut h = HeaderList::new([
                    (":method", "GET"),
                    (":path", path.as_str()),
                    (":authority", "gw"),
                    ("cookie", cookie.as_str()),
                ]);
                spoof(&mut h, &mut rng, "x-site-token");
                let mut action = flow.on_request(&settings, &mut vm, &h, now, &mut entropy);
                let mut vouched = None;
                for _ in 0..3 {
                    let Action::Callout(c) = &action else { break };
                    let answer = if c.path == "/token" {
                        let code = form_field(&c.body, "code").unwrap_or_default();
                        let kind = rng.below(14);
                        if !used_codes.insert(code) {
                            CalloutResult::Response {
                                status: 400,
                                body: br#"{"error":"invalid_grant"}"#.to_vec(),
                            }
                        } else if kind >= 10 {
                            junk_answer(&mut rng)
                        } else {
                            let u = &USERS[rng.below(USERS.len() as u64) as usize];
                            let kind = kind.saturating_sub(3);
                            if kind == 0 {
                                vouched = Some(u);
                            }
                            let t = id_token(&w, &rogue, u, &nonce, now, kind);
                            CalloutResult::Response {
                                status: 200,
                                body: json!({"access_token": "at", "token_type": "Bearer",
                                             "id_token": t})
                                .to_string()
                                .into_bytes(),
                            }
                        }
                    } else {
                        w.answer(c, &mut rng, now)
                    };
                    action = flow.on_callout(&settings, &mut vm, &h, answer, now, &mut entropy);
                }
                match action {
                    Action::Respond(r) => {
                        let sets = r.headers.iter().filter(|(n, _)| n == "set-cookie");
                        match sets.filter_map(|(_, v)| session_set(v)).next() {
                            Some(value) => {
                                let u = vouched.unwrap_or_else(|| {
                                    panic!(
                                        "a session was opened without a vouched ID token: {path}"
                                    )
                                });
                                w.learn_session(value, u);
                                opened += 1;
                            }
                            None => refused_logins += 1,
                        }
                    }
                    other => panic!("the callback ended with {other:?}"),
                }
            }
            _ => {
                let path = format!(
                    "{}{}",
                    // Not the logout endpoint: it revokes the session it is sent with, and the model
                    // here does not follow revocations (tests/session_lifecycle.rs does).
                    rng.pick(&[
                        "/",
                        "/app",
                        "/pa/heartbeat.ping",
                        "/pa/oidc/frontchannel?sid=x",
                        "/x?"
                    ]),
                    if rng.one_in(4) {
                        rng.junk()
                    } else {
                        String::new()
                    }
                );
                let mut h = HeaderList::new([
                    (":method", rng.pick(&["GET", "POST", "HEAD", ""])),
                    (":path", path.as_str()),
                    (":authority", rng.pick(&["gw", "GW.", "gw:443", ""])),
                    ("accept", rng.pick(&["text/html", "application/json", ""])),
                ]);
                add_cookies(&mut h, &mut rng, &w, &txn);
                spoof(&mut h, &mut rng, "x-site-token");
                match flow.on_request(&settings, &mut vm, &h, now, &mut entropy) {
                    Action::Forward(f) => {
                        if check_forward(&mut w, &h, &f, true, Site::None, now).is_some() {
                            identified += 1;
                        }
                        forwarded += 1;
                    }
                    Action::Respond(_) => {}
                    other => panic!("a session check asked for {other:?}"),
                }
            }
        }
    }
    eprintln!(
        "opened={opened} refused={refused_logins} forwarded={forwarded} identified={identified}"
    );
    assert!(
        opened > 50 && refused_logins > 50,
        "logins opened ({opened}) and refused"
    );
    assert!(
        identified > 500,
        "requests went through with sessions ({identified})"
    );
}

/// The user a forwarded request was for, per the test's own knowledge of the credentials it
/// presented; panics when the upstream headers disagree. `protected`: the resource needs an
/// identity. Renewed session cookies are learned (they stay the same user's).
fn check_forward(
    w: &mut World,
    h: &HeaderList,
    f: &Forward,
    protected: bool,
    site: Site,
    now: u64,
) -> Option<&'static User> {
    let user = first_cookie(h, "PA.wam").and_then(|v| w.session_user(v));
    check_forward_as(
        w,
        h,
        f,
        protected.then_some(user).flatten(),
        protected,
        site,
        now,
    );
    user
}

fn check_forward_as(
    w: &mut World,
    h: &HeaderList,
    f: &Forward,
    user: Option<&'static User>,
    protected: bool,
    site: Site,
    now: u64,
) {
    if protected && user.is_none() {
        panic!(
            "forwarded to a protected resource without a vouched identity: {} {f:?}",
            show(&h.to_vec())
        );
    }
    let up = upstream(h, f);
    // Header names only the gateway may set: its identity header, and the STS sites' header
    // where the configuration has one.
    let reserved: &[&str] = match w.sts_header {
        false => &["x-wam-user"],
        true => &["x-wam-user", "x-site-token"],
    };
    if let Err(why) = check_upstream(w, &up, user.map(|u| u.sub), site, reserved, now) {
        panic!(
            "{why}\nrequest: {}\nforward: {f:?}\nupstream: {}",
            show(&h.to_vec()),
            show(&up)
        );
    }
    if let Some(u) = user {
        for set in &f.response_cookies {
            if let Some(v) = session_set(set) {
                w.learn_session(v, u);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Policies, bearer tokens and mediation

/// A gateway with every kind of application: API (JWT) mediated by an STS, API-or-web
/// (introspection) with a gateway-signed site cookie, web with rules, an unprotected resource
/// and STS mediation; and a global unprotected path.
fn policy_settings() -> Settings {
    let cfg = json!({
        "op": op_json(),
        "client": {"client_id": "pa_wam", "client_secret": "s"},
        "session": session_json(),
        "identity_headers": [{"header": "x-wam-user", "claim": "sub"}],
        "api": {"cache_max_ttl_s": 2, "negative_ttl_s": 1},
        "authtoken": {"issuer": "envoy-wam", "keys": [{"kid": "gw", "alg": "ES256", "private_key_pem": GW_KEY}]},
        "site_authenticators": [
            {"name": "sts", "type": "token_exchange", "audience": "https://site",
             "sts": {"cluster": "sts", "token_endpoint": "https://sts.example.com/token",
                     "client_id": "pa_sts", "client_secret": "x"},
             "inject": {"header": "x-site-token"}, "cache": {"max_lifetime_s": 3}},
            {"name": "jwt", "type": "jwt", "audience": "https://site", "claims": ["sub"],
             "inject": {"cookie": "site"}}
        ],
        "policy": {
            "unprotected_paths": ["/static/*"],
            "applications": [
                {"name": "api", "hosts": ["api"], "type": "api", "site_authenticator": "sts",
                 "api": {"validation": "jwt", "audiences": ["https://api"]},
                 "rules": [{"type": "scope", "any": ["read"]}],
                 "resources": [{"name": "root", "paths": ["/*"]}]},
                {"name": "plain", "hosts": ["plain"], "type": "api",
                 "api": {"validation": "jwt", "audiences": ["https://api"]},
                 "resources": [{"name": "root", "paths": ["/*"]}]},
                {"name": "intro", "hosts": ["intro"], "type": "both", "site_authenticator": "jwt",
                 "api": {"validation": "introspection"},
                 "resources": [{"name": "limited", "paths": ["/l/*"],
                    "rules": [{"type": "rate_limit", "requests": 2, "interval_s": 60, "per": "client_address"}]},
                    {"name": "root", "paths": ["/*"]}]},
                {"name": "web", "hosts": ["gw"], "type": "web", "site_authenticator": "sts",
                 "resources": [
                    {"name": "open", "paths": ["/open/*"], "unprotected": true},
                    {"name": "admin", "paths": ["~^/admin/[a-z]+$"], "audit": true,
                     "rules": [{"type": "attribute", "claim": "groups", "matches": "^adm.*"}]},
                    {"name": "root", "paths": ["/*"]}],
                 "ordering": "manual"}
            ]
        }
    });
    Settings::from_json(cfg.to_string().as_bytes()).unwrap()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum App {
    Api,
    Plain,
    Intro,
    Web,
}

/// What the test expects of a request, from the configuration above and the credentials.
#[derive(Clone, Copy)]
struct Expect {
    /// The identity the OP vouched for (whatever the resource).
    user: Option<&'static User>,
    /// The resource needs an identity (not a global or an application's unprotected path).
    protected: bool,
    /// The policy's rules let `user` through (scope, groups).
    allowed: bool,
    site: Site,
    /// An API application: the client's `Authorization` never goes upstream.
    api: bool,
}

/// The credential after `Bearer` (RFC 6750), as a backend would read the header.
fn bearer_of(v: &str) -> Option<&str> {
    let v = v.trim();
    let (scheme, token) = v.split_once(' ').unwrap_or((v, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn expect(w: &World, h: &HeaderList, host: &str, path: &str) -> Expect {
    let app = match host {
        "api" | "API" | "api." => Some(App::Api),
        "plain" => Some(App::Plain),
        "intro" | "intro:8443" => Some(App::Intro),
        "gw" | "GW" | "gw:443" | "gw." => Some(App::Web),
        _ => None,
    };
    let lower = path.to_ascii_lowercase();
    // Global unprotected paths for every host; `/open/*` only where the web application is.
    let protected =
        !(lower.starts_with("/static/") || app == Some(App::Web) && lower.starts_with("/open/"));
    let auth: Vec<&[u8]> = h
        .iter()
        .filter(|(n, _)| *n == "authorization")
        .map(|(_, v)| v)
        .collect();
    let single = match auth.as_slice() {
        [] => Ok(None),
        [one] => std::str::from_utf8(one).map(Some).map_err(|_| ()),
        _ => Err(()),
    };
    let bearer = |check: fn(&Bearer) -> Option<&'static User>| match single {
        Ok(Some(v)) => bearer_of(v)
            .and_then(|t| w.bearers.iter().find(|b| b.raw == t))
            .and_then(check),
        _ => None,
    };
    let session = || first_cookie(h, "PA.wam").and_then(|v| w.session_user(v));
    let (user, site) = match app {
        Some(App::Api) => (bearer(|b| b.jwt), Site::StsHeader("x-site-token")),
        Some(App::Plain) => (bearer(|b| b.jwt), Site::None),
        Some(App::Intro) => {
            let user = match single {
                Err(()) => None,
                Ok(v) if v.and_then(bearer_of).is_some() => bearer(|b| b.introspected),
                Ok(_) => session(),
            };
            (user, Site::JwtCookie("site", "https://site"))
        }
        Some(App::Web) => (session(), Site::StsHeader("x-site-token")),
        None => (None, Site::None),
    };
    let allowed = match (app, user) {
        (Some(App::Api), Some(u)) => u.scope.split(' ').any(|s| s == "read"),
        (Some(App::Web), Some(u)) if lower == "/admin/abc" => {
            u.groups.iter().any(|g| g.starts_with("adm"))
        }
        _ => true,
    };
    Expect {
        user,
        protected,
        allowed,
        site,
        api: matches!(app, Some(App::Api | App::Plain)) && protected,
    }
}

struct Req {
    ctx: u32,
    flow: RequestFlow,
    h: HeaderList,
    exp: Expect,
    callout: Option<Callout>,
}

#[derive(Default, Debug)]
struct Stats {
    forwarded: u32,
    identified: u32,
    anonymous: u32,
    waits: u32,
    wakes: u32,
}

struct Traffic {
    settings: Settings,
    vm: VmState,
    w: World,
    in_flight: Vec<Req>,
    parked: Vec<Req>,
    stats: Stats,
}

impl Traffic {
    /// Files a request by what it does next; a forwarded one is checked.
    fn settle(&mut self, mut req: Req, action: Action, now: u64) {
        match action {
            Action::Callout(c) => {
                req.callout = Some(c);
                self.in_flight.push(req);
            }
            Action::Wait => {
                self.stats.waits += 1;
                self.parked.push(req);
            }
            // Only the gateway's own POST endpoints read bodies; this traffic sends none.
            Action::ReadBody { .. } => {}
            Action::Forward(f) => {
                let e = req.exp;
                if e.protected && !e.allowed {
                    panic!(
                        "forwarded against the policy: {} {f:?}",
                        show(&req.h.to_vec())
                    );
                }
                let user = e.user.filter(|_| e.protected);
                check_forward_as(&mut self.w, &req.h, &f, user, e.protected, e.site, now);
                if e.api
                    && upstream(&req.h, &f)
                        .iter()
                        .any(|(n, _)| n == "authorization")
                {
                    panic!(
                        "the client's token went upstream: {}",
                        show(&req.h.to_vec())
                    );
                }
                self.stats.forwarded += 1;
                match user {
                    Some(_) => self.stats.identified += 1,
                    None => self.stats.anonymous += 1,
                }
            }
            Action::Respond(_) => {}
        }
    }
}

/// Random API and web requests through policies, bearer checks and mediation, with the test
/// OP's and STS's answers (or failures), interleaved so that requests wait on each other:
/// never a panic, nothing reaches a protected resource without an identity the OP vouched
/// for, and what goes upstream is exactly that identity and the site token made for it.
#[test]
fn random_api_and_policy_traffic_forwards_only_the_vouched_identity() {
    let settings = policy_settings();
    let mut w = World::new(&settings.default_web().session.keys, GW_KEY);
    w.sts_header = true;
    let mut t = Traffic {
        vm: VmState::new(&settings),
        settings,
        w,
        in_flight: Vec::new(),
        parked: Vec::new(),
        stats: Stats::default(),
    };
    let mut rng = Lcg(11);
    #[rustfmt::skip]
    let hosts = [
        "api", "API", "api.", "plain", "intro", "intro", "intro:8443", "gw", "GW", "gw:443", "other", "",
    ];
    let paths = [
        "/",
        "/static/x",
        "/STATIC/x",
        "/open/y",
        "/Open/y",
        "/admin/abc",
        "/admin/abc/d",
        "/l/1",
        "/x",
        "/pa/authtoken/JWKS",
    ];
    for i in 0..8_000u32 {
        let ctx = i + 1;
        let now = NOW + u64::from(i / 20);
        let (host, base) = (rng.pick(&hosts), rng.pick(&paths));
        let path = match rng.below(4) {
            0 => format!("{base}?{}", rng.junk()),
            _ => base.to_string(),
        };
        let mut h = HeaderList::new([
            (":method", rng.pick(&["GET", "POST", ""])),
            (":path", path.as_str()),
            (":authority", host),
            (
                ":source-address",
                rng.pick(&["10.0.0.1:1", "[::1]:2", "junk", ""]),
            ),
            ("accept", rng.pick(&["text/html", "application/json"])),
        ]);
        let copies = match rng.below(10) {
            0 | 1 => 0,
            9 => 2,
            _ => 1,
        };
        for _ in 0..copies {
            let scheme = rng.pick(&["Bearer ", "Bearer ", "bearer ", "Basic ", "Bearer  ", ""]);
            let mut value = format!("{scheme}{}", t.w.any_bearer(&mut rng)).into_bytes();
            if rng.one_in(30) {
                value.push(0xff);
            }
            h.push("authorization", &value);
        }
        add_cookies(&mut h, &mut rng, &t.w, &[]);
        spoof(&mut h, &mut rng, "x-site-token");
        let exp = expect(&t.w, &h, host, base);
        let mut flow = RequestFlow::for_context(ctx);
        let mut entropy = Lcg(rng.next());
        let action = flow.on_request(&t.settings, &mut t.vm, &h, now, &mut entropy);
        let req = Req {
            ctx,
            flow,
            h,
            exp,
            callout: None,
        };
        // Some callout under way ends now: answered, or its client went away.
        if !t.in_flight.is_empty() && rng.one_in(4) {
            let at = rng.below(t.in_flight.len() as u64) as usize;
            let mut r = t.in_flight.swap_remove(at);
            if rng.one_in(8) {
                r.flow.on_abandon(&mut t.vm, now);
            } else {
                let c = r.callout.take().unwrap();
                let answer = t.w.answer(&c, &mut rng, now);
                let action =
                    r.flow
                        .on_callout(&t.settings, &mut t.vm, &r.h, answer, now, &mut entropy);
                t.settle(r, action, now);
            }
        }
        t.settle(req, action, now);
        // Wake whoever was released, in the order the host would.
        for (woken, why) in std::mem::take(&mut t.vm.woken) {
            if let Some(at) = t.parked.iter().position(|r| r.ctx == woken) {
                let mut r = t.parked.swap_remove(at);
                t.stats.wakes += 1;
                let action = r
                    .flow
                    .on_wake(&t.settings, &mut t.vm, &r.h, why, now, &mut entropy);
                t.settle(r, action, now);
            }
        }
        t.parked.retain(|_| !rng.one_in(50)); // some waiters give up
    }
    let s = &t.stats;
    eprintln!(
        "{s:?} exchanges={} introspections={}",
        t.w.exchanges, t.w.introspections
    );
    assert!(
        s.identified > 400 && s.anonymous > 300,
        "requests went through: {s:?}"
    );
    assert!(t.w.exchanges > 100, "STS exchanges ({})", t.w.exchanges);
    assert!(
        t.w.introspections > 50,
        "introspections ({})",
        t.w.introspections
    );
    assert!(
        s.waits > 20 && s.wakes > 20,
        "requests waited and were woken: {s:?}"
    );
}

/// A global unprotected path (`/static/*`) on a host whose application is mediated goes
/// upstream to that application's backend: the client's copy of the site's token header or
/// cookie must not go with it, as on the application's own unprotected resources.
#[test]
fn global_unprotected_path_on_a_mediated_host_drops_client_site_tokens() {
    let settings = policy_settings();
    let mut vm = VmState::new(&settings);
    let w = World::new(&settings.default_web().session.keys, GW_KEY);
    for (host, path) in [
        ("gw", "/open/y"),
        ("gw", "/static/x"),
        ("intro", "/static/x"),
    ] {
        let h = HeaderList::new([
            (":method", "GET"),
            (":path", path),
            (":authority", host),
            ("x-site-token", "sts-forged"),
            ("cookie", "a=1; site=forged-site-token"),
        ]);
        let action = RequestFlow::new().on_request(&settings, &mut vm, &h, NOW, &mut Lcg(1));
        let Action::Forward(f) = action else {
            panic!("{host}{path} is unprotected: {action:?}");
        };
        let up = upstream(&h, &f);
        let site = match host {
            "gw" => Site::StsHeader("x-site-token"),
            _ => Site::JwtCookie("site", "https://site"),
        };
        let reserved = ["x-wam-user", "x-site-token"];
        if let Err(why) = check_upstream(&w, &up, None, site, &reserved, NOW) {
            panic!("{host}{path}: {why}\nupstream: {}", show(&up));
        }
    }
}
