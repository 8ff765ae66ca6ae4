//! The proxy-wasm layer: maps Envoy's callbacks onto the sans-IO core and carries out the
//! actions it returns. Nothing here decides anything about access.
//!
//! Host calls that can fail at run time go through `hostcalls` (which returns a `Result`)
//! instead of the SDK's trait helpers (which unwrap), and header values are read as bytes:
//! the SDK's string variants panic on non-UTF-8 values, and a panic would abort the VM.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as HostAction, BufferType, ContextType, LogLevel, MapType};

use crate::config::Settings;
use crate::gateway::{HeaderSource, Level, LogLine, RequestFlow, VmState, MAX_CALLOUT_BODY};
use crate::http::{Action, Callout, CalloutResult, Forward, LocalResponse};
use crate::login::Entropy;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(WamRoot::default()) });
}}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn log_line(line: &LogLine) {
    let level = match line.level {
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
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

/// Seconds since the epoch, refreshed by the root context's one-second tick. Envoy ticks the
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

/// The request headers, read from Envoy one at a time as the core asks for them. A value that
/// is not UTF-8 reads as absent (no session cookie, no path match): it then cannot open a
/// session, so the request is refused rather than forwarded.
struct HostHeaders;

impl HeaderSource for HostHeaders {
    fn header(&self, name: &str) -> Option<String> {
        let bytes = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok()??;
        String::from_utf8(bytes).ok()
    }
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

/// What a configured VM runs on: the settings and the state its requests share.
#[derive(Clone)]
struct Configured {
    settings: Rc<Settings>,
    vm: Rc<RefCell<VmState>>,
}

#[derive(Default)]
struct WamRoot {
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
        let Some(pending) = self.discovery.take_if(|p| p.token == token) else {
            return;
        };
        let Some(c) = &self.configured else { return };
        let result = callout_result(&pending, body_size);
        let line = c.vm.borrow_mut().on_discovery(&c.settings, result);
        log_line(&line);
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
        log(
            LogLevel::Info,
            &format!(
                "envoy-wam: configured for issuer {} (client {}, cluster {}{})",
                settings.op.issuer,
                settings.client.client_id,
                settings.op.cluster,
                if settings.op.discovery.is_some() {
                    ", discovery"
                } else {
                    ""
                }
            ),
        );
        // A new configuration may name another OP: this VM's keys, sessions and endpoints start over.
        let vm = VmState::new(&settings);
        self.configured = Some(Configured {
            settings: Rc::new(settings),
            vm: Rc::new(RefCell::new(vm)),
        });
        self.discovery = None;
        self.clock.refresh();
        if hostcalls::set_tick_period(Duration::from_secs(1)).is_err() {
            log(
                LogLevel::Warn,
                "envoy-wam: no tick; reading the clock on every request",
            );
            self.clock = Clock::default();
        }
        true
    }

    fn on_tick(&mut self) {
        self.clock.refresh();
        let Some(c) = &self.configured else { return };
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

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(WamHttp {
            clock: self.clock.clone(),
            configured: self.configured.clone(),
            flow: RequestFlow::new(),
            callout: None,
            response_cookies: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct WamHttp {
    clock: Clock,
    configured: Option<Configured>,
    flow: RequestFlow,
    callout: Option<PendingCallout>,
    response_cookies: Vec<String>,
}

impl WamHttp {
    fn respond(&self, r: &LocalResponse) {
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if hostcalls::send_http_response(r.status, headers, Some(&r.body)).is_err() {
            log(LogLevel::Warn, "envoy-wam: could not send a local response");
        }
    }

    fn apply_forward(&mut self, fwd: Forward) {
        let identity = fwd.identity.iter().flat_map(|e| e.headers.iter());
        for (name, value) in identity.chain(fwd.request_headers.iter()) {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value.as_deref());
        }
        self.response_cookies = fwd.response_cookies;
    }

    /// Carries out `action`; returns whether the request may go on upstream now.
    fn carry_out(&mut self, c: &Configured, action: Action) -> bool {
        for line in self.flow.take_log() {
            log_line(&line);
        }
        match action {
            Action::Forward(fwd) => {
                self.apply_forward(fwd);
                true
            }
            Action::Respond(r) => {
                self.respond(&r);
                false
            }
            Action::Callout(callout) => {
                self.callout = dispatch(&callout);
                if self.callout.is_some() {
                    return false;
                }
                let next = self.flow.on_callout(
                    &c.settings,
                    &mut c.vm.borrow_mut(),
                    CalloutResult::Failed,
                    now_secs(),
                    &mut HostEntropy,
                );
                self.carry_out(c, next)
            }
        }
    }
}

impl Context for WamHttp {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let Some(pending) = self.callout.take_if(|p| p.token == token) else {
            return;
        };
        let Some(c) = self.configured.clone() else {
            return;
        };
        let result = callout_result(&pending, body_size);
        let next = self.flow.on_callout(
            &c.settings,
            &mut c.vm.borrow_mut(),
            result,
            now_secs(),
            &mut HostEntropy,
        );
        if self.carry_out(&c, next) {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl HttpContext for WamHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        let Some(c) = self.configured.clone() else {
            // No valid configuration: fail closed.
            self.respond(
                &LocalResponse::new(503).body("text/plain", "envoy-wam is not configured\n"),
            );
            return HostAction::Pause;
        };
        let action = self.flow.on_request(
            &c.settings,
            &mut c.vm.borrow_mut(),
            &HostHeaders,
            self.clock.now(),
            &mut HostEntropy,
        );
        if self.carry_out(&c, action) {
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
        for cookie in self.response_cookies.drain(..) {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        HostAction::Continue
    }
}
