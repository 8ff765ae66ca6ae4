//! The plugin configuration: the JSON an operator writes, and the checked, precomputed
//! [`Settings`] the filter runs on. Everything that can be parsed or validated once is done
//! here, so a request never looks at configuration text.

use std::fmt;
use std::rc::Rc;

use url::Url;

use crate::authtoken::AuthTokenSigner;
use crate::identity;
use crate::mediation::{self, Inject, SiteAuthenticator};
use crate::policy::{self, Policy, RawPolicy, Validation};
pub use heartbeat::HeartbeatSettings;
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

    /// The error of a section read on its own, placed under `at` (`web_sessions[1]`).
    pub(crate) fn within(self, at: &str) -> Self {
        match at {
            "" => self,
            at => Self::new(format!("{at}.{}", self.field), self.message),
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

mod heartbeat;
mod op;
mod provider;
mod raw;
mod session;
mod site_sources;
#[cfg(test)]
pub(crate) mod tests;
mod web_session;

pub use op::OpUse;
pub use provider::TokenProvider;
use raw::*;
pub use raw::{ClientAuth, SignatureAlg};
pub use web_session::{WebSession, DEFAULT_WEB_SESSION};

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
    /// Sign-in endpoints: always there for a web session's OP (see [`OpUse`]).
    pub authorization: Option<Url>,
    pub token: Option<Endpoint>,
    /// Always there for an OP whose JWTs are checked (a web session's, or a JWT provider's).
    pub jwks: Option<Endpoint>,
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
    /// The endpoints, when the configuration names every one `used` needs.
    pub fn complete(&self, used: OpUse) -> Option<OpEndpoints> {
        if self.missing_for(used).is_some() {
            return None;
        }
        Some(OpEndpoints {
            authorization: self.authorization.clone(),
            token: self.token.clone(),
            jwks: self.jwks.clone(),
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
    /// What the OP is for: which endpoints it must have.
    pub used: OpUse,
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
    pub heartbeat_path: String,
    /// Every OP: each web session's (the default one's first), then each token provider's.
    pub ops: Vec<OpSettings>,
    /// The default web session first (index 0), then the named ones. Never empty.
    pub web_sessions: Vec<WebSession>,
    /// Issuers of bearer tokens: the named ones, then those made from applications' `api`.
    pub providers: Vec<TokenProvider>,
    /// Entries of the revocation list each worker keeps (the largest web session's setting).
    pub revocation_list_entries: usize,
    pub clock_skew_s: u64,
    pub id_token_algorithms: Vec<SignatureAlg>,
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
    /// Header names only the gateway may send upstream (identity headers, mediated-token
    /// headers): a client header that a backend would read as one of them (`x_wam_user`) is
    /// removed.
    pub reserved_request_headers: Vec<String>,
    /// Whether one of them is named with an underscore: only then can a dashed client header
    /// of another name read as one of them (`x-wam-user` for `x_wam_user`).
    pub reserved_underscored: bool,
    /// Token mediation per site; applications name them (see [`Settings::site_for`]).
    pub sites: Vec<SiteAuthenticator>,
    /// The gateway's own signing keys (JWT identity mapping, subject tokens for an STS).
    pub authtoken: Option<Rc<AuthTokenSigner>>,
    /// Where the gateway publishes the public keys of `authtoken`.
    pub authtoken_jwks_path: String,
    /// Whether the filter counts what it does into Envoy's stats (`metrics`, default on).
    pub metrics: bool,
    /// What `/pa/heartbeat.ping` answers.
    pub heartbeat: HeartbeatSettings,
    /// Hand subject, application, resource and decision to Envoy's access log (filter state).
    pub access_log_fields: bool,
}

/// A web session and its OP: what the gateway's messages to that OP (sign-in, validation,
/// logout) are made from.
#[derive(Debug, Clone, Copy)]
pub struct RelyingParty<'a> {
    pub web: &'a WebSession,
    pub op: &'a OpSettings,
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

        let (mut ops, mut web_sessions) = (Vec::new(), Vec::new());
        let default = web_session::RawParts {
            name: DEFAULT_WEB_SESSION.into(),
            op: raw.op,
            client: raw.client,
            session: raw.session,
            identity_headers: raw.identity_headers,
            logout: raw.logout,
        };
        let named = raw.web_sessions.into_iter().map(|w| web_session::RawParts {
            name: w.name,
            op: w.op,
            client: w.client,
            session: w.session,
            identity_headers: w.identity_headers,
            logout: w.logout,
        });
        for (i, parts) in std::iter::once(default).chain(named).enumerate() {
            let at = match i {
                0 => String::new(),
                i => format!("web_sessions[{}]", i - 1),
            };
            let (web, op) = web_session::read(&at, parts, &base_path, ops.len())?;
            ops.push(op);
            web_sessions.push(web);
        }
        web_session::check_all(&mut web_sessions)?;
        let mut providers = Vec::new();
        for (i, p) in raw.token_providers.into_iter().enumerate() {
            if providers
                .iter()
                .any(|q: &TokenProvider| q.name.as_deref() == Some(p.name.as_str()))
            {
                return Err(ConfigError::new(
                    format!("token_providers[{i}].name"),
                    "is used twice",
                ));
            }
            let (provider, op) = provider::read(i, p, ops.len())?;
            ops.push(op);
            providers.push(provider);
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
            if let Inject::Header(name) = &site.inject {
                let identity = web_sessions
                    .iter()
                    .flat_map(|w| w.identity_headers.iter())
                    .any(|h| &h.header == name);
                if identity {
                    return Err(ConfigError::new(
                        format!("site_authenticators[{i}].inject.header"),
                        "is an identity header: the backend could not tell the site's token \
                         from the user's identity",
                    ));
                }
            }
            if let Inject::Cookie(name) = &site.inject {
                let ours = web_sessions
                    .iter()
                    .any(|w| crate::session::chunks::is_ours(name, &w.session.cookie_name));
                if ours {
                    return Err(ConfigError::new(
                        format!("site_authenticators[{i}].inject.cookie"),
                        "must not be the session cookie's name",
                    ));
                }
            }
        }
        let mut policy = policy;
        for (i, app) in policy.applications_mut().iter_mut().enumerate() {
            if let Some(name) = &app.web_session_name {
                let found = web_sessions.iter().position(|w| &w.name == name);
                let Some(ws) = found else {
                    return Err(ConfigError::new(
                        format!("policy.applications[{i}].web_session"),
                        format!("no web session is named `{name}`"),
                    ));
                };
                app.web_session = ws;
            }
            let web = &web_sessions[app.web_session];
            let chosen = provider::resolve(i, app, &mut providers, web)?;
            provider::check_issuers(i, &chosen, &providers, &ops)?;
            for &p in &chosen {
                let provider = &providers[p];
                let op = &ops[provider.op];
                let introspects = provider.validation == Validation::Introspection;
                if introspects && op.endpoints.introspection.is_none() && op.discovery.is_none() {
                    let field = match provider.name {
                        Some(_) => format!("token_providers[{p}].op.introspection_endpoint"),
                        None => format!("policy.applications[{i}].api.validation"),
                    };
                    return Err(ConfigError::new(
                        field,
                        "introspection needs the OP's introspection_endpoint (or discovery)",
                    ));
                }
            }
            if let Some(api) = app.api.as_mut() {
                api.providers = chosen;
            }
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

        let mut sites = sites;
        site_sources::resolve(
            &mut sites,
            policy.applications(),
            &web_sessions,
            &providers,
            &ops,
        )?;

        let any_host =
            policy.serves_any_host() || policy.default_decision == policy::DefaultDecision::Allow;
        let unfixed = web_sessions
            .iter()
            .position(|w| w.client.redirect_uri.is_none());
        if let (true, Some(i)) = (any_host, unfixed) {
            // The OP sends the browser (and the code) to the redirect URI: built from a Host
            // header that a `*` application accepts, it would be the client's choice.
            let field = match i {
                0 => "client.redirect_uri".to_string(),
                i => format!("web_sessions[{}].client.redirect_uri", i - 1),
            };
            return Err(ConfigError::new(
                field,
                "required when an application serves every host (`*`, also the implicit \
                 policy without `policy`, or `default_decision: allow`): the gateway never builds \
                 a redirect from a client-chosen Host",
            ));
        }
        let heartbeat = heartbeat::read(raw.heartbeat)?;
        let mut settings = Settings {
            heartbeat,
            access_log_fields: raw.access_log_fields,
            authtoken_jwks_path: format!("{base_path}/authtoken/JWKS"),
            heartbeat_path: format!("{base_path}/heartbeat.ping"),
            base_path,
            // One list serves every web session: the largest setting.
            revocation_list_entries: web_sessions
                .iter()
                .map(|w| w.session.revocation_list_entries)
                .max()
                .unwrap_or(10_000),
            reserved_request_headers: web_sessions[0]
                .no_identity
                .iter()
                .map(|(h, _)| h.clone())
                .chain(sites.iter().filter_map(|s| match &s.inject {
                    crate::mediation::Inject::Header(name) => Some(name.clone()),
                    crate::mediation::Inject::Cookie(_) => None,
                }))
                .collect(),
            sites,
            authtoken: authtoken.map(Rc::new),
            clock_skew_s: raw.clock_skew_s,
            id_token_algorithms,
            ops,
            web_sessions,
            providers,
            login_timeout_s: raw.login_timeout_s,
            api,
            policy_is_implicit: raw.policy.is_none(),
            policy_needs_client_ip: raw.policy.as_ref().is_some_and(needs_client_ip),
            policy,
            fallback: Policy::implicit(),
            metrics: raw.metrics,
            reserved_underscored: false,
        };
        settings.reserved_underscored = settings
            .reserved_request_headers
            .iter()
            .any(|r| r.contains('_'));
        Ok(settings)
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
    /// Web session `i` (an index from the configuration: an application's, an endpoint's);
    /// the default one for anything else.
    pub fn web(&self, i: usize) -> &WebSession {
        match self.web_sessions.get(i) {
            Some(w) => w,
            None => self.default_web(),
        }
    }

    /// The default web session (the top-level `op`, `client` and `session`).
    pub fn default_web(&self) -> &WebSession {
        // Never empty: `from_raw` always makes the default one first.
        &self.web_sessions[0]
    }

    /// OP `i` (an index from the configuration: a web session's or a token provider's).
    pub fn op(&self, i: usize) -> &OpSettings {
        match self.ops.get(i) {
            Some(op) => op,
            None => &self.ops[0],
        }
    }

    /// Web session `i` with its OP: the relying party that signs users in there.
    pub fn rp(&self, i: usize) -> RelyingParty<'_> {
        let web = self.web(i);
        RelyingParty {
            web,
            op: self.op(web.op),
        }
    }

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
