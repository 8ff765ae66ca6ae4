//! Writes the flow's access-log fields into Envoy's filter state (`set_property` stores them
//! under `wasm.<name>`), where the access log reads them with
//! `%FILTER_STATE(wasm.envoy_wam.subject:PLAIN)%` and the like.

use proxy_wasm::hostcalls;

use crate::flow::AccessFields;

pub(super) fn write(fields: &AccessFields) {
    for (name, value) in fields.entries() {
        // Best effort: a field the host will not take leaves that column at `-`.
        let _ = hostcalls::set_property(vec![name], Some(value.as_bytes()));
    }
}
