use super::*;
use serde_json::{json, Value};

pub fn sample_json() -> Value {
    json!({
        "op": {
            "issuer": "https://op.example.com",
            "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com:8443/jwks?x=1",
            "end_session_endpoint": "https://op.example.com/session/end"
        },
        "client": {"client_id": "pa_wam", "client_secret": "s3cret",
                   "redirect_uri": "https://gw.example.com/pa/oidc/cb"},
        "session": {
            "signing_keys": [
                {"kid": "k2", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="},
                {"kid": "k1", "secret": "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="}
            ],
            "claims": ["email"]
        },
        "identity_headers": [
            {"header": "X-WAM-User", "claim": "sub"},
            {"header": "x-wam-groups", "claim": "groups"}
        ]
    })
}

pub fn sample() -> Settings {
    Settings::from_json(sample_json().to_string().as_bytes()).unwrap()
}

fn refused(mutate: impl FnOnce(&mut Value)) -> ConfigError {
    let mut v = sample_json();
    mutate(&mut v);
    Settings::from_json(v.to_string().as_bytes()).unwrap_err()
}

#[test]
fn sample_is_accepted_with_defaults() {
    let s = sample();
    assert_eq!(s.default_web().callback_path, "/pa/oidc/cb");
    assert_eq!(s.default_web().client.scope, "openid profile email");
    assert_eq!(
        s.default_web().client.auth_method,
        ClientAuth::ClientSecretBasic
    );
    assert_eq!(s.default_web().session.cookie_name, "PA.wam");
    assert!(s.default_web().session.cookie_secure);
    assert_eq!(s.default_web().session.max_lifetime_s, 14400);
    assert_eq!(s.default_web().session.idle_timeout_s, 3600);
    assert_eq!(
        s.default_web().session.claims,
        vec!["email".to_string(), "groups".to_string()]
    );
    assert_eq!(s.default_web().identity_headers[0].header, "x-wam-user");
    let ep = s.op(0).endpoints.complete(OpUse::Login).unwrap();
    assert_eq!(ep.jwks.as_ref().unwrap().authority, "op.example.com:8443");
    assert_eq!(ep.jwks.as_ref().unwrap().path, "/jwks?x=1");
    assert_eq!(ep.token.as_ref().unwrap().authority, "op.example.com");
    assert_eq!(s.op(0).discovery, None);
    assert_eq!(
        s.id_token_algorithms,
        vec![SignatureAlg::Rs256, SignatureAlg::Es256]
    );
}

#[test]
fn errors_name_the_field() {
    let e = refused(|v| {
        v["op"]
            .as_object_mut()
            .unwrap()
            .remove("issuer")
            .map(drop)
            .unwrap()
    });
    assert_eq!(e.field, "op");
    assert!(e.message.contains("issuer"), "{e}");

    let e = refused(|v| v["session"]["signing_keys"][1]["secret"] = json!("c2hvcnQ="));
    assert_eq!(e.field, "session.signing_keys[1].secret");

    let e = refused(|v| v["session"]["cookie_secure"] = json!("yes"));
    assert_eq!(e.field, "session.cookie_secure");

    let e = refused(|v| v["session"]["idel_timeout_s"] = json!(5));
    assert_eq!(e.field, "session.idel_timeout_s");
    assert!(e.message.contains("unknown field"));

    let e = refused(|v| v["op"]["token_endpoint"] = json!("ftp://x/token"));
    assert_eq!(e.field, "op.token_endpoint");

    let e = refused(|v| v["identity_headers"][0]["header"] = json!("Cookie"));
    assert_eq!(e.field, "identity_headers[0].header");

    let e = refused(|v| v["id_token_algorithms"] = json!(["RS256", "HS256"]));
    assert_eq!(e.field, "id_token_algorithms[1]");

    let e = refused(|v| v["id_token_algorithms"] = json!(["none"]));
    assert_eq!(e.field, "id_token_algorithms[0]");

    let e = refused(|v| v["client"]["scopes"] = json!(["profile"]));
    assert_eq!(e.field, "client.scopes");

    let e = refused(|v| v["client"]["auth_method"] = json!("private_key_jwt"));
    assert_eq!(e.field, "client.auth_method");

    let e = refused(|v| v["session"]["signing_keys"][1]["kid"] = json!("k2"));
    assert_eq!(e.field, "session.signing_keys[1].kid");

    let e = refused(|v| v["session"]["signing_keys"] = json!([]));
    assert_eq!(e.field, "session.signing_keys");

    let e = refused(|v| v["session"]["cookie_name"] = json!("a b"));
    assert_eq!(e.field, "session.cookie_name");

    let e = refused(|v| v["base_path"] = json!("pa"));
    assert_eq!(e.field, "base_path");

    let e = refused(|v| v["client"]["redirect_uri"] = json!("https://gw.example.com/cb"));
    assert_eq!(e.field, "client.redirect_uri");

    assert_eq!(
        Settings::from_json(b"not json").unwrap_err().field,
        "(root)"
    );
}

#[test]
fn error_messages_never_echo_the_secret() {
    let e =
        refused(|v| v["session"]["signing_keys"][0]["secret"] = json!("%%%not-base64-SECRETVALUE"));
    assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
    // Found by the config fuzz target: a non-ASCII URL reached the IDNA adapter.
    let e = refused(|v| v["op"]["token_endpoint"] = json!("https://ÓP.example.com/token"));
    assert_eq!(e.field, "op.token_endpoint");
    // Found by the config fuzz target: a secret in a field of the wrong type was quoted.
    let e = refused(|v| v["session"]["signing_keys"] = json!("SECRETVALUE-in-the-wrong-place"));
    assert_eq!(e.field, "session.signing_keys");
    assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
    assert!(e.message.contains("invalid type"), "{e}");
    let e = refused(|v| v["client"]["auth_method"] = json!("SECRETVALUE"));
    assert!(!e.to_string().contains("SECRETVALUE"), "{e}");
}

#[test]
fn discovery_needs_no_endpoints() {
    let mut v = sample_json();
    v["op"] =
        json!({"issuer": "https://op.example.com/tenant/", "cluster": "op", "discovery": true});
    let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
    let d = s.op(0).discovery.clone().unwrap();
    assert_eq!(d.path, "/tenant/.well-known/openid-configuration");
    assert_eq!(d.authority, "op.example.com");
    assert_eq!(s.op(0).endpoints.complete(OpUse::Login), None);
}

#[test]
fn base_path_is_configurable() {
    let mut v = sample_json();
    v["base_path"] = json!("/_gw/");
    v["client"]["redirect_uri"] = json!("https://gw.example.com/_gw/oidc/cb");
    let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
    assert_eq!(s.default_web().callback_path, "/_gw/oidc/cb");
    assert_eq!(s.default_web().logout_path, "/_gw/oidc/logout");
    assert_eq!(s.heartbeat_path, "/_gw/heartbeat.ping");
}

#[test]
fn debug_of_the_settings_shows_no_secret_or_key() {
    use base64::Engine;
    use jwt_simple::prelude::ES256KeyPair;
    let pem = ES256KeyPair::generate().to_pem().unwrap();
    let session_secret = [0x5au8; 32];
    let session_b64 = base64::engine::general_purpose::STANDARD.encode(session_secret);
    let mut v = sample_json();
    v["client"]["client_secret"] = json!("CLIENT-SECRET-4f9a");
    v["session"]["signing_keys"][0]["secret"] = json!(session_b64);
    v["authtoken"] = json!({"issuer": "https://gw.example.com",
        "keys": [{"kid": "gw-1", "alg": "ES256", "private_key_pem": pem}]});
    v["site_authenticators"] = json!([{
        "name": "sts", "type": "token_exchange",
        "sts": {"cluster": "op", "token_endpoint": "https://op.example.com/sts",
                "client_id": "pa_sts", "client_secret": "STS-SECRET-77c1"},
        "audience": "https://orders.internal", "inject": {"header": "authorization"}
    }]);
    let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
    let pem_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let session_hex: String = session_secret.iter().map(|b| format!("{b}, ")).collect();
    for shown in [format!("{s:?}"), format!("{s:#?}")] {
        assert!(shown.contains("pa_sts") && shown.contains("<redacted>"));
        for secret in [
            "CLIENT-SECRET-4f9a",
            "STS-SECRET-77c1",
            session_b64.as_str(),
        ] {
            assert!(!shown.contains(secret), "{secret} in Debug");
        }
        assert!(!shown.contains(&session_hex), "session key bytes in Debug");
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!shown.contains(line), "private key in Debug");
        }
        assert!(!shown.contains(&pem_body[..16]));
    }
}

#[test]
fn session_settings_of_issue_10_are_checked_with_the_field_named() {
    for (mutate, field) in [
        (
            json!({"preserve_post_bytes": 1_000_000}),
            "session.preserve_post_bytes",
        ),
        (json!({"max_cookie_chunks": 0}), "session.max_cookie_chunks"),
        (
            json!({"max_cookie_chunks": 11}),
            "session.max_cookie_chunks",
        ),
        (
            json!({"cookie_type": "signed", "validate_interval_s": 60}),
            "session.cookie_type",
        ),
        (
            json!({"forward_access_token": true}),
            "session.forward_access_token",
        ),
        (
            json!({"revocation_list_entries": 0}),
            "session.revocation_list_entries",
        ),
        (json!({"cookie_type": "plain"}), "session.cookie_type"),
    ] {
        let e = refused(|v| {
            for (k, x) in mutate.as_object().unwrap() {
                v["session"][k] = x.clone();
            }
        });
        assert_eq!(e.field, field, "{mutate}: {e}");
    }
}
