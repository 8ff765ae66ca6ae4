//! Carrying out what the flow decided, as both hosts do it: the flow's log lines and
//! access-log fields first, then the action, with one rule for a header that cannot be written
//! (the request ends with 500, never half-cleaned) and one for a callout that cannot be sent
//! (the flow is told it failed). Each host maps the steps onto its own ABI ([`RequestHost`]).

use std::cell::RefMut;

use super::common::internal_error;
use crate::flow::{AccessFields, Level, LogLine, RequestFlow};
use crate::http::{Action, Callout, Forward, LocalResponse};

/// One request, as a host reaches it.
pub(crate) trait RequestHost {
    /// The request's flow.
    fn flow(&self) -> RefMut<'_, RequestFlow>;
    fn log(&self, line: &LogLine);
    /// The flow's access-log fields into Envoy's filter state.
    fn write_access_fields(&self, fields: &AccessFields);
    /// Takes the request off any wait, writes the forward's header changes and keeps its
    /// response cookies; `false` when a header could not be written.
    fn forward(&self, fwd: Forward) -> bool;
    /// Takes the request off any wait and sends the local answer.
    fn respond(&self, response: &LocalResponse);
    /// Parks the request until a callout's answer or a wake-up.
    fn park(&self);
    /// The flow asks for the request body (up to `max` bytes); whether the request's
    /// headers go on now.
    fn read_body(&self, max: usize) -> bool;
    /// Sends the callout (or has it sent later) and parks the request; `false` when it could
    /// not be sent.
    fn send(&self, callout: Callout) -> bool;
    /// The flow's next step after its callout could not be sent.
    fn callout_failed(&self) -> Action;
}

/// Carries out `action` for `host`'s request; returns whether the request may go on upstream
/// now (the host continues or resumes it).
pub(crate) fn carry_out(host: &impl RequestHost, action: Action) -> bool {
    let ends = matches!(action, Action::Forward(_) | Action::Respond(_));
    let (lines, fields) = {
        let mut flow = host.flow();
        let fields = if ends {
            flow.take_access_fields()
        } else {
            None
        };
        (flow.take_log(), fields)
    };
    for line in &lines {
        host.log(line);
    }
    if let Some(fields) = fields {
        host.write_access_fields(&fields);
    }
    match action {
        Action::Forward(fwd) => {
            if host.forward(fwd) {
                return true;
            }
            host.log(&LogLine {
                level: Level::Error,
                // As the flow's own lines: each host prefixes them as its log needs.
                message: "a request header could not be written; refusing (500)".into(),
            });
            host.respond(&internal_error());
            false
        }
        Action::Respond(response) => {
            host.respond(&response);
            false
        }
        Action::Wait => {
            host.park();
            false
        }
        Action::ReadBody { max } => host.read_body(max),
        Action::Callout(callout) => {
            if host.send(callout) {
                return false;
            }
            let next = host.callout_failed();
            carry_out(host, next)
        }
    }
}
