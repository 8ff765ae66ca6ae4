//! The project's own binding to Envoy's dynamic-module ABI (Envoy 1.40.0, ABI `v0.2.0`): the
//! `extern "C"` declarations of the callbacks this module calls, the event hooks it exports,
//! and safe wrappers around both. Written from `source/extensions/dynamic_modules/abi/abi.h` of
//! the pinned Envoy (no bindgen, no SDK): the header's signatures are the facts, the names and
//! wrappers here are ours. Every `unsafe` of the native build is in this file.
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
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::filter;

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
    // hook returns or the map is changed; `each_request_header`'s callers copy them before
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
    /// Hands every request header, in order, to `each` as (name, value) bytes borrowed from
    /// Envoy for the call (the caller copies what it keeps: one copy, no allocation per header).
    pub fn each_request_header(self, mut each: impl FnMut(&[u8], &[u8])) {
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
            return;
        }
        for h in &out {
            each(
                borrowed(h.key_ptr, h.key_length),
                borrowed(h.value_ptr, h.value_length),
            );
        }
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
#[derive(Clone, Copy, PartialEq, Eq)]
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

// ----------------------------------------------------------------------------------------
// Event hooks this module exports (abi.h: "Common Event Hooks", "HTTP Filter Event Hooks")

/// Runs a hook's body; a panic is logged and turned into `fallback()` instead of unwinding
/// into Envoy (which would abort the process).
fn guarded<T>(hook: &str, body: impl FnOnce() -> T, fallback: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(_) => {
            log(
                LogLevel::Error,
                &format!("envoy-wam: panic in {hook}; the request ends with 500"),
            );
            fallback()
        }
    }
}

/// A request's hook panicked: it ends with 500 (never forwarded).
fn fail_request(f: Filter) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        f.send_response(
            500,
            &[
                ("content-type", b"text/plain"),
                ("cache-control", b"no-store"),
            ],
            b"internal error\n",
        )
    }));
}

/// `fm` back to the filter this module created in `on_http_filter_new`.
fn filter_of<'a>(fm: *const c_void) -> Option<&'a filter::NativeFilter> {
    // SAFETY: `fm` is the pointer `on_http_filter_new` returned from `Box::into_raw`, and
    // Envoy passes it only until `on_http_filter_destroy`, which frees it; hooks of one filter
    // run on one thread, one at a time.
    unsafe { fm.cast::<filter::NativeFilter>().as_ref() }
}

/// The bytes of a buffer Envoy passes to a hook.
fn buffer_bytes(b: EnvoyBuffer) -> Vec<u8> {
    copy(b.ptr, b.length)
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    guarded(
        "program init",
        || {
            filter::program_init();
            ABI_VERSION_C.as_ptr().cast()
        },
        std::ptr::null,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _config_envoy: *mut c_void,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(
        "config new",
        || match filter::Config::new(&buffer_bytes(name), buffer_bytes(config)) {
            Some(c) => Box::into_raw(Box::new(c)).cast_const().cast(),
            None => std::ptr::null(),
        },
        std::ptr::null,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    guarded(
        "config destroy",
        || {
            if !config.is_null() {
                // SAFETY: `config` came from `Box::into_raw` in config_new and Envoy destroys
                // it once, after every filter made from it.
                drop(unsafe { Box::from_raw(config.cast_mut().cast::<filter::Config>()) });
            }
        },
        || (),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    filter_envoy: *mut c_void,
) -> *const c_void {
    guarded(
        "filter new",
        || {
            // SAFETY: `config` is the live `Config` of config_new (Envoy keeps it alive while
            // it makes filters from it); shared, read-only here.
            let Some(config) = (unsafe { config.cast::<filter::Config>().as_ref() }) else {
                return std::ptr::null();
            };
            let f = filter::NativeFilter::new(config, Filter(filter_envoy));
            Box::into_raw(Box::new(f)).cast_const().cast()
        },
        std::ptr::null,
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(fm: *const c_void) {
    guarded(
        "filter destroy",
        || {
            if fm.is_null() {
                return;
            }
            // SAFETY: `fm` came from `Box::into_raw` in filter_new; Envoy destroys it once and
            // calls no hook of this filter afterwards.
            let f = unsafe { Box::from_raw(fm.cast_mut().cast::<filter::NativeFilter>()) };
            f.destroy();
        },
        || (),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    fe: *mut c_void,
    fm: *const c_void,
    end_of_stream: bool,
) -> u32 {
    let f = Filter(fe);
    guarded(
        "request headers",
        || filter_of(fm).map_or(Status::Continue, |nf| nf.request_headers(end_of_stream)),
        || {
            fail_request(f);
            Status::Stop
        },
    )
    .headers()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    fe: *mut c_void,
    fm: *const c_void,
    end_of_stream: bool,
) -> u32 {
    let f = Filter(fe);
    guarded(
        "request body",
        || filter_of(fm).map_or(Status::Continue, |nf| nf.request_body(end_of_stream)),
        || {
            fail_request(f);
            Status::StopNoBuffer
        },
    )
    .body()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    fe: *mut c_void,
    fm: *const c_void,
) -> u32 {
    let f = Filter(fe);
    guarded(
        "request trailers",
        || filter_of(fm).map_or(Status::Continue, |nf| nf.request_trailers()),
        || {
            fail_request(f);
            Status::Stop
        },
    )
    .trailers()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _fe: *mut c_void,
    fm: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    guarded(
        "response headers",
        || filter_of(fm).map_or(Status::Continue, |nf| nf.response_headers()),
        || Status::Continue,
    )
    .headers()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _fe: *mut c_void,
    _fm: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    Status::Continue.body()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _fe: *mut c_void,
    _fm: *const c_void,
) -> u32 {
    Status::Continue.trailers()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _fe: *mut c_void,
    fm: *const c_void,
) {
    guarded(
        "stream complete",
        || {
            if let Some(nf) = filter_of(fm) {
                nf.stream_complete();
            }
        },
        || (),
    )
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    fe: *mut c_void,
    fm: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    let f = Filter(fe);
    guarded(
        "callout done",
        || {
            let Some(nf) = filter_of(fm) else { return };
            let answer = (result == CALLOUT_RESULT_SUCCESS)
                .then(|| callout_answer(headers, headers_size, body_chunks, body_chunks_size));
            nf.callout_done(callout_id, answer);
        },
        || fail_request(f),
    )
}

/// A callout's answer: its `:status` and body.
pub struct CalloutAnswer {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

fn callout_answer(
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) -> CalloutAnswer {
    let headers: &[EnvoyHeader] = if headers.is_null() {
        &[]
    } else {
        // SAFETY: Envoy passes `headers_size` headers at `headers`, valid until the hook
        // returns (abi.h, on_http_filter_http_callout_done).
        unsafe { std::slice::from_raw_parts(headers, headers_size) }
    };
    let status = headers
        .iter()
        .find(|h| copy(h.key_ptr, h.key_length) == b":status")
        .and_then(|h| String::from_utf8(copy(h.value_ptr, h.value_length)).ok())
        .and_then(|s| s.parse().ok());
    let chunks: &[EnvoyBuffer] = if chunks.is_null() {
        &[]
    } else {
        // SAFETY: as for the headers above.
        unsafe { std::slice::from_raw_parts(chunks, chunks_size) }
    };
    let mut body = Vec::new();
    for c in chunks {
        body.extend_from_slice(&copy(c.ptr, c.length));
    }
    CalloutAnswer { status, body }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    fe: *mut c_void,
    fm: *const c_void,
    event_id: u64,
) {
    let f = Filter(fe);
    guarded(
        "scheduled event",
        || {
            if let Some(nf) = filter_of(fm) {
                nf.scheduled(event_id);
            }
        },
        || fail_request(f),
    )
}

// Hooks Envoy 1.40 requires to be present that this filter has no use for: streamed callouts
// (it sends only whole ones) and the downstream write watermarks (it is not a terminal filter).

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _fe: *mut c_void,
    _fm: *const c_void,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _fe: *mut c_void,
    _fm: *const c_void,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _fe: *mut c_void,
    _fm: *const c_void,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _fe: *mut c_void,
    _fm: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _fe: *mut c_void,
    _fm: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _fe: *mut c_void,
    _fm: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _fe: *mut c_void,
    _fm: *const c_void,
) {
}
