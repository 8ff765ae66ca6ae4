//! The `session` section: the cookie, its keys, its lifetimes, and how it stays tied to the
//! OP's session.

use base64::Engine;

use super::raw::{RawCookieType, RawSession};
use super::{is_cookie_name, ConfigError};
use crate::session::chunks::MAX_CHUNKS;
use crate::session::{CookieType, KeyRing};

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub cookie_name: String,
    pub cookie_secure: bool,
    pub cookie_domain: Option<String>,
    pub max_lifetime_s: u64,
    pub idle_timeout_s: u64,
    pub activity_refresh_s: u64,
    pub keys: KeyRing,
    /// ID-token claims copied into the session (besides `sub`): the configured ones plus every
    /// claim an identity header reads.
    pub claims: Vec<String>,
    /// Most cookies a session may be split into.
    pub max_cookie_chunks: usize,
    /// Revalidate at the OP once this long has passed since the last validation; 0: never.
    pub validate_interval_s: u64,
    /// How long past a due validation a session keeps working while the OP cannot be asked.
    pub validation_grace_s: u64,
    pub keep_access_token: bool,
    /// `Authorization: Bearer <the session's access token>` upstream.
    pub forward_access_token: bool,
    /// Merge the userinfo endpoint's claims at login and at validation.
    pub userinfo: bool,
    /// Form posts up to this size are kept through a sign-in; 0: none.
    pub preserve_post_bytes: usize,
    /// Entries of the revocation list (logouts) each worker keeps.
    pub revocation_list_entries: usize,
}

/// The largest form post that may be kept through a sign-in.
pub const MAX_PRESERVE_POST_BYTES: usize = 24 * 1024;

/// Reads a web session's `session` section. `scope`: the name of a web session other than the
/// default, whose keys are derived from its secrets and its name, so that its cookies open
/// under no other web session's keys, even one configured with the same secrets.
pub(super) fn read(s: RawSession, scope: Option<&str>) -> Result<SessionSettings, ConfigError> {
    if !is_cookie_name(&s.cookie_name) {
        return Err(ConfigError::new(
            "session.cookie_name",
            "must be a non-empty cookie name (letters, digits and !#$%&'*+-.^_`|~)",
        ));
    }
    if let Some(domain) = &s.cookie_domain {
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
        {
            return Err(ConfigError::new(
                "session.cookie_domain",
                "must be a DNS domain",
            ));
        }
    }
    if s.max_lifetime_s == 0 {
        return Err(ConfigError::new(
            "session.max_lifetime_s",
            "must be positive",
        ));
    }
    if s.idle_timeout_s == 0 {
        return Err(ConfigError::new(
            "session.idle_timeout_s",
            "must be positive",
        ));
    }
    if s.activity_refresh_s >= s.idle_timeout_s {
        return Err(ConfigError::new(
            "session.activity_refresh_s",
            "must be shorter than session.idle_timeout_s",
        ));
    }
    if s.signing_keys.is_empty() {
        return Err(ConfigError::new(
            "session.signing_keys",
            "needs at least one key (the first one signs; the others are still accepted)",
        ));
    }
    let mut keys = Vec::with_capacity(s.signing_keys.len());
    for (i, k) in s.signing_keys.iter().enumerate() {
        if k.kid.is_empty()
            || keys
                .iter()
                .any(|(kid, _): &(String, Vec<u8>)| kid == &k.kid)
        {
            return Err(ConfigError::new(
                format!("session.signing_keys[{i}].kid"),
                "must be non-empty and unique",
            ));
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(k.secret.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(k.secret.trim()))
            .map_err(|_| {
                ConfigError::new(
                    format!("session.signing_keys[{i}].secret"),
                    "must be base64",
                )
            })?;
        if secret.len() < 32 {
            return Err(ConfigError::new(
                format!("session.signing_keys[{i}].secret"),
                "must decode to at least 32 bytes (256 bits)",
            ));
        }
        let secret = match scope {
            None => secret,
            Some(name) => {
                let label = [b"envoy-wam web session\0".as_slice(), name.as_bytes()].concat();
                hmac_sha256::HMAC::mac(&label, &secret).to_vec()
            }
        };
        keys.push((k.kid.clone(), secret));
    }
    let cookie_type = match s.cookie_type {
        RawCookieType::Encrypted => CookieType::Encrypted,
        RawCookieType::Signed => CookieType::Signed,
    };
    if !(1..=MAX_CHUNKS).contains(&s.max_cookie_chunks) {
        return Err(ConfigError::new(
            "session.max_cookie_chunks",
            format!("must be between 1 and {MAX_CHUNKS}"),
        ));
    }
    let needs_tokens = s.validate_interval_s > 0 || s.keep_access_token || s.userinfo;
    if cookie_type == CookieType::Signed && needs_tokens {
        return Err(ConfigError::new(
            "session.cookie_type",
            "must be `encrypted` to keep the OP's tokens (validate_interval_s, \
             keep_access_token, userinfo): a signed cookie is readable by the user",
        ));
    }
    if s.forward_access_token && !s.keep_access_token {
        return Err(ConfigError::new(
            "session.forward_access_token",
            "needs session.keep_access_token: true",
        ));
    }
    // Ten cookie chunks hold about 27 KB of form once sealed and encoded: a larger setting would
    // only make Envoy buffer bodies that can never be kept.
    if s.preserve_post_bytes > MAX_PRESERVE_POST_BYTES {
        return Err(ConfigError::new(
            "session.preserve_post_bytes",
            format!("must be at most {MAX_PRESERVE_POST_BYTES} (0 turns preservation off)"),
        ));
    }
    if s.revocation_list_entries == 0 {
        return Err(ConfigError::new(
            "session.revocation_list_entries",
            "must be positive",
        ));
    }
    Ok(SessionSettings {
        keys: KeyRing::with_type(&keys, cookie_type),
        cookie_name: s.cookie_name,
        cookie_secure: s.cookie_secure,
        cookie_domain: s.cookie_domain,
        max_lifetime_s: s.max_lifetime_s,
        idle_timeout_s: s.idle_timeout_s,
        activity_refresh_s: s.activity_refresh_s,
        claims: s.claims,
        max_cookie_chunks: s.max_cookie_chunks,
        validate_interval_s: s.validate_interval_s,
        validation_grace_s: s.validation_grace_s,
        keep_access_token: s.keep_access_token,
        forward_access_token: s.forward_access_token,
        userinfo: s.userinfo,
        preserve_post_bytes: s.preserve_post_bytes,
        revocation_list_entries: s.revocation_list_entries,
    })
}
