//! The demo's filter configuration (envoy/envoy-demo.yaml) is one the filter accepts: the demo
//! is the first thing a user runs, and a refused configuration fails every request closed.

use envoy_wam::config::Settings;

/// The JSON block after `value: |` in the demo's bootstrap (YAML's literal block: every line
/// indented deeper than the key).
fn demo_filter_json() -> String {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/envoy/envoy-demo.yaml"
    ))
    .expect("the demo bootstrap");
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("value: |"));
    let key = lines.next().expect("a `value: |` block");
    let indent = key.len() - key.trim_start().len();
    lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_demo_configuration_is_accepted_with_the_session_features_on() {
    let json = demo_filter_json();
    let settings = Settings::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let s = &settings.default_web().session;
    assert_eq!(
        s.keys.cookie_type,
        envoy_wam::session::CookieType::Encrypted
    );
    assert!(
        s.validate_interval_s > 0,
        "the demo validates sessions at the OP"
    );
    assert!(s.userinfo);
    assert!(s.preserve_post_bytes > 0);
}

#[test]
fn the_demo_has_a_partner_web_session_at_a_second_op_and_an_api_of_both() {
    let settings =
        Settings::from_json(demo_filter_json().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = settings
        .web_sessions
        .iter()
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(names, ["default", "partner"]);
    let partner = settings.web(1);
    assert_eq!(partner.callback_path, "/pa/oidc/cb/partner");
    assert_eq!(partner.session.cookie_name, "PA.partner");
    let op = settings.op(partner.op);
    assert_eq!(
        (op.issuer.as_str(), op.cluster.as_str()),
        ("http://localhost:9001", "partner_op")
    );
    assert_ne!(settings.op(settings.default_web().op).issuer, op.issuer);
    let issuers: Vec<&str> = settings
        .providers
        .iter()
        .filter(|p| p.name.is_some())
        .map(|p| settings.op(p.op).issuer.as_str())
        .collect();
    assert_eq!(issuers, ["http://localhost:9000", "http://localhost:9001"]);
}
