//! See Cargo.toml. A benchmark fixture: it trusts Envoy's pointers as the ABI promises and
//! never runs in front of anything real.
#![allow(clippy::missing_safety_doc)]
use std::ffi::{c_char, c_void};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buf {
    ptr: *const c_char,
    len: usize,
}
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    key: *const c_char,
    key_len: usize,
    value: *const c_char,
    value_len: usize,
}

extern "C" {
    fn envoy_dynamic_module_callback_http_get_headers_size(f: *mut c_void, kind: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(f: *mut c_void, kind: u32, out: *mut Header) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(f: *mut c_void, kind: u32, k: Buf, v: Buf) -> bool;
    fn envoy_dynamic_module_callback_http_clear_route_cache(f: *mut c_void);
}

fn buf(s: &str) -> Buf {
    Buf { ptr: s.as_ptr().cast(), len: s.len() }
}

static NOOP: u8 = 0;
static FLOOR: u8 = 1;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    b"v0.2.0\0".as_ptr().cast()
}

/// The configuration is "noop" or "floor"; it picks which of the two statics stands for it.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(_c: *mut c_void, _n: Buf, config: Buf) -> *const c_void {
    let bytes = std::slice::from_raw_parts(config.ptr.cast::<u8>(), config.len);
    let floor = bytes.windows(5).any(|w| w == b"floor");
    (if floor { &FLOOR } else { &NOOP } as *const u8).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_c: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(config: *const c_void, _f: *mut c_void) -> *const c_void {
    config
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_fm: *const c_void) {}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(f: *mut c_void, fm: *const c_void, _eos: bool) -> u32 {
    if *fm.cast::<u8>() == FLOOR {
        let n = envoy_dynamic_module_callback_http_get_headers_size(f, 0);
        let mut headers = Vec::<Header>::with_capacity(n);
        if envoy_dynamic_module_callback_http_get_headers(f, 0, headers.as_mut_ptr()) {
            headers.set_len(n);
        }
        std::hint::black_box(&headers);
        for (k, v) in [("x-wam-user", "alice"), ("x-wam-email", "alice@example.com"), ("x-wam-groups", "staff"), ("cookie", "theme=dark")] {
            envoy_dynamic_module_callback_http_set_header(f, 0, buf(k), buf(v));
        }
        envoy_dynamic_module_callback_http_clear_route_cache(f);
    }
    0
}

macro_rules! stub {
    ($($name:ident($($arg:ty),*) -> $ret:ty = $val:expr;)*) => {$(
        #[no_mangle]
        pub extern "C" fn $name($(_: $arg),*) -> $ret { $val }
    )*};
}

stub! {
    envoy_dynamic_module_on_http_filter_request_body(*mut c_void, *const c_void, bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_request_trailers(*mut c_void, *const c_void) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_headers(*mut c_void, *const c_void, bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_body(*mut c_void, *const c_void, bool) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_response_trailers(*mut c_void, *const c_void) -> u32 = 0;
    envoy_dynamic_module_on_http_filter_stream_complete(*mut c_void, *const c_void) -> () = ();
    envoy_dynamic_module_on_http_filter_http_callout_done(*mut c_void, *const c_void, u64, u32, *const Header, usize, *const Buf, usize) -> () = ();
    envoy_dynamic_module_on_http_filter_scheduled(*mut c_void, *const c_void, u64) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_headers(*mut c_void, *const c_void, u64, *const Header, usize, bool) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_data(*mut c_void, *const c_void, u64, *const Buf, usize, bool) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_trailers(*mut c_void, *const c_void, u64, *const Header, usize) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_complete(*mut c_void, *const c_void, u64) -> () = ();
    envoy_dynamic_module_on_http_filter_http_stream_reset(*mut c_void, *const c_void, u64, u32) -> () = ();
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(*mut c_void, *const c_void) -> () = ();
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(*mut c_void, *const c_void) -> () = ();
}
