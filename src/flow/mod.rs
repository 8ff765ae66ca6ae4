//! The request state machine. The host feeds it a request head (and later callout results),
//! with the time and a source of randomness; it answers with an [`Action`]. No I/O happens
//! here, so every path is unit-tested natively.

mod access_log;
mod answers;
mod authorize;
mod bearer_check;
mod endpoints;
mod forward;
mod head;
pub mod health;
mod hold;
mod identify;
mod login;
mod mediate;
mod metered;
mod op_tokens;
mod preserve;
mod route;
mod single_logout;
mod state;
mod validate;
mod validate_userinfo;

use crate::cache::Key;
use crate::config::Settings;
use crate::http::{Action, Body, CalloutResult, LocalResponse, Wake};
use crate::login::{Entropy, LoginTransaction};
use crate::oidc::TokenSet;
pub use crate::request::{HeaderList, HeaderSource};
use crate::session::chunks::Carried;
pub use access_log::AccessFields;
use head::RequestHead;
use route::Target;
pub use state::{KeysFlight, SiteToken, VmState, MAX_CALLOUT_BODY, SESSION_CACHE_ENTRIES};
pub use validate::Validations;

use crate::bearer::{BearerError, TokenInfo};
pub(crate) use answers::not_ready;
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    /// The gateway cannot work as configured (e.g. the OP names another issuer).
    Error,
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
        provider: usize,
    },
    /// Waiting for OP `op`'s JWKS to check a bearer token (this request leads the fetch).
    BearerKeys {
        op: usize,
    },
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
    /// Waiting for the OP to validate this session (this request leads the validation).
    Validate {
        entry: Rc<crate::session::SessionEntry>,
    },
    /// Waiting for the JWKS to check the ID token of the OP's refresh answer `answer` (this
    /// request still leads the validation).
    ValidateKeys {
        entry: Rc<crate::session::SessionEntry>,
        answer: CalloutResult,
    },
    /// The answer to a request that ended sessions (a logout, a session the OP refused at
    /// validation), held until the other workers have taken in its revocation.
    AnswerHeld {
        response: LocalResponse,
    },
    /// Waiting for UserInfo after the refresh of a validation (`session.userinfo`), with the
    /// refreshed session.
    ValidateUserinfo {
        entry: Rc<crate::session::SessionEntry>,
        refreshed: Box<crate::session::Session>,
    },
    /// Waiting for the OP to revoke the refresh token of a session logged out, with the
    /// browser's answer.
    RevokeAtOp {
        response: LocalResponse,
    },
    /// Waiting for UserInfo at sign-in, with the checked ID token.
    LoginUserinfo {
        txn: LoginTransaction,
        token: crate::id_token::IdToken,
        id_token: Option<String>,
        html: bool,
    },
    /// Waiting for the JWKS, with the back-channel logout token to check once it arrives.
    LogoutKeys {
        token: String,
    },
    /// Waiting for the request body, to hand to `for_body`.
    Body(BodyFor),
    Done,
}

/// What a request body is read for.
#[derive(Debug)]
enum BodyFor {
    /// A back-channel logout request (its `logout_token`).
    Backchannel,
    /// A form post that needs a sign-in, to keep through it.
    LoginPost,
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
    /// (already at its expiry, a zero TTL, or a cache full of checks under way). Refusals too:
    /// with `api.negative_ttl_s: 0` the rerun would otherwise check the token again, and again.
    fresh_token: Option<(Key, Result<Rc<TokenInfo>, BearerError>)>,
    fresh_site: Option<(usize, Key, Rc<SiteToken>)>,
    /// This request fetched the JWKS for its bearer token: a key still missing is not
    /// fetched for again.
    fetched_keys: bool,
    /// The 5xx status of the last callout answer, which [`normalize`] folds into `Failed` or
    /// `TimedOut`: the client's answer follows the fold, the log line names the status.
    folded_status: Option<u16>,
    /// The policy already decided (and took rate-limit tokens, wrote the audit line) in an
    /// earlier run of this request.
    decided: bool,
    /// What this request was already counted for (`metered::Counted`): a rerun after a
    /// callout must not count its session, token or decision twice.
    counted: u8,
    /// Which session cookie names the request carried (a sign-in clears stale chunks).
    carried: Carried,
    /// The token endpoint's answer at sign-in, until the session opens with it.
    login_tokens: Option<TokenSet>,
    /// At the callback: the form post kept through this sign-in, and its cookies to clear.
    post: preserve::PostAtCallback,
    /// The web session of the request's application or endpoint (index in
    /// `Settings::web_sessions`): whose cookie, OP and client the request deals with.
    ws: usize,
    /// For Envoy's access log, with `access_log_fields` (see `access_log.rs`).
    access: Option<AccessFields>,
    /// This request ended its session (the OP refused it at validation), or found it ended
    /// a moment ago: its refusal is held like a logout's answer (see `hold.rs`).
    ended_session: bool,
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
            fetched_keys: false,
            folded_status: None,
            decided: false,
            counted: 0,
            carried: Carried::default(),
            login_tokens: None,
            post: preserve::PostAtCallback::default(),
            ws: 0,
            access: None,
            ended_session: false,
        }
    }

    /// Whether the request waits with its answer ready (see [`hold_answer`](Self::hold_answer)):
    /// a tick releases it, not another request's callout.
    pub fn holds_answer(&self) -> bool {
        matches!(self.stage, Stage::AnswerHeld { .. })
    }

    /// Answers once every other worker of this Envoy has ticked since the revocation list
    /// as it is now was published (see `hold.rs`: 200 to 300 ms when the request published it
    /// itself): whoever sees a session end finds a copy of the cookie refused on every worker,
    /// not only on this one. Too many held already: answers at once.
    pub(super) fn hold_answer(&mut self, vm: &mut VmState, response: LocalResponse) -> Action {
        self.hold_as(vm, response, false)
    }

    /// [`hold_answer`](Self::hold_answer) for a request anyone can make (a front-channel
    /// logout): such holds have a share of their own, so that they cannot leave real session
    /// ends without room.
    pub(super) fn hold_anonymous_answer(
        &mut self,
        vm: &mut VmState,
        response: LocalResponse,
    ) -> Action {
        self.hold_as(vm, response, true)
    }

    fn hold_as(&mut self, vm: &mut VmState, response: LocalResponse, anonymous: bool) -> Action {
        if !vm.hold(self.ctx, anonymous) {
            return Action::Respond(response);
        }
        self.stage = Stage::AnswerHeld { response };
        Action::Wait
    }

    /// The request's web session.
    fn web<'s>(&self, settings: &'s Settings) -> &'s crate::config::WebSession {
        settings.web(self.ws)
    }

    /// The request's web session with its OP.
    fn rp<'s>(&self, settings: &'s Settings) -> crate::config::RelyingParty<'s> {
        settings.rp(self.ws)
    }

    /// Log lines produced so far (the host writes them out).
    pub fn take_log(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.log)
    }

    fn note(&mut self, level: Level, message: String) {
        self.log.push(LogLine { level, message });
    }

    /// A line about a refused token, within the VM's budget for them.
    fn note_refused(&mut self, vm: &mut VmState, now: u64, level: Level, message: String) {
        let (write, report) = vm.refused_lines.admit(now);
        self.log.extend(report);
        if write {
            self.note(level, message);
        }
    }

    /// Decides what to do with a new request (or one run again): the stages in order, each in
    /// its own file. A refusal because its session just ended is held (see `hold.rs`).
    pub fn on_request(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let action = self.decide(settings, vm, request, now, rng);
        self.held_if_ended(vm, action)
    }

    /// `action`, or, when it refuses a session that just ended, that answer held.
    fn held_if_ended(&mut self, vm: &mut VmState, action: Action) -> Action {
        match action {
            Action::Respond(response) if self.ended_session => self.hold_answer(vm, response),
            action => action,
        }
    }

    fn decide(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        self.stage = Stage::Done;
        let route = match route::route(settings, request) {
            Ok(route) => route,
            Err(refused) => {
                self.access_target(settings, None, None);
                self.access_decision(settings, "refused");
                return self.route_refused(request, refused, rng);
            }
        };
        self.ws = route.target.web_session();
        let (app, resource) = match route.target {
            Target::Endpoint(endpoint) => {
                let head = RequestHead::read(request, &route);
                return self.endpoint(settings, vm, &head, endpoint, now, rng);
            }
            Target::Unprotected(app) => {
                return self.unprotected(settings, vm, request, &route, app, now, rng)
            }
            Target::App { app, resource } => (app, resource),
        };
        self.access_target(settings, Some(app), Some(resource));
        if resource.audit && self.audit_started_us.is_none() {
            self.audit_started_us = Some(request.now_us());
        }
        let who = match self.identify(settings, vm, request, app, resource, now) {
            Ok(who) => who,
            Err(action) => {
                if let Action::Respond(r) = &action {
                    let failed = r.status >= 500;
                    let name = if failed { "error" } else { "invalid_identity" };
                    self.access_decision(settings, name);
                }
                return action;
            }
        };
        self.access_subject(settings, &who);
        if let Some(refusal) =
            self.authorize(settings, vm, request, &route, app, resource, &who, now, rng)
        {
            return refusal;
        }
        let site = settings.site_for(app);
        let mediated = match (site, who.subject(self.ws)) {
            (Some((i, site)), Some(subject)) => {
                match self.mediate(settings, vm, request, i, site, &subject, now, rng) {
                    Ok(token) => Some(token),
                    Err(action) => return action,
                }
            }
            _ => None,
        };
        Action::Forward(forward::forward(
            settings,
            self.ws,
            vm,
            request,
            &route,
            app.api.as_ref().is_some_and(|a| a.forward_token),
            &who,
            site.map(|(_, s)| s),
            mediated.as_deref(),
            now,
            rng,
        ))
    }

    /// A global unprotected path: nothing is vouched for, but the application's backend (a
    /// mediated site) must still get nothing a client could have made up.
    #[allow(clippy::too_many_arguments)]
    fn unprotected(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        route: &route::Route<'_, '_>,
        app: Option<&crate::policy::Application>,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        self.access_target(settings, app, None);
        self.access_decision(settings, "unprotected");
        let site = app.and_then(|app| settings.site_for(app));
        let who = identify::Who::default();
        Action::Forward(forward::forward(
            settings,
            self.ws,
            vm,
            request,
            route,
            false,
            &who,
            site.map(|(_, s)| s),
            None,
            now,
            rng,
        ))
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
        if let Stage::AnswerHeld { response } = std::mem::replace(&mut self.stage, Stage::Done) {
            return Action::Respond(response);
        }
        match wake {
            Wake::Ready => self.rerun(settings, vm, request, now, rng),
            Wake::Fail(status) => self.upstream_failure(
                rng,
                u32::from(status),
                "the request this one waited for failed",
            ),
        }
    }

    /// As [`Self::on_abandon`], for hosts that can give the settings and randomness: a
    /// validation the OP already answered is completed rather than dropped (the OP has rotated
    /// the refresh token; the old one would end the session at the next validation).
    pub fn on_abandon_in(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        now: u64,
        rng: &mut dyn Entropy,
    ) {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::ValidateKeys { entry, answer } => {
                self.validation_keys_answered(
                    settings,
                    vm,
                    entry.clone(),
                    answer,
                    CalloutResult::Failed,
                    now,
                    rng,
                );
                // Asking UserInfo next is moot now: the refreshed session stands.
                if let Stage::ValidateUserinfo { entry, refreshed } =
                    std::mem::replace(&mut self.stage, Stage::Done)
                {
                    self.finish_without_userinfo(settings, vm, entry, refreshed, now, rng);
                }
            }
            Stage::ValidateUserinfo { entry, refreshed } => {
                self.finish_without_userinfo(settings, vm, entry, refreshed, now, rng);
            }
            stage => {
                self.stage = stage;
                self.on_abandon(vm, now);
            }
        }
    }

    /// The request ended (client gone) while it waited or called out: whoever waited on it
    /// must not wait forever.
    pub fn on_abandon(&mut self, vm: &mut VmState, now: u64) {
        match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Introspect { key, .. } => {
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Ready);
            }
            Stage::BearerKeys { op } => {
                if let Some(f) = vm.op(op).keys_flight.take_if(|f| f.leader == self.ctx) {
                    vm.wake(f.waiters, Wake::Ready);
                }
            }
            Stage::Validate { entry }
            | Stage::ValidateKeys { entry, .. }
            | Stage::ValidateUserinfo { entry, .. } => Self::validation_abandoned(vm, &entry),
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

    /// Continues with the request body this flow asked for (`Action::ReadBody`).
    pub fn on_body(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        body: Body,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let action = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Body(BodyFor::Backchannel) => {
                self.backchannel_body(settings, vm, request, body, now, rng)
            }
            Stage::Body(BodyFor::LoginPost) => {
                self.login_post_body(settings, vm, request, body, now, rng)
            }
            stage => {
                self.stage = stage;
                self.note(
                    Level::Warn,
                    "request body arrived for a request not waiting for one".into(),
                );
                Action::Respond(self.internal_error())
            }
        };
        self.held_if_ended(vm, action)
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
        self.folded_status = folded_status(&result);
        let result = normalize(result);
        let action = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Token { txn, html } => {
                self.token_answered(settings, vm, txn, html, result, now, rng)
            }
            Stage::Keys {
                txn,
                id_token,
                html,
            } => self.login_keys_answered(settings, vm, txn, id_token, html, result, now, rng),
            Stage::Introspect { key, provider } => {
                self.introspection_answered(settings, vm, request, key, provider, result, now, rng)
            }
            Stage::Mediate { site, key, html } => {
                self.exchange_answered(settings, vm, request, site, key, html, result, now, rng)
            }
            Stage::BearerKeys { op } => {
                self.bearer_keys_answered(settings, vm, request, op, result, now, rng)
            }
            Stage::RevokeAtOp { response } => self.revoked_at_op(vm, response, result),
            Stage::Validate { entry } => {
                match self.validation_answered(settings, vm, entry, result, now, rng) {
                    Some(fetch_keys) => fetch_keys,
                    None => self.rerun(settings, vm, request, now, rng),
                }
            }
            Stage::ValidateKeys { entry, answer } => {
                match self.validation_keys_answered(settings, vm, entry, answer, result, now, rng) {
                    Some(userinfo) => userinfo,
                    None => self.rerun(settings, vm, request, now, rng),
                }
            }
            Stage::ValidateUserinfo { entry, refreshed } => {
                self.validation_userinfo_answered(settings, vm, entry, refreshed, result, now, rng);
                self.rerun(settings, vm, request, now, rng)
            }
            Stage::LoginUserinfo {
                txn,
                token,
                id_token,
                html,
            } => self.login_userinfo_answered(
                settings, vm, txn, token, id_token, html, result, now, rng,
            ),
            Stage::LogoutKeys { token } => {
                self.logout_keys_answered(settings, vm, token, result, now)
            }
            stage @ (Stage::Start | Stage::Done | Stage::Body(_) | Stage::AnswerHeld { .. }) => {
                self.stage = stage;
                self.note(
                    Level::Warn,
                    "callout answer arrived for a request not waiting for one".into(),
                );
                Action::Respond(self.internal_error())
            }
        };
        // A sign-in's answer, whatever it is, ends its kept form post.
        let action = self.with_post_cleared(action);
        self.held_if_ended(vm, action)
    }
}

/// Envoy answers a callout it could not complete with a response of its own: 504 when the
/// timeout hit, 503 when no connection could be made. Any 5xx means the OP is not serving.
pub(super) fn normalize(result: CalloutResult) -> CalloutResult {
    match result {
        CalloutResult::Response { status: 504, .. } => CalloutResult::TimedOut,
        CalloutResult::Response {
            status: 500..=599, ..
        } => CalloutResult::Failed,
        other => other,
    }
}

/// The 5xx status [`normalize`] would fold away.
pub(super) fn folded_status(result: &CalloutResult) -> Option<u16> {
    match result {
        CalloutResult::Response { status, .. } if (500..=599).contains(status) => Some(*status),
        _ => None,
    }
}

/// How a callout that gave no usable answer ended, for the log: an OP that answers 500 is
/// not an OP that cannot be reached, and the operator looks in different places for each.
pub(super) fn failure_text(result: &CalloutResult, folded: Option<u16>) -> String {
    match (folded, result) {
        (Some(503), _) => {
            "answered HTTP 503 (unavailable, or Envoy found no healthy host to connect to)".into()
        }
        (Some(504), _) => "answered HTTP 504 (a timeout, at Envoy or behind the service)".into(),
        (Some(status), _) | (None, &CalloutResult::Response { status, .. }) => {
            format!("answered HTTP {status}")
        }
        (None, CalloutResult::TimedOut) => "timed out".into(),
        (None, CalloutResult::Failed) => "could not be reached".into(),
    }
}

pub(crate) use crate::http::printable;
