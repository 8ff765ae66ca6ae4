//! The proxy-wasm layer: maps Envoy's callbacks onto the sans-IO core and carries out the
//! actions it returns. Nothing here decides anything about access.
//!
//! Host calls that can fail at run time go through `hostcalls` (which returns a `Result`)
//! instead of the SDK's trait helpers (which unwrap), and header values are read as bytes:
//! the SDK's string variants panic on non-UTF-8 values, and a panic would abort the VM.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as HostAction, BufferType, ContextType, LogLevel, MapType, Status};

use crate::config::Settings;
use crate::flow::{Level, LogLine, RequestFlow, VmState, MAX_CALLOUT_BODY};
use crate::http::{Action, Body, Callout, CalloutResult, Forward, LocalResponse, Wake};
use crate::login::Entropy;
use crate::request::{HeaderList, HeaderSource};
use crate::revocation::{SharedStore, StoreError};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(WamRoot {
            id,
            ..WamRoot::default()
        })
    });
}}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn log_line(line: &LogLine) {
    let level = match line.level {
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    log(level, &line.message);
}

fn now_since_epoch() -> Duration {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
}

fn now_secs() -> u64 {
    now_since_epoch().as_secs()
}

/// Seconds since the epoch, refreshed by the root context's tick (every 100 ms). Envoy ticks the
/// root context of every worker's VM, so each VM's clock stays current; reading it costs no host
/// call on the request path, where sessions are judged to the second anyway.
#[derive(Clone, Default)]
struct Clock(Rc<Cell<u64>>);

impl Clock {
    fn refresh(&self) {
        self.0.set(now_secs());
    }

    fn now(&self) -> u64 {
        match self.0.get() {
            0 => now_secs(),
            t => t,
        }
    }
}

/// The request as Envoy has it: every header read in one host call (a name, a value, a
/// repeat or a byte the core must see is never missed by reading headers one by one).
struct HostRequest {
    headers: HeaderList,
}

impl HostRequest {
    /// `None` when Envoy's answer cannot be read: the request is then refused, not routed.
    fn read() -> Option<Self> {
        let bytes = header_map_bytes(MapType::HttpRequestHeaders)?;
        Some(Self {
            headers: HeaderList::from_serialized(bytes)?,
        })
    }
}

impl HostRequest {
    /// Unreadable headers read as none: with no `:path` the core answers 400.
    fn read_or_empty() -> Self {
        Self::read().unwrap_or(Self {
            headers: HeaderList::default(),
        })
    }
}

impl HeaderSource for HostRequest {
    fn headers(&self) -> &HeaderList {
        &self.headers
    }

    fn client_address(&self) -> Option<String> {
        let bytes = hostcalls::get_property(vec!["source", "address"]).ok()??;
        String::from_utf8(bytes).ok()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(now_since_epoch().as_micros()).unwrap_or(u64::MAX)
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> proxy_wasm::types::Status;
}

/// A header map's serialized bytes. The SDK's own reader unwraps names as UTF-8 (a panic
/// would abort the VM); this one leaves parsing to [`HeaderList::from_serialized`], which cannot fail
/// that way.
fn header_map_bytes(map: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host writes a pointer to `size` bytes it allocated with this module's
    // exported allocator (proxy_on_memory_allocate), or leaves it null; ownership passes to us,
    // exactly as in the SDK's `get_map_bytes`.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    if status != proxy_wasm::types::Status::Ok {
        return None;
    }
    if data.is_null() {
        return Some(Vec::new());
    }
    // SAFETY: see above: `data` is a live allocation of `size` bytes owned by us now.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Applies a forward's header changes: removals, identity, then the rest. `false` when one
/// failed: the request then ends with 500, never half-cleaned.
fn apply(fwd: &Forward) -> bool {
    let removed = fwd
        .removed
        .iter()
        .all(|name| hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None).is_ok());
    removed
        && fwd
            .identity
            .iter()
            .chain(fwd.request_headers.iter())
            .all(|(name, value)| {
                hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value.as_deref())
                    .is_ok()
            })
}

/// The host's CSPRNG (WASI `random_get`, which Envoy backs with its own secure random).
struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}

/// A callout on its way: what is needed to tell a timeout from a failure when it ends.
struct PendingCallout {
    token: u32,
    started: Duration,
    timeout_ms: u64,
}

fn dispatch(c: &Callout) -> Option<PendingCallout> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", c.method),
        (":path", &c.path),
        (":authority", &c.authority),
        (":scheme", "https"),
    ];
    headers.extend(c.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
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
fn callout_result(pending: &PendingCallout, body_size: usize) -> CalloutResult {
    let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
        .ok()
        .flatten()
        .and_then(|b| {
            std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
        });
    match status {
        Some(status) if body_size <= MAX_CALLOUT_BODY => {
            let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            CalloutResult::Response { status, body }
        }
        // Too large to be a real answer: treat like garbage.
        Some(status) => CalloutResult::Response {
            status,
            body: Vec::new(),
        },
        None => {
            // Envoy reports a reset, refused connection or timeout as an answer with no headers.
            let elapsed = now_since_epoch().saturating_sub(pending.started);
            if elapsed.as_millis() + 50 >= u128::from(pending.timeout_ms) {
                CalloutResult::TimedOut
            } else {
                CalloutResult::Failed
            }
        }
    }
}

/// Requests of this VM that wait for a callout or for another request's callout, by context
/// id, and which callout belongs to whom. The SDK hands a callout's answer to the context that
/// was active when it was sent, so a request woken inside another request's callback never
/// sends its own callout from there: that is left to the root context's next tick.
#[derive(Default)]
struct Registry {
    parked: HashMap<u32, Shared>,
    /// Callout token -> the context it answers.
    callouts: HashMap<u32, u32>,
    /// Wake-ups and callouts for the root context to carry out (see above).
    deferred: Vec<(u32, Wake)>,
    deferred_callouts: Vec<u32>,
}

/// What one request keeps between callbacks.
struct HttpState {
    flow: RequestFlow,
    callout: Option<PendingCallout>,
    /// A callout decided while this request was woken from another's callback, to be sent
    /// from the root context.
    unsent: Option<Callout>,
    response_cookies: Vec<String>,
    /// The flow asked for the request body, up to this many bytes.
    reading_body: Option<usize>,
    /// The request's headers as the client sent them, kept while it goes on held (see
    /// `Action::ReadBody`): the flow decides on these, not on the held ones.
    held: Option<HostRequest>,
    /// The request went on held: it may only end with a local answer.
    held_for_body: bool,
}

type Shared = Rc<RefCell<HttpState>>;

/// What a configured VM runs on: the settings and the state its requests share.
#[derive(Clone)]
struct Configured {
    settings: Rc<Settings>,
    vm: Rc<RefCell<VmState>>,
    registry: Rc<RefCell<Registry>>,
}

/// Where the host is while it carries out an action: in the request's own callback, or in
/// one where a callout sent now would be owned by someone else.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// The request's own callback, or the root context's: a callout may be sent.
    Safe,
    /// Another request's callback: a callout is deferred to the root context.
    Borrowed,
}

impl Configured {
    /// Carries out `action` for the request `ctx`; returns whether it may go on upstream now
    /// (the caller continues or resumes it).
    fn carry_out(&self, ctx: u32, state: &Shared, action: Action, origin: Origin) -> bool {
        let mut st = state.borrow_mut();
        for line in st.flow.take_log() {
            log_line(&line);
        }
        match action {
            Action::Forward(fwd) => {
                drop(st);
                self.registry.borrow_mut().parked.remove(&ctx);
                if !apply(&fwd) {
                    log(
                        LogLevel::Error,
                        "envoy-wam: a request header could not be written; refusing (500)",
                    );
                    respond(&LocalResponse::new(500).body("text/plain", "internal error\n"));
                    return false;
                }
                state.borrow_mut().response_cookies = fwd.response_cookies;
                true
            }
            Action::Respond(r) => {
                drop(st);
                self.registry.borrow_mut().parked.remove(&ctx);
                respond(&r);
                false
            }
            Action::Wait => {
                drop(st);
                self.registry.borrow_mut().parked.insert(ctx, state.clone());
                false
            }
            Action::ReadBody { max } => {
                // Envoy's Wasm host turns a paused request-headers callback into "stop all",
                // which also withholds the body from this filter: the body is only seen by
                // letting the headers on. They go on stripped to their framing, to a path no
                // application has, and the body stays here; the request ends with the local
                // answer given once the body is read, which resets the upstream stream.
                st.reading_body = Some(max);
                st.held = HostRequest::read();
                st.held_for_body = true;
                drop(st);
                hold_request_headers();
                true
            }
            Action::Callout(callout) => {
                if origin == Origin::Borrowed {
                    st.unsent = Some(callout);
                    drop(st);
                    let mut reg = self.registry.borrow_mut();
                    reg.parked.insert(ctx, state.clone());
                    reg.deferred_callouts.push(ctx);
                    return false;
                }
                st.callout = dispatch(&callout);
                if let Some(p) = &st.callout {
                    let token = p.token;
                    drop(st);
                    let mut reg = self.registry.borrow_mut();
                    reg.callouts.insert(token, ctx);
                    reg.parked.insert(ctx, state.clone());
                    return false;
                }
                let request = HostRequest::read_or_empty();
                let next = st.flow.on_callout(
                    &self.settings,
                    &mut self.vm.borrow_mut(),
                    &request,
                    CalloutResult::Failed,
                    now_secs(),
                    &mut HostEntropy,
                );
                drop(st);
                self.carry_out(ctx, state, next, origin)
            }
        }
    }

    /// A callout's answer arrived (in whichever context the SDK chose): continue its owner.
    fn deliver(&self, token: u32, body_size: usize, origin: Origin, current: u32) {
        let owner = self.registry.borrow_mut().callouts.remove(&token);
        let Some(ctx) = owner else { return };
        let state = self.registry.borrow().parked.get(&ctx).cloned();
        let Some(state) = state else { return };
        let pending = state.borrow_mut().callout.take();
        let Some(pending) = pending.filter(|p| p.token == token) else {
            return;
        };
        let result = callout_result(&pending, body_size);
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
            Action::Forward(_) if was_held => {
                Action::Respond(LocalResponse::new(500).body("text/plain", "internal error\n"))
            }
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
    fn wake_released(&self, current: u32, origin: Origin, defer_all: bool) {
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
    fn run_deferred(&self, root: u32) {
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

fn respond(r: &LocalResponse) {
    let headers: Vec<(&str, &str)> = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if hostcalls::send_http_response(r.status, headers, Some(&r.body)).is_err() {
        log(LogLevel::Warn, "envoy-wam: could not send a local response");
    }
}

/// Envoy's shared data: one store for every worker's VM of this plugin (same `vm_id`).
struct HostSharedData;

impl SharedStore for HostSharedData {
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(bytes), Some(cas))) => Some((bytes, cas)),
            _ => None,
        }
    }

    fn store(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Other),
        }
    }
}

#[derive(Default)]
struct WamRoot {
    id: u32,
    configured: Option<Configured>,
    clock: Clock,
    discovery: Option<PendingCallout>,
}

impl Context for WamRoot {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(c) = &self.configured else { return };
        if let Some(pending) = self.discovery.take_if(|p| p.token == token) {
            let result = callout_result(&pending, body_size);
            let line = c.vm.borrow_mut().on_discovery(&c.settings, result);
            log_line(&line);
            return;
        }
        c.deliver(token, body_size, Origin::Safe, self.id);
        c.wake_released(self.id, Origin::Safe, false);
    }
}

impl RootContext for WamRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let Ok(Some(bytes)) = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
        else {
            log(
                LogLevel::Critical,
                "envoy-wam: invalid configuration at `(root)`: no plugin configuration given",
            );
            return false;
        };
        let settings = match Settings::from_json(&bytes) {
            Ok(s) => s,
            Err(e) => {
                log(LogLevel::Critical, &format!("envoy-wam: {e}"));
                return false;
            }
        };
        let applications = match settings.policy_is_implicit {
            true => "no policy: every path needs a session".to_string(),
            false => format!("{} applications", settings.policy.applications().len()),
        };
        log(
            LogLevel::Info,
            &format!(
                "envoy-wam: configured for issuer {} (client {}, cluster {}{}; {applications})",
                settings.op.issuer,
                settings.client.client_id,
                settings.op.cluster,
                if settings.op.discovery.is_some() {
                    ", discovery"
                } else {
                    ""
                },
            ),
        );
        // A new configuration may name another OP: this VM's keys, sessions and endpoints start over.
        let mut vm = VmState::new(&settings);
        vm.store = Rc::new(HostSharedData);
        self.configured = Some(Configured {
            settings: Rc::new(settings),
            vm: Rc::new(RefCell::new(vm)),
            registry: Rc::new(RefCell::new(Registry::default())),
        });
        self.discovery = None;
        self.clock.refresh();
        if hostcalls::set_tick_period(Duration::from_millis(TICK_MS)).is_err() {
            // The tick sends what requests woken in another request's callback need, and keeps
            // the clock: without it such requests would hang, so the filter does not start.
            log(
                LogLevel::Critical,
                "envoy-wam: the host gives the root context no tick; refusing to start",
            );
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        self.clock.refresh();
        let Some(c) = &self.configured else { return };
        // Shared state first: it may release requests that waited for another worker's
        // validation, which the deferred run below then wakes.
        let line = c.vm.borrow_mut().on_tick(&c.settings, self.clock.now());
        if let Some(line) = line {
            log_line(&line);
        }
        c.run_deferred(self.id);
        let suppressed = c.vm.borrow_mut().refused_lines.roll(self.clock.now());
        if let Some(line) = suppressed {
            log_line(&line);
        }
        if self.discovery.is_some() {
            return;
        }
        let due =
            c.vm.borrow_mut()
                .discovery_due(&c.settings, self.clock.now());
        if let Some(callout) = due {
            self.discovery = dispatch(&callout);
            if self.discovery.is_none() {
                c.vm.borrow_mut()
                    .on_discovery(&c.settings, CalloutResult::Failed);
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(WamHttp {
            ctx: context_id,
            clock: self.clock.clone(),
            configured: self.configured.clone(),
            state: Rc::new(RefCell::new(HttpState {
                flow: RequestFlow::for_context(context_id),
                callout: None,
                unsent: None,
                response_cookies: Vec::new(),
                reading_body: None,
                held: None,
                held_for_body: false,
            })),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// How often the root context ticks: the clock's resolution, and the longest a deferred
/// wake-up waits.
const TICK_MS: u64 = 100;

struct WamHttp {
    ctx: u32,
    clock: Clock,
    configured: Option<Configured>,
    state: Shared,
}

impl Context for WamHttp {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(c) = self.configured.clone() else {
            return;
        };
        c.deliver(token, body_size, Origin::Safe, self.ctx);
        c.wake_released(self.ctx, Origin::Borrowed, false);
    }

    fn on_done(&mut self) -> bool {
        let Some(c) = self.configured.clone() else {
            return true;
        };
        let was_parked = c.registry.borrow_mut().parked.remove(&self.ctx).is_some();
        if was_parked {
            let mut st = self.state.borrow_mut();
            if let Some(p) = st.callout.take() {
                c.registry.borrow_mut().callouts.remove(&p.token);
            }
            st.flow.on_abandon(&mut c.vm.borrow_mut(), self.clock.now());
            drop(st);
            c.wake_released(self.ctx, Origin::Borrowed, true);
        }
        true
    }
}

impl WamHttp {
    /// Hands the flow the body it asked for and carries out what it decides.
    fn body_read(&mut self, c: &Configured, body: Body) -> HostAction {
        let held = {
            let mut st = self.state.borrow_mut();
            st.reading_body = None;
            st.held.take()
        };
        let request = held.unwrap_or_else(HostRequest::read_or_empty);
        let action = self.state.borrow_mut().flow.on_body(
            &c.settings,
            &mut c.vm.borrow_mut(),
            &request,
            body,
            self.clock.now(),
            &mut HostEntropy,
        );
        let action = match action {
            // The request went on held (see `Action::ReadBody`): it may not go on as itself.
            Action::Forward(_) | Action::ReadBody { .. } => {
                log(
                    LogLevel::Error,
                    "envoy-wam: a request whose body was read cannot be forwarded; refusing",
                );
                Action::Respond(LocalResponse::new(500).body("text/plain", "internal error\n"))
            }
            other => other,
        };
        self.state.borrow_mut().held = Some(request);
        c.carry_out(self.ctx, &self.state, action, Origin::Safe);
        c.wake_released(self.ctx, Origin::Borrowed, false);
        // Never let the held body go on: the request ends with the local answer.
        HostAction::Pause
    }
}

impl HttpContext for WamHttp {
    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> HostAction {
        let Some(max) = self.state.borrow().reading_body else {
            return HostAction::Continue;
        };
        let Some(c) = self.configured.clone() else {
            return HostAction::Pause;
        };
        if body_size > max {
            return self.body_read(&c, Body::TooLarge);
        }
        if !end_of_stream {
            // Paused, Envoy keeps buffering: the next call has the whole body so far.
            return HostAction::Pause;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.body_read(&c, Body::Complete(body))
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> HostAction {
        let Some(c) = self.configured.clone() else {
            // No valid configuration: fail closed.
            respond(&LocalResponse::new(503).body("text/plain", "envoy-wam is not configured\n"));
            return HostAction::Pause;
        };
        let request = HostRequest::read_or_empty();
        let action = self.state.borrow_mut().flow.on_request(
            &c.settings,
            &mut c.vm.borrow_mut(),
            &request,
            self.clock.now(),
            &mut HostEntropy,
        );
        let go_on = c.carry_out(self.ctx, &self.state, action, Origin::Safe);
        c.wake_released(self.ctx, Origin::Borrowed, false);
        if end_of_stream && self.state.borrow().reading_body.is_some() {
            // No body follows: the flow gets an empty one now.
            return self.body_read(&c, Body::Complete(Vec::new()));
        }
        if go_on {
            HostAction::Continue
        } else {
            HostAction::Pause
        }
    }

    fn on_http_response_headers(
        &mut self,
        _num_headers: usize,
        _end_of_stream: bool,
    ) -> HostAction {
        for cookie in self.state.borrow_mut().response_cookies.drain(..) {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        HostAction::Continue
    }
}
