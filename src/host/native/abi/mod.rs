//! The project's own binding to Envoy's dynamic-module ABI (Envoy 1.40.0, ABI `v0.2.0`): the
//! `extern "C"` declarations of the callbacks this module calls, the event hooks it exports,
//! and safe wrappers around both. Written from `source/extensions/dynamic_modules/abi/abi.h`
//! (no bindgen, no SDK): the header's signatures are the facts, the names and wrappers here are
//! ours. Every `unsafe` of the native build is in this module (this file and `hooks.rs`, the
//! exported hooks).
//!
//! Checked (issue 13) declaration by declaration — names, argument order and types, return
//! types, and the enum values used (header and body kinds, log levels, the status enums, the
//! callout and metrics results, attribute `SourceAddress` = 24) — against the header text at
//! envoyproxy/envoy commit 0199da4a13cb999df12ad32db7d03942cfbf9abb, which still says ABI
//! `v0.1.0`: the text of the `v1.40.0` tag (ABI `v0.2.0`) was not to be had, so the names were
//! also checked against the Envoy 1.40.0 binary (build 9e5580933739775e8bce696a57a2e1bc99368f23):
//! it exports all 27 callbacks declared below and looks up all 21 hooks `hooks.rs` exports by
//! these names. No mismatch was found. That header promises that ABI `v0.2.x` stays compatible with `v0.1.y`.
//!
//! Every exported hook runs its body under `catch_unwind` (the library is built with
//! `panic = "unwind"`): a panic never crosses into Envoy, where it would abort the process. A
//! panic in a request's hook ends that request with a 500 and a log line.
//!
//! Pointers Envoy hands over are wrapped at once: [`Filter`] (Envoy's filter object, valid from
//! `on_http_filter_new` to `on_http_filter_destroy`) and [`Scheduler`] (valid until this module
//! deletes it). The mapping layer (`filter.rs`) only ever uses a filter's handle inside that
//! filter's own hooks, on its worker thread, and deletes a scheduler only in the filter's
//! destroy hook; those are the invariants the `unsafe` blocks below rely on.

use std::ffi::{c_char, c_void};

use crate::request::HeaderList;

/// The ABI version this module was written against (NUL-terminated, as Envoy reads it). Envoy
/// 1.40.0 logs "Dynamic module ABI version v0.2.0 matched." when it is the one it implements.
const ABI_VERSION_C: &[u8] = b"v0.2.0\0";

// ----------------------------------------------------------------------------------------
// Types (abi.h: "Common Types", "HTTP Filter Types")

/// `envoy_dynamic_module_type_envoy_buffer`: bytes owned by Envoy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

/// `envoy_dynamic_module_type_module_buffer`: bytes owned by this module, lent for one call.
#[repr(C)]
#[derive(Clone, Copy)]
struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

/// `envoy_dynamic_module_type_module_http_header`.
#[repr(C)]
struct ModuleHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// `envoy_dynamic_module_type_envoy_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
    const NULL: Self = Self {
        ptr: std::ptr::null(),
        length: 0,
    };
}

/// `envoy_dynamic_module_type_http_header_type`.
const REQUEST_HEADER: u32 = 0;
const RESPONSE_HEADER: u32 = 2;
/// `envoy_dynamic_module_type_http_body_type`.
const RECEIVED_REQUEST_BODY: u32 = 0;
const BUFFERED_REQUEST_BODY: u32 = 1;
/// `envoy_dynamic_module_type_log_level`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}
/// `envoy_dynamic_module_type_attribute_id_SourceAddress` (the 25th attribute).
const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;
/// `envoy_dynamic_module_type_http_callout_init_result_Success`.
const CALLOUT_INIT_SUCCESS: u32 = 0;
/// `envoy_dynamic_module_type_http_callout_result_Success`.
const CALLOUT_RESULT_SUCCESS: u32 = 0;

/// What a request or response hook tells Envoy (the `*_status` enums; the values used here
/// have the same number in each of them).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Status {
    /// `Continue` (headers, body, trailers).
    Continue,
    /// Headers: `StopIteration`; trailers: `StopIteration`.
    Stop,
    /// Body: `StopIterationAndBuffer` (keep what came, call again with more).
    StopAndBuffer,
    /// Body: `StopIterationNoBuffer`.
    StopNoBuffer,
}

impl Status {
    fn headers(self) -> u32 {
        match self {
            Status::Continue => 0,
            _ => 1,
        }
    }
    fn body(self) -> u32 {
        match self {
            Status::Continue => 0,
            Status::StopAndBuffer => 1,
            Status::Stop | Status::StopNoBuffer => 3,
        }
    }
    fn trailers(self) -> u32 {
        match self {
            Status::Continue => 0,
            _ => 1,
        }
    }
}

// ----------------------------------------------------------------------------------------
// Callbacks Envoy implements (abi.h: "Common Callbacks", "HTTP Filter Callbacks")

extern "C" {
    fn envoy_dynamic_module_callback_log(level: u32, message: ModuleBuffer);
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: *mut c_void, kind: u32)
        -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: *mut c_void,
        kind: u32,
        result: *mut EnvoyHeader,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: *mut c_void,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_add_header(
        filter: *mut c_void,
        kind: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_send_response(
        filter: *mut c_void,
        status: u32,
        headers: *const ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: *mut c_void);
    fn envoy_dynamic_module_callback_http_clear_route_cache(filter: *mut c_void);
    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: *mut c_void,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *const ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: *mut c_void,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: *mut c_void,
        kind: u32,
    ) -> usize;
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: *mut c_void,
        kind: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_body_size(filter: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_received_buffered_request_body(
        filter: *mut c_void,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_scheduler_new(filter: *mut c_void) -> *mut c_void;
    fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: *mut c_void);
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: *mut c_void,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
}

// Metrics (abi.h: "Metrics callbacks"). Every metric here is defined without labels (the
// label arrays are empty): its name carries them as `.<label>.<value>` segments, as in the
// wasm build, and Envoy's `stats_tags` turn them into tags. Each returns
// `envoy_dynamic_module_type_metrics_result` (0: Success).
extern "C" {
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_increment_counter(
        config: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_config_set_gauge(
        config: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_gauge(
        filter: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_decrement_gauge(
        filter: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

/// `envoy_dynamic_module_type_metrics_result_Success`.
const METRICS_SUCCESS: u32 = 0;

/// The shape of the callbacks that change a configuration's metric (no labels here).
type ConfigMetricCall =
    unsafe extern "C" fn(*mut c_void, usize, *const ModuleBuffer, usize, u64) -> u32;

/// The kinds of metric a configuration defines.
#[derive(Clone, Copy)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// Envoy's object for one filter configuration (`DynamicModuleHttpFilterConfig`), as
/// `on_http_filter_config_new` hands it over. Metrics can only be defined while that hook runs
/// (Envoy freezes stat creation after it), on the main thread; the wrapper is only used
/// there, and not kept.
#[derive(Clone, Copy)]
pub struct ConfigHandle(*mut c_void);

impl ConfigHandle {
    /// Defines a metric named `name` (under the filter's `metrics_namespace`); its id, or
    /// `None` when Envoy refused.
    pub fn define(self, kind: MetricKind, name: &str) -> Option<usize> {
        let define = match kind {
            MetricKind::Counter => envoy_dynamic_module_callback_http_filter_config_define_counter,
            MetricKind::Gauge => envoy_dynamic_module_callback_http_filter_config_define_gauge,
            MetricKind::Histogram => {
                envoy_dynamic_module_callback_http_filter_config_define_histogram
            }
        };
        let mut id = 0usize;
        // SAFETY: `self` is the configuration of the `config_new` hook now running (see the
        // type); the name points into `name`, alive for the call (Envoy copies it into its
        // stat-name pool); no labels; `id` is a valid place for Envoy to write the id.
        let result = unsafe {
            define(
                self.0,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null(),
                0,
                &mut id,
            )
        };
        (result == METRICS_SUCCESS).then_some(id)
    }

    /// Adds `value` to the counter `id` of this configuration.
    pub fn increment_counter(self, id: usize, value: u64) -> bool {
        self.change(
            envoy_dynamic_module_callback_http_filter_config_increment_counter,
            id,
            value,
        )
    }

    /// Sets the gauge `id` of this configuration.
    pub fn set_gauge(self, id: usize, value: u64) -> bool {
        self.change(
            envoy_dynamic_module_callback_http_filter_config_set_gauge,
            id,
            value,
        )
    }

    fn change(self, call: ConfigMetricCall, id: usize, value: u64) -> bool {
        // SAFETY: the configuration of the running `config_new` hook (see the type); `id` was
        // defined on it (Envoy answers MetricNotFound otherwise); no labels.
        let r = unsafe { call(self.0, id, std::ptr::null(), 0, value) };
        r == METRICS_SUCCESS
    }
}

/// Writes a line to Envoy's log (component `dynamic_modules`). Any thread.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the buffer points into `message`, alive for the call; Envoy copies it.
    unsafe { envoy_dynamic_module_callback_log(level as u32, ModuleBuffer::of(message.as_bytes())) }
}

/// Envoy's filter object for one HTTP stream. Only valid between `on_http_filter_new` and
/// `on_http_filter_destroy` of that stream, and only on the worker thread that runs it; the
/// mapping layer uses it only inside that filter's own hooks.
#[derive(Clone, Copy)]
pub struct Filter(*mut c_void);

/// Bytes Envoy owns, copied out.
fn copy(ptr: *const c_char, len: usize) -> Vec<u8> {
    if ptr.is_null() || len == 0 {
        return Vec::new();
    }
    // SAFETY: Envoy hands (ptr, len) pairs that point to `len` readable bytes, valid until the
    // hook returns; they are copied at once.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }.to_vec()
}

/// Bytes Envoy owns, borrowed for as long as the hook runs and no setter is called (the
/// callers use them at once).
fn borrowed<'a>(ptr: *const c_char, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: Envoy hands (ptr, len) pairs that point to `len` readable bytes, valid until the
    // hook returns or the map is changed; `request_headers` copies them before
    // either happens.
    unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) }
}

fn to_module_headers(headers: &[(&str, &[u8])]) -> Vec<ModuleHeader> {
    headers
        .iter()
        .map(|(n, v)| ModuleHeader {
            key_ptr: n.as_ptr().cast(),
            key_length: n.len(),
            value_ptr: v.as_ptr().cast(),
            value_length: v.len(),
        })
        .collect()
}

impl Filter {
    /// The request's headers, copied out of Envoy at once into a list allocated once (Envoy's
    /// count and sizes first): nothing borrowed from Envoy outlives this call, so no later
    /// header change can leave a dangling view. Names that are not UTF-8 (which no HTTP codec
    /// lets through) are kept lossily, as the wasm host does.
    pub fn request_headers(self) -> HeaderList {
        // SAFETY: `self` is a live filter (see the type); the call only reads.
        let n =
            unsafe { envoy_dynamic_module_callback_http_get_headers_size(self.0, REQUEST_HEADER) };
        let empty = EnvoyHeader {
            key_ptr: std::ptr::null(),
            key_length: 0,
            value_ptr: std::ptr::null(),
            value_length: 0,
        };
        let mut out = vec![empty; n];
        // SAFETY: `out` has room for the `n` headers Envoy just counted; nothing runs between
        // the two calls that could change the map.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_get_headers(self.0, REQUEST_HEADER, out.as_mut_ptr())
        };
        if !ok {
            return HeaderList::default();
        }
        let sum =
            |f: fn(&EnvoyHeader) -> usize| out.iter().fold(0usize, |a, h| a.saturating_add(f(h)));
        let mut headers =
            HeaderList::with_capacity(n, sum(|h| h.key_length), sum(|h| h.value_length));
        for h in &out {
            let (name, value) = (
                borrowed(h.key_ptr, h.key_length),
                borrowed(h.value_ptr, h.value_length),
            );
            match std::str::from_utf8(name) {
                Ok(name) => headers.push(name, value),
                Err(_) => headers.push(&String::from_utf8_lossy(name), value),
            }
        }
        headers
    }

    /// Sets (replacing every copy) or, with `None`, removes a request header.
    pub fn set_request_header(self, name: &str, value: Option<&str>) -> bool {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: live filter; both buffers point into borrowed data alive for the call.
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                self.0,
                REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        }
    }

    /// Makes Envoy choose the route again from the request's headers as they are now (the
    /// wasm host does this on every header change; here the mapping asks for it).
    pub fn clear_route_cache(self) {
        // SAFETY: live filter, in one of its decoding hooks (a no-op in any other phase).
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(self.0) }
    }

    /// Adds a response header (another copy when it exists).
    pub fn add_response_header(self, name: &str, value: &str) -> bool {
        // SAFETY: live filter; both buffers point into borrowed data alive for the call.
        unsafe {
            envoy_dynamic_module_callback_http_add_header(
                self.0,
                RESPONSE_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    /// Ends the stream with a local answer.
    pub fn send_response(self, status: u32, headers: &[(&str, &[u8])], body: &[u8]) {
        let headers = to_module_headers(headers);
        // SAFETY: live filter; `headers` (pointing into borrowed strings) and `body` outlive
        // the call, and Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::of(b"envoy_wam"),
            )
        }
    }

    /// Lets a request stopped in its headers hook go on upstream.
    pub fn continue_decoding(self) {
        // SAFETY: live filter, called from one of its own hooks (never its headers hook, which
        // says "continue" by its return value instead).
        unsafe { envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }

    /// Sends a callout; its answer comes to this filter's `http_callout_done` with the id
    /// returned. `None` when Envoy refused it (no such cluster, no host).
    pub fn callout(
        self,
        cluster: &str,
        headers: &[(&str, &[u8])],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64> {
        let headers = to_module_headers(headers);
        let mut id = 0u64;
        // SAFETY: live filter; every buffer outlives the call (Envoy copies them into its own
        // request message); `id` is a valid place for Envoy to write the callout's id.
        let result = unsafe {
            envoy_dynamic_module_callback_http_filter_http_callout(
                self.0,
                &mut id,
                ModuleBuffer::of(cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                timeout_ms,
            )
        };
        (result == CALLOUT_INIT_SUCCESS).then_some(id)
    }

    /// The downstream peer's address (`ip:port`).
    pub fn source_address(self) -> Option<String> {
        let mut buf = EnvoyBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        // SAFETY: live filter; `buf` is a valid place for Envoy to write a borrowed buffer,
        // copied before anything else is called.
        let ok = unsafe {
            envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.0,
                ATTRIBUTE_SOURCE_ADDRESS,
                &mut buf,
            )
        };
        if !ok {
            return None;
        }
        String::from_utf8(copy(buf.ptr, buf.length)).ok()
    }

    fn body_chunks(self, kind: u32, out: &mut Vec<u8>) {
        // SAFETY: live filter; the call only reads.
        let n = unsafe { envoy_dynamic_module_callback_http_get_body_chunks_size(self.0, kind) };
        if n == 0 {
            return;
        }
        let mut chunks = vec![
            EnvoyBuffer {
                ptr: std::ptr::null(),
                length: 0
            };
            n
        ];
        // SAFETY: `chunks` has room for the `n` slices just counted; each is copied at once.
        if unsafe {
            envoy_dynamic_module_callback_http_get_body_chunks(self.0, kind, chunks.as_mut_ptr())
        } {
            for c in &chunks {
                out.extend_from_slice(&copy(c.ptr, c.length));
            }
        }
    }

    /// The request body so far (what Envoy buffered for this filter, then what just came).
    pub fn request_body(self) -> Vec<u8> {
        let mut out = Vec::new();
        self.body_chunks(BUFFERED_REQUEST_BODY, &mut out);
        // SAFETY: live filter, in its request-body hook; the call only reads.
        let same =
            unsafe { envoy_dynamic_module_callback_http_received_buffered_request_body(self.0) };
        if !same {
            self.body_chunks(RECEIVED_REQUEST_BODY, &mut out);
        }
        out
    }

    /// The request body's size so far (buffered and just received).
    pub fn request_body_size(self) -> usize {
        // SAFETY: live filter; the calls only read.
        unsafe {
            envoy_dynamic_module_callback_http_get_body_size(self.0, BUFFERED_REQUEST_BODY)
                .saturating_add(envoy_dynamic_module_callback_http_get_body_size(
                    self.0,
                    RECEIVED_REQUEST_BODY,
                ))
        }
    }

    /// Stores `value` in the request's filter state under `key` (read-only, once per key:
    /// Envoy refuses a second write of the same key), where the access log reads it with
    /// `%FILTER_STATE(<key>:PLAIN)%`.
    pub fn set_filter_state(self, key: &str, value: &str) -> bool {
        // SAFETY: live filter; both buffers point into borrowed data alive for the call (Envoy
        // copies them into its string accessor).
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.0,
                ModuleBuffer::of(key.as_bytes()),
                ModuleBuffer::of(value.as_bytes()),
            )
        }
    }

    /// Changes the metric `id` of this filter's configuration: adds to a counter, moves a gauge
    /// by `delta`, or records a histogram value.
    pub fn metric(self, kind: MetricKind, id: usize, delta: i64) -> bool {
        let value = delta.unsigned_abs();
        let call = match (kind, delta < 0) {
            (MetricKind::Counter, _) => envoy_dynamic_module_callback_http_filter_increment_counter,
            (MetricKind::Gauge, false) => envoy_dynamic_module_callback_http_filter_increment_gauge,
            (MetricKind::Gauge, true) => envoy_dynamic_module_callback_http_filter_decrement_gauge,
            (MetricKind::Histogram, _) => {
                envoy_dynamic_module_callback_http_filter_record_histogram_value
            }
        };
        // SAFETY: live filter, on its worker thread; `id` was defined by the configuration
        // that made this filter (Envoy answers MetricNotFound otherwise); no labels.
        let r = unsafe { call(self.0, id, std::ptr::null(), 0, value) };
        r == METRICS_SUCCESS
    }

    /// A scheduler that posts events to this filter's worker (see [`Scheduler`]).
    pub fn scheduler(self) -> Option<Scheduler> {
        // SAFETY: live filter; Envoy allocates the scheduler, which this module deletes.
        let p = unsafe { envoy_dynamic_module_callback_http_filter_scheduler_new(self.0) };
        (!p.is_null()).then_some(Scheduler(p))
    }
}

/// Envoy's scheduler for one filter: `commit` posts an event that Envoy delivers to the
/// filter's `on_http_filter_scheduled` on its worker thread, or drops once the filter is gone
/// (Envoy keeps only a weak reference to it). Committing is thread-safe (a dispatcher post).
/// Deleted exactly once, by [`Scheduler::delete`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scheduler(*mut c_void);

// SAFETY: the scheduler is an Envoy object built for commits from any thread (it posts to
// the worker's dispatcher under Envoy's own locking); the ticker thread only commits.
unsafe impl Send for Scheduler {}

impl Scheduler {
    pub fn commit(self, event: u64) {
        // SAFETY: not yet deleted (the ticker and the filter's destroy hook serialise on one
        // lock: a scheduler leaves the ticker's list before it is deleted).
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, event) }
    }

    /// Frees the scheduler. Called once, from the filter's destroy hook, after it left the
    /// ticker's list.
    pub fn delete(self) {
        // SAFETY: allocated by Envoy for this module, deleted once (see above).
        unsafe { envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

mod hooks;
pub use hooks::CalloutAnswer;
