//! `site_authenticators` as written, and checked: each entry's kind, token service, where its
//! token goes and how it is cached.

use super::*;
use crate::config::{is_token_char, parse_http_url, ClientAuth, ConfigError, Endpoint};
use crate::policy::read::{uint, Obj};
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
