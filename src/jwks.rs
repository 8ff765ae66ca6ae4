//! The OP's signing keys (a JWK Set, RFC 7517) and when to fetch them again.

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
        let kind_fits = match (&self.material, alg) {
            (KeyMaterial::Rsa { .. }, Rs256 | Rs384 | Rs512 | Ps256) => true,
            (KeyMaterial::P256(_), Es256) => true,
            (KeyMaterial::P384(_), Es384) => true,
            _ => false,
        };
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
    /// Not known, and the JWKS was fetched too recently to try again.
    Unknown,
}

/// The OP's keys as last fetched by this VM.
#[derive(Debug, Default)]
pub struct JwksCache {
    keys: Vec<Jwk>,
    fetched_at: Option<u64>,
    last_attempt: Option<u64>,
}

impl JwksCache {
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// Finds the key for a token header's `kid` and `alg`. An unknown kid (a rotated OP key)
    /// or a stale set allows one refetch per `min_refetch_s`, so a stream of tokens with made-up
    /// key ids cannot turn into a stream of JWKS requests.
    pub fn lookup(
        &self,
        kid: Option<&str>,
        alg: SignatureAlg,
        now: u64,
        max_age_s: u64,
        min_refetch_s: u64,
    ) -> KeyLookup<'_> {
        let stale = self
            .fetched_at
            .is_none_or(|t| now.saturating_sub(t) >= max_age_s);
        let may_refetch = self
            .last_attempt
            .is_none_or(|t| now.saturating_sub(t) >= min_refetch_s);
        if !stale {
            let mut candidates = self.keys.iter().filter(|k| k.fits(alg));
            let found = match kid {
                Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid)),
                // Without a kid, only an unambiguous key will do.
                None => {
                    let mut c = candidates;
                    match (c.next(), c.next()) {
                        (Some(k), None) => Some(k),
                        _ => None,
                    }
                }
            };
            if let Some(k) = found {
                return KeyLookup::Found(k);
            }
        }
        if may_refetch {
            KeyLookup::Refetch
        } else if stale && !self.keys.is_empty() {
            // Could not refresh lately: keep using the keys we have rather than fail every login.
            let found = self
                .keys
                .iter()
                .find(|k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid));
            found.map_or(KeyLookup::Unknown, KeyLookup::Found)
        } else {
            KeyLookup::Unknown
        }
    }

    /// Records that a fetch was started (whatever its outcome).
    pub fn attempted(&mut self, now: u64) {
        self.last_attempt = Some(now);
    }

    pub fn replace(&mut self, keys: Vec<Jwk>, now: u64) {
        self.keys = keys;
        self.fetched_at = Some(now);
    }
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

    #[test]
    fn unknown_kid_refetches_at_most_once_per_interval() {
        let mut cache = JwksCache::default();
        assert_eq!(
            cache.lookup(Some("r1"), SignatureAlg::Rs256, 100, 3600, 30),
            KeyLookup::Refetch
        );
        cache.attempted(100);
        let keys = parse_jwks(
            json!({"keys": [rsa_jwk_json("r1", &[1; 256])]})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        cache.replace(keys, 100);
        assert!(matches!(
            cache.lookup(Some("r1"), SignatureAlg::Rs256, 101, 3600, 30),
            KeyLookup::Found(_)
        ));
        assert!(matches!(
            cache.lookup(None, SignatureAlg::Rs256, 101, 3600, 30),
            KeyLookup::Found(_)
        ));
        assert_eq!(
            cache.lookup(Some("r2"), SignatureAlg::Rs256, 110, 3600, 30),
            KeyLookup::Unknown
        );
        assert_eq!(
            cache.lookup(Some("r2"), SignatureAlg::Rs256, 130, 3600, 30),
            KeyLookup::Refetch
        );
        // Stale after max age: refetch, but keep serving the old keys if refetching is throttled.
        cache.attempted(3700);
        assert!(matches!(
            cache.lookup(Some("r1"), SignatureAlg::Rs256, 3710, 3600, 30),
            KeyLookup::Found(_)
        ));
        assert_eq!(
            cache.lookup(Some("r1"), SignatureAlg::Rs256, 3730, 3600, 30),
            KeyLookup::Refetch
        );
    }
}
