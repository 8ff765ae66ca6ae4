//! The gateway's own web session, carried whole in a cookie: an encrypted JWE (the default)
//! or a signed JWT, split into chunks when it is large.
//!
//! The cookie carries everything the gateway needs, so any worker (and any replica sharing
//! the keys) can serve any request without a session store. Its limits are two clocks: the
//! absolute expiry (`exp`, fixed at login) and the last activity (`lat`), which slides forward
//! when the cookie is re-issued and bounds the idle time. What the cookie cannot express (a
//! logout, a copy of a cookie that was logged out) is the revocation list's job.

mod cache;
pub mod chunks;
mod jwe;
mod keys;
pub mod slot;

use jwt_simple::prelude::*;
use serde_json::{Map, Value};

pub use cache::{SessionCache, SessionEntry};
pub use keys::{CookieType, KeyRing, SealPurpose, MAX_SEALED_LEN};
pub(crate) use keys::{KeyPurpose, COOKIE_ISSUER};

use crate::login::Entropy;

/// What the session cookie holds besides the registered claims. Short names: every byte is
/// sent on every request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct SessionExtra {
    /// Session id: random, stable for the session's life; names it in logs, caches and the
    /// revocation list.
    sid: String,
    /// When the user authenticated at the OP (or at the gateway when the OP did not say).
    auth_time: u64,
    /// Last activity seen, for the idle timeout.
    lat: u64,
    /// When the gateway opened the session (back-channel logout ends sessions opened before
    /// the logout).
    #[serde(default)]
    ct: u64,
    /// Claims copied from the ID token (configured names only).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    claims: Map<String, Value>,
    #[serde(default, skip_serializing_if = "OpState::is_empty")]
    op: OpState,
}

/// What the session keeps of the OP's side: its session id and tokens (only ever in an
/// encrypted cookie), and when the OP last vouched for the session.
#[derive(Serialize, Deserialize, Clone, Default, PartialEq)]
pub struct OpState {
    /// The ID token's `sid`, which back- and front-channel logout name.
    #[serde(rename = "sid", default, skip_serializing_if = "Option::is_none")]
    pub op_sid: Option<String>,
    #[serde(rename = "rt", default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(rename = "at", default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    #[serde(rename = "ate", default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
    /// Kept only when small: it is the `id_token_hint` of RP-initiated logout.
    #[serde(rename = "it", default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// The last time the OP confirmed the session (the login counts).
    #[serde(rename = "va", default)]
    pub validated_at: u64,
    /// How many validations this session has been through: which of two copies is the newer
    /// (times are whole seconds, and one second holds many validations of a short token).
    #[serde(rename = "n", default)]
    pub generation: u32,
}

impl OpState {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

impl std::fmt::Debug for OpState {
    /// Never the tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpState")
            .field("op_sid", &self.op_sid)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("access_token", &self.access_token.as_ref().map(|_| "…"))
            .field("access_expires_at", &self.access_expires_at)
            .field("id_token", &self.id_token.as_ref().map(|_| "…"))
            .field("validated_at", &self.validated_at)
            .field("generation", &self.generation)
            .finish()
    }
}

/// Why a cookie gives no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dead {
    /// Not a session cookie of this gateway's keys (forged, altered, another key or type).
    Invalid,
    /// Past its absolute lifetime.
    Expired,
    /// Unused for longer than the idle timeout.
    Idle,
}

/// A valid session.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub sid: String,
    pub sub: String,
    pub auth_time: u64,
    pub created_at: u64,
    pub expires_at: u64,
    pub last_activity: u64,
    pub claims: Map<String, Value>,
    pub op: OpState,
}

impl Session {
    /// A claim by name; `sub` is always available.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    pub fn is_live(&self, now: u64, idle_timeout_s: u64) -> bool {
        now < self.expires_at && now < self.last_activity.saturating_add(idle_timeout_s)
    }

    /// Why a session that is not live ended: its absolute lifetime, or idleness.
    pub fn why_dead(&self, now: u64) -> Dead {
        match now >= self.expires_at {
            true => Dead::Expired,
            false => Dead::Idle,
        }
    }

    /// Seconds left before the absolute expiry (the cookie's Max-Age).
    pub fn remaining(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }

    fn wire_claims(&self) -> JWTClaims<SessionExtra> {
        JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(self.last_activity)),
            expires_at: Some(UnixTimeStamp::from_secs(self.expires_at)),
            invalid_before: None,
            issuer: Some(COOKIE_ISSUER.to_string()),
            subject: Some(self.sub.clone()),
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: SessionExtra {
                sid: self.sid.clone(),
                auth_time: self.auth_time,
                lat: self.last_activity,
                ct: self.created_at,
                claims: self.claims.clone(),
                op: self.op.clone(),
            },
        }
    }

    /// The cookie value, sealed as `keys.cookie_type` says. A signed cookie never carries the
    /// OP's tokens: the user could read them.
    pub fn encode(&self, keys: &KeyRing, rng: &mut dyn Entropy) -> Option<String> {
        let mut claims = self.wire_claims();
        match keys.cookie_type {
            CookieType::Signed => {
                let op = &mut claims.custom.op;
                op.refresh_token = None;
                op.access_token = None;
                op.access_expires_at = None;
                op.id_token = None;
                keys.sign(KeyPurpose::Session, claims)
            }
            CookieType::Encrypted => {
                let json = serde_json::to_vec(&claims).ok()?;
                keys.seal(SealPurpose::Session, &json, rng)
            }
        }
    }

    /// Decodes a cookie value. Tampered, unknown-key, expired or idle cookies give `None`, and
    /// so does a cookie of the other type: switching `cookie_type` ends every session.
    pub fn decode(token: &str, keys: &KeyRing, now: u64, idle_timeout_s: u64) -> Option<Self> {
        Self::decode_checked(token, keys, now, idle_timeout_s).ok()
    }

    /// As [`Self::decode`], with why there is no session.
    pub fn decode_checked(
        token: &str,
        keys: &KeyRing,
        now: u64,
        idle_timeout_s: u64,
    ) -> Result<Self, Dead> {
        let claims = match keys.cookie_type {
            // Verified as of time 0, which checks everything but the expiry: that is checked
            // below (`is_live`, exact), where an expired session can be told from a forged one.
            CookieType::Signed => keys
                .verify::<SessionExtra>(KeyPurpose::Session, token, 0)
                .ok_or(Dead::Invalid)?,
            CookieType::Encrypted => {
                let json = keys
                    .open(SealPurpose::Session, token)
                    .ok_or(Dead::Invalid)?;
                let claims: JWTClaims<SessionExtra> =
                    serde_json::from_slice(&json).map_err(|_| Dead::Invalid)?;
                if claims.issuer.as_deref() != Some(COOKIE_ISSUER) {
                    return Err(Dead::Invalid);
                }
                claims
            }
        };
        let session = Session {
            sub: claims.subject.ok_or(Dead::Invalid)?,
            expires_at: claims.expires_at.ok_or(Dead::Invalid)?.as_secs(),
            sid: claims.custom.sid,
            auth_time: claims.custom.auth_time,
            created_at: claims.custom.ct,
            last_activity: claims.custom.lat,
            claims: claims.custom.claims,
            op: claims.custom.op,
        };
        match session.is_live(now, idle_timeout_s) {
            true => Ok(session),
            false => Err(session.why_dead(now)),
        }
    }
}

#[cfg(test)]
mod tests;
