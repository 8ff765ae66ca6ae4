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
use proxy_wasm::types::{Action as HostAction, ContextType, LogLevel, MapType};

use crate::config::Settings;
use crate::gateway::{HeaderSource, Level, RequestFlow, VmState, MAX_CALLOUT_BODY};
use crate::http::{Action, CalloutResult, Forward, LocalResponse};
use crate::login::Entropy;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(WamRoot::default()) });
}}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn now_millis() -> u128 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis())
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

#[derive(Default)]
struct WamRoot {
    settings: Option<Rc<Settings>>,
    vm: Rc<RefCell<VmState>>,
    clock: Clock,
}

impl Context for WamRoot {}

impl RootContext for WamRoot {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        ) {
            Ok(Some(b)) => b,
            _ => {
                log(
                    LogLevel::Critical,
                    "envoy-wam: invalid configuration at `(root)`: no plugin configuration given",
                );
                return false;
            }
        };
        match Settings::from_json(&bytes) {
            Ok(settings) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "envoy-wam: configured for issuer {} (client {}, cluster {})",
                        settings.op.issuer, settings.client.client_id, settings.op.cluster
                    ),
                );
                self.settings = Some(Rc::new(settings));
                self.clock.refresh();
                if hostcalls::set_tick_period(Duration::from_secs(1)).is_err() {
                    log(
                        LogLevel::Warn,
                        "envoy-wam: no tick; reading the clock on every request",
                    );
                    self.clock = Clock::default();
                }
                // A new configuration may name another OP: forget this VM's keys and sessions.
                self.vm = Rc::new(RefCell::new(VmState::default()));
                true
            }
            Err(e) => {
                log(LogLevel::Critical, &format!("envoy-wam: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        self.clock.refresh();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(WamHttp {
            clock: self.clock.clone(),
            settings: self.settings.clone(),
            vm: self.vm.clone(),
            flow: RequestFlow::new(),
            callout: None,
            response_cookies: Vec::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct PendingCallout {
    token: u32,
    started_ms: u128,
    timeout_ms: u64,
}

struct WamHttp {
    clock: Clock,
    settings: Option<Rc<Settings>>,
    vm: Rc<RefCell<VmState>>,
    flow: RequestFlow,
    callout: Option<PendingCallout>,
    response_cookies: Vec<String>,
}

impl WamHttp {
    fn flush_log(&mut self) {
        for line in self.flow.take_log() {
            let level = match line.level {
                Level::Info => LogLevel::Info,
                Level::Warn => LogLevel::Warn,
            };
            // Envoy prefixes lines from a request context with the plugin name already.
            log(level, &line.message);
        }
    }

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
    fn carry_out(&mut self, action: Action, settings: &Settings) -> bool {
        self.flush_log();
        match action {
            Action::Forward(fwd) => {
                self.apply_forward(fwd);
                true
            }
            Action::Respond(r) => {
                self.respond(&r);
                false
            }
            Action::Callout(c) => {
                let mut headers: Vec<(&str, &str)> = vec![
                    (":method", c.method),
                    (":path", &c.path),
                    (":authority", &c.authority),
                    (":scheme", "https"),
                ];
                headers.extend(c.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
                let body = (!c.body.is_empty()).then_some(c.body.as_slice());
                match hostcalls::dispatch_http_call(
                    &c.cluster,
                    headers,
                    body,
                    vec![],
                    Duration::from_millis(c.timeout_ms),
                ) {
                    Ok(token) => {
                        self.callout = Some(PendingCallout {
                            token,
                            started_ms: now_millis(),
                            timeout_ms: c.timeout_ms,
                        });
                    }
                    Err(_) => {
                        log(
                            LogLevel::Warn,
                            &format!(
                                "envoy-wam: could not dispatch a callout to cluster {}",
                                c.cluster
                            ),
                        );
                        let vm = self.vm.clone();
                        let next = self.flow.on_callout(
                            settings,
                            &mut vm.borrow_mut(),
                            CalloutResult::Failed,
                            now_secs(),
                            &mut HostEntropy,
                        );
                        return self.carry_out(next, settings);
                    }
                }
                false
            }
        }
    }
}

impl Context for WamHttp {
    fn on_http_call_response(
        &mut self,
        token: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(pending) = self.callout.take().filter(|p| p.token == token) else {
            return;
        };
        let Some(settings) = self.settings.clone() else {
            return;
        };
        let status = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|b| {
                std::str::from_utf8(&b)
                    .ok()
                    .and_then(|s| s.parse::<u16>().ok())
            });
        let result = match status {
            Some(status) if body_size <= MAX_CALLOUT_BODY => {
                let body = hostcalls::get_buffer(
                    proxy_wasm::types::BufferType::HttpCallResponseBody,
                    0,
                    body_size,
                )
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
                let elapsed = now_millis().saturating_sub(pending.started_ms);
                if elapsed + 50 >= u128::from(pending.timeout_ms) {
                    CalloutResult::TimedOut
                } else {
                    CalloutResult::Failed
                }
            }
        };
        let vm = self.vm.clone();
        let next = self.flow.on_callout(
            &settings,
            &mut vm.borrow_mut(),
            result,
            now_secs(),
            &mut HostEntropy,
        );
        if self.carry_out(next, &settings) {
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl HttpContext for WamHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> HostAction {
        let Some(settings) = self.settings.clone() else {
            // No valid configuration: fail closed.
            self.respond(
                &LocalResponse::new(503).body("text/plain", "envoy-wam is not configured\n"),
            );
            return HostAction::Pause;
        };
        let vm = self.vm.clone();
        let action = self.flow.on_request(
            &settings,
            &mut vm.borrow_mut(),
            &HostHeaders,
            self.clock.now(),
            &mut HostEntropy,
        );
        if self.carry_out(action, &settings) {
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
