//! Carrying out what the flow returns: header changes and local answers, the callout registry,
//! parking and waking requests, and what is deferred to the root context.

use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};

use super::carry::{carry_out, RequestHost};
use super::common::{callout_headers, callout_outcome, internal_error};
use super::request::HostRequest;
use super::runtime::{log, log_line, now_secs, now_since_epoch, HostEntropy};
use crate::config::Settings;
use crate::flow::{AccessFields, LogLine, RequestFlow, VmState};
use crate::http::{Action, Callout, CalloutResult, Forward, LocalResponse, Wake};
use crate::request::HeaderSource;

/// Applies a forward's header changes (see `Forward::header_changes`). `false` when one
/// failed: the request then ends with 500, never half-cleaned.
fn apply(fwd: &Forward) -> bool {
    fwd.header_changes().all(|(name, value)| {
        hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value).is_ok()
    })
}

/// A callout on its way: what is needed to tell a timeout from a failure when it ends.
pub(super) struct PendingCallout {
    pub(super) token: u32,
    started: Duration,
    timeout_ms: u64,
}

impl PendingCallout {
    /// Milliseconds since the callout was sent.
    pub(super) fn elapsed_ms(&self) -> u64 {
        let ms = now_since_epoch().saturating_sub(self.started).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

pub(super) fn dispatch(c: &Callout) -> Option<PendingCallout> {
    let headers = callout_headers(c);
    let body = (!c.body.is_empty()).then_some(c.body.as_slice());
    let timeout = Duration::from_millis(c.timeout_ms);
    match hostcalls::dispatch_http_call(&c.cluster, headers, body, vec![], timeout) {
        Ok(token) => Some(PendingCallout {
            token,
            started: now_since_epoch(),
            timeout_ms: c.timeout_ms,
        }),
        Err(_) => {
            log(
                LogLevel::Warn,
                &format!(
                    "envoy-wam: could not dispatch a callout to cluster {}",
                    c.cluster
                ),
            );
            None
        }
    }
}

/// How the callout `pending` ended (called from `on_http_call_response`).
pub(super) fn callout_result(pending: &PendingCallout, body_size: usize) -> CalloutResult {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|b| {
            std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
        });
    let elapsed = now_since_epoch()
        .saturating_sub(pending.started)
        .as_millis();
    let body = |size| {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    callout_outcome(status, body, body_size, elapsed, pending.timeout_ms)
}

/// Requests of this VM that wait for a callout or for another request's callout, by context
/// id, and which callout belongs to whom. The SDK hands a callout's answer to the context that
/// was active when it was sent, so a request woken inside another request's callback never
/// sends its own callout from there: that is left to the root context's next tick.
#[derive(Default)]
pub(super) struct Registry {
    pub(super) parked: HashMap<u32, Shared>,
    /// Callout token -> the context it answers.
    pub(super) callouts: HashMap<u32, u32>,
    /// Wake-ups and callouts for the root context to carry out (see above).
    deferred: Vec<(u32, Wake)>,
    deferred_callouts: Vec<u32>,
}

/// What one request keeps between callbacks.
pub(super) struct HttpState {
    pub(super) flow: RequestFlow,
    pub(super) callout: Option<PendingCallout>,
    /// A callout decided while this request was woken from another's callback, to be sent
    /// from the root context.
    pub(super) unsent: Option<Callout>,
    pub(super) response_cookies: Vec<String>,
    /// The flow asked for the request body, up to this many bytes.
    pub(super) reading_body: Option<usize>,
    /// The request's headers as the client sent them, kept while it goes on held (see
    /// `Action::ReadBody`): the flow decides on these, not on the held ones.
    pub(super) held: Option<HostRequest>,
    /// The request went on held: it may only end with a local answer.
    pub(super) held_for_body: bool,
    /// The gateway sent its own answer: a held request's response may go on.
    pub(super) answered: bool,
}

pub(super) type Shared = Rc<RefCell<HttpState>>;

/// What a configured VM runs on: the settings and the state its requests share.
#[derive(Clone)]
pub(super) struct Configured {
    pub(super) settings: Rc<Settings>,
    pub(super) vm: Rc<RefCell<VmState>>,
    pub(super) registry: Rc<RefCell<Registry>>,
}

/// Where the host is while it carries out an action: in the request's own callback, or in
/// one where a callout sent now would be owned by someone else.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// The request's own callback, or the root context's: a callout may be sent.
    Safe,
    /// Another request's callback: a callout is deferred to the root context.
    Borrowed,
}

impl Configured {
    /// Carries out `action` for the request `ctx`; returns whether it may go on upstream now
    /// (the caller continues or resumes it).
    pub(super) fn carry_out(
        &self,
        ctx: u32,
        state: &Shared,
        action: Action,
        origin: Origin,
    ) -> bool {
        let request = WasmRequest {
            configured: self,
            ctx,
            state,
            origin,
        };
        carry_out(&request, action)
    }

    /// A callout's answer arrived (in whichever context the SDK chose): continue its owner.
    pub(super) fn deliver(&self, token: u32, body_size: usize, origin: Origin, current: u32) {
        let owner = self.registry.borrow_mut().callouts.remove(&token);
        let Some(ctx) = owner else { return };
        let state = self.registry.borrow().parked.get(&ctx).cloned();
        let Some(state) = state else { return };
        let pending = state.borrow_mut().callout.take();
        let Some(pending) = pending.filter(|p| p.token == token) else {
            return;
        };
        let result = callout_result(&pending, body_size);
        let upstream = state.borrow().flow.awaiting();
        if let Some(upstream) = upstream {
            let ms = pending.elapsed_ms();
            self.vm.borrow_mut().metrics.latency(upstream, ms);
        }
        if ctx != current {
            let _ = hostcalls::set_effective_context(ctx);
        }
        let held = state.borrow_mut().held.take();
        let request = held.unwrap_or_else(HostRequest::read_or_empty);
        let next = state.borrow_mut().flow.on_callout(
            &self.settings,
            &mut self.vm.borrow_mut(),
            &request,
            result,
            now_secs(),
            &mut HostEntropy,
        );
        let was_held = state.borrow().held_for_body;
        state.borrow_mut().held = Some(request);
        // A held request never goes on as itself (see `Action::ReadBody`).
        let next = match next {
            Action::Forward(_) if was_held => Action::Respond(internal_error()),
            other => other,
        };
        if self.carry_out(ctx, &state, next, origin) {
            let _ = hostcalls::resume_http_request();
        }
        if ctx != current {
            let _ = hostcalls::set_effective_context(current);
        }
    }

    /// Wakes the requests the core released. Inside a request's callback (`Borrowed`) they
    /// are run at once unless they need a callout; a dying request defers them all.
    pub(super) fn wake_released(&self, current: u32, origin: Origin, defer_all: bool) {
        let woken = std::mem::take(&mut self.vm.borrow_mut().woken);
        if woken.is_empty() {
            return;
        }
        if defer_all {
            self.registry.borrow_mut().deferred.extend(woken);
            return;
        }
        for (ctx, why) in woken {
            let state = self.registry.borrow().parked.get(&ctx).cloned();
            let Some(state) = state else { continue };
            let _ = hostcalls::set_effective_context(ctx);
            let request = HostRequest::read_or_empty();
            let next = state.borrow_mut().flow.on_wake(
                &self.settings,
                &mut self.vm.borrow_mut(),
                &request,
                why,
                now_secs(),
                &mut HostEntropy,
            );
            if self.carry_out(ctx, &state, next, origin) {
                let _ = hostcalls::resume_http_request();
            }
        }
        let _ = hostcalls::set_effective_context(current);
        // Waking may release others in turn (a woken request that leads a check it finished).
        if !self.vm.borrow().woken.is_empty() {
            self.wake_released(current, origin, false);
        }
    }

    /// The root context's share: deferred wake-ups and callouts, sent from here so their
    /// answers come back to a context that lives as long as the VM.
    pub(super) fn run_deferred(&self, root: u32) {
        let (wakes, callouts) = {
            let mut reg = self.registry.borrow_mut();
            (
                std::mem::take(&mut reg.deferred),
                std::mem::take(&mut reg.deferred_callouts),
            )
        };
        for ctx in callouts {
            let state = self.registry.borrow().parked.get(&ctx).cloned();
            let Some(state) = state else { continue };
            let unsent = state.borrow_mut().unsent.take();
            let Some(callout) = unsent else { continue };
            let _ = hostcalls::set_effective_context(ctx);
            if self.carry_out(ctx, &state, Action::Callout(callout), Origin::Safe) {
                let _ = hostcalls::resume_http_request();
            }
        }
        self.vm.borrow_mut().woken.extend(wakes);
        if !self.vm.borrow().woken.is_empty() {
            self.wake_released(root, Origin::Safe, false);
        }
        let _ = hostcalls::set_effective_context(root);
    }
}

/// One request of this VM, in the callback the host is in (`origin`).
struct WasmRequest<'a> {
    configured: &'a Configured,
    ctx: u32,
    state: &'a Shared,
    origin: Origin,
}

impl WasmRequest<'_> {
    fn registry(&self) -> RefMut<'_, Registry> {
        self.configured.registry.borrow_mut()
    }
}

impl RequestHost for WasmRequest<'_> {
    fn flow(&self) -> RefMut<'_, RequestFlow> {
        RefMut::map(self.state.borrow_mut(), |st| &mut st.flow)
    }

    fn log(&self, line: &LogLine) {
        log_line(line);
    }

    fn write_access_fields(&self, fields: &AccessFields) {
        super::access_log::write(fields);
    }

    fn forward(&self, fwd: Forward) -> bool {
        self.registry().parked.remove(&self.ctx);
        if !apply(&fwd) {
            return false;
        }
        self.state.borrow_mut().response_cookies = fwd.response_cookies;
        true
    }

    fn respond(&self, response: &LocalResponse) {
        self.state.borrow_mut().answered = true;
        self.registry().parked.remove(&self.ctx);
        respond(response);
    }

    fn park(&self) {
        self.registry().parked.insert(self.ctx, self.state.clone());
    }

    fn read_body(&self, max: usize) -> bool {
        // Envoy's Wasm host turns a paused request-headers callback into "stop all", which
        // also withholds the body from this filter: the body is only seen by letting the
        // headers on. They go on stripped to their framing, to a path no application has, and
        // the body stays here; the request ends with the local answer given once the body is
        // read, which resets the upstream stream.
        let mut st = self.state.borrow_mut();
        st.reading_body = Some(max);
        st.held = HostRequest::read();
        st.held_for_body = true;
        drop(st);
        hold_request_headers();
        true
    }

    /// In another request's callback (`Borrowed`) the send is left to the root context: the
    /// SDK would hand the answer to the context active now.
    fn send(&self, callout: Callout) -> bool {
        if self.origin == Origin::Borrowed {
            self.state.borrow_mut().unsent = Some(callout);
            let mut reg = self.registry();
            reg.parked.insert(self.ctx, self.state.clone());
            reg.deferred_callouts.push(self.ctx);
            return true;
        }
        let Some(pending) = dispatch(&callout) else {
            return false;
        };
        let token = pending.token;
        self.state.borrow_mut().callout = Some(pending);
        let mut reg = self.registry();
        reg.callouts.insert(token, self.ctx);
        reg.parked.insert(self.ctx, self.state.clone());
        true
    }

    fn callout_failed(&self) -> Action {
        let request = HostRequest::read_or_empty();
        let c = self.configured;
        let mut st = self.state.borrow_mut();
        st.flow.on_callout(
            &c.settings,
            &mut c.vm.borrow_mut(),
            &request,
            CalloutResult::Failed,
            now_secs(),
            &mut HostEntropy,
        )
    }
}

/// The path a request goes on with while its body is read here (see `Action::ReadBody`).
const HELD_PATH: &str = "/.envoy-wam/held-for-body";

/// Strips the request to what frames its body, so that whatever reaches the route's upstream
/// before the local answer says nothing of the client.
fn hold_request_headers() {
    let keep = |n: &str| {
        n.starts_with(':')
            || matches!(
                n,
                "content-length"
                    | "transfer-encoding"
                    | "host"
                    | "x-forwarded-proto"
                    | "x-request-id"
            )
    };
    if let Some(request) = HostRequest::read() {
        let names: Vec<String> = request
            .headers()
            .iter()
            .map(|(n, _)| n.to_string())
            .filter(|n| !keep(n))
            .collect();
        for name in names {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &name, None);
        }
    }
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(HELD_PATH));
    let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":method", Some("POST"));
}

pub(super) fn respond(r: &LocalResponse) {
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if hostcalls::send_http_response(r.status, headers, Some(&r.body)).is_err() {
        log(LogLevel::Warn, "envoy-wam: could not send a local response");
    }
}
