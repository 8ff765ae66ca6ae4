//! The plugin configuration: the JSON an operator writes, and the checked, precomputed
//! [`Settings`] the filter runs on. Everything that can be parsed or validated once is done
//! here, so a request never looks at configuration text.

use std::fmt;
use std::rc::Rc;

use base64::Engine;
use serde::Deserialize;
use url::Url;

use crate::authtoken::{AuthTokenSigner, RawAuthToken};
use crate::http::HeaderOps;
use crate::identity;
use crate::mediation::{self, Inject, SiteAuthenticator};
use crate::policy::{self, Policy, RawPolicy, Validation};
use crate::session::KeyRing;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_base_path")]
    base_path: String,
    op: RawOp,
    client: RawClient,
    session: RawSession,
    #[serde(default)]
    identity_headers: Vec<RawIdentityHeader>,
    #[serde(default = "default_clock_skew")]
    clock_skew_s: u64,
    #[serde(default = "default_id_token_algorithms")]
    id_token_algorithms: Vec<String>,
    #[serde(default)]
    logout: RawLogout,
    #[serde(default = "default_login_timeout")]
    login_timeout_s: u64,
    #[serde(default)]
    api: RawApi,
    #[serde(default, deserialize_with = "policy::deserialize_policy")]
    policy: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "policy::deserialize_values")]
    site_authenticators: Vec<serde_json::Value>,
    #[serde(default)]
    authtoken: Option<RawAuthToken>,
}

/// Bearer-token settings shared by every API application (the OP is the token provider).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default = "default_id_token_algorithms")]
    algorithms: Vec<String>,
    #[serde(default = "default_token_cache_entries")]
    cache_max_entries: usize,
    #[serde(default = "default_token_cache_ttl")]
    cache_max_ttl_s: u64,
    #[serde(default = "default_negative_ttl")]
    negative_ttl_s: u64,
}

impl Default for RawApi {
    fn default() -> Self {
        Self {
            realm: default_realm(),
            algorithms: default_id_token_algorithms(),
            cache_max_entries: default_token_cache_entries(),
            cache_max_ttl_s: default_token_cache_ttl(),
            negative_ttl_s: default_negative_ttl(),
        }
    }
}

fn default_realm() -> String {
    "envoy-wam".into()
}
fn default_token_cache_entries() -> usize {
    10_000
}
fn default_token_cache_ttl() -> u64 {
    300
}
fn default_negative_ttl() -> u64 {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOp {
    issuer: String,
    cluster: String,
    /// Fetch the endpoints from `<issuer>/.well-known/openid-configuration`; endpoints given
    /// here as well take precedence over the discovered ones.
    #[serde(default)]
    discovery: bool,
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    end_session_endpoint: Option<String>,
    /// RFC 7662 token introspection (API applications that validate by introspection).
    #[serde(default)]
    introspection_endpoint: Option<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_jwks_max_age")]
    jwks_max_age_s: u64,
    #[serde(default = "default_jwks_min_refetch")]
    jwks_min_refetch_interval_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    client_id: String,
    client_secret: String,
    #[serde(default)]
    auth_method: ClientAuth,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default)]
    redirect_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    #[serde(default = "default_cookie_name")]
    cookie_name: String,
    #[serde(default = "default_true")]
    cookie_secure: bool,
    #[serde(default)]
    cookie_domain: Option<String>,
    #[serde(default = "default_max_lifetime")]
    max_lifetime_s: u64,
    #[serde(default = "default_idle_timeout")]
    idle_timeout_s: u64,
    #[serde(default = "default_activity_refresh")]
    activity_refresh_s: u64,
    signing_keys: Vec<RawSigningKey>,
    #[serde(default)]
    claims: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigningKey {
    kid: String,
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentityHeader {
    header: String,
    claim: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogout {
    /// Where the browser lands after logout: with an end-session endpoint this is the
    /// `post_logout_redirect_uri` given to the OP, otherwise the page the gateway redirects to.
    #[serde(default)]
    redirect_uri: Option<String>,
    /// Send the browser to the OP's end-session endpoint (RP-initiated logout) when it has one.
    #[serde(default = "default_true")]
    use_end_session_endpoint: bool,
}

impl Default for RawLogout {
    fn default() -> Self {
        Self {
            redirect_uri: None,
            use_end_session_endpoint: true,
        }
    }
}

/// How the gateway authenticates itself at the token endpoint (RFC 6749 §2.3.1).
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

/// Asymmetric JWS algorithms the ID token may be signed with. `none` and the HS* family are
/// deliberately absent: an ID token MACed with the client secret is never accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureAlg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Es256,
    Es384,
}

impl SignatureAlg {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            _ => return None,
        })
    }
}

fn default_base_path() -> String {
    "/pa".into()
}
fn default_clock_skew() -> u64 {
    60
}
fn default_id_token_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into()]
}
fn default_login_timeout() -> u64 {
    600
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_jwks_max_age() -> u64 {
    3600
}
fn default_jwks_min_refetch() -> u64 {
    30
}
fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_cookie_name() -> String {
    "PA.wam".into()
}
fn default_true() -> bool {
    true
}
fn default_max_lifetime() -> u64 {
    240 * 60
}
fn default_idle_timeout() -> u64 {
    60 * 60
}
fn default_activity_refresh() -> u64 {
    60
}

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
}

/// Endpoints named in the configuration (all of them unless discovery is on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfiguredEndpoints {
    pub authorization: Option<Url>,
    pub token: Option<Endpoint>,
    pub jwks: Option<Endpoint>,
    pub end_session: Option<Url>,
    pub introspection: Option<Endpoint>,
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

#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub cookie_name: String,
    pub cookie_secure: bool,
    pub cookie_domain: Option<String>,
    pub max_lifetime_s: u64,
    pub idle_timeout_s: u64,
    pub activity_refresh_s: u64,
    pub keys: KeyRing,
    /// ID-token claims copied into the session (besides `sub`): the configured ones plus every
    /// claim an identity header reads.
    pub claims: Vec<String>,
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

        let s = raw.session;
        if !is_cookie_name(&s.cookie_name) {
            return Err(ConfigError::new(
                "session.cookie_name",
                "must be a non-empty cookie name (letters, digits and !#$%&'*+-.^_`|~)",
            ));
        }
        if let Some(domain) = &s.cookie_domain {
            if domain.is_empty()
                || !domain
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
            {
                return Err(ConfigError::new(
                    "session.cookie_domain",
                    "must be a DNS domain",
                ));
            }
        }
        if s.max_lifetime_s == 0 {
            return Err(ConfigError::new(
                "session.max_lifetime_s",
                "must be positive",
            ));
        }
        if s.idle_timeout_s == 0 {
            return Err(ConfigError::new(
                "session.idle_timeout_s",
                "must be positive",
            ));
        }
        if s.activity_refresh_s >= s.idle_timeout_s {
            return Err(ConfigError::new(
                "session.activity_refresh_s",
                "must be shorter than session.idle_timeout_s",
            ));
        }
        if s.signing_keys.is_empty() {
            return Err(ConfigError::new(
                "session.signing_keys",
                "needs at least one key (the first one signs; the others are still accepted)",
            ));
        }
        let mut keys = Vec::with_capacity(s.signing_keys.len());
        for (i, k) in s.signing_keys.iter().enumerate() {
            if k.kid.is_empty()
                || keys
                    .iter()
                    .any(|(kid, _): &(String, Vec<u8>)| kid == &k.kid)
            {
                return Err(ConfigError::new(
                    format!("session.signing_keys[{i}].kid"),
                    "must be non-empty and unique",
                ));
            }
            let secret = base64::engine::general_purpose::STANDARD
                .decode(k.secret.trim())
                .or_else(|_| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(k.secret.trim())
                })
                .map_err(|_| {
                    ConfigError::new(
                        format!("session.signing_keys[{i}].secret"),
                        "must be base64",
                    )
                })?;
            if secret.len() < 32 {
                return Err(ConfigError::new(
                    format!("session.signing_keys[{i}].secret"),
                    "must decode to at least 32 bytes (256 bits)",
                ));
            }
            keys.push((k.kid.clone(), secret));
        }

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
        for c in s
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
                if name == &s.cookie_name || name.starts_with(&format!("{}.txn.", s.cookie_name)) {
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
        Ok(Settings {
            authtoken_jwks_path: format!("{base_path}/authtoken/JWKS"),
            callback_path: format!("{base_path}/oidc/cb"),
            logout_path: format!("{base_path}/oidc/logout"),
            heartbeat_path: format!("{base_path}/heartbeat.ping"),
            txn_cookie_prefix: format!("{}.txn.", s.cookie_name),
            base_path,
            op,
            client,
            session: SessionSettings {
                keys: KeyRing::new(&keys),
                cookie_name: s.cookie_name,
                cookie_secure: s.cookie_secure,
                cookie_domain: s.cookie_domain,
                max_lifetime_s: s.max_lifetime_s,
                idle_timeout_s: s.idle_timeout_s,
                activity_refresh_s: s.activity_refresh_s,
                claims,
            },
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

#[cfg(test)]
pub(crate) mod tests {
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
        assert_eq!(s.callback_path, "/pa/oidc/cb");
        assert_eq!(s.client.scope, "openid profile email");
        assert_eq!(s.client.auth_method, ClientAuth::ClientSecretBasic);
        assert_eq!(s.session.cookie_name, "PA.wam");
        assert!(s.session.cookie_secure);
        assert_eq!(s.session.max_lifetime_s, 14400);
        assert_eq!(s.session.idle_timeout_s, 3600);
        assert_eq!(
            s.session.claims,
            vec!["email".to_string(), "groups".to_string()]
        );
        assert_eq!(s.identity_headers[0].header, "x-wam-user");
        let ep = s.op.endpoints.complete().unwrap();
        assert_eq!(ep.jwks.authority, "op.example.com:8443");
        assert_eq!(ep.jwks.path, "/jwks?x=1");
        assert_eq!(ep.token.authority, "op.example.com");
        assert_eq!(s.op.discovery, None);
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
        let e = refused(|v| {
            v["session"]["signing_keys"][0]["secret"] = json!("%%%not-base64-SECRETVALUE")
        });
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
        let d = s.op.discovery.unwrap();
        assert_eq!(d.path, "/tenant/.well-known/openid-configuration");
        assert_eq!(d.authority, "op.example.com");
        assert_eq!(s.op.endpoints.complete(), None);
    }

    #[test]
    fn base_path_is_configurable() {
        let mut v = sample_json();
        v["base_path"] = json!("/_gw/");
        v["client"]["redirect_uri"] = json!("https://gw.example.com/_gw/oidc/cb");
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(s.callback_path, "/_gw/oidc/cb");
        assert_eq!(s.logout_path, "/_gw/oidc/logout");
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
}
