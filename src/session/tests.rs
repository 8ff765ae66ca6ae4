use super::*;
use crate::http::HeaderOps;
use crate::login::tests::CountingEntropy;
use base64::Engine;

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
        created_at: now,
        claims,
        op: OpState::default(),
    }
}

const NOW: u64 = 1_800_000_000;
const IDLE: u64 = 3600;

#[test]
fn round_trip() {
    let keys = ring(&[("k1", 1)]);
    let s = session(NOW);
    let token = s.encode(&keys, &mut CountingEntropy(0)).unwrap();
    assert_eq!(Session::decode(&token, &keys, NOW + 10, IDLE), Some(s));
}

#[test]
fn tampered_cookie_is_no_session() {
    let keys = ring(&[("k1", 1)]);
    let token = session(NOW).encode(&keys, &mut CountingEntropy(0)).unwrap();
    let mut parts: Vec<String> = token.split('.').map(String::from).collect();
    // Swap in a payload claiming another subject, keeping the old signature.
    let mut forged = session(NOW);
    forged.sub = "mallory".into();
    let forged_token = forged.encode(&keys, &mut CountingEntropy(0)).unwrap();
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
    let token = session(NOW).encode(&old, &mut CountingEntropy(0)).unwrap();
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
    let new_token = session(NOW)
        .encode(&rotated, &mut CountingEntropy(0))
        .unwrap();
    assert_eq!(
        Token::decode_metadata(&new_token).unwrap().key_id(),
        Some("k2")
    );
}

#[test]
fn a_cookie_from_a_worker_whose_clock_is_ahead_is_valid() {
    let keys = ring(&[("k1", 1)]);
    let token = session(NOW + 1)
        .encode(&keys, &mut CountingEntropy(0))
        .unwrap();
    assert!(Session::decode(&token, &keys, NOW, IDLE).is_some());
}

#[test]
fn absolute_and_idle_expiry() {
    let keys = ring(&[("k1", 1)]);
    let s = session(NOW);
    let token = s.encode(&keys, &mut CountingEntropy(0)).unwrap();
    assert!(Session::decode(&token, &keys, NOW + IDLE - 1, IDLE).is_some());
    assert_eq!(
        Session::decode(&token, &keys, NOW + IDLE, IDLE),
        None,
        "idle"
    );
    let mut active = s.clone();
    active.last_activity = NOW + 14000;
    let token = active.encode(&keys, &mut CountingEntropy(0)).unwrap();
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
        ct: NOW,
        claims: Map::new(),
        op: OpState::default(),
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
    let token = session(NOW).encode(&keys, &mut CountingEntropy(0)).unwrap();
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
        let t = s.encode(&keys, &mut CountingEntropy(0)).unwrap();
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
    let token = session(NOW).encode(&keys, &mut CountingEntropy(0)).unwrap();
    let mut cache = SessionCache::new(10);
    assert!(cache
        .lookup(&token, &keys, NOW, IDLE, |_| Some(HeaderOps::from([])))
        .is_some());
    let mut other = session(NOW);
    other.sub = "mallory".into();
    let other_token = other.encode(&keys, &mut CountingEntropy(0)).unwrap();
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

fn encrypted(keys: &[(&str, u8)]) -> KeyRing {
    let keys: Vec<_> = keys
        .iter()
        .map(|(kid, b)| (kid.to_string(), vec![*b; 32]))
        .collect();
    KeyRing::with_type(&keys, CookieType::Encrypted)
}

fn with_tokens(now: u64) -> Session {
    let mut s = session(now);
    s.op = OpState {
        op_sid: Some("op-sid-1".into()),
        refresh_token: Some("rt-secret".into()),
        access_token: Some("at-secret".into()),
        access_expires_at: Some(now + 600),
        id_token: Some("a.b.c".into()),
        validated_at: now,
        generation: 3,
    };
    s
}

#[test]
fn an_encrypted_cookie_round_trips_and_hides_its_content() {
    let keys = encrypted(&[("k1", 1)]);
    let s = with_tokens(NOW);
    let token = s.encode(&keys, &mut CountingEntropy(0)).unwrap();
    assert_eq!(token.split('.').count(), 5);
    for secret in ["alice", "rt-secret", "at-secret", "staff", "op-sid-1"] {
        assert!(!token.contains(secret), "{secret} readable");
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        assert!(
            !token.contains(&b64[..b64.len() - 2]),
            "{secret} readable as base64"
        );
    }
    assert_eq!(
        Session::decode(&token, &keys, NOW + 1, IDLE),
        Some(s.clone())
    );
    // Two seals of one session differ (a fresh IV each time).
    let again = s.encode(&keys, &mut CountingEntropy(9)).unwrap();
    assert_ne!(token, again);
    // Rotation: a new first key seals, the old one still opens.
    let rotated = encrypted(&[("k2", 2), ("k1", 1)]);
    assert_eq!(Session::decode(&token, &rotated, NOW, IDLE), Some(s));
    assert_eq!(
        Session::decode(&token, &encrypted(&[("k1", 2)]), NOW, IDLE),
        None
    );
}

#[test]
fn cookie_types_do_not_cross_and_signed_cookies_drop_tokens() {
    let enc = encrypted(&[("k1", 1)]);
    let signed = ring(&[("k1", 1)]);
    let s = with_tokens(NOW);
    let e = s.encode(&enc, &mut CountingEntropy(0)).unwrap();
    let j = s.encode(&signed, &mut CountingEntropy(0)).unwrap();
    assert_eq!(Session::decode(&e, &signed, NOW, IDLE), None);
    assert_eq!(Session::decode(&j, &enc, NOW, IDLE), None);
    let back = Session::decode(&j, &signed, NOW, IDLE).unwrap();
    assert_eq!(back.op.refresh_token, None);
    assert_eq!(back.op.access_token, None);
    assert_eq!(back.op.op_sid.as_deref(), Some("op-sid-1"));
    assert!(!j.contains("secret"));
}

#[test]
fn an_encrypted_cookie_still_has_its_clocks() {
    let keys = encrypted(&[("k1", 1)]);
    let token = session(NOW).encode(&keys, &mut CountingEntropy(0)).unwrap();
    assert!(Session::decode(&token, &keys, NOW + IDLE - 1, IDLE).is_some());
    assert_eq!(Session::decode(&token, &keys, NOW + IDLE, IDLE), None);
    // The login key's cookies are JWS, never a session's JWE.
    let login_sealed = keys
        .seal(
            SealPurpose::PreservedRequest,
            b"{}",
            &mut CountingEntropy(0),
        )
        .unwrap();
    assert_eq!(Session::decode(&login_sealed, &keys, NOW, IDLE), None);
}
