//! The gateway's own signed JWTs: identity for a site (JWT identity mapping), and the subject
//! tokens a web session presents to a Security Token Service. ES256 or RS256, with a key id;
//! the public keys are published as a JWK Set (served at `<base_path>/authtoken/JWKS`).
//!
//! Keys are parsed and the JWK Set is built once, at configuration load. Signing costs real
//! time (RS256 most of all), so callers cache what they sign; nothing here signs per request
//! on its own.

use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jwt_simple::prelude::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::config::ConfigError;

/// `authtoken` in the plugin configuration.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthToken {
    pub issuer: String,
    #[serde(default = "default_lifetime")]
    pub lifetime_s: u64,
    pub keys: Vec<RawAuthTokenKey>,
}

/// One signing key: `{"kid": "gw-1", "alg": "ES256", "private_key_pem": "-----BEGIN ..."}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuthTokenKey {
    pub kid: String,
    pub alg: String,
    pub private_key_pem: String,
}

fn default_lifetime() -> u64 {
    300
}

/// Longest lifetime accepted for a token the gateway signs.
const MAX_LIFETIME_S: u64 = 24 * 3600;

#[allow(clippy::large_enum_variant)] // one per configuration
enum SigningKey {
    Es256(ES256KeyPair),
    /// RS256 signing costs about 100 KB of .wasm (RSA private-key arithmetic and key formats),
    /// so it is in the build only with the `rs256-signing` feature.
    #[cfg(feature = "rs256-signing")]
    Rs256(RS256KeyPair),
}

/// The loaded `authtoken` configuration: the first key signs, every key is published.
pub struct AuthTokenSigner {
    pub issuer: String,
    /// Default lifetime of the tokens signed (`authtoken.lifetime_s`).
    pub lifetime_s: u64,
    signing: SigningKey,
    kid: String,
    jwks_json: String,
}

impl fmt::Debug for AuthTokenSigner {
    /// Never the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let alg = match self.signing {
            SigningKey::Es256(_) => "ES256",
            #[cfg(feature = "rs256-signing")]
            SigningKey::Rs256(_) => "RS256",
        };
        f.debug_struct("AuthTokenSigner")
            .field("issuer", &self.issuer)
            .field("lifetime_s", &self.lifetime_s)
            .field("kid", &self.kid)
            .field("alg", &alg)
            .finish_non_exhaustive()
    }
}

/// The DER inside a PEM block with the given label.
fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let pem = pem.trim();
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let inner = pem.strip_prefix(&begin)?.strip_suffix(&end)?;
    let b64: String = inner.split_whitespace().collect();
    STANDARD.decode(b64).ok()
}

/// A minimal DER reader: just what reading a P-256 private key needs. Never panics.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    /// The next element if it has `tag`: its contents, and the reader moves past it.
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        let (&t, rest) = self.0.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = match first {
            n if n < 0x80 => (usize::from(n), rest),
            0x81 => {
                let (&n, rest) = rest.split_first()?;
                (usize::from(n), rest)
            }
            0x82 => {
                let (hi, lo) = (*rest.first()?, *rest.get(1)?);
                ((usize::from(hi) << 8) | usize::from(lo), rest.get(2..)?)
            }
            _ => return None,
        };
        let contents = rest.get(..len)?;
        self.0 = rest.get(len..)?;
        Some(contents)
    }

    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The private scalar of an RFC 5915 ECPrivateKey on P-256 (the curve, when named inside,
/// must be P-256).
fn sec1_p256_scalar(der: &[u8]) -> Option<&[u8]> {
    let mut outer = Der(der);
    let mut key = Der(outer.take(SEQUENCE)?);
    if key.take(INTEGER)? != [1] {
        return None;
    }
    let scalar = key.take(OCTET_STRING)?;
    if key.peek() == Some(0xa0) {
        let mut params = Der(key.take(0xa0)?);
        if params.take(OID)? != OID_P256 {
            return None;
        }
    }
    (scalar.len() == 32).then_some(scalar)
}

/// The private scalar of a PKCS#8 (RFC 5208) P-256 key.
fn pkcs8_p256_scalar(der: &[u8]) -> Option<&[u8]> {
    let mut outer = Der(der);
    let mut info = Der(outer.take(SEQUENCE)?);
    if info.take(INTEGER)? != [0] {
        return None;
    }
    let mut alg = Der(info.take(SEQUENCE)?);
    if alg.take(OID)? != OID_EC_PUBLIC_KEY || alg.take(OID)? != OID_P256 {
        return None;
    }
    sec1_p256_scalar(info.take(OCTET_STRING)?)
}

/// A P-256 key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`, what
/// `openssl ecparam -genkey` writes). Read here rather than by the PKCS#8 crates, which cost
/// about 50 KB of .wasm.
fn p256_from_pem(pem: &str) -> Option<ES256KeyPair> {
    let scalar = if let Some(der) = pem_body(pem, "PRIVATE KEY") {
        pkcs8_p256_scalar(&der)?.to_vec()
    } else {
        sec1_p256_scalar(&pem_body(pem, "EC PRIVATE KEY")?)?.to_vec()
    };
    ES256KeyPair::from_bytes(&scalar).ok()
}

fn jwk_of(kid: &str, key: &SigningKey) -> Value {
    match key {
        SigningKey::Es256(k) => {
            let point = k.public_key().public_key().to_bytes_uncompressed();
            let (x, y) = match (point.get(1..33), point.get(33..65)) {
                (Some(x), Some(y)) => (x, y),
                _ => (&[][..], &[][..]),
            };
            json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(x),
                   "y": URL_SAFE_NO_PAD.encode(y), "kid": kid, "alg": "ES256", "use": "sig"})
        }
        #[cfg(feature = "rs256-signing")]
        SigningKey::Rs256(k) => {
            let c = k.public_key().to_components();
            json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&c.n), "e": URL_SAFE_NO_PAD.encode(&c.e),
                   "kid": kid, "alg": "RS256", "use": "sig"})
        }
    }
}

/// Claims the signer sets itself; copies among the caller's claims are dropped.
const REGISTERED: &[&str] = &["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "nonce"];

impl AuthTokenSigner {
    /// Loads the keys and builds the JWK Set. Errors name the field, e.g.
    /// `authtoken.keys[0].private_key_pem`.
    pub fn compile(raw: RawAuthToken) -> Result<Self, ConfigError> {
        if raw.issuer.is_empty() {
            return Err(ConfigError::new("authtoken.issuer", "must not be empty"));
        }
        // `iss` is a StringOrURI (RFC 7519 §4.1.1): a name such as `envoy-wam` will do.
        if raw.issuer.chars().any(char::is_control) || raw.issuer.len() > 512 {
            return Err(ConfigError::new(
                "authtoken.issuer",
                "must be printable text of at most 512 characters",
            ));
        }
        if raw.lifetime_s == 0 || raw.lifetime_s > MAX_LIFETIME_S {
            return Err(ConfigError::new(
                "authtoken.lifetime_s",
                format!("must be between 1 and {MAX_LIFETIME_S}"),
            ));
        }
        if raw.keys.is_empty() {
            return Err(ConfigError::new(
                "authtoken.keys",
                "must list at least one key (the first signs)",
            ));
        }
        let mut jwks = Vec::new();
        let mut first = None;
        for (i, k) in raw.keys.into_iter().enumerate() {
            let field = |f: &str| format!("authtoken.keys[{i}].{f}");
            if k.kid.is_empty() || !k.kid.bytes().all(|c| c.is_ascii_graphic()) {
                return Err(ConfigError::new(
                    field("kid"),
                    "must be a non-empty printable key id",
                ));
            }
            if jwks.iter().any(|j: &Value| j["kid"] == k.kid.as_str()) {
                return Err(ConfigError::new(
                    field("kid"),
                    format!("`{}` is listed twice", k.kid),
                ));
            }
            let key = match k.alg.as_str() {
                "ES256" => p256_from_pem(&k.private_key_pem)
                    .map(SigningKey::Es256)
                    .ok_or_else(|| {
                        ConfigError::new(
                            field("private_key_pem"),
                            "not a P-256 private key in PEM (PKCS#8 `BEGIN PRIVATE KEY` or SEC1 `BEGIN EC PRIVATE KEY`)",
                        )
                    })?,
                #[cfg(feature = "rs256-signing")]
                "RS256" => RS256KeyPair::from_pem(&k.private_key_pem)
                    .map(SigningKey::Rs256)
                    .map_err(|_| {
                        ConfigError::new(
                            field("private_key_pem"),
                            "not an RSA private key of 2048 to 4096 bits in PEM (PKCS#8 `BEGIN PRIVATE KEY` or PKCS#1 `BEGIN RSA PRIVATE KEY`)",
                        )
                    })?,
                #[cfg(not(feature = "rs256-signing"))]
                "RS256" => {
                    return Err(ConfigError::new(
                        field("alg"),
                        "RS256 signing is not in this build (build with the cargo feature \
                         `rs256-signing`, about 100 KB more .wasm); use ES256",
                    ));
                }
                _ => {
                    return Err(ConfigError::new(field("alg"), "must be ES256 or RS256"));
                }
            };
            jwks.push(jwk_of(&k.kid, &key));
            if first.is_none() {
                first = Some((k.kid, key));
            }
        }
        let Some((kid, signing)) = first else {
            return Err(ConfigError::new("authtoken.keys", "must not be empty"));
        };
        let signing = match signing {
            SigningKey::Es256(k) => SigningKey::Es256(k.with_key_id(&kid)),
            #[cfg(feature = "rs256-signing")]
            SigningKey::Rs256(k) => SigningKey::Rs256(k.with_key_id(&kid)),
        };
        Ok(Self {
            issuer: raw.issuer,
            lifetime_s: raw.lifetime_s,
            signing,
            kid,
            jwks_json: json!({ "keys": jwks }).to_string(),
        })
    }

    /// The public JWK Set to serve at `<base_path>/authtoken/JWKS`.
    pub fn jwks_json(&self) -> &str {
        &self.jwks_json
    }

    /// The key id of the signing key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs a JWT: `iss` (this issuer), `aud`, `sub` (from `claims`, if a string), `iat` =
    /// `now`, `exp` = `now + lifetime_s`, `jti`, and the other `claims` as given; the header
    /// names the key id. `None` if signing failed (it does not for keys that loaded).
    pub fn sign(
        &self,
        claims: Map<String, Value>,
        audience: &str,
        now: u64,
        lifetime_s: u64,
        jti: &str,
    ) -> Option<String> {
        let mut custom = claims;
        let subject = match custom.remove("sub") {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        for name in REGISTERED {
            custom.remove(*name);
        }
        let claims = JWTClaims {
            issued_at: Some(UnixTimeStamp::from_secs(now)),
            expires_at: Some(UnixTimeStamp::from_secs(now.saturating_add(lifetime_s))),
            invalid_before: None,
            issuer: Some(self.issuer.clone()),
            subject,
            audiences: Some(Audiences::AsString(audience.to_string())),
            jwt_id: Some(jti.to_string()),
            nonce: None,
            custom,
        };
        match &self.signing {
            SigningKey::Es256(k) => k.sign(claims).ok(),
            #[cfg(feature = "rs256-signing")]
            SigningKey::Rs256(k) => k.sign(claims).ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::{parse_jwks, KeyMaterial};

    const NOW: u64 = 1_700_000_000;

    // Test-only keys (generated with openssl for these tests; never used anywhere else).
    const EC_PKCS8: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfyv0FJtKZ8bZIYjO\n\
VB+fnPuAMcMa6VgFu8XsrF1UUu6hRANCAAT1tD44epT/ta2PQKzRv7Q/Bz1fE5z8\n\
xdvWepu+aFdDME922kc5BMST/1bpsT/we6tcJv455hS6f4+XRRgQFmb2\n\
-----END PRIVATE KEY-----\n\
";
    const EC_SEC1: &str = "\
-----BEGIN EC PRIVATE KEY-----\n\
MHcCAQEEIH8r9BSbSmfG2SGIzlQfn5z7gDHDGulYBbvF7KxdVFLuoAoGCCqGSM49\n\
AwEHoUQDQgAE9bQ+OHqU/7Wtj0Cs0b+0Pwc9XxOc/MXb1nqbvmhXQzBPdtpHOQTE\n\
k/9W6bE/8HurXCb+OeYUun+Pl0UYEBZm9g==\n\
-----END EC PRIVATE KEY-----\n\
";
    const RSA_PKCS8: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQDLPVGYqzds5sqs\n\
R/2DZv4pY84RAiuXcSl6ujXsH2r0pm0fyC2xQ4mY/+V8ANAPJmPnJsKODiArdNan\n\
TInEgzRTkiKu/6QclGf85WaGAk6F1uGE7ky5ecUdcCD9lTKoIVB6jsXN7+UOoCPf\n\
/Tur6srLClxWTJ0+6niJTM142mh5ur+E+p0688DNZuhA8RzBtDx+lDCJ+4+eOur1\n\
u6raD+Y36Kyk9i0BByqpgd4rcXv6pb9waJu04AZ1G6G4cRJiP4yo3WbgafVi/XBU\n\
/Dv6FCVLS49kTPao+JsHgzhU/JINfcHzulTxBfaAOBDFtf2BuLTMDrsPHctusAdH\n\
QlhFSW8xAgMBAAECggEACAKfr6u34IPsIwQnWsF5bPoxCfyS6UIdh2fFbkwCtCfH\n\
D0SdgGoQB0a2rb9+c8poj5i4fE7UN8JAH5HlsCgXrN+KnGkY98NlodMMymVW4PGK\n\
K+oUfg7tlO5xbm0t9PBzMpFj/GzjE0N+hnp9mpYDbiM3ZnNYkz08iPTM+GFrUrjW\n\
jmGQFxUV401Z5KWGPn1ptNaSALlAZdeY9k8rHRrJYNfvhfuTIFMw5nC6z7y9AT6t\n\
REm+D4F7iRgrmmf6nGHb1ewLGeJiY6Hnu4rzpyELza56JNPu5ilNjbWOCo6zyX9k\n\
EOUoGdNi5x9F8BHesaC6bsvd4RSs6Z0/HzQON7dNEQKBgQDmR5Dr5zwoOVrNBjx4\n\
4hks0eK8W8uAzzTs5Hbgb/Mi+FDNNrw7NbQ7G8qJLnWMUDOvSyN1lvv7rA68GG2G\n\
Ic+Kh0fPQbMflCssNTxMOKlpcpjLx0+UYK4ejZabDndJoGpN/v2P+mdIi4QMo2Dr\n\
6Efvkn1rNKisauZtK0Xx4pEuLQKBgQDh8JdV4lGEH5HiifOvRQdeV7qWcXU5aqA5\n\
8Fn1TUgGlJkf9YBNLuXLN4cKaVsCALPSNKGVZGco9OLOLZVveWEFbGyPAS5Vjvcy\n\
oucqH4ByCW6xciq0PJN1iZKlyasCb1Z+iEoZmsvNH/8ioDhzEugxAQulMR+XG1wc\n\
sO4WISgrlQKBgGB8tBhkNyyTe5xUdJoiAnJpLxvFSquaJo7r23OG9NU+Pnz95jjY\n\
87+gkWiRcudr43wbe6wVq1d0bGgbxChjmlZtAIWy/Z7Jsp0/YRh+1V09ixA3XvzI\n\
1awvn18w3IKZGHG92fit7wDSlG3HNyEhnqKfOrXkxpgX4pzzeMc1K6exAoGAHxfY\n\
C8awhyk9D1sCwR0TzYTvNaL5ieRFlpOgHaT8A4PRqtdDR9vrXdMPb3xePOFR3dzG\n\
W+PMWpOQ3uThCs0+b9ui+O8lrDqXhE1s2JwrNgZcSGk4vUMU2/kJyGz/br9ZvOIO\n\
qIVoBJuhpec8vYFdmNjW/G3NNiNawswKh9saRx0CgYA934LDyp/M2EEmMa8IV1C5\n\
94MQEJZgAAxlHi7rc5Cx+RJ31l0GGhBkyYja38wQcwgnJ7KJFYndF2baUJdpheHe\n\
S9nJSChKsTPQamFK6sJUvSPaWWOarBbSYDV3ZLaHBoN0sAGx6KLZHFyJj2RiOLQ9\n\
WhxdqUJxwmbgZ++e1YoGwg==\n\
-----END PRIVATE KEY-----\n\
";
    #[cfg(feature = "rs256-signing")]
    const RSA_PKCS1: &str = "\
-----BEGIN RSA PRIVATE KEY-----\n\
MIIEogIBAAKCAQEAyz1RmKs3bObKrEf9g2b+KWPOEQIrl3Epero17B9q9KZtH8gt\n\
sUOJmP/lfADQDyZj5ybCjg4gK3TWp0yJxIM0U5Iirv+kHJRn/OVmhgJOhdbhhO5M\n\
uXnFHXAg/ZUyqCFQeo7Fze/lDqAj3/07q+rKywpcVkydPup4iUzNeNpoebq/hPqd\n\
OvPAzWboQPEcwbQ8fpQwifuPnjrq9buq2g/mN+ispPYtAQcqqYHeK3F7+qW/cGib\n\
tOAGdRuhuHESYj+MqN1m4Gn1Yv1wVPw7+hQlS0uPZEz2qPibB4M4VPySDX3B87pU\n\
8QX2gDgQxbX9gbi0zA67Dx3LbrAHR0JYRUlvMQIDAQABAoIBAAgCn6+rt+CD7CME\n\
J1rBeWz6MQn8kulCHYdnxW5MArQnxw9EnYBqEAdGtq2/fnPKaI+YuHxO1DfCQB+R\n\
5bAoF6zfipxpGPfDZaHTDMplVuDxiivqFH4O7ZTucW5tLfTwczKRY/xs4xNDfoZ6\n\
fZqWA24jN2ZzWJM9PIj0zPhha1K41o5hkBcVFeNNWeSlhj59abTWkgC5QGXXmPZP\n\
Kx0ayWDX74X7kyBTMOZwus+8vQE+rURJvg+Be4kYK5pn+pxh29XsCxniYmOh57uK\n\
86chC82ueiTT7uYpTY21jgqOs8l/ZBDlKBnTYucfRfAR3rGgum7L3eEUrOmdPx80\n\
Dje3TRECgYEA5keQ6+c8KDlazQY8eOIZLNHivFvLgM807OR24G/zIvhQzTa8OzW0\n\
OxvKiS51jFAzr0sjdZb7+6wOvBhthiHPiodHz0GzH5QrLDU8TDipaXKYy8dPlGCu\n\
Ho2Wmw53SaBqTf79j/pnSIuEDKNg6+hH75J9azSorGrmbStF8eKRLi0CgYEA4fCX\n\
VeJRhB+R4onzr0UHXle6lnF1OWqgOfBZ9U1IBpSZH/WATS7lyzeHCmlbAgCz0jSh\n\
lWRnKPTizi2Vb3lhBWxsjwEuVY73MqLnKh+AcglusXIqtDyTdYmSpcmrAm9WfohK\n\
GZrLzR//IqA4cxLoMQELpTEflxtcHLDuFiEoK5UCgYBgfLQYZDcsk3ucVHSaIgJy\n\
aS8bxUqrmiaO69tzhvTVPj58/eY42PO/oJFokXLna+N8G3usFatXdGxoG8QoY5pW\n\
bQCFsv2eybKdP2EYftVdPYsQN178yNWsL59fMNyCmRhxvdn4re8A0pRtxzchIZ6i\n\
nzq15MaYF+Kc83jHNSunsQKBgB8X2AvGsIcpPQ9bAsEdE82E7zWi+YnkRZaToB2k\n\
/AOD0arXQ0fb613TD298XjzhUd3cxlvjzFqTkN7k4QrNPm/bovjvJaw6l4RNbNic\n\
KzYGXEhpOL1DFNv5Cchs/26/WbziDqiFaASboaXnPL2BXZjY1vxtzTYjWsLMCofb\n\
GkcdAoGAPd+Cw8qfzNhBJjGvCFdQufeDEBCWYAAMZR4u63OQsfkSd9ZdBhoQZMmI\n\
2t/MEHMIJyeyiRWJ3Rdm2lCXaYXh3kvZyUgoSrEz0GphSurCVL0j2lljmqwW0mA1\n\
d2S2hwaDdLABseii2RxciY9kYji0PVocXalCccJm4GfvntWKBsI=\n\
-----END RSA PRIVATE KEY-----\n\
";

    fn raw(keys: &[(&str, &str, &str)]) -> RawAuthToken {
        RawAuthToken {
            issuer: "http://gateway.example".into(),
            lifetime_s: 300,
            keys: keys
                .iter()
                .map(|(kid, alg, pem)| RawAuthTokenKey {
                    kid: kid.to_string(),
                    alg: alg.to_string(),
                    private_key_pem: pem.to_string(),
                })
                .collect(),
        }
    }

    fn claims() -> Map<String, Value> {
        json!({"sub": "alice", "email": "alice@example.com", "groups": ["staff", "ops"],
               "iss": "https://spoofed", "exp": 1})
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    /// Verifies `token` with the key the published JWKS names in its header.
    fn verify(signer: &AuthTokenSigner, token: &str) -> JWTClaims<Map<String, Value>> {
        let keys = parse_jwks(signer.jwks_json().as_bytes()).expect("a JWK Set");
        let meta = Token::decode_metadata(token).unwrap();
        let key = keys
            .iter()
            .find(|k| k.kid.as_deref() == meta.key_id())
            .expect("the header's kid is published");
        let opts = Some(VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(NOW + 1)),
            allowed_issuers: Some(HashSet::from_strings(&["http://gateway.example"])),
            allowed_audiences: Some(HashSet::from_strings(&["https://sts.example/token"])),
            ..Default::default()
        });
        match (&key.material, meta.algorithm()) {
            (KeyMaterial::P256(p), "ES256") => ES256PublicKey::from_bytes(p)
                .unwrap()
                .verify_token(token, opts)
                .unwrap(),
            (KeyMaterial::Rsa { n, e }, "RS256") => RS256PublicKey::from_components(n, e)
                .unwrap()
                .verify_token(token, opts)
                .unwrap(),
            other => panic!("unexpected key/alg {:?}", other.1),
        }
    }

    fn check_signed(signer: &AuthTokenSigner, alg: &str) {
        let token = signer
            .sign(claims(), "https://sts.example/token", NOW, 60, "jti-1")
            .unwrap();
        let meta = Token::decode_metadata(&token).unwrap();
        assert_eq!(meta.algorithm(), alg);
        assert_eq!(meta.key_id(), Some(signer.kid()));
        let c = verify(signer, &token);
        assert_eq!(c.subject.as_deref(), Some("alice"));
        assert_eq!(c.issuer.as_deref(), Some("http://gateway.example"));
        assert_eq!(c.issued_at, Some(UnixTimeStamp::from_secs(NOW)));
        assert_eq!(c.expires_at, Some(UnixTimeStamp::from_secs(NOW + 60)));
        assert_eq!(c.jwt_id.as_deref(), Some("jti-1"));
        assert_eq!(c.custom["email"], "alice@example.com");
        assert_eq!(c.custom["groups"], json!(["staff", "ops"]));
        assert!(!c.custom.contains_key("sub") && !c.custom.contains_key("iss"));
        // The payload has one `iss` and one `exp`: the caller's copies were dropped.
        let payload = token.split('.').nth(1).unwrap();
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(payload.matches("\"iss\"").count(), 1);
        assert_eq!(payload.matches("\"exp\"").count(), 1);
        assert!(!payload.contains("spoofed"));
    }

    #[test]
    fn es256_signs_and_verifies_against_its_jwks() {
        for pem in [EC_PKCS8, EC_SEC1] {
            let s = AuthTokenSigner::compile(raw(&[("gw-1", "ES256", pem)])).unwrap();
            check_signed(&s, "ES256");
            let jwks: Value = serde_json::from_str(s.jwks_json()).unwrap();
            let k = &jwks["keys"][0];
            assert_eq!(
                (&k["kty"], &k["crv"], &k["kid"], &k["alg"], &k["use"]),
                (
                    &json!("EC"),
                    &json!("P-256"),
                    &json!("gw-1"),
                    &json!("ES256"),
                    &json!("sig")
                )
            );
            assert!(k.get("d").is_none(), "no private part");
        }
    }

    #[test]
    #[cfg(feature = "rs256-signing")]
    fn rs256_signs_and_verifies_against_its_jwks() {
        for pem in [RSA_PKCS8, RSA_PKCS1] {
            let s = AuthTokenSigner::compile(raw(&[("gw-r", "RS256", pem)])).unwrap();
            check_signed(&s, "RS256");
            let jwks: Value = serde_json::from_str(s.jwks_json()).unwrap();
            let k = &jwks["keys"][0];
            assert_eq!((&k["kty"], &k["e"]), (&json!("RSA"), &json!("AQAB")));
            assert!(
                k.get("d").is_none() && k.get("p").is_none(),
                "no private part"
            );
        }
    }

    #[test]
    #[cfg(feature = "rs256-signing")]
    fn first_key_signs_and_all_are_published() {
        let s = AuthTokenSigner::compile(raw(&[
            ("new", "RS256", RSA_PKCS8),
            ("old", "ES256", EC_PKCS8),
        ]))
        .unwrap();
        assert_eq!(s.kid(), "new");
        let keys = parse_jwks(s.jwks_json().as_bytes()).unwrap();
        let kids: Vec<_> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, vec!["new", "old"]);
        check_signed(&s, "RS256");
        let debug = format!("{s:?}");
        assert!(debug.contains("new") && !debug.contains("MII"), "{debug}");
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let err = |r: RawAuthToken| AuthTokenSigner::compile(r).unwrap_err();
        let e = err(raw(&[(
            "gw-1",
            "ES256",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        )]));
        assert_eq!(e.field, "authtoken.keys[0].private_key_pem");
        #[cfg(feature = "rs256-signing")]
        {
            let e = err(raw(&[("a", "ES256", EC_PKCS8), ("b", "RS256", EC_PKCS8)]));
            assert_eq!(e.field, "authtoken.keys[1].private_key_pem");
            assert!(!e.message.contains("MIG"), "the key is never echoed");
        }
        #[cfg(not(feature = "rs256-signing"))]
        {
            let e = err(raw(&[("a", "ES256", EC_PKCS8), ("b", "RS256", RSA_PKCS8)]));
            assert_eq!(e.field, "authtoken.keys[1].alg");
            assert!(e.message.contains("rs256-signing"), "{e}");
        }
        let e = err(raw(&[("a", "ES256", RSA_PKCS8)]));
        assert_eq!(e.field, "authtoken.keys[0].private_key_pem");
        assert!(!e.message.contains("MII"));
        assert_eq!(
            err(raw(&[("a", "HS256", EC_PKCS8)])).field,
            "authtoken.keys[0].alg"
        );
        assert_eq!(
            err(raw(&[("a", "none", EC_PKCS8)])).field,
            "authtoken.keys[0].alg"
        );
        assert_eq!(
            err(raw(&[("", "ES256", EC_PKCS8)])).field,
            "authtoken.keys[0].kid"
        );
        assert_eq!(
            err(raw(&[("a", "ES256", EC_PKCS8), ("a", "ES256", EC_PKCS8)])).field,
            "authtoken.keys[1].kid"
        );
        assert_eq!(err(raw(&[])).field, "authtoken.keys");
        let mut r = raw(&[("a", "ES256", EC_PKCS8)]);
        r.issuer = "line\nbreak".into();
        assert_eq!(err(r).field, "authtoken.issuer");
        let mut r = raw(&[("a", "ES256", EC_PKCS8)]);
        r.issuer = "envoy-wam".into();
        assert!(AuthTokenSigner::compile(r).is_ok(), "a StringOrURI issuer");
        let mut r = raw(&[("a", "ES256", EC_PKCS8)]);
        r.lifetime_s = 0;
        assert_eq!(err(r).field, "authtoken.lifetime_s");
        // Through serde: unknown fields are refused, lifetime defaults to 300.
        let ok: RawAuthToken = serde_json::from_value(json!({
            "issuer": "http://gw", "keys": [{"kid": "k", "alg": "ES256", "private_key_pem": EC_PKCS8}]
        }))
        .unwrap();
        assert_eq!(AuthTokenSigner::compile(ok).unwrap().lifetime_s, 300);
        assert!(serde_json::from_value::<RawAuthToken>(json!({
            "issuer": "http://gw", "keys": [], "lifetme_s": 3
        }))
        .is_err());
    }

    #[test]
    fn p256_key_reading_never_panics_and_checks_the_curve() {
        let der = pem_body(EC_PKCS8, "PRIVATE KEY").unwrap();
        assert!(pkcs8_p256_scalar(&der).is_some());
        for n in 0..der.len() {
            assert!(pkcs8_p256_scalar(&der[..n]).is_none(), "truncated at {n}");
        }
        let sec1 = pem_body(EC_SEC1, "EC PRIVATE KEY").unwrap();
        assert_eq!(sec1_p256_scalar(&sec1), pkcs8_p256_scalar(&der));
        for n in 0..sec1.len() {
            let _ = sec1_p256_scalar(&sec1[..n]);
        }
        // Another curve's OID (P-384: 1.3.132.0.34 would not even fit; flip the last byte).
        let at = der
            .windows(OID_P256.len())
            .position(|w| w == OID_P256)
            .unwrap();
        let mut other = der.clone();
        other[at + OID_P256.len() - 1] ^= 1;
        assert!(pkcs8_p256_scalar(&other).is_none());
        assert!(p256_from_pem("garbage").is_none());
        assert!(p256_from_pem(RSA_PKCS8).is_none());
        assert!(pkcs8_p256_scalar(&[0x30, 0x82, 0xff]).is_none());
        assert!(pkcs8_p256_scalar(&[0x30, 0x84, 1, 2, 3, 4]).is_none());
    }

    /// Signing cost, natively (run: cargo test --release --lib signing_time -- --ignored --nocapture).
    #[test]
    #[ignore]
    fn signing_time() {
        for (alg, pem) in [("ES256", EC_PKCS8), ("RS256", RSA_PKCS8)] {
            let Ok(s) = AuthTokenSigner::compile(raw(&[("k", alg, pem)])) else {
                println!("{alg}: not in this build");
                continue;
            };
            let n = 200;
            let start = std::time::Instant::now();
            for i in 0..n {
                s.sign(
                    claims(),
                    "https://sts.example/token",
                    NOW,
                    60,
                    &i.to_string(),
                )
                .unwrap();
            }
            let each = start.elapsed() / n;
            println!("{alg}: {each:?} per token");
        }
    }
}
