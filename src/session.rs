//! The gateway's own web session: a compact HS256 JWT in a cookie (the "PA token").
//!
//! The cookie carries everything the gateway needs, so any worker (and any replica sharing
//! the keys) can serve any request without shared state. Its limits are two clocks: the
//! absolute expiry (`exp`, fixed at login) and the last activity (`lat`), which slides forward
//! when the cookie is re-issued and bounds the idle time.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use jwt_simple::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::http::HeaderOps;

/// Secrets are derived per purpose so a login-transaction cookie can never pass as a session
/// cookie (or the reverse), even though both are signed from the same configured key.
const SESSION_KEY_LABEL: &[u8] = b"envoy-wam session cookie v1";
const LOGIN_KEY_LABEL: &[u8] = b"envoy-wam login transaction v1";
pub(crate) const COOKIE_ISSUER: &str = "envoy-wam";

/// Signing keys with ids: the first one signs, every one verifies (so keys can be rotated
/// without logging everybody out).
#[derive(Clone)]
pub struct KeyRing {
    session: Vec<HS256Key>,
    login: Vec<HS256Key>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self
            .session
            .iter()
            .filter_map(|k| k.key_id().as_deref())
            .collect();
        f.debug_struct("KeyRing")
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy)]
pub(crate) enum KeyPurpose {
    Session,
    Login,
}

impl KeyRing {
    /// `keys` is non-empty (checked by the configuration).
    pub fn new(keys: &[(String, Vec<u8>)]) -> Self {
        let derive = |label: &[u8], kid: &str, secret: &[u8]| {
            let derived = hmac_sha256::HMAC::mac(label, secret);
            HS256Key::from_bytes(&derived).with_key_id(kid)
        };
        Self {
            session: keys
                .iter()
                .map(|(kid, s)| derive(SESSION_KEY_LABEL, kid, s))
                .collect(),
            login: keys
                .iter()
                .map(|(kid, s)| derive(LOGIN_KEY_LABEL, kid, s))
                .collect(),
        }
    }

    fn keys(&self, purpose: KeyPurpose) -> &[HS256Key] {
        match purpose {
            KeyPurpose::Session => &self.session,
            KeyPurpose::Login => &self.login,
        }
    }

    pub(crate) fn sign<T: Serialize + DeserializeOwned>(
        &self,
        purpose: KeyPurpose,
        claims: JWTClaims<T>,
    ) -> Option<String> {
        self.keys(purpose).first()?.authenticate(claims).ok()
    }

    /// Verifies signature, issuer and expiry at `now`; any failure (bad encoding, unknown key
    /// id, wrong signature, expired) is simply "no valid token".
    pub(crate) fn verify<T: Serialize + DeserializeOwned>(
        &self,
        purpose: KeyPurpose,
        token: &str,
        now: u64,
    ) -> Option<JWTClaims<T>> {
        let meta = Token::decode_metadata(token).ok()?;
        if meta.algorithm() != "HS256" {
            return None;
        }
        let kid = meta.key_id()?;
        let key = self
            .keys(purpose)
            .iter()
            .find(|k| k.key_id().as_deref() == Some(kid))?;
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from_strings(&[COOKIE_ISSUER])),
            // Our own cookies: an `iat` a little ahead is another worker's clock (ticks lag by
            // up to a second), not an attack. Expiry stays exact.
            accept_future: true,
            time_tolerance: Some(Duration::from_secs(0)),
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            max_token_length: Some(8192),
            ..Default::default()
        };
        key.verify_token::<T>(token, Some(options)).ok()
    }
}

/// What the session cookie holds besides the registered claims.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct SessionExtra {
    /// Session id: random, stable for the session's life; names it in logs and caches.
    sid: String,
    /// When the user authenticated at the OP (or at the gateway when the OP did not say).
    auth_time: u64,
    /// Last activity seen, for the idle timeout.
    lat: u64,
    /// Claims copied from the ID token (configured names only).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    claims: Map<String, Value>,
}

/// A valid session.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub sid: String,
    pub sub: String,
    pub auth_time: u64,
    pub expires_at: u64,
    pub last_activity: u64,
    pub claims: Map<String, Value>,
}

impl Session {
    /// A claim by name; `sub` is always available.
    pub fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.get(name)
    }

    pub fn is_live(&self, now: u64, idle_timeout_s: u64) -> bool {
        now < self.expires_at && now < self.last_activity.saturating_add(idle_timeout_s)
    }

    /// Seconds left before the absolute expiry (the cookie's Max-Age).
    pub fn remaining(&self, now: u64) -> u64 {
        self.expires_at.saturating_sub(now)
    }

    pub fn encode(&self, keys: &KeyRing) -> Option<String> {
        let extra = SessionExtra {
            sid: self.sid.clone(),
            auth_time: self.auth_time,
            lat: self.last_activity,
            claims: self.claims.clone(),
        };
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(self.last_activity)),
            expires_at: Some(UnixTimeStamp::from_secs(self.expires_at)),
            invalid_before: None,
            issuer: Some(COOKIE_ISSUER.to_string()),
            subject: Some(self.sub.clone()),
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: extra,
        };
        keys.sign(KeyPurpose::Session, claims)
    }

    /// Decodes a cookie value. Tampered, unknown-key, expired or idle cookies give `None`.
    pub fn decode(token: &str, keys: &KeyRing, now: u64, idle_timeout_s: u64) -> Option<Self> {
        let claims = keys.verify::<SessionExtra>(KeyPurpose::Session, token, now)?;
        let session = Session {
            sid: claims.custom.sid,
            sub: claims.subject?,
            auth_time: claims.custom.auth_time,
            expires_at: claims.expires_at?.as_secs(),
            last_activity: claims.custom.lat,
            claims: claims.custom.claims,
        };
        session.is_live(now, idle_timeout_s).then_some(session)
    }
}

fn cache_key(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

/// A verified session and what the gateway derived from it once (the identity header values),
/// shared by every request that presents the same cookie.
#[derive(Debug, PartialEq)]
pub struct SessionEntry {
    pub session: Session,
    pub headers: HeaderOps,
    /// When a successor cookie was last issued for this one. Clients that ignore Set-Cookie
    /// (or send many requests at once) then cost one re-issue per refresh interval, not one
    /// HMAC per request.
    pub renewed_at: Cell<u64>,
}

impl SessionEntry {
    pub fn new(session: Session, headers: HeaderOps) -> Self {
        let renewed_at = Cell::new(session.last_activity);
        Self {
            session,
            headers,
            renewed_at,
        }
    }
}

/// Verified cookies of this VM, keyed by the exact cookie value. A hit skips the HMAC, the
/// JSON parse and the header derivation; the time checks still run on every request. Bounded:
/// when full, dead entries are dropped, and if that is not enough the map starts over (a miss
/// only costs one verification).
pub struct SessionCache {
    /// Keyed by the signature segment (short, so hashing is cheap); the entry keeps the whole
    /// cookie value, and a hit counts only if all of it matches.
    entries: HashMap<String, (String, Rc<SessionEntry>)>,
    capacity: usize,
}

impl SessionCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live session for `token`, verifying and remembering it on a miss (`derive` computes
    /// the header values then).
    pub fn lookup(
        &mut self,
        token: &str,
        keys: &KeyRing,
        now: u64,
        idle_timeout_s: u64,
        derive: impl FnOnce(&Session) -> Option<HeaderOps>,
    ) -> Option<Rc<SessionEntry>> {
        let key = cache_key(token);
        if let Some((full, e)) = self.entries.get(key) {
            if full == token {
                if e.session.is_live(now, idle_timeout_s) {
                    return Some(e.clone());
                }
                self.entries.remove(key);
                return None;
            }
        }
        let session = Session::decode(token, keys, now, idle_timeout_s)?;
        // No headers, no session: a claim that cannot be a header value never goes upstream.
        let headers = derive(&session)?;
        Some(self.insert(
            token.to_string(),
            SessionEntry::new(session, headers),
            now,
            idle_timeout_s,
        ))
    }

    pub fn insert(
        &mut self,
        token: String,
        entry: SessionEntry,
        now: u64,
        idle_timeout_s: u64,
    ) -> Rc<SessionEntry> {
        if self.entries.len() >= self.capacity {
            self.entries
                .retain(|_, (_, e)| e.session.is_live(now, idle_timeout_s));
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        let entry = Rc::new(entry);
        self.entries
            .insert(cache_key(&token).to_string(), (token, entry.clone()));
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[(&str, u8)]) -> KeyRing {
        let keys: Vec<_> = keys
            .iter()
            .map(|(kid, b)| (kid.to_string(), vec![*b; 32]))
            .collect();
        KeyRing::new(&keys)
    }

    fn session(now: u64) -> Session {
        let mut claims = Map::new();
        claims.insert("email".into(), Value::from("alice@example.com"));
        claims.insert("groups".into(), serde_json::json!(["staff", "admins"]));
        Session {
            sid: "sid-1".into(),
            sub: "alice".into(),
            auth_time: now,
            expires_at: now + 14400,
            last_activity: now,
            claims,
        }
    }

    const NOW: u64 = 1_800_000_000;
    const IDLE: u64 = 3600;

    #[test]
    fn round_trip() {
        let keys = ring(&[("k1", 1)]);
        let s = session(NOW);
        let token = s.encode(&keys).unwrap();
        assert_eq!(Session::decode(&token, &keys, NOW + 10, IDLE), Some(s));
    }

    #[test]
    fn tampered_cookie_is_no_session() {
        let keys = ring(&[("k1", 1)]);
        let token = session(NOW).encode(&keys).unwrap();
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        // Swap in a payload claiming another subject, keeping the old signature.
        let mut forged = session(NOW);
        forged.sub = "mallory".into();
        let forged_token = forged.encode(&keys).unwrap();
        parts[1] = forged_token.split('.').nth(1).unwrap().to_string();
        assert_ne!(parts.join("."), forged_token);
        assert_eq!(Session::decode(&parts.join("."), &keys, NOW, IDLE), None);
        // Flip one character of the signature.
        // Flip one character inside the signature (not the last: its low bits are padding).
        let at = token.len() - 10;
        let flipped = if &token[at..at + 1] == "A" { "B" } else { "A" };
        let bad = format!("{}{}{}", &token[..at], flipped, &token[at + 1..]);
        assert_eq!(Session::decode(&bad, &keys, NOW, IDLE), None);
        assert_eq!(Session::decode("garbage", &keys, NOW, IDLE), None);
        assert_eq!(Session::decode("", &keys, NOW, IDLE), None);
        assert_eq!(Session::decode("a.b.c", &keys, NOW, IDLE), None);
    }

    #[test]
    fn unknown_key_is_no_session_and_rotation_keeps_old_keys() {
        let old = ring(&[("k1", 1)]);
        let token = session(NOW).encode(&old).unwrap();
        assert_eq!(
            Session::decode(&token, &ring(&[("k9", 9)]), NOW, IDLE),
            None
        );
        // Same kid, other secret: rejected.
        assert_eq!(
            Session::decode(&token, &ring(&[("k1", 2)]), NOW, IDLE),
            None
        );
        // After rotation, k2 signs and k1 still verifies.
        let rotated = ring(&[("k2", 2), ("k1", 1)]);
        assert!(Session::decode(&token, &rotated, NOW, IDLE).is_some());
        let new_token = session(NOW).encode(&rotated).unwrap();
        assert_eq!(
            Token::decode_metadata(&new_token).unwrap().key_id(),
            Some("k2")
        );
    }

    #[test]
    fn a_cookie_from_a_worker_whose_clock_is_ahead_is_valid() {
        let keys = ring(&[("k1", 1)]);
        let token = session(NOW + 1).encode(&keys).unwrap();
        assert!(Session::decode(&token, &keys, NOW, IDLE).is_some());
    }

    #[test]
    fn absolute_and_idle_expiry() {
        let keys = ring(&[("k1", 1)]);
        let s = session(NOW);
        let token = s.encode(&keys).unwrap();
        assert!(Session::decode(&token, &keys, NOW + IDLE - 1, IDLE).is_some());
        assert_eq!(
            Session::decode(&token, &keys, NOW + IDLE, IDLE),
            None,
            "idle"
        );
        let mut active = s.clone();
        active.last_activity = NOW + 14000;
        let token = active.encode(&keys).unwrap();
        assert!(Session::decode(&token, &keys, NOW + 14399, IDLE).is_some());
        assert_eq!(
            Session::decode(&token, &keys, NOW + 14400, IDLE),
            None,
            "absolute"
        );
    }

    #[test]
    fn login_key_cannot_sign_sessions() {
        let keys = ring(&[("k1", 1)]);
        let s = session(NOW);
        let extra = SessionExtra {
            sid: s.sid.clone(),
            auth_time: NOW,
            lat: NOW,
            claims: Map::new(),
        };
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(NOW)),
            expires_at: Some(UnixTimeStamp::from_secs(NOW + 600)),
            invalid_before: None,
            issuer: Some(COOKIE_ISSUER.to_string()),
            subject: Some("alice".into()),
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: extra,
        };
        // The same claims under the session purpose do verify: only the key differs.
        assert!(keys
            .verify::<SessionExtra>(
                KeyPurpose::Session,
                &keys.sign(KeyPurpose::Session, claims.clone()).unwrap(),
                NOW
            )
            .is_some());
        let token = keys.sign(KeyPurpose::Login, claims).unwrap();
        assert_eq!(Session::decode(&token, &keys, NOW, IDLE), None);
    }

    #[test]
    fn cache_hits_still_check_time_and_stay_bounded() {
        let keys = ring(&[("k1", 1)]);
        let token = session(NOW).encode(&keys).unwrap();
        let mut cache = SessionCache::new(2);
        assert!(cache
            .lookup(&token, &keys, NOW, IDLE, |_| Some(HeaderOps::from([])))
            .is_some());
        assert_eq!(cache.len(), 1);
        assert!(cache
            .lookup(&token, &keys, NOW + 1, IDLE, |_| Some(HeaderOps::from([])))
            .is_some());
        assert_eq!(
            cache.lookup(&token, &keys, NOW + IDLE, IDLE, |_| Some(HeaderOps::from(
                []
            ))),
            None
        );
        assert!(cache.is_empty());
        for i in 0..5 {
            let mut s = session(NOW);
            s.sid = format!("s{i}");
            let t = s.encode(&keys).unwrap();
            assert!(cache
                .lookup(&t, &keys, NOW, IDLE, |_| Some(HeaderOps::from([])))
                .is_some());
            assert!(cache.len() <= 2);
        }
        assert_eq!(
            cache.lookup("forged", &keys, NOW, IDLE, |_| Some(HeaderOps::from([]))),
            None
        );
    }

    #[test]
    fn cache_hit_needs_the_whole_cookie_not_just_its_signature() {
        let keys = ring(&[("k1", 1)]);
        let token = session(NOW).encode(&keys).unwrap();
        let mut cache = SessionCache::new(10);
        assert!(cache
            .lookup(&token, &keys, NOW, IDLE, |_| Some(HeaderOps::from([])))
            .is_some());
        let mut other = session(NOW);
        other.sub = "mallory".into();
        let other_token = other.encode(&keys).unwrap();
        let other_payload = other_token.split('.').nth(1).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
        assert_eq!(
            cache.lookup(&forged, &keys, NOW, IDLE, |_| Some(HeaderOps::from([]))),
            None
        );
        let hit = cache
            .lookup(&token, &keys, NOW, IDLE, |_| Some(HeaderOps::from([])))
            .unwrap();
        assert_eq!(hit.session.sub, "alice");
    }
}
