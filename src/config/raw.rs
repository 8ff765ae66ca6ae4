//! The configuration as written: serde's view of the plugin's JSON, with its defaults. The
//! checks and the settings the filter runs on are in the parent module.

use serde::Deserialize;

use crate::authtoken::RawAuthToken;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_base_path")]
    pub(super) base_path: String,
    pub(super) op: RawOp,
    pub(super) client: RawClient,
    pub(super) session: RawSession,
    #[serde(default)]
    pub(super) identity_headers: Vec<RawIdentityHeader>,
    #[serde(default = "default_clock_skew")]
    pub(super) clock_skew_s: u64,
    #[serde(default = "default_id_token_algorithms")]
    pub(super) id_token_algorithms: Vec<String>,
    #[serde(default)]
    pub(super) logout: RawLogout,
    #[serde(default = "default_login_timeout")]
    pub(super) login_timeout_s: u64,
    #[serde(default)]
    pub(super) api: RawApi,
    #[serde(default, deserialize_with = "crate::policy::deserialize_policy")]
    pub(super) policy: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "crate::policy::deserialize_values")]
    pub(super) site_authenticators: Vec<serde_json::Value>,
    #[serde(default)]
    pub(super) authtoken: Option<RawAuthToken>,
    /// More web sessions besides the default one (the top-level `op`, `client`, `session`,
    /// `identity_headers` and `logout`), each with its own OP, client and cookie.
    #[serde(default)]
    pub(super) web_sessions: Vec<RawWebSession>,
    /// Named issuers of bearer tokens that API applications may accept.
    #[serde(default)]
    pub(super) token_providers: Vec<RawTokenProvider>,
    #[serde(default = "default_metrics")]
    pub(super) metrics: bool,
    #[serde(default)]
    pub(super) heartbeat: super::heartbeat::RawHeartbeat,
    /// Subject, application, resource and decision in Envoy's filter state, for its access log.
    #[serde(default)]
    pub(super) access_log_fields: bool,
}

fn default_metrics() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebSession {
    pub(super) name: String,
    pub(super) op: RawOp,
    pub(super) client: RawClient,
    pub(super) session: RawSession,
    #[serde(default)]
    pub(super) identity_headers: Vec<RawIdentityHeader>,
    #[serde(default)]
    pub(super) logout: RawLogout,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTokenProvider {
    pub(super) name: String,
    pub(super) op: RawOp,
    /// `jwt` (the provider's JWKS) or `introspection` (RFC 7662, authenticated as `client`).
    pub(super) validation: crate::policy::Validation,
    /// Accepted `aud` values (JWT validation: at least one).
    #[serde(default)]
    pub(super) audiences: Vec<String>,
    /// The gateway's credentials at the introspection endpoint.
    #[serde(default)]
    pub(super) client: Option<RawProviderClient>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProviderClient {
    pub(super) client_id: String,
    pub(super) client_secret: String,
}

/// Bearer-token settings shared by every API application (the OP is the token provider).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    #[serde(default = "default_realm")]
    pub(super) realm: String,
    #[serde(default = "default_id_token_algorithms")]
    pub(super) algorithms: Vec<String>,
    #[serde(default = "default_token_cache_entries")]
    pub(super) cache_max_entries: usize,
    #[serde(default = "default_token_cache_ttl")]
    pub(super) cache_max_ttl_s: u64,
    #[serde(default = "default_negative_ttl")]
    pub(super) negative_ttl_s: u64,
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
pub(super) struct RawOp {
    pub(super) issuer: String,
    pub(super) cluster: String,
    /// Fetch the endpoints from `<issuer>/.well-known/openid-configuration`; endpoints given
    /// here as well take precedence over the discovered ones.
    #[serde(default)]
    pub(super) discovery: bool,
    #[serde(default)]
    pub(super) authorization_endpoint: Option<String>,
    #[serde(default)]
    pub(super) token_endpoint: Option<String>,
    #[serde(default)]
    pub(super) jwks_uri: Option<String>,
    #[serde(default)]
    pub(super) end_session_endpoint: Option<String>,
    /// RFC 7662 token introspection (API applications that validate by introspection).
    #[serde(default)]
    pub(super) introspection_endpoint: Option<String>,
    /// OpenID Connect UserInfo (claims at login and session validation).
    #[serde(default)]
    pub(super) userinfo_endpoint: Option<String>,
    /// RFC 7009 token revocation (the refresh token, at logout).
    #[serde(default)]
    pub(super) revocation_endpoint: Option<String>,
    #[serde(default = "default_timeout_ms")]
    pub(super) timeout_ms: u64,
    #[serde(default = "default_jwks_max_age")]
    pub(super) jwks_max_age_s: u64,
    #[serde(default = "default_jwks_min_refetch")]
    pub(super) jwks_min_refetch_interval_s: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub(super) client_id: String,
    pub(super) client_secret: String,
    #[serde(default)]
    pub(super) auth_method: ClientAuth,
    #[serde(default = "default_scopes")]
    pub(super) scopes: Vec<String>,
    #[serde(default)]
    pub(super) redirect_uri: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    #[serde(default = "default_cookie_name")]
    pub(super) cookie_name: String,
    #[serde(default = "default_true")]
    pub(super) cookie_secure: bool,
    #[serde(default)]
    pub(super) cookie_domain: Option<String>,
    #[serde(default = "default_max_lifetime")]
    pub(super) max_lifetime_s: u64,
    #[serde(default = "default_idle_timeout")]
    pub(super) idle_timeout_s: u64,
    #[serde(default = "default_activity_refresh")]
    pub(super) activity_refresh_s: u64,
    pub(super) signing_keys: Vec<RawSigningKey>,
    #[serde(default)]
    pub(super) claims: Vec<String>,
    #[serde(default)]
    pub(super) cookie_type: RawCookieType,
    #[serde(default = "default_max_chunks")]
    pub(super) max_cookie_chunks: usize,
    #[serde(default)]
    pub(super) validate_interval_s: u64,
    #[serde(default = "default_validation_grace")]
    pub(super) validation_grace_s: u64,
    #[serde(default)]
    pub(super) keep_access_token: bool,
    #[serde(default)]
    pub(super) forward_access_token: bool,
    #[serde(default)]
    pub(super) userinfo: bool,
    #[serde(default = "default_preserve_post_bytes")]
    pub(super) preserve_post_bytes: usize,
    #[serde(default = "default_revocation_entries")]
    pub(super) revocation_list_entries: usize,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawCookieType {
    #[default]
    Encrypted,
    Signed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSigningKey {
    pub(super) kid: String,
    pub(super) secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentityHeader {
    pub(super) header: String,
    pub(super) claim: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogout {
    /// Where the browser lands after logout: with an end-session endpoint this is the
    /// `post_logout_redirect_uri` given to the OP, otherwise the page the gateway redirects to.
    #[serde(default)]
    pub(super) redirect_uri: Option<String>,
    /// Send the browser to the OP's end-session endpoint (RP-initiated logout) when it has one.
    #[serde(default = "default_true")]
    pub(super) use_end_session_endpoint: bool,
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
fn default_max_chunks() -> usize {
    5
}
fn default_validation_grace() -> u64 {
    300
}
fn default_preserve_post_bytes() -> usize {
    8192
}
fn default_revocation_entries() -> usize {
    10_000
}
