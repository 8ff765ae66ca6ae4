//! Token mediation: the site's own token for the subject, cached, signed here or exchanged at the STS.

use std::hash::{Hash, Hasher};
use std::rc::Rc;

use serde_json::{Map, Value};

use super::head::RequestHead;
use super::metered::Counted;
use super::state::{SiteToken, VmState};
use super::{failure_text, RequestFlow, Stage};
use crate::authtoken::AuthTokenSigner;
use crate::cache::{Key, Lookup as CacheLookup};
use crate::config::Settings;
use crate::http::{Action, CalloutResult, Wake};
use crate::login::{random_token, Entropy};
use crate::mediation::{self, Inject, SiteAuthenticator, SiteKind, Source};
use crate::metrics::Counter;
use crate::request::HeaderSource;

impl RequestFlow {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn exchange_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        i: usize,
        key: Key,
        html: bool,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let Some(site) = settings.sites.get(i) else {
            return Action::Respond(self.internal_error());
        };
        let parsed = match result {
            CalloutResult::Response { status, body } => {
                mediation::parse_exchange_response(site, status, &body, now)
                    .map_err(|e| (e.http_status(), format!("{e:?}")))
            }
            other @ CalloutResult::TimedOut => Err((504, failure_text(&other, self.folded_status))),
            other @ CalloutResult::Failed => Err((503, failure_text(&other, self.folded_status))),
        };
        vm.metrics.count(match &parsed {
            Ok(_) => Counter::MediationExchangeOk,
            Err((504, _)) => Counter::MediationExchange504,
            Err((503, _)) => Counter::MediationExchange503,
            Err(_) => Counter::MediationExchange502,
        });
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
                vm.site_token_made(i, &key, &value, (until, &site.cache), now);
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

    #[allow(clippy::too_many_arguments, clippy::result_large_err)]
    pub(super) fn mediate(
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
        if site.source.is_some_and(|s| s != from.source) {
            // The configuration lets only the named web session's or provider's applications
            // use this site; a `both` application's other kind of identity is not mediated.
            return Err(self.refuse(
                rng,
                from.session,
                403,
                "not_mediated",
                "This site does not accept this kind of sign-in.",
                None,
                format!(
                    "site `{}` mediates another web session's or provider's identities",
                    site.name
                ),
            ));
        }
        let key = mediation_key(vm, site, from);
        if let Some((fi, fk, t)) = &self.fresh_site {
            if *fi == i && *fk == key {
                return Ok(t.clone());
            }
        }
        let Some(cache) = vm.mediated.get_mut(i) else {
            return Err(Action::Respond(self.internal_error()));
        };
        let found = cache.lookup(&key, self.ctx, now);
        if self.first(Counted::MediationLookup) {
            vm.metrics.count(match found {
                CacheLookup::Hit(_) => Counter::MediationHit,
                CacheLookup::Wait | CacheLookup::Miss => Counter::MediationMiss,
            });
        }
        match found {
            CacheLookup::Hit(t) => return Ok(t),
            CacheLookup::Wait => return Err(Action::Wait),
            CacheLookup::Miss => {}
        }
        // Missed here: another worker may have the token (the native build's shared tier).
        if let Some(t) = vm.site_token_from_peers(i, &key, now) {
            return Ok(t);
        }
        let jti = random_token(rng, 12);
        let signer = settings.authtoken.as_deref();
        match &site.kind {
            SiteKind::Jwt(_) => {
                let signed = signer.zip(jti).and_then(|(signer, jti)| {
                    mediation::identity_jwt(signer, site, from.sub, from.claims, now, &jti)
                });
                let Some(t) = signed else {
                    fail_waiters(vm, i, &key, now);
                    return Err(self.internal_failure("could not sign the identity JWT"));
                };
                let value = Rc::new(SiteToken {
                    value: header_value(site, &t.token),
                });
                vm.metrics.count(Counter::MediationSigned);
                if let Some(cache) = vm.mediated.get_mut(i) {
                    let until = refresh_before(t.expires_at, now);
                    let waiters = cache.complete(&key, Some((value.clone(), until)), now);
                    vm.wake(waiters, Wake::Ready);
                    vm.site_token_made(i, &key, &value, (until, &site.cache), now);
                }
                Ok(value)
            }
            SiteKind::TokenExchange(_) => {
                let subject = exchange_subject(signer, site, from, jti, now);
                let callout =
                    subject.and_then(|(t, kind)| mediation::exchange_request(site, &t, kind));
                let Some(callout) = callout else {
                    fail_waiters(vm, i, &key, now);
                    return Err(self.internal_failure("could not build the token exchange request"));
                };
                // Only a failed exchange needs to know whether a browser asked (HTML or JSON);
                // the request head is read for that here, not on every mediated request.
                let html = from.session && RequestHead::accepts_html(request);
                self.stage = Stage::Mediate { site: i, key, html };
                Err(Action::Callout(callout))
            }
        }
    }
}

/// The cache key of a site's token for `from`. Per subject and site: a session's web session,
/// `sub` and the claims that go into the token (two sessions of one `sub` with other groups,
/// or at other OPs, must not share a token), or a bearer token (by its key). The keyed hash of the token cache serves here too;
/// each cache belongs to one site already.
fn mediation_key(vm: &VmState, site: &SiteAuthenticator, from: &Subject<'_>) -> Key {
    match from.bearer {
        Some((_, token_key)) if !from.session => vm.token_keys.key_of(&("bearer", token_key)),
        _ => {
            let claims = TokenClaims {
                claims: from.claims,
                only: site.jwt().map(|j| j.claims.as_slice()),
            };
            let web = match from.source {
                Source::WebSession(w) => w,
                Source::TokenProvider(_) => usize::MAX,
            };
            vm.token_keys.key_of(&("session", web, from.sub, claims))
        }
    }
}

/// The requests waiting for site `i`'s token under `key` fail (502): none is coming.
fn fail_waiters(vm: &mut VmState, i: usize, key: &Key, now: u64) {
    if let Some(cache) = vm.mediated.get_mut(i) {
        let waiters = cache.complete(key, None, now);
        vm.wake(waiters, Wake::Fail(502));
    }
}

/// The subject token sent to the STS and its type: the client's own bearer token on API
/// requests, else one the gateway signs for the session's subject (`None` if it cannot).
fn exchange_subject(
    signer: Option<&AuthTokenSigner>,
    site: &SiteAuthenticator,
    from: &Subject<'_>,
    jti: Option<String>,
    now: u64,
) -> Option<(String, &'static str)> {
    match from.bearer {
        Some((raw, _)) if !from.session => Some((raw.to_string(), mediation::ACCESS_TOKEN_TYPE)),
        _ => signer
            .zip(jti)
            .and_then(|(signer, jti)| {
                mediation::session_subject_token(signer, site, from.sub, from.claims, now, &jti)
            })
            .map(|t| (t, mediation::JWT_TOKEN_TYPE)),
    }
}

/// Who a mediated token is for: the session's or the bearer token's subject.
pub(crate) struct Subject<'a> {
    pub sub: &'a str,
    pub claims: &'a Map<String, Value>,
    pub session: bool,
    /// The client's bearer token and its hash, on API requests.
    pub bearer: Option<(&'a str, Key)>,
    /// Where the identity comes from: a session of this web session, or a token this provider
    /// vouched for.
    pub source: Source,
}

/// The claims a site's token carries (all of them, or the `only` ones a JWT mapping copies),
/// hashed into the cache key.
struct TokenClaims<'a> {
    claims: &'a Map<String, Value>,
    only: Option<&'a [String]>,
}

impl Hash for TokenClaims<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        match self.only {
            Some(names) => {
                for name in names {
                    name.hash(h);
                    hash_value(self.claims.get(name), h);
                }
            }
            None => {
                // A `Map` iterates in key order, so equal claims hash alike.
                for (name, value) in self.claims {
                    name.hash(h);
                    hash_value(Some(value), h);
                }
            }
        }
    }
}

/// `serde_json::Value` has no `Hash`; a tag per kind keeps `"1"` and `1` apart.
fn hash_value<H: Hasher>(value: Option<&Value>, h: &mut H) {
    match value {
        None => 0u8.hash(h),
        Some(Value::Null) => 1u8.hash(h),
        Some(Value::Bool(b)) => (2u8, b).hash(h),
        Some(Value::Number(n)) => (3u8, n.to_string()).hash(h),
        Some(Value::String(s)) => (4u8, s).hash(h),
        Some(Value::Array(items)) => {
            (5u8, items.len()).hash(h);
            for item in items {
                hash_value(Some(item), h);
            }
        }
        Some(Value::Object(map)) => {
            (6u8, map.len()).hash(h);
            for (k, v) in map {
                k.hash(h);
                hash_value(Some(v), h);
            }
        }
    }
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
