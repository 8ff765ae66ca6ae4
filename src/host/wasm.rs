//! The proxy-wasm contexts: the entry point, the root context (configuration, the tick,
//! discovery) and the HTTP context, whose callbacks hand the request to the flow and its
//! answer to `Configured::carry_out`.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action as HostAction, BufferType, ContextType, LogLevel, MapType};

use super::actions::{
    callout_result, dispatch, respond, Configured, HttpState, Origin, PendingCallout, Registry,
    Shared,
};
use super::common::{after_body, configured_lines, new_vm, FORWARD_AFTER_BODY, TICK_MS};
use super::request::HostRequest;
use super::runtime::{log, log_line, now_secs, Clock, HostEntropy};
use super::shared::HostSharedData;
use super::stats::Stats;
use crate::config::Settings;
use crate::flow::RequestFlow;
use crate::http::{Body, CalloutResult, LocalResponse};
use crate::metrics::Upstream;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(WamRoot {
            id,
            ..WamRoot::default()
        })
    });
}}

#[derive(Default)]
struct WamRoot {
    id: u32,
    configured: Option<Configured>,
    clock: Clock,
    /// Discovery requests under way: (OP index, callout).
    discovery: Vec<(usize, PendingCallout)>,
    /// This VM's metrics as Envoy knows them.
    stats: Option<Stats>,
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
        if let Some(at) = self.discovery.iter().position(|(_, p)| p.token == token) {
            let (op, pending) = self.discovery.swap_remove(at);
            let result = callout_result(&pending, body_size);
            let ms = pending.elapsed_ms();
            c.vm.borrow_mut().metrics.latency(Upstream::Discovery, ms);
            let line = c.vm.borrow_mut().on_discovery(&c.settings, op, result);
            log_line(&line);
            return;
        }
        c.deliver(token, body_size, Origin::Safe, self.id);
        c.wake_released(self.id, Origin::Safe, false);
    }

    fn on_done(&mut self) -> bool {
        // The plugin goes (a new configuration, Envoy shutting down): its caches with it.
        if let Some(stats) = self.stats.as_mut() {
            stats.withdraw();
        }
        true
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
            super::reload::record(false);
            return false;
        };
        let settings = match Settings::from_json(&bytes) {
            Ok(s) => s,
            Err(e) => {
                log(LogLevel::Critical, &format!("envoy-wam: {e}"));
                super::reload::record(false);
                return false;
            }
        };
        for line in configured_lines(&settings, "wasm") {
            log(LogLevel::Info, &line);
        }
        let vm = new_vm(&settings, Rc::new(HostSharedData), now_secs());
        self.stats = Some(Stats::define(&vm.metrics, self.stats.take()));
        self.configured = Some(Configured {
            settings: Rc::new(settings),
            vm: Rc::new(RefCell::new(vm)),
            registry: Rc::new(RefCell::new(Registry::default())),
        });
        self.discovery.clear();
        self.clock.refresh();
        if hostcalls::set_tick_period(Duration::from_millis(TICK_MS)).is_err() {
            // The tick sends what requests woken in another request's callback need, and keeps
            // the clock: without it such requests would hang, so the filter does not start.
            log(
                LogLevel::Critical,
                "envoy-wam: the host gives the root context no tick; refusing to start",
            );
            super::reload::record(false);
            return false;
        }
        super::reload::record(true);
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
        if let Some(stats) = self.stats.as_mut() {
            stats.flush(&mut c.vm.borrow_mut());
        }
        let suppressed = c.vm.borrow_mut().refused_lines.roll(self.clock.now());
        if let Some(line) = suppressed {
            log_line(&line);
        }
        // Each OP on its own schedule: one that cannot be reached holds up only its own
        // applications.
        let due =
            c.vm.borrow_mut()
                .discoveries_due(&c.settings, self.clock.now());
        for (op, callout) in due {
            match dispatch(&callout) {
                Some(pending) => self.discovery.push((op, pending)),
                None => {
                    // Retried on the discovery schedule; Envoy already logged why.
                    let _ =
                        c.vm.borrow_mut()
                            .on_discovery(&c.settings, op, CalloutResult::Failed);
                }
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
                answered: false,
            })),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

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
            st.flow.on_abandon_in(
                &c.settings,
                &mut c.vm.borrow_mut(),
                self.clock.now(),
                &mut HostEntropy,
            );
            drop(st);
            c.wake_released(self.ctx, Origin::Borrowed, true);
        }
        true
    }
}

impl WamHttp {
    /// A request body past the one the flow read: held back when the request went on held
    /// (see `Action::ReadBody`), whatever comes of it.
    fn unless_held(&self) -> HostAction {
        match self.state.borrow().held_for_body {
            true => HostAction::Pause,
            false => HostAction::Continue,
        }
    }

    /// The upstream's answer to a held request (a backend that answers before reading the
    /// body): it never reaches the client, which gets the gateway's own answer once the body
    /// is read.
    fn backend_answers_held(&self) -> bool {
        let st = self.state.borrow();
        st.held_for_body && !st.answered
    }

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
        // The request went on held (see `Action::ReadBody`): it may not go on as itself.
        let (action, refused) = after_body(action);
        if refused {
            log(LogLevel::Error, FORWARD_AFTER_BODY);
        }
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
            return self.unless_held();
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

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> HostAction {
        let Some(max) = self.state.borrow().reading_body else {
            return self.unless_held();
        };
        let Some(c) = self.configured.clone() else {
            return HostAction::Pause;
        };
        // Trailers end the body (HTTP/2, or HTTP/1 with trailers on): what is buffered is all
        // of it. Let through, they would carry the held body upstream.
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, max.saturating_add(1))
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = match body.len() > max {
            true => Body::TooLarge,
            false => Body::Complete(body),
        };
        self.body_read(&c, body)
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
        if self.backend_answers_held() {
            // Envoy passes no more of the body once the upstream has answered: the flow
            // decides without it, now.
            let reading = self.state.borrow().reading_body.is_some();
            if let Some(c) = self.configured.clone().filter(|_| reading) {
                self.body_read(&c, Body::Unreadable);
            }
            return HostAction::Pause;
        }
        for cookie in self.state.borrow_mut().response_cookies.drain(..) {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie);
        }
        HostAction::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, _end_of_stream: bool) -> HostAction {
        match self.backend_answers_held() {
            true => HostAction::Pause,
            false => HostAction::Continue,
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> HostAction {
        match self.backend_answers_held() {
            true => HostAction::Pause,
            false => HostAction::Continue,
        }
    }
}
