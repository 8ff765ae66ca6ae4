//! OAuth bearer tokens for API access (RFC 6750): taking the token from the request, checking
//! it locally as a JWT or at the OP by introspection (RFC 7662), caching the outcome by a hash
//! of the token, and the `WWW-Authenticate` answers.
//!
//! Groundwork for the bearer-token issue: tested here, not yet wired into the request flow.

use std::rc::Rc;

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

use crate::cache::{self, FlightCache};
use crate::config::{ClientAuth, Endpoint, SignatureAlg};
use crate::http::{client_authentication, form_encode, form_post_headers, Callout, HeaderOps};
use crate::jwks::JwksCache;
use crate::jws::{verify_signed, SignatureCheck, SignatureProblem};
use crate::shared_tier::{active, SharedToken, Tier};

/// Why a bearer token was not accepted; each maps to an RFC 6750 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BearerError {
    /// `Authorization` is not a well-formed `Bearer` credential (400 `invalid_request`).
    Malformed,
    /// No bearer token where one is required (401 without an error code, RFC 6750 §3.1).
    Missing,
    /// Expired, revoked, not ours, bad signature (401 `invalid_token`).
    InvalidToken(&'static str),
    /// The token's key is not loaded: fetch the JWKS, then check again.
    NeedKeys,
}

/// What a valid token says, for policy rules and identity mapping.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub expires_at: u64,
    pub claims: Map<String, Value>,
    /// The identity headers this token gives the backend (derived once, by the gateway).
    pub headers: HeaderOps,
    /// The token provider that vouched for it (index in the settings' providers).
    pub provider: usize,
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1). `Ok(None)` when the
/// request carries no bearer credential at all.
pub fn extract(authorization: Option<&str>) -> Result<Option<&str>, BearerError> {
    match credential(authorization) {
        Some(token) if well_formed(token) => Ok(Some(token)),
        Some(_) => Err(BearerError::Malformed),
        None => Ok(None),
    }
}

/// The credential after the `Bearer` scheme, not yet checked for its syntax: the hot path
/// looks a token up by its key first and checks the syntax only of tokens not seen before.
pub fn credential(authorization: Option<&str>) -> Option<&str> {
    let value = authorization?.trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// RFC 6750 `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`, and a
/// sane length.
pub fn well_formed(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && token.len() <= 16 * 1024
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~+/".contains(&c))
}

/// The `iss` a JWS-shaped token claims, read without checking anything: only to pick which
/// provider's keys check it (the check then requires the same issuer). `None` for anything
/// that is not three segments with a JSON payload naming a string `iss`.
pub fn unverified_issuer(token: &str) -> Option<String> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    #[derive(serde::Deserialize)]
    struct Payload {
        iss: String,
    }
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > 16 * 1024 {
        return None;
    }
    let json = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Payload>(&json).ok().map(|p| p.iss)
}

/// Why a JWT is refused when the JWKS has no key for it.
pub const UNKNOWN_KEY: &str = "unknown signing key";
/// Why a token matches none of the application's token providers.
pub const UNKNOWN_ISSUER: &str = "issuer not accepted here";
/// A checked token with a claim that cannot be a header value (it never goes upstream).
pub const UNUSABLE_CLAIM: &str = "a claim cannot be sent as a header value";

/// What a JWT access token must satisfy.
pub struct JwtRules<'a> {
    pub issuer: &'a str,
    /// The token's `aud` must contain one of these.
    pub audiences: &'a [String],
    pub algorithms: &'a [SignatureAlg],
    pub clock_skew_s: u64,
    pub now: u64,
}

fn scopes_of(claims: &Map<String, Value>) -> Vec<String> {
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks a JWT access token against the OP's keys: signature, `iss`, `aud`, `exp`, `nbf`.
pub fn validate_jwt(
    token: &str,
    jwks: &JwksCache,
    jwks_max_age_s: u64,
    jwks_min_refetch_s: u64,
    rules: &JwtRules<'_>,
) -> Result<TokenInfo, BearerError> {
    let check = SignatureCheck {
        algorithms: rules.algorithms,
        now: rules.now,
        clock_skew_s: rules.clock_skew_s,
        max_token_length: 16 * 1024,
        jwks_max_age_s,
        jwks_min_refetch_s,
    };
    let claims: JWTClaims<Map<String, Value>> =
        verify_signed(token, jwks, &check).map_err(|p| match p {
            SignatureProblem::NeedKeys => BearerError::NeedKeys,
            SignatureProblem::AlgorithmNotAllowed(_) => {
                BearerError::InvalidToken("algorithm not allowed")
            }
            SignatureProblem::UnknownKey => BearerError::InvalidToken(UNKNOWN_KEY),
            SignatureProblem::Expired => BearerError::InvalidToken("expired"),
            SignatureProblem::NotYetValid => BearerError::InvalidToken("not valid yet"),
            SignatureProblem::BadSignature => BearerError::InvalidToken("bad signature"),
            SignatureProblem::Malformed => BearerError::InvalidToken("malformed"),
        })?;
    if claims.issuer.as_deref() != Some(rules.issuer) {
        return Err(BearerError::InvalidToken("wrong issuer"));
    }
    let audience_ok = match &claims.audiences {
        Some(Audiences::AsString(a)) => rules.audiences.contains(a),
        Some(Audiences::AsSet(set)) => rules.audiences.iter().any(|a| set.contains(a)),
        None => false,
    };
    if !audience_ok {
        return Err(BearerError::InvalidToken("wrong audience"));
    }
    let expires_at = claims
        .expires_at
        .ok_or(BearerError::InvalidToken("no expiry"))?
        .as_secs();
    let client_id = claims
        .custom
        .get("client_id")
        .or_else(|| claims.custom.get("azp"))
        .and_then(Value::as_str)
        .map(String::from);
    // The verified issuer among the claims: rules and identity headers can then say which OP
    // vouched (an application may accept several), which jwt-simple keeps out of `custom`.
    let mut custom = claims.custom;
    custom.insert("iss".into(), Value::String(rules.issuer.to_string()));
    let claims = JWTClaims { custom, ..claims };
    Ok(TokenInfo {
        scopes: scopes_of(&claims.custom),
        sub: claims.subject,
        client_id,
        expires_at,
        claims: claims.custom,
        headers: HeaderOps::from([]),
        provider: 0,
    })
}

/// The RFC 7662 introspection request, authenticated as the gateway's client.
pub fn introspection_request(
    cluster: &str,
    endpoint: &Endpoint,
    client_id: &str,
    client_secret: &str,
    token: &str,
    timeout_ms: u64,
) -> Callout {
    let mut form = vec![("token", token), ("token_type_hint", "access_token")];
    let mut headers = form_post_headers();
    // The gateway authenticates as itself with HTTP Basic (RFC 7662 §2.1).
    if let Some(h) = client_authentication(
        ClientAuth::ClientSecretBasic,
        client_id,
        client_secret,
        &mut form,
    ) {
        headers.push(h);
    }
    Callout {
        cluster: cluster.to_string(),
        method: "POST",
        authority: endpoint.authority.clone(),
        path: endpoint.path.clone(),
        headers,
        body: form_encode(&form).into_bytes(),
        timeout_ms,
    }
}

/// Reads an introspection answer. `Err(None)` when the answer is not usable (the OP failed:
/// answer 502, do not cache); `Err(Some(_))` when the OP says the token is not valid.
pub fn parse_introspection(
    status: u16,
    body: &[u8],
    now: u64,
) -> Result<TokenInfo, Option<BearerError>> {
    if status != 200 {
        return Err(None);
    }
    let claims: Map<String, Value> = serde_json::from_slice(body).map_err(|_| None)?;
    if claims.get("active") != Some(&Value::Bool(true)) {
        return Err(Some(BearerError::InvalidToken("inactive")));
    }
    let expires_at = match claims.get("exp") {
        Some(v) => v.as_u64().ok_or(None)?,
        // No expiry given: trust it only as long as the cache's own maximum.
        None => u64::MAX,
    };
    if expires_at <= now {
        return Err(Some(BearerError::InvalidToken("expired")));
    }
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(String::from);
    Ok(TokenInfo {
        sub: text("sub"),
        client_id: text("client_id"),
        scopes: scopes_of(&claims),
        expires_at,
        claims,
        headers: HeaderOps::from([]),
        provider: 0,
    })
}

/// The `WWW-Authenticate` value for a refusal (RFC 6750 §3). `scope` names what was missing
/// for `insufficient_scope`.
pub fn challenge(realm: &str, error: Option<&str>, scope: Option<&str>) -> String {
    let quoted = |s: &str| s.replace(['"', '\\'], "");
    let mut out = format!("Bearer realm=\"{}\"", quoted(realm));
    if let Some(e) = error {
        out.push_str(&format!(", error=\"{}\"", quoted(e)));
    }
    if let Some(s) = scope {
        out.push_str(&format!(", scope=\"{}\"", quoted(s)));
    }
    out
}

/// The cache key: SHA-256 of the token. The token itself is never kept or logged.
pub fn token_hash(token: &str) -> [u8; 32] {
    hmac_sha256::Hash::hash(token.as_bytes())
}

/// Cache keys for tokens on the request path: keyed SipHash with keys drawn at
/// random for each VM. A keyed SipHash is a PRF, so without the keys (which never leave the VM)
/// nobody can predict a key or aim for a collision with a cached token; and it costs about an
/// eighth of SHA-256 over a 1 KB JWT, which is most of the work of a cached request.
#[derive(Clone)]
pub struct TokenKeys(std::hash::RandomState);

impl Default for TokenKeys {
    fn default() -> Self {
        Self(std::hash::RandomState::new())
    }
}

impl TokenKeys {
    /// 64 bits: aiming for a collision means guessing online against a secret-keyed PRF, and
    /// two of ten thousand cached tokens share a key with odds of about 1 in 10^11.
    pub fn key(&self, token: &str) -> [u8; 32] {
        use std::hash::BuildHasher;
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.0.hash_one(token).to_le_bytes());
        key[8..12].copy_from_slice(&(token.len() as u32).to_le_bytes());
        key
    }

    /// The same keyed hash over any hashable value (e.g. a subject and what kind it is).
    pub fn key_of<T: std::hash::Hash>(&self, value: &T) -> [u8; 32] {
        use std::hash::BuildHasher;
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&self.0.hash_one(value).to_le_bytes());
        key[8] = 1; // never equal to a token's key
        key
    }
}

/// What the cache says about a token.
#[derive(Debug, PartialEq)]
pub enum Lookup {
    Valid(Rc<TokenInfo>),
    Invalid(BearerError),
    /// Nobody is checking it: the caller checks it, then calls [`TokenCache::complete`].
    CheckIt,
    /// Another request is checking it; the caller waits and is named in `complete`'s answer.
    Wait,
}

/// Outcomes of token checks in this VM, by token hash. Valid tokens are kept until their expiry
/// or `max_ttl_s`, refusals for `negative_ttl_s` (so a flood of one bad token does not become a
/// flood of callouts), and concurrent requests for the same unchecked token make one check.
/// A [`FlightCache`] (bounded, least recently used evicted first) underneath.
pub struct TokenCache {
    cache: FlightCache<Result<Rc<TokenInfo>, BearerError>>,
    max_ttl_s: u64,
    negative_ttl_s: u64,
    /// The process-wide tier, asked on a miss and told every verdict.
    shared: Tier,
}

impl TokenCache {
    pub fn new(capacity: usize, max_ttl_s: u64, negative_ttl_s: u64) -> Self {
        Self {
            // Lifetimes are computed here (they differ for valid and refused tokens).
            cache: FlightCache::new(capacity, None, u64::MAX),
            max_ttl_s,
            negative_ttl_s,
            shared: None,
        }
    }

    /// Also asks and tells `tier`.
    pub fn with_tier(mut self, tier: Tier) -> Self {
        self.shared = tier;
        self
    }

    /// After a miss here (`Lookup::CheckIt`, the caller leads): the verdict another worker
    /// reached, if the shared tier holds one still good at `now`. It is then kept here until
    /// the same second as there; returns the verdict and the contexts that waited for it.
    pub fn verdict_in_tier(&mut self, key: &[u8; 32], now: u64) -> Option<(Lookup, Vec<u32>)> {
        let (verdict, until) = active(&self.shared)?.token(key)?;
        if now >= until {
            return None;
        }
        let (value, found) = match verdict {
            Ok(t) => {
                let info = Rc::new(t.to_info());
                (Ok(info.clone()), Lookup::Valid(info))
            }
            Err(e) => (Err(e.clone()), Lookup::Invalid(e)),
        };
        Some((found, self.cache.complete(key, Some((value, until)), now)))
    }

    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Looks `key` up for the request context `waiter`.
    pub fn lookup(&mut self, key: &[u8; 32], waiter: u32, now: u64) -> Lookup {
        match self.cache.lookup(key, waiter, now) {
            cache::Lookup::Hit(Ok(info)) => Lookup::Valid(info),
            cache::Lookup::Hit(Err(e)) => Lookup::Invalid(e),
            cache::Lookup::Miss => Lookup::CheckIt,
            cache::Lookup::Wait => Lookup::Wait,
        }
    }

    /// Records the outcome of a check (or, with `None`, that it could not be made: nothing is
    /// cached). Returns the contexts that waited for it.
    pub fn complete(
        &mut self,
        key: &[u8; 32],
        outcome: Option<Result<TokenInfo, BearerError>>,
        now: u64,
    ) -> Vec<u32> {
        let outcome = outcome.map(|result| match result {
            Ok(info) => {
                let until = info.expires_at.min(now.saturating_add(self.max_ttl_s));
                (Ok(Rc::new(info)), until)
            }
            Err(e) => (Err(e), now.saturating_add(self.negative_ttl_s)),
        });
        if let (Some(tier), Some((value, until))) = (active(&self.shared), &outcome) {
            if now < *until {
                let verdict = match value {
                    Ok(info) => Ok(std::sync::Arc::new(SharedToken::of(info))),
                    Err(e) => Err(e.clone()),
                };
                tier.put_token(key, verdict, *until);
            }
        }
        self.cache.complete(key, outcome, now)
    }

    /// The request `waiter` went away before its check ended (see [`FlightCache::abandon`]):
    /// returns the contexts to wake, one of which will check the token instead.
    pub fn abandon(&mut self, key: &[u8; 32], waiter: u32) -> Vec<u32> {
        self.cache.abandon(key, waiter)
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    use super::*;
    use crate::id_token::tests::{TestOp, NOW};
    use serde_json::json;

    #[test]
    fn extracts_bearer_credentials() {
        assert_eq!(extract(None), Ok(None));
        assert_eq!(extract(Some("Basic dXNlcjpwYXNz")), Ok(None));
        assert_eq!(
            extract(Some("Bearer abc.def-ghi_~+/==")),
            Ok(Some("abc.def-ghi_~+/=="))
        );
        assert_eq!(extract(Some("bearer  tok")), Ok(Some("tok")));
        assert_eq!(extract(Some("Bearer")), Err(BearerError::Malformed));
        assert_eq!(extract(Some("Bearer a b")), Err(BearerError::Malformed));
        assert_eq!(extract(Some("Bearer a\"b")), Err(BearerError::Malformed));
        assert_eq!(extract(Some("Bearer ==")), Err(BearerError::Malformed));
    }

    fn rules<'a>(audiences: &'a [String], now: u64) -> JwtRules<'a> {
        JwtRules {
            issuer: "https://op.example.com",
            audiences,
            algorithms: &[SignatureAlg::Es256],
            clock_skew_s: 30,
            now,
        }
    }

    fn access_token(op: &TestOp, tweak: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut c = json!({
            "iss": "https://op.example.com", "sub": "alice", "aud": "https://api.example.com",
            "exp": NOW + 600, "iat": NOW, "scope": "orders:read orders:write", "client_id": "app1"
        });
        tweak(c.as_object_mut().unwrap());
        op.sign(c)
    }

    #[test]
    fn jwt_access_tokens() {
        let op = TestOp::new();
        let aud = vec!["https://api.example.com".to_string()];
        let ok = validate_jwt(
            &access_token(&op, |_| {}),
            &op.jwks,
            3600,
            30,
            &rules(&aud, NOW),
        )
        .unwrap();
        assert_eq!(ok.sub.as_deref(), Some("alice"));
        assert_eq!(ok.client_id.as_deref(), Some("app1"));
        assert_eq!(ok.scopes, vec!["orders:read", "orders:write"]);
        assert_eq!(ok.expires_at, NOW + 600);

        let cases: Vec<(String, &str)> = vec![
            (
                access_token(&op, |c| {
                    drop(c.insert("aud".into(), "https://other".into()))
                }),
                "wrong audience",
            ),
            (
                access_token(&op, |c| drop(c.remove("aud"))),
                "wrong audience",
            ),
            (
                access_token(&op, |c| drop(c.insert("iss".into(), "https://evil".into()))),
                "wrong issuer",
            ),
            (
                access_token(&op, |c| drop(c.insert("exp".into(), (NOW - 100).into()))),
                "expired",
            ),
            (
                access_token(&op, |c| drop(c.insert("nbf".into(), (NOW + 100).into()))),
                "not valid yet",
            ),
            (access_token(&op, |c| drop(c.remove("exp"))), "no expiry"),
        ];
        for (token, why) in cases {
            assert_eq!(
                validate_jwt(&token, &op.jwks, 3600, 30, &rules(&aud, NOW)),
                Err(BearerError::InvalidToken(why))
            );
        }
        // Flip one character inside the signature (not the last: its low bits are padding).
        let token = access_token(&op, |_| {});
        let at = token.len() - 10;
        let flipped = if &token[at..at + 1] == "A" { "B" } else { "A" };
        let tampered = format!("{}{}{}", &token[..at], flipped, &token[at + 1..]);
        assert!(matches!(
            validate_jwt(&tampered, &op.jwks, 3600, 30, &rules(&aud, NOW)),
            Err(BearerError::InvalidToken(_))
        ));
        let scp = access_token(&op, |c| {
            c.remove("scope");
            c.insert("scp".into(), json!(["a", "b"]));
        });
        assert_eq!(
            validate_jwt(&scp, &op.jwks, 3600, 30, &rules(&aud, NOW))
                .unwrap()
                .scopes,
            vec!["a", "b"]
        );
    }

    #[test]
    fn introspection_answers() {
        let body = json!({"active": true, "sub": "bob", "client_id": "app2", "scope": "read", "exp": NOW + 60});
        let info = parse_introspection(200, body.to_string().as_bytes(), NOW).unwrap();
        assert_eq!(
            (
                info.sub.as_deref(),
                info.client_id.as_deref(),
                info.scopes.clone()
            ),
            (Some("bob"), Some("app2"), vec!["read".to_string()])
        );
        assert_eq!(
            parse_introspection(200, br#"{"active":false}"#, NOW),
            Err(Some(BearerError::InvalidToken("inactive")))
        );
        let expired = json!({"active": true, "exp": NOW});
        assert_eq!(
            parse_introspection(200, expired.to_string().as_bytes(), NOW),
            Err(Some(BearerError::InvalidToken("expired")))
        );
        assert_eq!(parse_introspection(200, b"garbage", NOW), Err(None));
        assert_eq!(parse_introspection(500, b"{}", NOW), Err(None));
        assert_eq!(
            parse_introspection(200, br#"{"active":"true"}"#, NOW),
            Err(Some(BearerError::InvalidToken("inactive")))
        );

        let ep = Endpoint {
            url: String::new(),
            authority: "op.example.com".into(),
            path: "/token/introspection".into(),
        };
        let c = introspection_request("op", &ep, "pa_wam", "s3cret", "tok", 1000);
        assert_eq!(
            (c.method, c.path.as_str()),
            ("POST", "/token/introspection")
        );
        assert_eq!(
            String::from_utf8(c.body).unwrap(),
            "token=tok&token_type_hint=access_token"
        );
        assert!(c.headers.iter().any(|(n, v)| n == "authorization"
            && v == &format!("Basic {}", STANDARD.encode("pa_wam:s3cret"))));
    }

    #[test]
    fn challenges_follow_rfc6750() {
        assert_eq!(challenge("api", None, None), "Bearer realm=\"api\"");
        assert_eq!(
            challenge("api", Some("invalid_token"), None),
            "Bearer realm=\"api\", error=\"invalid_token\""
        );
        assert_eq!(
            challenge("a\"pi", Some("insufficient_scope"), Some("orders:write")),
            "Bearer realm=\"api\", error=\"insufficient_scope\", scope=\"orders:write\""
        );
    }

    fn info(exp: u64) -> TokenInfo {
        TokenInfo {
            provider: 0,
            sub: Some("alice".into()),
            client_id: None,
            scopes: vec![],
            expires_at: exp,
            claims: Map::new(),
            headers: HeaderOps::from([]),
        }
    }

    #[test]
    fn cache_expiry_negative_caching_single_flight_and_bound() {
        let mut cache = TokenCache::new(3, 300, 10);
        let a = token_hash("token-a");
        assert_eq!(cache.lookup(&a, 1, NOW), Lookup::CheckIt);
        assert_eq!(
            cache.lookup(&a, 2, NOW),
            Lookup::Wait,
            "one check at a time"
        );
        assert_eq!(cache.lookup(&a, 3, NOW), Lookup::Wait);
        assert_eq!(
            cache.complete(&a, Some(Ok(info(NOW + 100))), NOW),
            vec![2, 3]
        );
        assert!(matches!(cache.lookup(&a, 4, NOW + 99), Lookup::Valid(_)));
        assert_eq!(
            cache.lookup(&a, 5, NOW + 100),
            Lookup::CheckIt,
            "not past the token's expiry"
        );
        cache.complete(&a, Some(Ok(info(NOW + 10_000))), NOW + 100);
        assert!(matches!(cache.lookup(&a, 6, NOW + 399), Lookup::Valid(_)));
        assert_eq!(
            cache.lookup(&a, 7, NOW + 400),
            Lookup::CheckIt,
            "not past the cache's maximum"
        );

        let bad = token_hash("bad");
        assert_eq!(cache.lookup(&bad, 1, NOW), Lookup::CheckIt);
        cache.complete(&bad, Some(Err(BearerError::InvalidToken("inactive"))), NOW);
        assert_eq!(
            cache.lookup(&bad, 2, NOW + 9),
            Lookup::Invalid(BearerError::InvalidToken("inactive"))
        );
        assert_eq!(
            cache.lookup(&bad, 3, NOW + 10),
            Lookup::CheckIt,
            "refusals are cached briefly"
        );

        // An OP failure caches nothing, but still releases the waiters.
        let c = token_hash("c");
        cache.lookup(&c, 1, NOW);
        cache.lookup(&c, 2, NOW);
        assert_eq!(cache.complete(&c, None, NOW), vec![2]);
        assert_eq!(cache.lookup(&c, 3, NOW), Lookup::CheckIt);

        for i in 0..10 {
            let k = token_hash(&format!("t{i}"));
            cache.lookup(&k, 1, NOW);
            cache.complete(&k, Some(Ok(info(NOW + 100))), NOW);
            assert!(cache.len() <= 4, "bounded ({})", cache.len());
        }
        assert_ne!(token_hash("x"), token_hash("y"));
        let keys = TokenKeys::default();
        assert_eq!(keys.key("t"), keys.key("t"));
        assert_ne!(keys.key("t"), keys.key("u"));
        assert_ne!(
            keys.key("t"),
            TokenKeys::default().key("t"),
            "keys differ per VM"
        );
    }
}
