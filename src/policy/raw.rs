//! The policy as written: its types and defaults, as the reader (read.rs) fills them in. The
//! checks and the compiled [`super::Policy`] are in config.rs.

use super::AppType;
use crate::config::ConfigError;

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

/// The policy as written. The JSON names are the field names (enum values in snake_case);
/// [`RawPolicy::from_value`] (src/policy/read.rs) reads it, refusing unknown fields.
#[derive(Debug, Clone, Default)]
pub struct RawPolicy {
    /// What a request matching no application gets.
    pub default_decision: DefaultDecision,
    /// Paths (with `*` wildcards, whole request path) that need neither identity nor policy.
    pub unprotected_paths: Vec<String>,
    pub rule_sets: Vec<RawRuleSet>,
    pub applications: Vec<RawApplication>,
    /// `X-Forwarded-For` entries added by trusted proxies (0: the downstream address is the
    /// client); at most 10.
    pub xff_trusted_hops: u8,
}

/// How an API application checks bearer tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Validation {
    /// Verify the signed JWT locally (the OP's JWKS).
    Jwt,
    /// Ask the OP's introspection endpoint (RFC 7662).
    Introspection,
}

#[derive(Debug, Clone)]
pub struct RawAppApi {
    /// `None` only with `token_providers` (each provider says how its tokens are checked).
    pub validation: Option<Validation>,
    pub audiences: Vec<String>,
    pub forward_token: bool,
    /// Names from the configuration's `token_providers`; empty: the web session's OP.
    pub token_providers: Vec<String>,
}

/// A rejection handler as written: an error document or a redirect (JSON `type`: `error` or
/// `redirect`).
#[derive(Debug, Clone)]
pub enum RawRejection {
    Error {
        status: u16,
        content_type: String,
        /// With `{code}`, `{reference}` and `{rule}` placeholders.
        body: String,
    },
    Redirect {
        url: String,
        status: u16,
    },
}

pub(super) fn default_error_status() -> u16 {
    403
}
pub(super) fn default_content_type() -> String {
    "text/html; charset=utf-8".into()
}

/// Whose bucket a rate-limit rule counts a request in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// The subject (`sub`).
    Identity,
    ClientAddress,
    /// The token's `client_id` (or `azp`) claim.
    OauthClient,
    /// One bucket per application resource, shared by all clients.
    Resource,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefaultDecision {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    #[default]
    All,
    Any,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Ordering {
    #[default]
    Automatic,
    Manual,
}

#[derive(Debug, Clone)]
pub struct RawRuleSet {
    pub name: String,
    pub mode: Mode,
    pub rules: Vec<RawRule>,
    pub rejection: Option<RawRejection>,
}

#[derive(Debug, Clone)]
pub struct RawApplication {
    pub name: String,
    pub hosts: Vec<String>,
    pub context_root: String,
    /// JSON `type`.
    pub app_type: AppType,
    /// Bearer-token settings; required for `api` and `both`.
    pub api: Option<RawAppApi>,
    /// Token mediation for the backend: a name from `site_authenticators`.
    pub site_authenticator: Option<String>,
    /// The web session (a name from `web_sessions`) users sign in with; `None`: the default.
    pub web_session: Option<String>,
    pub rejection: Option<RawRejection>,
    pub ordering: Ordering,
    /// How the application's own rules combine; they run before the resource's.
    pub mode: Mode,
    pub rules: Vec<RawRule>,
    pub resources: Vec<RawResource>,
    /// Paths are matched case-insensitively unless this is set (as in PingAccess): a
    /// case-insensitive backend (IIS) must not see `/ADMIN/` dodge the `/admin/*` resource.
    pub case_sensitive_paths: bool,
}

pub(super) fn default_root() -> String {
    "/".into()
}

#[derive(Debug, Clone)]
pub struct RawResource {
    pub name: String,
    pub paths: Vec<String>,
    /// Methods this resource answers; absent means all.
    pub methods: Option<Vec<String>>,
    pub unprotected: bool,
    pub anonymous: bool,
    pub audit: bool,
    pub mode: Mode,
    pub rules: Vec<RawRule>,
    pub rejection: Option<RawRejection>,
}

/// One rule. The value tests (`equals`, `one_of`, `like`) are shared by attribute, header and
/// query rules: exactly one of them is given (or `present` for headers and query parameters).
/// In JSON, a rule is an object whose `type` is the variant's snake_case name, next to the
/// variant's fields (and, for attribute, header and query rules, those of [`RawTest`]).
#[derive(Debug, Clone)]
pub enum RawRule {
    All {
        name: Option<String>,
        rejection: Option<RawRejection>,
        rules: Vec<RawRule>,
    },
    Any {
        name: Option<String>,
        rejection: Option<RawRejection>,
        rules: Vec<RawRule>,
    },
    RuleSet {
        name: String,
    },
    Attribute {
        name: Option<String>,
        rejection: Option<RawRejection>,
        claim: String,
        test: RawTest,
    },
    Scope {
        name: Option<String>,
        rejection: Option<RawRejection>,
        all: Option<Vec<String>>,
        any: Option<Vec<String>>,
    },
    Network {
        name: Option<String>,
        rejection: Option<RawRejection>,
        cidrs: Vec<String>,
        negate: bool,
    },
    Time {
        name: Option<String>,
        rejection: Option<RawRejection>,
        days: Option<Vec<String>>,
        from: Option<String>,
        to: Option<String>,
        utc_offset: String,
    },
    Method {
        name: Option<String>,
        rejection: Option<RawRejection>,
        methods: Vec<String>,
    },
    Header {
        name: Option<String>,
        rejection: Option<RawRejection>,
        header: String,
        test: RawTest,
    },
    Query {
        name: Option<String>,
        rejection: Option<RawRejection>,
        param: String,
        test: RawTest,
    },
    Redirect {
        name: Option<String>,
        rejection: Option<RawRejection>,
        url: String,
        status: u16,
    },
    /// Token bucket: `burst` requests at once, refilled at `requests` per `interval_s`.
    RateLimit {
        name: Option<String>,
        rejection: Option<RawRejection>,
        requests: u32,
        interval_s: u32,
        /// Bucket size; `requests` when absent.
        burst: Option<u32>,
        per: Per,
    },
}

pub(super) fn default_offset() -> String {
    "+00:00".into()
}
pub(super) fn default_redirect_status() -> u16 {
    302
}

#[derive(Debug, Clone, Default)]
pub struct RawTest {
    pub equals: Option<String>,
    pub one_of: Option<Vec<String>>,
    /// A pattern where `*` stands for any run of characters.
    pub like: Option<String>,
    /// A regex (unanchored: use `^...$` for the whole value).
    pub matches: Option<String>,
    pub present: bool,
    pub case_insensitive: bool,
    pub negate: bool,
}

impl RawPolicy {
    /// Parses policy JSON on its own (tools, tests); the error names the JSON field at fault.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let v: super::read::StrictValue = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "(root)".into() } else { path };
            err(field, e.inner().to_string())
        })?;
        Self::from_value(&v.0).map_err(|e| {
            if e.field.is_empty() {
                err("(root)", e.message)
            } else {
                e
            }
        })
    }
}
