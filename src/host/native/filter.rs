//! Envoy's dynamic-module hooks mapped onto the flow, and the flow's actions carried out.
//! Nothing here decides anything about access.
//!
//! A request's hooks run on its worker thread, one at a time; everything a hook does to
//! Envoy goes through that request's own filter handle. A request parked for another's
//! callout is woken by a scheduler event posted to it (see `Worker::wake_released`), so no
//! hook ever touches another request's stream.

use std::cell::{Cell, RefCell, RefMut};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::abi::{log, CalloutAnswer, ConfigHandle, Filter, LogLevel, Scheduler, Status};
use super::stats::{record_reload, StatIds};
use super::worker::{
    log_line, now_ms, now_secs, now_since_epoch, ticker_remove, Worker, EVENT_TICK, EVENT_WAKE,
};
use crate::config::Settings;
use crate::flow::{AccessFields, LogLine, RequestFlow};
use crate::host::carry::{carry_out, RequestHost};
use crate::host::common::{
    after_body, callout_headers, callout_outcome, configured_lines, internal_error,
    FORWARD_AFTER_BODY,
};
use crate::http::{Action, Body, Callout, CalloutResult, Forward, LocalResponse, Wake};
use crate::login::Entropy;
use crate::metrics::{Metrics, Upstream};
use crate::request::{HeaderList, HeaderSource};

/// Set from `ENVOY_WAM_TEST_PANIC=1` in Envoy's environment at load: a request carrying
/// [`PANIC_HEADER`] then panics in its headers hook (the end-to-end test of the panic guard).
/// Off unless the operator of the Envoy process turns it on; a client cannot.
static TEST_PANIC: AtomicBool = AtomicBool::new(false);
const PANIC_HEADER: &str = "x-envoy-wam-test-panic";

static NEXT_CONFIG: AtomicU64 = AtomicU64::new(1);

pub(super) fn program_init() {
    if std::env::var("ENVOY_WAM_TEST_PANIC").as_deref() == Ok("1") {
        TEST_PANIC.store(true, Ordering::Relaxed);
        log(
            LogLevel::Warn,
            "envoy-wam: ENVOY_WAM_TEST_PANIC=1: requests with x-envoy-wam-test-panic panic (tests only)",
        );
    }
}

/// One filter configuration, as Envoy holds it (shared by every worker): the JSON each worker
/// reads into its own state on first use, and Envoy's ids of its metrics.
pub(super) struct Config {
    pub(super) id: u64,
    pub(super) json: Vec<u8>,
    /// Cleared when Envoy destroys the configuration: workers then drop their state for it.
    pub(super) alive: Arc<AtomicBool>,
    pub(super) stats: Arc<StatIds>,
    /// The filter's name in Envoy's configuration (`filter_name`): what the revocation list
    /// is shared under, so that it outlives a reload, as the wasm build's shared data
    /// outlives its configurations (it is Envoy's, per `vm_id`).
    pub(super) filter_name: Arc<str>,
}

impl Config {
    /// `None` (Envoy refuses the configuration) when the JSON is not a valid one; the log
    /// line names the field, as in the wasm build. Runs on the main thread, the one place
    /// metrics can be defined.
    pub(super) fn new(envoy: ConfigHandle, name: &[u8], json: Vec<u8>) -> Option<Config> {
        let settings = match Settings::from_json(&json) {
            Ok(settings) => settings,
            Err(e) => {
                log(LogLevel::Critical, &format!("envoy-wam: {e}"));
                record_reload(envoy, false);
                return None;
            }
        };
        for line in configured_lines(&settings, "native") {
            log(LogLevel::Info, &line);
        }
        let (stats, failed) = StatIds::define(envoy, &Metrics::new(&settings));
        if failed > 0 {
            log(
                LogLevel::Warn,
                &format!("envoy-wam: Envoy refused to define {failed} metrics"),
            );
        }
        record_reload(envoy, true);
        Some(Config {
            id: NEXT_CONFIG.fetch_add(1, Ordering::Relaxed),
            filter_name: Arc::from(String::from_utf8_lossy(name)),
            json,
            alive: Arc::new(AtomicBool::new(true)),
            stats: Arc::new(stats),
        })
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        // Destroyed on the main thread; each worker drops its state for it when it next takes
        // in a new configuration (see `Worker::for_config`).
        self.alive.store(false, Ordering::Relaxed);
    }
}

/// A callout on its way.
struct Pending {
    id: u64,
    started_ms: u64,
    timeout_ms: u64,
}

/// What one request keeps between hooks.
struct Req {
    flow: RequestFlow,
    callout: Option<Pending>,
    response_cookies: Vec<String>,
    /// The flow asked for the request body, up to this many bytes.
    reading_body: Option<usize>,
    /// The headers hook said "stop" and the request has not been let on or answered yet:
    /// body data must be held back (Envoy would take "continue" on data as going on).
    stopped: bool,
    /// Waiting for the discovery callout this request sent, before its own flow runs.
    awaiting_discovery: bool,
    /// The request has arrived whole (headers, body and trailers): no body hook follows.
    ended: bool,
    scheduler: Option<Scheduler>,
}

pub(super) struct NativeFilter {
    worker: Option<Rc<Worker>>,
    envoy: Filter,
    ctx: u32,
    req: RefCell<Req>,
    wake: Rc<Cell<Option<Wake>>>,
}

/// The request's headers as Envoy has them, read in one call.
struct NativeRequest {
    headers: HeaderList,
    envoy: Filter,
}

impl NativeRequest {
    fn read(envoy: Filter) -> Self {
        let headers = envoy.request_headers();
        Self { headers, envoy }
    }
}

impl HeaderSource for NativeRequest {
    fn headers(&self) -> &HeaderList {
        &self.headers
    }

    fn client_address(&self) -> Option<String> {
        self.envoy.source_address()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(now_since_epoch().as_micros()).unwrap_or(u64::MAX)
    }
}

/// The OS's CSPRNG.
struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}

fn respond(envoy: Filter, r: &LocalResponse) {
    let headers: Vec<(&str, &[u8])> = r
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()))
        .collect();
    envoy.send_response(r.status, &headers, &r.body);
}

/// Applies a forward's header changes: removals, identity, then the rest. `false` when one
/// failed: the request then ends with 500, never half-cleaned. Envoy then routes again: the
/// request goes on with the path and authority the decision was made on (and routes that
/// match on headers see the gateway's, as with the wasm build, whose host clears the route
/// cache on every header change).
fn apply(envoy: Filter, fwd: &Forward) -> bool {
    let applied = fwd
        .header_changes()
        .all(|(name, value)| envoy.set_request_header(name, value));
    if applied && fwd.changes_headers() {
        envoy.clear_route_cache();
    }
    applied
}

impl NativeFilter {
    pub(super) fn new(config: &Config, envoy: Filter) -> Self {
        let worker = Worker::for_config(config);
        let ctx = worker.as_ref().map_or(0, |w| w.next_ctx());
        Self {
            worker,
            envoy,
            ctx,
            req: RefCell::new(Req {
                flow: RequestFlow::for_context(ctx),
                callout: None,
                response_cookies: Vec::new(),
                reading_body: None,
                stopped: false,
                awaiting_discovery: false,
                ended: false,
                scheduler: None,
            }),
            wake: Rc::new(Cell::new(None)),
        }
    }

    pub(super) fn request_headers(&self, end_of_stream: bool) -> Status {
        let Some(w) = self.worker.clone() else {
            // No valid configuration: fail closed.
            respond(
                self.envoy,
                &LocalResponse::new(503).body("text/plain", "envoy-wam is not configured\n"),
            );
            return Status::Stop;
        };
        w.tick_if_due();
        self.req.borrow_mut().ended = end_of_stream;
        if self.discovery_started(&w) {
            self.req.borrow_mut().stopped = true;
            return Status::Stop;
        }
        let request = NativeRequest::read(self.envoy);
        if TEST_PANIC.load(Ordering::Relaxed)
            && request.headers.iter().any(|(n, _)| n == PANIC_HEADER)
        {
            panic!("test panic requested by {PANIC_HEADER}");
        }
        let action = self.req.borrow_mut().flow.on_request(
            &w.settings,
            &mut w.vm.borrow_mut(),
            &request,
            now_secs(),
            &mut OsEntropy,
        );
        let go_on = self.carry_out(&w, action);
        w.wake_released();
        if end_of_stream && self.req.borrow().reading_body.is_some() {
            // No body follows: the flow gets an empty one now.
            return self.body_read(&w, Body::Complete(Vec::new()));
        }
        self.stop_unless(go_on)
    }

    fn stop_unless(&self, go_on: bool) -> Status {
        if go_on {
            Status::Continue
        } else {
            self.req.borrow_mut().stopped = true;
            Status::Stop
        }
    }

    /// Sends the discovery request from this request when one is due (the first request of a
    /// worker, or the first after the retry interval); this request then waits for it, so it
    /// is answered with the endpoints rather than "starting up".
    fn discovery_started(&self, w: &Worker) -> bool {
        if w.discovery.get().is_some() {
            return false;
        }
        let due =
            w.vm.borrow_mut()
                .next_discovery_due(&w.settings, now_secs());
        let Some((op, callout)) = due else {
            return false;
        };
        match self.send(&callout) {
            Some(p) => {
                w.discovery.set(Some((self.ctx, p.id, op, p.started_ms)));
                self.req.borrow_mut().awaiting_discovery = true;
                true
            }
            None => {
                let line =
                    w.vm.borrow_mut()
                        .on_discovery(&w.settings, op, CalloutResult::Failed);
                log_line(&line);
                false
            }
        }
    }

    pub(super) fn request_body(&self, end_of_stream: bool) -> Status {
        self.req.borrow_mut().ended = end_of_stream;
        let reading = self.req.borrow().reading_body;
        let (Some(max), Some(w)) = (reading, self.worker.clone()) else {
            return self.hold_body();
        };
        if self.envoy.request_body_size() > max {
            return self.body_read(&w, Body::TooLarge);
        }
        if !end_of_stream {
            return Status::StopAndBuffer;
        }
        let body = self.envoy.request_body();
        self.body_read(&w, Body::Complete(body))
    }

    /// Body data of a request that is stopped waits with it; of one let on, goes on.
    fn hold_body(&self) -> Status {
        match self.req.borrow().stopped {
            true => Status::StopAndBuffer,
            false => Status::Continue,
        }
    }

    pub(super) fn request_trailers(&self) -> Status {
        self.req.borrow_mut().ended = true;
        let reading = self.req.borrow().reading_body;
        let (Some(max), Some(w)) = (reading, self.worker.clone()) else {
            return match self.req.borrow().stopped {
                true => Status::Stop,
                false => Status::Continue,
            };
        };
        // Trailers end the body: what is buffered is all of it.
        let body = self.envoy.request_body();
        let body = match body.len() > max {
            true => Body::TooLarge,
            false => Body::Complete(body),
        };
        match self.body_read(&w, body) {
            Status::Continue => Status::Continue,
            _ => Status::Stop,
        }
    }

    /// Hands the flow the body it asked for and carries out what it decides.
    fn body_read(&self, w: &Worker, body: Body) -> Status {
        self.req.borrow_mut().reading_body = None;
        let request = NativeRequest::read(self.envoy);
        let action = self.req.borrow_mut().flow.on_body(
            &w.settings,
            &mut w.vm.borrow_mut(),
            &request,
            body,
            now_secs(),
            &mut OsEntropy,
        );
        let (action, refused) = after_body(action);
        if refused {
            log(LogLevel::Error, FORWARD_AFTER_BODY);
        }
        self.carry_out(w, action);
        w.wake_released();
        self.req.borrow_mut().stopped = true;
        Status::StopNoBuffer
    }

    pub(super) fn response_headers(&self) -> Status {
        let cookies = std::mem::take(&mut self.req.borrow_mut().response_cookies);
        for cookie in cookies {
            let _ = self.envoy.add_response_header("set-cookie", &cookie);
        }
        Status::Continue
    }

    pub(super) fn callout_done(&self, id: u64, answer: Option<CalloutAnswer>) {
        let Some(w) = self.worker.clone() else { return };
        if let Some((_, _, op, sent)) = w.discovery.get().filter(|d| (d.0, d.1) == (self.ctx, id)) {
            w.discovery.set(None);
            let ms = now_ms().saturating_sub(sent);
            w.vm.borrow_mut().metrics.latency(Upstream::Discovery, ms);
            let result = outcome(answer, None);
            let line = w.vm.borrow_mut().on_discovery(&w.settings, op, result);
            log_line(&line);
            self.after_discovery(&w);
            return;
        }
        let pending = self.req.borrow_mut().callout.take();
        let Some(pending) = pending.filter(|p| p.id == id) else {
            return;
        };
        let upstream = self.req.borrow().flow.awaiting();
        if let Some(upstream) = upstream {
            let ms = now_ms().saturating_sub(pending.started_ms);
            w.vm.borrow_mut().metrics.latency(upstream, ms);
        }
        let result = outcome(answer, Some(&pending));
        let request = NativeRequest::read(self.envoy);
        let next = self.req.borrow_mut().flow.on_callout(
            &w.settings,
            &mut w.vm.borrow_mut(),
            &request,
            result,
            now_secs(),
            &mut OsEntropy,
        );
        self.go_on_after(&w, next);
    }

    /// Discovery answered: the request that sent it now runs.
    fn after_discovery(&self, w: &Worker) {
        let waiting = std::mem::take(&mut self.req.borrow_mut().awaiting_discovery);
        if !waiting {
            w.wake_released();
            return;
        }
        let request = NativeRequest::read(self.envoy);
        let action = self.req.borrow_mut().flow.on_request(
            &w.settings,
            &mut w.vm.borrow_mut(),
            &request,
            now_secs(),
            &mut OsEntropy,
        );
        self.go_on_after(w, action);
    }

    /// Carries out `action` outside the headers hook: a request let on is continued here. A
    /// request that waited before its flow first ran (discovery) may be asked for its body
    /// now: it is still stopped, its body held here; read at once if it has all arrived.
    fn go_on_after(&self, w: &Worker, action: Action) {
        if let Action::ReadBody { max } = action {
            self.req.borrow_mut().reading_body = Some(max);
            if self.req.borrow().ended {
                let body = self.envoy.request_body();
                let body = match body.len() > max {
                    true => Body::TooLarge,
                    false => Body::Complete(body),
                };
                self.body_read(w, body);
            }
        } else if self.carry_out(w, action) {
            self.req.borrow_mut().stopped = false;
            self.envoy.continue_decoding();
        }
        w.wake_released();
    }

    pub(super) fn scheduled(&self, event: u64) {
        let Some(w) = self.worker.clone() else { return };
        match event {
            EVENT_TICK => w.tick_if_due(),
            EVENT_WAKE => {
                let Some(why) = self.wake.take() else { return };
                if !w.parked.borrow().contains_key(&self.ctx) {
                    return;
                }
                let request = NativeRequest::read(self.envoy);
                let next = self.req.borrow_mut().flow.on_wake(
                    &w.settings,
                    &mut w.vm.borrow_mut(),
                    &request,
                    why,
                    now_secs(),
                    &mut OsEntropy,
                );
                self.go_on_after(&w, next);
            }
            _ => {}
        }
    }

    /// Carries out `action`; returns whether the request may go on upstream now.
    fn carry_out(&self, w: &Worker, action: Action) -> bool {
        carry_out(
            &OnWorker {
                filter: self,
                worker: w,
            },
            action,
        )
    }

    /// Parks the request: it gets a scheduler (for its wake-up and the ticker) on first need.
    fn park(&self, w: &Worker) {
        let scheduler = {
            let mut req = self.req.borrow_mut();
            if req.scheduler.is_none() {
                req.scheduler = self.envoy.scheduler();
            }
            req.scheduler
        };
        match scheduler {
            Some(s) => w.park(self.ctx, self.wake.clone(), s),
            None => {
                log(
                    LogLevel::Error,
                    "envoy-wam: no scheduler for a waiting request; refusing",
                );
                respond(self.envoy, &internal_error());
            }
        }
    }

    fn send(&self, c: &Callout) -> Option<Pending> {
        let headers: Vec<(&str, &[u8])> = callout_headers(c)
            .into_iter()
            .map(|(n, v)| (n, v.as_bytes()))
            .collect();
        match self
            .envoy
            .callout(&c.cluster, &headers, &c.body, c.timeout_ms)
        {
            Some(id) => Some(Pending {
                id,
                started_ms: now_ms(),
                timeout_ms: c.timeout_ms,
            }),
            None => {
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

    /// The stream ended (answered, forwarded and done, or the client went away): whoever
    /// waited on this request must not wait forever.
    pub(super) fn stream_complete(&self) {
        let Some(w) = self.worker.clone() else { return };
        w.publish_if_dirty();
        w.flush_stats(self.envoy);
        if let Some((ctx, _, op, _)) = w.discovery.get() {
            if ctx == self.ctx {
                // Envoy cancels the callout with the stream: the next request sends it again.
                w.discovery.set(None);
                w.vm.borrow_mut().op(op).discovery.abandoned();
            }
        }
        let was_parked = w.unpark(self.ctx);
        let had_callout = self.req.borrow_mut().callout.take().is_some();
        if was_parked || had_callout {
            self.req.borrow_mut().flow.on_abandon_in(
                &w.settings,
                &mut w.vm.borrow_mut(),
                now_secs(),
                &mut OsEntropy,
            );
            w.wake_released();
        }
    }

    pub(super) fn destroy(self) {
        self.stream_complete();
        if let Some(s) = self.req.borrow_mut().scheduler.take() {
            ticker_remove(s);
            s.delete();
        }
    }
}

/// A request on its worker.
struct OnWorker<'a> {
    filter: &'a NativeFilter,
    worker: &'a Worker,
}

impl RequestHost for OnWorker<'_> {
    fn flow(&self) -> RefMut<'_, RequestFlow> {
        RefMut::map(self.filter.req.borrow_mut(), |r| &mut r.flow)
    }

    fn log(&self, line: &LogLine) {
        log_line(line);
    }

    fn write_access_fields(&self, fields: &AccessFields) {
        write_access_fields(self.filter.envoy, fields);
    }

    fn forward(&self, fwd: Forward) -> bool {
        self.worker.unpark(self.filter.ctx);
        if !apply(self.filter.envoy, &fwd) {
            return false;
        }
        self.filter.req.borrow_mut().response_cookies = fwd.response_cookies;
        true
    }

    fn respond(&self, response: &LocalResponse) {
        self.worker.unpark(self.filter.ctx);
        respond(self.filter.envoy, response);
        self.filter.req.borrow_mut().stopped = false;
    }

    fn park(&self) {
        self.filter.park(self.worker);
    }

    /// The body comes to the body hooks of this stopped request.
    fn read_body(&self, max: usize) -> bool {
        self.filter.req.borrow_mut().reading_body = Some(max);
        false
    }

    fn send(&self, callout: Callout) -> bool {
        let Some(pending) = self.filter.send(&callout) else {
            return false;
        };
        self.filter.req.borrow_mut().callout = Some(pending);
        self.filter.park(self.worker);
        true
    }

    fn callout_failed(&self) -> Action {
        let request = NativeRequest::read(self.filter.envoy);
        let w = self.worker;
        self.filter.req.borrow_mut().flow.on_callout(
            &w.settings,
            &mut w.vm.borrow_mut(),
            &request,
            CalloutResult::Failed,
            now_secs(),
            &mut OsEntropy,
        )
    }
}

/// Writes the flow's access-log fields into the request's filter state under the wasm
/// build's names (`wasm.envoy_wam.subject` and the like: proxy-wasm's `set_property` prefixes
/// `wasm.`), so one access-log format (`%FILTER_STATE(wasm.envoy_wam.subject:PLAIN)%`) serves
/// either build. Best effort, as there: a field Envoy does not take leaves its column at `-`.
/// The flow hands its fields over once per request, and Envoy takes each key once.
fn write_access_fields(envoy: Filter, fields: &AccessFields) {
    for (name, value) in fields.entries() {
        let _ = envoy.set_filter_state(&format!("wasm.{name}"), value);
    }
}

/// How a callout ended (`pending` tells a timeout from a failure; none for discovery).
fn outcome(answer: Option<CalloutAnswer>, pending: Option<&Pending>) -> CalloutResult {
    let (status, body) = match answer {
        Some(a) => (a.status, a.body),
        None => (None, Vec::new()),
    };
    let elapsed = pending.map_or(0, |p| u128::from(now_ms().saturating_sub(p.started_ms)));
    let timeout = pending.map_or(u64::MAX, |p| p.timeout_ms);
    let size = body.len();
    callout_outcome(status, |_| body, size, elapsed, timeout)
}
