//! The session cookie: `Session::decode` and `SessionCache::lookup` on arbitrary cookie values
//! (nothing unsigned may ever become a session), and encode → decode round trips of random
//! sessions, with one character of the cookie changed afterwards.
#![no_main]

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use envoy_wam::http::HeaderOps;
use envoy_wam::session::{KeyRing, Session, SessionCache};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

/// As in src/session.rs: the session key is HMAC(secret, label).
const SESSION_KEY_LABEL: &[u8] = b"envoy-wam session cookie v1";
const SECRETS: [(&str, [u8; 32]); 2] = [("k1", [1; 32]), ("k0", [2; 32])];
const BASE: u64 = 1_700_000_000;
/// jwt-simple keeps times in 32 bits of seconds (coarsetime): anything past 2106 is clamped,
/// so the round trip stays below that.
fn at(offset: u32) -> u64 {
    BASE + u64::from(offset % 1_000_000_000)
}
/// `max_token_length` in `KeyRing::verify`.
const MAX_COOKIE: usize = envoy_wam::session::MAX_SEALED_LEN;

/// Signed cookies take no randomness; encrypted ones would take their IV from here.
struct NoEntropy;
impl envoy_wam::login::Entropy for NoEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        buf.fill(7);
        true
    }
}

#[derive(Arbitrary, Debug)]
enum Claim {
    Str(String),
    Bool(bool),
    U(u64),
    I(i64),
    List(Vec<String>),
}

#[derive(Arbitrary, Debug)]
struct RoundTrip {
    sid: String,
    sub: String,
    auth_time: u32,
    last_activity: u32,
    expires_at: u32,
    idle_timeout: u16,
    now: u32,
    claims: Vec<(String, Claim)>,
    /// Which key of the ring signs (rotation: any of them must verify).
    old_key: bool,
    mutate_at: u16,
    mutate_to: u8,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(String),
    RoundTrip(RoundTrip),
}

fn ring(old_first: bool) -> KeyRing {
    let mut keys: Vec<(String, Vec<u8>)> = SECRETS
        .iter()
        .map(|(kid, s)| (kid.to_string(), s.to_vec()))
        .collect();
    if old_first {
        keys.reverse();
    }
    KeyRing::new(&keys)
}

/// An HS256 check written apart from the filter's: header names HS256 and one of our kids,
/// and the signature is HMAC(session key, header.payload).
fn validly_signed(token: &str) -> bool {
    let b64 = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some(header) = b64
        .decode(h)
        .ok()
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
    else {
        return false;
    };
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return false;
    }
    let kid = header.get("kid").and_then(Value::as_str);
    let Some((_, secret)) = SECRETS.iter().find(|(k, _)| Some(*k) == kid) else {
        return false;
    };
    let key = hmac_sha256::HMAC::mac(SESSION_KEY_LABEL, secret);
    let mac = hmac_sha256::HMAC::mac(format!("{h}.{p}").as_bytes(), key);
    b64.decode(s).is_ok_and(|sig| sig == mac)
}

fn signed_part(token: &str) -> &str {
    token.rsplit_once('.').map_or(token, |(hp, _)| hp)
}

fn check_raw(token: &str, keys: &KeyRing, now: u64, idle: u64) -> Option<Session> {
    let decoded = Session::decode(token, keys, now, idle);
    if let Some(s) = &decoded {
        assert!(validly_signed(token), "unsigned cookie accepted: {token:?}");
        assert!(s.is_live(now, idle));
    }
    // The cache agrees with the decoder, on the miss and on the hit.
    let mut cache = SessionCache::new(4);
    for _ in 0..2 {
        let hit = cache.lookup(token, keys, now, idle, |_| Some(HeaderOps::from([])));
        assert_eq!(hit.map(|e| e.session.clone()), decoded);
    }
    decoded
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(token) => {
            let keys = ring(false);
            check_raw(&token, &keys, BASE, 3600);
            check_raw(token.trim(), &keys, BASE + 100_000, u64::MAX);
        }
        Input::RoundTrip(r) => {
            let mut claims = Map::new();
            for (name, c) in r.claims {
                let v = match c {
                    Claim::Str(s) => Value::from(s),
                    Claim::Bool(b) => Value::from(b),
                    Claim::U(u) => Value::from(u),
                    Claim::I(i) => Value::from(i),
                    Claim::List(l) => Value::from(l),
                };
                claims.insert(name, v);
            }
            let session = Session {
                sid: r.sid,
                sub: r.sub,
                auth_time: at(r.auth_time),
                expires_at: at(r.expires_at),
                last_activity: at(r.last_activity),
                created_at: at(r.auth_time),
                claims,
                op: Default::default(),
            };
            let keys = ring(r.old_key);
            let token = session.encode(&keys, &mut NoEntropy).expect("encode");
            assert!(
                validly_signed(&token),
                "our own cookie fails the reference check"
            );
            let now = at(r.now);
            let idle = u64::from(r.idle_timeout) + 1;
            let decoded = check_raw(&token, &ring(false), now, idle);
            let expected = session.is_live(now, idle).then(|| session.clone());
            if token.len() <= MAX_COOKIE {
                assert_eq!(decoded, expected, "round trip of {token}");
            } else {
                // Too long to be accepted back (browsers drop cookies over 4 KiB anyway).
                assert_eq!(decoded, None);
            }
            // One character changed: either no session, or the signed part is unchanged (a
            // base64 spelling of the same signature) and so is the session.
            let mut bytes = token.clone().into_bytes();
            let at = usize::from(r.mutate_at) % bytes.len();
            if r.mutate_to.is_ascii() && bytes[at] != r.mutate_to {
                bytes[at] = r.mutate_to;
                let mutated = String::from_utf8(bytes).expect("ascii");
                if let Some(s) = check_raw(&mutated, &ring(false), now, idle) {
                    assert_eq!(signed_part(&mutated), signed_part(&token), "{mutated}");
                    assert_eq!(Some(s), expected);
                }
            }
        }
    }
});
