//! Token mediation: what a site (backend) gets instead of the user's session or bearer token.
//!
//! Two kinds of site authenticator, both configured by name under `site_authenticators`:
//! - `token_exchange`: OAuth 2.0 Token Exchange (RFC 8693) at a Security Token Service; the
//!   subject token is the client's access token (bearer requests) or a short-lived JWT the
//!   gateway signs with its `authtoken` keys (web sessions);
//! - `jwt`: JWT identity mapping, a JWT the gateway signs itself with chosen session claims.
//!
//! The result goes to the site in a header (`Authorization: Bearer`, or a named header with
//! the raw token) or in a cookie. Results are cached per VM in a [`FlightCache`] keyed by
//! the subject (a session's `sub`, or the bearer token's keyed hash).
//!
//! Sans-IO: this module builds the callout and reads its answer; the host sends it.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::authtoken::AuthTokenSigner;
use crate::cache::FlightCache;
use crate::http::{form_encode, form_post_headers, Callout};

pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Longest token accepted from an STS (and injected into a request).
pub const MAX_TOKEN_LENGTH: usize = 16 * 1024;
/// Lifetime of the subject token the gateway signs for the STS on behalf of a web session.
pub const SUBJECT_TOKEN_LIFETIME_S: u64 = 60;

mod config;
pub use config::*;

// ---------------------------------------------------------------------------------------------
// The token exchange

/// The RFC 8693 token-exchange request for `site` (`None` when `site` is not a
/// `token_exchange` authenticator). `subject_token_type` is [`ACCESS_TOKEN_TYPE`] for a
/// client's bearer token, [`JWT_TOKEN_TYPE`] for a subject token the gateway signed.
pub fn exchange_request(
    site: &SiteAuthenticator,
    subject_token: &str,
    subject_token_type: &str,
) -> Option<Callout> {
    let x = site.token_exchange()?;
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
        ("requested_token_type", x.requested_token_type.as_str()),
    ];
    if let Some(a) = &x.audience {
        form.push(("audience", a));
    }
    if let Some(r) = &x.resource {
        form.push(("resource", r));
    }
    if let Some(s) = &x.scope {
        form.push(("scope", s));
    }
    let mut headers = form_post_headers();
    let sts = &x.sts;
    if let Some(h) = crate::http::client_authentication(
        sts.auth_method,
        &sts.client_id,
        &sts.client_secret,
        &mut form,
    ) {
        headers.push(h);
    }
    Some(Callout {
        cluster: sts.cluster.clone(),
        method: "POST",
        authority: sts.token_endpoint.authority.clone(),
        path: sts.token_endpoint.path.clone(),
        headers,
        body: form_encode(&form).into_bytes(),
        timeout_ms: sts.timeout_ms,
    })
}

/// A token for a site, and until when it may be used.
#[derive(Clone, PartialEq, Eq)]
pub struct MediatedToken {
    pub token: String,
    /// Absolute expiry; `u64::MAX` when the STS gave no `expires_in` (the cache's own
    /// `max_lifetime_s` then bounds it).
    pub expires_at: u64,
}

impl fmt::Debug for MediatedToken {
    /// Never the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediatedToken")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why the STS's answer gave no token. None of these holds a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// The STS refused (RFC 6749 §5.2 error answer, e.g. `invalid_grant`, `invalid_target`):
    /// its error code only, printable ASCII, at most 64 characters.
    Refused { status: u16, error: String },
    /// An answer that is neither a token nor an OAuth error (5xx, 3xx, a 4xx without one).
    Status(u16),
    /// A 200 that is not a usable token response.
    Malformed(&'static str),
}

impl ExchangeError {
    /// The status to answer the client with: the STS is unavailable (503) when it said so,
    /// otherwise it failed as an upstream (502).
    pub fn http_status(&self) -> u32 {
        match self {
            ExchangeError::Status(503) => 503,
            _ => 502,
        }
    }
}

#[derive(Deserialize)]
struct ExchangeResponse {
    access_token: Option<Value>,
    issued_token_type: Option<Value>,
    token_type: Option<Value>,
    expires_in: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// Whether `token` can go in a header or cookie as it is: visible ASCII only (no CR, LF,
/// controls, spaces or non-ASCII), 1 to [`MAX_TOKEN_LENGTH`] bytes.
pub fn is_safe_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LENGTH
        && token.bytes().all(|c| c.is_ascii_graphic())
}

/// Whether `token` is also a valid cookie value (RFC 6265 cookie-octet).
fn is_cookie_safe(token: &str) -> bool {
    is_safe_token(token)
        && !token
            .bytes()
            .any(|c| matches!(c, b'"' | b',' | b';' | b'\\'))
}

/// Reads the STS's answer to [`exchange_request`] (RFC 8693 §2.2.1 and §2.2.2).
pub fn parse_exchange_response(
    site: &SiteAuthenticator,
    status: u16,
    body: &[u8],
    now: u64,
) -> Result<MediatedToken, ExchangeError> {
    if status != 200 {
        if (400..500).contains(&status) {
            if let Ok(e) = serde_json::from_slice::<ErrorResponse>(body) {
                let error: String = e
                    .error
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect();
                if !error.is_empty() {
                    return Err(ExchangeError::Refused { status, error });
                }
            }
        }
        return Err(ExchangeError::Status(status));
    }
    let r: ExchangeResponse = serde_json::from_slice(body)
        .map_err(|_| ExchangeError::Malformed("not a JSON token response"))?;
    let token = match r.access_token {
        Some(Value::String(t)) => t,
        _ => return Err(ExchangeError::Malformed("no access_token")),
    };
    let issued_type = match r.issued_token_type {
        Some(Value::String(t)) => t,
        _ => return Err(ExchangeError::Malformed("no issued_token_type")),
    };
    if let Some(x) = site.token_exchange() {
        if issued_type != x.requested_token_type {
            return Err(ExchangeError::Malformed(
                "issued_token_type is not the requested type",
            ));
        }
    }
    let token_type = match r.token_type {
        Some(Value::String(t)) => t,
        _ => return Err(ExchangeError::Malformed("no token_type")),
    };
    let bearer = token_type.eq_ignore_ascii_case("bearer");
    // N_A: the token is not an OAuth access token (RFC 8693 §2.2.1).
    let not_applicable = token_type == "N_A" && issued_type != ACCESS_TOKEN_TYPE;
    if !bearer && !not_applicable {
        return Err(ExchangeError::Malformed("unsupported token_type"));
    }
    let expires_at = match r.expires_in {
        None | Some(Value::Null) => u64::MAX,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(s), _) => now.saturating_add(s),
            (None, Some(f)) if (0.0..1e12).contains(&f) => now.saturating_add(f as u64),
            _ => return Err(ExchangeError::Malformed("bad expires_in")),
        },
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(secs) => now.saturating_add(secs),
            Err(_) => return Err(ExchangeError::Malformed("bad expires_in")),
        },
        Some(_) => return Err(ExchangeError::Malformed("bad expires_in")),
    };
    if !is_safe_token(&token) {
        return Err(ExchangeError::Malformed(
            "the token is empty, too long, or not a safe header value",
        ));
    }
    if matches!(site.inject, Inject::Cookie(_)) && !is_cookie_safe(&token) {
        return Err(ExchangeError::Malformed(
            "the token is not a valid cookie value",
        ));
    }
    Ok(MediatedToken { token, expires_at })
}

// ---------------------------------------------------------------------------------------------
// Signed tokens: the web session's subject token, and JWT identity mapping

/// The subject token a web session presents to `site`'s STS: a JWT signed with the gateway's
/// `authtoken` key, `aud` = the STS token endpoint URL, `sub` and `claims` from the session,
/// valid for [`SUBJECT_TOKEN_LIFETIME_S`]. Send it with [`JWT_TOKEN_TYPE`]. `None` for a site
/// that is not `token_exchange` or if signing failed.
pub fn session_subject_token(
    signer: &AuthTokenSigner,
    site: &SiteAuthenticator,
    sub: &str,
    claims: &Map<String, Value>,
    now: u64,
    jti: &str,
) -> Option<String> {
    let x = site.token_exchange()?;
    let mut c = claims.clone();
    c.insert("sub".into(), Value::String(sub.to_string()));
    signer.sign(
        c,
        &x.sts.token_endpoint.url,
        now,
        SUBJECT_TOKEN_LIFETIME_S,
        jti,
    )
}

/// JWT identity mapping: the site's token signed by the gateway, with `sub` and the configured
/// claims the session has. `None` for a site that is not `jwt` or if signing failed.
pub fn identity_jwt(
    signer: &AuthTokenSigner,
    site: &SiteAuthenticator,
    sub: &str,
    claims: &Map<String, Value>,
    now: u64,
    jti: &str,
) -> Option<MediatedToken> {
    let j = site.jwt()?;
    let mut c = Map::new();
    for name in &j.claims {
        if let Some(v) = claims.get(name) {
            c.insert(name.clone(), v.clone());
        }
    }
    c.insert("sub".into(), Value::String(sub.to_string()));
    let token = signer.sign(c, &j.audience, now, j.lifetime_s, jti)?;
    if !is_safe_token(&token) {
        return None;
    }
    Some(MediatedToken {
        token,
        expires_at: now.saturating_add(j.lifetime_s),
    })
}

// ---------------------------------------------------------------------------------------------
// Sending the token to the site

/// Request header operations that give `token` to the site (set, replacing any copy the client
/// sent). Empty for the cookie variant: use [`cookie_with_token`].
pub fn inject(site: &SiteAuthenticator, token: &str) -> Vec<(String, Option<String>)> {
    match &site.inject {
        Inject::Header(name) if name == "authorization" => {
            vec![(name.clone(), Some(format!("Bearer {token}")))]
        }
        Inject::Header(name) => vec![(name.clone(), Some(token.to_string()))],
        Inject::Cookie(_) => Vec::new(),
    }
}

/// The upstream `Cookie` header with `name=token` appended; any cookie of that name the client
/// sent is dropped first. `upstream` is the header as it would otherwise go upstream (the
/// gateway's own cookies already removed), or `None` if there is none.
pub fn cookie_with_token(upstream: Option<&str>, name: &str, token: &str) -> String {
    let rest = match upstream {
        Some(c) => match crate::cookie::without(c, |n| n == name) {
            Some(kept) => kept,
            None => Some(c.trim().to_string()).filter(|c| !c.is_empty()),
        },
        None => None,
    };
    match rest {
        Some(r) => format!("{r}; {name}={token}"),
        None => format!("{name}={token}"),
    }
}

#[cfg(test)]
mod tests;
