//! Whether the last configuration was taken, in Envoy's stats (as Pomerium's
//! `config_last_reload_success`): the gauge `envoy_wam.config_last_reload_success` (1 or 0)
//! and the counter `envoy_wam.config_reload_failed`.
//!
//! A refused configuration is configured on a VM of its own, whose stats scope goes away with
//! the listener update Envoy rejects. Envoy keeps one stat object per name, though, and every
//! VM serving a taken configuration has defined the same two names: what the refused one
//! records lands in the objects they hold, so it stays in `/stats`. This is the configure
//! path, not a request's: direct host calls are fine here.

use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use super::common::{RELOAD_FAILED as FAILED, RELOAD_LAST_SUCCESS as LAST_SUCCESS};

/// Records the outcome of `on_configure`. Only refusals are counted: a taken configuration is
/// configured once per worker (and once more on the main thread), a refused one only once.
pub(super) fn record(taken: bool) {
    let gauge = hostcalls::define_metric(MetricType::Gauge, LAST_SUCCESS);
    let failed = hostcalls::define_metric(MetricType::Counter, FAILED);
    if let Ok(id) = gauge {
        let _ = hostcalls::record_metric(id, u64::from(taken));
    }
    if let (Ok(id), false) = (failed, taken) {
        let _ = hostcalls::increment_metric(id, 1);
    }
}
