//! What the flow tells `crate::metrics` beyond one-line counts: which upstream a waiting
//! request's callout went to (for its latency), and how failed sign-ins are classed.

use super::{RequestFlow, Stage};
use crate::http::{Action, CalloutResult};
use crate::metrics::{Counter, Upstream};

/// What a request is counted for once, however often it is rerun (bits of `counted`).
#[derive(Clone, Copy)]
pub(super) enum Counted {
    Session = 1,
    BearerLookup = 2,
    BearerVerdict = 4,
    Decision = 8,
    MediationLookup = 16,
}

impl RequestFlow {
    /// Whether this request is yet to be counted for `what`; from now on it is.
    pub(super) fn first(&mut self, what: Counted) -> bool {
        let bit = what as u8;
        let first = self.counted & bit == 0;
        self.counted |= bit;
        first
    }

    /// The upstream this request's callout went to, while it waits for the answer.
    pub fn awaiting(&self) -> Option<Upstream> {
        Some(match &self.stage {
            Stage::Token { .. } => Upstream::OpToken,
            // A validation asks the token endpoint (refresh grant), or UserInfo without a
            // refresh token.
            Stage::Validate { entry } => match entry.session.op.refresh_token {
                Some(_) => Upstream::OpToken,
                None => Upstream::Userinfo,
            },
            Stage::Keys { .. }
            | Stage::BearerKeys { .. }
            | Stage::ValidateKeys { .. }
            | Stage::LogoutKeys { .. } => Upstream::Jwks,
            Stage::Introspect { .. } => Upstream::Introspection,
            Stage::Mediate { .. } => Upstream::Sts,
            Stage::ValidateUserinfo { .. } | Stage::LoginUserinfo { .. } => Upstream::Userinfo,
            Stage::RevokeAtOp { .. } => Upstream::Revocation,
            Stage::Start | Stage::Done | Stage::Body(_) | Stage::AnswerHeld { .. } => return None,
        })
    }
}

/// A sign-in whose callout to the OP gave no usable answer: a timeout, or `otherwise`.
pub(super) fn login_failure(result: &CalloutResult, otherwise: Counter) -> Counter {
    match result {
        CalloutResult::TimedOut => Counter::LoginFailedTimeout,
        _ => otherwise,
    }
}

/// The callback ended without asking the token endpoint: why, by the answer's status (the OP
/// sent an error: 401; the OP's endpoints are not known: 503; the state matched no sign-in of
/// this browser, or the answer was incomplete: 403 or 400).
pub(super) fn callback_refused(action: &Action) -> Option<Counter> {
    match action {
        Action::Respond(r) if r.status == 401 => Some(Counter::LoginFailedOpError),
        Action::Respond(r) if r.status == 503 => Some(Counter::LoginFailedUnavailable),
        Action::Respond(_) => Some(Counter::LoginFailedState),
        _ => None,
    }
}
