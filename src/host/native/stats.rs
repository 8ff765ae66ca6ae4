//! The filter's metrics and reload stats as Envoy stats, as the wasm build has them
//! (`host/stats.rs`, `host/reload.rs`), through the dynamic-module metrics callbacks.
//!
//! - Defined once per configuration, in `config_new` on the main thread (Envoy freezes stat
//!   creation after it). Envoy files them under the filter's `metrics_namespace`; the
//!   configurations this project ships set it to `wasmcustom`, the wasm build's, so both builds
//!   serve the same names (`wasmcustom.envoy_wam.*` in `/stats`, `envoy_wam_*` in Prometheus)
//!   and the same `stats_tags` and dashboard work for either.
//! - Counted per worker in the core (`crate::metrics`), as in the wasm build, and handed to
//!   Envoy when a request ends, through that request's filter: a native call costs a few
//!   nanoseconds (no VM boundary), and no worker timer exists that would hand over the last
//!   request's counts otherwise. Only counts that moved are handed over.

use super::abi::{ConfigHandle, Filter, MetricKind};
use super::shared_caches::SharedCaches;
use crate::flow::VmState;
use crate::host::common::{RELOAD_FAILED, RELOAD_LAST_SUCCESS};
use crate::metrics::{Metrics, GAUGES};

/// Envoy's ids of one configuration's metrics (`None`: Envoy refused to define it; empty when
/// metrics are off).
#[derive(Default)]
pub(super) struct StatIds {
    counters: Vec<Option<usize>>,
    histograms: Vec<Option<usize>>,
    gauges: Vec<Option<usize>>,
    /// The process-wide tier's entries (`Metrics::shared_gauge_names`).
    shared_gauges: Vec<Option<usize>>,
}

impl StatIds {
    /// Defines the metrics `metrics` counts; the number Envoy refused comes back too.
    pub(super) fn define(envoy: ConfigHandle, metrics: &Metrics) -> (StatIds, usize) {
        let mut failed = 0;
        let mut define = |kind, names: Vec<String>| -> Vec<Option<usize>> {
            names
                .iter()
                .map(|n| {
                    let id = envoy.define(kind, n);
                    failed += usize::from(id.is_none());
                    id
                })
                .collect()
        };
        let ids = StatIds {
            counters: define(MetricKind::Counter, metrics.counter_names()),
            histograms: define(MetricKind::Histogram, metrics.histogram_names()),
            gauges: define(MetricKind::Gauge, metrics.gauge_names()),
            shared_gauges: define(MetricKind::Gauge, metrics.shared_gauge_names()),
        };
        (ids, failed)
    }
}

/// What one worker has added to each cache-size gauge: the gauges are shared by every worker
/// (each adds its own changes), and carried over to the worker's state for the next
/// configuration, whose first flush then takes the old caches' entries back out.
pub(super) type Reported = [i64; GAUGES.len()];

/// Hands Envoy what this worker counted since the last flush, through `envoy` (a live filter
/// of the configuration `ids` belong to, on this worker).
pub(super) fn flush(ids: &StatIds, reported: &mut Reported, vm: &mut VmState, envoy: Filter) {
    if !vm.metrics.enabled() {
        return;
    }
    vm.metrics.take_counts(|i, n| {
        if let Some(Some(id)) = ids.counters.get(i) {
            envoy.metric(
                MetricKind::Counter,
                *id,
                i64::try_from(n).unwrap_or(i64::MAX),
            );
        }
    });
    vm.metrics.take_latencies(|i, ms| {
        if let Some(Some(id)) = ids.histograms.get(i) {
            envoy.metric(MetricKind::Histogram, *id, i64::from(ms));
        }
    });
    let sizes = vm.cache_sizes();
    for ((id, reported), size) in ids.gauges.iter().zip(reported.iter_mut()).zip(sizes) {
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let delta = size.saturating_sub(*reported);
        if let (Some(id), true) = (id, delta != 0) {
            if envoy.metric(MetricKind::Gauge, *id, delta) {
                *reported = size;
            }
        }
    }
}

/// Hands Envoy how many entries the process-wide tier holds now (any worker may: the tier
/// keeps what it has handed over). Gauges are added to, as the workers' cache-size gauges are,
/// so several configurations (a reload draining, several envoy-wam filters) sum.
pub(super) fn flush_shared(ids: &StatIds, tier: &SharedCaches, envoy: Filter) {
    for (i, (id, size)) in ids.shared_gauges.iter().zip(tier.sizes()).enumerate() {
        let Some(id) = id else { continue };
        let delta = tier.report(i, i64::try_from(size).unwrap_or(i64::MAX));
        if delta != 0 && !envoy.metric(MetricKind::Gauge, *id, delta) {
            tier.unreport(i, delta);
        }
    }
}

/// Records whether a configuration was taken: the gauge `envoy_wam.config_last_reload_success`
/// (1 or 0) and, for a refusal, the counter `envoy_wam.config_reload_failed`. Defined by every
/// configuration, taken or not: Envoy keeps one stat per name in a scope, so what a refused
/// configuration records lands in the stat the serving one holds. Called once per
/// configuration (there is one `config_new` per configuration in this build, not one per
/// worker), so a taken one may set the gauge without counting anything.
pub(super) fn record_reload(envoy: ConfigHandle, taken: bool) {
    if let Some(id) = envoy.define(MetricKind::Gauge, RELOAD_LAST_SUCCESS) {
        envoy.set_gauge(id, u64::from(taken));
    }
    if let Some(id) = envoy.define(MetricKind::Counter, RELOAD_FAILED) {
        if !taken {
            envoy.increment_counter(id, 1);
        }
    }
}
