//! Tokens and answers from clients and the OP: bearer-token syntax, JWT access tokens
//! (`bearer::validate_jwt`), ID tokens (`id_token::validate`), introspection answers, JWK Sets,
//! token-endpoint answers and STS (token exchange) answers.
//!
//! `Raw`: arbitrary text and bytes; no panic, and nothing the fuzzer writes is accepted unless
//! it verifies against the test OP's key by a separate check. `Signed`: claims chosen by the
//! fuzzer, signed by the test OP (ES256), optionally one character changed: accepted only if
//! every claim rule holds, and never after the signed part was changed.
#![no_main]

use envoy_wam::bearer::{self, BearerError, JwtRules};
use envoy_wam::config::SignatureAlg;
use envoy_wam::id_token::{self, Expected};
use envoy_wam::jwks::{parse_jwks, Jwk, JwksCache, KeyMaterial};
use envoy_wam::mediation::{
    self, is_safe_token, ExchangeError, RawSiteAuthenticator, SiteAuthenticator,
};
use envoy_wam::oidc::{parse_token_response, TokenError};
use jwt_simple::prelude::*;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

const BASE: u64 = 1_700_000_000;
const ISS: &str = "https://op.example.com";
const CLIENT_ID: &str = "pa_wam";
const API_AUD: &str = "https://api.example.com";
const NONCE: &str = "n-0S6_WzA2Mj";
const SKEW: u64 = 60;
const ALGS: &[SignatureAlg] = &[SignatureAlg::Rs256, SignatureAlg::Es256];

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        token: String,
        body: Vec<u8>,
        status: u16,
        now: u16,
    },
    Signed(Signed),
}

#[derive(Arbitrary, Debug)]
enum Text {
    Expected,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Aud {
    Expected,
    Other(String),
    Set(Vec<Text>),
}

#[derive(Arbitrary, Debug)]
struct Signed {
    kid: Option<Text>,
    iss: Option<Text>,
    sub: Option<String>,
    aud: Option<Aud>,
    /// Offsets from `BASE`; the fuzzer picks `now` too.
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    nonce: Option<Text>,
    azp: Option<Text>,
    auth_time: Option<i64>,
    scope: Option<String>,
    extra: Vec<(String, String)>,
    now: u32,
    mutate: Option<(u16, u8)>,
}

struct Op {
    key: ES256KeyPair,
    jwks: JwksCache,
}

fn op() -> Op {
    let key = ES256KeyPair::from_bytes(&[7; 32])
        .expect("fixed key")
        .with_key_id("ec1");
    let jwk = Jwk {
        kid: Some("ec1".into()),
        alg: Some("ES256".into()),
        material: KeyMaterial::P256(key.public_key().public_key().to_bytes_uncompressed()),
    };
    let mut jwks = JwksCache::default();
    jwks.replace(vec![jwk], BASE);
    Op { key, jwks }
}

fn text(t: &Text, expected: &str) -> Value {
    match t {
        Text::Expected => Value::from(expected),
        Text::Other(s) => Value::from(s.as_str()),
    }
}

/// The token's signature verifies under the test OP's key, checked without the filter's code
/// (at the same `now`: jwt-simple checks the times too, and a huge tolerance overflows its
/// clock arithmetic).
fn signed_by_op(op: &Op, token: &str, now: u64) -> bool {
    let options = VerificationOptions {
        accept_future: true,
        time_tolerance: Some(Duration::from_secs(SKEW)),
        artificial_time: Some(UnixTimeStamp::from_secs(now)),
        max_validity: None,
        max_token_length: Some(1 << 20),
        ..Default::default()
    };
    op.key
        .public_key()
        .verify_token::<Map<String, Value>>(token, Some(options))
        .is_ok()
}

fn signed_part(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(hp, _)| hp)
}

fn rules(now: u64) -> JwtRules<'static> {
    static AUDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    JwtRules {
        issuer: ISS,
        audiences: AUDS.get_or_init(|| vec![API_AUD.to_string()]),
        algorithms: ALGS,
        clock_skew_s: SKEW,
        now,
    }
}

fn expected(now: u64) -> Expected<'static> {
    Expected {
        issuer: ISS,
        client_id: CLIENT_ID,
        nonce: NONCE,
        now,
        clock_skew_s: SKEW,
        algorithms: ALGS,
    }
}

fn sites() -> Vec<SiteAuthenticator> {
    let exchange = |inject: Value| {
        json!({
            "name": "sts", "type": "token_exchange",
            "sts": { "cluster": "op", "token_endpoint": "http://127.0.0.1:9000/token",
                     "client_id": "pa_sts", "client_secret": "s3cret" },
            "audience": "https://orders.internal",
            "inject": inject
        })
    };
    [
        exchange(json!({"header": "Authorization"})),
        exchange(json!({"cookie": "site_token"})),
    ]
    .iter()
    .map(|v| {
        SiteAuthenticator::compile(RawSiteAuthenticator::from_value(v).expect("site"))
            .expect("site")
    })
    .collect()
}

fn printable_code(e: &str) -> bool {
    !e.is_empty() && e.len() <= 64 && e.bytes().all(|c| c.is_ascii_graphic())
}

fn raw(op: &Op, token: &str, body: &[u8], status: u16, now: u64) {
    // Bearer syntax.
    let header = format!("Bearer {token}");
    if let Ok(Some(t)) = bearer::extract(Some(&header)) {
        assert!(bearer::well_formed(t));
    }
    if let Ok(Some(t)) = bearer::extract(Some(token)) {
        assert!(bearer::well_formed(t));
    }
    let _ = bearer::well_formed(token);

    // Without keys nothing is accepted.
    let empty = JwksCache::default();
    assert!(bearer::validate_jwt(token, &empty, 3600, 30, &rules(now)).is_err());
    assert!(id_token::validate(token, &empty, 3600, 30, &expected(now)).is_err());
    // With the OP's key, only what it signed.
    if bearer::validate_jwt(token, &op.jwks, 3600, 30, &rules(now)).is_ok() {
        assert!(
            signed_by_op(op, token, now),
            "access token accepted: {token:?}"
        );
    }
    if id_token::validate(token, &op.jwks, 3600, 30, &expected(now)).is_ok() {
        assert!(signed_by_op(op, token, now), "ID token accepted: {token:?}");
    }

    // Introspection answers.
    match bearer::parse_introspection(status, body, now) {
        Ok(info) => {
            assert_eq!(status, 200);
            assert!(info.expires_at > now);
            assert_eq!(info.claims.get("active"), Some(&Value::Bool(true)));
        }
        Err(Some(BearerError::InvalidToken(_))) | Err(None) => {}
        Err(Some(e)) => panic!("unexpected introspection error {e:?}"),
    }

    // JWK Sets: only signing keys of sane sizes.
    if let Some(keys) = parse_jwks(body) {
        for k in &keys {
            match &k.material {
                KeyMaterial::Rsa { n, e } => {
                    assert!(n.len() >= 256 && !e.is_empty() && e.len() <= 8)
                }
                KeyMaterial::P256(p) => assert!(p.len() == 65 && p[0] == 4),
                KeyMaterial::P384(p) => assert!(p.len() == 97 && p[0] == 4),
            }
        }
        // And looking a token's key up in them does not panic either.
        let mut cache = JwksCache::default();
        cache.replace(keys, now);
        let _ = bearer::validate_jwt(token, &cache, 3600, 30, &rules(now));
        let _ = id_token::validate(token, &cache, 3600, 30, &expected(now));
    }

    // Token-endpoint answers.
    match parse_token_response(status, body) {
        Ok(tokens) => {
            assert_eq!(status, 200);
            for t in [&tokens.id_token, &tokens.access_token, &tokens.refresh_token] {
                assert!(t.as_ref().is_none_or(|t| !t.is_empty() && t.len() <= 16 * 1024));
            }
        }
        Err(TokenError::Refused { status: s, error }) => {
            assert_eq!(s, status);
            assert_ne!(status, 200);
            assert!(error.len() <= 64 && error.bytes().all(|c| c.is_ascii_graphic()));
        }
        Err(TokenError::Malformed(_)) => assert_eq!(status, 200),
    }

    // STS answers: a token is only ever something that can go in a header (or cookie).
    SITES.with(|sites| exchange_answers(sites, body, status, now));
}

fn exchange_answers(sites: &[SiteAuthenticator], body: &[u8], status: u16, now: u64) {
    for (i, site) in sites.iter().enumerate() {
        match mediation::parse_exchange_response(site, status, body, now) {
            Ok(t) => {
                assert_eq!(status, 200);
                assert!(is_safe_token(&t.token));
                if i == 1 {
                    assert!(!t.token.contains([';', ',', '"', '\\']));
                }
                assert!(t.expires_at >= now);
            }
            Err(ExchangeError::Refused { status: s, error }) => {
                assert_eq!(s, status);
                assert!((400..500).contains(&status));
                assert!(printable_code(&error));
            }
            Err(ExchangeError::Status(s)) => {
                assert_eq!(s, status);
                assert_ne!(status, 200);
            }
            Err(ExchangeError::Malformed(_)) => assert_eq!(status, 200),
        }
    }
}

fn signed(op: &Op, s: Signed) {
    let at = |off: i64| Value::from((BASE as i64).saturating_add(off));
    let mut claims = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            claims.insert(k.to_string(), v);
        }
    };
    // Extras first: the registered claims below win.
    for (k, v) in &s.extra {
        put(k, Some(Value::from(v.as_str())));
    }
    put("iss", s.iss.as_ref().map(|t| text(t, ISS)));
    put("sub", s.sub.as_deref().map(Value::from));
    let aud = s.aud.as_ref().map(|a| match a {
        Aud::Expected => vec![CLIENT_ID.to_string(), API_AUD.to_string()],
        Aud::Other(o) => vec![o.clone()],
        Aud::Set(set) => set
            .iter()
            .map(|t| match t {
                Text::Expected => CLIENT_ID.to_string(),
                Text::Other(o) => o.clone(),
            })
            .collect(),
    });
    put(
        "aud",
        aud.as_ref().map(|a| match a.as_slice() {
            [one] => Value::from(one.as_str()),
            many => Value::from(many.to_vec()),
        }),
    );
    put("exp", s.exp.map(at));
    put("iat", s.iat.map(at));
    put("nbf", s.nbf.map(at));
    put("nonce", s.nonce.as_ref().map(|t| text(t, NONCE)));
    put("azp", s.azp.as_ref().map(|t| text(t, CLIENT_ID)));
    put("auth_time", s.auth_time.map(at));
    put("scope", s.scope.as_deref().map(Value::from));

    let Ok(jwt_claims) =
        serde_json::from_value::<JWTClaims<Map<String, Value>>>(Value::Object(claims.clone()))
    else {
        return;
    };
    let mut key = ES256KeyPair::from_bytes(&[7; 32]).expect("fixed key");
    if let Some(k) = &s.kid {
        key = key.with_key_id(text(k, "ec1").as_str().unwrap_or_default());
    }
    let Ok(mut token) = key.sign(jwt_claims) else {
        return;
    };
    let original = token.clone();
    if let Some((at, to)) = s.mutate {
        let mut bytes = token.into_bytes();
        let i = usize::from(at) % bytes.len();
        if to.is_ascii() {
            bytes[i] = to;
        }
        token = String::from_utf8(bytes).expect("ascii");
    }
    let now = BASE + u64::from(s.now);
    let ts = |k: &str| claims.get(k).and_then(Value::as_u64);
    let not_expired = ts("exp").is_some_and(|e| now <= e.saturating_add(SKEW));
    let not_before_ok = ts("nbf").is_none_or(|n| n <= now.saturating_add(SKEW));
    let aud_has = |a: &str| aud.as_ref().is_some_and(|v| v.iter().any(|x| x == a));

    if let Ok(info) = bearer::validate_jwt(&token, &op.jwks, 3600, 30, &rules(now)) {
        assert_eq!(signed_part(&token), signed_part(&original), "{token}");
        assert!(signed_by_op(op, &token, now));
        assert_eq!(claims.get("iss"), Some(&Value::from(ISS)));
        assert!(aud_has(API_AUD));
        assert!(not_expired && not_before_ok, "{claims:?} at {now}");
        // jwt-simple keeps times in 32 bits of seconds: an `exp` past 2106 reads as 2106.
        assert_eq!(
            Some(info.expires_at),
            ts("exp").map(|e| e.min(u32::MAX.into()))
        );
    }
    if let Ok(idt) = id_token::validate(&token, &op.jwks, 3600, 30, &expected(now)) {
        assert_eq!(signed_part(&token), signed_part(&original), "{token}");
        assert!(signed_by_op(op, &token, now));
        assert_eq!(claims.get("iss"), Some(&Value::from(ISS)));
        assert!(!idt.sub.is_empty());
        assert_eq!(Some(idt.sub.as_str()), s.sub.as_deref());
        assert!(aud_has(CLIENT_ID));
        assert_eq!(claims.get("nonce"), Some(&Value::from(NONCE)));
        assert!(claims.contains_key("iat"));
        assert!(not_expired && not_before_ok, "{claims:?} at {now}");
        match claims.get("azp") {
            Some(azp) => assert_eq!(azp, &Value::from(CLIENT_ID)),
            None => assert_eq!(aud.as_ref().map(Vec::len), Some(1)),
        }
        assert!(!idt.claims.contains_key("azp") && !idt.claims.contains_key("auth_time"));
    }
}

thread_local! {
    static OP: Op = op();
    static SITES: Vec<SiteAuthenticator> = sites();
}

fuzz_target!(|input: Input| {
    OP.with(|op| match input {
        Input::Raw {
            token,
            body,
            status,
            now,
        } => raw(op, &token, &body, status, BASE + u64::from(now)),
        Input::Signed(s) => signed(op, s),
    })
});
