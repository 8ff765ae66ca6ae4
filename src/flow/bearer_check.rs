//! Checking a bearer token the first time it is seen: matched to one of the application's
//! token providers by its `iss` (before any signature is looked at), then verified with that
//! provider's JWKS or asked at its introspection endpoint. The result is cached under a key that
//! covers the token, the providers it was checked against and the web session whose identity
//! headers it gives.

use std::rc::Rc;

use super::metered::Counted;
use super::state::{stale_after_s, KeysFlight, VmState};
use super::{failure_text, not_ready, Level, RequestFlow, Stage};
use crate::access;
use crate::bearer::{
    self, BearerError, JwtRules, Lookup, TokenInfo, UNKNOWN_ISSUER, UNKNOWN_KEY, UNUSABLE_CLAIM,
};
use crate::cache::Key;
use crate::config::{Settings, TokenProvider};
use crate::http::{Action, CalloutResult, Wake};
use crate::jwks::parse_jwks;
use crate::jws::key_miss;
use crate::login::Entropy;
use crate::metrics::Counter;
use crate::policy::{Application, Validation};
use crate::request::HeaderSource;

impl RequestFlow {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn introspection_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        key: Key,
        provider: usize,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let outcome = match result {
            CalloutResult::Response { status, body } => {
                bearer::parse_introspection(status, &body, now)
                    .and_then(|info| with_headers(settings, self.ws, provider, info).map_err(Some))
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

    /// The JWKS of OP `op` arrived (or did not) for the bearer tokens waiting on it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bearer_keys_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        op: usize,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let runtime = vm.op(op);
        let waiters = runtime
            .keys_flight
            .take()
            .map(|f| f.waiters)
            .unwrap_or_default();
        match result {
            CalloutResult::Response { status: 200, body } => match parse_jwks(&body) {
                Some(keys) => {
                    vm.keys_fetched(op, keys, now);
                    self.fetched_keys = true;
                    vm.metrics.count(Counter::JwksOk);
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
        // Missed here: another worker may have checked it (the native build's shared tier).
        let found = match found {
            Lookup::CheckIt => match vm.tokens.verdict_in_tier(&key, now) {
                Some((found, waiters)) => {
                    vm.wake(waiters, Wake::Ready);
                    found
                }
                None => Lookup::CheckIt,
            },
            found => found,
        };
        match found {
            Lookup::Valid(info) => Ok(info),
            Lookup::Invalid(e) => Err(self.bearer_refused(settings, vm, e)),
            Lookup::Wait => Err(Action::Wait),
            Lookup::CheckIt if !bearer::well_formed(raw) => {
                let waiters = vm.tokens.complete(&key, None, now);
                vm.wake(waiters, Wake::Ready);
                Err(self.bearer_refused(settings, vm, BearerError::Malformed))
            }
            Lookup::CheckIt => {
                let Some((p, provider)) = provider_for(settings, &api.providers, raw) else {
                    let e = BearerError::InvalidToken(UNKNOWN_ISSUER);
                    self.note_refused(
                        vm,
                        now,
                        Level::Info,
                        format!("bearer token refused: {UNKNOWN_ISSUER}"),
                    );
                    let waiters = vm.tokens.complete(&key, Some(Err(e.clone())), now);
                    vm.wake(waiters, Wake::Ready);
                    return Err(self.bearer_refused(settings, vm, e));
                };
                match provider.validation {
                    Validation::Jwt => self.check_jwt(settings, vm, p, raw, key, now),
                    Validation::Introspection => {
                        Err(self.introspect(settings, vm, p, raw, key, now))
                    }
                }
            }
        }
    }

    /// Asks `provider`'s introspection endpoint about the token.
    fn introspect(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        p: usize,
        raw: &str,
        key: Key,
        now: u64,
    ) -> Action {
        let Some(provider) = settings.providers.get(p) else {
            return Action::Respond(self.internal_error());
        };
        let op = settings.op(provider.op);
        let endpoint = vm
            .op(provider.op)
            .endpoints
            .as_ref()
            .and_then(|e| e.introspection.clone());
        let (Some(endpoint), Some((id, secret))) = (endpoint, provider.client.as_ref()) else {
            let waiters = vm.tokens.complete(&key, None, now);
            vm.wake(waiters, Wake::Fail(502));
            return not_ready(vm, provider.op, false);
        };
        vm.metrics.count(Counter::Introspections);
        let callout =
            bearer::introspection_request(&op.cluster, &endpoint, id, secret, raw, op.timeout_ms);
        self.stage = Stage::Introspect { key, provider: p };
        Action::Callout(callout)
    }

    /// Checks a JWT bearer token against its provider's keys, fetching them when they are
    /// missing.
    #[allow(clippy::result_large_err)]
    fn check_jwt(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        p: usize,
        raw: &str,
        key: Key,
        now: u64,
    ) -> Result<Rc<TokenInfo>, Action> {
        let Some(provider) = settings.providers.get(p) else {
            return Err(Action::Respond(self.internal_error()));
        };
        let op = settings.op(provider.op);
        let rules = JwtRules {
            issuer: &op.issuer,
            audiences: &provider.audiences,
            algorithms: &settings.api.algorithms,
            clock_skew_s: settings.clock_skew_s,
            now,
        };
        let runtime = vm.op(provider.op);
        let checked = bearer::validate_jwt(
            raw,
            &runtime.jwks,
            op.jwks_max_age_s,
            op.jwks_min_refetch_interval_s,
            &rules,
        )
        .and_then(|info| with_headers(settings, self.ws, p, info));
        let fetching = runtime.keys_flight.is_some();
        match checked {
            Ok(info) => {
                // Returned as checked: a token at the edge of its expiry (within the clock
                // skew) is not cached, but is good for this request.
                let waiters = vm.tokens.complete(&key, Some(Ok(info.clone())), now);
                vm.wake(waiters, Wake::Ready);
                Ok(Rc::new(info))
            }
            // Once per request: a key the OP still lacks after this request's fetch is unknown.
            // Or the keys are being fetched (for another token): wait for them.
            // Another worker may have fetched them already.
            Err(BearerError::NeedKeys) if vm.keys_from_peers(provider.op) => {
                self.check_jwt(settings, vm, p, raw, key, now)
            }
            Err(BearerError::NeedKeys) if !self.fetched_keys => {
                Err(self.wait_for_keys(settings, vm, provider.op, key, now))
            }
            Err(BearerError::InvalidToken(UNKNOWN_KEY)) if fetching => {
                Err(self.wait_for_keys(settings, vm, provider.op, key, now))
            }
            Err(BearerError::NeedKeys) => {
                let e = BearerError::InvalidToken(UNKNOWN_KEY);
                Err(self.jwt_refused(settings, vm, provider.op, raw, key, e, now))
            }
            Err(e) => Err(self.jwt_refused(settings, vm, provider.op, raw, key, e, now)),
        }
    }

    /// Frees the token's slot (whoever waits on it now waits on the keys) and leads or joins
    /// the fetch of OP `op`'s keys.
    fn wait_for_keys(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        op: usize,
        key: Key,
        now: u64,
    ) -> Action {
        let waiters = vm.tokens.complete(&key, None, now);
        vm.wake(waiters, Wake::Ready);
        self.fetch_bearer_keys(settings, vm, op, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn jwt_refused(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        op: usize,
        raw: &str,
        key: Key,
        e: BearerError,
        now: u64,
    ) -> Action {
        let why = match e {
            BearerError::InvalidToken(UNKNOWN_KEY) => {
                let o = settings.op(op);
                let miss = key_miss(
                    raw,
                    &vm.op(op).jwks,
                    now,
                    o.jwks_max_age_s,
                    o.jwks_min_refetch_interval_s,
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

    /// Leads or joins the one JWKS fetch of OP `op` for bearer tokens.
    pub(super) fn fetch_bearer_keys(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        op: usize,
        now: u64,
    ) -> Action {
        let o = settings.op(op);
        // A fetch whose leader vanished without a word is given up after the callout timeout.
        let stale = stale_after_s(o.timeout_ms);
        let runtime = vm.op(op);
        if let Some(f) = runtime.keys_flight.as_mut() {
            if now.saturating_sub(f.since) <= stale && f.leader != self.ctx {
                f.waiters.push(self.ctx);
                return Action::Wait;
            }
        }
        let callout = runtime
            .endpoints
            .clone()
            .and_then(|e| crate::jwks::request(o, &e));
        let Some(callout) = callout else {
            return not_ready(vm, op, false);
        };
        let waiters = runtime
            .keys_flight
            .take()
            .map(|f| f.waiters)
            .unwrap_or_default();
        runtime.keys_flight = Some(KeysFlight {
            leader: self.ctx,
            since: now,
            waiters,
        });
        runtime.jwks.attempted(now, o.jwks_max_age_s);
        self.stage = Stage::BearerKeys { op };
        Action::Callout(callout)
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

/// The provider, among `providers` (indices in `Settings::providers`), that a token belongs
/// to: the one whose issuer its unverified `iss` names. A token without `iss` (opaque, for
/// introspection) belongs to the only provider, or to the only introspecting one; otherwise
/// to none, since which OP to ask could only be guessed.
fn provider_for<'s>(
    settings: &'s Settings,
    providers: &[usize],
    raw: &str,
) -> Option<(usize, &'s TokenProvider)> {
    let candidates = || {
        providers
            .iter()
            .filter_map(|&p| settings.providers.get(p).map(|provider| (p, provider)))
    };
    match bearer::unverified_issuer(raw) {
        Some(iss) => candidates().find(|(_, p)| settings.op(p.op).issuer == iss),
        None => {
            let mut all = candidates();
            let first = all.next()?;
            if all.next().is_none() {
                return Some(first);
            }
            let mut introspecting =
                candidates().filter(|(_, p)| p.validation == Validation::Introspection);
            let only = introspecting.next()?;
            introspecting.next().is_none().then_some(only)
        }
    }
}

/// A checked token with the identity headers it gives (the web session `ws`'s) and the
/// provider that vouched for it, derived once for the cache. A token whose claim cannot be a header value is refused: it never goes
/// upstream without it.
pub(super) fn with_headers(
    settings: &Settings,
    ws: usize,
    provider: usize,
    mut info: TokenInfo,
) -> Result<TokenInfo, BearerError> {
    info.provider = provider;
    info.headers = settings
        .web(ws)
        .identity_for(info.sub.as_deref(), &info.claims)
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
