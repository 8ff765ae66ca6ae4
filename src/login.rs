//! One login in progress: the values that tie the OP's answer to the browser that started it.
//!
//! The transaction lives in its own short-lived signed cookie, named after its state, scoped to
//! the callback path. So parallel logins in several tabs each keep theirs, no worker needs to
//! remember anything, and the callback consumes the cookie (deletes it) so it cannot be replayed.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_simple::prelude::*;

use crate::session::{KeyPurpose, KeyRing, COOKIE_ISSUER};

/// Where randomness comes from: the host's CSPRNG in Envoy, a fixed source in tests.
pub trait Entropy {
    /// Fills `buf` with random bytes; `false` when no randomness could be had (fail closed).
    fn fill(&mut self, buf: &mut [u8]) -> bool;
}

/// A URL-safe random string from `bytes` bytes of entropy.
pub fn random_token(rng: &mut dyn Entropy, bytes: usize) -> Option<String> {
    let mut buf = [0u8; 64];
    let buf = buf.get_mut(..bytes.min(64))?;
    rng.fill(buf).then(|| URL_SAFE_NO_PAD.encode(buf))
}

/// How many sign-ins a browser may have under way at once (tabs). Each has a cookie slot; a
/// new sign-in takes the slot after the last one taken (a small counter cookie says which),
/// so the oldest is overwritten and repeated navigations can never pile up cookies past a
/// proxy's header limit.
pub const TXN_SLOTS: u8 = 3;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct LoginTransaction {
    pub state: String,
    // `nonce` is a registered JWT claim name; keep ours apart from it.
    #[serde(rename = "oidc_nonce")]
    pub nonce: String,
    /// PKCE `code_verifier` (RFC 7636): 43 characters from 32 random bytes.
    pub verifier: String,
    /// Path and query on this gateway to return to after login.
    pub return_to: String,
    /// The exact `redirect_uri` sent to the OP; the token request must repeat it.
    pub redirect_uri: String,
    /// The cookie slot this transaction lives in (not sealed: the cookie's name says it).
    #[serde(skip)]
    pub slot: u8,
}

impl LoginTransaction {
    pub fn new(rng: &mut dyn Entropy, return_to: String, redirect_uri: String) -> Option<Self> {
        Some(Self {
            state: random_token(rng, 32)?,
            nonce: random_token(rng, 32)?,
            verifier: random_token(rng, 32)?,
            return_to,
            redirect_uri,
            slot: 0,
        })
    }

    /// PKCE S256 `code_challenge`.
    pub fn code_challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(hmac_sha256::Hash::hash(self.verifier.as_bytes()))
    }

    /// Name of the cookie of transaction slot `slot`.
    pub fn cookie_name(prefix: &str, slot: u8) -> String {
        format!("{prefix}{slot}")
    }

    /// Name of the cookie that says which slot the next sign-in takes.
    pub fn counter_cookie_name(prefix: &str) -> String {
        format!("{prefix}next")
    }

    /// The slot after the one a counter cookie names (0 without a usable one).
    pub fn next_slot(counter: Option<&str>) -> u8 {
        counter
            .and_then(|c| c.parse::<u8>().ok())
            .filter(|s| *s < TXN_SLOTS)
            .unwrap_or(0)
    }

    pub fn seal(&self, keys: &KeyRing, now: u64, ttl_s: u64) -> Option<String> {
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(now)),
            expires_at: Some(UnixTimeStamp::from_secs(now.saturating_add(ttl_s))),
            invalid_before: None,
            issuer: Some(COOKIE_ISSUER.to_string()),
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: self.clone(),
        };
        keys.sign(KeyPurpose::Login, claims)
    }

    /// Opens a transaction cookie and checks it belongs to `state` (compared in constant time).
    pub fn open(cookie: &str, state: &str, keys: &KeyRing, now: u64) -> Option<Self> {
        let claims = keys.verify::<LoginTransaction>(KeyPurpose::Login, cookie, now)?;
        let txn = claims.custom;
        constant_time_eq(txn.state.as_bytes(), state.as_bytes()).then_some(txn)
    }
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The path (and query) to return to after login, if `target` is a safe, same-origin
/// reference. Anything that could leave the site (`//host`, `/\host`, a scheme, control
/// characters) is refused; the caller falls back to `/`.
pub fn safe_return_path(target: &str) -> Option<&str> {
    let path = target.split(['?', '#']).next().unwrap_or(target);
    let ok = target.starts_with('/')
        && !target.starts_with("//")
        && !path.contains('\\')
        && target.len() <= 4096
        && !target.bytes().any(|c| c < 0x20 || c == 0x7f);
    ok.then_some(target)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic entropy source for tests: counts upwards.
    pub struct CountingEntropy(pub u8);
    impl Entropy for CountingEntropy {
        fn fill(&mut self, buf: &mut [u8]) -> bool {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
            true
        }
    }

    struct NoEntropy;
    impl Entropy for NoEntropy {
        fn fill(&mut self, _: &mut [u8]) -> bool {
            false
        }
    }

    fn keys() -> KeyRing {
        KeyRing::new(&[("k1".to_string(), vec![7u8; 32])])
    }

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn values_are_random_and_distinct() {
        let mut rng = CountingEntropy(0);
        let t =
            LoginTransaction::new(&mut rng, "/a".into(), "https://gw/pa/oidc/cb".into()).unwrap();
        assert_eq!(t.state.len(), 43);
        assert_eq!(t.verifier.len(), 43);
        assert_ne!(t.state, t.nonce);
        assert_ne!(t.nonce, t.verifier);
        assert!(LoginTransaction::new(&mut NoEntropy, "/".into(), "x".into()).is_none());
    }

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        let t = LoginTransaction {
            state: String::new(),
            nonce: String::new(),
            verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into(),
            return_to: "/".into(),
            redirect_uri: String::new(),
            slot: 0,
        };
        assert_eq!(
            t.code_challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn sealed_cookie_opens_only_for_its_state_and_in_time() {
        let mut rng = CountingEntropy(0);
        let t = LoginTransaction::new(&mut rng, "/a?b=c".into(), "https://gw/pa/oidc/cb".into())
            .unwrap();
        let keys = keys();
        let now = NOW;
        let sealed = t.seal(&keys, now, 600).unwrap();
        assert_eq!(
            LoginTransaction::open(&sealed, &t.state, &keys, now),
            Some(t.clone())
        );
        assert_eq!(
            LoginTransaction::open(&sealed, "other-state", &keys, now),
            None
        );
        assert_eq!(
            LoginTransaction::open(&sealed, &t.state, &keys, now + 601),
            None
        );
        let other = KeyRing::new(&[("k1".to_string(), vec![8u8; 32])]);
        assert_eq!(LoginTransaction::open(&sealed, &t.state, &other, now), None);
        assert_eq!(LoginTransaction::open("x.y.z", &t.state, &keys, NOW), None);
    }

    #[test]
    fn slots_rotate() {
        assert_eq!(
            LoginTransaction::cookie_name("PA.wam.txn.", 2),
            "PA.wam.txn.2"
        );
        assert_eq!(LoginTransaction::next_slot(None), 0);
        assert_eq!(LoginTransaction::next_slot(Some("1")), 1);
        assert_eq!(LoginTransaction::next_slot(Some("7")), 0);
        assert_eq!(LoginTransaction::next_slot(Some("x")), 0);
    }

    #[test]
    fn only_same_origin_paths_are_return_targets() {
        assert_eq!(safe_return_path("/"), Some("/"));
        assert_eq!(
            safe_return_path("/app/x?y=1&z=//evil"),
            Some("/app/x?y=1&z=//evil")
        );
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "",
            "evil",
            "/a\r\nSet-Cookie: x=y",
            "/\\/evil",
            "/a\\b",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad:?}");
        }
    }
}
