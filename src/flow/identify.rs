//! Who is asking: a session cookie or a bearer token, and waiting for a token check.

use std::rc::Rc;

use serde_json::{Map, Value};

use super::mediate::Subject;
use super::metered::Counted;
use super::state::{stale_after_s, KeysFlight, VmState};
use super::validate::{self, Validated};
use super::{failure_text, not_ready, Level, RequestFlow, Stage};
use crate::access;
use crate::bearer::{self, BearerError, JwtRules, Lookup, TokenInfo, UNKNOWN_KEY, UNUSABLE_CLAIM};
use crate::cache::Key;
use crate::config::{OpEndpoints, Settings};
use crate::http::{Action, Callout, CalloutResult, Wake};
use crate::identity;
use crate::jwks::parse_jwks;
use crate::jws::key_miss;
use crate::login::Entropy;
use crate::metrics::Counter;
use crate::policy::{AppApi, AppType, Application, Identity, Resource, Validation};
use crate::request::HeaderSource;
use crate::revocation::RevocationList;
use crate::session::chunks;
use crate::session::{Dead, SessionEntry};

/// Who a request is from, as far as the gateway could tell.
#[derive(Default)]
pub(crate) struct Who<'r> {
    pub session: Option<Rc<SessionEntry>>,
    pub token: Option<Rc<TokenInfo>>,
    /// The client's bearer token (API applications) and its cache key once checked.
    pub bearer: Option<&'r str>,
    pub token_key: Option<Key>,
    /// Whether the request is judged as an API call (bearer token), not a browser's.
    pub use_bearer: bool,
    /// The cookie value of the session validated for this request, for the browser.
    pub successor: Option<String>,
}

impl Who<'_> {
    pub fn identity(&self) -> Option<Identity<'_>> {
        match (&self.session, &self.token) {
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
        }
    }

    /// Whom a mediated token is for.
    pub fn subject(&self) -> Option<Subject<'_>> {
        let (sub, claims): (&str, &Map<String, Value>) = match (&self.session, &self.token) {
            (Some(e), _) => (&e.session.sub, &e.session.claims),
            (None, Some(t)) => (t.sub.as_deref().unwrap_or_default(), &t.claims),
            (None, None) => return None,
        };
        Some(Subject {
            sub,
            claims,
            session: self.session.is_some(),
            bearer: self.bearer.zip(self.token_key),
        })
    }
}

/// Whether a logout ended this session. Looked up once per session and change of the list.
fn is_revoked(list: &RevocationList, entry: &SessionEntry) -> bool {
    let generation = list.generation();
    if entry.not_revoked_at.get() == Some(generation) {
        return false;
    }
    let s = &entry.session;
    if list.is_revoked(&s.sid, s.op.op_sid.as_deref(), &s.sub, s.created_at) {
        return true;
    }
    entry.not_revoked_at.set(Some(generation));
    false
}

impl RequestFlow {
    /// The request's identity: a bearer token for API requests, a session cookie for the
    /// others, none on unprotected resources (nothing about the caller is looked at there).
    /// `Err` is what to do instead (refuse, call out, wait); off the hot path, so not boxed.
    #[allow(clippy::result_large_err)]
    pub(super) fn identify<'r>(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &'r dyn HeaderSource,
        app: &Application,
        resource: &Resource,
        now: u64,
    ) -> Result<Who<'r>, Action> {
        let authorization = match app.app_type {
            AppType::Web => None,
            // Two Authorization headers: the gateway and the backend could read different ones.
            AppType::Api | AppType::Both => match request.single("authorization") {
                Ok(a) => a,
                Err(()) => return Err(self.bearer_refused(settings, vm, BearerError::Malformed)),
            },
        };
        // Its syntax is checked when the token is first seen (`check_bearer`), not on every hit.
        let bearer = bearer::credential(authorization);
        let use_bearer = match app.app_type {
            AppType::Web => false,
            AppType::Api => true,
            AppType::Both => bearer.is_some(),
        };
        let mut who = Who {
            bearer,
            use_bearer,
            ..Who::default()
        };
        if resource.unprotected {
            return Ok(who);
        }
        if use_bearer {
            if let Some(raw) = bearer {
                // A result holds only for the checks that produced it: the key covers the token
                // and how this application validates it (method and accepted audiences).
                let profile = app
                    .api
                    .as_ref()
                    .map(|a| (a.validation == Validation::Jwt, &a.audiences));
                let key = vm.token_keys.key_of(&(raw, profile));
                who.token_key = Some(key);
                let token = self.check_bearer(settings, vm, app, raw, key, now)?;
                if self.first(Counted::BearerVerdict) {
                    vm.metrics.count(Counter::BearerValid);
                }
                who.token = Some(token);
            }
            return Ok(who);
        }
        self.identify_session(settings, vm, request, &mut who, now)?;
        Ok(who)
    }

    /// The session of the request's cookie (none when the cookie cannot be opened, the session
    /// is over or a logout revoked it), validated at the OP when that is due, which may replace
    /// or end it.
    #[allow(clippy::result_large_err)]
    fn identify_session(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        who: &mut Who<'_>,
        now: u64,
    ) -> Result<(), Action> {
        let map = &settings.identity_headers;
        let value = chunks::read_value(request, &settings.session.cookie_name);
        let checked = value.map(|t| {
            vm.sessions.check(
                &t,
                &settings.session.keys,
                now,
                settings.session.idle_timeout_s,
                |s| identity::request_headers(map, s).ok(),
            )
        });
        let revoked = matches!(&checked, Some(Ok(e)) if is_revoked(&vm.revoked, e));
        if self.first(Counted::Session) {
            vm.metrics.count(match &checked {
                None => Counter::SessionNone,
                Some(Ok(_)) if revoked => Counter::SessionRevoked,
                Some(Ok(_)) => Counter::SessionValid,
                Some(Err(Dead::Invalid)) => Counter::SessionInvalid,
                Some(Err(Dead::Expired)) => Counter::SessionExpired,
                Some(Err(Dead::Idle)) => Counter::SessionIdle,
            });
        }
        who.session = checked.and_then(Result::ok).filter(|_| !revoked);
        if let Some(entry) = who.session.clone() {
            if validate::is_due(settings, &entry.session, now) {
                match self.validate(settings, vm, &entry, now)? {
                    Validated::Keep => {}
                    Validated::Successor(value, next) => {
                        who.session = Some(next);
                        who.successor = Some(value);
                    }
                    Validated::Ended => who.session = None,
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn introspection_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        key: Key,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let outcome = match result {
            CalloutResult::Response { status, body } => {
                bearer::parse_introspection(status, &body, now)
                    .and_then(|info| with_headers(settings, info).map_err(Some))
            }
            failed @ CalloutResult::TimedOut => {
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Fail(504));
                let log = failure_text(&failed, self.folded_status);
                return self.upstream_failure(rng, 504, &format!("introspection endpoint {log}"));
            }
            CalloutResult::Failed => Err(None),
        };
        match outcome {
            Ok(info) => {
                let waiters = vm.tokens.complete(&key, Some(Ok(info.clone())), now);
                vm.wake(waiters, Wake::Ready);
                self.fresh_token = Some((key, Ok(Rc::new(info))));
            }
            Err(Some(e)) => {
                let line = format!("bearer token refused by introspection: {}", describe(&e));
                self.note_refused(vm, now, Level::Info, line);
                let waiters = vm.tokens.complete(&key, Some(Err(e.clone())), now);
                vm.wake(waiters, Wake::Ready);
                self.fresh_token = Some((key, Err(e)));
            }
            Err(None) => {
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Fail(502));
                let log = match self.folded_status {
                    Some(_) => failure_text(&CalloutResult::Failed, self.folded_status),
                    None => "could not be reached or gave no usable answer".into(),
                };
                return self.upstream_failure(rng, 502, &format!("introspection endpoint {log}"));
            }
        }
        self.rerun(settings, vm, request, now, rng)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn bearer_keys_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let waiters = vm.keys_flight.take().map(|f| f.waiters).unwrap_or_default();
        match result {
            CalloutResult::Response { status: 200, body } => match parse_jwks(&body) {
                Some(keys) => {
                    vm.metrics.count(Counter::JwksOk);
                    vm.jwks.replace(keys, now);
                    self.fetched_keys = true;
                }
                None => {
                    vm.metrics.count(Counter::JwksFailed);
                    vm.wake(waiters, Wake::Fail(502));
                    return self.upstream_failure(rng, 502, "JWKS is not a JWK Set");
                }
            },
            failed => {
                vm.metrics.count(Counter::JwksFailed);
                let status: u16 = if failed == CalloutResult::TimedOut {
                    504
                } else {
                    502
                };
                vm.wake(waiters, Wake::Fail(status));
                let log = format!("JWKS {}", failure_text(&failed, self.folded_status));
                return self.upstream_failure(rng, u32::from(status), &log);
            }
        }
        vm.wake(waiters, Wake::Ready);
        self.rerun(settings, vm, request, now, rng)
    }

    #[allow(clippy::result_large_err)]
    pub(super) fn check_bearer(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        app: &Application,
        raw: &str,
        key: Key,
        now: u64,
    ) -> Result<Rc<TokenInfo>, Action> {
        let Some(api) = app.api.as_ref() else {
            let e = BearerError::InvalidToken("no API access");
            return Err(self.bearer_refused(settings, vm, e));
        };
        match &self.fresh_token {
            Some((k, Ok(info))) if *k == key => return Ok(info.clone()),
            Some((k, Err(e))) if *k == key => {
                let e = e.clone();
                return Err(self.bearer_refused(settings, vm, e));
            }
            _ => {}
        }
        let found = vm.tokens.lookup(&key, self.ctx, now);
        if self.first(Counted::BearerLookup) {
            vm.metrics.count(match found {
                Lookup::Valid(_) | Lookup::Invalid(_) => Counter::BearerHit,
                Lookup::Wait | Lookup::CheckIt => Counter::BearerMiss,
            });
        }
        match found {
            Lookup::Valid(info) => Ok(info),
            Lookup::Invalid(e) => Err(self.bearer_refused(settings, vm, e)),
            Lookup::Wait => Err(Action::Wait),
            Lookup::CheckIt if !bearer::well_formed(raw) => {
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Ready);
                Err(self.bearer_refused(settings, vm, BearerError::Malformed))
            }
            Lookup::CheckIt => match api.validation {
                Validation::Jwt => self.check_jwt(settings, vm, api, raw, key, now),
                Validation::Introspection => {
                    let endpoint = vm.endpoints.as_ref().and_then(|e| e.introspection.clone());
                    let Some(endpoint) = endpoint else {
                        let waiters = vm.tokens.complete(&key, None, now);
                        vm.wake(waiters, Wake::Fail(502));
                        return Err(not_ready(vm, false));
                    };
                    vm.metrics.count(Counter::Introspections);
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
            },
        }
    }

    /// Checks a JWT bearer token against the OP's keys, fetching them when they are missing.
    #[allow(clippy::result_large_err)]
    fn check_jwt(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        api: &AppApi,
        raw: &str,
        key: Key,
        now: u64,
    ) -> Result<Rc<TokenInfo>, Action> {
        let rules = JwtRules {
            issuer: &settings.op.issuer,
            audiences: &api.audiences,
            algorithms: &settings.api.algorithms,
            clock_skew_s: settings.clock_skew_s,
            now,
        };
        let op = &settings.op;
        let checked = bearer::validate_jwt(
            raw,
            &vm.jwks,
            op.jwks_max_age_s,
            op.jwks_min_refetch_interval_s,
            &rules,
        )
        .and_then(|info| with_headers(settings, info));
        match checked {
            Ok(info) => {
                // Returned as checked: a token at the edge of its expiry (within the clock
                // skew) is not cached, but is good for this request.
                let waiters = vm.tokens.complete(&key, Some(Ok(info.clone())), now);
                vm.wake(waiters, Wake::Ready);
                Ok(Rc::new(info))
            }
            // Once per request: a key the OP still lacks after this request's fetch is unknown.
            Err(BearerError::NeedKeys) if !self.fetched_keys => {
                // Free the token's slot: whoever waits on it now waits on the keys.
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Ready);
                Err(self.fetch_bearer_keys(settings, vm, now))
            }
            Err(BearerError::InvalidToken(UNKNOWN_KEY)) if vm.keys_flight.is_some() => {
                // The keys are being fetched (for another token): wait for them.
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Ready);
                Err(self.fetch_bearer_keys(settings, vm, now))
            }
            Err(BearerError::NeedKeys) => Err(self.jwt_refused(
                settings,
                vm,
                raw,
                key,
                BearerError::InvalidToken(UNKNOWN_KEY),
                now,
            )),
            Err(e) => Err(self.jwt_refused(settings, vm, raw, key, e, now)),
        }
    }

    fn jwt_refused(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        raw: &str,
        key: Key,
        e: BearerError,
        now: u64,
    ) -> Action {
        let op = &settings.op;
        let why = match e {
            BearerError::InvalidToken(UNKNOWN_KEY) => {
                let miss = key_miss(
                    raw,
                    &vm.jwks,
                    now,
                    op.jwks_max_age_s,
                    op.jwks_min_refetch_interval_s,
                    self.fetched_keys,
                );
                format!("{UNKNOWN_KEY} ({miss})")
            }
            ref e => describe(e).to_string(),
        };
        self.note_refused(vm, now, Level::Info, format!("bearer token refused: {why}"));
        // An unknown key is not remembered: the keys may be fetched again soon, and the same
        // token then be good.
        let remembered = (e != BearerError::InvalidToken(UNKNOWN_KEY)).then(|| Err(e.clone()));
        let waiters = vm.tokens.complete(&key, remembered, now);
        vm.wake(waiters, Wake::Ready);
        self.bearer_refused(settings, vm, e)
    }

    /// Leads or joins the one JWKS fetch for bearer tokens.
    pub(super) fn fetch_bearer_keys(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        now: u64,
    ) -> Action {
        // A fetch whose leader vanished without a word is given up after the callout timeout.
        let stale = stale_after_s(settings.op.timeout_ms);
        if let Some(f) = vm.keys_flight.as_mut() {
            if now.saturating_sub(f.since) <= stale && f.leader != self.ctx {
                f.waiters.push(self.ctx);
                return Action::Wait;
            }
        }
        let Some(endpoints) = vm.endpoints.clone() else {
            return not_ready(vm, false);
        };
        let waiters = vm.keys_flight.take().map(|f| f.waiters).unwrap_or_default();
        vm.keys_flight = Some(KeysFlight {
            leader: self.ctx,
            since: now,
            waiters,
        });
        vm.jwks.attempted(now, settings.op.jwks_max_age_s);
        self.stage = Stage::BearerKeys;
        Action::Callout(jwks_callout(settings, &endpoints))
    }

    /// A request refused for its bearer token (counted once, by why).
    pub(super) fn bearer_refused(
        &mut self,
        settings: &Settings,
        vm: &VmState,
        e: BearerError,
    ) -> Action {
        if self.first(Counted::BearerVerdict) {
            vm.metrics.bearer_refused(&e);
        }
        Action::Respond(access::bearer_challenge(&settings.api.realm, &e))
    }
}

pub(super) fn jwks_callout(settings: &Settings, endpoints: &OpEndpoints) -> Callout {
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

/// A checked token with the identity headers it gives, derived once for the cache.
/// A token whose claim cannot be a header value is refused: it never goes upstream without it.
fn with_headers(settings: &Settings, mut info: TokenInfo) -> Result<TokenInfo, BearerError> {
    info.headers = identity::claim_headers(
        &settings.identity_headers,
        info.sub.as_deref(),
        &info.claims,
    )
    .map_err(|_| BearerError::InvalidToken(UNUSABLE_CLAIM))?;
    Ok(info)
}

fn describe(e: &BearerError) -> &'static str {
    match e {
        BearerError::Malformed => "malformed",
        BearerError::Missing => "missing",
        BearerError::InvalidToken(why) => why,
        BearerError::NeedKeys => "unknown key",
    }
}
