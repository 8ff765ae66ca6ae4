//! The config checker (`envoy-wam check`): each fixture under tests/fixtures/checker/ is
//! refused or warned about with the right field and line, and the shipped configs pass.
#![cfg(not(target_arch = "wasm32"))]

use std::process::Command;

use envoy_wam::checker::{check, Finding, Severity};

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/checker/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The 1-based line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in the fixture"))
}

fn summary(findings: &[Finding]) -> Vec<(Severity, &str, usize)> {
    findings
        .iter()
        .map(|f| (f.severity, f.field.as_str(), f.line))
        .collect()
}

#[test]
fn good_bootstraps_pass_silently() {
    for name in ["good.yaml", "good.json"] {
        assert_eq!(check(&fixture(name)), vec![], "{name}");
    }
}

#[test]
fn each_broken_example_is_refused_with_its_field_and_line() {
    let cases = [
        // In a `value: |` JSON block: the field's own line.
        ("bad-timeout.yaml", "op.timeout_ms", "\"timeout_ms\": 0"),
        (
            "bad-unknown.yaml",
            "session.sigining_keys",
            "\"sigining_keys\"",
        ),
        // The field is absent: the line of the section that lacks it.
        ("bad-any-host.yaml", "client.redirect_uri", "\"client\": {"),
        // An Istio pluginConfig in YAML: the field's line.
        ("bad-istio.yaml", "client.redirect_uri", "redirect_uri:"),
        // A JSON bootstrap whose configuration is an escaped string: the `value` line.
        ("bad-scopes.json", "client.scopes", "\"value\":"),
        ("bad-syntax.yaml", "(file)", "address: [unbalanced"),
        ("nothing.yaml", "(file)", "# An Envoy bootstrap"),
    ];
    for (name, field, needle) in cases {
        let text = fixture(name);
        let found = check(&text);
        assert_eq!(
            summary(&found),
            vec![(Severity::Error, field, line_of(&text, needle))],
            "{name}: {found:?}"
        );
    }
    // The message is the filter's, without serde's position inside the JSON string.
    let found = check(&fixture("bad-unknown.yaml"));
    assert!(found[0]
        .message
        .starts_with("unknown field `sigining_keys`"));
    assert!(!found[0].message.contains("column"), "{}", found[0].message);
}

#[test]
fn each_risky_setting_is_warned_about() {
    let text = fixture("warnings.yaml");
    let mut expected = vec![
        (
            Severity::Warning,
            "session.cookie_secure",
            line_of(&text, "\"cookie_secure\": false"),
        ),
        // The demo key, written in the other base64 alphabet, is still the demo key.
        (
            Severity::Warning,
            "session.signing_keys[0].secret",
            line_of(&text, "\"signing_keys\""),
        ),
        (
            Severity::Warning,
            "policy.applications[0].hosts",
            line_of(&text, "*.example.com"),
        ),
        (
            Severity::Warning,
            "http_connection_manager.normalize_path",
            line_of(
                &text,
                "\"@type\": type.googleapis.com/envoy.extensions.filters.network",
            ),
        ),
        (
            Severity::Warning,
            "http_connection_manager.common_http_protocol_options.headers_with_underscores_action",
            line_of(&text, "headers_with_underscores_action: ALLOW"),
        ),
        (
            Severity::Warning,
            "http_connection_manager.use_remote_address",
            line_of(&text, "use_remote_address: false"),
        ),
    ];
    let found = check(&text);
    let mut got = summary(&found);
    expected.sort_by_key(|e| (e.2, e.1.to_string()));
    got.sort_by_key(|e| (e.2, e.1.to_string()));
    assert_eq!(got, expected, "{found:?}");
}

#[test]
fn web_sessions_sharing_a_cookie_name_are_warned_about() {
    let text = fixture("shared-cookie.yaml");
    let found = check(&text);
    assert_eq!(
        summary(&found),
        vec![(
            Severity::Warning,
            "web_sessions[0].session.cookie_name",
            line_of(&text, "\"session\": {\"signing_keys\": [{\"kid\": \"p1\""),
        )],
        "{found:?}"
    );
}

#[test]
fn the_shipped_configs_have_no_errors() {
    for name in [
        "envoy-demo.yaml",
        "envoy-native-demo.yaml",
        "envoy-compose.yaml",
        "lds/listener.yaml",
    ] {
        let path = format!("{}/envoy/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let found = check(&text);
        // The demos run on plain HTTP with a public key, and say so (for each web session).
        for f in &found {
            assert_eq!(f.severity, Severity::Warning, "{name}: {f:?}");
            let field = f.field.strip_prefix("web_sessions[0].").unwrap_or(&f.field);
            assert!(
                ["session.cookie_secure", "session.signing_keys[0].secret"].contains(&field),
                "{name}: {f:?}"
            );
        }
        if name == "envoy-demo.yaml" {
            assert!(
                found
                    .iter()
                    .any(|f| f.field == "web_sessions[0].session.signing_keys[0].secret"),
                "{name}: the partner web session's demo key is flagged"
            );
        }
        assert!(
            found
                .iter()
                .any(|f| f.field == "session.signing_keys[0].secret"),
            "{name}: the demo key is flagged"
        );
    }
}

/// The Istio example's key is a placeholder that is refused until it is replaced: a copy of the
/// file never runs with a published key.
#[test]
fn the_istio_example_is_refused_until_its_placeholder_key_is_replaced() {
    let path = format!("{}/envoy/istio-wasmplugin.yaml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let found = check(&text);
    let errors: Vec<_> = found
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{found:?}");
    assert_eq!(errors[0].field, "session.signing_keys[0].secret");
    assert_eq!(
        errors[0].line,
        text.lines()
            .position(|l| l.contains("secret: REPLACE-WITH-openssl"))
            .unwrap()
            + 1
    );
    // With a real key in its place, the example passes.
    let fixed = text.replace(
        "REPLACE-WITH-openssl-rand-base64-32",
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    assert!(check(&fixed)
        .iter()
        .all(|f| f.severity == Severity::Warning));
}

/// The live-reconfiguration demo: a bootstrap whose listener comes from a watched file. The
/// bootstrap itself holds no filter and is not an error; the listener file is the demo's own
/// listener (the same filter configuration, so the two demos cannot drift apart).
#[test]
fn the_lds_demo_is_checked_through_its_listener_file() {
    let dir = format!("{}/envoy", env!("CARGO_MANIFEST_DIR"));
    let boot = std::fs::read_to_string(format!("{dir}/envoy-lds.yaml")).unwrap();
    assert_eq!(check(&boot), vec![]);
    assert_eq!(
        envoy_wam::checker::lds_files(&boot),
        vec!["envoy/lds/listener.yaml"]
    );
    let config_of = |file: &str| -> serde_json::Value {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let docs = envoy_wam::checker::yaml::parse(&text).unwrap();
        let targets = envoy_wam::checker::envoy::targets(&docs);
        assert_eq!(targets.len(), 1, "{file}");
        serde_json::from_slice(&targets[0].json).unwrap()
    };
    assert_eq!(config_of("lds/listener.yaml"), config_of("envoy-demo.yaml"));

    // The binary follows the bootstrap to the listener file.
    let (code, out) = run(&["check", "envoy/envoy-lds.yaml"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.is_empty()
            && out
                .lines()
                .all(|l| l.starts_with("envoy/lds/listener.yaml:")),
        "{out}"
    );
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_envoy-wam"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_binary_prints_one_line_per_finding_and_exits_1_on_errors() {
    let good = "tests/fixtures/checker/good.yaml";
    let warn = "tests/fixtures/checker/warnings.yaml";
    let bad = "tests/fixtures/checker/bad-istio.yaml";
    assert_eq!(run(&["check", good]), (0, String::new()));

    let (code, out) = run(&["check", good, warn]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 6, "{out}");
    assert!(out
        .lines()
        .all(|l| l.starts_with(&format!("{warn}:")) && l.contains(": warning: ")));

    let (code, out) = run(&["check", warn, bad]);
    assert_eq!(code, 1, "{out}");
    let line = line_of(&fixture("bad-istio.yaml"), "redirect_uri:");
    assert!(
        out.contains(&format!(
            "{bad}:{line}: error: client.redirect_uri: must end in the callback path"
        )),
        "{out}"
    );

    assert_eq!(
        run(&["check", "tests/fixtures/checker/no-such-file.yaml"]).0,
        1
    );
    assert_eq!(run(&["lint"]).0, 2);
}
