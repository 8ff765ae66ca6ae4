//! OpenID Provider discovery (OpenID Connect Discovery 1.0): the endpoints from
//! `<issuer>/.well-known/openid-configuration`, and when to (re)try fetching them.

use serde::Deserialize;

use crate::config::{parse_http_url, ConfiguredEndpoints, Endpoint, OpEndpoints, OpSettings};
use crate::http::Callout;

/// How long to wait before trying again after a failed fetch.
pub const RETRY_S: u64 = 5;

/// The discovery request, when the configuration asks for discovery.
pub fn request(op: &OpSettings) -> Option<Callout> {
    let doc = op.discovery.as_ref()?;
    Some(Callout {
        cluster: op.cluster.clone(),
        method: "GET",
        authority: doc.authority.clone(),
        path: doc.path.clone(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
        timeout_ms: op.timeout_ms,
    })
}

#[derive(Deserialize)]
struct Document {
    issuer: String,
    // Required of an OP that signs users in (checked against what the OP is used for); a token
    // provider may publish only its keys.
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    end_session_endpoint: Option<String>,
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default)]
    userinfo_endpoint: Option<String>,
    #[serde(default)]
    revocation_endpoint: Option<String>,
}

/// Why a discovery document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryError {
    /// The document names this issuer (made printable), not the configured one: the
    /// configuration or the OP is wrong, and retrying will not fix it.
    OtherIssuer(String),
    Unusable(String),
}

/// The endpoints from a discovery document, with configured ones taking precedence. The
/// document must name exactly the configured issuer (Discovery §4.3), or it is refused.
pub fn parse(op: &OpSettings, body: &[u8]) -> Result<OpEndpoints, DiscoveryError> {
    let doc: Document = serde_json::from_slice(body).map_err(|_| {
        DiscoveryError::Unusable("not an OpenID Provider configuration document".into())
    })?;
    if doc.issuer != op.issuer {
        return Err(DiscoveryError::OtherIssuer(crate::http::printable(
            &doc.issuer,
        )));
    }
    let configured = &op.endpoints;
    let bad = |e: crate::config::ConfigError| {
        DiscoveryError::Unusable(format!(
            "discovered `{}` is not usable: {}",
            e.field, e.message
        ))
    };
    let endpoints = OpEndpoints {
        authorization: match (
            &configured.authorization,
            doc.authorization_endpoint.as_deref(),
        ) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(u)) => Some(parse_http_url("authorization_endpoint", u).map_err(bad)?),
            (None, None) => None,
        },
        token: optional(&configured.token, "token_endpoint", &doc.token_endpoint).map_err(bad)?,
        jwks: optional(&configured.jwks, "jwks_uri", &doc.jwks_uri).map_err(bad)?,
        end_session: match (&configured.end_session, doc.end_session_endpoint.as_deref()) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(u)) => Some(parse_http_url("end_session_endpoint", u).map_err(bad)?),
            (None, None) => None,
        },
        introspection: match (
            &configured.introspection,
            doc.introspection_endpoint.as_deref(),
        ) {
            (Some(e), _) => Some(e.clone()),
            (None, Some(u)) => Some(Endpoint::parse("introspection_endpoint", u).map_err(bad)?),
            (None, None) => None,
        },
        userinfo: optional(
            &configured.userinfo,
            "userinfo_endpoint",
            &doc.userinfo_endpoint,
        )
        .map_err(bad)?,
        revocation: optional(
            &configured.revocation,
            "revocation_endpoint",
            &doc.revocation_endpoint,
        )
        .map_err(bad)?,
    };
    let complete = ConfiguredEndpoints {
        authorization: endpoints.authorization.clone(),
        token: endpoints.token.clone(),
        jwks: endpoints.jwks.clone(),
        introspection: endpoints.introspection.clone(),
        ..ConfiguredEndpoints::default()
    };
    match complete.complete(op.used) {
        Some(_) => Ok(endpoints),
        None => Err(DiscoveryError::Unusable(
            "the document lacks an endpoint this OP is used for".into(),
        )),
    }
}

/// An optional endpoint: the configured one, else the discovered one.
fn optional(
    configured: &Option<Endpoint>,
    field: &str,
    discovered: &Option<String>,
) -> Result<Option<Endpoint>, crate::config::ConfigError> {
    match (configured, discovered) {
        (Some(e), _) => Ok(Some(e.clone())),
        (None, Some(u)) => Endpoint::parse(field, u).map(Some),
        (None, None) => Ok(None),
    }
}

/// When this VM should fetch the document: until it has one, one fetch at a time, and no
/// more often than every [`RETRY_S`] seconds.
#[derive(Debug, Default)]
pub struct DiscoveryState {
    in_flight: bool,
    last_attempt: Option<u64>,
}

impl DiscoveryState {
    pub fn due(&self, now: u64, have_endpoints: bool) -> bool {
        !have_endpoints
            && !self.in_flight
            && self
                .last_attempt
                .is_none_or(|t| now.saturating_sub(t) >= RETRY_S)
    }

    pub fn started(&mut self, now: u64) {
        self.in_flight = true;
        self.last_attempt = Some(now);
    }

    pub fn finished(&mut self) {
        self.in_flight = false;
    }

    /// The request under way was dropped unanswered (the native host's callout dies with the
    /// request that sent it): due again at once.
    pub fn abandoned(&mut self) {
        self.in_flight = false;
        self.last_attempt = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::sample_json;
    use crate::config::Settings;
    use serde_json::json;

    fn settings(op: serde_json::Value) -> Settings {
        let mut v = sample_json();
        v["op"] = op;
        Settings::from_json(v.to_string().as_bytes()).unwrap()
    }

    fn doc(issuer: &str) -> Vec<u8> {
        json!({
            "issuer": issuer,
            "authorization_endpoint": "https://op.example.com/as/authorize",
            "token_endpoint": "https://op.example.com:8443/as/token",
            "jwks_uri": "https://op.example.com/jwks",
            "end_session_endpoint": "https://op.example.com/logout",
            "userinfo_endpoint": "https://op.example.com/me",
            "revocation_endpoint": "https://op.example.com/token/revocation",
            "response_types_supported": ["code"]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn endpoints_come_from_the_document_with_configured_ones_first() {
        let s = settings(
            json!({"issuer": "https://op.example.com", "cluster": "op", "discovery": true,
                                "jwks_uri": "https://keys.example.com/jwks"}),
        );
        let c = request(s.op(0)).unwrap();
        assert_eq!(
            (c.method, c.path.as_str(), c.authority.as_str()),
            ("GET", "/.well-known/openid-configuration", "op.example.com")
        );
        let ep = parse(s.op(0), &doc("https://op.example.com")).unwrap();
        assert_eq!(
            ep.authorization.unwrap().as_str(),
            "https://op.example.com/as/authorize"
        );
        assert_eq!(
            (
                ep.token.as_ref().unwrap().authority.as_str(),
                ep.token.as_ref().unwrap().path.as_str()
            ),
            ("op.example.com:8443", "/as/token")
        );
        assert_eq!(ep.jwks.as_ref().unwrap().authority, "keys.example.com");
        assert_eq!(
            ep.end_session.unwrap().as_str(),
            "https://op.example.com/logout"
        );
        assert_eq!(ep.userinfo.unwrap().path, "/me");
        assert_eq!(ep.revocation.unwrap().path, "/token/revocation");
    }

    #[test]
    fn userinfo_and_revocation_are_optional_and_configured_ones_win() {
        let s = settings(json!({"issuer": "https://op.example.com", "cluster": "op",
            "discovery": true, "userinfo_endpoint": "https://ui.example.com/userinfo"}));
        let mut d: serde_json::Value =
            serde_json::from_slice(&doc("https://op.example.com")).unwrap();
        let ep = parse(s.op(0), d.to_string().as_bytes()).unwrap();
        assert_eq!(ep.userinfo.unwrap().authority, "ui.example.com");
        d.as_object_mut().unwrap().remove("revocation_endpoint");
        d.as_object_mut().unwrap().remove("userinfo_endpoint");
        let ep = parse(s.op(0), d.to_string().as_bytes()).unwrap();
        assert!(ep.revocation.is_none());
        assert!(ep.userinfo.is_some());
        d["revocation_endpoint"] = json!("ftp://op.example.com/revoke");
        assert!(parse(s.op(0), d.to_string().as_bytes()).is_err());

        // Configured without discovery: parsed like the other endpoints.
        let mut v = sample_json();
        v["op"]["revocation_endpoint"] = json!("https://op.example.com/revoke?x=1");
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        let ep = s
            .op(0)
            .endpoints
            .complete(crate::config::OpUse::Login)
            .unwrap();
        assert_eq!(ep.revocation.unwrap().path, "/revoke?x=1");
        assert!(ep.userinfo.is_none());
        v["op"]["userinfo_endpoint"] = json!("not a url");
        let e = Settings::from_json(v.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, "op.userinfo_endpoint");
    }

    #[test]
    fn refuses_another_issuer_and_garbage() {
        let s = settings(
            json!({"issuer": "https://op.example.com", "cluster": "op", "discovery": true}),
        );
        assert_eq!(
            parse(s.op(0), &doc("https://evil.example.com")),
            Err(DiscoveryError::OtherIssuer(
                "https://evil.example.com".into()
            ))
        );
        assert!(parse(s.op(0), b"<html>").is_err());
        assert!(parse(s.op(0), br#"{"issuer":"https://op.example.com"}"#).is_err());
        let mut d: serde_json::Value =
            serde_json::from_slice(&doc("https://op.example.com")).unwrap();
        d["token_endpoint"] = json!("javascript:alert(1)");
        assert!(parse(s.op(0), d.to_string().as_bytes()).is_err());
    }

    #[test]
    fn retries_are_spaced_and_single() {
        let mut d = DiscoveryState::default();
        assert!(d.due(100, false));
        assert!(!d.due(100, true));
        d.started(100);
        assert!(!d.due(200, false), "one fetch at a time");
        d.finished();
        assert!(!d.due(102, false));
        assert!(d.due(105, false));
    }
}
