//! What both hosts do alike, with no host calls: the start-up line and a VM's state for a
//! configuration, the headers of a callout, how a callout that ended without an answer is
//! told apart (timeout or failure), and the rule for a request whose body was read.

use std::rc::Rc;

use crate::config::Settings;
use crate::flow::{VmState, MAX_CALLOUT_BODY};
use crate::http::{Action, Callout, CalloutResult, LocalResponse};
use crate::revocation::SharedStore;

/// How often a worker ticks (the wasm root context's period; the native host's ticker): the
/// clock's resolution, and the longest a deferred wake-up waits.
pub(crate) const TICK_MS: u64 = 100;

/// The reload stats (as Pomerium's `config_last_reload_success`): whether the last
/// configuration was taken (1 or 0), and how many were refused.
pub(crate) const RELOAD_LAST_SUCCESS: &str = "envoy_wam.config_last_reload_success";
pub(crate) const RELOAD_FAILED: &str = "envoy_wam.config_reload_failed";

/// The lines the filter logs when a configuration is taken: each web session's OP and client,
/// each named token provider, the applications and the build.
pub(crate) fn configured_lines(settings: &Settings, build: &str) -> Vec<String> {
    let mut lines: Vec<String> = settings
        .web_sessions
        .iter()
        .map(|web| {
            let op = settings.op(web.op);
            let discovery = if op.discovery.is_some() {
                ", discovery"
            } else {
                ""
            };
            format!(
                "envoy-wam: web session `{}` signs in at {} (client {}, cluster {}{discovery})",
                web.name, op.issuer, web.client.client_id, op.cluster,
            )
        })
        .collect();
    for p in &settings.providers {
        if let Some(name) = &p.name {
            let issuer = &settings.op(p.op).issuer;
            lines.push(format!("envoy-wam: token provider `{name}` is {issuer}"));
        }
    }
    let applications = match settings.policy_is_implicit {
        true => "no policy: every path needs a session".to_string(),
        false => format!("{} applications", settings.policy.applications().len()),
    };
    lines.push(format!("envoy-wam: {applications}; {build} build"));
    lines
}

/// A VM's state for `settings`, sharing what workers share through `store`. A new
/// configuration may name other OPs: keys, sessions and endpoints start over.
pub(crate) fn new_vm(settings: &Settings, store: Rc<dyn SharedStore>, now: u64) -> VmState {
    let mut vm = VmState::new(settings);
    vm.store = store;
    // The logouts so far, before the first request: a new configuration (a reload) or a new
    // worker must not let a logged-out cookie through until its first tick.
    vm.revoked.refresh(vm.store.as_ref(), now);
    let validates = settings
        .web_sessions
        .iter()
        .any(|w| w.session.validate_interval_s > 0 || w.session.keep_access_token);
    if validates {
        vm.prepare_validation_slots();
    }
    vm
}

/// A callout's request headers: the pseudo-headers, then the flow's own.
pub(crate) fn callout_headers(c: &Callout) -> Vec<(&str, &str)> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", c.method),
        (":path", &c.path),
        (":authority", &c.authority),
        (":scheme", "https"),
    ];
    headers.extend(c.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    headers
}

/// How a callout ended, from its `:status` (none when Envoy reports a reset, a refused
/// connection or a timeout without an answer), its body and how long it took.
pub(crate) fn callout_outcome(
    status: Option<u16>,
    body: impl FnOnce(usize) -> Vec<u8>,
    body_size: usize,
    elapsed_ms: u128,
    timeout_ms: u64,
) -> CalloutResult {
    match status {
        Some(status) if body_size <= MAX_CALLOUT_BODY => CalloutResult::Response {
            status,
            body: body(body_size),
        },
        // Too large to be a real answer: treat like garbage.
        Some(status) => CalloutResult::Response {
            status,
            body: Vec::new(),
        },
        None if elapsed_ms + 50 >= u128::from(timeout_ms) => CalloutResult::TimedOut,
        None => CalloutResult::Failed,
    }
}

pub(crate) fn internal_error() -> LocalResponse {
    LocalResponse::new(500).body("text/plain", "internal error\n")
}

/// A request whose body the flow read never goes on as itself (the wasm host lets it on held,
/// see `Action::ReadBody`; both hosts keep the one rule): a forward becomes a 500.
pub(crate) fn after_body(action: Action) -> (Action, bool) {
    match action {
        Action::Forward(_) | Action::ReadBody { .. } => (Action::Respond(internal_error()), true),
        other => (other, false),
    }
}

/// The log line for [`after_body`]'s refusal.
pub(crate) const FORWARD_AFTER_BODY: &str =
    "envoy-wam: a request whose body was read cannot be forwarded; refusing";
