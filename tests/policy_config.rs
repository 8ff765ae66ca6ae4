//! The policy inside the plugin configuration: read by hand (src/policy/read.rs), with error
//! paths under `policy.`; and `site_authenticators`, read by hand the same way.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use envoy_wam::config::{ConfigError, Settings};
use serde_json::{json, Value};

fn config(policy: Value) -> String {
    json!({
        "op": {
            "issuer": "https://op.example.com",
            "cluster": "op",
            "authorization_endpoint": "https://op.example.com/auth",
            "token_endpoint": "https://op.example.com/token",
            "jwks_uri": "https://op.example.com/jwks"
        },
        "client": {"client_id": "wam", "client_secret": "top-secret-value"},
        "session": {"signing_keys": [{"kid": "k1", "secret": URL_SAFE_NO_PAD.encode([9u8; 32])}]},
        "policy": policy
    })
    .to_string()
}

fn refused(policy: Value) -> ConfigError {
    Settings::from_json(config(policy).as_bytes()).unwrap_err()
}

#[test]
fn policy_errors_are_under_policy() {
    let app = |rules: Value| {
        json!({"applications": [{"name": "a", "hosts": ["h"], "rules": rules,
                                                 "resources": [{"name": "root", "paths": ["/*"]}]}]})
    };
    let s = Settings::from_json(
        config(app(json!([{"type": "method", "methods": ["GET"]}]))).as_bytes(),
    );
    assert!(!s.unwrap().policy_is_implicit);
    // Without a policy every host is served: the redirect URI must be configured.
    let e = Settings::from_json(config(Value::Null).as_bytes()).unwrap_err();
    assert_eq!(e.field, "client.redirect_uri");
    let with_redirect = config(Value::Null).replace(
        r#""client_secret":"top-secret-value""#,
        r#""client_secret":"top-secret-value","redirect_uri":"https://gw.example/pa/oidc/cb""#,
    );
    assert!(
        Settings::from_json(with_redirect.as_bytes())
            .unwrap()
            .policy_is_implicit
    );

    // Read errors (unknown field, type, missing tag) and compile errors.
    let e = refused(app(
        json!([{"type": "method", "methods": ["GET"], "colour": 1}]),
    ));
    assert_eq!(e.field, "policy.applications[0].rules[0].colour");
    assert!(e.message.contains("unknown field `colour`"), "{e}");
    let e = refused(app(json!([{"methods": ["GET"]}])));
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        (
            "policy.applications[0].rules[0].type",
            "missing field `type`"
        )
    );
    let e = refused(json!({"default_decision": true}));
    assert_eq!(e.field, "policy.default_decision");
    let e = refused(app(json!([{"type": "method", "methods": ["G T"]}])));
    assert_eq!(e.field, "policy.applications[0].rules[0].methods[0]");
    let e = refused(json!("allow"));
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("policy", "must be an object")
    );

    let text = config(json!({})).replace(
        r#""policy":{}"#,
        r#""policy":{"default_decision":"deny","default_decision":"allow"}"#,
    );
    let e = Settings::from_json(text.as_bytes()).unwrap_err();
    assert_eq!(e.field, "policy.default_decision");
    assert!(e.message.contains("duplicate field"), "{e}");
}

#[test]
fn site_authenticator_errors_name_the_field() {
    let site = r#"{"name": "s", "type": "jwt", "audience": "a", "inject": {"header": "x-jwt"}}"#;
    let with = |sites: &str| {
        config(json!({})).replace(
            r#""policy":{}"#,
            &format!(r#""site_authenticators":[{sites}]"#),
        )
    };
    // Accepted as far as the reader goes: jwt needs `authtoken`.
    let e = Settings::from_json(with(site).as_bytes()).unwrap_err();
    assert_eq!(e.field, "site_authenticators[0].type");
    let e = Settings::from_json(
        with(&site.replace(r#""x-jwt"}"#, r#""x-jwt", "headr": "y"}"#)).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(e.field, "site_authenticators[0].inject.headr");
    let e = Settings::from_json(with(&format!("{site}, 7")).as_bytes()).unwrap_err();
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("site_authenticators[1]", "must be an object")
    );
    let e = Settings::from_json(
        with(&site.replace(r#""type": "jwt""#, r#""type": "jwt", "type": "x""#)).as_bytes(),
    )
    .unwrap_err();
    assert_eq!(e.field, "site_authenticators[0].type");
    assert!(e.message.contains("duplicate field"), "{e}");
}
