//! The request's headers as Envoy has them, read without the SDK's panicking helpers.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MapType;

use super::runtime::now_since_epoch;
use crate::request::{HeaderList, HeaderSource};

/// The request as Envoy has it: every header read in one host call (a name, a value, a
/// repeat or a byte the core must see is never missed by reading headers one by one).
pub(super) struct HostRequest {
    headers: HeaderList,
}

impl HostRequest {
    /// `None` when Envoy's answer cannot be read: the request is then refused, not routed.
    pub(super) fn read() -> Option<Self> {
        let bytes = header_map_bytes(MapType::HttpRequestHeaders)?;
        Some(Self {
            headers: HeaderList::from_serialized(bytes)?,
        })
    }
}

impl HostRequest {
    /// Unreadable headers read as none: with no `:path` the core answers 400.
    pub(super) fn read_or_empty() -> Self {
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
