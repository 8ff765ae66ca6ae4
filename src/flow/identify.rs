//! Who is asking: a session cookie or a bearer token, and waiting for a token check.

use std::rc::Rc;

use serde_json::{Map, Value};

use super::mediate::Subject;
use super::metered::Counted;
use super::single_logout::op_scoped;
use super::state::VmState;
use super::validate::{self, Validated};
use super::RequestFlow;
use crate::bearer::{self, BearerError, TokenInfo};
use crate::cache::Key;
use crate::config::Settings;
use crate::http::Action;
use crate::mediation::Source;
use crate::metrics::Counter;
use crate::policy::{AppType, Application, Identity, Resource};
use crate::request::HeaderSource;
use crate::revocation::RevocationList;
use crate::session::chunks;
use crate::session::{Dead, Session, SessionEntry};

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

    /// Whom a mediated token is for; `ws`: the request's web session.
    pub fn subject(&self, ws: usize) -> Option<Subject<'_>> {
        let (sub, claims, source): (&str, &Map<String, Value>, _) =
            match (&self.session, &self.token) {
                (Some(e), _) => (&e.session.sub, &e.session.claims, Source::WebSession(ws)),
                (None, Some(t)) => (
                    t.sub.as_deref().unwrap_or_default(),
                    &t.claims,
                    Source::TokenProvider(t.provider),
                ),
                (None, None) => return None,
            };
        Some(Subject {
            sub,
            claims,
            session: self.session.is_some(),
            bearer: self.bearer.zip(self.token_key),
            source,
        })
    }
}

/// Whether a logout ended this session: the generation in which its revocation last changed.
/// Looked up once per session and change of the list.
fn revoked_in(
    settings: &Settings,
    ws: usize,
    list: &RevocationList,
    entry: &SessionEntry,
) -> Option<u64> {
    let generation = list.generation();
    if entry.not_revoked_at.get() == Some(generation) {
        return None;
    }
    let revoked = session_revoked_in(settings, ws, list, &entry.session);
    if revoked.is_none() {
        entry.not_revoked_at.set(Some(generation));
    }
    revoked
}

/// [`RevocationList::revoked_in`] for a session of web session `ws`.
pub(super) fn session_revoked_in(
    settings: &Settings,
    ws: usize,
    list: &RevocationList,
    s: &Session,
) -> Option<u64> {
    let op_sid =
        s.op.op_sid
            .as_deref()
            .map(|sid| op_scoped(settings, ws, sid));
    let sub = op_scoped(settings, ws, &s.sub);
    list.revoked_in(&s.sid, op_sid.as_deref(), &sub, s.created_at)
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
                // A result holds only for the checks that produced it: the key covers the token,
                // the providers it is checked against (each with its method and audiences) and
                // the web session whose identity headers it gets.
                let providers = app.api.as_ref().map(|a| a.providers.as_slice());
                let key = vm.token_keys.key_of(&(raw, providers, app.web_session));
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
        let web = self.web(settings);
        let value = chunks::read_value(request, &web.session.cookie_name);
        let checked = value.map(|t| {
            vm.sessions(self.ws).check(
                &t,
                &web.session.keys,
                now,
                web.session.idle_timeout_s,
                |s| web.identity_for(Some(&s.sub), &s.claims).ok(),
            )
        });
        let revoked_in = match &checked {
            Some(Ok(e)) => revoked_in(settings, self.ws, &vm.revoked, e),
            _ => None,
        };
        let revoked = revoked_in.is_some();
        // Ended a moment ago (here or on another worker): a worker that has not ticked since
        // may still serve it, so the refusal waits (the client must not see it first).
        self.ended_session |= revoked_in.is_some_and(|g| vm.revoked_recently(g));
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
            if validate::is_due(settings, self.ws, &entry.session, now) {
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
}
