//! The world of the random-traffic tests (tests/robustness.rs): users, real session cookies
//! and signed tokens the test knows the truth about, an honest test OP and STS that answer
//! callouts, and what the host does with a `Forward`, checked header by header.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::flow::HeaderList;
use envoy_wam::http::{Callout, CalloutResult, Forward};
use envoy_wam::session::{KeyRing, Session};
use jwt_simple::prelude::*;
use serde_json::{json, Map, Value};

use crate::common::{Op, ISSUER, NOW};

/// A small deterministic generator (the tests' only source of randomness besides key
/// generation, which no outcome depends on).
pub struct Lcg(pub u64);
impl Lcg {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 17
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[(self.next() as usize) % items.len()]
    }
    pub fn junk(&mut self) -> String {
        const PIECES: &[&str] = &[
            "PA.wam=",
            "PA.wam.txn.",
            ";",
            "=",
            ".",
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0",
            "eyJzdWIiOiJ4In0",
            "%",
            "%ZZ",
            "\u{0}",
            "é",
            "😀",
            "\\",
            "/",
            "//",
            "?",
            "&",
            "state=",
            "code=",
            "error=",
            "\"",
            " ",
            "AAAA",
            "-_",
            "null",
            "{",
            "}",
            "[",
            "]",
            "..",
            "\r\n",
            "\t",
        ];
        let n = (self.next() % 12) as usize;
        (0..n).map(|_| self.pick(PIECES)).collect()
    }
}

impl envoy_wam::login::Entropy for Lcg {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        for b in buf {
            *b = self.next() as u8;
        }
        true
    }
}

pub struct User {
    pub sub: &'static str,
    pub groups: &'static [&'static str],
    pub scope: &'static str,
}

pub const USERS: &[User] = &[
    User {
        sub: "alice",
        groups: &["admins", "staff"],
        scope: "read write",
    },
    User {
        sub: "bob",
        groups: &["staff"],
        scope: "read",
    },
    User {
        sub: "carol",
        groups: &["adm-ops"],
        scope: "write",
    },
    User {
        sub: "dave.o'neil",
        groups: &[],
        scope: "read",
    },
];

/// What the test knows about a credential: whom it is valid for, if anyone.
#[derive(Clone, Copy)]
pub struct Truth {
    pub user: Option<&'static User>,
}

/// A client's bearer token and what each kind of check must make of it.
pub struct Bearer {
    pub raw: String,
    /// Valid as a JWT for the audience `https://api` (signature, issuer, expiry, kid).
    pub jwt: Option<&'static User>,
    /// Active at the introspection endpoint.
    pub introspected: Option<&'static User>,
    /// Whom the token names, valid or not: the test STS trusts the gateway to have checked
    /// it, so a token the gateway should have refused is exchanged all the same.
    pub names: Option<&'static User>,
}

/// Sessions, tokens and mediated tokens the test minted or saw the gateway mint.
pub struct World {
    pub op: Op,
    gw_key: ES256PublicKey,
    /// Session cookie values (valid and not) and the user each is valid for.
    pub sessions: Vec<(String, Truth)>,
    pub bearers: Vec<Bearer>,
    /// Tokens the test STS issued, and for whom.
    pub issued: HashMap<String, &'static str>,
    pub exchanges: u32,
    pub introspections: u32,
    /// The configuration has an STS site that injects `x-site-token`.
    pub sts_header: bool,
    /// Checked gateway-signed tokens (checking one in a debug build takes milliseconds).
    verified: RefCell<HashMap<(String, String), Option<String>>>,
}

fn jwt_part(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

impl World {
    /// `keys` signs the gateway's session cookies; `gw_key_pem` is its `authtoken` key.
    pub fn new(keys: &KeyRing, gw_key_pem: &str) -> Self {
        let op = Op::new();
        let mut w = World {
            gw_key: ES256KeyPair::from_pem(gw_key_pem).unwrap().public_key(),
            op,
            sessions: Vec::new(),
            bearers: Vec::new(),
            issued: HashMap::new(),
            exchanges: 0,
            introspections: 0,
            sts_header: false,
            verified: RefCell::default(),
        };
        let other = KeyRing::with_type(&[("k1".into(), vec![2u8; 32])], keys.cookie_type);
        for (i, u) in USERS.iter().enumerate() {
            let mint = |keys: &KeyRing, lat: u64, exp: u64| {
                let mut claims = Map::new();
                claims.insert("groups".into(), json!(u.groups));
                let s = Session {
                    sid: format!("sid{i}{lat}{exp}"),
                    sub: u.sub.into(),
                    auth_time: lat,
                    expires_at: exp,
                    last_activity: lat,
                    claims,
                    created_at: 0,
                    op: Default::default(),
                };
                s.encode(keys, &mut crate::common::Rng(lat)).unwrap()
            };
            let good = mint(keys, NOW - 10, NOW + 7200);
            // Another user's claims under this signature: a forgery.
            let parts: Vec<&str> = good.split('.').collect();
            let forged_claims = json!({"iss": "envoy-wam", "sub": "mallory", "iat": NOW,
                "exp": NOW + 7200, "sid": "x", "auth_time": NOW, "lat": NOW});
            let forged = format!("{}.{}.{}", parts[0], jwt_part(&forged_claims), parts[2]);
            let mut flipped = good.clone().into_bytes();
            let at = parts[0].len() + parts[1].len() + 10;
            flipped[at] = if flipped[at] == b'A' { b'B' } else { b'A' };
            let none = format!(
                "{}.{}.",
                jwt_part(&json!({"alg": "none", "kid": "k1"})),
                parts[1]
            );
            w.sessions.push((good, Truth { user: Some(u) }));
            for bad in [
                mint(keys, NOW - 100, NOW - 5),     // expired
                mint(keys, NOW - 4000, NOW + 7200), // idle
                mint(&other, NOW - 10, NOW + 7200), // another gateway's key
                forged,
                String::from_utf8(flipped).unwrap(),
                none,
            ] {
                w.sessions.push((bad, Truth { user: None }));
            }
        }
        w.mint_bearers();
        w.recurring();
        w
    }

    fn mint_bearers(&mut self) {
        let rogue = ES256KeyPair::generate().with_key_id("rogue");
        let impostor = ES256KeyPair::generate().with_key_id("op-ec-1");
        for u in USERS {
            let claims = |tweak: &dyn Fn(&mut Map<String, Value>)| {
                let mut c = json!({"iss": ISSUER, "sub": u.sub, "aud": "https://api",
                    "exp": NOW + 3600, "iat": NOW, "scope": u.scope, "client_id": "cli"});
                tweak(c.as_object_mut().unwrap());
                c
            };
            let sign_with = |k: &ES256KeyPair, c: Value| {
                let c: JWTClaims<Map<String, Value>> = serde_json::from_value(c).unwrap();
                k.sign(c).unwrap()
            };
            let good = self.op.sign(claims(&|_| {}));
            let payload = good.split('.').nth(1).unwrap().to_string();
            self.bearers.push(Bearer {
                raw: good,
                jwt: Some(u),
                introspected: None,
                names: Some(u),
            });
            let bad = [
                self.op.sign(claims(&|c| {
                    c.insert("aud".into(), json!("https://other"));
                })),
                self.op.sign(claims(&|c| {
                    c.insert("aud".into(), json!(["https://other", "https://x"]));
                })),
                self.op.sign(claims(&|c| {
                    c.insert("exp".into(), json!(NOW - 600));
                })),
                self.op.sign(claims(&|c| {
                    c.insert("iss".into(), json!("https://evil.example.com"));
                })),
                sign_with(&rogue, claims(&|_| {})),
                sign_with(&impostor, claims(&|_| {})),
                format!(
                    "{}.{payload}.",
                    jwt_part(&json!({"alg": "none", "typ": "JWT"}))
                ),
                format!(
                    "{}.{payload}.",
                    jwt_part(&json!({"alg": "none", "kid": "op-ec-1"}))
                ),
            ];
            for raw in bad {
                self.bearers.push(Bearer {
                    raw,
                    jwt: None,
                    introspected: None,
                    names: Some(u),
                });
            }
            for (raw, active) in [
                (format!("opq-{}", u.sub.replace('\'', "")), true),
                (format!("opq-old-{}", u.sub.len()), false),
                (format!("sts-forged-{}", u.sub.len()), false),
            ] {
                self.bearers.push(Bearer {
                    raw,
                    jwt: None,
                    introspected: active.then_some(u),
                    names: None,
                });
            }
        }
    }

    /// Two tokens many clients send: checks of them meet under way.
    fn recurring(&mut self) {
        for raw in ["t1", "t2"] {
            self.bearers.push(Bearer {
                raw: raw.into(),
                jwt: None,
                introspected: None,
                names: None,
            });
        }
    }

    /// The user a session cookie value is valid for (`None`: not a valid session).
    pub fn session_user(&self, value: &str) -> Option<&'static User> {
        self.sessions
            .iter()
            .find(|(v, _)| v == value)
            .and_then(|(_, t)| t.user)
    }

    /// A session cookie value of the pool: half the time one that is valid.
    pub fn any_session(&self, rng: &mut Lcg) -> &str {
        let valid = rng.one_in(2);
        let pool: Vec<&(String, Truth)> = self
            .sessions
            .iter()
            .filter(|(_, t)| !valid || t.user.is_some())
            .collect();
        &pool[rng.below(pool.len() as u64) as usize].0
    }

    /// A bearer token of the pool: half the time one that some check accepts.
    pub fn any_bearer(&self, rng: &mut Lcg) -> &str {
        if rng.one_in(4) {
            return rng.pick(&["t1", "t2"]);
        }
        let valid = rng.one_in(2);
        let pool: Vec<&Bearer> = self
            .bearers
            .iter()
            .filter(|b| !valid || b.jwt.is_some() || b.introspected.is_some())
            .collect();
        &pool[rng.below(pool.len() as u64) as usize].raw
    }

    pub fn learn_session(&mut self, value: &str, user: &'static User) {
        if self.session_user(value).is_none() {
            self.sessions
                .push((value.to_string(), Truth { user: Some(user) }));
        }
    }

    /// The test OP's introspection endpoint: active exactly for the opaque tokens it issued.
    fn introspect(&mut self, body: &[u8], now: u64) -> CalloutResult {
        let token = form_field(body, "token").unwrap_or_default();
        let answer = match self.bearers.iter().find(|b| b.raw == token) {
            Some(Bearer {
                introspected: Some(u),
                ..
            }) => {
                self.introspections += 1;
                json!({"active": true, "sub": u.sub, "scope": u.scope, "client_id": "cli",
                       "groups": u.groups, "exp": now + 300})
            }
            Some(b) if b.raw.starts_with("opq-old") => {
                json!({"active": true, "sub": "mallory", "exp": now - 1})
            }
            _ => json!({"active": false}),
        };
        ok(answer)
    }

    /// The test STS: a token for whoever the subject token names (a gateway-signed one must
    /// verify); `invalid_grant` for anything else.
    fn exchange(&mut self, body: &[u8], now: u64) -> CalloutResult {
        let subject = form_field(body, "subject_token").unwrap_or_default();
        let kind = form_field(body, "subject_token_type").unwrap_or_default();
        let user = if kind.ends_with(":jwt") {
            self.gw_subject(&subject, "https://sts.example.com/token", now)
                .and_then(|sub| USERS.iter().find(|u| u.sub == sub))
        } else {
            self.bearers
                .iter()
                .find(|b| b.raw == subject)
                .and_then(|b| b.names)
        };
        let Some(u) = user else {
            return CalloutResult::Response {
                status: 400,
                body: br#"{"error":"invalid_grant"}"#.to_vec(),
            };
        };
        self.exchanges += 1;
        let token = format!("sts{}x{}", self.exchanges, u.sub.replace('\'', "_"));
        self.issued.insert(token.clone(), u.sub);
        ok(
            json!({"access_token": token, "token_type": "Bearer", "expires_in": 5 + now % 60,
            "issued_token_type": "urn:ietf:params:oauth:token-type:access_token"}),
        )
    }

    /// The `sub` of a JWT the gateway signed with its `authtoken` key for `audience`.
    pub fn gw_subject(&self, token: &str, audience: &str, now: u64) -> Option<String> {
        let key = (token.to_string(), audience.to_string());
        if let Some(sub) = self.verified.borrow().get(&key) {
            return sub.clone();
        }
        let sub = self.verify_gw(token, audience, now);
        self.verified.borrow_mut().insert(key, sub.clone());
        sub
    }

    fn verify_gw(&self, token: &str, audience: &str, now: u64) -> Option<String> {
        let options = VerificationOptions {
            accept_future: true,
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            allowed_audiences: Some(HashSet::from_strings(&[audience])),
            allowed_issuers: Some(HashSet::from_strings(&["envoy-wam"])),
            ..Default::default()
        };
        let claims = self
            .gw_key
            .verify_token::<Map<String, Value>>(token, Some(options))
            .ok()?;
        claims.subject
    }

    /// An answer to `c`: usually what an honest OP or STS says, sometimes a failure or junk
    /// (never one that vouches for anybody).
    pub fn answer(&mut self, c: &Callout, rng: &mut Lcg, now: u64) -> CalloutResult {
        if rng.one_in(5) {
            return junk_answer(rng);
        }
        match c.path.as_str() {
            "/jwks" => CalloutResult::Response {
                status: 200,
                body: self.op.jwks(),
            },
            "/introspect" => self.introspect(&c.body, now),
            "/token" if c.cluster == "sts" => self.exchange(&c.body, now),
            _ => junk_answer(rng),
        }
    }
}

fn ok(v: Value) -> CalloutResult {
    CalloutResult::Response {
        status: 200,
        body: v.to_string().into_bytes(),
    }
}

pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Failures and junk: none of it is a usable token, introspection or exchange answer.
pub fn junk_answer(rng: &mut Lcg) -> CalloutResult {
    match rng.below(7) {
        0 => CalloutResult::TimedOut,
        1 => CalloutResult::Failed,
        2 => ok(json!({"active": false})),
        3 => CalloutResult::Response {
            status: 400,
            body: br#"{"error":"invalid_grant"}"#.to_vec(),
        },
        4 => ok(json!({"keys": []})),
        5 => CalloutResult::Response {
            status: 200,
            body: rng.junk().into_bytes(),
        },
        _ => CalloutResult::Response {
            status: rng.below(600) as u16,
            body: rng.junk().into_bytes(),
        },
    }
}

/// The first session cookie value in any UTF-8 `Cookie` header, as a backend or browser
/// would read it.
pub fn first_cookie<'h>(h: &'h HeaderList, name: &str) -> Option<&'h str> {
    h.iter()
        .filter(|(n, _)| *n == "cookie")
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .flat_map(|c| c.split(';'))
        .filter_map(|piece| piece.split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
}

/// What the host sends upstream: the request's headers, every copy of `removed` removed, then
/// `identity` and `request_headers` applied in order (set = remove every copy, then add).
pub fn upstream(h: &HeaderList, f: &Forward) -> Vec<(String, Vec<u8>)> {
    let mut up = h.to_vec();
    for name in &f.removed {
        up.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    for (name, value) in f.identity.iter().chain(f.request_headers.iter()) {
        up.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            up.push((name.to_ascii_lowercase(), v.clone().into_bytes()));
        }
    }
    up
}

/// How a mediated site receives its token.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Site {
    None,
    /// The STS's token, in this header.
    StsHeader(&'static str),
    /// The gateway's identity JWT for this audience, in this cookie.
    JwtCookie(&'static str, &'static str),
}

/// Cookie pieces (name, value) of every upstream `Cookie` header, raw bytes trimmed.
fn cookie_pieces(up: &[(String, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
    up.iter()
        .filter(|(n, _)| n == "cookie")
        .flat_map(|(_, v)| v.split(|c| *c == b';'))
        .map(|p| {
            let at = p.iter().position(|c| *c == b'=').unwrap_or(p.len());
            let value = p.get(at + 1..).unwrap_or_default();
            (p[..at].trim_ascii(), value.trim_ascii())
        })
        .collect()
}

/// Checks what goes upstream: exactly `user`'s identity (or none), no look-alike of an
/// identity or site header, none of the gateway's cookies, and the site's token exactly when
/// an identity was vouched for, as the test's STS or the gateway's signer made it for `user`.
pub fn check_upstream(
    w: &World,
    up: &[(String, Vec<u8>)],
    user: Option<&str>,
    site: Site,
    reserved: &[&str],
    now: u64,
) -> Result<(), String> {
    let values = |name: &str| -> Vec<String> {
        up.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    };
    let users = values("x-wam-user");
    let want: Vec<String> = user.iter().map(|u| u.to_string()).collect();
    if users != want {
        return Err(format!("x-wam-user upstream {users:?}, vouched {want:?}"));
    }
    for (name, _) in up {
        let dashed = name.to_ascii_lowercase().replace('_', "-");
        if dashed != *name && reserved.contains(&dashed.as_str()) {
            return Err(format!("look-alike header `{name}` went upstream"));
        }
    }
    for (name, _) in cookie_pieces(up) {
        if name == b"PA.wam" || name.starts_with(b"PA.wam.txn.") {
            return Err(format!(
                "gateway cookie `{}` went upstream",
                String::from_utf8_lossy(name)
            ));
        }
    }
    match site {
        Site::None => {}
        Site::StsHeader(header) => {
            let got = values(header);
            let ok = match (user, got.as_slice()) {
                (None, []) => true,
                (Some(u), [one]) => w.issued.get(one.as_str()) == Some(&u),
                _ => false,
            };
            if !ok {
                return Err(format!("site header {header} = {got:?} for {user:?}"));
            }
        }
        Site::JwtCookie(cookie, audience) => {
            let got: Vec<String> = cookie_pieces(up)
                .into_iter()
                .filter(|(n, _)| *n == cookie.as_bytes())
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            let ok = match (user, got.as_slice()) {
                (None, []) => true,
                (Some(u), [one]) => w.gw_subject(one, audience, now).as_deref() == Some(u),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "site cookie {cookie} ({} copies) for {user:?}",
                    got.len()
                ));
            }
        }
    }
    Ok(())
}

/// Identity headers a client makes up: plain, repeated, other case, underscored, not UTF-8.
pub fn spoof(h: &mut HeaderList, rng: &mut Lcg, site_header: &str) {
    let n = rng.below(4);
    for _ in 0..n {
        let forged: (&str, &[u8]) = match rng.below(11) {
            0 => ("x-wam-user", b"mallory"),
            1 => ("X-WAM-User", b"admin"),
            2 => ("x_wam_user", b"mallory"),
            3 => ("x-wam_user", b"root"),
            4 => ("X_Wam-User", b"eve"),
            5 => ("x-wam-user", b"\xffmallory\xfe"),
            6 => (site_header, b"sts-forged"),
            7 => ("x_site_token", b"sts-forged"),
            8 => ("x-wam-user", b""),
            9 => ("x_wam_user", b"\x80"),
            _ => {
                h.push("X-WAM-User", b"mallory");
                ("X-WAM-User", b"alice")
            }
        };
        h.push(forged.0, forged.1);
    }
}

/// Headers for a failure message: values lossily as text, long ones cut.
pub fn show(pairs: &[(String, Vec<u8>)]) -> String {
    pairs
        .iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v);
            let cut: String = v.chars().take(60).collect();
            format!(
                "\n  {n}: {cut}{}",
                if cut.len() < v.len() { "…" } else { "" }
            )
        })
        .collect()
}
