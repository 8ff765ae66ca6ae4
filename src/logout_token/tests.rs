use super::*;
use crate::id_token::tests::{TestOp, NOW};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::json;

const ISS: &str = "https://op.example.com";
const ALGS: &[SignatureAlg] = &[SignatureAlg::Rs256, SignatureAlg::Es256];

fn expected(now: u64) -> LogoutExpected<'static> {
    LogoutExpected {
        issuer: ISS,
        client_id: "pa_wam",
        now,
        clock_skew_s: 60,
        algorithms: ALGS,
        max_age_s: 180,
    }
}

fn good_claims() -> Value {
    json!({
        "iss": ISS, "aud": "pa_wam", "iat": NOW - 5, "exp": NOW + 115, "jti": "bWJq",
        "sub": "alice", "sid": "08a5019c-17e1-4977-8f42-65a12843ea02",
        "events": { BACKCHANNEL_LOGOUT_EVENT: {} }
    })
}

fn with(f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut c = good_claims();
    if let Some(map) = c.as_object_mut() {
        f(map);
    }
    c
}

fn sign_typed(op: &TestOp, claims: Value, typ: &str) -> String {
    let claims: JWTClaims<Map<String, Value>> = serde_json::from_value(claims).unwrap();
    let opts = HeaderOptions {
        signature_type: Some(typ.into()),
        ..Default::default()
    };
    op.es.sign_with_options(claims, &opts).unwrap()
}

fn sign(op: &TestOp, claims: Value) -> String {
    sign_typed(op, claims, "logout+jwt")
}

fn check(op: &TestOp, token: &str) -> Result<LogoutToken, LogoutTokenError> {
    validate(token, &op.jwks, 3600, 30, &expected(NOW))
}

#[test]
fn accepts_a_good_token() {
    let op = TestOp::new();
    let t = check(&op, &sign(&op, good_claims())).unwrap();
    assert_eq!(
        t,
        LogoutToken {
            sid: Some("08a5019c-17e1-4977-8f42-65a12843ea02".into()),
            sub: Some("alice".into()),
            iat: NOW - 5,
            jti: "bWJq".into(),
            exp: Some(NOW + 115),
        }
    );
}

#[test]
fn accepts_the_variants_the_spec_allows() {
    let op = TestOp::new();
    let cases = [
        // sid alone, sub alone.
        with(|c| drop(c.remove("sub"))),
        with(|c| drop(c.remove("sid"))),
        // Several audiences, no azp; no exp; other events alongside; event with members.
        with(|c| drop(c.insert("aud".into(), json!(["other", "pa_wam"])))),
        with(|c| drop(c.remove("exp"))),
        with(|c| {
            c.insert(
                "events".into(),
                json!({ "urn:other": 1, BACKCHANNEL_LOGOUT_EVENT: { "reason": "x" } }),
            );
        }),
        // Within the skew: iat a little ahead, exp a little behind.
        with(|c| drop(c.insert("iat".into(), (NOW + 30).into()))),
        with(|c| drop(c.insert("exp".into(), (NOW - 30).into()))),
        // Exactly max_age_s old.
        with(|c| drop(c.insert("iat".into(), (NOW - 180).into()))),
    ];
    for claims in cases {
        assert!(check(&op, &sign(&op, claims.clone())).is_ok(), "{claims}");
    }
    for typ in ["logout+jwt", "Logout+JWT", "application/logout+jwt"] {
        assert!(
            check(&op, &sign_typed(&op, good_claims(), typ)).is_ok(),
            "{typ}"
        );
    }
}

#[test]
fn refuses_each_bad_claim() {
    use LogoutTokenError::*;
    let op = TestOp::new();
    let cases: Vec<(Value, LogoutTokenError)> = vec![
        (
            with(|c| drop(c.insert("iss".into(), "https://evil".into()))),
            WrongIssuer,
        ),
        (with(|c| drop(c.remove("iss"))), MissingClaim("iss")),
        (
            with(|c| drop(c.insert("aud".into(), "other".into()))),
            WrongAudience,
        ),
        (
            with(|c| drop(c.insert("aud".into(), json!(["a", "b"])))),
            WrongAudience,
        ),
        (with(|c| drop(c.remove("aud"))), MissingClaim("aud")),
        (with(|c| drop(c.remove("events"))), MissingClaim("events")),
        (
            with(|c| drop(c.insert("events".into(), json!({})))),
            InvalidClaim("events"),
        ),
        (
            with(|c| drop(c.insert("events".into(), json!("x")))),
            InvalidClaim("events"),
        ),
        (
            with(|c| drop(c.insert("events".into(), json!([BACKCHANNEL_LOGOUT_EVENT])))),
            InvalidClaim("events"),
        ),
        (
            with(|c| drop(c.insert("events".into(), json!({ BACKCHANNEL_LOGOUT_EVENT: true })))),
            InvalidClaim("events"),
        ),
        (
            with(|c| drop(c.insert("events".into(), json!({ BACKCHANNEL_LOGOUT_EVENT: "{}" })))),
            InvalidClaim("events"),
        ),
        (
            with(|c| drop(c.insert("nonce".into(), "n-0S6".into()))),
            NoncePresent,
        ),
        (
            with(|c| {
                c.remove("sid");
                c.remove("sub");
            }),
            NoSubjectOrSession,
        ),
        (
            with(|c| drop(c.insert("sid".into(), 42.into()))),
            InvalidClaim("sid"),
        ),
        (
            with(|c| drop(c.insert("sid".into(), "".into()))),
            InvalidClaim("sid"),
        ),
        (
            with(|c| drop(c.insert("sub".into(), "".into()))),
            InvalidClaim("sub"),
        ),
        (
            with(|c| drop(c.insert("sid".into(), "s".repeat(MAX_CLAIM_LEN + 1).into()))),
            InvalidClaim("sid"),
        ),
        (with(|c| drop(c.remove("jti"))), MissingClaim("jti")),
        (
            with(|c| drop(c.insert("jti".into(), "".into()))),
            InvalidClaim("jti"),
        ),
        (with(|c| drop(c.remove("iat"))), MissingClaim("iat")),
        (
            with(|c| drop(c.insert("iat".into(), (NOW + 120).into()))),
            IssuedInFuture,
        ),
        (
            with(|c| drop(c.insert("iat".into(), (NOW - 181).into()))),
            TooOld,
        ),
        (
            with(|c| drop(c.insert("exp".into(), (NOW - 61).into()))),
            Expired,
        ),
    ];
    for (claims, want) in cases {
        assert_eq!(
            check(&op, &sign(&op, claims.clone())),
            Err(want),
            "{claims}"
        );
    }
}

#[test]
fn refuses_other_token_types() {
    let op = TestOp::new();
    // An ID token (typ JWT, as jwt-simple and most OPs write it) or an access token.
    for typ in [
        "JWT",
        "at+jwt",
        "application/jwt",
        "logout+jwt2",
        "secevent+jwt",
    ] {
        assert_eq!(
            check(&op, &sign_typed(&op, good_claims(), typ)),
            Err(LogoutTokenError::WrongType),
            "{typ}"
        );
    }
    assert!(typ_allowed(None));
    assert!(!typ_allowed(Some("")));
}

#[test]
fn refuses_bad_signatures_and_algorithms() {
    let op = TestOp::new();
    let token = sign(&op, good_claims());
    let mut parts = token.split('.');
    let (head, _, sig) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());

    // Another key with the same kid.
    let impostor = TestOp::new();
    assert_eq!(
        check(&op, &sign(&impostor, good_claims())),
        Err(LogoutTokenError::BadSignature)
    );

    // Payload swapped under a valid signature.
    let other = sign(
        &op,
        with(|c| drop(c.insert("sub".into(), "mallory".into()))),
    );
    let payload = other.split('.').nth(1).unwrap();
    let forged = format!("{head}.{payload}.{sig}");
    assert_eq!(check(&op, &forged), Err(LogoutTokenError::BadSignature));

    // Unknown kid: ask for keys first, then (refetch throttled) refuse.
    let stranger = ES256KeyPair::generate().with_key_id("ec9");
    let claims: JWTClaims<Map<String, Value>> = serde_json::from_value(good_claims()).unwrap();
    let opts = HeaderOptions {
        signature_type: Some("logout+jwt".into()),
        ..Default::default()
    };
    let t = stranger.sign_with_options(claims.clone(), &opts).unwrap();
    assert_eq!(check(&op, &t), Err(LogoutTokenError::NeedKeys));
    let mut op2 = TestOp::new();
    op2.jwks.attempted(NOW, 3600);
    assert_eq!(
        validate(&t, &op2.jwks, 3600, 30, &expected(NOW)),
        Err(LogoutTokenError::UnknownKey)
    );

    // alg none, and HS256 keyed with anything (e.g. the client secret).
    let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        enc(json!({"alg": "none", "kid": "ec1", "typ": "logout+jwt"})),
        enc(good_claims())
    );
    assert_eq!(
        check(&op, &none),
        Err(LogoutTokenError::AlgorithmNotAllowed("none".into()))
    );
    let hs = HS256Key::from_bytes(b"s3cret-s3cret-s3cret-s3cret-0123").with_key_id("ec1");
    let hs_token = hs.authenticate_with_options(claims, &opts).unwrap();
    assert_eq!(
        check(&op, &hs_token),
        Err(LogoutTokenError::AlgorithmNotAllowed("HS256".into()))
    );

    // ES256 not on the allow-list.
    let only_rs = LogoutExpected {
        algorithms: &[SignatureAlg::Rs256],
        ..expected(NOW)
    };
    assert!(matches!(
        validate(&token, &op.jwks, 3600, 30, &only_rs),
        Err(LogoutTokenError::AlgorithmNotAllowed(_))
    ));

    for junk in [
        "",
        "a",
        "a.b",
        "a.b.c",
        "....",
        "eyJhbGciOiJFUzI1NiJ9.e30.AAAA",
    ] {
        assert!(check(&op, junk).is_err(), "{junk}");
    }
    let huge = format!("{head}.{}.{sig}", "A".repeat(MAX_TOKEN_LENGTH));
    assert!(check(&op, &huge).is_err());
}

#[test]
fn error_text_carries_no_token_content() {
    let e = LogoutTokenError::AlgorithmNotAllowed("<script>alert(1)</script>".into());
    assert!(!e.to_string().contains('<'));
    assert_eq!(
        LogoutTokenError::MissingClaim("jti").to_string(),
        "logout token has no `jti` claim"
    );
}
