//! Token mediation: what a site (backend) gets instead of the user's session or bearer token.
//!
//! Two kinds of site authenticator, both configured by name under `site_authenticators`:
//! - `token_exchange`: OAuth 2.0 Token Exchange (RFC 8693) at a Security Token Service; the
//!   subject token is the client's access token (bearer requests) or a short-lived JWT the
//!   gateway signs with its `authtoken` keys (web sessions);
//! - `jwt`: JWT identity mapping, a JWT the gateway signs itself with chosen session claims.
//!
//! The result goes to the site in a header (`Authorization: Bearer`, or a named header with
//! the raw token) or in a cookie. Results are cached per VM in a [`FlightCache`] keyed by
//! the subject (a session's `sub`, or the bearer token's keyed hash).
//!
//! Sans-IO: this module builds the callout and reads its answer; the host sends it.

use std::fmt;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::authtoken::AuthTokenSigner;
use crate::cache::FlightCache;
use crate::config::{is_token_char, parse_http_url, ClientAuth, ConfigError, Endpoint};
use crate::http::{form_encode, form_post_headers, Callout};
use crate::policy::read::{uint, Obj};

pub const TOKEN_EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// Longest token accepted from an STS (and injected into a request).
pub const MAX_TOKEN_LENGTH: usize = 16 * 1024;
/// Lifetime of the subject token the gateway signs for the STS on behalf of a web session.
pub const SUBJECT_TOKEN_LIFETIME_S: u64 = 60;

// ---------------------------------------------------------------------------------------------
// Configuration

/// One entry of `site_authenticators` as written. Which fields apply depends on `type`. Read by
/// hand ([`RawSiteAuthenticator::from_value`]) rather than derived, to keep the .wasm small.
pub struct RawSiteAuthenticator {
    pub name: String,
    /// JSON `type`.
    pub kind: String,
    // token_exchange
    pub sts: Option<RawSts>,
    pub requested_token_type: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
    // both
    pub audience: Option<String>,
    // jwt
    pub claims: Option<Vec<String>>,
    pub lifetime_s: Option<u64>,
    pub inject: RawInject,
    pub cache: RawCache,
    /// `{"web_session": name}` or `{"token_provider": name}`: whose tokens this site's token is
    /// made from (resolved by the configuration).
    pub subject: Option<SubjectFrom>,
}

/// Whose identity a site's token is made from, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectFrom {
    WebSession(String),
    TokenProvider(String),
}

/// [`SubjectFrom`] resolved: an index in the settings' web sessions or token providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    WebSession(usize),
    TokenProvider(usize),
}

pub struct RawSts {
    pub cluster: String,
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: ClientAuth,
    pub timeout_ms: u64,
}

/// `{"header": "authorization"}`, `{"header": "x-site-token"}` or `{"cookie": "site_token"}`.
pub struct RawInject {
    pub header: Option<String>,
    pub cookie: Option<String>,
}

pub struct RawCache {
    pub max_entries: usize,
    pub idle_timeout_s: u64,
    pub max_lifetime_s: u64,
}

impl RawSiteAuthenticator {
    /// Reads one entry: unknown fields are refused, absent ones take their defaults (`null`
    /// stands for absent only in optional fields). Errors name the field relative to the
    /// entry (empty: the entry itself).
    pub fn from_value(v: &Value) -> Result<Self, ConfigError> {
        let o = Obj::new(
            "",
            v,
            &[
                "name",
                "type",
                "sts",
                "requested_token_type",
                "resource",
                "scope",
                "audience",
                "claims",
                "lifetime_s",
                "inject",
                "cache",
                "subject",
            ],
        )?;
        let sts = match o.opt("sts") {
            None => None,
            Some(v) => {
                let at = o.path("sts");
                let s = Obj::new(
                    &at,
                    v,
                    &[
                        "cluster",
                        "token_endpoint",
                        "client_id",
                        "client_secret",
                        "auth_method",
                        "timeout_ms",
                    ],
                )?;
                Some(RawSts {
                    cluster: s.string("cluster")?,
                    token_endpoint: s.string("token_endpoint")?,
                    client_id: s.string("client_id")?,
                    client_secret: s.string("client_secret")?,
                    auth_method: match s.choice(
                        "auth_method",
                        &["client_secret_basic", "client_secret_post"],
                    )? {
                        Some(1) => ClientAuth::ClientSecretPost,
                        _ => ClientAuth::ClientSecretBasic,
                    },
                    timeout_ms: s.uint_or("timeout_ms", u64::MAX, default_sts_timeout())?,
                })
            }
        };
        let at = o.path("inject");
        let i = Obj::new(&at, o.req("inject")?, &["header", "cookie"])?;
        let inject = RawInject {
            header: i.opt_string("header")?,
            cookie: i.opt_string("cookie")?,
        };
        let subject = match o.opt("subject") {
            None => None,
            Some(v) => {
                let at = o.path("subject");
                let s = Obj::new(&at, v, &["web_session", "token_provider"])?;
                match (
                    s.opt_string("web_session")?,
                    s.opt_string("token_provider")?,
                ) {
                    (Some(w), None) => Some(SubjectFrom::WebSession(w)),
                    (None, Some(p)) => Some(SubjectFrom::TokenProvider(p)),
                    _ => {
                        return Err(ConfigError::new(
                            at,
                            "names exactly one of web_session or token_provider",
                        ))
                    }
                }
            }
        };
        let cache = match o.get("cache") {
            None => RawCache::default(),
            Some(v) => {
                let at = o.path("cache");
                let c = Obj::new(&at, v, &["max_entries", "idle_timeout_s", "max_lifetime_s"])?;
                RawCache {
                    max_entries: c.uint_or(
                        "max_entries",
                        usize::MAX as u64,
                        default_max_entries() as u64,
                    )? as usize,
                    idle_timeout_s: c.uint_or(
                        "idle_timeout_s",
                        u64::MAX,
                        default_idle_timeout(),
                    )?,
                    max_lifetime_s: c.uint_or(
                        "max_lifetime_s",
                        u64::MAX,
                        default_max_lifetime(),
                    )?,
                }
            }
        };
        Ok(RawSiteAuthenticator {
            name: o.string("name")?,
            kind: o.string("type")?,
            sts,
            requested_token_type: o.opt_string("requested_token_type")?,
            resource: o.opt_string("resource")?,
            scope: o.opt_string("scope")?,
            audience: o.opt_string("audience")?,
            claims: o.opt_strings("claims")?,
            lifetime_s: o
                .opt("lifetime_s")
                .map(|v| uint(&o.path("lifetime_s"), v, u64::MAX))
                .transpose()?,
            inject,
            cache,
            subject,
        })
    }
}

impl Default for RawCache {
    fn default() -> Self {
        Self {
            max_entries: default_max_entries(),
            idle_timeout_s: default_idle_timeout(),
            max_lifetime_s: default_max_lifetime(),
        }
    }
}

fn default_sts_timeout() -> u64 {
    3000
}
fn default_max_entries() -> usize {
    10_000
}
fn default_idle_timeout() -> u64 {
    1800
}
fn default_max_lifetime() -> u64 {
    14_400
}
fn default_jwt_lifetime() -> u64 {
    300
}

/// The Security Token Service a `token_exchange` site authenticator calls.
#[derive(Clone, PartialEq, Eq)]
pub struct Sts {
    pub cluster: String,
    pub token_endpoint: Endpoint,
    pub client_id: String,
    pub client_secret: String,
    pub auth_method: ClientAuth,
    pub timeout_ms: u64,
}

impl fmt::Debug for Sts {
    /// Never the client secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sts")
            .field("cluster", &self.cluster)
            .field("token_endpoint", &self.token_endpoint.url)
            .field("client_id", &self.client_id)
            .field("auth_method", &self.auth_method)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenExchange {
    pub sts: Sts,
    pub requested_token_type: String,
    pub audience: Option<String>,
    pub resource: Option<String>,
    /// Space-separated scope tokens.
    pub scope: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtMapping {
    pub audience: String,
    /// Session claims copied into the JWT (`sub` is always set from the session).
    pub claims: Vec<String>,
    pub lifetime_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteKind {
    TokenExchange(TokenExchange),
    Jwt(JwtMapping),
}

/// Where the site's token goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inject {
    /// A request header (lower case). `authorization` carries `Bearer <token>`, any other
    /// header the raw token.
    Header(String),
    /// A cookie added to the upstream `Cookie` header (see [`cookie_with_token`]).
    Cookie(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub max_entries: usize,
    pub idle_timeout_s: u64,
    pub max_lifetime_s: u64,
}

impl CacheSettings {
    /// An empty cache with these settings.
    pub fn new_cache<V: Clone>(&self) -> FlightCache<V> {
        FlightCache::new(
            self.max_entries,
            Some(self.idle_timeout_s),
            self.max_lifetime_s,
        )
    }
}

/// A checked site authenticator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAuthenticator {
    pub name: String,
    pub kind: SiteKind,
    pub inject: Inject,
    pub cache: CacheSettings,
    /// The names of `subject`, as written.
    pub subject: Option<SubjectFrom>,
    /// `subject` resolved by the configuration: only identities from there are mediated.
    pub source: Option<Source>,
}

const MAX_ENTRIES_LIMIT: usize = 1_000_000;
const MAX_LIFETIME_LIMIT_S: u64 = 7 * 24 * 3600;

fn is_scope_token(s: &str) -> bool {
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
    !s.is_empty()
        && s.bytes()
            .all(|c| c == 0x21 || (0x23..=0x5b).contains(&c) || (0x5d..=0x7e).contains(&c))
}

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

/// Refuses a field a `type` does not use, so a misplaced setting does not pass silently.
fn unused<T>(field: &str, value: &Option<T>, kind: &str) -> Result<(), ConfigError> {
    match value {
        Some(_) => Err(ConfigError::new(
            field,
            format!("is not a setting of type `{kind}`"),
        )),
        None => Ok(()),
    }
}

impl RawInject {
    fn compile(self) -> Result<Inject, ConfigError> {
        match (self.header, self.cookie) {
            (Some(h), None) => {
                let h = h.to_ascii_lowercase();
                if h.is_empty() || !h.bytes().all(is_token_char) {
                    return Err(ConfigError::new("inject.header", "must be a header name"));
                }
                if crate::config::RESERVED_HEADERS.contains(&h.as_str()) {
                    return Err(ConfigError::new(
                        "inject.header",
                        format!("`{h}` is reserved (for a cookie, use inject.cookie)"),
                    ));
                }
                Ok(Inject::Header(h))
            }
            (None, Some(c)) => {
                if c.is_empty() || !c.bytes().all(is_token_char) {
                    return Err(ConfigError::new(
                        "inject.cookie",
                        "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)",
                    ));
                }
                Ok(Inject::Cookie(c))
            }
            _ => Err(ConfigError::new(
                "inject",
                "must have exactly one of `header` or `cookie`",
            )),
        }
    }
}

impl RawCache {
    fn compile(self) -> Result<CacheSettings, ConfigError> {
        if self.max_entries == 0 || self.max_entries > MAX_ENTRIES_LIMIT {
            return Err(ConfigError::new(
                "cache.max_entries",
                format!("must be between 1 and {MAX_ENTRIES_LIMIT}"),
            ));
        }
        for (field, v) in [
            ("cache.idle_timeout_s", self.idle_timeout_s),
            ("cache.max_lifetime_s", self.max_lifetime_s),
        ] {
            if v == 0 || v > MAX_LIFETIME_LIMIT_S {
                return Err(ConfigError::new(
                    field,
                    format!("must be between 1 and {MAX_LIFETIME_LIMIT_S}"),
                ));
            }
        }
        Ok(CacheSettings {
            max_entries: self.max_entries,
            idle_timeout_s: self.idle_timeout_s,
            max_lifetime_s: self.max_lifetime_s,
        })
    }
}

impl RawSts {
    fn compile(self) -> Result<Sts, ConfigError> {
        non_empty("sts.cluster", &self.cluster)?;
        let token_endpoint = Endpoint::parse("sts.token_endpoint", &self.token_endpoint)?;
        non_empty("sts.client_id", &self.client_id)?;
        non_empty("sts.client_secret", &self.client_secret)?;
        if self.timeout_ms == 0 || self.timeout_ms > 60_000 {
            return Err(ConfigError::new(
                "sts.timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        Ok(Sts {
            cluster: self.cluster,
            token_endpoint,
            client_id: self.client_id,
            client_secret: self.client_secret,
            auth_method: self.auth_method,
            timeout_ms: self.timeout_ms,
        })
    }
}

impl SiteAuthenticator {
    /// Checks one entry. Errors name the field relative to the entry (`sts.client_id`); see
    /// [`compile_all`] for the full path.
    pub fn compile(raw: RawSiteAuthenticator) -> Result<Self, ConfigError> {
        if raw.name.is_empty() || !raw.name.bytes().all(|c| c.is_ascii_graphic()) {
            return Err(ConfigError::new(
                "name",
                "must be a non-empty printable name",
            ));
        }
        let kind = match raw.kind.as_str() {
            "token_exchange" => {
                let t = "token_exchange";
                unused("claims", &raw.claims, t)?;
                unused("lifetime_s", &raw.lifetime_s, t)?;
                let sts = raw
                    .sts
                    .ok_or_else(|| ConfigError::new("sts", "is required for type token_exchange"))?
                    .compile()?;
                let requested_token_type = raw
                    .requested_token_type
                    .unwrap_or_else(|| ACCESS_TOKEN_TYPE.to_string());
                if !requested_token_type.contains(':')
                    || !requested_token_type.bytes().all(|c| c.is_ascii_graphic())
                {
                    return Err(ConfigError::new(
                        "requested_token_type",
                        "must be a token type URI such as urn:ietf:params:oauth:token-type:access_token",
                    ));
                }
                if let Some(a) = &raw.audience {
                    non_empty("audience", a)?;
                }
                if let Some(r) = &raw.resource {
                    let url = parse_http_url("resource", r)?;
                    if url.fragment().is_some() {
                        return Err(ConfigError::new("resource", "must not have a fragment"));
                    }
                }
                if raw.audience.is_none() && raw.resource.is_none() {
                    return Err(ConfigError::new(
                        "audience",
                        "a token exchange needs an audience, a resource, or both",
                    ));
                }
                let scope = match raw.scope {
                    Some(s) => {
                        let tokens: Vec<&str> = s.split(' ').collect();
                        if !tokens.iter().all(|t| is_scope_token(t)) {
                            return Err(ConfigError::new(
                                "scope",
                                "must be scope tokens separated by single spaces",
                            ));
                        }
                        Some(s)
                    }
                    None => None,
                };
                SiteKind::TokenExchange(TokenExchange {
                    sts,
                    requested_token_type,
                    audience: raw.audience,
                    resource: raw.resource,
                    scope,
                })
            }
            "jwt" => {
                let t = "jwt";
                unused("sts", &raw.sts, t)?;
                unused("requested_token_type", &raw.requested_token_type, t)?;
                unused("resource", &raw.resource, t)?;
                unused("scope", &raw.scope, t)?;
                let audience = raw
                    .audience
                    .ok_or_else(|| ConfigError::new("audience", "is required for type jwt"))?;
                non_empty("audience", &audience)?;
                let claims = raw.claims.unwrap_or_else(|| vec!["sub".to_string()]);
                for (i, c) in claims.iter().enumerate() {
                    if c.is_empty() {
                        return Err(ConfigError::new(
                            format!("claims[{i}]"),
                            "must not be empty",
                        ));
                    }
                    if ["iss", "aud", "exp", "iat", "nbf", "jti"].contains(&c.as_str()) {
                        return Err(ConfigError::new(
                            format!("claims[{i}]"),
                            format!("`{c}` is set by the gateway"),
                        ));
                    }
                }
                let lifetime_s = raw.lifetime_s.unwrap_or_else(default_jwt_lifetime);
                if lifetime_s == 0 || lifetime_s > 24 * 3600 {
                    return Err(ConfigError::new(
                        "lifetime_s",
                        "must be between 1 and 86400",
                    ));
                }
                SiteKind::Jwt(JwtMapping {
                    audience,
                    claims,
                    lifetime_s,
                })
            }
            _ => {
                return Err(ConfigError::new(
                    "type",
                    "must be `token_exchange` or `jwt`",
                ))
            }
        };
        Ok(Self {
            name: raw.name,
            kind,
            inject: raw.inject.compile()?,
            cache: raw.cache.compile()?,
            subject: raw.subject,
            source: None,
        })
    }

    pub fn token_exchange(&self) -> Option<&TokenExchange> {
        match &self.kind {
            SiteKind::TokenExchange(x) => Some(x),
            SiteKind::Jwt(_) => None,
        }
    }

    pub fn jwt(&self) -> Option<&JwtMapping> {
        match &self.kind {
            SiteKind::Jwt(j) => Some(j),
            SiteKind::TokenExchange(_) => None,
        }
    }
}

/// Checks `site_authenticators`: every entry, unique names, and `authtoken` present when an
/// entry needs the gateway's signing keys (`jwt`, or `token_exchange` for web sessions — the
/// caller says whether it has them). Errors name the full path, e.g.
/// `site_authenticators[1].sts.token_endpoint`.
pub fn compile_all(
    raw: Vec<Value>,
    authtoken_configured: bool,
) -> Result<Vec<SiteAuthenticator>, ConfigError> {
    fn at(i: usize) -> impl Fn(ConfigError) -> ConfigError {
        move |e| match e.field.as_str() {
            "" => ConfigError::new(format!("site_authenticators[{i}]"), e.message),
            f => ConfigError::new(format!("site_authenticators[{i}].{f}"), e.message),
        }
    }
    // Read every entry before checking any, as a derived Deserialize did.
    let mut read = Vec::with_capacity(raw.len());
    for (i, v) in raw.iter().enumerate() {
        read.push(RawSiteAuthenticator::from_value(v).map_err(at(i))?);
    }
    let mut out: Vec<SiteAuthenticator> = Vec::with_capacity(raw.len());
    for (i, r) in read.into_iter().enumerate() {
        let at = at(i);
        let site = SiteAuthenticator::compile(r).map_err(&at)?;
        if out.iter().any(|s| s.name == site.name) {
            return Err(at(ConfigError::new(
                "name",
                format!("`{}` is used twice", site.name),
            )));
        }
        if site.jwt().is_some() && !authtoken_configured {
            return Err(at(ConfigError::new(
                "type",
                "type jwt needs the gateway's signing keys in `authtoken`",
            )));
        }
        out.push(site);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The token exchange

/// The RFC 8693 token-exchange request for `site` (`None` when `site` is not a
/// `token_exchange` authenticator). `subject_token_type` is [`ACCESS_TOKEN_TYPE`] for a
/// client's bearer token, [`JWT_TOKEN_TYPE`] for a subject token the gateway signed.
pub fn exchange_request(
    site: &SiteAuthenticator,
    subject_token: &str,
    subject_token_type: &str,
) -> Option<Callout> {
    let x = site.token_exchange()?;
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE_GRANT),
        ("subject_token", subject_token),
        ("subject_token_type", subject_token_type),
        ("requested_token_type", x.requested_token_type.as_str()),
    ];
    if let Some(a) = &x.audience {
        form.push(("audience", a));
    }
    if let Some(r) = &x.resource {
        form.push(("resource", r));
    }
    if let Some(s) = &x.scope {
        form.push(("scope", s));
    }
    let mut headers = form_post_headers();
    let sts = &x.sts;
    if let Some(h) = crate::http::client_authentication(
        sts.auth_method,
        &sts.client_id,
        &sts.client_secret,
        &mut form,
    ) {
        headers.push(h);
    }
    Some(Callout {
        cluster: sts.cluster.clone(),
        method: "POST",
        authority: sts.token_endpoint.authority.clone(),
        path: sts.token_endpoint.path.clone(),
        headers,
        body: form_encode(&form).into_bytes(),
        timeout_ms: sts.timeout_ms,
    })
}

/// A token for a site, and until when it may be used.
#[derive(Clone, PartialEq, Eq)]
pub struct MediatedToken {
    pub token: String,
    /// Absolute expiry; `u64::MAX` when the STS gave no `expires_in` (the cache's own
    /// `max_lifetime_s` then bounds it).
    pub expires_at: u64,
}

impl fmt::Debug for MediatedToken {
    /// Never the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediatedToken")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Why the STS's answer gave no token. None of these holds a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeError {
    /// The STS refused (RFC 6749 §5.2 error answer, e.g. `invalid_grant`, `invalid_target`):
    /// its error code only, printable ASCII, at most 64 characters.
    Refused { status: u16, error: String },
    /// An answer that is neither a token nor an OAuth error (5xx, 3xx, a 4xx without one).
    Status(u16),
    /// A 200 that is not a usable token response.
    Malformed(&'static str),
}

impl ExchangeError {
    /// The status to answer the client with: the STS is unavailable (503) when it said so,
    /// otherwise it failed as an upstream (502).
    pub fn http_status(&self) -> u32 {
        match self {
            ExchangeError::Status(503) => 503,
            _ => 502,
        }
    }
}

#[derive(Deserialize)]
struct ExchangeResponse {
    access_token: Option<Value>,
    issued_token_type: Option<Value>,
    token_type: Option<Value>,
    expires_in: Option<Value>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// Whether `token` can go in a header or cookie as it is: visible ASCII only (no CR, LF,
/// controls, spaces or non-ASCII), 1 to [`MAX_TOKEN_LENGTH`] bytes.
pub fn is_safe_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LENGTH
        && token.bytes().all(|c| c.is_ascii_graphic())
}

/// Whether `token` is also a valid cookie value (RFC 6265 cookie-octet).
fn is_cookie_safe(token: &str) -> bool {
    is_safe_token(token)
        && !token
            .bytes()
            .any(|c| matches!(c, b'"' | b',' | b';' | b'\\'))
}

/// Reads the STS's answer to [`exchange_request`] (RFC 8693 §2.2.1 and §2.2.2).
pub fn parse_exchange_response(
    site: &SiteAuthenticator,
    status: u16,
    body: &[u8],
    now: u64,
) -> Result<MediatedToken, ExchangeError> {
    if status != 200 {
        if (400..500).contains(&status) {
            if let Ok(e) = serde_json::from_slice::<ErrorResponse>(body) {
                let error: String = e
                    .error
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(64)
                    .collect();
                if !error.is_empty() {
                    return Err(ExchangeError::Refused { status, error });
                }
            }
        }
        return Err(ExchangeError::Status(status));
    }
    let r: ExchangeResponse = serde_json::from_slice(body)
        .map_err(|_| ExchangeError::Malformed("not a JSON token response"))?;
    let token = match r.access_token {
        Some(Value::String(t)) => t,
        _ => return Err(ExchangeError::Malformed("no access_token")),
    };
    let issued_type = match r.issued_token_type {
        Some(Value::String(t)) => t,
        _ => return Err(ExchangeError::Malformed("no issued_token_type")),
    };
    if let Some(x) = site.token_exchange() {
        if issued_type != x.requested_token_type {
            return Err(ExchangeError::Malformed(
                "issued_token_type is not the requested type",
            ));
        }
    }
    let token_type = match r.token_type {
        Some(Value::String(t)) => t,
        _ => return Err(ExchangeError::Malformed("no token_type")),
    };
    let bearer = token_type.eq_ignore_ascii_case("bearer");
    // N_A: the token is not an OAuth access token (RFC 8693 §2.2.1).
    let not_applicable = token_type == "N_A" && issued_type != ACCESS_TOKEN_TYPE;
    if !bearer && !not_applicable {
        return Err(ExchangeError::Malformed("unsupported token_type"));
    }
    let expires_at = match r.expires_in {
        None | Some(Value::Null) => u64::MAX,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(s), _) => now.saturating_add(s),
            (None, Some(f)) if (0.0..1e12).contains(&f) => now.saturating_add(f as u64),
            _ => return Err(ExchangeError::Malformed("bad expires_in")),
        },
        Some(Value::String(s)) => match s.parse::<u64>() {
            Ok(secs) => now.saturating_add(secs),
            Err(_) => return Err(ExchangeError::Malformed("bad expires_in")),
        },
        Some(_) => return Err(ExchangeError::Malformed("bad expires_in")),
    };
    if !is_safe_token(&token) {
        return Err(ExchangeError::Malformed(
            "the token is empty, too long, or not a safe header value",
        ));
    }
    if matches!(site.inject, Inject::Cookie(_)) && !is_cookie_safe(&token) {
        return Err(ExchangeError::Malformed(
            "the token is not a valid cookie value",
        ));
    }
    Ok(MediatedToken { token, expires_at })
}

// ---------------------------------------------------------------------------------------------
// Signed tokens: the web session's subject token, and JWT identity mapping

/// The subject token a web session presents to `site`'s STS: a JWT signed with the gateway's
/// `authtoken` key, `aud` = the STS token endpoint URL, `sub` and `claims` from the session,
/// valid for [`SUBJECT_TOKEN_LIFETIME_S`]. Send it with [`JWT_TOKEN_TYPE`]. `None` for a site
/// that is not `token_exchange` or if signing failed.
pub fn session_subject_token(
    signer: &AuthTokenSigner,
    site: &SiteAuthenticator,
    sub: &str,
    claims: &Map<String, Value>,
    now: u64,
    jti: &str,
) -> Option<String> {
    let x = site.token_exchange()?;
    let mut c = claims.clone();
    c.insert("sub".into(), Value::String(sub.to_string()));
    signer.sign(
        c,
        &x.sts.token_endpoint.url,
        now,
        SUBJECT_TOKEN_LIFETIME_S,
        jti,
    )
}

/// JWT identity mapping: the site's token signed by the gateway, with `sub` and the configured
/// claims the session has. `None` for a site that is not `jwt` or if signing failed.
pub fn identity_jwt(
    signer: &AuthTokenSigner,
    site: &SiteAuthenticator,
    sub: &str,
    claims: &Map<String, Value>,
    now: u64,
    jti: &str,
) -> Option<MediatedToken> {
    let j = site.jwt()?;
    let mut c = Map::new();
    for name in &j.claims {
        if let Some(v) = claims.get(name) {
            c.insert(name.clone(), v.clone());
        }
    }
    c.insert("sub".into(), Value::String(sub.to_string()));
    let token = signer.sign(c, &j.audience, now, j.lifetime_s, jti)?;
    if !is_safe_token(&token) {
        return None;
    }
    Some(MediatedToken {
        token,
        expires_at: now.saturating_add(j.lifetime_s),
    })
}

// ---------------------------------------------------------------------------------------------
// Sending the token to the site

/// Request header operations that give `token` to the site (set, replacing any copy the client
/// sent). Empty for the cookie variant: use [`cookie_with_token`].
pub fn inject(site: &SiteAuthenticator, token: &str) -> Vec<(String, Option<String>)> {
    match &site.inject {
        Inject::Header(name) if name == "authorization" => {
            vec![(name.clone(), Some(format!("Bearer {token}")))]
        }
        Inject::Header(name) => vec![(name.clone(), Some(token.to_string()))],
        Inject::Cookie(_) => Vec::new(),
    }
}

/// The upstream `Cookie` header with `name=token` appended; any cookie of that name the client
/// sent is dropped first. `upstream` is the header as it would otherwise go upstream (the
/// gateway's own cookies already removed), or `None` if there is none.
pub fn cookie_with_token(upstream: Option<&str>, name: &str, token: &str) -> String {
    let rest = match upstream {
        Some(c) => match crate::cookie::without(c, |n| n == name) {
            Some(kept) => kept,
            None => Some(c.trim().to_string()).filter(|c| !c.is_empty()),
        },
        None => None,
    };
    match rest {
        Some(r) => format!("{r}; {name}={token}"),
        None => format!("{name}={token}"),
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    use std::rc::Rc;

    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    type Mutation = Box<dyn Fn(&mut Value)>;

    fn exchange_json() -> Value {
        json!({
            "name": "orders-sts", "type": "token_exchange",
            "sts": { "cluster": "op", "token_endpoint": "http://127.0.0.1:9000/token",
                     "client_id": "pa_sts", "client_secret": "s3cret:x y" },
            "audience": "https://orders.internal",
            "inject": { "header": "Authorization" }
        })
    }

    fn jwt_json() -> Value {
        json!({
            "name": "orders-jwt", "type": "jwt", "audience": "https://orders.internal",
            "claims": ["sub", "email", "groups"], "lifetime_s": 300,
            "inject": { "header": "x-wam-jwt" }
        })
    }

    fn site(v: Value) -> SiteAuthenticator {
        SiteAuthenticator::compile(RawSiteAuthenticator::from_value(&v).unwrap()).unwrap()
    }

    fn refused(v: Value) -> ConfigError {
        compile_all(vec![v], true).unwrap_err()
    }

    fn form(body: &[u8]) -> Vec<(String, String)> {
        url::form_urlencoded::parse(body).into_owned().collect()
    }

    #[test]
    fn configuration_defaults() {
        let s = site(exchange_json());
        let x = s.token_exchange().unwrap();
        assert_eq!(x.requested_token_type, ACCESS_TOKEN_TYPE);
        assert_eq!(x.sts.auth_method, ClientAuth::ClientSecretBasic);
        assert_eq!(x.sts.timeout_ms, 3000);
        assert_eq!(x.sts.token_endpoint.authority, "127.0.0.1:9000");
        assert_eq!(s.inject, Inject::Header("authorization".into()));
        assert_eq!(
            s.cache,
            CacheSettings {
                max_entries: 10_000,
                idle_timeout_s: 1800,
                max_lifetime_s: 14_400
            }
        );
        assert!(!format!("{s:?}").contains("s3cret"), "no secret in Debug");
        let j = site(jwt_json());
        assert_eq!(j.jwt().unwrap().claims, vec!["sub", "email", "groups"]);
        let mut v = jwt_json();
        v.as_object_mut().unwrap().remove("lifetime_s");
        v.as_object_mut().unwrap().remove("claims");
        let j = site(v);
        assert_eq!(
            (j.jwt().unwrap().lifetime_s, j.jwt().unwrap().claims.clone()),
            (300, vec!["sub".to_string()])
        );
        let c = s.cache.new_cache::<Rc<MediatedToken>>();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|v| v["sts"]["client_secret"] = "".into()),
                "site_authenticators[0].sts.client_secret",
            ),
            (
                Box::new(|v| v["sts"]["client_id"] = "".into()),
                "site_authenticators[0].sts.client_id",
            ),
            (
                Box::new(|v| v["sts"]["cluster"] = "".into()),
                "site_authenticators[0].sts.cluster",
            ),
            (
                Box::new(|v| v["sts"]["token_endpoint"] = "ftp://x/token".into()),
                "site_authenticators[0].sts.token_endpoint",
            ),
            (
                Box::new(|v| v["sts"]["timeout_ms"] = 0.into()),
                "site_authenticators[0].sts.timeout_ms",
            ),
            (
                Box::new(|v| drop(v.as_object_mut().unwrap().remove("sts"))),
                "site_authenticators[0].sts",
            ),
            (
                Box::new(|v| v["type"] = "saml".into()),
                "site_authenticators[0].type",
            ),
            (
                Box::new(|v| v["name"] = "".into()),
                "site_authenticators[0].name",
            ),
            (
                Box::new(|v| v["inject"] = json!({"header": "Host"})),
                "site_authenticators[0].inject.header",
            ),
            (
                Box::new(|v| v["inject"] = json!({"header": "cookie"})),
                "site_authenticators[0].inject.header",
            ),
            (
                Box::new(|v| v["inject"] = json!({"header": ":authority"})),
                "site_authenticators[0].inject.header",
            ),
            (
                Box::new(|v| v["inject"] = json!({"header": "x a"})),
                "site_authenticators[0].inject.header",
            ),
            (
                Box::new(|v| v["inject"] = json!({"cookie": "a;b"})),
                "site_authenticators[0].inject.cookie",
            ),
            (
                Box::new(|v| v["inject"] = json!({"header": "x", "cookie": "y"})),
                "site_authenticators[0].inject",
            ),
            (
                Box::new(|v| v["inject"] = json!({})),
                "site_authenticators[0].inject",
            ),
            (
                Box::new(|v| v["cache"] = json!({"max_entries": 0})),
                "site_authenticators[0].cache.max_entries",
            ),
            (
                Box::new(|v| v["cache"] = json!({"idle_timeout_s": 0})),
                "site_authenticators[0].cache.idle_timeout_s",
            ),
            (
                Box::new(|v| v["cache"] = json!({"max_lifetime_s": 0})),
                "site_authenticators[0].cache.max_lifetime_s",
            ),
            (
                Box::new(|v| v["claims"] = json!(["sub"])),
                "site_authenticators[0].claims",
            ),
            (
                Box::new(|v| v["requested_token_type"] = "access".into()),
                "site_authenticators[0].requested_token_type",
            ),
            (
                Box::new(|v| v["resource"] = "not a url".into()),
                "site_authenticators[0].resource",
            ),
            (
                Box::new(|v| v["scope"] = "a  b".into()),
                "site_authenticators[0].scope",
            ),
            (
                Box::new(|v| drop(v.as_object_mut().unwrap().remove("audience"))),
                "site_authenticators[0].audience",
            ),
        ];
        for (mutate, field) in cases {
            let mut v = exchange_json();
            mutate(&mut v);
            let e = refused(v);
            assert_eq!(e.field, field, "{e}");
            assert!(!e.message.contains("s3cret"));
        }
        let jwt_cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|v| drop(v.as_object_mut().unwrap().remove("audience"))),
                "site_authenticators[0].audience",
            ),
            (
                Box::new(|v| v["claims"] = json!(["sub", "exp"])),
                "site_authenticators[0].claims[1]",
            ),
            (
                Box::new(|v| v["lifetime_s"] = 0.into()),
                "site_authenticators[0].lifetime_s",
            ),
            (
                Box::new(|v| v["scope"] = "a".into()),
                "site_authenticators[0].scope",
            ),
            (
                Box::new(|v| v["sts"] = exchange_json()["sts"].clone()),
                "site_authenticators[0].sts",
            ),
        ];
        for (mutate, field) in jwt_cases {
            let mut v = jwt_json();
            mutate(&mut v);
            assert_eq!(refused(v).field, field);
        }
        // What the reader refuses: unknown fields, wrong types, missing required fields.
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (
                Box::new(|v| v["sts"]["clientsecret"] = "x".into()),
                "site_authenticators[0].sts.clientsecret",
                "unknown field `clientsecret`",
            ),
            (
                Box::new(|v| v["inject"]["value"] = "x".into()),
                "site_authenticators[0].inject.value",
                "unknown field `value`",
            ),
            (
                Box::new(|v| v["colour"] = 1.into()),
                "site_authenticators[0].colour",
                "unknown field `colour`",
            ),
            (
                Box::new(|v| v["cache"] = json!({"max_entries": -1})),
                "site_authenticators[0].cache.max_entries",
                "must be an integer",
            ),
            (
                Box::new(|v| v["cache"] = Value::Null),
                "site_authenticators[0].cache",
                "must be an object",
            ),
            (
                Box::new(|v| v["sts"]["timeout_ms"] = "3000".into()),
                "site_authenticators[0].sts.timeout_ms",
                "must be an integer",
            ),
            (
                Box::new(|v| v["sts"]["auth_method"] = "private_key_jwt".into()),
                "site_authenticators[0].sts.auth_method",
                "must be one of `client_secret_basic`, `client_secret_post`",
            ),
            (
                Box::new(|v| v["claims"] = json!(["sub", 1])),
                "site_authenticators[0].claims[1]",
                "must be a string",
            ),
            (
                Box::new(|v| v["audience"] = json!(["a"])),
                "site_authenticators[0].audience",
                "must be a string",
            ),
            (
                Box::new(|v| drop(v.as_object_mut().unwrap().remove("inject"))),
                "site_authenticators[0].inject",
                "missing field `inject`",
            ),
            (
                Box::new(|v| drop(v["sts"].as_object_mut().unwrap().remove("client_id"))),
                "site_authenticators[0].sts.client_id",
                "missing field `client_id`",
            ),
            (
                Box::new(|v| drop(v.as_object_mut().unwrap().remove("type"))),
                "site_authenticators[0].type",
                "missing field `type`",
            ),
            (
                Box::new(|v| *v = json!("orders-sts")),
                "site_authenticators[0]",
                "must be an object",
            ),
        ];
        for (mutate, field, message) in cases {
            let mut v = exchange_json();
            mutate(&mut v);
            let e = refused(v.clone());
            assert_eq!(e.field, field, "{v}");
            assert!(e.message.starts_with(message), "{v}: {e}");
        }
        // `null` is "absent" in optional fields.
        let mut v = exchange_json();
        for k in [
            "requested_token_type",
            "resource",
            "scope",
            "claims",
            "lifetime_s",
        ] {
            v[k] = Value::Null;
        }
        v["inject"]["cookie"] = Value::Null;
        let x = site(v);
        assert_eq!(
            x.token_exchange().unwrap().requested_token_type,
            ACCESS_TOKEN_TYPE
        );

        let e = compile_all(vec![exchange_json(), exchange_json()], true).unwrap_err();
        assert_eq!(e.field, "site_authenticators[1].name");
        let e = compile_all(vec![exchange_json(), jwt_json()], false).unwrap_err();
        assert_eq!(e.field, "site_authenticators[1].type");
        assert_eq!(
            compile_all(vec![exchange_json(), jwt_json()], true)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn exchange_request_with_basic_auth() {
        let mut v = exchange_json();
        v["resource"] = "https://orders.internal/api".into();
        v["scope"] = "orders:read orders:write".into();
        let s = site(v);
        let c = exchange_request(&s, "the.subject+token", ACCESS_TOKEN_TYPE).unwrap();
        assert_eq!(
            (
                c.cluster.as_str(),
                c.method,
                c.authority.as_str(),
                c.path.as_str(),
                c.timeout_ms
            ),
            ("op", "POST", "127.0.0.1:9000", "/token", 3000)
        );
        let body = String::from_utf8(c.body.clone()).unwrap();
        assert_eq!(
            body,
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange\
             &subject_token=the.subject%2Btoken\
             &subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token\
             &audience=https%3A%2F%2Forders.internal\
             &resource=https%3A%2F%2Forders.internal%2Fapi\
             &scope=orders%3Aread+orders%3Awrite"
        );
        assert_eq!(
            c.headers,
            vec![
                (
                    "content-type".to_string(),
                    "application/x-www-form-urlencoded".to_string()
                ),
                ("accept".to_string(), "application/json".to_string()),
                (
                    "authorization".to_string(),
                    format!("Basic {}", STANDARD.encode("pa_sts:s3cret%3Ax+y"))
                ),
            ]
        );
        assert!(!body.contains("s3cret"));
        assert_eq!(
            exchange_request(&site(jwt_json()), "t", ACCESS_TOKEN_TYPE),
            None
        );
    }

    #[test]
    fn exchange_request_with_post_auth_and_no_optional_fields() {
        let mut v = exchange_json();
        v["sts"]["auth_method"] = "client_secret_post".into();
        v["requested_token_type"] = JWT_TOKEN_TYPE.into();
        let c = exchange_request(&site(v), "jwt.from.gateway", JWT_TOKEN_TYPE).unwrap();
        assert!(c.headers.iter().all(|(n, _)| n != "authorization"));
        let f = form(&c.body);
        let expect: Vec<(String, String)> = [
            ("grant_type", TOKEN_EXCHANGE_GRANT),
            ("subject_token", "jwt.from.gateway"),
            ("subject_token_type", JWT_TOKEN_TYPE),
            ("requested_token_type", JWT_TOKEN_TYPE),
            ("audience", "https://orders.internal"),
            ("client_id", "pa_sts"),
            ("client_secret", "s3cret:x y"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(f, expect);
    }

    fn answer(v: Value) -> Vec<u8> {
        v.to_string().into_bytes()
    }

    #[test]
    fn exchange_responses() {
        let s = site(exchange_json());
        let good = json!({"access_token": "site.token.sig", "issued_token_type": ACCESS_TOKEN_TYPE,
                          "token_type": "Bearer", "expires_in": 600});
        assert_eq!(
            parse_exchange_response(&s, 200, &answer(good.clone()), NOW),
            Ok(MediatedToken {
                token: "site.token.sig".into(),
                expires_at: NOW + 600
            })
        );
        let with = |k: &str, val: Value| {
            let mut g = good.clone();
            g[k] = val;
            parse_exchange_response(&s, 200, &answer(g), NOW)
        };
        let without = |k: &str| {
            let mut g = good.clone();
            g.as_object_mut().unwrap().remove(k);
            parse_exchange_response(&s, 200, &answer(g), NOW)
        };
        assert_eq!(
            without("expires_in").unwrap().expires_at,
            u64::MAX,
            "the cache bounds it"
        );
        assert_eq!(
            with("expires_in", "60".into()).unwrap().expires_at,
            NOW + 60
        );
        assert_eq!(
            with("token_type", "bearer".into()).unwrap().expires_at,
            NOW + 600
        );
        for bad in ["access_token", "issued_token_type", "token_type"] {
            assert!(
                matches!(without(bad), Err(ExchangeError::Malformed(_))),
                "{bad}"
            );
        }
        for (k, val) in [
            ("access_token", json!(42)),
            ("access_token", json!("")),
            ("access_token", json!("a\r\nx-injected: 1")),
            ("access_token", json!("a b")),
            ("access_token", json!("tökén")),
            ("access_token", json!("a".repeat(MAX_TOKEN_LENGTH + 1))),
            ("issued_token_type", json!(JWT_TOKEN_TYPE)),
            ("token_type", json!("N_A")),
            ("token_type", json!("DPoP")),
            ("expires_in", json!(-5)),
            ("expires_in", json!("soon")),
            ("expires_in", json!([1])),
        ] {
            assert!(
                matches!(with(k, val.clone()), Err(ExchangeError::Malformed(_))),
                "{k}: {val}"
            );
        }
        assert!(with("access_token", json!("a".repeat(MAX_TOKEN_LENGTH))).is_ok());

        // N_A for a token that is not an access token.
        let mut v = exchange_json();
        v["requested_token_type"] = JWT_TOKEN_TYPE.into();
        let jwt_site = site(v);
        let na = json!({"access_token": "x.y.z", "issued_token_type": JWT_TOKEN_TYPE, "token_type": "N_A"});
        assert!(parse_exchange_response(&jwt_site, 200, &answer(na), NOW).is_ok());

        // Errors.
        assert_eq!(
            parse_exchange_response(
                &s,
                400,
                br#"{"error":"invalid_target","error_description":"no"}"#,
                NOW
            ),
            Err(ExchangeError::Refused {
                status: 400,
                error: "invalid_target".into()
            })
        );
        assert_eq!(
            parse_exchange_response(
                &s,
                401,
                "{\"error\":\"invalid\\r\\nclient\u{1F600}\"}".as_bytes(),
                NOW
            ),
            Err(ExchangeError::Refused {
                status: 401,
                error: "invalidclient".into()
            })
        );
        assert_eq!(
            parse_exchange_response(&s, 400, b"<html>", NOW),
            Err(ExchangeError::Status(400))
        );
        assert_eq!(
            parse_exchange_response(&s, 503, b"{\"error\":\"x\"}", NOW),
            Err(ExchangeError::Status(503))
        );
        assert_eq!(ExchangeError::Status(503).http_status(), 503);
        assert_eq!(ExchangeError::Status(500).http_status(), 502);
        assert_eq!(ExchangeError::Malformed("x").http_status(), 502);
        assert_eq!(
            parse_exchange_response(&s, 302, b"", NOW),
            Err(ExchangeError::Status(302))
        );
        assert!(matches!(
            parse_exchange_response(&s, 200, b"garbage", NOW),
            Err(ExchangeError::Malformed(_))
        ));
        assert!(matches!(
            parse_exchange_response(&s, 200, b"[]", NOW),
            Err(ExchangeError::Malformed(_))
        ));
        assert!(matches!(
            parse_exchange_response(&s, 200, b"", NOW),
            Err(ExchangeError::Malformed(_))
        ));

        // A cookie-bound site refuses tokens that are not cookie values.
        let mut v = exchange_json();
        v["inject"] = json!({"cookie": "site_token"});
        let cs = site(v);
        let mut g = good.clone();
        g["access_token"] = "a;b".into();
        assert!(parse_exchange_response(&cs, 200, &answer(g), NOW).is_err());
        assert!(parse_exchange_response(&cs, 200, &answer(good), NOW).is_ok());

        let t = MediatedToken {
            token: "secret-token".into(),
            expires_at: 1,
        };
        assert!(!format!("{t:?}").contains("secret-token"));
    }

    #[test]
    fn inject_variants() {
        let s = site(exchange_json());
        assert_eq!(
            inject(&s, "tok"),
            vec![("authorization".to_string(), Some("Bearer tok".to_string()))]
        );
        let mut v = exchange_json();
        v["inject"] = json!({"header": "X-Site-Token"});
        assert_eq!(
            inject(&site(v), "tok"),
            vec![("x-site-token".to_string(), Some("tok".to_string()))]
        );
        let mut v = exchange_json();
        v["inject"] = json!({"cookie": "site_token"});
        let cs = site(v);
        assert_eq!(cs.inject, Inject::Cookie("site_token".into()));
        assert!(inject(&cs, "tok").is_empty());

        assert_eq!(
            cookie_with_token(None, "site_token", "tok"),
            "site_token=tok"
        );
        assert_eq!(
            cookie_with_token(Some(""), "site_token", "tok"),
            "site_token=tok"
        );
        assert_eq!(
            cookie_with_token(Some("a=1; b=2"), "site_token", "tok"),
            "a=1; b=2; site_token=tok"
        );
        assert_eq!(
            cookie_with_token(Some("site_token=forged; a=1"), "site_token", "tok"),
            "a=1; site_token=tok",
            "the client's copy never reaches the site"
        );
        assert_eq!(
            cookie_with_token(Some("site_token=forged"), "site_token", "tok"),
            "site_token=tok"
        );
    }

    #[test]
    fn signed_subject_and_identity_tokens() {
        use jwt_simple::prelude::*;
        let kp = ES256KeyPair::generate();
        let raw: crate::authtoken::RawAuthToken = serde_json::from_value(json!({
            "issuer": "http://gateway.example",
            "keys": [{"kid": "gw-1", "alg": "ES256", "private_key_pem": kp.to_pem().unwrap()}]
        }))
        .unwrap();
        let signer = AuthTokenSigner::compile(raw).unwrap();
        let pk = kp.public_key();
        let claims = json!({"email": "a@example.com", "groups": ["g"], "secret_thing": "x"})
            .as_object()
            .cloned()
            .unwrap();
        let opts = || {
            Some(VerificationOptions {
                artificial_time: Some(UnixTimeStamp::from_secs(NOW + 1)),
                ..Default::default()
            })
        };

        let x = site(exchange_json());
        let t = session_subject_token(&signer, &x, "alice", &claims, NOW, "j1").unwrap();
        let c = pk.verify_token::<Map<String, Value>>(&t, opts()).unwrap();
        assert_eq!(c.subject.as_deref(), Some("alice"));
        assert_eq!(
            c.audiences,
            Some(Audiences::AsString("http://127.0.0.1:9000/token".into()))
        );
        assert_eq!(
            c.expires_at,
            Some(UnixTimeStamp::from_secs(NOW + SUBJECT_TOKEN_LIFETIME_S))
        );
        assert_eq!(
            session_subject_token(&signer, &site(jwt_json()), "a", &claims, NOW, "j"),
            None
        );

        let j = site(jwt_json());
        let m = identity_jwt(&signer, &j, "alice", &claims, NOW, "j2").unwrap();
        assert_eq!(m.expires_at, NOW + 300);
        let c = pk
            .verify_token::<Map<String, Value>>(&m.token, opts())
            .unwrap();
        assert_eq!(c.subject.as_deref(), Some("alice"));
        assert_eq!(
            c.audiences,
            Some(Audiences::AsString("https://orders.internal".into()))
        );
        assert_eq!(c.custom.get("email"), Some(&json!("a@example.com")));
        assert_eq!(c.custom.get("groups"), Some(&json!(["g"])));
        assert!(
            !c.custom.contains_key("secret_thing"),
            "only the configured claims"
        );
        assert_eq!(identity_jwt(&signer, &x, "alice", &claims, NOW, "j"), None);
    }
}
