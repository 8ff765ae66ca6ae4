//! ID token validation (OpenID Connect Core §3.1.3.7).

use std::fmt;

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

use crate::config::SignatureAlg;
use crate::jwks::JwksCache;
use crate::jws::{alg_for_log, verify_signed, SignatureCheck, SignatureProblem};

/// What the ID token must say for this login.
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: u64,
    pub clock_skew_s: u64,
    pub algorithms: &'a [SignatureAlg],
}

/// Why an ID token was refused. Every variant is a login failure (or, for a refreshed token,
/// the session's end), except `NeedKeys`, which asks for the JWKS to be fetched (again) first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdTokenError {
    Malformed,
    /// `none`, an HS* algorithm, or one not on the allow-list.
    AlgorithmNotAllowed(String),
    NeedKeys,
    UnknownKey,
    BadSignature,
    Expired,
    IssuedInFuture,
    MissingClaim(&'static str),
    WrongIssuer,
    WrongAudience,
    WrongAuthorizedParty,
    NonceMismatch,
    /// A refreshed ID token names another subject than the session's.
    SubjectChanged,
    /// A refreshed ID token's `auth_time` is not the original authentication's.
    AuthTimeChanged,
}

impl fmt::Display for IdTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed ID token"),
            Self::AlgorithmNotAllowed(a) => {
                write!(f, "ID token algorithm `{}` is not allowed", alg_for_log(a))
            }
            Self::NeedKeys => f.write_str("ID token key not loaded yet"),
            Self::UnknownKey => f.write_str("ID token signed with an unknown key"),
            Self::BadSignature => f.write_str("ID token signature does not verify"),
            Self::Expired => f.write_str("ID token expired"),
            Self::IssuedInFuture => f.write_str("ID token issued in the future"),
            Self::MissingClaim(c) => write!(f, "ID token has no `{c}` claim"),
            Self::WrongIssuer => f.write_str("ID token from another issuer"),
            Self::WrongAudience => f.write_str("ID token not issued for this client"),
            Self::WrongAuthorizedParty => f.write_str("ID token azp is not this client"),
            Self::NonceMismatch => f.write_str("ID token nonce does not match the login"),
            Self::SubjectChanged => f.write_str("refreshed ID token names another subject"),
            Self::AuthTimeChanged => {
                f.write_str("refreshed ID token auth_time is not the original authentication's")
            }
        }
    }
}

/// A validated ID token's content.
#[derive(Debug, Clone, PartialEq)]
pub struct IdToken {
    pub sub: String,
    pub auth_time: Option<u64>,
    pub expires_at: u64,
    /// Every other claim, for the gateway to copy what it was told to.
    pub claims: Map<String, Value>,
}

/// What an ID token refreshed for an existing session must say (OpenID Core §12.2).
pub struct RefreshExpected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    /// The session's subject.
    pub sub: &'a str,
    /// The `auth_time` of the session's original ID token; `None` when that token had none
    /// (not the login time the gateway recorded instead: that would refuse a good token).
    pub auth_time: Option<u64>,
    pub now: u64,
    pub clock_skew_s: u64,
    pub algorithms: &'a [SignatureAlg],
}

/// The rules every ID token from this OP to this client meets, at login or after a refresh.
struct Common<'a> {
    issuer: &'a str,
    client_id: &'a str,
    now: u64,
    clock_skew_s: u64,
    algorithms: &'a [SignatureAlg],
}

/// Validates `token` against the cached keys. Signature first, then every claim rule.
pub fn validate(
    token: &str,
    jwks: &JwksCache,
    jwks_max_age_s: u64,
    jwks_min_refetch_s: u64,
    expected: &Expected<'_>,
) -> Result<IdToken, IdTokenError> {
    let common = Common {
        issuer: expected.issuer,
        client_id: expected.client_id,
        now: expected.now,
        clock_skew_s: expected.clock_skew_s,
        algorithms: expected.algorithms,
    };
    let (token, nonce) = validate_common(token, jwks, jwks_max_age_s, jwks_min_refetch_s, &common)?;
    match nonce.as_deref() {
        None => Err(IdTokenError::MissingClaim("nonce")),
        Some(n) if n != expected.nonce => Err(IdTokenError::NonceMismatch),
        _ => Ok(token),
    }
}

/// Validates an ID token from a refresh-token grant (OpenID Core §12.2): the rules of a login
/// token, except that `nonce` is not required (when present it is the login's, which the
/// session does not keep, so it is not compared), and the subject and the original
/// authentication time must be the session's.
pub fn validate_refreshed(
    token: &str,
    jwks: &JwksCache,
    jwks_max_age_s: u64,
    jwks_min_refetch_s: u64,
    expected: &RefreshExpected<'_>,
) -> Result<IdToken, IdTokenError> {
    let common = Common {
        issuer: expected.issuer,
        client_id: expected.client_id,
        now: expected.now,
        clock_skew_s: expected.clock_skew_s,
        algorithms: expected.algorithms,
    };
    let (token, _nonce) =
        validate_common(token, jwks, jwks_max_age_s, jwks_min_refetch_s, &common)?;
    if token.sub != expected.sub {
        return Err(IdTokenError::SubjectChanged);
    }
    // "If present, its value MUST represent the time of the original authentication": only
    // comparable when both tokens carry it.
    if let (Some(new), Some(original)) = (token.auth_time, expected.auth_time) {
        if new != original {
            return Err(IdTokenError::AuthTimeChanged);
        }
    }
    Ok(token)
}

/// Signature, `iss`, `sub`, `aud`/`azp`, `exp`, `iat` (Core §3.1.3.7 steps 2–10 without the
/// nonce), and the token's content with the nonce, if any, apart.
fn validate_common(
    token: &str,
    jwks: &JwksCache,
    jwks_max_age_s: u64,
    jwks_min_refetch_s: u64,
    expected: &Common<'_>,
) -> Result<(IdToken, Option<String>), IdTokenError> {
    let check = SignatureCheck {
        algorithms: expected.algorithms,
        now: expected.now,
        clock_skew_s: expected.clock_skew_s,
        max_token_length: 64 * 1024,
        jwks_max_age_s,
        jwks_min_refetch_s,
    };
    // Custom claims as a plain map, the type access tokens use too: one instantiation of the
    // verifier per algorithm instead of two keeps the .wasm smaller.
    let mut claims: JWTClaims<Map<String, Value>> =
        verify_signed(token, jwks, &check).map_err(|p| match p {
            SignatureProblem::Malformed => IdTokenError::Malformed,
            SignatureProblem::AlgorithmNotAllowed(a) => IdTokenError::AlgorithmNotAllowed(a),
            SignatureProblem::NeedKeys => IdTokenError::NeedKeys,
            SignatureProblem::UnknownKey => IdTokenError::UnknownKey,
            SignatureProblem::BadSignature => IdTokenError::BadSignature,
            SignatureProblem::Expired => IdTokenError::Expired,
            SignatureProblem::NotYetValid => IdTokenError::IssuedInFuture,
        })?;

    if claims.issuer.as_deref() != Some(expected.issuer) {
        return Err(match claims.issuer {
            None => IdTokenError::MissingClaim("iss"),
            Some(_) => IdTokenError::WrongIssuer,
        });
    }
    let sub = claims
        .subject
        .filter(|s| !s.is_empty())
        .ok_or(IdTokenError::MissingClaim("sub"))?;
    let audiences: Vec<String> = match claims.audiences {
        None => return Err(IdTokenError::MissingClaim("aud")),
        Some(Audiences::AsString(a)) => vec![a],
        Some(Audiences::AsSet(set)) => set.into_iter().collect(),
    };
    if !audiences.iter().any(|a| a == expected.client_id) {
        return Err(IdTokenError::WrongAudience);
    }
    // Core §3.1.3.7 (4)–(5): with several audiences azp must name us; if present, it must anyway.
    let azp = match claims.custom.remove("azp") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(IdTokenError::WrongAuthorizedParty),
    };
    let auth_time = match claims.custom.remove("auth_time") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or(IdTokenError::Malformed)?),
    };
    match azp.as_deref() {
        Some(azp) if azp != expected.client_id => return Err(IdTokenError::WrongAuthorizedParty),
        None if audiences.len() > 1 => return Err(IdTokenError::WrongAuthorizedParty),
        _ => {}
    }
    let expires_at = claims
        .expires_at
        .ok_or(IdTokenError::MissingClaim("exp"))?
        .as_secs();
    claims.issued_at.ok_or(IdTokenError::MissingClaim("iat"))?;
    let token = IdToken {
        sub,
        auth_time,
        expires_at,
        claims: claims.custom,
    };
    Ok((token, claims.nonce))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::jwks::{Jwk, KeyMaterial};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    pub const NOW: u64 = 1_800_000_000;
    const ISS: &str = "https://op.example.com";
    const NONCE: &str = "n-0S6_WzA2Mj";
    const ALGS: &[SignatureAlg] = &[SignatureAlg::Rs256, SignatureAlg::Es256];

    pub struct TestOp {
        pub es: ES256KeyPair,
        pub jwks: JwksCache,
    }

    impl TestOp {
        pub fn new() -> Self {
            let es = ES256KeyPair::generate().with_key_id("ec1");
            let jwk = Jwk {
                kid: Some("ec1".into()),
                alg: Some("ES256".into()),
                material: KeyMaterial::P256(es.public_key().public_key().to_bytes_uncompressed()),
            };
            let mut jwks = JwksCache::default();
            jwks.replace(vec![jwk], NOW);
            Self { es, jwks }
        }

        pub fn sign(&self, claims: Value) -> String {
            let claims: JWTClaims<Map<String, Value>> = serde_json::from_value(claims).unwrap();
            self.es.sign(claims).unwrap()
        }
    }

    pub fn good_claims(nonce: &str) -> Value {
        serde_json::json!({
            "iss": ISS, "sub": "alice", "aud": "pa_wam", "exp": NOW + 300, "iat": NOW,
            "nonce": nonce, "email": "alice@example.com", "groups": ["staff", "admins"], "auth_time": NOW - 5
        })
    }

    fn expected(now: u64) -> Expected<'static> {
        Expected {
            issuer: ISS,
            client_id: "pa_wam",
            nonce: NONCE,
            now,
            clock_skew_s: 60,
            algorithms: ALGS,
        }
    }

    fn check(op: &TestOp, token: &str) -> Result<IdToken, IdTokenError> {
        validate(token, &op.jwks, 3600, 30, &expected(NOW))
    }

    fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
        let mut c = good_claims(NONCE);
        f(c.as_object_mut().unwrap());
        c
    }

    #[test]
    fn accepts_a_good_token() {
        let op = TestOp::new();
        let t = check(&op, &op.sign(good_claims(NONCE))).unwrap();
        assert_eq!(t.sub, "alice");
        assert_eq!(t.auth_time, Some(NOW - 5));
        assert_eq!(t.claims["email"], "alice@example.com");
        assert_eq!(t.claims["groups"], serde_json::json!(["staff", "admins"]));
    }

    #[test]
    fn refuses_each_bad_claim() {
        let op = TestOp::new();
        let cases: Vec<(Value, IdTokenError)> = vec![
            (
                with(|c| drop(c.insert("iss".into(), "https://evil".into()))),
                IdTokenError::WrongIssuer,
            ),
            (
                with(|c| drop(c.remove("iss"))),
                IdTokenError::MissingClaim("iss"),
            ),
            (
                with(|c| drop(c.insert("aud".into(), "other".into()))),
                IdTokenError::WrongAudience,
            ),
            (
                with(|c| drop(c.remove("aud"))),
                IdTokenError::MissingClaim("aud"),
            ),
            (
                with(|c| drop(c.insert("aud".into(), serde_json::json!(["pa_wam", "other"])))),
                IdTokenError::WrongAuthorizedParty,
            ),
            (
                with(|c| drop(c.insert("azp".into(), "other".into()))),
                IdTokenError::WrongAuthorizedParty,
            ),
            (
                with(|c| drop(c.remove("sub"))),
                IdTokenError::MissingClaim("sub"),
            ),
            (
                with(|c| drop(c.remove("iat"))),
                IdTokenError::MissingClaim("iat"),
            ),
            (
                with(|c| drop(c.remove("exp"))),
                IdTokenError::MissingClaim("exp"),
            ),
            (
                with(|c| drop(c.insert("exp".into(), (NOW - 61).into()))),
                IdTokenError::Expired,
            ),
            (
                with(|c| drop(c.insert("iat".into(), (NOW + 120).into()))),
                IdTokenError::IssuedInFuture,
            ),
            (
                with(|c| drop(c.insert("nonce".into(), "replayed".into()))),
                IdTokenError::NonceMismatch,
            ),
            (
                with(|c| drop(c.remove("nonce"))),
                IdTokenError::MissingClaim("nonce"),
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(check(&op, &op.sign(claims.clone())), Err(want), "{claims}");
        }
        // Several audiences with azp naming us is fine; skew tolerates a slightly expired token.
        let ok = with(|c| {
            c.insert("aud".into(), serde_json::json!(["pa_wam", "other"]));
            c.insert("azp".into(), "pa_wam".into());
            c.insert("exp".into(), (NOW - 30).into());
        });
        assert!(check(&op, &op.sign(ok)).is_ok());
    }

    #[test]
    fn refuses_bad_signatures_and_algorithms() {
        let op = TestOp::new();
        let token = op.sign(good_claims(NONCE));
        let (head_payload, _) = token.rsplit_once('.').unwrap();

        // Another key with the same kid.
        let impostor = ES256KeyPair::generate().with_key_id("ec1");
        let claims: JWTClaims<Map<String, Value>> =
            serde_json::from_value(good_claims(NONCE)).unwrap();
        assert_eq!(
            check(&op, &impostor.sign(claims.clone()).unwrap()),
            Err(IdTokenError::BadSignature)
        );

        // Payload swapped under a valid signature.
        let other = op.sign(with(|c| drop(c.insert("sub".into(), "mallory".into()))));
        let forged = format!(
            "{}.{}.{}",
            head_payload.split('.').next().unwrap(),
            other.split('.').nth(1).unwrap(),
            token.rsplit('.').next().unwrap()
        );
        assert_eq!(check(&op, &forged), Err(IdTokenError::BadSignature));

        // Unknown kid: first ask for keys, then (refetch throttled) refuse.
        let stranger = ES256KeyPair::generate().with_key_id("ec9");
        let t = stranger.sign(claims.clone()).unwrap();
        assert_eq!(check(&op, &t), Err(IdTokenError::NeedKeys));
        let mut op2 = TestOp::new();
        op2.jwks.attempted(NOW, 3600);
        assert_eq!(
            validate(&t, &op2.jwks, 3600, 30, &expected(NOW)),
            Err(IdTokenError::UnknownKey)
        );

        // alg none and HS256 (signed with anything, e.g. the client secret).
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let payload = enc(good_claims(NONCE));
        let none = format!(
            "{}.{}.",
            enc(serde_json::json!({"alg": "none", "kid": "ec1"})),
            payload
        );
        assert_eq!(
            check(&op, &none),
            Err(IdTokenError::AlgorithmNotAllowed("none".into()))
        );
        let hs = HS256Key::from_bytes(b"s3cret-s3cret-s3cret-s3cret-0123").with_key_id("ec1");
        let hs_token = hs.authenticate(claims.clone()).unwrap();
        assert_eq!(
            check(&op, &hs_token),
            Err(IdTokenError::AlgorithmNotAllowed("HS256".into()))
        );

        // ES256 not on the allow-list.
        let only_rs = Expected {
            algorithms: &[SignatureAlg::Rs256],
            ..expected(NOW)
        };
        assert!(matches!(
            validate(&token, &op.jwks, 3600, 30, &only_rs),
            Err(IdTokenError::AlgorithmNotAllowed(_))
        ));

        for junk in [
            "",
            "a",
            "a.b",
            "a.b.c",
            "....",
            "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
        ] {
            assert!(check(&op, junk).is_err(), "{junk}");
        }
    }

    #[test]
    fn rs256_tokens_verify_against_rsa_jwks() {
        let rsa = RS256KeyPair::generate(2048).unwrap().with_key_id("rsa1");
        let comps = rsa.public_key().to_components();
        let mut jwks = JwksCache::default();
        jwks.replace(
            vec![Jwk {
                kid: Some("rsa1".into()),
                alg: None,
                material: KeyMaterial::Rsa {
                    n: comps.n,
                    e: comps.e,
                },
            }],
            NOW,
        );
        let claims: JWTClaims<Map<String, Value>> =
            serde_json::from_value(good_claims(NONCE)).unwrap();
        let token = rsa.sign(claims).unwrap();
        assert_eq!(
            validate(&token, &jwks, 3600, 30, &expected(NOW))
                .unwrap()
                .sub,
            "alice"
        );
        let err = validate(
            &token,
            &jwks,
            3600,
            30,
            &Expected {
                algorithms: &[SignatureAlg::Es256],
                ..expected(NOW)
            },
        );
        assert!(matches!(err, Err(IdTokenError::AlgorithmNotAllowed(_))));
    }

    fn refreshed(now: u64, auth_time: Option<u64>) -> RefreshExpected<'static> {
        RefreshExpected {
            issuer: ISS,
            client_id: "pa_wam",
            sub: "alice",
            auth_time,
            now,
            clock_skew_s: 60,
            algorithms: ALGS,
        }
    }

    fn check_refreshed(
        op: &TestOp,
        claims: Value,
        auth_time: Option<u64>,
    ) -> Result<IdToken, IdTokenError> {
        validate_refreshed(
            &op.sign(claims),
            &op.jwks,
            3600,
            30,
            &refreshed(NOW, auth_time),
        )
    }

    #[test]
    fn accepts_a_refreshed_token_with_or_without_a_nonce() {
        let op = TestOp::new();
        let t = check_refreshed(&op, good_claims(NONCE), Some(NOW - 5)).unwrap();
        assert_eq!((t.sub.as_str(), t.auth_time), ("alice", Some(NOW - 5)));
        assert!(!t.claims.contains_key("nonce"));
        let no_nonce = with(|c| drop(c.remove("nonce")));
        assert!(check_refreshed(&op, no_nonce, Some(NOW - 5)).is_ok());
        // A nonce other than the login's is not compared: the session does not keep it.
        let other_nonce = with(|c| drop(c.insert("nonce".into(), "other".into())));
        assert!(check_refreshed(&op, other_nonce, Some(NOW - 5)).is_ok());
        // auth_time is compared only when both are known.
        assert!(check_refreshed(&op, good_claims(NONCE), None).is_ok());
        let no_auth_time = with(|c| drop(c.remove("auth_time")));
        assert!(check_refreshed(&op, no_auth_time, Some(NOW - 5)).is_ok());
    }

    #[test]
    fn refuses_a_refreshed_token_for_another_session_or_client() {
        let op = TestOp::new();
        let at = Some(NOW - 5);
        let cases: Vec<(Value, IdTokenError)> = vec![
            (
                with(|c| drop(c.insert("sub".into(), "mallory".into()))),
                IdTokenError::SubjectChanged,
            ),
            (
                with(|c| drop(c.remove("sub"))),
                IdTokenError::MissingClaim("sub"),
            ),
            (
                with(|c| drop(c.insert("iss".into(), "https://op.example.com/".into()))),
                IdTokenError::WrongIssuer,
            ),
            (
                with(|c| drop(c.insert("auth_time".into(), NOW.into()))),
                IdTokenError::AuthTimeChanged,
            ),
            (
                with(|c| drop(c.insert("auth_time".into(), "yesterday".into()))),
                IdTokenError::Malformed,
            ),
            (
                with(|c| drop(c.insert("aud".into(), "other".into()))),
                IdTokenError::WrongAudience,
            ),
            (
                with(|c| drop(c.insert("aud".into(), serde_json::json!(["pa_wam", "other"])))),
                IdTokenError::WrongAuthorizedParty,
            ),
            (
                with(|c| drop(c.remove("iat"))),
                IdTokenError::MissingClaim("iat"),
            ),
            (
                with(|c| drop(c.insert("exp".into(), (NOW - 61).into()))),
                IdTokenError::Expired,
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(
                check_refreshed(&op, claims.clone(), at),
                Err(want),
                "{claims}"
            );
        }
        // A signature by another key is refused as at login.
        let impostor = ES256KeyPair::generate().with_key_id("ec1");
        let claims: JWTClaims<Map<String, Value>> =
            serde_json::from_value(good_claims(NONCE)).unwrap();
        assert_eq!(
            validate_refreshed(
                &impostor.sign(claims).unwrap(),
                &op.jwks,
                3600,
                30,
                &refreshed(NOW, at)
            ),
            Err(IdTokenError::BadSignature)
        );
    }

    #[test]
    fn error_text_carries_no_token_content() {
        let e = IdTokenError::AlgorithmNotAllowed("<script>alert(1)</script>".into());
        assert!(!e.to_string().contains('<'));
    }
}
