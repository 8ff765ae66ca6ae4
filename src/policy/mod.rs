//! Access policies (issue 3): which application and resource a request is for, and whether
//! its rules let it through. Plain data in, a [`Decision`] out: no I/O, no clock, no host
//! calls, so the request flow owns the wiring and this is tested natively.
//!
//! Paths are matched as given: the flow hands over the canonical path it computed itself
//! ([`crate::canonical`]), and a host already lower-cased without trailing dots. Matching is
//! case-insensitive unless an application says otherwise, and a request that no resource
//! serves is refused rather than left to the application's rules.

mod app_api;
mod audit;
mod config;
mod ratelimit;
mod raw;
pub(crate) mod read;
mod rejection;
mod route;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::request::{cgi_eq, query_name_eq, HeaderSource};

pub use audit::AuditRecord;
pub use config::compile;
pub use ratelimit::{Limit, RateLimits, DEFAULT_MAX_BUCKETS};
pub use raw::{
    DefaultDecision, Mode, Ordering, Per, RawAppApi, RawApplication, RawPolicy, RawRejection,
    RawResource, RawRule, RawRuleSet, RawTest, Validation,
};
pub use read::{deserialize_policy, deserialize_values};
pub use rejection::{Rejection, Template};
pub use route::Target;
use route::{glob, HostIndex, Pattern, Route};

/// How an unauthenticated request to an application is answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AppType {
    /// Browser: redirect to the OP's login.
    #[default]
    Web,
    /// API: 401 with `WWW-Authenticate`.
    Api,
    /// Either; [`AppType::is_api_request`] tells which one a request is.
    Both,
}

impl AppType {
    /// Whether a request is answered as an API call: always for `api`, never for `web`, and
    /// for `both` when it carries a bearer token or does not accept HTML.
    pub fn is_api_request(self, has_bearer: bool, accept: Option<&str>) -> bool {
        match self {
            AppType::Web => false,
            AppType::Api => true,
            AppType::Both => {
                has_bearer || !accept.is_some_and(|a| a.contains("text/html") || a.contains("*/*"))
            }
        }
    }
}

/// A checked policy, built once by [`compile`].
#[derive(Debug, Clone)]
pub struct Policy {
    pub default_decision: DefaultDecision,
    /// `X-Forwarded-For` entries added by trusted proxies; see [`client_ip`].
    pub xff_trusted_hops: u8,
    /// Global unprotected paths: (case-insensitive, case-sensitive) forms of each.
    unprotected: Vec<(Pattern, Pattern)>,
    applications: Vec<Application>,
    hosts: HostIndex,
}

/// How bearer tokens for an API application are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppApi {
    pub validation: Validation,
    /// Accepted `aud` values (JWT validation: at least one).
    pub audiences: Vec<String>,
    /// Whether the client's token goes on to the backend.
    pub forward_token: bool,
    /// Named token providers (`token_providers`); then `validation` and `audiences` are
    /// theirs, not these.
    pub token_providers: Vec<String>,
    /// Where tokens are checked: indices in the settings' token providers, filled in when the
    /// configuration is resolved (never empty after that).
    pub providers: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Application {
    pub name: String,
    /// Lower-case: `host`, `host:port`, `*.domain` or `*`.
    hosts: Vec<String>,
    /// Without trailing slash; `""` for `/`. Lower-case unless paths are case-sensitive.
    context_root: String,
    /// Whether paths are matched as sent; otherwise lower-cased (patterns are stored so).
    case_sensitive_paths: bool,
    pub app_type: AppType,
    /// Present for `api` and `both` applications.
    pub api: Option<AppApi>,
    /// Name of the site authenticator (token mediation) for this application's backend.
    pub site_authenticator: Option<String>,
    /// The web session named in the configuration (`None`: the default one).
    pub web_session_name: Option<String>,
    /// Index of the web session in the settings (0, the default, until resolved).
    pub web_session: usize,
    rules: Node,
    /// Answer to refusals that no rule or rule set handles.
    rejection: Option<Rejection>,
    resources: Vec<Resource>,
    /// (pattern, resource) in matching order.
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    methods: Option<Vec<String>>,
    pub unprotected: bool,
    pub anonymous: bool,
    pub audit: bool,
    rules: Node,
    rejection: Option<Rejection>,
}

/// An IP range, as the address bits in the upper end of a u128 (so v4 and v6 share code).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cidr {
    v4: bool,
    base: u128,
    mask: u128,
}

impl Cidr {
    fn new(addr: IpAddr, len: u8) -> Self {
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(len))
        };
        Self {
            v4: addr.is_ipv4(),
            base: Self::bits(addr) & mask,
            mask,
        }
    }

    fn bits(addr: IpAddr) -> u128 {
        match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)) << 96,
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn contains(&self, addr: IpAddr) -> bool {
        // A v4 client reaching a dual-stack listener shows up as ::ffff:a.b.c.d.
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            a => a,
        };
        addr.is_ipv4() == self.v4 && Self::bits(addr) & self.mask == self.base
    }
}

/// A compiled rule or rule set; `label` names it in decisions and audit lines (its `name`,
/// or its JSON path).
#[derive(Debug, Clone)]
struct Node {
    label: String,
    kind: Kind,
    rejection: Option<Rejection>,
}

#[derive(Debug, Clone)]
enum Kind {
    All(Vec<Node>),
    Any(Vec<Node>),
    /// A named rule set, compiled once and shared by every rule that refers to it.
    Shared(Arc<Node>),
    Attribute {
        claim: String,
        test: Matcher,
    },
    Scope {
        scopes: Vec<String>,
        all: bool,
        /// The scopes space-joined, for `WWW-Authenticate: ... scope="..."`.
        required: String,
    },
    Network {
        cidrs: Vec<Cidr>,
        negate: bool,
    },
    Time {
        /// Bit n = weekday n (0 = Sunday), in the configured offset.
        days: u8,
        /// Minutes since local midnight; `from > to` spans midnight.
        from: u16,
        to: u16,
        offset_s: i64,
    },
    Method(Vec<String>),
    Header {
        header: String,
        test: Matcher,
    },
    Query {
        param: String,
        test: Matcher,
    },
    Redirect {
        url: String,
        status: u16,
    },
    RateLimit {
        limit: Limit,
        per: Per,
    },
}

#[derive(Debug, Clone)]
struct Matcher {
    decide: Decide,
    case_insensitive: bool,
    negate: bool,
}

#[derive(Debug, Clone)]
enum Decide {
    /// Already lower-cased when case-insensitive.
    OneOf(Vec<String>),
    Like(String),
    /// Unanchored unless the pattern anchors itself; built case-insensitive when asked.
    /// Shared by every rule with the same pattern (one compiled program, one match cache).
    Regex(Arc<regex_lite::Regex>),
    Present,
}

impl Matcher {
    /// For values a client chose (headers, query parameters), each of which some backend may
    /// be the one to read: a test passes when every value matches and there is one; negated,
    /// when none does.
    fn test_every<'v>(&self, values: impl Iterator<Item = &'v str> + Clone) -> bool {
        if self.negate || matches!(self.decide, Decide::Present) {
            return self.test(values);
        }
        let mut any = false;
        for v in values {
            if !self.test(std::iter::once(v)) {
                return false;
            }
            any = true;
        }
        any
    }

    /// Applies the test to every value; passes when any value matches (then negated).
    fn test<'v>(&self, values: impl Iterator<Item = &'v str>) -> bool {
        let mut found = false;
        for v in values {
            if let (true, Decide::OneOf(set)) =
                (self.case_insensitive && v.is_ascii(), &self.decide)
            {
                // The set is folded already; an ASCII value needs no folded copy.
                if set.iter().any(|s| s.eq_ignore_ascii_case(v)) {
                    found = true;
                    break;
                }
                continue;
            }
            let folded;
            let v = if self.case_insensitive && !matches!(self.decide, Decide::Regex(_)) {
                folded = v.to_lowercase();
                folded.as_str()
            } else {
                v
            };
            if match &self.decide {
                Decide::OneOf(set) => set.iter().any(|s| s == v),
                Decide::Like(p) => glob(p.as_bytes(), v.as_bytes()),
                Decide::Regex(re) => re.is_match(v),
                Decide::Present => true,
            } {
                found = true;
                break;
            }
        }
        found != self.negate
    }
}

/// Who the request is from, when known: a session or a validated bearer token.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub sub: &'a str,
    pub claims: &'a Map<String, Value>,
    /// OAuth scopes (bearer tokens); empty for browser sessions.
    pub scopes: &'a [String],
}

/// What the rules may look at; all borrowed from the request.
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The canonical path, percent-decoded and without the query (see [`crate::canonical`]);
    /// a decoded `?` in it is part of the path.
    pub path: &'a str,
    /// The raw query string (after `?`), decoded only if a query rule runs.
    pub query: &'a str,
    pub headers: &'a dyn HeaderSource,
    /// The client address (downstream, or from trusted `X-Forwarded-For` hops).
    pub client_ip: Option<IpAddr>,
    /// Unix seconds (time rules).
    pub now: u64,
    /// Unix milliseconds (rate limits); the same clock as `now`.
    pub now_ms: u64,
    pub identity: Option<Identity<'a>>,
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub outcome: Outcome<'p>,
    /// The rule or rule set that decided (its name, or its JSON path), for logs and audit.
    pub rule: &'p str,
    /// For a refusal: the configured answer, the innermost one on the way from the refusing
    /// rule up through its rule sets to the resource, then the application. `None`: the
    /// gateway's default answer. A rate-limited request only uses a handler set on the
    /// rate-limit rule itself (the default is 429 with `Retry-After`).
    pub handler: Option<&'p Rejection>,
    /// For a refusal by a scope rule: the scopes it asks for, space-separated (RFC 6750
    /// `insufficient_scope`).
    pub scope: Option<&'p str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'p> {
    Allow,
    /// A rule needs an identity the request does not have: log in (web) or 401 (API).
    NeedIdentity,
    /// Refused by policy: 403.
    Forbidden,
    /// A redirect rule: send the browser to `url` with `status`.
    Redirect {
        url: &'p str,
        status: u16,
    },
    /// A rate-limit rule's bucket is empty: 429 with `Retry-After`.
    RateLimited {
        retry_after_s: u64,
    },
}

impl<'p> Decision<'p> {
    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }

    fn new(outcome: Outcome<'p>, rule: &'p str) -> Self {
        Self {
            outcome,
            rule,
            handler: None,
            scope: None,
        }
    }
}

/// The client's address. `downstream` is Envoy's `source.address` (`1.2.3.4:5678`,
/// `[::1]:5678`, or a bare address); `xff` the `X-Forwarded-For` value (several headers
/// joined with commas). With `trusted_hops` = 0 the downstream address is the client; with N,
/// the N-th entry from the right of `X-Forwarded-For` (N = 1: the one added by the single
/// trusted proxy). Too few entries, or one that is not an address: `None`, and network rules
/// then fail closed.
pub fn client_ip(downstream: Option<&str>, xff: Option<&str>, trusted_hops: u8) -> Option<IpAddr> {
    if trusted_hops == 0 {
        return parse_addr(downstream?);
    }
    let entry = xff?.rsplit(',').nth(usize::from(trusted_hops) - 1)?;
    parse_addr(entry)
}

fn parse_addr(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            // `[::1]` without a port.
            raw.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
        })
}

impl Application {
    pub fn context_root(&self) -> &str {
        if self.context_root.is_empty() {
            "/"
        } else {
            &self.context_root
        }
    }

    pub fn resources(&self) -> &[Resource] {
        &self.resources
    }

    /// The application's rules, then the resource's; an identity is required unless the
    /// resource is unprotected or anonymous. On an unprotected resource the identity is not
    /// looked at, and a rule needing one is a plain refusal (logging in would not help).
    /// Rate-limit rules take a token from `limits` (owned by the caller, one per VM and
    /// compiled policy) at `facts.now_ms`.
    pub fn evaluate<'p>(
        &'p self,
        resource: Option<&'p Resource>,
        facts: &RequestFacts,
        limits: &mut RateLimits,
    ) -> Decision<'p> {
        let unprotected = resource.is_some_and(|r| r.unprotected);
        let anonymous = resource.is_some_and(|r| r.anonymous);
        let without;
        let facts = if unprotected && facts.identity.is_some() {
            without = RequestFacts {
                identity: None,
                ..*facts
            };
            &without
        } else {
            facts
        };
        if facts.identity.is_none() && !unprotected && !anonymous {
            return Decision::new(Outcome::NeedIdentity, "authentication");
        }
        let mut cx = Cx {
            facts,
            limits,
            app: &self.name,
            resource: resource.map(|r| r.name.as_str()),
        };
        let mut d = evaluate(&self.rules, &mut cx);
        let mut from_resource = false;
        if d.allowed() {
            if let Some(r) = resource {
                d = evaluate(&r.rules, &mut cx);
                from_resource = true;
            }
        }
        if unprotected && d.outcome == Outcome::NeedIdentity {
            d.outcome = Outcome::Forbidden;
        }
        if d.outcome == Outcome::Forbidden && d.handler.is_none() {
            d.handler = resource
                .filter(|_| from_resource)
                .and_then(|r| r.rejection.as_ref())
                .or(self.rejection.as_ref());
        }
        d
    }
}

impl Clone for RequestFacts<'_> {
    fn clone(&self) -> Self {
        *self
    }
}
impl Copy for RequestFacts<'_> {}

impl Resource {
    pub fn methods(&self) -> Option<&[String]> {
        self.methods.as_deref()
    }

    fn allows(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|ms| ms.iter().any(|m| m == method))
    }

    /// A resource for every path and method with no rules of its own.
    fn root() -> Resource {
        Resource {
            name: "root".into(),
            methods: None,
            unprotected: false,
            anonymous: false,
            audit: false,
            rules: Node {
                label: "root".into(),
                kind: Kind::All(Vec::new()),
                rejection: None,
            },
            rejection: None,
        }
    }
}

/// What one evaluation carries along besides the rules.
struct Cx<'c, 'f> {
    facts: &'c RequestFacts<'f>,
    limits: &'c mut RateLimits,
    app: &'c str,
    resource: Option<&'c str>,
}

/// Evaluates one rule tree. `all`: every rule must pass, the first failure decides; `any`:
/// the first success decides, and if none passes the refusal says whether an identity would
/// have helped. A refusal picks up the innermost rejection handler on its way up.
fn evaluate<'p>(node: &'p Node, cx: &mut Cx) -> Decision<'p> {
    let mut d = decide(node, cx);
    if d.handler.is_none() {
        let applies = match d.outcome {
            Outcome::Forbidden => true,
            // Only the rate-limit rule's own handler; outer ones are for refusals.
            Outcome::RateLimited { .. } => matches!(node.kind, Kind::RateLimit { .. }),
            _ => false,
        };
        if applies {
            d.handler = node.rejection.as_ref();
        }
    }
    d
}

fn decide<'p>(node: &'p Node, cx: &mut Cx) -> Decision<'p> {
    let facts = cx.facts;
    let pass = Decision::new(Outcome::Allow, &node.label);
    let fail = |outcome| Decision::new(outcome, node.label.as_str());
    let check = |ok: bool| {
        if ok {
            pass.clone()
        } else {
            fail(Outcome::Forbidden)
        }
    };
    match &node.kind {
        Kind::All(rules) => {
            for r in rules {
                let d = evaluate(r, cx);
                if !d.allowed() {
                    return d;
                }
            }
            pass
        }
        Kind::Any(rules) => {
            let mut refusal: Option<Decision> = None;
            for r in rules {
                let d = evaluate(r, cx);
                if d.allowed() {
                    return d;
                }
                // Prefer "log in" to a flat refusal: with an identity, the rule may pass.
                if refusal
                    .as_ref()
                    .is_none_or(|f| f.outcome != Outcome::NeedIdentity)
                {
                    refusal = Some(d);
                }
            }
            // An empty `any` has nothing to satisfy it.
            refusal.unwrap_or(fail(Outcome::Forbidden))
        }
        Kind::Shared(set) => evaluate(set, cx),
        Kind::Attribute { claim, test } => {
            let Some(id) = facts.identity else {
                return fail(Outcome::NeedIdentity);
            };
            if claim == "sub" {
                return check(test.test(std::iter::once(id.sub)));
            }
            let Some(v) = id.claims.get(claim) else {
                return check(test.test(std::iter::empty()));
            };
            // Strings (the usual case) are tested in place; numbers and booleans as text.
            let mut texts = Vec::new();
            claim_texts(v, &mut texts);
            let strings = match v {
                Value::String(_) => std::slice::from_ref(v),
                Value::Array(items) => items.as_slice(),
                _ => &[],
            };
            let values = strings
                .iter()
                .filter_map(Value::as_str)
                .chain(texts.iter().map(String::as_str));
            check(test.test(values))
        }
        Kind::Scope {
            scopes,
            all,
            required,
        } => {
            let Some(id) = facts.identity else {
                return fail(Outcome::NeedIdentity);
            };
            let has = |s: &String| id.scopes.iter().any(|t| t == s);
            let ok = if *all {
                scopes.iter().all(has)
            } else {
                scopes.iter().any(has)
            };
            let mut d = check(ok);
            if !ok {
                d.scope = Some(required);
            }
            d
        }
        Kind::Network { cidrs, negate } => {
            let inside = facts
                .client_ip
                .is_some_and(|ip| cidrs.iter().any(|c| c.contains(ip)));
            // An unknown address is outside every range, and not inside a negated one either.
            check(facts.client_ip.is_some() && inside != *negate)
        }
        Kind::Time {
            days,
            from,
            to,
            offset_s,
        } => {
            let local = i64::try_from(facts.now).unwrap_or(i64::MAX - 86_400) + offset_s;
            let day = (local.div_euclid(86_400) + 4).rem_euclid(7); // 1970-01-01 was a Thursday
            let minute = (local.rem_euclid(86_400) / 60) as u16;
            let in_hours = if from < to {
                (*from..*to).contains(&minute)
            } else {
                minute >= *from || minute < *to
            };
            check(days & (1 << day) != 0 && in_hours)
        }
        Kind::Method(methods) => check(methods.iter().any(|m| m == facts.method)),
        Kind::Header { header, test } => {
            // Every copy a backend could read: repeats, `_` spellings (CGI, PHP, WSGI, Rack),
            // values that are not UTF-8 (lossily: they match no test, but are present).
            let parts = facts
                .headers
                .headers()
                .iter()
                .filter(|(n, _)| cgi_eq(n, header))
                .map(|(_, v)| std::str::from_utf8(v).unwrap_or("\u{fffd}").trim());
            check(test.test_every(parts))
        }
        Kind::Query { param, test } => {
            // Every copy, under every name a backend reads as this one: PHP and Express read
            // the last, ASP.NET joins them and folds case, PHP and Rack rewrite names.
            let values: Vec<String> = url::form_urlencoded::parse(facts.query.as_bytes())
                .filter(|(k, _)| query_name_eq(k, param))
                .map(|(_, v)| v.into_owned())
                .collect();
            check(test.test_every(values.iter().map(String::as_str)))
        }
        Kind::Redirect { url, status } => fail(Outcome::Redirect {
            url,
            status: *status,
        }),
        Kind::RateLimit { limit, per } => {
            let key = rate_key(*per, cx);
            match cx.limits.take(limit, &key, facts.now_ms) {
                Ok(()) => pass,
                Err(retry_after_s) => fail(Outcome::RateLimited { retry_after_s }),
            }
        }
    }
}

/// Whose bucket a request draws from. A key that is missing (no identity, no client id)
/// falls back to the client address, then to one bucket shared by all such requests.
/// Prefixes keep the kinds of key apart.
fn rate_key(per: Per, cx: &Cx) -> String {
    let id = cx.facts.identity;
    let client = || cx.facts.client_ip.map(|ip| format!("ip:{ip}"));
    let key = match per {
        Per::Identity => id.map(|i| format!("sub:{}", i.sub)),
        Per::OauthClient => id.and_then(|i| {
            ["client_id", "azp"]
                .iter()
                .find_map(|c| i.claims.get(*c).and_then(Value::as_str))
                .map(|c| format!("client:{c}"))
        }),
        Per::ClientAddress => None,
        Per::Resource => Some(format!(
            "res:{}\u{0}{}",
            cx.app,
            cx.resource.unwrap_or_default()
        )),
    };
    key.or_else(client).unwrap_or_default()
}

/// The non-string scalars of a claim as text (strings are read in place), each element of
/// a list (such as `groups`) on its own.
fn claim_texts(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Number(n) => out.push(n.to_string()),
        Value::Bool(b) => out.push(b.to_string()),
        Value::Array(items) => {
            for item in items {
                if !item.is_array() {
                    claim_texts(item, out);
                }
            }
        }
        Value::String(_) | Value::Null | Value::Object(_) => {}
    }
}
