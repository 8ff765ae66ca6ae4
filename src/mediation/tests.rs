use crate::config::{ClientAuth, ConfigError};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use std::rc::Rc;

use super::*;
use serde_json::json;

const NOW: u64 = 1_700_000_000;

type Mutation = Box<dyn Fn(&mut Value)>;

fn exchange_json() -> Value {
    json!({
        "name": "orders-sts", "type": "token_exchange",
        "sts": { "cluster": "op", "token_endpoint": "http://127.0.0.1:9000/token",
                 "client_id": "pa_sts", "client_secret": "s3cret:x y" },
        "audience": "https://orders.internal",
        "inject": { "header": "Authorization" }
    })
}

fn jwt_json() -> Value {
    json!({
        "name": "orders-jwt", "type": "jwt", "audience": "https://orders.internal",
        "claims": ["sub", "email", "groups"], "lifetime_s": 300,
        "inject": { "header": "x-wam-jwt" }
    })
}

fn site(v: Value) -> SiteAuthenticator {
    SiteAuthenticator::compile(RawSiteAuthenticator::from_value(&v).unwrap()).unwrap()
}

fn refused(v: Value) -> ConfigError {
    compile_all(vec![v], true).unwrap_err()
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[test]
fn configuration_defaults() {
    let s = site(exchange_json());
    let x = s.token_exchange().unwrap();
    assert_eq!(x.requested_token_type, ACCESS_TOKEN_TYPE);
    assert_eq!(x.sts.auth_method, ClientAuth::ClientSecretBasic);
    assert_eq!(x.sts.timeout_ms, 3000);
    assert_eq!(x.sts.token_endpoint.authority, "127.0.0.1:9000");
    assert_eq!(s.inject, Inject::Header("authorization".into()));
    assert_eq!(
        s.cache,
        CacheSettings {
            max_entries: 10_000,
            idle_timeout_s: 1800,
            max_lifetime_s: 14_400
        }
    );
    assert!(!format!("{s:?}").contains("s3cret"), "no secret in Debug");
    let j = site(jwt_json());
    assert_eq!(j.jwt().unwrap().claims, vec!["sub", "email", "groups"]);
    let mut v = jwt_json();
    v.as_object_mut().unwrap().remove("lifetime_s");
    v.as_object_mut().unwrap().remove("claims");
    let j = site(v);
    assert_eq!(
        (j.jwt().unwrap().lifetime_s, j.jwt().unwrap().claims.clone()),
        (300, vec!["sub".to_string()])
    );
    let c = s.cache.new_cache::<Rc<MediatedToken>>();
    assert_eq!(c.len(), 0);
}

#[test]
fn configuration_errors_name_the_field() {
    let cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|v| v["sts"]["client_secret"] = "".into()),
            "site_authenticators[0].sts.client_secret",
        ),
        (
            Box::new(|v| v["sts"]["client_id"] = "".into()),
            "site_authenticators[0].sts.client_id",
        ),
        (
            Box::new(|v| v["sts"]["cluster"] = "".into()),
            "site_authenticators[0].sts.cluster",
        ),
        (
            Box::new(|v| v["sts"]["token_endpoint"] = "ftp://x/token".into()),
            "site_authenticators[0].sts.token_endpoint",
        ),
        (
            Box::new(|v| v["sts"]["timeout_ms"] = 0.into()),
            "site_authenticators[0].sts.timeout_ms",
        ),
        (
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("sts"))),
            "site_authenticators[0].sts",
        ),
        (
            Box::new(|v| v["type"] = "saml".into()),
            "site_authenticators[0].type",
        ),
        (
            Box::new(|v| v["name"] = "".into()),
            "site_authenticators[0].name",
        ),
        (
            Box::new(|v| v["inject"] = json!({"header": "Host"})),
            "site_authenticators[0].inject.header",
        ),
        (
            Box::new(|v| v["inject"] = json!({"header": "cookie"})),
            "site_authenticators[0].inject.header",
        ),
        (
            Box::new(|v| v["inject"] = json!({"header": ":authority"})),
            "site_authenticators[0].inject.header",
        ),
        (
            Box::new(|v| v["inject"] = json!({"header": "x a"})),
            "site_authenticators[0].inject.header",
        ),
        (
            Box::new(|v| v["inject"] = json!({"cookie": "a;b"})),
            "site_authenticators[0].inject.cookie",
        ),
        (
            Box::new(|v| v["inject"] = json!({"header": "x", "cookie": "y"})),
            "site_authenticators[0].inject",
        ),
        (
            Box::new(|v| v["inject"] = json!({})),
            "site_authenticators[0].inject",
        ),
        (
            Box::new(|v| v["cache"] = json!({"max_entries": 0})),
            "site_authenticators[0].cache.max_entries",
        ),
        (
            Box::new(|v| v["cache"] = json!({"idle_timeout_s": 0})),
            "site_authenticators[0].cache.idle_timeout_s",
        ),
        (
            Box::new(|v| v["cache"] = json!({"max_lifetime_s": 0})),
            "site_authenticators[0].cache.max_lifetime_s",
        ),
        (
            Box::new(|v| v["claims"] = json!(["sub"])),
            "site_authenticators[0].claims",
        ),
        (
            Box::new(|v| v["requested_token_type"] = "access".into()),
            "site_authenticators[0].requested_token_type",
        ),
        (
            Box::new(|v| v["resource"] = "not a url".into()),
            "site_authenticators[0].resource",
        ),
        (
            Box::new(|v| v["scope"] = "a  b".into()),
            "site_authenticators[0].scope",
        ),
        (
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("audience"))),
            "site_authenticators[0].audience",
        ),
    ];
    for (mutate, field) in cases {
        let mut v = exchange_json();
        mutate(&mut v);
        let e = refused(v);
        assert_eq!(e.field, field, "{e}");
        assert!(!e.message.contains("s3cret"));
    }
    let jwt_cases: Vec<(Mutation, &str)> = vec![
        (
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("audience"))),
            "site_authenticators[0].audience",
        ),
        (
            Box::new(|v| v["claims"] = json!(["sub", "exp"])),
            "site_authenticators[0].claims[1]",
        ),
        (
            Box::new(|v| v["lifetime_s"] = 0.into()),
            "site_authenticators[0].lifetime_s",
        ),
        (
            Box::new(|v| v["scope"] = "a".into()),
            "site_authenticators[0].scope",
        ),
        (
            Box::new(|v| v["sts"] = exchange_json()["sts"].clone()),
            "site_authenticators[0].sts",
        ),
    ];
    for (mutate, field) in jwt_cases {
        let mut v = jwt_json();
        mutate(&mut v);
        assert_eq!(refused(v).field, field);
    }
    // What the reader refuses: unknown fields, wrong types, missing required fields.
    let cases: Vec<(Mutation, &str, &str)> = vec![
        (
            Box::new(|v| v["sts"]["clientsecret"] = "x".into()),
            "site_authenticators[0].sts.clientsecret",
            "unknown field `clientsecret`",
        ),
        (
            Box::new(|v| v["inject"]["value"] = "x".into()),
            "site_authenticators[0].inject.value",
            "unknown field `value`",
        ),
        (
            Box::new(|v| v["colour"] = 1.into()),
            "site_authenticators[0].colour",
            "unknown field `colour`",
        ),
        (
            Box::new(|v| v["cache"] = json!({"max_entries": -1})),
            "site_authenticators[0].cache.max_entries",
            "must be an integer",
        ),
        (
            Box::new(|v| v["cache"] = Value::Null),
            "site_authenticators[0].cache",
            "must be an object",
        ),
        (
            Box::new(|v| v["sts"]["timeout_ms"] = "3000".into()),
            "site_authenticators[0].sts.timeout_ms",
            "must be an integer",
        ),
        (
            Box::new(|v| v["sts"]["auth_method"] = "private_key_jwt".into()),
            "site_authenticators[0].sts.auth_method",
            "must be one of `client_secret_basic`, `client_secret_post`",
        ),
        (
            Box::new(|v| v["claims"] = json!(["sub", 1])),
            "site_authenticators[0].claims[1]",
            "must be a string",
        ),
        (
            Box::new(|v| v["audience"] = json!(["a"])),
            "site_authenticators[0].audience",
            "must be a string",
        ),
        (
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("inject"))),
            "site_authenticators[0].inject",
            "missing field `inject`",
        ),
        (
            Box::new(|v| drop(v["sts"].as_object_mut().unwrap().remove("client_id"))),
            "site_authenticators[0].sts.client_id",
            "missing field `client_id`",
        ),
        (
            Box::new(|v| drop(v.as_object_mut().unwrap().remove("type"))),
            "site_authenticators[0].type",
            "missing field `type`",
        ),
        (
            Box::new(|v| *v = json!("orders-sts")),
            "site_authenticators[0]",
            "must be an object",
        ),
    ];
    for (mutate, field, message) in cases {
        let mut v = exchange_json();
        mutate(&mut v);
        let e = refused(v.clone());
        assert_eq!(e.field, field, "{v}");
        assert!(e.message.starts_with(message), "{v}: {e}");
    }
    // `null` is "absent" in optional fields.
    let mut v = exchange_json();
    for k in [
        "requested_token_type",
        "resource",
        "scope",
        "claims",
        "lifetime_s",
    ] {
        v[k] = Value::Null;
    }
    v["inject"]["cookie"] = Value::Null;
    let x = site(v);
    assert_eq!(
        x.token_exchange().unwrap().requested_token_type,
        ACCESS_TOKEN_TYPE
    );

    let e = compile_all(vec![exchange_json(), exchange_json()], true).unwrap_err();
    assert_eq!(e.field, "site_authenticators[1].name");
    let e = compile_all(vec![exchange_json(), jwt_json()], false).unwrap_err();
    assert_eq!(e.field, "site_authenticators[1].type");
    assert_eq!(
        compile_all(vec![exchange_json(), jwt_json()], true)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn exchange_request_with_basic_auth() {
    let mut v = exchange_json();
    v["resource"] = "https://orders.internal/api".into();
    v["scope"] = "orders:read orders:write".into();
    let s = site(v);
    let c = exchange_request(&s, "the.subject+token", ACCESS_TOKEN_TYPE).unwrap();
    assert_eq!(
        (
            c.cluster.as_str(),
            c.method,
            c.authority.as_str(),
            c.path.as_str(),
            c.timeout_ms
        ),
        ("op", "POST", "127.0.0.1:9000", "/token", 3000)
    );
    let body = String::from_utf8(c.body.clone()).unwrap();
    assert_eq!(
        body,
        "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
         &subject_token=the.subject%2Btoken\
         &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
         &requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
         &audience=https%3A%2F%2Forders.internal\
         &resource=https%3A%2F%2Forders.internal%2Fapi\
         &scope=orders%3Aread+orders%3Awrite"
    );
    assert_eq!(
        c.headers,
        vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string()
            ),
            ("accept".to_string(), "application/json".to_string()),
            (
                "authorization".to_string(),
                format!("Basic {}", STANDARD.encode("pa_sts:s3cret%3Ax+y"))
            ),
        ]
    );
    assert!(!body.contains("s3cret"));
    assert_eq!(
        exchange_request(&site(jwt_json()), "t", ACCESS_TOKEN_TYPE),
        None
    );
}

#[test]
fn exchange_request_with_post_auth_and_no_optional_fields() {
    let mut v = exchange_json();
    v["sts"]["auth_method"] = "client_secret_post".into();
    v["requested_token_type"] = JWT_TOKEN_TYPE.into();
    let c = exchange_request(&site(v), "jwt.from.gateway", JWT_TOKEN_TYPE).unwrap();
    assert!(c.headers.iter().all(|(n, _)| n != "authorization"));
    let f = form(&c.body);
    let expect: Vec<(String, String)> = [
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", "jwt.from.gateway"),
        ("subject_token_type", JWT_TOKEN_TYPE),
        ("requested_token_type", JWT_TOKEN_TYPE),
        ("audience", "https://orders.internal"),
        ("client_id", "pa_sts"),
        ("client_secret", "s3cret:x y"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(f, expect);
}

fn answer(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

#[test]
fn exchange_responses() {
    let s = site(exchange_json());
    let good = json!({"access_token": "site.token.sig", "issued_token_type": ACCESS_TOKEN_TYPE,
                      "token_type": "Bearer", "expires_in": 600});
    assert_eq!(
        parse_exchange_response(&s, 200, &answer(good.clone()), NOW),
        Ok(MediatedToken {
            token: "site.token.sig".into(),
            expires_at: NOW + 600
        })
    );
    let with = |k: &str, val: Value| {
        let mut g = good.clone();
        g[k] = val;
        parse_exchange_response(&s, 200, &answer(g), NOW)
    };
    let without = |k: &str| {
        let mut g = good.clone();
        g.as_object_mut().unwrap().remove(k);
        parse_exchange_response(&s, 200, &answer(g), NOW)
    };
    assert_eq!(
        without("expires_in").unwrap().expires_at,
        u64::MAX,
        "the cache bounds it"
    );
    assert_eq!(
        with("expires_in", "60".into()).unwrap().expires_at,
        NOW + 60
    );
    assert_eq!(
        with("token_type", "bearer".into()).unwrap().expires_at,
        NOW + 600
    );
    for bad in ["access_token", "issued_token_type", "token_type"] {
        assert!(
            matches!(without(bad), Err(ExchangeError::Malformed(_))),
            "{bad}"
        );
    }
    for (k, val) in [
        ("access_token", json!(42)),
        ("access_token", json!("")),
        ("access_token", json!("a\r\nx-injected: 1")),
        ("access_token", json!("a b")),
        ("access_token", json!("tökén")),
        ("access_token", json!("a".repeat(MAX_TOKEN_LENGTH + 1))),
        ("issued_token_type", json!(JWT_TOKEN_TYPE)),
        ("token_type", json!("N_A")),
        ("token_type", json!("DPoP")),
        ("expires_in", json!(-5)),
        ("expires_in", json!("soon")),
        ("expires_in", json!([1])),
    ] {
        assert!(
            matches!(with(k, val.clone()), Err(ExchangeError::Malformed(_))),
            "{k}: {val}"
        );
    }
    assert!(with("access_token", json!("a".repeat(MAX_TOKEN_LENGTH))).is_ok());

    // N_A for a token that is not an access token.
    let mut v = exchange_json();
    v["requested_token_type"] = JWT_TOKEN_TYPE.into();
    let jwt_site = site(v);
    let na =
        json!({"access_token": "x.y.z", "issued_token_type": JWT_TOKEN_TYPE, "token_type": "N_A"});
    assert!(parse_exchange_response(&jwt_site, 200, &answer(na), NOW).is_ok());

    // Errors.
    assert_eq!(
        parse_exchange_response(
            &s,
            400,
            br#"{"error":"invalid_target","error_description":"no"}"#,
            NOW
        ),
        Err(ExchangeError::Refused {
            status: 400,
            error: "invalid_target".into()
        })
    );
    assert_eq!(
        parse_exchange_response(
            &s,
            401,
            "{\"error\":\"invalid\\r\\nclient\u{1F600}\"}".as_bytes(),
            NOW
        ),
        Err(ExchangeError::Refused {
            status: 401,
            error: "invalidclient".into()
        })
    );
    assert_eq!(
        parse_exchange_response(&s, 400, b"<html>", NOW),
        Err(ExchangeError::Status(400))
    );
    assert_eq!(
        parse_exchange_response(&s, 503, b"{\"error\":\"x\"}", NOW),
        Err(ExchangeError::Status(503))
    );
    assert_eq!(ExchangeError::Status(503).http_status(), 503);
    assert_eq!(ExchangeError::Status(500).http_status(), 502);
    assert_eq!(ExchangeError::Malformed("x").http_status(), 502);
    assert_eq!(
        parse_exchange_response(&s, 302, b"", NOW),
        Err(ExchangeError::Status(302))
    );
    assert!(matches!(
        parse_exchange_response(&s, 200, b"garbage", NOW),
        Err(ExchangeError::Malformed(_))
    ));
    assert!(matches!(
        parse_exchange_response(&s, 200, b"[]", NOW),
        Err(ExchangeError::Malformed(_))
    ));
    assert!(matches!(
        parse_exchange_response(&s, 200, b"", NOW),
        Err(ExchangeError::Malformed(_))
    ));

    // A cookie-bound site refuses tokens that are not cookie values.
    let mut v = exchange_json();
    v["inject"] = json!({"cookie": "site_token"});
    let cs = site(v);
    let mut g = good.clone();
    g["access_token"] = "a;b".into();
    assert!(parse_exchange_response(&cs, 200, &answer(g), NOW).is_err());
    assert!(parse_exchange_response(&cs, 200, &answer(good), NOW).is_ok());

    let t = MediatedToken {
        token: "secret-token".into(),
        expires_at: 1,
    };
    assert!(!format!("{t:?}").contains("secret-token"));
}

#[test]
fn inject_variants() {
    let s = site(exchange_json());
    assert_eq!(
        inject(&s, "tok"),
        vec![("authorization".to_string(), Some("Bearer tok".to_string()))]
    );
    let mut v = exchange_json();
    v["inject"] = json!({"header": "X-Site-Token"});
    assert_eq!(
        inject(&site(v), "tok"),
        vec![("x-site-token".to_string(), Some("tok".to_string()))]
    );
    let mut v = exchange_json();
    v["inject"] = json!({"cookie": "site_token"});
    let cs = site(v);
    assert_eq!(cs.inject, Inject::Cookie("site_token".into()));
    assert!(inject(&cs, "tok").is_empty());

    assert_eq!(
        cookie_with_token(None, "site_token", "tok"),
        "site_token=tok"
    );
    assert_eq!(
        cookie_with_token(Some(""), "site_token", "tok"),
        "site_token=tok"
    );
    assert_eq!(
        cookie_with_token(Some("a=1; b=2"), "site_token", "tok"),
        "a=1; b=2; site_token=tok"
    );
    assert_eq!(
        cookie_with_token(Some("site_token=forged; a=1"), "site_token", "tok"),
        "a=1; site_token=tok",
        "the client's copy never reaches the site"
    );
    assert_eq!(
        cookie_with_token(Some("site_token=forged"), "site_token", "tok"),
        "site_token=tok"
    );
}

#[test]
fn signed_subject_and_identity_tokens() {
    use jwt_simple::prelude::*;
    let kp = ES256KeyPair::generate();
    let raw: crate::authtoken::RawAuthToken = serde_json::from_value(json!({
        "issuer": "http://gateway.example",
        "keys": [{"kid": "gw-1", "alg": "ES256", "private_key_pem": kp.to_pem().unwrap()}]
    }))
    .unwrap();
    let signer = AuthTokenSigner::compile(raw).unwrap();
    let pk = kp.public_key();
    let claims = json!({"email": "a@example.com", "groups": ["g"], "secret_thing": "x"})
        .as_object()
        .cloned()
        .unwrap();
    let opts = || {
        Some(VerificationOptions {
            artificial_time: Some(UnixTimeStamp::from_secs(NOW + 1)),
            ..Default::default()
        })
    };

    let x = site(exchange_json());
    let t = session_subject_token(&signer, &x, "alice", &claims, NOW, "j1").unwrap();
    let c = pk.verify_token::<Map<String, Value>>(&t, opts()).unwrap();
    assert_eq!(c.subject.as_deref(), Some("alice"));
    assert_eq!(
        c.audiences,
        Some(Audiences::AsString("http://127.0.0.1:9000/token".into()))
    );
    assert_eq!(
        c.expires_at,
        Some(UnixTimeStamp::from_secs(NOW + SUBJECT_TOKEN_LIFETIME_S))
    );
    assert_eq!(
        session_subject_token(&signer, &site(jwt_json()), "a", &claims, NOW, "j"),
        None
    );

    let j = site(jwt_json());
    let m = identity_jwt(&signer, &j, "alice", &claims, NOW, "j2").unwrap();
    assert_eq!(m.expires_at, NOW + 300);
    let c = pk
        .verify_token::<Map<String, Value>>(&m.token, opts())
        .unwrap();
    assert_eq!(c.subject.as_deref(), Some("alice"));
    assert_eq!(
        c.audiences,
        Some(Audiences::AsString("https://orders.internal".into()))
    );
    assert_eq!(c.custom.get("email"), Some(&json!("a@example.com")));
    assert_eq!(c.custom.get("groups"), Some(&json!(["g"])));
    assert!(
        !c.custom.contains_key("secret_thing"),
        "only the configured claims"
    );
    assert_eq!(identity_jwt(&signer, &x, "alice", &claims, NOW, "j"), None);
}
