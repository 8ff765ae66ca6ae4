//! The configuration checker behind `envoy-wam check`: finds every envoy-wam configuration in
//! an Envoy or Istio file, validates it with the filter's own [`Settings::from_json`], and
//! warns about settings that are legal but risky. Native only (the .wasm never carries it).

use std::fmt;

use base64::Engine;
use serde_json::Value as Json;

use crate::config::Settings;

pub mod envoy;
pub mod yaml;

use envoy::{Locator, Target};
use yaml::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One line of the checker's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub severity: Severity,
    pub field: String,
    pub message: String,
}

impl Finding {
    fn error(line: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line,
            severity: Severity::Error,
            field: field.into(),
            message: message.into(),
        }
    }

    fn warning(line: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            line,
            severity: Severity::Warning,
            field: field.into(),
            message: message.into(),
        }
    }

    /// `path:line: error|warning: field: message`
    pub fn display<'a>(&'a self, path: &'a str) -> impl fmt::Display + 'a {
        Shown(path, self)
    }
}

struct Shown<'a>(&'a str, &'a Finding);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shown(path, x) = self;
        let sev = match x.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{path}:{}: {sev}: {}: {}", x.line, x.field, x.message)
    }
}

/// Checks one file's text (YAML, possibly several documents, or JSON).
pub fn check(text: &str) -> Vec<Finding> {
    let docs = match yaml::parse(text) {
        Ok(docs) => docs,
        Err(e) => {
            return vec![Finding::error(
                e.line,
                "(file)",
                format!("not YAML or JSON: {}", e.message),
            )]
        }
    };
    let targets = envoy::targets(&docs);
    if targets.is_empty() && !envoy::lds_files(&docs).is_empty() {
        // A bootstrap whose listeners come from files: those are checked (see `lds_files`).
        return Vec::new();
    }
    if targets.is_empty() {
        return vec![Finding::error(
            1,
            "(file)",
            "no envoy-wam configuration found (an envoy.filters.http.wasm filter with a \
             google.protobuf.StringValue configuration, or an Istio WasmPlugin pluginConfig)",
        )];
    }
    targets.iter().flat_map(check_target).collect()
}

/// The files a bootstrap takes its listeners from (file-based LDS), as written in it: a
/// checker of the bootstrap checks them too.
pub fn lds_files(text: &str) -> Vec<String> {
    yaml::parse(text)
        .map(|docs| envoy::lds_files(&docs))
        .unwrap_or_default()
}

fn check_target(t: &Target<'_>) -> Vec<Finding> {
    let settings = match Settings::from_json(&t.json) {
        Ok(s) => s,
        Err(e) => {
            return vec![Finding::error(
                t.locator.line_of(&e.field),
                e.field,
                without_json_position(&e.message),
            )]
        }
    };
    // It parsed as the filter's configuration, so it is JSON.
    let json: Json = serde_json::from_slice(&t.json).unwrap_or(Json::Null);
    let mut out = config_warnings(&settings, &json, &t.locator);
    if let Some(hcm) = t.hcm {
        out.extend(envoy_warnings(hcm, settings.policy_needs_client_ip));
    }
    out.sort_by_key(|f| f.line);
    out
}

/// serde_json's "at line 12 column 19" counts inside the configuration string, not the file:
/// the finding already carries the file's line.
fn without_json_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i)
            if message[i + 9..]
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            message[..i].to_string()
        }
        _ => message.to_string(),
    }
}

fn config_warnings(settings: &Settings, json: &Json, at: &Locator) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, web) in settings.web_sessions.iter().enumerate() {
        let (field, pointer) = match i {
            0 => ("session".to_string(), "/session".to_string()),
            i => (
                format!("web_sessions[{}].session", i - 1),
                format!("/web_sessions/{}/session", i - 1),
            ),
        };
        if !web.session.cookie_secure {
            let f = format!("{field}.cookie_secure");
            out.push(Finding::warning(
                at.line_of(&f),
                f,
                "false: the session cookie is also sent over plain HTTP, where anyone on the \
                 path can read and replay it",
            ));
        }
        let keys = json
            .pointer(&format!("{pointer}/signing_keys"))
            .and_then(Json::as_array);
        for (k, key) in keys.into_iter().flatten().enumerate() {
            let secret = key.get("secret").and_then(Json::as_str).unwrap_or_default();
            if is_demo_secret(secret) {
                let f = format!("{field}.signing_keys[{k}].secret");
                out.push(Finding::warning(
                    at.line_of(&f),
                    f,
                    "this key is published in envoy-wam's examples: anyone can forge sessions; \
                     generate one with `openssl rand -base64 32`",
                ));
            }
        }
        let shared = settings.web_sessions.iter().take(i).find(|w| {
            w.session.cookie_name == web.session.cookie_name
                && w.session.cookie_domain == web.session.cookie_domain
        });
        if let Some(other) = shared {
            let f = format!("{field}.cookie_name");
            out.push(Finding::warning(
                at.line_of(&f),
                f,
                format!(
                    "`{}` is also web session `{}`'s cookie: a browser holds one of the two \
                     sessions at a time, and signing in to one ends the other",
                    web.session.cookie_name, other.name
                ),
            ));
        }
    }
    let apps = json
        .pointer("/policy/applications")
        .and_then(Json::as_array);
    for (i, app) in apps.into_iter().flatten().enumerate() {
        // The application's web session (its name, else the default) has no fixed redirect URI.
        let named = app.get("web_session").and_then(Json::as_str);
        let web = settings
            .web_sessions
            .iter()
            .find(|w| named.is_none_or(|n| n == w.name));
        if web.is_none_or(|w| w.client.redirect_uri.is_some()) {
            continue;
        }
        let hosts = app.get("hosts").and_then(Json::as_array);
        let wild = hosts
            .into_iter()
            .flatten()
            .filter_map(Json::as_str)
            .find(|h| h.contains('*'));
        if let Some(host) = wild {
            let field = format!("policy.applications[{i}].hosts");
            out.push(Finding::warning(
                at.line_of(&field),
                field,
                format!(
                    "`{host}` without client.redirect_uri: the login redirect is built \
                     from the request's Host, which the client picks among the names \
                     `{host}` matches; set client.redirect_uri"
                ),
            ));
        }
    }
    out
}

fn envoy_warnings(hcm: &Node, needs_client_ip: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let field_line = |key: &str| hcm.key_line(key).unwrap_or(hcm.line);
    if hcm.get("normalize_path").and_then(Node::bool) != Some(true) {
        out.push(Finding::warning(
            field_line("normalize_path"),
            "http_connection_manager.normalize_path",
            "not true: envoy-wam checks its own canonical path, but the router and other \
             filters see the path as sent (`/a/../admin`)",
        ));
    }
    let opts = hcm.get("common_http_protocol_options");
    let action = opts.and_then(|o| o.get("headers_with_underscores_action"));
    if action.and_then(Node::str) != Some("REJECT_REQUEST") {
        let line = opts
            .and_then(|o| o.key_line("headers_with_underscores_action"))
            .unwrap_or_else(|| field_line("common_http_protocol_options"));
        out.push(Finding::warning(
            line,
            "http_connection_manager.common_http_protocol_options.headers_with_underscores_action",
            "not REJECT_REQUEST: backends that read `x_wam_user` as `x-wam-user` (CGI, WSGI, \
             PHP, Rack) may take a client's header for the gateway's",
        ));
    }
    if needs_client_ip && hcm.get("use_remote_address").and_then(Node::bool) != Some(true) {
        out.push(Finding::warning(
            field_line("use_remote_address"),
            "http_connection_manager.use_remote_address",
            "not true while the policy reads the client address (network or rate-limit rules, \
             audited resources): the address comes from a client-sent X-Forwarded-For",
        ));
    }
    out
}

/// The examples shipped with envoy-wam: their session keys are public.
const EXAMPLES: [&str; 4] = [
    include_str!("../../envoy/envoy-demo.yaml"),
    include_str!("../../envoy/envoy-native-demo.yaml"),
    include_str!("../../envoy/envoy-compose.yaml"),
    include_str!("../../envoy/istio-wasmplugin.yaml"),
];

fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    // The same two alphabets the filter accepts (config/session.rs).
    let s = secret.trim();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .ok()
}

/// Whether a signing secret (compared as key bytes, so in either alphabet) is one of the
/// examples'.
fn is_demo_secret(secret: &str) -> bool {
    let Some(key) = decode_secret(secret) else {
        return false;
    };
    EXAMPLES.iter().any(|text| {
        let docs = yaml::parse(text).unwrap_or_default();
        envoy::targets(&docs).iter().any(|t| {
            let json: Json = serde_json::from_slice(&t.json).unwrap_or(Json::Null);
            // The default web session's keys and every named one's (the demo's partner).
            let named = json.pointer("/web_sessions").and_then(Json::as_array);
            let sessions = std::iter::once(json.get("session"))
                .chain(named.into_iter().flatten().map(|w| w.get("session")))
                .flatten();
            let keys = sessions.filter_map(|s| s.get("signing_keys").and_then(Json::as_array));
            keys.flatten().any(|k| {
                k.get("secret")
                    .and_then(Json::as_str)
                    .and_then(decode_secret)
                    .is_some_and(|demo| demo == key)
            })
        })
    })
}
