//! The gateway's own answers: refusals, failures of the OP or STS, and internal errors.

use super::state::VmState;
use super::{failure_text, Level, RequestFlow};
use crate::http::{Action, CalloutResult, LocalResponse};
use crate::login::{random_token, Entropy, LoginTransaction};
use crate::pages::Problem;

impl RequestFlow {
    pub(super) fn internal_error(&mut self) -> LocalResponse {
        Problem {
            status: 500,
            code: "internal_error",
            message: "Unexpected state.",
            reference: None,
            retry: None,
        }
        .respond(false)
    }

    pub(super) fn forbidden_page(
        &mut self,
        rng: &mut dyn Entropy,
        html: bool,
        code: &str,
        log: String,
    ) -> LocalResponse {
        let reference = random_token(rng, 6).unwrap_or_default();
        self.note(
            Level::Info,
            format!("{log}: denied (status=403 reference={reference})"),
        );
        Problem {
            status: 403,
            code,
            message: "You do not have access to this page.",
            reference: Some(&reference),
            retry: None,
        }
        .respond(html)
    }

    /// Something the gateway itself could not do (sign a token, build a request): 500, logged.
    pub(super) fn internal_failure(&mut self, why: &str) -> Action {
        self.note(Level::Warn, why.to_string());
        Action::Respond(self.internal_error())
    }

    /// 502, 503 or 504 when the OP or STS failed the request.
    pub(super) fn upstream_failure(
        &mut self,
        rng: &mut dyn Entropy,
        status: u32,
        log: &str,
    ) -> Action {
        let (code, message) = match status {
            504 => (
                "upstream_timeout",
                "A service the gateway needs did not answer in time.",
            ),
            503 => (
                "upstream_unavailable",
                "A service the gateway needs is unavailable.",
            ),
            _ => (
                "upstream_error",
                "A service the gateway needs could not be reached or gave no usable answer.",
            ),
        };
        self.refuse(rng, false, status, code, message, None, log.to_string())
    }

    /// No randomness: a login cannot be started safely.
    pub(super) fn no_randomness(&mut self) -> Action {
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn refuse(
        &mut self,
        rng: &mut dyn Entropy,
        html: bool,
        status: u32,
        code: &str,
        message: &str,
        retry: Option<&str>,
        log: String,
    ) -> Action {
        let (action, reference) = Self::refusal(rng, html, status, code, message, retry);
        self.note(
            Level::Warn,
            format!("{log} (status={status} reference={reference})"),
        );
        action
    }

    /// A refusal page and its reference, for the caller to log.
    pub(super) fn refusal(
        rng: &mut dyn Entropy,
        html: bool,
        status: u32,
        code: &str,
        message: &str,
        retry: Option<&str>,
    ) -> (Action, String) {
        let reference = random_token(rng, 6).unwrap_or_default();
        let problem = Problem {
            status,
            code,
            message,
            reference: Some(&reference),
            retry,
        };
        (Action::Respond(problem.respond(html)), reference)
    }

    pub(super) fn op_failure(
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

    pub(super) fn callout_failure(
        &mut self,
        rng: &mut dyn Entropy,
        html: bool,
        txn: &LoginTransaction,
        what: &str,
        result: CalloutResult,
    ) -> Action {
        let log = format!("{what} {}", failure_text(&result, self.folded_status));
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
        self.refuse(rng, html, status, code, message, Some(&txn.return_to), log)
    }
}

/// The OP's endpoints are not known yet (discovery has not answered): try again shortly. Unless
/// the OP named another issuer: then waiting will not help, and the page says what is wrong.
pub(crate) fn not_ready(vm: &mut VmState, op: usize, html: bool) -> Action {
    if vm.op(op).issuer_mismatch {
        let problem = Problem {
            status: 503,
            code: "op_misconfigured",
            message: "Sign-in is misconfigured at this gateway; the administrators have been told.",
            reference: None,
            retry: None,
        };
        return Action::Respond(problem.respond(html));
    }
    let problem = Problem {
        status: 503,
        code: "op_not_ready",
        message: "Sign-in is starting up; please try again in a moment.",
        reference: None,
        retry: None,
    };
    Action::Respond(problem.respond(html).header("retry-after", "5"))
}
