//! The request state machine. The host feeds it a request head (and later callout results),
//! with the time and a source of randomness; it answers with an [`Action`]. No I/O happens
//! here, so every path is unit-tested natively.

use std::rc::Rc;

use serde_json::Map;

use crate::config::{OpEndpoints, Settings};
use crate::cookie::{self, CookieAttributes};
use crate::discovery::{self, DiscoveryState};
use crate::http::{Action, Callout, CalloutResult, Forward, LocalResponse};
use crate::id_token::{self, Expected, IdTokenError};
use crate::identity;
use crate::jwks::{parse_jwks, JwksCache};
use crate::login::{random_token, safe_return_path, Entropy, LoginTransaction};
use crate::oidc::{self, TokenError};
use crate::pages::Problem;
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
}

impl VmState {
    pub fn new(settings: &Settings) -> Self {
        Self {
            jwks: JwksCache::default(),
            sessions: SessionCache::new(SESSION_CACHE_ENTRIES),
            endpoints: settings.op.endpoints.complete().map(Rc::new),
            discovery: DiscoveryState::default(),
        }
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
}

impl Default for RequestFlow {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestFlow {
    pub fn new() -> Self {
        Self {
            stage: Stage::Start,
            log: Vec::new(),
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
        let path_only = path.split('?').next().unwrap_or("");
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
            if path_only == settings.logout_path {
                let head = RequestHead::read(request, path, cookie);
                return Action::Respond(logout(settings, vm.endpoints.as_deref(), &head));
            }
        }

        let token = cookie
            .as_deref()
            .and_then(|c| cookie::get(c, &settings.session.cookie_name));
        let entry = token.and_then(|t| {
            vm.sessions.lookup(
                t,
                &settings.session.keys,
                now,
                settings.session.idle_timeout_s,
                |s| identity::request_headers(&settings.identity_headers, Some(s)),
            )
        });
        match entry {
            Some(entry) => Action::Forward(forward(settings, vm, cookie.as_deref(), entry, now)),
            None => {
                let head = RequestHead::read(request, path, cookie);
                self.unauthenticated(settings, vm.endpoints.as_deref(), &head, now, rng)
            }
        }
    }

    /// Continues after a callout this flow asked for.
    pub fn on_callout(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
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
                let endpoint = &endpoints.jwks;
                let callout = Callout {
                    cluster: op.cluster.clone(),
                    method: "GET",
                    authority: endpoint.authority.clone(),
                    path: endpoint.path.clone(),
                    headers: vec![("accept".into(), "application/json".into())],
                    body: Vec::new(),
                    timeout_ms: op.timeout_ms,
                };
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
    let mut fwd = Forward {
        identity: Some(entry.clone()),
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

/// A subject or other OP-given value, made safe for one log line.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}
