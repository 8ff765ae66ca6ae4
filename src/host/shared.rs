//! The revocation list's store across workers: Envoy's shared data.

use proxy_wasm::hostcalls;
use proxy_wasm::types::Status;

use crate::revocation::{SharedStore, StoreError};

/// Envoy's shared data: one store for every worker's VM of this plugin (same `vm_id`).
pub(super) struct HostSharedData;

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
