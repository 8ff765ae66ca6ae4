//! Signed JWTs from the OP (ID tokens, access tokens): the steps every such token goes
//! through before its own claim rules: algorithm allow-list, key from the JWKS, signature,
//! and the time claims.

use jwt_simple::prelude::*;
use jwt_simple::JWTError;
use serde::de::DeserializeOwned;

use crate::config::SignatureAlg;
use crate::jwks::{Jwk, JwksCache, KeyLookup, KeyMaterial, KeyMiss};

/// Why a token failed before its claims were looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SignatureProblem {
    Malformed,
    /// `none`, an HS* algorithm, or one not on the allow-list (the name as the token gave it).
    AlgorithmNotAllowed(String),
    /// The key is not loaded, and fetching the JWKS again is allowed now.
    NeedKeys,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
}

/// How a token is checked.
pub(crate) struct SignatureCheck<'a> {
    pub algorithms: &'a [SignatureAlg],
    pub now: u64,
    pub clock_skew_s: u64,
    pub max_token_length: usize,
    pub jwks_max_age_s: u64,
    pub jwks_min_refetch_s: u64,
}

/// A token's `alg` as a log line may show it: the name a client or OP wrote, reduced to what
/// an algorithm name can hold.
pub(crate) fn alg_for_log(alg: &str) -> String {
    alg.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(16)
        .collect()
}

/// Verifies `token` against the cached keys and returns its claims.
pub(crate) fn verify_signed<T: Serialize + DeserializeOwned>(
    token: &str,
    jwks: &JwksCache,
    check: &SignatureCheck<'_>,
) -> Result<JWTClaims<T>, SignatureProblem> {
    let meta = Token::decode_metadata(token).map_err(|_| SignatureProblem::Malformed)?;
    let alg = SignatureAlg::from_name(meta.algorithm())
        .filter(|a| check.algorithms.contains(a))
        .ok_or_else(|| SignatureProblem::AlgorithmNotAllowed(meta.algorithm().to_string()))?;
    let key = match jwks.lookup(
        meta.key_id(),
        alg,
        check.now,
        check.jwks_max_age_s,
        check.jwks_min_refetch_s,
    ) {
        KeyLookup::Found(k) => k,
        KeyLookup::Refetch => return Err(SignatureProblem::NeedKeys),
        KeyLookup::Unknown(_) => return Err(SignatureProblem::UnknownKey),
    };
    let options = VerificationOptions {
        time_tolerance: Some(Duration::from_secs(check.clock_skew_s)),
        artificial_time: Some(UnixTimeStamp::from_secs(check.now)),
        max_token_length: Some(check.max_token_length),
        ..Default::default()
    };
    verify_with(key, alg, token, options).map_err(|e| match e.downcast_ref::<JWTError>() {
        Some(JWTError::TokenHasExpired) => SignatureProblem::Expired,
        Some(JWTError::ClockDrift) | Some(JWTError::TokenNotValidYet) => {
            SignatureProblem::NotYetValid
        }
        Some(JWTError::InvalidSignature) => SignatureProblem::BadSignature,
        _ => SignatureProblem::Malformed,
    })
}

/// The `kid` of a token refused for its key, and why no key was found, for the log: the
/// operator must tell a throttled refetch from a token that names no key at all.
/// `just_fetched`: the JWKS was fetched for this very token and still lacks its key.
pub(crate) fn key_miss(
    token: &str,
    jwks: &JwksCache,
    now: u64,
    max_age_s: u64,
    min_refetch_s: u64,
    just_fetched: bool,
) -> String {
    let Ok(meta) = Token::decode_metadata(token) else {
        return "unreadable header".into();
    };
    let kid = match meta.key_id() {
        Some(kid) => {
            let kid: String = kid
                .chars()
                .filter(|c| c.is_ascii_graphic() && *c != '"')
                .take(64)
                .collect();
            format!("kid \"{kid}\"")
        }
        None => "no kid".into(),
    };
    let Some(alg) = SignatureAlg::from_name(meta.algorithm()) else {
        return format!("{kid}: algorithm not supported");
    };
    let why = match jwks.lookup(meta.key_id(), alg, now, max_age_s, min_refetch_s) {
        KeyLookup::Unknown(KeyMiss::Ambiguous) => KeyMiss::Ambiguous.describe(),
        _ if just_fetched => "not in the JWKS just fetched".into(),
        KeyLookup::Unknown(miss) => miss.describe(),
        KeyLookup::Refetch => "refetch due".into(),
        KeyLookup::Found(_) => "key found".into(),
    };
    format!("{kid}: {why}")
}

/// Verifies `token`'s signature with `key` for `alg`, and its time claims per `options`.
fn verify_with<T: Serialize + DeserializeOwned>(
    key: &Jwk,
    alg: SignatureAlg,
    token: &str,
    options: VerificationOptions,
) -> Result<JWTClaims<T>, jwt_simple::Error> {
    use SignatureAlg::*;
    let opts = Some(options);
    match (&key.material, alg) {
        (KeyMaterial::Rsa { n, e }, Rs256) => {
            RS256PublicKey::from_components(n, e)?.verify_token(token, opts)
        }
        (KeyMaterial::Rsa { n, e }, Rs384) => {
            RS384PublicKey::from_components(n, e)?.verify_token(token, opts)
        }
        (KeyMaterial::Rsa { n, e }, Rs512) => {
            RS512PublicKey::from_components(n, e)?.verify_token(token, opts)
        }
        (KeyMaterial::Rsa { n, e }, Ps256) => {
            PS256PublicKey::from_components(n, e)?.verify_token(token, opts)
        }
        (KeyMaterial::P256(p), Es256) => ES256PublicKey::from_bytes(p)?.verify_token(token, opts),
        (KeyMaterial::P384(p), Es384) => ES384PublicKey::from_bytes(p)?.verify_token(token, opts),
        _ => Err(JWTError::AlgorithmMismatch.into()),
    }
}
