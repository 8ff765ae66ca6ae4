//! The request state machine. The host feeds it a request head (and later callout results),
//! with the time and a source of randomness; it answers with an [`Action`]. No I/O happens
//! here, so every path is unit-tested natively.

use std::net::IpAddr;
use std::rc::Rc;

use serde_json::Map;

use crate::access;
use crate::bearer::{self, BearerError, JwtRules, Lookup, TokenCache, TokenInfo, UNKNOWN_KEY};
use crate::cache::{FlightCache, Key, Lookup as CacheLookup};
use crate::config::{OpEndpoints, Settings};
use crate::cookie::{self, CookieAttributes};
use crate::discovery::{self, DiscoveryState};
use crate::http::{Action, Callout, CalloutResult, Forward, HeaderOps, LocalResponse, Wake};
use crate::id_token::{self, Expected, IdTokenError};
use crate::identity;
use crate::jwks::{parse_jwks, JwksCache};
use crate::login::{random_token, safe_return_path, Entropy, LoginTransaction};
use crate::mediation::{self, Inject, SiteAuthenticator, SiteKind};
use crate::oidc::{self, TokenError};
use crate::pages::Problem;
use crate::policy::{
    self, AppType, Application, Identity, Outcome, RateLimits, RequestFacts, Target, Validation,
};
use crate::session::{Session, SessionCache, SessionEntry};

/// Verified session cookies remembered per VM.
const SESSION_CACHE_ENTRIES: usize = 10_000;
/// A JWKS or token response larger than this is not from a sane OP.
pub const MAX_CALLOUT_BODY: usize = 256 * 1024;

/// State a VM keeps across requests (one VM per Envoy worker thread).
pub struct VmState {
    pub jwks: JwksCache,
    pub sessions: SessionCache,
    /// The OP's endpoints: from the configuration, or once discovery has fetched them.
    pub endpoints: Option<Rc<OpEndpoints>>,
    pub discovery: DiscoveryState,
    /// Bearer-token checks (valid and refused), by token hash, with their identity headers.
    pub tokens: TokenCache,
    /// A JWKS fetch for bearer tokens under way, and the requests waiting for it.
    pub keys_flight: Option<KeysFlight>,
    /// Token buckets of rate-limit rules (per worker).
    pub limits: RateLimits,
    /// Parked requests to wake (context id, why). The host drains this after every callback.
    pub woken: Vec<(u32, Wake)>,
    /// Mediated tokens, one cache per site authenticator (same order as `Settings::sites`).
    pub mediated: Vec<FlightCache<Rc<SiteToken>>>,
    /// How bearer tokens are turned into cache keys.
    pub token_keys: bearer::TokenKeys,
}

/// A site's token as it goes upstream, prepared once when it is cached.
pub struct SiteToken {
    /// The header value (`Bearer <token>` for `authorization`), or the cookie value.
    pub value: String,
}

/// One JWKS fetch at a time for bearer tokens; the others wait for it.
pub struct KeysFlight {
    pub leader: u32,
    pub since: u64,
    pub waiters: Vec<u32>,
}

impl std::fmt::Debug for SiteToken {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SiteToken(<{} bytes>)", self.value.len())
    }
}

impl VmState {
    pub fn new(settings: &Settings) -> Self {
        let api = &settings.api;
        Self {
            jwks: JwksCache::default(),
            sessions: SessionCache::new(SESSION_CACHE_ENTRIES),
            endpoints: settings.op.endpoints.complete().map(Rc::new),
            discovery: DiscoveryState::default(),
            tokens: TokenCache::new(
                api.cache_max_entries,
                api.cache_max_ttl_s,
                api.negative_ttl_s,
            ),
            keys_flight: None,
            token_keys: bearer::TokenKeys::default(),
            limits: RateLimits::default(),
            woken: Vec::new(),
            mediated: settings
                .sites
                .iter()
                .map(|s| {
                    s.cache
                        .new_cache()
                        .with_pending_timeout(stale_after_s(site_timeout_ms(s)))
                })
                .collect(),
        }
    }

    fn wake(&mut self, waiters: Vec<u32>, why: Wake) {
        self.woken.extend(waiters.into_iter().map(|w| (w, why)));
    }

    /// The discovery request to send now, if one is due.
    pub fn discovery_due(&mut self, settings: &Settings, now: u64) -> Option<Callout> {
        if !self.discovery.due(now, self.endpoints.is_some()) {
            return None;
        }
        let callout = discovery::request(settings)?;
        self.discovery.started(now);
        Some(callout)
    }

    /// Takes in the discovery answer; returns a line for the log.
    pub fn on_discovery(&mut self, settings: &Settings, result: CalloutResult) -> LogLine {
        self.discovery.finished();
        let outcome = match normalize(result) {
            CalloutResult::Response { status: 200, body } => discovery::parse(settings, &body),
            CalloutResult::Response { status, .. } => Err(format!("HTTP {status}")),
            CalloutResult::TimedOut => Err("timed out".into()),
            CalloutResult::Failed => Err("OP unreachable".into()),
        };
        match outcome {
            Ok(endpoints) => {
                self.endpoints = Some(Rc::new(endpoints));
                LogLine {
                    level: Level::Info,
                    message: format!("discovered the endpoints of {}", settings.op.issuer),
                }
            }
            Err(why) => LogLine {
                level: Level::Warn,
                message: format!(
                    "discovery at {} failed: {why}; retrying in {}s",
                    settings.op.issuer,
                    discovery::RETRY_S
                ),
            },
        }
    }
}

/// Where the gateway reads request headers from (pseudo-headers included, names lower-case).
/// The hot path asks for two headers only, so the host can fetch them one by one instead of
/// copying the whole header map on every request.
pub trait HeaderSource {
    fn header(&self, name: &str) -> Option<String>;

    /// The downstream peer's address as Envoy reports it (`1.2.3.4:5678`, `[::1]:5678`).
    fn client_address(&self) -> Option<String> {
        self.header(":source-address")
    }

    /// A microsecond clock for measuring time spent in the filter (audit lines).
    fn now_us(&self) -> u64 {
        0
    }
}

/// A header list held in memory (tests, tools).
#[derive(Debug, Clone, Default)]
pub struct HeaderList(Vec<(String, String)>);

impl HeaderList {
    pub fn new<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.to_string()))
                .collect(),
        )
    }
}

impl HeaderSource for HeaderList {
    fn header(&self, name: &str) -> Option<String> {
        let mut values = self
            .0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next()?.to_string();
        // Several Cookie headers (HTTP/2) form one list; Envoy joins them the same way.
        Some(values.fold(first, |mut acc, v| {
            acc.push_str(if name == "cookie" { "; " } else { "," });
            acc.push_str(v);
            acc
        }))
    }
}

/// What the slow paths (login, callback, logout) need to know about a request.
#[derive(Debug, Clone, Default)]
struct RequestHead {
    method: String,
    scheme: String,
    authority: String,
    /// Path with query, as received.
    path: String,
    cookie: Option<String>,
    accept: Option<String>,
    sec_fetch_mode: Option<String>,
    x_requested_with: Option<String>,
}

impl RequestHead {
    fn read(src: &dyn HeaderSource, path: String, cookie: Option<String>) -> Self {
        // Envoy sets x-forwarded-proto at the edge; it says what the browser used.
        let scheme = src
            .header("x-forwarded-proto")
            .filter(|p| p == "https" || p == "http")
            .or_else(|| src.header(":scheme"))
            .filter(|s| s == "https")
            .unwrap_or_else(|| "http".into());
        RequestHead {
            method: src.header(":method").unwrap_or_default(),
            scheme,
            authority: src.header(":authority").unwrap_or_default(),
            path,
            cookie,
            accept: src.header("accept"),
            sec_fetch_mode: src.header("sec-fetch-mode"),
            x_requested_with: src.header("x-requested-with"),
        }
    }

    fn query(&self) -> &str {
        self.path.split_once('?').map_or("", |(_, q)| q)
    }

    /// A browser navigation, answered with a login redirect rather than a 401.
    fn is_navigation(&self) -> bool {
        let method_ok = self.method == "GET" || self.method == "HEAD";
        let navigating = match self.sec_fetch_mode.as_deref() {
            Some(mode) => mode == "navigate",
            None => self
                .accept
                .as_deref()
                .is_some_and(|a| a.contains("text/html")),
        };
        let xhr = self
            .x_requested_with
            .as_deref()
            .is_some_and(|x| x.eq_ignore_ascii_case("xmlhttprequest"));
        method_ok && navigating && !xhr
    }

    /// Not a browser page load: answered with JSON rather than HTML.
    fn is_api_like(&self) -> bool {
        !self
            .accept
            .as_deref()
            .is_some_and(|a| a.contains("text/html"))
    }

    fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
}

/// A line for Envoy's log. Never holds a token, code, cookie or secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
}

enum Stage {
    Start,
    /// Waiting for the introspection endpoint about the token with this hash.
    Introspect {
        key: [u8; 32],
    },
    /// Waiting for the JWKS to check a bearer token (this request leads the fetch).
    BearerKeys,
    /// Waiting for the STS of site `site` (index in `Settings::sites`).
    Mediate {
        site: usize,
        key: Key,
        html: bool,
    },
    /// Waiting for the token endpoint.
    Token {
        txn: LoginTransaction,
        html: bool,
    },
    /// Waiting for the JWKS, with the ID token to check once it arrives.
    Keys {
        txn: LoginTransaction,
        id_token: String,
        html: bool,
    },
    Done,
}

/// One request's progress through the gateway.
pub struct RequestFlow {
    stage: Stage,
    log: Vec<LogLine>,
    /// The host's id of this request (for waiting on another request's callout).
    ctx: u32,
    /// Times this request was run again after a callout or wake-up (a loop guard).
    reruns: u8,
    /// When an audited request started being decided (see [`HeaderSource::now_us`]).
    audit_started_us: Option<u64>,
    /// What this request's own callout brought, for its rerun: the cache may not keep it
    /// (already at its expiry, a zero TTL, or a cache full of checks under way).
    fresh_token: Option<(Key, Rc<TokenInfo>)>,
    fresh_site: Option<(usize, Key, Rc<SiteToken>)>,
    /// The policy already decided (and took rate-limit tokens, wrote the audit line) in an
    /// earlier run of this request.
    decided: bool,
}

impl Default for RequestFlow {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestFlow {
    pub fn new() -> Self {
        Self::for_context(0)
    }

    /// A flow for the request the host knows as `ctx`.
    pub fn for_context(ctx: u32) -> Self {
        Self {
            stage: Stage::Start,
            log: Vec::new(),
            ctx,
            reruns: 0,
            audit_started_us: None,
            fresh_token: None,
            fresh_site: None,
            decided: false,
        }
    }

    /// Log lines produced so far (the host writes them out).
    pub fn take_log(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.log)
    }

    fn note(&mut self, level: Level, message: String) {
        self.log.push(LogLine { level, message });
    }

    /// Decides what to do with a new request.
    pub fn on_request(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        self.stage = Stage::Done;
        let path = request.header(":path").unwrap_or_default();
        let cookie = request.header("cookie");
        let (path_only, query) = RequestFacts::split_path(&path);
        if path_only.starts_with(settings.base_path.as_str()) {
            if path_only == settings.heartbeat_path {
                return Action::Respond(LocalResponse::new(200).body("text/plain", "OK"));
            }
            if path_only == settings.callback_path {
                let head = RequestHead::read(request, path, cookie);
                let Some(endpoints) = vm.endpoints.clone() else {
                    return not_ready(true);
                };
                return self.callback(settings, &endpoints, &head, now, rng);
            }
            if path_only == settings.authtoken_jwks_path {
                if let Some(signer) = &settings.authtoken {
                    let mut r = LocalResponse::new(200)
                        .body("application/jwk-set+json", signer.jwks_json());
                    r.headers.retain(|(n, _)| n != "cache-control");
                    return Action::Respond(r.header("cache-control", "public, max-age=300"));
                }
            }
            if path_only == settings.logout_path {
                let head = RequestHead::read(request, path, cookie);
                return Action::Respond(logout(settings, vm.endpoints.as_deref(), &head));
            }
        }

        let implicit = settings.policy_is_implicit;
        let method;
        let (app, resource) = if implicit {
            method = String::new();
            match settings.policy.applications().first() {
                Some(app) => (app, None),
                None => return Action::Respond(self.internal_error()),
            }
        } else {
            // Host calls saved where nothing looks at them (see `Settings::policy_reads_*`).
            method = match settings.policy_reads_method {
                true => request.header(":method").unwrap_or_default(),
                false => String::new(),
            };
            let host = match settings.policy_reads_host {
                true => request.header(":authority").unwrap_or_default(),
                false => String::new(),
            };
            match settings.policy.route(&host, path_only, &method) {
                Target::Unprotected => {
                    return Action::Forward(anonymous(settings, cookie.as_deref(), None))
                }
                Target::NoApplication(policy::DefaultDecision::Deny) => {
                    let head = RequestHead::read(request, path.clone(), cookie.clone());
                    return Action::Respond(self.forbidden_page(
                        rng,
                        !head.is_api_like(),
                        "no_application",
                        format!(
                            "no application for host {} path {}",
                            printable(&host),
                            printable(path_only)
                        ),
                    ));
                }
                Target::NoApplication(policy::DefaultDecision::Allow) => {
                    match settings.fallback.applications().first() {
                        Some(app) => (app, None),
                        None => return Action::Respond(self.internal_error()),
                    }
                }
                Target::App { app, resource } => (app, resource),
            }
        };
        let unprotected = resource.is_some_and(|r| r.unprotected);
        if resource.is_some_and(|r| r.audit) && self.audit_started_us.is_none() {
            self.audit_started_us = Some(request.now_us());
        }

        // Who is asking: a bearer token (API access), a session cookie (web), or nobody.
        let authorization = match app.app_type {
            AppType::Web => None,
            AppType::Api | AppType::Both => request.header("authorization"),
        };
        // Its syntax is checked when the token is first seen (`check_bearer`), not on every hit.
        let bearer = bearer::credential(authorization.as_deref());
        let use_bearer = match app.app_type {
            AppType::Web => false,
            AppType::Api => true,
            AppType::Both => bearer.is_some(),
        };
        let mut session: Option<Rc<SessionEntry>> = None;
        let mut token: Option<Rc<TokenInfo>> = None;
        let mut token_key: Option<Key> = None;
        if unprotected {
            // Nothing about the caller is looked at, so nothing is vouched for.
        } else if use_bearer {
            if let Some(raw) = bearer {
                // A result holds only for the checks that produced it: the key covers the token
                // and how this application validates it (method and accepted audiences).
                let profile = app
                    .api
                    .as_ref()
                    .map(|a| (a.validation == Validation::Jwt, &a.audiences));
                token_key = Some(vm.token_keys.key_of(&(raw, profile)));
                match self.check_bearer(settings, vm, app, raw, token_key.unwrap_or_default(), now)
                {
                    Ok(info) => token = Some(info),
                    Err(action) => return action,
                }
            }
        } else {
            let value = cookie
                .as_deref()
                .and_then(|c| cookie::get(c, &settings.session.cookie_name));
            session = value.and_then(|t| {
                vm.sessions.lookup(
                    t,
                    &settings.session.keys,
                    now,
                    settings.session.idle_timeout_s,
                    |s| identity::request_headers(&settings.identity_headers, Some(s)),
                )
            });
        }

        // The policy: skipped for the implicit application, which has no rules.
        let identity = match (&session, &token) {
            (Some(e), _) => Some(Identity {
                sub: &e.session.sub,
                claims: &e.session.claims,
                scopes: &[],
            }),
            (None, Some(t)) => Some(Identity {
                sub: t.sub.as_deref().unwrap_or_default(),
                claims: &t.claims,
                scopes: &t.scopes,
            }),
            (None, None) => None,
        };
        let outcome = if implicit {
            match identity {
                Some(_) => None,
                None => Some((Outcome::NeedIdentity, None)),
            }
        } else {
            let client_ip = client_ip(settings, request);
            let facts = RequestFacts {
                method: &method,
                path: path_only,
                query,
                headers: request,
                client_ip,
                now,
                now_ms: now.saturating_mul(1000),
                identity,
            };
            // A rerun (after this request's own callout) decides again, but its rate-limit
            // tokens were taken and its audit line written the first time.
            let first = !std::mem::replace(&mut self.decided, true);
            let decision = if first {
                app.evaluate(resource, &facts, &mut vm.limits)
            } else {
                app.evaluate(resource, &facts, &mut RateLimits::new(64))
            };
            if first && resource.is_some_and(|r| r.audit) {
                let elapsed = request
                    .now_us()
                    .saturating_sub(self.audit_started_us.unwrap_or(0));
                let line = access::audit_line(&facts, app, resource, &decision, request, elapsed);
                self.note(Level::Info, line);
            }
            match decision.outcome {
                Outcome::Allow => None,
                ref other => Some((other.clone(), Some(decision.clone()))),
            }
        };
        if let Some((outcome, decision)) = outcome {
            return match outcome {
                Outcome::NeedIdentity if use_bearer => self.bearer_refused(
                    settings,
                    if bearer.is_some() {
                        BearerError::InvalidToken("no identity")
                    } else {
                        BearerError::Missing
                    },
                ),
                Outcome::NeedIdentity => {
                    let head = RequestHead::read(request, path.clone(), cookie.clone());
                    self.unauthenticated(settings, vm.endpoints.as_deref(), &head, now, rng)
                }
                _ => {
                    let head = RequestHead::read(request, path.clone(), cookie.clone());
                    let html = !use_bearer && !head.is_api_like();
                    let reference = random_token(rng, 6).unwrap_or_default();
                    match decision {
                        Some(d) => {
                            let (response, log) =
                                access::refusal(settings, &d, html, use_bearer, &reference);
                            if let Some(log) = log {
                                self.note(Level::Info, log);
                            }
                            Action::Respond(response)
                        }
                        None => Action::Respond(self.internal_error()),
                    }
                }
            };
        }

        let mut fwd = match (&session, &token) {
            (Some(entry), _) => forward(settings, vm, cookie.as_deref(), entry.clone(), now),
            (None, Some(t)) => anonymous(settings, cookie.as_deref(), Some(t.headers.clone())),
            (None, None) => anonymous(settings, cookie.as_deref(), None),
        };
        // Token mediation: the site gets its own token, never the client's.
        let subject = match (&session, &token) {
            (Some(e), _) => Some((e.session.sub.as_str(), &e.session.claims)),
            (None, Some(t)) => Some((t.sub.as_deref().unwrap_or_default(), &t.claims)),
            (None, None) => None,
        };
        let site_of_app = settings.site_for(app);
        let mediated = match (site_of_app, subject) {
            (Some((i, site)), Some(subject)) => {
                let from = Subject {
                    sub: subject.0,
                    claims: subject.1,
                    session: session.is_some(),
                    bearer: bearer.zip(token_key),
                };
                match self.mediate(settings, vm, request, i, site, &from, now, rng) {
                    Ok(t) => Some((site, t)),
                    Err(action) => return action,
                }
            }
            _ => None,
        };
        // A mediated site gets its own token and nothing a client could have made up: the
        // client's Authorization and any copy of the site's header or cookie are removed, also
        // where no token is mediated (unprotected and anonymous resources).
        let site = site_of_app.map(|(_, site)| site);
        let keep_token = app.api.as_ref().is_some_and(|a| a.forward_token) && site.is_none();
        if (token.is_some() && !keep_token) || site.is_some() {
            fwd.request_headers.push(("authorization".into(), None));
        }
        if let Some(site) = site {
            let value = mediated.as_ref().map(|(_, t)| t.value.as_str());
            match &site.inject {
                Inject::Header(name) => fwd
                    .request_headers
                    .push((name.clone(), value.map(String::from))),
                Inject::Cookie(name) => {
                    let upstream = match fwd.request_headers.iter().position(|(n, _)| n == "cookie")
                    {
                        Some(i) => fwd.request_headers.remove(i).1,
                        None => cookie.clone(),
                    };
                    let replaced = match value {
                        Some(v) => Some(mediation::cookie_with_token(upstream.as_deref(), name, v)),
                        None => upstream.as_deref().and_then(|c| {
                            cookie::without(c, |n| n == name).unwrap_or(Some(c.to_string()))
                        }),
                    };
                    fwd.request_headers.push(("cookie".into(), replaced));
                }
            }
        }
        Action::Forward(fwd)
    }

    /// The site's token for this subject: cached, signed now (JWT identity mapping), or asked
    /// of the STS (a callout, or a wait for the request already asking).
    #[allow(clippy::too_many_arguments, clippy::result_large_err)]
    fn mediate(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        i: usize,
        site: &SiteAuthenticator,
        from: &Subject<'_>,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Result<Rc<SiteToken>, Action> {
        // Per subject and site: a session's `sub`, or a bearer token (by its key). The keyed
        // hash of the token cache serves here too; each cache belongs to one site already.
        let key = match from.bearer {
            Some((_, token_key)) if !from.session => vm.token_keys.key_of(&("bearer", token_key)),
            _ => vm.token_keys.key_of(&("session", from.sub)),
        };
        if let Some((fi, fk, t)) = &self.fresh_site {
            if *fi == i && *fk == key {
                return Ok(t.clone());
            }
        }
        let Some(cache) = vm.mediated.get_mut(i) else {
            return Err(Action::Respond(self.internal_error()));
        };
        match cache.lookup(&key, self.ctx, now) {
            CacheLookup::Hit(t) => return Ok(t),
            CacheLookup::Wait => return Err(Action::Wait),
            CacheLookup::Miss => {}
        }
        let jti = random_token(rng, 12);
        let signer = settings.authtoken.as_deref();
        match &site.kind {
            SiteKind::Jwt(_) => {
                let signed = signer.zip(jti).and_then(|(signer, jti)| {
                    mediation::identity_jwt(signer, site, from.sub, from.claims, now, &jti)
                });
                let Some(t) = signed else {
                    if let Some(cache) = vm.mediated.get_mut(i) {
                        let waiters = cache.complete(&key, None, now);
                        vm.wake(waiters, Wake::Fail(502));
                    }
                    return Err(self.internal_failure("could not sign the identity JWT"));
                };
                let value = Rc::new(SiteToken {
                    value: header_value(site, &t.token),
                });
                if let Some(cache) = vm.mediated.get_mut(i) {
                    let until = refresh_before(t.expires_at, now);
                    let waiters = cache.complete(&key, Some((value.clone(), until)), now);
                    vm.wake(waiters, Wake::Ready);
                }
                Ok(value)
            }
            SiteKind::TokenExchange(_) => {
                let subject = match from.bearer {
                    Some((raw, _)) if !from.session => {
                        Some((raw.to_string(), mediation::ACCESS_TOKEN_TYPE))
                    }
                    _ => signer
                        .zip(jti)
                        .and_then(|(signer, jti)| {
                            mediation::session_subject_token(
                                signer,
                                site,
                                from.sub,
                                from.claims,
                                now,
                                &jti,
                            )
                        })
                        .map(|t| (t, mediation::JWT_TOKEN_TYPE)),
                };
                let callout =
                    subject.and_then(|(t, kind)| mediation::exchange_request(site, &t, kind));
                let Some(callout) = callout else {
                    if let Some(cache) = vm.mediated.get_mut(i) {
                        let waiters = cache.complete(&key, None, now);
                        vm.wake(waiters, Wake::Fail(502));
                    }
                    return Err(self.internal_failure("could not build the token exchange request"));
                };
                // Only a failed exchange needs to know whether a browser asked (HTML or JSON);
                // the request head is read for that here, not on every mediated request.
                let html =
                    from.session && !RequestHead::read(request, String::new(), None).is_api_like();
                self.stage = Stage::Mediate { site: i, key, html };
                Err(Action::Callout(callout))
            }
        }
    }

    /// Runs a request again once what it waited for is known (`Wake::Ready`), or answers
    /// with the failure of the request it waited for.
    pub fn on_wake(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        wake: Wake,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        match wake {
            Wake::Ready => self.rerun(settings, vm, request, now, rng),
            Wake::Fail(status) => self.upstream_failure(
                rng,
                u32::from(status),
                "the request this one waited for failed",
            ),
        }
    }

    /// The request ended (client gone) while it waited or called out: whoever waited on it
    /// must not wait forever.
    pub fn on_abandon(&mut self, vm: &mut VmState, now: u64) {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Introspect { key } => {
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Ready);
            }
            Stage::BearerKeys => {
                if let Some(f) = vm.keys_flight.take_if(|f| f.leader == self.ctx) {
                    vm.wake(f.waiters, Wake::Ready);
                }
            }
            Stage::Mediate { site, key, .. } => {
                if let Some(cache) = vm.mediated.get_mut(site) {
                    let waiters = cache.abandon(&key, self.ctx);
                    vm.wake(waiters, Wake::Ready);
                }
            }
            _ => {}
        }
    }

    fn rerun(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        self.reruns = self.reruns.saturating_add(1);
        if self.reruns > 4 {
            self.note(
                Level::Warn,
                "request did not settle after 4 callouts; refusing".into(),
            );
            return self.upstream_failure(rng, 502, "no settled answer");
        }
        self.on_request(settings, vm, request, now, rng)
    }

    /// The bearer token's identity, from the cache or by a check; `Err` is what to do instead
    /// (refuse, call out, wait). Off the hot path, so the large `Err` is not boxed.
    #[allow(clippy::result_large_err)]
    fn check_bearer(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        app: &Application,
        raw: &str,
        key: Key,
        now: u64,
    ) -> Result<Rc<TokenInfo>, Action> {
        let Some(api) = app.api.as_ref() else {
            return Err(self.bearer_refused(settings, BearerError::InvalidToken("no API access")));
        };
        if let Some((k, info)) = &self.fresh_token {
            if *k == key {
                return Ok(info.clone());
            }
        }
        match vm.tokens.lookup(&key, self.ctx, now) {
            Lookup::Valid(info) => Ok(info),
            Lookup::Invalid(e) => Err(self.bearer_refused(settings, e)),
            Lookup::Wait => Err(Action::Wait),
            Lookup::CheckIt if !bearer::well_formed(raw) => {
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Ready);
                Err(self.bearer_refused(settings, BearerError::Malformed))
            }
            Lookup::CheckIt => {
                match api.validation {
                    Validation::Jwt => {
                        let rules = JwtRules {
                            issuer: &settings.op.issuer,
                            audiences: &api.audiences,
                            algorithms: &settings.api.algorithms,
                            clock_skew_s: settings.clock_skew_s,
                            now,
                        };
                        let op = &settings.op;
                        match bearer::validate_jwt(
                            raw,
                            &vm.jwks,
                            op.jwks_max_age_s,
                            op.jwks_min_refetch_interval_s,
                            &rules,
                        ) {
                            Ok(info) => {
                                // Returned as checked: a token at the edge of its expiry (within
                                // the clock skew) is not cached, but is good for this request.
                                let info = with_headers(settings, info);
                                let waiters = vm.tokens.complete(&key, Some(Ok(info.clone())), now);
                                vm.wake(waiters, Wake::Ready);
                                Ok(Rc::new(info))
                            }
                            Err(BearerError::NeedKeys) => {
                                // Free the token's slot: whoever waits on it now waits on the keys.
                                let waiters = vm.tokens.complete(&key, None, now);
                                vm.wake(waiters, Wake::Ready);
                                Err(self.fetch_bearer_keys(settings, vm, now))
                            }
                            Err(BearerError::InvalidToken(UNKNOWN_KEY))
                                if vm.keys_flight.is_some() =>
                            {
                                // The keys are being fetched (for another token): wait for them.
                                let waiters = vm.tokens.complete(&key, None, now);
                                vm.wake(waiters, Wake::Ready);
                                Err(self.fetch_bearer_keys(settings, vm, now))
                            }
                            Err(e) => {
                                self.note(
                                    Level::Info,
                                    format!("bearer token refused: {}", describe(&e)),
                                );
                                // An unknown key is not remembered: the keys may be fetched
                                // again soon, and the same token then be good.
                                let remembered = (e != BearerError::InvalidToken(UNKNOWN_KEY))
                                    .then(|| Err(e.clone()));
                                let waiters = vm.tokens.complete(&key, remembered, now);
                                vm.wake(waiters, Wake::Ready);
                                Err(self.bearer_refused(settings, e))
                            }
                        }
                    }
                    Validation::Introspection => {
                        let endpoint = vm.endpoints.as_ref().and_then(|e| e.introspection.clone());
                        let Some(endpoint) = endpoint else {
                            let waiters = vm.tokens.complete(&key, None, now);
                            vm.wake(waiters, Wake::Fail(502));
                            return Err(not_ready(false));
                        };
                        let callout = bearer::introspection_request(
                            &settings.op.cluster,
                            &endpoint,
                            &settings.client.client_id,
                            &settings.client.client_secret,
                            raw,
                            settings.op.timeout_ms,
                        );
                        self.stage = Stage::Introspect { key };
                        Err(Action::Callout(callout))
                    }
                }
            }
        }
    }

    /// Leads or joins the one JWKS fetch for bearer tokens.
    fn fetch_bearer_keys(&mut self, settings: &Settings, vm: &mut VmState, now: u64) -> Action {
        // A fetch whose leader vanished without a word is given up after the callout timeout.
        let stale = stale_after_s(settings.op.timeout_ms);
        if let Some(f) = vm.keys_flight.as_mut() {
            if now.saturating_sub(f.since) <= stale && f.leader != self.ctx {
                f.waiters.push(self.ctx);
                return Action::Wait;
            }
        }
        let Some(endpoints) = vm.endpoints.clone() else {
            return not_ready(false);
        };
        let waiters = vm.keys_flight.take().map(|f| f.waiters).unwrap_or_default();
        vm.keys_flight = Some(KeysFlight {
            leader: self.ctx,
            since: now,
            waiters,
        });
        vm.jwks.attempted(now);
        self.stage = Stage::BearerKeys;
        Action::Callout(jwks_callout(settings, &endpoints))
    }

    fn bearer_refused(&mut self, settings: &Settings, e: BearerError) -> Action {
        Action::Respond(access::bearer_challenge(&settings.api.realm, &e))
    }

    fn internal_error(&mut self) -> LocalResponse {
        Problem {
            status: 500,
            code: "internal_error",
            message: "Unexpected state.",
            reference: None,
            retry: None,
        }
        .respond(false)
    }

    fn forbidden_page(
        &mut self,
        rng: &mut dyn Entropy,
        html: bool,
        code: &str,
        log: String,
    ) -> LocalResponse {
        let reference = random_token(rng, 6).unwrap_or_default();
        self.note(
            Level::Info,
            format!("{log}: denied (status=403 reference={reference})"),
        );
        Problem {
            status: 403,
            code,
            message: "You do not have access to this page.",
            reference: Some(&reference),
            retry: None,
        }
        .respond(html)
    }

    /// Something the gateway itself could not do (sign a token, build a request): 500, logged.
    fn internal_failure(&mut self, why: &str) -> Action {
        self.note(Level::Warn, why.to_string());
        Action::Respond(self.internal_error())
    }

    /// 502, 503 or 504 when the OP or STS failed the request.
    fn upstream_failure(&mut self, rng: &mut dyn Entropy, status: u32, log: &str) -> Action {
        let (code, message) = match status {
            504 => (
                "upstream_timeout",
                "A service the gateway needs did not answer in time.",
            ),
            503 => (
                "upstream_unavailable",
                "A service the gateway needs is unavailable.",
            ),
            _ => (
                "upstream_error",
                "A service the gateway needs could not be reached or gave no usable answer.",
            ),
        };
        self.refuse(rng, false, status, code, message, None, log.to_string())
    }

    /// Continues after a callout this flow asked for.
    pub fn on_callout(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let result = normalize(result);
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Token { txn, html } => {
                let id_token = match result {
                    CalloutResult::Response { status, body } => {
                        match oidc::parse_token_response(status, &body) {
                            Ok(t) => t,
                            Err(TokenError::Refused { status, error }) => {
                                return self.op_failure(
                                    rng,
                                    html,
                                    &txn,
                                    502,
                                    format!(
                                        "token endpoint refused the code: HTTP {status} {error}"
                                    ),
                                );
                            }
                            Err(TokenError::Malformed(why)) => {
                                return self.op_failure(
                                    rng,
                                    html,
                                    &txn,
                                    502,
                                    format!("token endpoint: {why}"),
                                );
                            }
                        }
                    }
                    other => return self.callout_failure(rng, html, &txn, "token endpoint", other),
                };
                self.check_id_token(settings, vm, txn, id_token, html, now, rng, true)
            }
            Stage::Keys {
                txn,
                id_token,
                html,
            } => {
                match result {
                    CalloutResult::Response { status: 200, body } => match parse_jwks(&body) {
                        Some(keys) => vm.jwks.replace(keys, now),
                        None => {
                            return self.op_failure(
                                rng,
                                html,
                                &txn,
                                502,
                                "JWKS is not a JWK Set".into(),
                            )
                        }
                    },
                    CalloutResult::Response { status, .. } => {
                        return self.op_failure(
                            rng,
                            html,
                            &txn,
                            502,
                            format!("JWKS answered HTTP {status}"),
                        );
                    }
                    other => return self.callout_failure(rng, html, &txn, "JWKS", other),
                }
                self.check_id_token(settings, vm, txn, id_token, html, now, rng, false)
            }
            Stage::Introspect { key } => {
                let outcome = match result {
                    CalloutResult::Response { status, body } => {
                        bearer::parse_introspection(status, &body, now)
                    }
                    CalloutResult::TimedOut => {
                        let waiters = vm.tokens.complete(&key, None, now);
                        vm.wake(waiters, Wake::Fail(504));
                        return self.upstream_failure(rng, 504, "introspection callout timed out");
                    }
                    CalloutResult::Failed => Err(None),
                };
                match outcome {
                    Ok(info) => {
                        let info = with_headers(settings, info);
                        let waiters = vm.tokens.complete(&key, Some(Ok(info.clone())), now);
                        vm.wake(waiters, Wake::Ready);
                        self.fresh_token = Some((key, Rc::new(info)));
                    }
                    Err(Some(e)) => {
                        self.note(
                            Level::Info,
                            format!("bearer token refused by introspection: {}", describe(&e)),
                        );
                        let waiters = vm.tokens.complete(&key, Some(Err(e)), now);
                        vm.wake(waiters, Wake::Ready);
                    }
                    Err(None) => {
                        let waiters = vm.tokens.complete(&key, None, now);
                        vm.wake(waiters, Wake::Fail(502));
                        return self.upstream_failure(
                            rng,
                            502,
                            "introspection endpoint failed or gave no usable answer",
                        );
                    }
                }
                self.rerun(settings, vm, request, now, rng)
            }
            Stage::Mediate { site: i, key, html } => {
                let Some(site) = settings.sites.get(i) else {
                    return Action::Respond(self.internal_error());
                };
                let parsed = match result {
                    CalloutResult::Response { status, body } => {
                        mediation::parse_exchange_response(site, status, &body, now)
                            .map_err(|e| (e.http_status(), format!("{e:?}")))
                    }
                    CalloutResult::TimedOut => Err((504, "timed out".into())),
                    CalloutResult::Failed => Err((503, "unreachable".into())),
                };
                let Some(cache) = vm.mediated.get_mut(i) else {
                    return Action::Respond(self.internal_error());
                };
                match parsed {
                    Ok(t) => {
                        let value = Rc::new(SiteToken {
                            value: header_value(site, &t.token),
                        });
                        let until = refresh_before(t.expires_at, now);
                        let waiters = cache.complete(&key, Some((value.clone(), until)), now);
                        vm.wake(waiters, Wake::Ready);
                        self.fresh_site = Some((i, key, value));
                        self.rerun(settings, vm, request, now, rng)
                    }
                    Err((status, why)) => {
                        let waiters = cache.complete(&key, None, now);
                        vm.wake(waiters, Wake::Fail(u16::try_from(status).unwrap_or(502)));
                        let (code, message) = match status {
                            504 => (
                                "token_service_timeout",
                                "The token service of this site did not answer in time.",
                            ),
                            503 => (
                                "token_service_unavailable",
                                "The token service of this site is unavailable.",
                            ),
                            _ => (
                                "token_service_error",
                                "The token service of this site refused or gave no usable answer.",
                            ),
                        };
                        self.refuse(
                            rng,
                            html,
                            status,
                            code,
                            message,
                            None,
                            format!("token exchange for site `{}` failed: {why}", site.name),
                        )
                    }
                }
            }
            Stage::BearerKeys => {
                let waiters = vm.keys_flight.take().map(|f| f.waiters).unwrap_or_default();
                match result {
                    CalloutResult::Response { status: 200, body } => match parse_jwks(&body) {
                        Some(keys) => vm.jwks.replace(keys, now),
                        None => {
                            vm.wake(waiters, Wake::Fail(502));
                            return self.upstream_failure(rng, 502, "JWKS is not a JWK Set");
                        }
                    },
                    CalloutResult::TimedOut => {
                        vm.wake(waiters, Wake::Fail(504));
                        return self.upstream_failure(rng, 504, "JWKS callout timed out");
                    }
                    _ => {
                        vm.wake(waiters, Wake::Fail(502));
                        return self.upstream_failure(rng, 502, "JWKS callout failed");
                    }
                }
                vm.wake(waiters, Wake::Ready);
                self.rerun(settings, vm, request, now, rng)
            }
            stage @ (Stage::Start | Stage::Done) => {
                self.stage = stage;
                self.note(
                    Level::Warn,
                    "callout answer arrived for a request not waiting for one".into(),
                );
                Action::Respond(
                    Problem {
                        status: 500,
                        code: "internal_error",
                        message: "Unexpected state.",
                        reference: None,
                        retry: None,
                    }
                    .respond(false),
                )
            }
        }
    }

    fn unauthenticated(
        &mut self,
        settings: &Settings,
        endpoints: Option<&OpEndpoints>,
        head: &RequestHead,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        if !head.is_navigation() {
            let mut r = Problem {
                status: 401,
                code: "login_required",
                message: "A valid session is required.",
                reference: None,
                retry: None,
            }
            .respond(false);
            r.headers.push((
                "www-authenticate".into(),
                "Bearer realm=\"envoy-wam\"".into(),
            ));
            return Action::Respond(r);
        }
        let Some(endpoints) = endpoints else {
            return not_ready(true);
        };
        let return_to = safe_return_path(&head.path).unwrap_or("/").to_string();
        let redirect_uri = settings
            .client
            .redirect_uri
            .clone()
            .unwrap_or_else(|| format!("{}{}", head.origin(), settings.callback_path));
        let Some(txn) = LoginTransaction::new(rng, return_to, redirect_uri) else {
            return self.no_randomness();
        };
        let (Some(name), Some(sealed)) = (
            LoginTransaction::cookie_name(&settings.txn_cookie_prefix, &txn.state),
            txn.seal(&settings.session.keys, now, settings.login_timeout_s),
        ) else {
            return self.no_randomness();
        };
        let set = cookie::set_cookie(
            &name,
            &sealed,
            settings.login_timeout_s,
            &txn_cookie_attrs(settings),
        );
        Action::Respond(
            LocalResponse::redirect(&oidc::authorization_url(settings, endpoints, &txn))
                .header("set-cookie", set),
        )
    }

    fn no_randomness(&mut self) -> Action {
        self.note(
            Level::Warn,
            "no randomness available; refusing to start a login".into(),
        );
        Action::Respond(
            Problem {
                status: 503,
                code: "unavailable",
                message: "Sign-in is unavailable.",
                reference: None,
                retry: None,
            }
            .respond(true),
        )
    }

    fn callback(
        &mut self,
        settings: &Settings,
        endpoints: &OpEndpoints,
        head: &RequestHead,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        self.stage = Stage::Done;
        let (mut state, mut code, mut error) = (None, None, None);
        for (k, v) in url::form_urlencoded::parse(head.query().as_bytes()) {
            match &*k {
                "state" if state.is_none() => state = Some(v.into_owned()),
                "code" if code.is_none() => code = Some(v.into_owned()),
                "error" if error.is_none() => error = Some(v.into_owned()),
                _ => {}
            }
        }
        let html = head.method == "GET" || head.method == "HEAD";
        let Some(state) = state else {
            return self.refuse(
                rng,
                html,
                400,
                "invalid_callback",
                "The sign-in answer is incomplete.",
                None,
                "callback without state".into(),
            );
        };
        let cookie_name = LoginTransaction::cookie_name(&settings.txn_cookie_prefix, &state);
        let txn = cookie_name.as_deref().and_then(|name| {
            let sealed = cookie::get(head.cookie.as_deref()?, name)?;
            LoginTransaction::open(sealed, &state, &settings.session.keys, now)
        });
        let Some(txn) = txn else {
            return self.refuse(
                rng,
                html,
                403,
                "login_transaction_invalid",
                "This sign-in was not started here, was already used, or took too long.",
                Some("/"),
                "callback state does not match a login transaction of this browser".into(),
            );
        };
        // From here the transaction is consumed, whatever happens next.
        if let Some(error) = error {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            let message = match error.as_str() {
                "access_denied" => "The identity provider did not grant access.",
                "login_required" | "interaction_required" => {
                    "The identity provider needs you to sign in again."
                }
                _ => "The identity provider could not sign you in.",
            };
            let reference = random_token(rng, 6).unwrap_or_default();
            self.note(
                Level::Info,
                format!("login failed at the OP: error={error} reference={reference}"),
            );
            let problem = Problem {
                status: 401,
                code: &error,
                message,
                reference: Some(&reference),
                retry: Some(&txn.return_to),
            };
            return Action::Respond(with_cookie(
                problem.respond(html),
                clear_txn_cookie(settings, &txn),
            ));
        }
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            let action = self.refuse(
                rng,
                html,
                400,
                "invalid_callback",
                "The sign-in answer has no code.",
                Some(&txn.return_to),
                "callback without code".into(),
            );
            return add_cookie(action, clear_txn_cookie(settings, &txn));
        };
        let callout = oidc::token_request(settings, endpoints, &txn, &code);
        self.stage = Stage::Token { txn, html };
        Action::Callout(callout)
    }

    #[allow(clippy::too_many_arguments)]
    fn check_id_token(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        txn: LoginTransaction,
        id_token: String,
        html: bool,
        now: u64,
        rng: &mut dyn Entropy,
        may_fetch_keys: bool,
    ) -> Action {
        let expected = Expected {
            issuer: &settings.op.issuer,
            client_id: &settings.client.client_id,
            nonce: &txn.nonce,
            now,
            clock_skew_s: settings.clock_skew_s,
            algorithms: &settings.id_token_algorithms,
        };
        let op = &settings.op;
        match id_token::validate(
            &id_token,
            &vm.jwks,
            op.jwks_max_age_s,
            op.jwks_min_refetch_interval_s,
            &expected,
        ) {
            Ok(token) => {
                let mut claims = Map::new();
                for name in &settings.session.claims {
                    if let Some(v) = token.claims.get(name) {
                        claims.insert(name.clone(), v.clone());
                    }
                }
                let Some(sid) = random_token(rng, 16) else {
                    return self.no_randomness();
                };
                let session = Session {
                    sid,
                    sub: token.sub,
                    auth_time: token.auth_time.unwrap_or(now),
                    expires_at: now.saturating_add(settings.session.max_lifetime_s),
                    last_activity: now,
                    claims,
                };
                let Some(value) = session.encode(&settings.session.keys) else {
                    return self.no_randomness();
                };
                self.note(
                    Level::Info,
                    format!("login: sub={} sid={}", printable(&session.sub), session.sid),
                );
                let set = session_cookie(settings, &value, session.remaining(now));
                let headers = identity::request_headers(&settings.identity_headers, Some(&session));
                let entry = SessionEntry::new(session, headers);
                vm.sessions
                    .insert(value, entry, now, settings.session.idle_timeout_s);
                Action::Respond(
                    LocalResponse::redirect(&txn.return_to)
                        .header("set-cookie", set)
                        .header("set-cookie", clear_txn_cookie(settings, &txn)),
                )
            }
            Err(IdTokenError::NeedKeys) if may_fetch_keys => {
                vm.jwks.attempted(now);
                let Some(endpoints) = vm.endpoints.clone() else {
                    return not_ready(html);
                };
                let callout = jwks_callout(settings, &endpoints);
                self.stage = Stage::Keys {
                    txn,
                    id_token,
                    html,
                };
                Action::Callout(callout)
            }
            Err(e) => {
                let e = if e == IdTokenError::NeedKeys {
                    IdTokenError::UnknownKey
                } else {
                    e
                };
                let action = self.refuse(
                    rng,
                    html,
                    403,
                    "id_token_invalid",
                    "The sign-in could not be verified.",
                    Some(&txn.return_to),
                    format!("ID token refused: {e}"),
                );
                add_cookie(action, clear_txn_cookie(settings, &txn))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        rng: &mut dyn Entropy,
        html: bool,
        status: u32,
        code: &str,
        message: &str,
        retry: Option<&str>,
        log: String,
    ) -> Action {
        let reference = random_token(rng, 6).unwrap_or_default();
        self.note(
            Level::Warn,
            format!("{log} (status={status} reference={reference})"),
        );
        Action::Respond(
            Problem {
                status,
                code,
                message,
                reference: Some(&reference),
                retry,
            }
            .respond(html),
        )
    }

    fn op_failure(
        &mut self,
        rng: &mut dyn Entropy,
        html: bool,
        txn: &LoginTransaction,
        status: u32,
        log: String,
    ) -> Action {
        self.refuse(
            rng,
            html,
            status,
            "op_error",
            "The identity provider gave an answer the gateway could not use.",
            Some(&txn.return_to),
            log,
        )
    }

    fn callout_failure(
        &mut self,
        rng: &mut dyn Entropy,
        html: bool,
        txn: &LoginTransaction,
        what: &str,
        result: CalloutResult,
    ) -> Action {
        let (status, code, message) = match result {
            CalloutResult::TimedOut => (
                504,
                "op_timeout",
                "The identity provider did not answer in time.",
            ),
            _ => (
                502,
                "op_unreachable",
                "The identity provider could not be reached.",
            ),
        };
        self.refuse(
            rng,
            html,
            status,
            code,
            message,
            Some(&txn.return_to),
            format!("{what} callout failed: {code}"),
        )
    }
}

/// The OP's endpoints are not known yet (discovery has not answered): try again shortly.
fn not_ready(html: bool) -> Action {
    let problem = Problem {
        status: 503,
        code: "op_not_ready",
        message: "Sign-in is starting up; please try again in a moment.",
        reference: None,
        retry: None,
    };
    Action::Respond(problem.respond(html).header("retry-after", "5"))
}

/// Envoy answers a callout it could not complete with a response of its own: 504 when the
/// timeout hit, 503 when no connection could be made. Any 5xx means the OP is not serving.
fn normalize(result: CalloutResult) -> CalloutResult {
    match result {
        CalloutResult::Response { status: 504, .. } => CalloutResult::TimedOut,
        CalloutResult::Response {
            status: 500..=599, ..
        } => CalloutResult::Failed,
        other => other,
    }
}

/// The request goes on with identity headers set, our cookies removed, and the session
/// cookie re-issued when its activity stamp is due.
fn forward(
    settings: &Settings,
    vm: &mut VmState,
    cookie: Option<&str>,
    entry: Rc<SessionEntry>,
    now: u64,
) -> Forward {
    let mut fwd = anonymous(settings, cookie, Some(entry.headers.clone()));
    let session = &entry.session;
    if now.saturating_sub(entry.renewed_at.get()) >= settings.session.activity_refresh_s {
        entry.renewed_at.set(now);
        let mut renewed = session.clone();
        renewed.last_activity = now;
        if let Some(value) = renewed.encode(&settings.session.keys) {
            fwd.response_cookies
                .push(session_cookie(settings, &value, renewed.remaining(now)));
            let next = SessionEntry::new(renewed, entry.headers.clone());
            vm.sessions
                .insert(value, next, now, settings.session.idle_timeout_s);
        }
    }
    fwd
}

fn logout(
    settings: &Settings,
    endpoints: Option<&OpEndpoints>,
    head: &RequestHead,
) -> LocalResponse {
    let clear = session_cookie(settings, "", 0);
    let after = settings.logout.redirect_uri.clone().map(|u| {
        if u.starts_with('/') {
            format!("{}{}", head.origin(), u)
        } else {
            u
        }
    });
    let post_logout = after
        .clone()
        .unwrap_or_else(|| format!("{}/", head.origin()));
    if let Some(url) = oidc::end_session_url(settings, endpoints, Some(&post_logout)) {
        return LocalResponse::redirect(&url).header("set-cookie", clear);
    }
    match after {
        Some(url) => LocalResponse::redirect(&url).header("set-cookie", clear),
        None => LocalResponse::new(200).header("set-cookie", clear).body(
            "text/html; charset=utf-8",
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
                 <body><h1>Signed out</h1><p>You are signed out.</p></body></html>\n",
        ),
    }
}

fn session_cookie(settings: &Settings, value: &str, max_age: u64) -> String {
    let s = &settings.session;
    let attrs = CookieAttributes {
        path: "/",
        domain: s.cookie_domain.as_deref(),
        secure: s.cookie_secure,
        same_site: "Lax",
    };
    cookie::set_cookie(&s.cookie_name, value, max_age, &attrs)
}

fn txn_cookie_attrs(settings: &Settings) -> CookieAttributes<'_> {
    CookieAttributes {
        path: &settings.callback_path,
        domain: None,
        secure: settings.session.cookie_secure,
        // The OP sends the browser back with a top-level GET, which Lax cookies accompany.
        same_site: "Lax",
    }
}

fn clear_txn_cookie(settings: &Settings, txn: &LoginTransaction) -> String {
    let name =
        LoginTransaction::cookie_name(&settings.txn_cookie_prefix, &txn.state).unwrap_or_default();
    cookie::set_cookie(&name, "", 0, &txn_cookie_attrs(settings))
}

fn with_cookie(response: LocalResponse, set_cookie: String) -> LocalResponse {
    response.header("set-cookie", set_cookie)
}

fn add_cookie(action: Action, set_cookie: String) -> Action {
    match action {
        Action::Respond(r) => Action::Respond(with_cookie(r, set_cookie)),
        other => other,
    }
}

/// A request going upstream with the gateway's own cookies removed and the identity headers of
/// `identity` (a session's or a bearer token's), or all of them removed.
fn anonymous(settings: &Settings, cookie: Option<&str>, identity: Option<HeaderOps>) -> Forward {
    let mut fwd = Forward {
        identity: identity.unwrap_or_else(|| settings.no_identity.clone()),
        request_headers: Vec::new(),
        response_cookies: Vec::new(),
    };
    if let Some(c) = cookie {
        let name = &settings.session.cookie_name;
        let prefix = &settings.txn_cookie_prefix;
        if let Some(rest) = cookie::without(c, |n| n == name || n.starts_with(prefix.as_str())) {
            fwd.request_headers.push(("cookie".into(), rest));
        }
    }
    fwd
}

fn jwks_callout(settings: &Settings, endpoints: &OpEndpoints) -> Callout {
    Callout {
        cluster: settings.op.cluster.clone(),
        method: "GET",
        authority: endpoints.jwks.authority.clone(),
        path: endpoints.jwks.path.clone(),
        headers: vec![("accept".into(), "application/json".into())],
        body: Vec::new(),
        timeout_ms: settings.op.timeout_ms,
    }
}

/// Who a mediated token is for: the session's or the bearer token's subject.
struct Subject<'a> {
    sub: &'a str,
    claims: &'a Map<String, serde_json::Value>,
    session: bool,
    /// The client's bearer token and its hash, on API requests.
    bearer: Option<(&'a str, Key)>,
}

/// The value that carries a site's token: `Bearer <token>` in `Authorization`, the raw token
/// in any other header or cookie.
fn header_value(site: &SiteAuthenticator, token: &str) -> String {
    match &site.inject {
        Inject::Header(name) if name == "authorization" => format!("Bearer {token}"),
        _ => token.to_string(),
    }
}

/// When a cached mediated token is replaced: a little before it expires (30 s, or half its
/// remaining life if that is shorter), so a site never gets one that runs out in transit.
fn refresh_before(expires_at: u64, now: u64) -> u64 {
    let left = expires_at.saturating_sub(now);
    expires_at.saturating_sub((left / 2).min(30))
}

fn site_timeout_ms(site: &SiteAuthenticator) -> u64 {
    site.token_exchange().map_or(5000, |x| x.sts.timeout_ms)
}

/// A single flight whose leader has not finished within its callout timeout (and a margin) is
/// presumed lost, and the next request takes it over.
fn stale_after_s(timeout_ms: u64) -> u64 {
    timeout_ms / 1000 + 2
}

/// A checked token with the identity headers it gives, derived once for the cache.
fn with_headers(settings: &Settings, mut info: TokenInfo) -> TokenInfo {
    info.headers = identity::claim_headers(
        &settings.identity_headers,
        info.sub.as_deref(),
        &info.claims,
    );
    info
}

fn describe(e: &BearerError) -> &'static str {
    match e {
        BearerError::Malformed => "malformed",
        BearerError::Missing => "missing",
        BearerError::InvalidToken(why) => why,
        BearerError::NeedKeys => "unknown key",
    }
}

/// The client's address for network rules and audit lines: the downstream peer, or the
/// entry of `X-Forwarded-For` that the configured number of trusted proxies vouch for.
fn client_ip(settings: &Settings, request: &dyn HeaderSource) -> Option<IpAddr> {
    if !settings.policy_needs_client_ip {
        return None; // a host call saved on every request
    }
    let hops = settings.policy.xff_trusted_hops;
    let xff = if hops > 0 {
        request.header("x-forwarded-for")
    } else {
        None
    };
    policy::client_ip(request.client_address().as_deref(), xff.as_deref(), hops)
}

/// A subject or other OP-given value, made safe for one log line.
pub(crate) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}
