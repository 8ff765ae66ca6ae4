//! The event hooks this module exports (abi.h: "Common Event Hooks", "HTTP Filter Event
//! Hooks"), each under `catch_unwind`, handing Envoy's pointers to `filter.rs` as the handles
//! of `super`. Part of the binding: its `unsafe` blocks say why they are sound.

use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::super::filter;
use super::{
    copy, log, ConfigHandle, EnvoyBuffer, EnvoyHeader, Filter, LogLevel, Status, ABI_VERSION_C,
    CALLOUT_RESULT_SUCCESS,
};

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
    config_envoy: *mut c_void,
    name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    guarded(
        "config new",
        || match filter::Config::new(
            ConfigHandle(config_envoy),
            &buffer_bytes(name),
            buffer_bytes(config),
        ) {
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
