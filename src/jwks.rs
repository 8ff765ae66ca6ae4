//! The OP's signing keys (a JWK Set, RFC 7517) and when to fetch them again.

use crate::config::{OpEndpoints, OpSettings};
use crate::http::Callout;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use crate::config::SignatureAlg;

/// Public key material, kept raw: a JWK without `alg` may serve several algorithms, so the
/// verifying key is built for the algorithm a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// SEC1 uncompressed point (0x04 ‖ x ‖ y).
    P256(Vec<u8>),
    P384(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub material: KeyMaterial,
}

impl Jwk {
    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: SignatureAlg) -> bool {
        use SignatureAlg::*;
        let kind_fits = matches!(
            (&self.material, alg),
            (KeyMaterial::Rsa { .. }, Rs256 | Rs384 | Rs512 | Ps256)
                | (KeyMaterial::P256(_), Es256)
                | (KeyMaterial::P384(_), Es384)
        );
        kind_fits
            && self
                .alg
                .as_deref()
                .is_none_or(|a| SignatureAlg::from_name(a) == Some(alg))
    }
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

fn b64(s: Option<&String>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s?.trim_end_matches('=')).ok()
}

fn parse_key(raw: RawJwk) -> Option<Jwk> {
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return None;
    }
    let material = match raw.kty.as_str() {
        "RSA" => {
            let n = b64(raw.n.as_ref())?;
            let e = b64(raw.e.as_ref())?;
            // Below 2048 bits RSA is not a signature anyone should trust.
            if n.len() < 256 || e.is_empty() || e.len() > 8 {
                return None;
            }
            KeyMaterial::Rsa { n, e }
        }
        "EC" => {
            let (x, y) = (b64(raw.x.as_ref())?, b64(raw.y.as_ref())?);
            let size = match raw.crv.as_deref()? {
                "P-256" => 32,
                "P-384" => 48,
                _ => return None,
            };
            if x.len() != size || y.len() != size {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            if size == 32 {
                KeyMaterial::P256(point)
            } else {
                KeyMaterial::P384(point)
            }
        }
        _ => return None,
    };
    Some(Jwk {
        kid: raw.kid,
        alg: raw.alg,
        material,
    })
}

/// The usable signing keys of a JWK Set. Keys of other types or uses are skipped, not errors:
/// an OP may publish encryption keys beside its signing keys.
pub fn parse_jwks(body: &[u8]) -> Option<Vec<Jwk>> {
    let raw: RawJwks = serde_json::from_slice(body).ok()?;
    Some(
        raw.keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<RawJwk>(v).ok())
            .filter_map(parse_key)
            .collect(),
    )
}

/// What to do about a token's key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyLookup<'a> {
    Found(&'a Jwk),
    /// Not known, and fetching the JWKS again is allowed now.
    Refetch,
    /// Not known, and fetching again would not help or is not allowed yet.
    Unknown(KeyMiss),
}

/// Why a token's key could not be found, for the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMiss {
    /// The JWKS was fetched `ago` seconds ago, too recently to fetch it again.
    Throttled { ago: u64 },
    /// The token names no `kid` and several published keys fit its algorithm.
    Ambiguous,
}

impl KeyMiss {
    pub fn describe(&self) -> String {
        match self {
            Self::Throttled { ago } => format!("refetch throttled, last fetch {ago} s ago"),
            Self::Ambiguous => "several keys and no kid".into(),
        }
    }
}

/// The JWKS as a health check reports it (see [`JwksCache::health`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwksHealth {
    pub keys: usize,
    /// Seconds since the last successful fetch; `None`: never fetched.
    pub age_s: Option<u64>,
    /// The last routine fetch brought nothing.
    pub failing: bool,
}

/// The OP's keys as last fetched by this VM.
#[derive(Debug, Default)]
pub struct JwksCache {
    keys: Vec<Jwk>,
    fetched_at: Option<u64>,
    /// The last fetch because the set was missing or older than its max age.
    routine_attempt: Option<u64>,
    /// The last fetch because a token named a key the fresh set does not hold. Only these are
    /// throttled against each other: an OP that rotates right after a routine fetch must not
    /// have its new tokens refused until the throttle runs out.
    unknown_key_attempt: Option<u64>,
}

impl JwksCache {
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    fn stale(&self, now: u64, max_age_s: u64) -> bool {
        self.fetched_at
            .is_none_or(|t| now.saturating_sub(t) >= max_age_s)
    }

    /// Finds the key for a token header's `kid` and `alg`. A missing or stale set is fetched
    /// again at most once per `min_refetch_s` (an OP that is down is not asked on every
    /// request); so is a fresh set lacking the token's key (a rotated OP key), so that a stream
    /// of tokens with made-up key ids cannot turn into a stream of JWKS requests.
    pub fn lookup(
        &self,
        kid: Option<&str>,
        alg: SignatureAlg,
        now: u64,
        max_age_s: u64,
        min_refetch_s: u64,
    ) -> KeyLookup<'_> {
        let since = |t: Option<u64>| t.map(|t| now.saturating_sub(t));
        let may = |t: Option<u64>| since(t).is_none_or(|ago| ago >= min_refetch_s);
        let throttled = |t: Option<u64>| {
            KeyLookup::Unknown(KeyMiss::Throttled {
                ago: since(t).unwrap_or_default(),
            })
        };
        if self.stale(now, max_age_s) {
            if may(self.routine_attempt) {
                return KeyLookup::Refetch;
            }
            // Could not refresh lately: keep using the keys we have rather than fail every login.
            return match self.find(kid, alg) {
                Ok(k) => KeyLookup::Found(k),
                Err(KeyMiss::Ambiguous) => KeyLookup::Unknown(KeyMiss::Ambiguous),
                Err(_) => throttled(self.routine_attempt),
            };
        }
        match self.find(kid, alg) {
            Ok(k) => KeyLookup::Found(k),
            // Fetching again would not tell which key was meant.
            Err(KeyMiss::Ambiguous) => KeyLookup::Unknown(KeyMiss::Ambiguous),
            Err(_) if may(self.unknown_key_attempt) => KeyLookup::Refetch,
            Err(_) => throttled(self.unknown_key_attempt),
        }
    }

    /// The key a token names, or, without a kid, the only one that fits its algorithm.
    fn find(&self, kid: Option<&str>, alg: SignatureAlg) -> Result<&Jwk, KeyMiss> {
        let mut candidates = self.keys.iter().filter(|k| k.fits(alg));
        let missing = KeyMiss::Throttled { ago: 0 };
        match kid {
            Some(kid) => candidates
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(missing),
            None => match (candidates.next(), candidates.next()) {
                (Some(k), None) => Ok(k),
                (Some(_), Some(_)) => Err(KeyMiss::Ambiguous),
                _ => Err(missing),
            },
        }
    }

    /// Records that a fetch was started (whatever its outcome): a routine one when the set is
    /// missing or stale at `now`, else one for an unknown key.
    pub fn attempted(&mut self, now: u64, max_age_s: u64) {
        if self.stale(now, max_age_s) {
            self.routine_attempt = Some(now);
        } else {
            self.unknown_key_attempt = Some(now);
        }
    }

    /// What a health check says of this set at `now`: how many keys, how old, and whether a
    /// routine fetch started more than `grace_s` ago (longer than a callout may take) has
    /// brought nothing since, i.e. the OP's keys cannot be had.
    pub fn health(&self, now: u64, grace_s: u64) -> JwksHealth {
        let failing = self.routine_attempt.is_some_and(|t| {
            self.fetched_at.is_none_or(|f| f < t) && now.saturating_sub(t) > grace_s
        });
        JwksHealth {
            keys: self.keys.len(),
            age_s: self.fetched_at.map(|t| now.saturating_sub(t)),
            failing,
        }
    }

    /// When the set was fetched (by this worker, or by the one it was taken from).
    pub fn fetched_at(&self) -> Option<u64> {
        self.fetched_at
    }

    /// When this worker last started a fetch (`attempted`): the answer now arriving was asked
    /// for then or before, so its content is no newer than that.
    pub fn last_attempt(&self) -> Option<u64> {
        self.routine_attempt.max(self.unknown_key_attempt)
    }

    pub fn replace(&mut self, keys: Vec<Jwk>, now: u64) {
        self.keys = keys;
        self.fetched_at = Some(now);
    }
}

/// The request for `op`'s JWKS; `None` when it has no JWKS endpoint (an introspection-only
/// token provider).
pub fn request(op: &OpSettings, endpoints: &OpEndpoints) -> Option<Callout> {
    let jwks = endpoints.jwks.as_ref()?;
    Some(Callout {
        cluster: op.cluster.clone(),
        method: "GET",
        authority: jwks.authority.clone(),
        path: jwks.path.clone(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
        timeout_ms: op.timeout_ms,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub fn rsa_jwk_json(kid: &str, n: &[u8]) -> serde_json::Value {
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
               "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"})
    }

    #[test]
    fn parses_rsa_and_ec_keys_and_skips_the_rest() {
        let body = json!({"keys": [
            rsa_jwk_json("r1", &[0xab; 256]),
            {"kty": "EC", "kid": "e1", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode([1u8; 32]), "y": URL_SAFE_NO_PAD.encode([2u8; 32])},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": URL_SAFE_NO_PAD.encode([1u8; 256]), "e": "AQAB"},
            {"kty": "RSA", "kid": "small", "n": URL_SAFE_NO_PAD.encode([1u8; 128]), "e": "AQAB"},
            {"kty": "EC", "kid": "bad-crv", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "Ed25519", "x": "AA"},
            "not an object",
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap()).collect();
        assert_eq!(kids, vec!["r1", "e1"]);
        assert!(keys[0].fits(SignatureAlg::Rs256));
        assert!(!keys[0].fits(SignatureAlg::Rs384), "alg pinned by the JWK");
        assert!(!keys[0].fits(SignatureAlg::Es256));
        assert!(keys[1].fits(SignatureAlg::Es256));
        assert!(!keys[1].fits(SignatureAlg::Es384));
        assert_eq!(parse_jwks(b"{}"), None);
        assert_eq!(parse_jwks(b"garbage"), None);
    }

    fn set(kids: &[&str]) -> Vec<Jwk> {
        let keys: Vec<_> = kids.iter().map(|k| rsa_jwk_json(k, &[1; 256])).collect();
        parse_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn unknown_kid_refetches_at_most_once_per_interval() {
        let rs = SignatureAlg::Rs256;
        let mut cache = JwksCache::default();
        assert_eq!(
            cache.lookup(Some("r1"), rs, 100, 3600, 30),
            KeyLookup::Refetch
        );
        cache.attempted(100, 3600);
        cache.replace(set(&["r1"]), 100);
        assert!(matches!(
            cache.lookup(Some("r1"), rs, 101, 3600, 30),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            cache.lookup(None, rs, 101, 3600, 30),
            KeyLookup::Found(_)
        ));
        // The routine fetch at 100 does not hold back the first unknown key.
        assert_eq!(
            cache.lookup(Some("r2"), rs, 101, 3600, 30),
            KeyLookup::Refetch
        );
        cache.attempted(101, 3600);
        assert_eq!(
            cache.lookup(Some("r3"), rs, 110, 3600, 30),
            KeyLookup::Unknown(KeyMiss::Throttled { ago: 9 })
        );
        assert_eq!(
            cache.lookup(Some("r3"), rs, 131, 3600, 30),
            KeyLookup::Refetch
        );
        // Stale after max age: refetch, but keep serving the old keys if refetching is throttled.
        cache.attempted(3700, 3600);
        assert!(matches!(
            cache.lookup(Some("r1"), rs, 3710, 3600, 30),
            KeyLookup::Found(_)
        ));
        assert_eq!(
            cache.lookup(Some("r9"), rs, 3710, 3600, 30),
            KeyLookup::Unknown(KeyMiss::Throttled { ago: 10 })
        );
        assert_eq!(
            cache.lookup(Some("r1"), rs, 3730, 3600, 30),
            KeyLookup::Refetch
        );
    }

    #[test]
    fn a_token_without_kid_needs_a_single_fitting_key() {
        let mut cache = JwksCache::default();
        cache.attempted(100, 3600);
        cache.replace(set(&["a", "b"]), 100);
        let miss = cache.lookup(None, SignatureAlg::Rs256, 100, 3600, 30);
        assert_eq!(miss, KeyLookup::Unknown(KeyMiss::Ambiguous));
        assert_eq!(KeyMiss::Ambiguous.describe(), "several keys and no kid");
        assert_eq!(
            KeyMiss::Throttled { ago: 3 }.describe(),
            "refetch throttled, last fetch 3 s ago"
        );
        // No key of the token's type: maybe a new one, worth one refetch.
        assert_eq!(
            cache.lookup(None, SignatureAlg::Es256, 100, 3600, 30),
            KeyLookup::Refetch
        );
    }
}
