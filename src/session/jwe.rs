//! Compact JWE (RFC 7516) with direct encryption (`alg: dir`) and AES-256-GCM (`enc: A256GCM`,
//! RFC 7518 §5.3): the framing is written here, the cipher is the `aes-gcm` crate's.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;

use super::keys::{EncKey, MAX_SEALED_LEN};
use crate::login::Entropy;

const IV_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
    enc: &'a str,
    kid: &'a str,
    /// Compression is never used: a `zip` header is refused rather than ignored.
    zip: Option<&'a str>,
}

pub(super) fn seal(key: &EncKey, plaintext: &[u8], rng: &mut dyn Entropy) -> Option<String> {
    let header = serde_json::json!({"alg": "dir", "enc": "A256GCM", "kid": key.kid});
    let protected = URL_SAFE_NO_PAD.encode(header.to_string());
    let mut iv = [0u8; IV_LEN];
    if !rng.fill(&mut iv) {
        return None;
    }
    let cipher = Aes256Gcm::new_from_slice(&key.key).ok()?;
    let nonce = Nonce::try_from(&iv[..]).ok()?;
    let sealed = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: protected.as_bytes(),
            },
        )
        .ok()?;
    let (ciphertext, tag) = sealed.split_at(sealed.len().checked_sub(TAG_LEN)?);
    Some(format!(
        "{protected}..{}.{}.{}",
        URL_SAFE_NO_PAD.encode(iv),
        URL_SAFE_NO_PAD.encode(ciphertext),
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

pub(super) fn open(keys: &[EncKey], token: &str) -> Option<Vec<u8>> {
    if token.len() > MAX_SEALED_LEN {
        return None;
    }
    let mut parts = token.split('.');
    let (protected, encrypted_key, iv, ciphertext, tag) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || !encrypted_key.is_empty() {
        return None;
    }
    let header_json = URL_SAFE_NO_PAD.decode(protected).ok()?;
    let header: Header = serde_json::from_slice(&header_json).ok()?;
    if header.alg != "dir" || header.enc != "A256GCM" || header.zip.is_some() {
        return None;
    }
    let key = keys.iter().find(|k| k.kid == header.kid)?;
    let iv = URL_SAFE_NO_PAD.decode(iv).ok()?;
    let nonce = Nonce::try_from(iv.as_slice()).ok()?;
    let mut sealed = URL_SAFE_NO_PAD.decode(ciphertext).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    if tag.len() != TAG_LEN {
        return None;
    }
    sealed.extend_from_slice(&tag);
    let cipher = Aes256Gcm::new_from_slice(&key.key).ok()?;
    cipher
        .decrypt(
            &nonce,
            Payload {
                msg: &sealed,
                aad: protected.as_bytes(),
            },
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::tests::CountingEntropy;

    fn key(kid: &str, b: u8) -> EncKey {
        EncKey {
            kid: kid.into(),
            key: [b; 32],
        }
    }

    #[test]
    fn round_trip_and_framing() {
        let k = key("k1", 7);
        let token = seal(&k, b"hello", &mut CountingEntropy(1)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[1], "", "dir: no encrypted key");
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "dir");
        assert_eq!(header["enc"], "A256GCM");
        assert_eq!(header["kid"], "k1");
        assert_eq!(open(&[k], &token).as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn any_change_or_other_key_fails() {
        let k = key("k1", 7);
        let token = seal(&k, b"hello world", &mut CountingEntropy(1)).unwrap();
        assert_eq!(open(&[key("k1", 8)], &token), None, "same kid, other key");
        assert_eq!(open(&[key("k2", 7)], &token), None, "unknown kid");
        for i in 0..token.len() {
            let c = token.as_bytes()[i];
            if c == b'.' {
                continue;
            }
            let flipped = if c == b'A' { 'B' } else { 'A' };
            let bad = format!("{}{}{}", &token[..i], flipped, &token[i + 1..]);
            // The last character of a segment may only carry padding bits.
            if let Some(p) = open(std::slice::from_ref(&k), &bad) {
                assert_eq!(p, b"hello world");
            }
        }
        let mut parts: Vec<&str> = token.split('.').collect();
        let other_header =
            URL_SAFE_NO_PAD.encode(r#"{"alg":"dir","enc":"A256GCM","kid":"k1","x":1}"#);
        parts[0] = &other_header;
        assert_eq!(
            open(std::slice::from_ref(&k), &parts.join(".")),
            None,
            "header is AAD"
        );
        for bad in ["", "a.b.c", "....", "a..b.c.d.e", &format!("{token}.x")] {
            assert_eq!(open(std::slice::from_ref(&k), bad), None);
        }
    }

    #[test]
    fn other_algorithms_and_zip_are_refused() {
        let k = key("k1", 7);
        let token = seal(&k, b"x", &mut CountingEntropy(1)).unwrap();
        let rest = token.split_once('.').unwrap().1;
        for h in [
            r#"{"alg":"A256KW","enc":"A256GCM","kid":"k1"}"#,
            r#"{"alg":"dir","enc":"A128GCM","kid":"k1"}"#,
            r#"{"alg":"dir","enc":"A256GCM","kid":"k1","zip":"DEF"}"#,
            r#"{"alg":"none","enc":"A256GCM","kid":"k1"}"#,
        ] {
            let forged = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(h));
            assert_eq!(open(std::slice::from_ref(&k), &forged), None, "{h}");
        }
    }

    #[test]
    fn no_randomness_no_seal() {
        struct Broken;
        impl Entropy for Broken {
            fn fill(&mut self, _: &mut [u8]) -> bool {
                false
            }
        }
        assert_eq!(seal(&key("k", 1), b"x", &mut Broken), None);
    }
}
