//! The plugin configuration: the JSON an operator writes, and the checked, precomputed
//! [`Settings`] the filter runs on. Everything that can be parsed or validated once is done
//! here, so a request never looks at configuration text.

use std::fmt;
use std::rc::Rc;

use url::Url;

use crate::authtoken::AuthTokenSigner;
use crate::http::HeaderOps;
use crate::identity;
use crate::mediation::{self, Inject, SiteAuthenticator};
use crate::policy::{self, Policy, RawPolicy, Validation};
pub use ops::HeartbeatSettings;
pub use session::SessionSettings;

/// A configuration that was refused: `field` is the JSON path an operator has to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration at `{}`: {}",
            self.field, self.message
        )
    }
}

impl std::error::Error for ConfigError {}

mod ops;
mod raw;
mod session;
#[cfg(test)]
pub(crate) mod tests;

use raw::*;
pub use raw::{ClientAuth, SignatureAlg};

/// Where a callout goes: the Envoy cluster, and the `:authority` and `:path` to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    pub(crate) fn parse(field: &str, value: &str) -> Result<Self, ConfigError> {
        let url = parse_http_url(field, value)?;
        let host = url.host_str().unwrap_or_default();
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        Ok(Self {
            url: value.to_string(),
            authority,
            path,
        })
    }
}

pub(crate) fn parse_http_url(field: &str, value: &str) -> Result<Url, ConfigError> {
    // The build maps host names with an ASCII-only IDNA adapter (no Unicode tables in the
    // .wasm), which expects what it is handed to be ASCII: international names go in punycode.
    if !value.is_ascii() {
        return Err(ConfigError::new(
            field,
            "must be ASCII (write an international host name in punycode, xn--...)",
        ));
    }
    let url = Url::parse(value).map_err(|e| ConfigError::new(field, format!("not a URL: {e}")))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(ConfigError::new(field, "must be an http or https URL"));
    }
    if url.host_str().is_none() {
        return Err(ConfigError::new(field, "must name a host"));
    }
    if url.fragment().is_some() {
        return Err(ConfigError::new(field, "must not have a fragment"));
    }
    Ok(url)
}

/// The OP's endpoints the gateway uses, from the configuration or from discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpEndpoints {
    pub authorization: Url,
    pub token: Endpoint,
    pub jwks: Endpoint,
    pub end_session: Option<Url>,
    pub introspection: Option<Endpoint>,
    pub userinfo: Option<Endpoint>,
    pub revocation: Option<Endpoint>,
}

/// Endpoints named in the configuration (all of them unless discovery is on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfiguredEndpoints {
    pub authorization: Option<Url>,
    pub token: Option<Endpoint>,
    pub jwks: Option<Endpoint>,
    pub end_session: Option<Url>,
    pub introspection: Option<Endpoint>,
    pub userinfo: Option<Endpoint>,
    pub revocation: Option<Endpoint>,
}

impl ConfiguredEndpoints {
    /// All the endpoints, when the configuration names every required one.
    pub fn complete(&self) -> Option<OpEndpoints> {
        Some(OpEndpoints {
            authorization: self.authorization.clone()?,
            token: self.token.clone()?,
            jwks: self.jwks.clone()?,
            end_session: self.end_session.clone(),
            introspection: self.introspection.clone(),
            userinfo: self.userinfo.clone(),
            revocation: self.revocation.clone(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct OpSettings {
    pub issuer: String,
    pub cluster: String,
    pub endpoints: ConfiguredEndpoints,
    /// The discovery document's location, when discovery is on.
    pub discovery: Option<Endpoint>,
    pub timeout_ms: u64,
    pub jwks_max_age_s: u64,
    pub jwks_min_refetch_interval_s: u64,
}

#[derive(Clone)]
pub struct ClientSettings {
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: ClientAuth,
    /// The `scope` parameter, already joined with spaces.
    pub scope: String,
    pub redirect_uri: Option<String>,
}

impl std::fmt::Debug for ClientSettings {
    /// Never the client secret: settings end up in panic messages and debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("client_id", &self.client_id)
            .field("client_secret", &format_args!("<redacted>"))
            .field("auth_method", &self.auth_method)
            .field("scope", &self.scope)
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityHeader {
    /// Lower-case header name.
    pub header: String,
    pub claim: String,
}

/// How bearer tokens are checked and remembered.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub realm: String,
    pub algorithms: Vec<SignatureAlg>,
    pub cache_max_entries: usize,
    pub cache_max_ttl_s: u64,
    pub negative_ttl_s: u64,
}

#[derive(Debug, Clone)]
pub struct LogoutSettings {
    pub redirect_uri: Option<String>,
    pub use_end_session_endpoint: bool,
}

/// The checked configuration the filter runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub base_path: String,
    pub callback_path: String,
    pub logout_path: String,
    pub backchannel_path: String,
    pub frontchannel_path: String,
    pub heartbeat_path: String,
    pub op: OpSettings,
    pub client: ClientSettings,
    pub session: SessionSettings,
    pub identity_headers: Vec<IdentityHeader>,
    pub clock_skew_s: u64,
    pub id_token_algorithms: Vec<SignatureAlg>,
    pub logout: LogoutSettings,
    pub login_timeout_s: u64,
    pub api: ApiSettings,
    /// Applications, resources and rules; without a `policy` in the configuration, one web
    /// application for every host and path with no rules (a session is all it takes).
    pub policy: Policy,
    /// True when the configuration has no `policy`: the request path skips routing.
    pub policy_is_implicit: bool,
    /// Whether any rule or audit line looks at the client address (network and rate-limit
    /// rules, audited resources); if none does, it is not read.
    pub policy_needs_client_ip: bool,
    /// What `policy.default_decision: allow` falls back to: a session, no rules.
    pub fallback: Policy,
    /// Every identity header removed: for requests that go on without an identity.
    pub no_identity: HeaderOps,
    /// Header names only the gateway may send upstream (identity headers, mediated-token
    /// headers): a client header that a backend would read as one of them (`x_wam_user`) is
    /// removed.
    pub reserved_request_headers: Vec<String>,
    /// Token mediation per site; applications name them (see [`Settings::site_for`]).
    pub sites: Vec<SiteAuthenticator>,
    /// The gateway's own signing keys (JWT identity mapping, subject tokens for an STS).
    pub authtoken: Option<Rc<AuthTokenSigner>>,
    /// Where the gateway publishes the public keys of `authtoken`.
    pub authtoken_jwks_path: String,
    /// Prefix of the per-login transaction cookies (`<session cookie>.txn.<id>`).
    pub txn_cookie_prefix: String,
    /// What `/pa/heartbeat.ping` answers.
    pub heartbeat: HeartbeatSettings,
    /// Hand subject, application, resource and decision to Envoy's access log (filter state).
    pub access_log_fields: bool,
}

/// Headers a session claim or a mediated token may never be written into: they would change
/// how Envoy or the backend parse the request rather than tell it who the user is.
pub(crate) const RESERVED_HEADERS: &[&str] = &[
    "host",
    "cookie",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "expect",
];

/// A `tchar` of RFC 9110 (header names, cookie names).
pub(crate) fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn is_cookie_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// A deserializer's message without the values it quotes (`invalid type: string "…"`): a
/// secret typed into the wrong field must not reach the log that names the field.
fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    let variant = message.starts_with("unknown variant");
    while let Some(c) = chars.next() {
        let quote = match c {
            '"' => '"',
            '`' if variant => '`',
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push(quote);
        out.push('…');
        out.push(quote);
        let mut escaped = false;
        for c in chars.by_ref() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c == quote && !escaped => break,
                _ => escaped = false,
            }
        }
    }
    out
}

impl Settings {
    /// Parses and checks the plugin configuration. The error names the JSON field at fault.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(root)".to_string()
            } else {
                path
            };
            ConfigError::new(field, without_values(&e.inner().to_string()))
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let base_path = raw.base_path.trim_end_matches('/').to_string();
        if !base_path.starts_with('/') || base_path.contains(['?', '#', '*']) {
            return Err(ConfigError::new(
                "base_path",
                "must be an absolute path such as /pa",
            ));
        }

        let op = raw.op;
        if op.issuer.is_empty() {
            return Err(ConfigError::new("op.issuer", "must not be empty"));
        }
        parse_http_url("op.issuer", &op.issuer)?;
        if op.cluster.is_empty() {
            return Err(ConfigError::new("op.cluster", "must name an Envoy cluster"));
        }
        if op.timeout_ms == 0 || op.timeout_ms > 60_000 {
            return Err(ConfigError::new(
                "op.timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        let endpoints = ConfiguredEndpoints {
            authorization: op
                .authorization_endpoint
                .as_deref()
                .map(|u| parse_http_url("op.authorization_endpoint", u))
                .transpose()?,
            token: op
                .token_endpoint
                .as_deref()
                .map(|u| Endpoint::parse("op.token_endpoint", u))
                .transpose()?,
            jwks: op
                .jwks_uri
                .as_deref()
                .map(|u| Endpoint::parse("op.jwks_uri", u))
                .transpose()?,
            end_session: op
                .end_session_endpoint
                .as_deref()
                .map(|u| parse_http_url("op.end_session_endpoint", u))
                .transpose()?,
            introspection: op
                .introspection_endpoint
                .as_deref()
                .map(|u| Endpoint::parse("op.introspection_endpoint", u))
                .transpose()?,
            userinfo: op
                .userinfo_endpoint
                .as_deref()
                .map(|u| Endpoint::parse("op.userinfo_endpoint", u))
                .transpose()?,
            revocation: op
                .revocation_endpoint
                .as_deref()
                .map(|u| Endpoint::parse("op.revocation_endpoint", u))
                .transpose()?,
        };
        let discovery = if op.discovery {
            let url = format!(
                "{}/.well-known/openid-configuration",
                op.issuer.trim_end_matches('/')
            );
            Some(Endpoint::parse("op.issuer", &url)?)
        } else {
            for (field, missing) in [
                (
                    "op.authorization_endpoint",
                    endpoints.authorization.is_none(),
                ),
                ("op.token_endpoint", endpoints.token.is_none()),
                ("op.jwks_uri", endpoints.jwks.is_none()),
            ] {
                if missing {
                    return Err(ConfigError::new(
                        field,
                        "is required unless op.discovery is true",
                    ));
                }
            }
            None
        };
        let op = OpSettings {
            endpoints,
            discovery,
            issuer: op.issuer,
            cluster: op.cluster,
            timeout_ms: op.timeout_ms,
            jwks_max_age_s: op.jwks_max_age_s,
            jwks_min_refetch_interval_s: op.jwks_min_refetch_interval_s,
        };

        let client = raw.client;
        if client.client_id.is_empty() {
            return Err(ConfigError::new("client.client_id", "must not be empty"));
        }
        if client.client_secret.is_empty() {
            return Err(ConfigError::new(
                "client.client_secret",
                "must not be empty",
            ));
        }
        if !client.scopes.iter().any(|s| s == "openid") {
            return Err(ConfigError::new(
                "client.scopes",
                "must include `openid` (this is an OpenID Connect login)",
            ));
        }
        if let Some(bad) = client
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.contains([' ', '"', '\\']))
        {
            return Err(ConfigError::new(
                "client.scopes",
                format!("`{bad}` is not a valid scope token"),
            ));
        }
        if let Some(uri) = &client.redirect_uri {
            let url = parse_http_url("client.redirect_uri", uri)?;
            if url.path() != format!("{base_path}/oidc/cb") {
                return Err(ConfigError::new(
                    "client.redirect_uri",
                    format!("must end in the callback path {base_path}/oidc/cb"),
                ));
            }
        }
        let client = ClientSettings {
            scope: client.scopes.join(" "),
            client_id: client.client_id,
            client_secret: client.client_secret,
            auth_method: client.auth_method,
            redirect_uri: client.redirect_uri,
        };

        let session = session::read(raw.session)?;

        let mut identity_headers: Vec<IdentityHeader> = Vec::new();
        for (i, h) in raw.identity_headers.iter().enumerate() {
            let name = h.header.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(is_token_char) {
                return Err(ConfigError::new(
                    format!("identity_headers[{i}].header"),
                    "must be an HTTP header name",
                ));
            }
            if RESERVED_HEADERS.contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("identity_headers[{i}].header"),
                    format!("`{name}` cannot carry identity"),
                ));
            }
            if identity_headers.iter().any(|x| x.header == name) {
                return Err(ConfigError::new(
                    format!("identity_headers[{i}].header"),
                    "is listed twice",
                ));
            }
            if h.claim.is_empty() {
                return Err(ConfigError::new(
                    format!("identity_headers[{i}].claim"),
                    "must name a claim",
                ));
            }
            identity_headers.push(IdentityHeader {
                header: name,
                claim: h.claim.clone(),
            });
        }

        let mut claims: Vec<String> = Vec::new();
        for c in session
            .claims
            .iter()
            .chain(identity_headers.iter().map(|h| &h.claim))
        {
            if c != "sub" && !claims.contains(c) {
                claims.push(c.clone());
            }
        }

        let id_token_algorithms = algorithms("id_token_algorithms", &raw.id_token_algorithms)?;
        let api = api_settings(raw.api)?;
        let policy = match &raw.policy {
            Some(p) => RawPolicy::from_value(p)
                .and_then(|p| policy::compile(&p))
                .map_err(|e| match e.field.as_str() {
                    "" => ConfigError::new("policy", e.message),
                    f => ConfigError::new(format!("policy.{f}"), e.message),
                })?,
            None => Policy::implicit(),
        };
        let authtoken = raw.authtoken.map(AuthTokenSigner::compile).transpose()?;
        let sites = mediation::compile_all(raw.site_authenticators, authtoken.is_some())?;
        for (i, site) in sites.iter().enumerate() {
            if let Inject::Cookie(name) = &site.inject {
                if crate::session::chunks::is_ours(name, &session.cookie_name) {
                    return Err(ConfigError::new(
                        format!("site_authenticators[{i}].inject.cookie"),
                        "must not be the session cookie's name",
                    ));
                }
            }
        }
        for (i, app) in policy.applications().iter().enumerate() {
            if let Some(name) = &app.site_authenticator {
                let Some(site) = sites.iter().find(|s| &s.name == name) else {
                    return Err(ConfigError::new(
                        format!("policy.applications[{i}].site_authenticator"),
                        format!("no site authenticator is named `{name}`"),
                    ));
                };
                let web = app.app_type != policy::AppType::Api;
                if web && site.token_exchange().is_some() && authtoken.is_none() {
                    return Err(ConfigError::new(
                        format!("policy.applications[{i}].site_authenticator"),
                        "token exchange for web sessions needs `authtoken` (the gateway signs \
                         the subject token the STS receives)",
                    ));
                }
            }
            let introspects = app
                .api
                .as_ref()
                .is_some_and(|a| a.validation == Validation::Introspection);
            if introspects && op.endpoints.introspection.is_none() && op.discovery.is_none() {
                return Err(ConfigError::new(
                    format!("policy.applications[{i}].api.validation"),
                    "introspection needs op.introspection_endpoint (or op.discovery)",
                ));
            }
        }

        if let Some(uri) = &raw.logout.redirect_uri {
            if !uri.starts_with('/') || uri.starts_with("//") {
                parse_http_url("logout.redirect_uri", uri)?;
            }
        }
        if !(30..=3600).contains(&raw.login_timeout_s) {
            return Err(ConfigError::new(
                "login_timeout_s",
                "must be between 30 and 3600",
            ));
        }
        if raw.clock_skew_s > 600 {
            return Err(ConfigError::new("clock_skew_s", "must be at most 600"));
        }

        let any_host =
            policy.serves_any_host() || policy.default_decision == policy::DefaultDecision::Allow;
        if any_host && client.redirect_uri.is_none() {
            // The OP sends the browser (and the code) to the redirect URI: built from a Host
            // header that a `*` application accepts, it would be the client's choice.
            return Err(ConfigError::new(
                "client.redirect_uri",
                "required when an application serves every host (`*`, also the implicit \
                 policy without `policy`, or `default_decision: allow`): the gateway never builds \
                 a redirect from a client-chosen Host",
            ));
        }
        let heartbeat = ops::heartbeat(raw.heartbeat)?;
        Ok(Settings {
            heartbeat,
            access_log_fields: raw.access_log_fields,
            authtoken_jwks_path: format!("{base_path}/authtoken/JWKS"),
            callback_path: format!("{base_path}/oidc/cb"),
            logout_path: format!("{base_path}/oidc/logout"),
            backchannel_path: format!("{base_path}/oidc/backchannel"),
            frontchannel_path: format!("{base_path}/oidc/frontchannel"),
            heartbeat_path: format!("{base_path}/heartbeat.ping"),
            txn_cookie_prefix: format!("{}.txn.", session.cookie_name),
            base_path,
            op,
            client,
            session: SessionSettings { claims, ..session },
            no_identity: identity::no_identity(&identity_headers),
            reserved_request_headers: identity_headers
                .iter()
                .map(|h| h.header.clone())
                .chain(sites.iter().filter_map(|s| match &s.inject {
                    crate::mediation::Inject::Header(name) => Some(name.clone()),
                    crate::mediation::Inject::Cookie(_) => None,
                }))
                .collect(),
            sites,
            authtoken: authtoken.map(Rc::new),
            identity_headers,
            clock_skew_s: raw.clock_skew_s,
            id_token_algorithms,
            logout: LogoutSettings {
                redirect_uri: raw.logout.redirect_uri,
                use_end_session_endpoint: raw.logout.use_end_session_endpoint,
            },
            login_timeout_s: raw.login_timeout_s,
            api,
            policy_is_implicit: raw.policy.is_none(),
            policy_needs_client_ip: raw.policy.as_ref().is_some_and(needs_client_ip),
            policy,
            fallback: Policy::implicit(),
        })
    }
}

/// Whether a policy has a network or rate-limit rule or an audited resource anywhere.
fn needs_client_ip(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let kind = m.get("type").and_then(Value::as_str);
            matches!(kind, Some("network" | "rate_limit"))
                || m.get("audit") == Some(&Value::Bool(true))
                || m.values().any(needs_client_ip)
        }
        Value::Array(items) => items.iter().any(needs_client_ip),
        _ => false,
    }
}

impl Settings {
    /// The site authenticator an application names, with its index.
    pub fn site_for(&self, app: &policy::Application) -> Option<(usize, &SiteAuthenticator)> {
        let name = app.site_authenticator.as_deref()?;
        self.sites.iter().enumerate().find(|(_, s)| s.name == name)
    }
}

fn algorithms(field: &str, names: &[String]) -> Result<Vec<SignatureAlg>, ConfigError> {
    let mut out = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let alg = SignatureAlg::from_name(name).ok_or_else(|| {
            ConfigError::new(
                format!("{field}[{i}]"),
                format!(
                    "`{name}` is not accepted (use RS256, RS384, RS512, PS256, ES256 or ES384)"
                ),
            )
        })?;
        out.push(alg);
    }
    if out.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    Ok(out)
}

fn api_settings(raw: RawApi) -> Result<ApiSettings, ConfigError> {
    if raw.realm.is_empty()
        || raw.realm.contains(['"', '\\'])
        || raw.realm.chars().any(char::is_control)
    {
        return Err(ConfigError::new(
            "api.realm",
            "must be non-empty text without quotes or backslashes",
        ));
    }
    if !(1..=1_000_000).contains(&raw.cache_max_entries) {
        return Err(ConfigError::new(
            "api.cache_max_entries",
            "must be between 1 and 1000000",
        ));
    }
    if raw.cache_max_ttl_s > 86_400 {
        return Err(ConfigError::new(
            "api.cache_max_ttl_s",
            "must be at most 86400",
        ));
    }
    if raw.negative_ttl_s > 3600 {
        return Err(ConfigError::new(
            "api.negative_ttl_s",
            "must be at most 3600",
        ));
    }
    Ok(ApiSettings {
        realm: raw.realm,
        algorithms: algorithms("api.algorithms", &raw.algorithms)?,
        cache_max_entries: raw.cache_max_entries,
        cache_max_ttl_s: raw.cache_max_ttl_s,
        negative_ttl_s: raw.negative_ttl_s,
    })
}
