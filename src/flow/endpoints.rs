//! The gateway's own endpoints under the base path (`/pa`): heartbeat, callback, logout, JWKS.

use super::head::RequestHead;
use super::identify::session_revoked_in;
use super::login::clear_session_cookies;
use super::metered::callback_refused;
use super::route::Endpoint;
use super::state::VmState;
use super::{not_ready, RequestFlow, Stage};
use super::{printable, Level};
use crate::config::{OpEndpoints, Settings};
use crate::http::{Action, CalloutResult, LocalResponse};
use crate::login::Entropy;
use crate::metrics::Counter;
use crate::oidc;
use crate::op_session;
use crate::pages;
use crate::revocation::Revoked;
use crate::session::{chunks, Session};

impl RequestFlow {
    pub(super) fn endpoint(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        head: &RequestHead<'_>,
        endpoint: Endpoint,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let op = self.web(settings).op;
        match endpoint {
            Endpoint::Heartbeat => {
                // The plain heartbeat looks at nothing.
                let ops = match settings.heartbeat.detailed {
                    true => super::health::ops_health(settings, vm, now),
                    false => Vec::new(),
                };
                Action::Respond(super::health::heartbeat(&settings.heartbeat, &ops))
            }
            Endpoint::Callback(_) => match vm.op(op).endpoints.clone() {
                Some(endpoints) => {
                    let action = self.callback(settings, vm, &endpoints, head, now, rng);
                    if let Some(failed) = callback_refused(&action) {
                        vm.metrics.count(failed);
                    }
                    self.with_post_cleared(action)
                }
                None => {
                    vm.metrics.count(Counter::LoginFailedUnavailable);
                    not_ready(vm, op, true)
                }
            },
            Endpoint::AuthtokenJwks => match &settings.authtoken {
                Some(signer) => {
                    let mut r = LocalResponse::new(200)
                        .body("application/jwk-set+json", signer.jwks_json());
                    r.headers.retain(|(n, _)| n != "cache-control");
                    Action::Respond(r.header("cache-control", "public, max-age=300"))
                }
                None => Action::Respond(self.internal_error()),
            },
            Endpoint::Logout(ws) => {
                let session = if is_confirmation_needed(settings, ws, head) {
                    None
                } else {
                    self.revoke_own_session(settings, vm, head, now)
                };
                let hint = session.as_ref().and_then(|s| s.op.id_token.as_deref());
                let endpoints = vm.op(op).endpoints.clone();
                let response = logout(settings, ws, endpoints.as_deref(), head, hint);
                // RFC 7009: the OP forgets the refresh token, so the session also ends on the
                // replicas that share the keys, at their next validation.
                let revocation = session
                    .as_ref()
                    .and_then(|s| s.op.refresh_token.as_deref())
                    .zip(endpoints.as_deref())
                    .and_then(|(rt, e)| op_session::revocation_request(settings.rp(ws), e, rt));
                match (revocation, session.is_some()) {
                    (Some(callout), _) => {
                        self.stage = Stage::RevokeAtOp { response };
                        Action::Callout(callout)
                    }
                    (None, true) => self.hold_answer(vm, response),
                    (None, false) => Action::Respond(response),
                }
            }
            Endpoint::Backchannel(_) => self.backchannel(head),
            Endpoint::Frontchannel(_) => self.frontchannel(settings, vm, head, now),
        }
    }
}

impl RequestFlow {
    /// Puts the session's id on the revocation list: a copy of the cookie stops working on
    /// every worker of this Envoy (other replicas learn it when they next validate at the OP).
    fn revoke_own_session(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        head: &RequestHead<'_>,
        now: u64,
    ) -> Option<Session> {
        let s = &self.web(settings).session;
        let value = chunks::read(head.request, &s.cookie_name).0?;
        let mut session = Session::decode(&value, &s.keys, now, s.idle_timeout_s)?;
        // Already ended (a logout, the OP): nothing to revoke here or at the OP, nothing to
        // hold; the browser still gets its cookies cleared.
        if session_revoked_in(settings, self.ws, &vm.revoked, &session).is_some() {
            return None;
        }
        // A copy from before a validation holds a refresh token the OP has rotated away: the
        // newest one this worker saw is the one to revoke.
        if let Some(newer) = vm.validations.newer(&session.sid, session.op.generation) {
            session = newer.clone();
        }
        let until = session.expires_at;
        vm.revoked
            .revoke(Revoked::Session(session.sid.clone()), now, until, now);
        self.log.extend(vm.publish_revocations(now));
        self.note(
            Level::Info,
            format!(
                "logout: sub={} sid={}",
                printable(&session.sub),
                session.sid
            ),
        );
        Some(session)
    }

    /// The OP answered the revocation (or did not): the browser gets its logout either way.
    pub(super) fn revoked_at_op(
        &mut self,
        vm: &mut VmState,
        response: LocalResponse,
        result: CalloutResult,
    ) -> Action {
        match result {
            CalloutResult::Response { status: 200, .. } => {}
            CalloutResult::Response { status, .. } => self.note(
                Level::Warn,
                format!("logout: the OP refused to revoke the refresh token: HTTP {status}"),
            ),
            _ => self.note(
                Level::Warn,
                "logout: the refresh token could not be revoked at the OP (no answer)".into(),
            ),
        }
        self.hold_answer(vm, response)
    }
}

fn is_confirmation_needed(settings: &Settings, ws: usize, head: &RequestHead<'_>) -> bool {
    head.is_cross_site(settings, ws) || !matches!(head.method, "GET" | "HEAD" | "POST")
}

/// Ends the session, at the OP too where it has an end-session endpoint. A logout another
/// site made the browser send (a link or an image on a foreign page) only gets a page that
/// asks: ending someone's session is not something a stranger's page may do.
fn logout(
    settings: &Settings,
    ws: usize,
    endpoints: Option<&OpEndpoints>,
    head: &RequestHead<'_>,
    id_token_hint: Option<&str>,
) -> LocalResponse {
    let web = settings.web(ws);
    if is_confirmation_needed(settings, ws, head) {
        return pages::confirm_logout(&web.logout_path);
    }
    let carried = chunks::read(head.request, &web.session.cookie_name).1;
    let clear = clear_session_cookies(settings, ws, carried);
    let origin = head.trusted_origin(settings, ws);
    let after = match &web.logout.redirect_uri {
        Some(u) if u.starts_with('/') => origin.as_ref().map(|o| format!("{o}{u}")),
        Some(u) => Some(u.clone()),
        None => None,
    };
    let post_logout = after
        .clone()
        .or_else(|| origin.as_ref().map(|o| format!("{o}/")));
    if let Some(url) = oidc::end_session_url(
        settings.rp(ws),
        endpoints,
        id_token_hint,
        post_logout.as_deref(),
    ) {
        return with_cookies(LocalResponse::redirect(&url), clear);
    }
    match after {
        Some(url) => with_cookies(LocalResponse::redirect(&url), clear),
        None => with_cookies(LocalResponse::new(200), clear).body(
            "text/html; charset=utf-8",
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
                 <body><h1>Signed out</h1><p>You are signed out.</p></body></html>\n",
        ),
    }
}

fn with_cookies(mut response: LocalResponse, cookies: Vec<String>) -> LocalResponse {
    for c in cookies {
        response = response.header("set-cookie", c);
    }
    response
}
