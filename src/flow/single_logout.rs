//! Logout the OP tells the gateway about: OpenID Connect Back-Channel Logout 1.0 (the OP posts
//! a logout token) and Front-Channel Logout 1.0 (the OP's page loads a URL naming its
//! session). Either puts the OP's session (or subject) on the revocation list, which every
//! worker of this Envoy picks up on its next tick (a front-channel one once this worker's
//! tick has published it).

use std::borrow::Cow;

use super::head::RequestHead;
use super::op_tokens::MAX_OP_SID;
use super::state::VmState;
use super::{printable, BodyFor, Level, LogLine, RequestFlow, Stage};
use crate::config::Settings;
use crate::http::{Action, Body, CalloutResult, LocalResponse};
use crate::jwks::parse_jwks;
use crate::login::Entropy;
use crate::logout_token::{self, LogoutExpected, LogoutToken, LogoutTokenError};
use crate::metrics::Counter;
use crate::request::HeaderSource;
use crate::revocation::{Revoked, ShareFull};

/// A logout token is a few hundred bytes; the form around it is not allowed to be much more.
const MAX_BACKCHANNEL_BODY: usize = 16 * 1024;
/// Logout tokens issued longer ago than this (plus the clock skew) are refused: it bounds how
/// long a captured token could be replayed, and so how long its `jti` is remembered.
const LOGOUT_TOKEN_MAX_AGE_S: u64 = 300;
/// Added to `now` where a logout ends the sessions opened up to it: a session another worker
/// opened a moment before may carry a later second than this worker's `now` (the wasm build
/// reads the time at its 100 ms ticks, not per request), and must end all the same. The price:
/// a sign-in within a second after the logout may end too (and signs in again), where the
/// other way round a session the OP ended would stay open.
const WORKER_CLOCK_SLACK_S: u64 = 1;

impl RequestFlow {
    /// §2.5: the OP POSTs `logout_token` as a form.
    pub(super) fn backchannel(&mut self, head: &RequestHead<'_>) -> Action {
        if head.method != "POST" {
            return Action::Respond(
                backchannel_error(405, "the back-channel logout endpoint takes POST")
                    .header("allow", "POST"),
            );
        }
        let form = head.request.single("content-type").ok().flatten();
        let is_form = form.is_some_and(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        });
        if !is_form {
            return Action::Respond(backchannel_error(
                400,
                "expected an application/x-www-form-urlencoded body",
            ));
        }
        self.stage = Stage::Body(BodyFor::Backchannel);
        Action::ReadBody {
            max: MAX_BACKCHANNEL_BODY,
        }
    }

    pub(super) fn backchannel_body(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        _request: &dyn HeaderSource,
        body: Body,
        now: u64,
        _rng: &mut dyn Entropy,
    ) -> Action {
        let body = match body {
            Body::Complete(body) => body,
            Body::TooLarge => return Action::Respond(backchannel_error(400, "body too large")),
            Body::Unreadable => {
                self.note(
                    Level::Warn,
                    "back-channel logout not read: the upstream answered before its body came"
                        .into(),
                );
                return Action::Respond(backchannel_error(503, "body not read, retry later"));
            }
        };
        let mut tokens = url::form_urlencoded::parse(&body)
            .filter(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned());
        let token = match (tokens.next(), tokens.next()) {
            (Some(t), None) if !t.is_empty() => t,
            _ => {
                return Action::Respond(backchannel_error(
                    400,
                    "exactly one logout_token is required",
                ))
            }
        };
        self.check_logout_token(settings, vm, token, now, true)
    }

    pub(super) fn check_logout_token(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        token: String,
        now: u64,
        may_fetch_keys: bool,
    ) -> Action {
        let expected = LogoutExpected {
            issuer: &self.rp(settings).op.issuer,
            client_id: &self.web(settings).client.client_id,
            now,
            clock_skew_s: settings.clock_skew_s,
            algorithms: &settings.id_token_algorithms,
            max_age_s: LOGOUT_TOKEN_MAX_AGE_S + settings.clock_skew_s,
        };
        let op_i = self.web(settings).op;
        let op = settings.op(op_i);
        let checked = logout_token::validate(
            &token,
            &vm.op(self.web(settings).op).jwks,
            op.jwks_max_age_s,
            op.jwks_min_refetch_interval_s,
            &expected,
        );
        match checked {
            Ok(t) => self.logged_out_at_op(settings, vm, t, now),
            // Another worker may have fetched them already.
            Err(LogoutTokenError::NeedKeys) if may_fetch_keys && vm.keys_from_peers(op_i) => {
                self.check_logout_token(settings, vm, token, now, true)
            }
            Err(LogoutTokenError::NeedKeys) if may_fetch_keys => {
                let endpoints = vm.op(op_i).endpoints.clone();
                let Some(callout) = endpoints.and_then(|e| crate::jwks::request(op, &e)) else {
                    return Action::Respond(backchannel_error(503, "not ready"));
                };
                vm.op(op_i).jwks.attempted(now, op.jwks_max_age_s);
                self.stage = Stage::LogoutKeys { token };
                Action::Callout(callout)
            }
            Err(e) => {
                let e = match e {
                    LogoutTokenError::NeedKeys => LogoutTokenError::UnknownKey,
                    e => e,
                };
                self.note_refused(
                    vm,
                    now,
                    Level::Warn,
                    format!("back-channel logout refused: {e}"),
                );
                Action::Respond(backchannel_error(400, &e.to_string()))
            }
        }
    }

    pub(super) fn logout_keys_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        token: String,
        result: CalloutResult,
        now: u64,
    ) -> Action {
        let (keys, why) = match result {
            CalloutResult::Response { status: 200, body } => {
                (parse_jwks(&body), "the JWKS is not a JWK Set")
            }
            _ => (None, "the JWKS could not be fetched"),
        };
        vm.metrics.count(match keys {
            Some(_) => Counter::JwksOk,
            None => Counter::JwksFailed,
        });
        match keys {
            Some(keys) => vm.keys_fetched(self.web(settings).op, keys, now),
            None => return self.keys_unavailable(why),
        }
        self.check_logout_token(settings, vm, token, now, false)
    }

    /// The OP retries a logout it got no 200 for; a 5xx says "try again".
    fn keys_unavailable(&mut self, why: &str) -> Action {
        self.note(
            Level::Warn,
            format!("back-channel logout not checked: {why}"),
        );
        Action::Respond(backchannel_error(503, "keys unavailable, retry later"))
    }

    fn logged_out_at_op(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        token: LogoutToken,
        now: u64,
    ) -> Action {
        // What other workers saw arrives on their tick; read it now so that a token replayed
        // to this worker right after another one took it is caught too.
        vm.revoked.refresh(vm.store.as_ref(), now);
        let jti_until = token
            .iat
            .saturating_add(LOGOUT_TOKEN_MAX_AGE_S + 2 * settings.clock_skew_s);
        let jti = op_scoped(settings, self.ws, &token.jti);
        if vm.revoked.seen_jti(&jti, jti_until, now) {
            self.note(
                Level::Warn,
                "back-channel logout refused: replayed jti".into(),
            );
            return Action::Respond(backchannel_error(400, "logout token already used"));
        }
        // Sessions opened up to the logout (the OP's clock may run behind ours by the skew); a
        // sign-in after it is a new session and stays.
        let before = token
            .iat
            .saturating_add(settings.clock_skew_s)
            .min(now.saturating_add(WORKER_CLOCK_SLACK_S));
        let until = now.saturating_add(self.web(settings).session.max_lifetime_s);
        // With a `sid` the OP ended one of its sessions: only that one. A `sub` alone ends
        // every session of the subject.
        let what = match (&token.sid, &token.sub) {
            (Some(sid), _) => Revoked::OpSid(op_scoped(settings, self.ws, sid).into_owned()),
            (None, Some(sub)) => Revoked::Sub(op_scoped(settings, self.ws, sub).into_owned()),
            (None, None) => return Action::Respond(backchannel_error(400, "no sid or sub")),
        };
        vm.revoked.revoke(what, before, until, now);
        self.log.extend(vm.publish_revocations(now));
        self.note(
            Level::Info,
            format!(
                "back-channel logout: sid={} sub={}",
                token.sid.as_deref().map(printable).unwrap_or_default(),
                token.sub.as_deref().map(printable).unwrap_or_default()
            ),
        );
        // (`no-store`, as every local answer.) Held: an OP that checks the RP's session right
        // after the 200 must find it ended on every worker.
        self.hold_answer(vm, LocalResponse::new(200))
    }

    /// Front-Channel Logout 1.0 §3: `iss` and `sid` name the OP's session. The OP's sids are
    /// unguessable, so a page that loads this URL cannot end a session it does not know.
    pub(super) fn frontchannel(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        head: &RequestHead<'_>,
        now: u64,
    ) -> Action {
        let (mut iss, mut sid) = (None, None);
        for (k, v) in url::form_urlencoded::parse(head.query.as_bytes()) {
            match &*k {
                "iss" if iss.is_none() => iss = Some(v.into_owned()),
                "sid" if sid.is_none() => sid = Some(v.into_owned()),
                _ => {}
            }
        }
        let (Some(iss), Some(sid)) = (iss, sid) else {
            return Action::Respond(backchannel_error(400, "iss and sid are required"));
        };
        // A sid longer than a session keeps could end none (and would only fill the list).
        if iss != self.rp(settings).op.issuer || sid.is_empty() || sid.len() > MAX_OP_SID {
            return Action::Respond(backchannel_error(400, "unknown issuer or bad sid"));
        }
        let until = now.saturating_add(self.web(settings).session.max_lifetime_s);
        // Anyone can call this: a refusal must cost little and change nothing (an earlier
        // logout stays), and what is accepted is shared on the next tick, batched, rather than
        // republishing the whole list per request. This worker refuses the session at once,
        // the others after their ticks.
        let scoped = op_scoped(settings, self.ws, &sid).into_owned();
        let before = now.saturating_add(WORKER_CLOCK_SLACK_S);
        let changed = match vm.revoked.revoke_unverified(scoped, before, until, now) {
            Ok(changed) => changed,
            Err(full) => return self.frontchannel_refused(vm, full, now),
        };
        self.note(
            Level::Info,
            format!("front-channel logout: sid={}", printable(&sid)),
        );
        let page = LocalResponse::new(200).body(
            "text/html; charset=utf-8",
            "<!doctype html><title>Signed out</title>\n",
        );
        // Held only when this call changed the list (anyone can call it, again and again), and
        // within the share of holds anonymous calls may take.
        match changed {
            true => self.hold_anonymous_answer(vm, page),
            false => Action::Respond(page),
        }
    }

    /// The front-channel share of the revocation list is full: most likely a flood of made-up
    /// sids. 503 until entries expire; the line within the budget of revocation-list lines.
    fn frontchannel_refused(&mut self, vm: &mut VmState, full: ShareFull, now: u64) -> Action {
        let line = LogLine {
            level: Level::Warn,
            message: format!(
                "front-channel logout refused: {} front-channel entries fill their share of \
                 the revocation list ({} refused so far; they expire with the session \
                 lifetime); raise session.revocation_list_entries if these logouts are real",
                full.held, full.refused
            ),
        };
        self.log.extend(vm.revocation_lines.pass(now, line));
        Action::Respond(
            backchannel_error(503, "too many front-channel logouts, retry later")
                .header("retry-after", full.retry_after_s.to_string()),
        )
    }
}

/// §2.8: a refused logout request is a 400, with an OAuth-style error body.
fn backchannel_error(status: u32, description: &str) -> LocalResponse {
    let body = serde_json::json!({
        "error": if status == 400 { "invalid_request" } else { "temporarily_unavailable" },
        "error_description": description,
    });
    LocalResponse::new(status).body("application/json", body.to_string())
}

/// An OP's session id or subject as the revocation list keeps it: under the web session's
/// name for every web session but the default (whose entries keep their old form), so a
/// logout at one OP never ends a session that another OP's user of the same `sub` or `sid`
/// holds.
///
/// The form is unambiguous: a web session's name has no U+001F, so `<name>\u{1f}` ends at the
/// first one; a default value that has one itself is written `\u{1f}<value>` (an empty name),
/// so no OP can name another web session's entry by putting the separator in its own values.
pub(super) fn op_scoped<'a>(settings: &Settings, ws: usize, value: &'a str) -> Cow<'a, str> {
    match ws {
        0 if !value.contains('\u{1f}') => Cow::Borrowed(value),
        0 => Cow::Owned(format!("\u{1f}{value}")),
        ws => Cow::Owned(format!("{}\u{1f}{value}", settings.web(ws).name)),
    }
}
