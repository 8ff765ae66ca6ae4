//! The gateway's own keys, derived per purpose from the configured secrets, with key ids so
//! that keys rotate: the first key seals, every key opens.

use std::fmt;

use jwt_simple::prelude::*;
use serde::de::DeserializeOwned;

use super::jwe;
use crate::login::Entropy;

/// Secrets are derived per purpose so a login-transaction cookie can never pass as a session
/// cookie (or the reverse), and so the encryption key is never also an HMAC key, even though
/// all come from the same configured secret.
const SESSION_KEY_LABEL: &[u8] = b"envoy-wam session cookie v1";
const LOGIN_KEY_LABEL: &[u8] = b"envoy-wam login transaction v1";
const SESSION_ENC_LABEL: &[u8] = b"envoy-wam session cookie encryption v1";
const PRESERVE_ENC_LABEL: &[u8] = b"envoy-wam preserved request v1";
pub(crate) const COOKIE_ISSUER: &str = "envoy-wam";

/// How the session cookie is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CookieType {
    /// A compact JWE (`dir`, `A256GCM`): the user cannot read what the session holds (claims,
    /// the OP's tokens).
    #[default]
    Encrypted,
    /// A compact JWS (HS256): readable by the user, unforgeable. Cannot hold the OP's tokens.
    Signed,
}

/// What a sealed value is for; each purpose has its own keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealPurpose {
    Session,
    /// A form body kept through a sign-in.
    PreservedRequest,
}

#[derive(Clone, Copy)]
pub(crate) enum KeyPurpose {
    Session,
    Login,
}

/// An AES-256 key with its id. Debug never shows the key.
#[derive(Clone)]
pub(crate) struct EncKey {
    pub kid: String,
    pub key: [u8; 32],
}

#[derive(Clone)]
pub struct KeyRing {
    pub cookie_type: CookieType,
    session: Vec<HS256Key>,
    login: Vec<HS256Key>,
    session_enc: Vec<EncKey>,
    preserve_enc: Vec<EncKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self.session_enc.iter().map(|k| k.kid.as_str()).collect();
        f.debug_struct("KeyRing")
            .field("cookie_type", &self.cookie_type)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// `keys` is non-empty (checked by the configuration). Signed session cookies.
    pub fn new(keys: &[(String, Vec<u8>)]) -> Self {
        Self::with_type(keys, CookieType::Signed)
    }

    pub fn with_type(keys: &[(String, Vec<u8>)], cookie_type: CookieType) -> Self {
        let mac = |label: &[u8], kid: &str, secret: &[u8]| {
            HS256Key::from_bytes(&hmac_sha256::HMAC::mac(label, secret)).with_key_id(kid)
        };
        let enc = |label: &[u8], kid: &str, secret: &[u8]| EncKey {
            kid: kid.to_string(),
            key: hmac_sha256::HMAC::mac(label, secret),
        };
        let all = |f: &dyn Fn(&str, &[u8]) -> _| -> Vec<_> {
            keys.iter().map(|(kid, s)| f(kid, s)).collect()
        };
        Self {
            cookie_type,
            session: all(&|k, s| mac(SESSION_KEY_LABEL, k, s)),
            login: all(&|k, s| mac(LOGIN_KEY_LABEL, k, s)),
            session_enc: keys
                .iter()
                .map(|(k, s)| enc(SESSION_ENC_LABEL, k, s))
                .collect(),
            preserve_enc: keys
                .iter()
                .map(|(k, s)| enc(PRESERVE_ENC_LABEL, k, s))
                .collect(),
        }
    }

    fn keys(&self, purpose: KeyPurpose) -> &[HS256Key] {
        match purpose {
            KeyPurpose::Session => &self.session,
            KeyPurpose::Login => &self.login,
        }
    }

    fn enc_keys(&self, purpose: SealPurpose) -> &[EncKey] {
        match purpose {
            SealPurpose::Session => &self.session_enc,
            SealPurpose::PreservedRequest => &self.preserve_enc,
        }
    }

    /// Encrypts `plaintext` as a compact JWE under the first key of `purpose`.
    pub fn seal(
        &self,
        purpose: SealPurpose,
        plaintext: &[u8],
        rng: &mut dyn Entropy,
    ) -> Option<String> {
        jwe::seal(self.enc_keys(purpose).first()?, plaintext, rng)
    }

    /// The plaintext of a compact JWE sealed by any key of `purpose`; `None` for anything
    /// else (unknown key id, tampered, not a JWE, other algorithms).
    pub fn open(&self, purpose: SealPurpose, token: &str) -> Option<Vec<u8>> {
        jwe::open(self.enc_keys(purpose), token)
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
            max_token_length: Some(MAX_SEALED_LEN),
            ..Default::default()
        };
        key.verify_token::<T>(token, Some(options)).ok()
    }
}

/// The largest cookie value (all chunks joined) the gateway reads: ten chunks of 4 KB.
pub const MAX_SEALED_LEN: usize = 40 * 1024;
