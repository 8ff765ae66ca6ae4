//! UserInfo after a validation's refresh (`session.userinfo`): its claims are merged with the
//! refreshed ID token's, and a UserInfo about another subject ends the session.

use std::rc::Rc;

use super::state::VmState;
use super::validate::Answer;
use super::{Level, RequestFlow, Stage};
use crate::config::Settings;
use crate::http::{Action, CalloutResult};
use crate::login::Entropy;
use crate::op_session::{self, UserinfoError};
use crate::session::slot::SlotState;
use crate::session::{Session, SessionEntry};

impl RequestFlow {
    /// The refresh's answer decided, or UserInfo asked first when configured (the refreshed
    /// session then waits in the stage). `Some` is the callout to send.
    pub(super) fn then_userinfo(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: Rc<SessionEntry>,
        answer: Answer,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Option<Action> {
        let refreshed = match answer {
            Answer::Valid(refreshed) if self.web(settings).session.userinfo => refreshed,
            other => {
                self.validation_decided(settings, vm, &entry, other, now, rng);
                return None;
            }
        };
        let rp = self.rp(settings);
        let callout = vm
            .op(rp.web.op)
            .endpoints
            .clone()
            .zip(refreshed.op.access_token.as_deref())
            .and_then(|(e, at)| op_session::userinfo_request(rp, &e, at));
        let Some(callout) = callout else {
            let answer = Answer::Valid(refreshed);
            self.validation_decided(settings, vm, &entry, answer, now, rng);
            return None;
        };
        // Still leading the validation: the lease is renewed for the second call.
        vm.write_slot(&entry.session.sid, SlotState::Busy { since: now });
        self.stage = Stage::ValidateUserinfo { entry, refreshed };
        Some(Action::Callout(callout))
    }

    /// UserInfo answered: its claims join the refreshed ID token's. The refresh itself stands
    /// whatever UserInfo says, except a refusal or another subject, which end the session.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn validation_userinfo_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: Rc<SessionEntry>,
        mut refreshed: Box<Session>,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) {
        match op_session::userinfo_outcome(&result, &refreshed.sub) {
            Ok(userinfo) => {
                // The union of what this round learned: the refreshed claims, then UserInfo's.
                let mut source = refreshed.claims.clone();
                source.extend(userinfo);
                let names = &self.web(settings).session.claims;
                op_session::merge_claims(&mut refreshed.claims, names, &source);
                let answer = Answer::Valid(refreshed);
                self.validation_decided(settings, vm, &entry, answer, now, rng);
            }
            Err(e @ (UserinfoError::Refused { .. } | UserinfoError::SubMismatch)) => {
                let answer = Answer::Refused(e.to_string());
                self.validation_decided(settings, vm, &entry, answer, now, rng);
            }
            Err(e) => {
                self.note(
                    Level::Warn,
                    format!("session validation: UserInfo not merged ({e}); the refresh stands"),
                );
                let answer = Answer::Valid(refreshed);
                self.validation_decided(settings, vm, &entry, answer, now, rng);
            }
        }
    }
}

impl RequestFlow {
    /// The refresh stands without UserInfo (its request went away before UserInfo answered).
    pub(super) fn finish_without_userinfo(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: Rc<SessionEntry>,
        refreshed: Box<Session>,
        now: u64,
        rng: &mut dyn Entropy,
    ) {
        self.note(
            Level::Info,
            "session validation: request gone before UserInfo answered; the refresh stands".into(),
        );
        self.validation_decided(settings, vm, &entry, Answer::Valid(refreshed), now, rng);
    }
}
