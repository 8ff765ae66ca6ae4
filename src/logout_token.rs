//! Logout token validation (OpenID Connect Back-Channel Logout 1.0, §2.4 and §2.6).
//!
//! A logout token is a signed JWT the OP POSTs to end sessions. It shares the OP's keys with
//! ID tokens, so the rules that tell the two apart matter as much as the signature: the
//! `events` claim, no `nonce`, and the `typ` header when the OP sets it.

use std::fmt;

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

use crate::config::SignatureAlg;
use crate::jwks::JwksCache;
use crate::jws::{alg_for_log, verify_signed, SignatureCheck, SignatureProblem};

/// The event member every logout token carries (§2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Longest `sid`, `sub` or `jti` accepted: they become keys of the shared revocation list and
/// the replay set, whose size is bounded. Core §2 caps `sub` at 255 ASCII characters.
pub const MAX_CLAIM_LEN: usize = 1024;

/// Logout tokens are a few hundred bytes; anything far larger is not one.
const MAX_TOKEN_LENGTH: usize = 16 * 1024;

/// What a logout token must say to be accepted.
pub struct LogoutExpected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub now: u64,
    pub clock_skew_s: u64,
    pub algorithms: &'a [SignatureAlg],
    /// Tokens issued longer ago than this are refused (skew included: e.g. 120 + skew). Bounds
    /// how long a captured token can be replayed and how long its `jti` must be remembered.
    pub max_age_s: u64,
}

/// Why a logout token was refused. All are final (the OP gets a 400), except `NeedKeys`:
/// fetch the JWKS once and validate again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogoutTokenError {
    Malformed,
    /// `none`, an HS* algorithm, or one not on the allow-list (the name as the token gave it).
    AlgorithmNotAllowed(String),
    NeedKeys,
    UnknownKey,
    BadSignature,
    /// A `typ` header other than `logout+jwt`: another kind of token (e.g. an ID token).
    WrongType,
    Expired,
    IssuedInFuture,
    /// `iat` older than `max_age_s`.
    TooOld,
    MissingClaim(&'static str),
    /// The claim is there but of the wrong type, empty or too long.
    InvalidClaim(&'static str),
    WrongIssuer,
    WrongAudience,
    /// A `nonce` claim: forbidden in logout tokens, so an ID token cannot pass for one.
    NoncePresent,
    /// Neither `sid` nor `sub`: nothing says which sessions to end.
    NoSubjectOrSession,
}

impl fmt::Display for LogoutTokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed => f.write_str("malformed logout token"),
            Self::AlgorithmNotAllowed(a) => {
                write!(
                    f,
                    "logout token algorithm `{}` is not allowed",
                    alg_for_log(a)
                )
            }
            Self::NeedKeys => f.write_str("logout token key not loaded yet"),
            Self::UnknownKey => f.write_str("logout token signed with an unknown key"),
            Self::BadSignature => f.write_str("logout token signature does not verify"),
            Self::WrongType => f.write_str("token typ is not logout+jwt"),
            Self::Expired => f.write_str("logout token expired"),
            Self::IssuedInFuture => f.write_str("logout token issued in the future"),
            Self::TooOld => f.write_str("logout token issued too long ago"),
            Self::MissingClaim(c) => write!(f, "logout token has no `{c}` claim"),
            Self::InvalidClaim(c) => write!(f, "logout token `{c}` claim is invalid"),
            Self::WrongIssuer => f.write_str("logout token from another issuer"),
            Self::WrongAudience => f.write_str("logout token not issued for this client"),
            Self::NoncePresent => f.write_str("logout token carries a nonce"),
            Self::NoSubjectOrSession => f.write_str("logout token has neither `sid` nor `sub`"),
        }
    }
}

/// A validated logout token: whom to log out, and what the replay check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// The OP's session id (the ID token's `sid`).
    pub sid: Option<String>,
    pub sub: Option<String>,
    pub iat: u64,
    pub jti: String,
    pub exp: Option<u64>,
}

/// Validates `token` against the cached keys: header type, signature, then every claim rule.
pub fn validate(
    token: &str,
    jwks: &JwksCache,
    jwks_max_age_s: u64,
    jwks_min_refetch_s: u64,
    expected: &LogoutExpected<'_>,
) -> Result<LogoutToken, LogoutTokenError> {
    // The header first: a token of another type is refused without a signature check.
    let meta = Token::decode_metadata(token).map_err(|_| LogoutTokenError::Malformed)?;
    if !typ_allowed(meta.signature_type()) {
        return Err(LogoutTokenError::WrongType);
    }
    let check = SignatureCheck {
        algorithms: expected.algorithms,
        now: expected.now,
        clock_skew_s: expected.clock_skew_s,
        max_token_length: MAX_TOKEN_LENGTH,
        jwks_max_age_s,
        jwks_min_refetch_s,
    };
    // A plain map for the custom claims, as ID and access tokens use: one verifier
    // instantiation per algorithm keeps the .wasm smaller.
    let mut claims: JWTClaims<Map<String, Value>> =
        verify_signed(token, jwks, &check).map_err(|p| match p {
            SignatureProblem::Malformed => LogoutTokenError::Malformed,
            SignatureProblem::AlgorithmNotAllowed(a) => LogoutTokenError::AlgorithmNotAllowed(a),
            SignatureProblem::NeedKeys => LogoutTokenError::NeedKeys,
            SignatureProblem::UnknownKey => LogoutTokenError::UnknownKey,
            SignatureProblem::BadSignature => LogoutTokenError::BadSignature,
            SignatureProblem::Expired => LogoutTokenError::Expired,
            SignatureProblem::NotYetValid => LogoutTokenError::IssuedInFuture,
        })?;

    match claims.issuer.as_deref() {
        None => return Err(LogoutTokenError::MissingClaim("iss")),
        Some(iss) if iss != expected.issuer => return Err(LogoutTokenError::WrongIssuer),
        Some(_) => {}
    }
    let for_us = match &claims.audiences {
        None => return Err(LogoutTokenError::MissingClaim("aud")),
        Some(Audiences::AsString(a)) => a == expected.client_id,
        Some(Audiences::AsSet(set)) => set.contains(expected.client_id),
    };
    if !for_us {
        return Err(LogoutTokenError::WrongAudience);
    }
    let iat = claims
        .issued_at
        .ok_or(LogoutTokenError::MissingClaim("iat"))?
        .as_secs();
    // The verifier already refused an iat beyond the skew and an exp in the past.
    if expected.now.saturating_sub(iat) > expected.max_age_s {
        return Err(LogoutTokenError::TooOld);
    }
    let jti = bounded(claims.jwt_id.take(), "jti")?.ok_or(LogoutTokenError::MissingClaim("jti"))?;
    check_events(claims.custom.get("events"))?;
    if claims.nonce.is_some() {
        return Err(LogoutTokenError::NoncePresent);
    }
    let sid = match claims.custom.remove("sid") {
        None => None,
        Some(Value::String(s)) => bounded(Some(s), "sid")?,
        Some(_) => return Err(LogoutTokenError::InvalidClaim("sid")),
    };
    let sub = bounded(claims.subject.take(), "sub")?;
    if sid.is_none() && sub.is_none() {
        return Err(LogoutTokenError::NoSubjectOrSession);
    }
    Ok(LogoutToken {
        sid,
        sub,
        iat,
        jti,
        exp: claims.expires_at.map(|e| e.as_secs()),
    })
}

/// §2.4: `typ`, when present, is `logout+jwt` (media types compare case-insensitively, and
/// the `application/` prefix may be spelled out, RFC 7515 §4.1.9). A token without `typ` is
/// accepted: explicit typing is only recommended, and the `events` and `nonce` rules below
/// keep ID tokens out anyway (§4.1).
fn typ_allowed(typ: Option<&str>) -> bool {
    let Some(typ) = typ else {
        return true;
    };
    let lower = typ.to_ascii_lowercase();
    let bare = lower.strip_prefix("application/").unwrap_or(&lower);
    bare == "logout+jwt"
}

/// `events` is an object holding the back-channel logout event, itself an object (§2.4).
fn check_events(events: Option<&Value>) -> Result<(), LogoutTokenError> {
    let events = events.ok_or(LogoutTokenError::MissingClaim("events"))?;
    let event = events
        .as_object()
        .ok_or(LogoutTokenError::InvalidClaim("events"))?
        .get(BACKCHANNEL_LOGOUT_EVENT)
        .ok_or(LogoutTokenError::InvalidClaim("events"))?;
    if !event.is_object() {
        return Err(LogoutTokenError::InvalidClaim("events"));
    }
    Ok(())
}

/// A string claim that, when present, is non-empty and at most `MAX_CLAIM_LEN` bytes.
fn bounded(value: Option<String>, name: &'static str) -> Result<Option<String>, LogoutTokenError> {
    match value {
        Some(v) if v.is_empty() || v.len() > MAX_CLAIM_LEN => {
            Err(LogoutTokenError::InvalidClaim(name))
        }
        v => Ok(v),
    }
}

#[cfg(test)]
mod tests;
