//! Logout the OP tells the gateway about: OpenID Connect Back-Channel Logout 1.0 (the OP posts
//! a logout token) and Front-Channel Logout 1.0 (the OP's page loads a URL naming its session).

use super::head::RequestHead;
use super::state::VmState;
use super::{BodyFor, RequestFlow, Stage};
use crate::config::Settings;
use crate::http::{Action, Body};
use crate::login::Entropy;
use crate::request::HeaderSource;

impl RequestFlow {
    pub(super) fn backchannel(&mut self, _settings: &Settings, _head: &RequestHead<'_>) -> Action {
        self.stage = Stage::Body(BodyFor::Backchannel);
        Action::ReadBody { max: 64 * 1024 }
    }

    pub(super) fn backchannel_body(
        &mut self,
        _settings: &Settings,
        _vm: &mut VmState,
        _request: &dyn HeaderSource,
        _body: Body,
        _now: u64,
        _rng: &mut dyn Entropy,
    ) -> Action {
        Action::Respond(self.internal_error())
    }
}
