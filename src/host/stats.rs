//! The filter's metrics as Envoy stats: defined once per configuration, and fed from the root
//! context's tick with what the worker counted since the last one (`crate::metrics`). The
//! request path makes no host call for them.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};

use super::runtime::log;
use crate::flow::VmState;
use crate::metrics::{Metrics, GAUGES};

/// Envoy's ids of the metrics of one configuration (`None`: the host refused to define it).
#[derive(Default)]
pub(super) struct Stats {
    counters: Vec<Option<u32>>,
    histograms: Vec<Option<u32>>,
    gauges: Vec<Option<u32>>,
    /// What this worker last added to each cache-size gauge: the gauges are shared by every
    /// worker (Envoy sums what each adds), so each worker adds only its changes.
    reported: [i64; GAUGES.len()],
}

impl Stats {
    /// Defines the metrics `metrics` counts (none when they are off). The gauges' reported
    /// sizes carry over from the previous configuration, whose caches are gone: the next
    /// flush takes them back out (at once, when metrics are now off).
    pub(super) fn define(metrics: &Metrics, previous: Option<Stats>) -> Stats {
        let mut previous = previous.unwrap_or_default();
        if !metrics.enabled() {
            previous.withdraw();
            return Stats::default();
        }
        let mut failed = 0;
        let mut define = |kind, names: Vec<String>| -> Vec<Option<u32>> {
            names
                .iter()
                .map(|n| {
                    let id = hostcalls::define_metric(kind, n).ok();
                    failed += usize::from(id.is_none());
                    id
                })
                .collect()
        };
        let stats = Stats {
            counters: define(MetricType::Counter, metrics.counter_names()),
            histograms: define(MetricType::Histogram, metrics.histogram_names()),
            gauges: define(MetricType::Gauge, metrics.gauge_names()),
            reported: previous.reported,
        };
        if failed > 0 {
            log(
                LogLevel::Warn,
                &format!("envoy-wam: the host refused to define {failed} metrics"),
            );
        }
        stats
    }

    /// Hands Envoy what the worker counted since the last tick.
    pub(super) fn flush(&mut self, vm: &mut VmState) {
        if !vm.metrics.enabled() {
            return;
        }
        let counters = &self.counters;
        vm.metrics.take_counts(|i, n| {
            if let Some(Some(id)) = counters.get(i) {
                let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
            }
        });
        let histograms = &self.histograms;
        vm.metrics.take_latencies(|i, ms| {
            if let Some(Some(id)) = histograms.get(i) {
                let _ = hostcalls::record_metric(*id, u64::from(ms));
            }
        });
        let sizes = vm.cache_sizes();
        self.report_sizes(sizes.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
    }

    /// Takes this worker's cache sizes back out of the shared gauges.
    pub(super) fn withdraw(&mut self) {
        self.report_sizes([0; GAUGES.len()]);
    }

    fn report_sizes(&mut self, sizes: [i64; GAUGES.len()]) {
        for ((id, reported), size) in self.gauges.iter().zip(&mut self.reported).zip(sizes) {
            let delta = size.saturating_sub(*reported);
            if delta == 0 {
                continue;
            }
            if let Some(id) = id {
                if hostcalls::increment_metric(*id, delta).is_ok() {
                    *reported = size;
                }
            }
        }
    }
}
