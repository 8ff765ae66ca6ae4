//! What a session keeps of the OP's tokens, and UserInfo at sign-in.

use serde_json::{Map, Value};

use super::login::add_cookie_of;
use super::metered::login_failure;
use super::state::VmState;
use super::{printable, Level, RequestFlow, Stage};
use crate::config::Settings;
use crate::http::{Action, CalloutResult};
use crate::id_token::IdToken;
use crate::login::{Entropy, LoginTransaction};
use crate::metrics::Counter;
use crate::oidc::TokenSet;
use crate::op_session::{self, UserinfoError};
use crate::session::{CookieType, OpState};

/// An ID token larger than this is not kept for `id_token_hint` (logout then names the client
/// instead, as RP-Initiated Logout allows): it would cost a cookie chunk on every request.
const MAX_KEPT_ID_TOKEN: usize = 2048;
/// The OP's `sid` claim is an opaque string; anything longer is not kept (no logout by sid).
pub(super) const MAX_OP_SID: usize = 256;

/// The raw ID token when the session may keep it (encrypted cookie, small enough).
pub(super) fn keepable_id_token(
    settings: &Settings,
    ws: usize,
    id_token: String,
) -> Option<String> {
    (settings.web(ws).session.keys.cookie_type == CookieType::Encrypted
        && id_token.len() <= MAX_KEPT_ID_TOKEN)
        .then_some(id_token)
}

/// The OP state a new session starts with. Tokens only in an encrypted cookie: the refresh
/// token always (validation, and revocation at logout), the access token where something needs
/// it (forwarding it, or validating through UserInfo).
pub(super) fn op_state(
    settings: &Settings,
    ws: usize,
    id_claims: &Map<String, Value>,
    id_token: Option<String>,
    tokens: Option<TokenSet>,
    now: u64,
) -> OpState {
    let s = &settings.web(ws).session;
    let op_sid = match id_claims.get("sid") {
        Some(Value::String(sid)) if !sid.is_empty() && sid.len() <= MAX_OP_SID => Some(sid.clone()),
        _ => None,
    };
    let mut op = OpState {
        op_sid,
        id_token,
        validated_at: now,
        ..OpState::default()
    };
    if s.keys.cookie_type != CookieType::Encrypted {
        return op;
    }
    if let Some(t) = tokens {
        op.refresh_token = t.refresh_token;
        let wants_access = s.keep_access_token
            || s.userinfo
            || (s.validate_interval_s > 0 && op.refresh_token.is_none());
        if wants_access {
            op.access_expires_at = t.expires_in.map(|e| now.saturating_add(e));
            op.access_token = t.access_token;
        }
    }
    op
}

impl RequestFlow {
    /// The ID token checked out: UserInfo next where configured, else the session.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn id_token_checked(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        txn: LoginTransaction,
        token: IdToken,
        id_token: Option<String>,
        html: bool,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        if !self.web(settings).session.userinfo {
            return self.open_session(settings, vm, &txn, token, id_token, html, now, rng);
        }
        let access = self
            .login_tokens
            .as_ref()
            .and_then(|t| t.access_token.clone());
        let endpoints = vm.op(self.web(settings).op).endpoints.clone();
        let callout = endpoints
            .as_deref()
            .zip(access)
            .and_then(|(e, at)| op_session::userinfo_request(self.rp(settings), e, &at));
        let Some(callout) = callout else {
            vm.metrics.count(Counter::LoginFailedUserinfo);
            return self.op_failure(
                rng,
                html,
                &txn,
                502,
                "session.userinfo is on, but there is no userinfo endpoint or no access token"
                    .into(),
            );
        };
        self.stage = Stage::LoginUserinfo {
            txn,
            token,
            id_token,
            html,
        };
        Action::Callout(callout)
    }

    /// UserInfo at sign-in: its `sub` must be the ID token's (the OpenID `userinfo-invalid-sub`
    /// case), then its claims count along with the ID token's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn login_userinfo_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        txn: LoginTransaction,
        mut token: IdToken,
        id_token: Option<String>,
        html: bool,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        match op_session::userinfo_outcome(&result, &token.sub) {
            Ok(claims) => {
                // UserInfo is unsigned: it adds claims about the user, never the ID token's own
                // (the OP's session id that back-channel logout names, its audience, its times).
                const ID_TOKEN_ONLY: &[&str] = &[
                    "sub",
                    "sid",
                    "iss",
                    "aud",
                    "azp",
                    "exp",
                    "iat",
                    "nbf",
                    "nonce",
                    "auth_time",
                ];
                for (k, v) in claims {
                    if !ID_TOKEN_ONLY.contains(&k.as_str()) && !v.is_null() {
                        token.claims.insert(k, v);
                    }
                }
                self.open_session(settings, vm, &txn, token, id_token, html, now, rng)
            }
            Err(UserinfoError::SubMismatch) => {
                vm.metrics.count(Counter::LoginFailedUserinfo);
                let (action, reference) = Self::refusal(
                    rng,
                    html,
                    403,
                    "userinfo_invalid",
                    "The sign-in could not be verified.",
                    Some(&txn.return_to),
                );
                self.note_refused(
                    vm,
                    now,
                    Level::Warn,
                    format!(
                        "login refused: userinfo names another subject than the ID token's \
                         sub={} (status=403 reference={reference})",
                        printable(&token.sub)
                    ),
                );
                add_cookie_of(settings, self.ws, action, &txn)
            }
            Err(e) => {
                vm.metrics
                    .count(login_failure(&result, Counter::LoginFailedUserinfo));
                self.op_failure(rng, html, &txn, 502, format!("login: {e}"))
            }
        }
    }
}
