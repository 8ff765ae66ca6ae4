//! What the host gives every part of it: the time, the log and randomness.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::LogLevel;

use crate::flow::{Level, LogLine};
use crate::login::Entropy;

pub(super) fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

pub(super) fn log_line(line: &LogLine) {
    let level = match line.level {
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    log(level, &line.message);
}

pub(super) fn now_since_epoch() -> Duration {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default()
}

pub(super) fn now_secs() -> u64 {
    now_since_epoch().as_secs()
}

/// Seconds since the epoch, refreshed by the root context's tick (every 100 ms). Envoy ticks the
/// root context of every worker's VM, so each VM's clock stays current; reading it costs no host
/// call on the request path, where sessions are judged to the second anyway.
#[derive(Clone, Default)]
pub(super) struct Clock(Rc<Cell<u64>>);

impl Clock {
    pub(super) fn refresh(&self) {
        self.0.set(now_secs());
    }

    pub(super) fn now(&self) -> u64 {
        match self.0.get() {
            0 => now_secs(),
            t => t,
        }
    }
}

/// The host's CSPRNG (WASI `random_get`, which Envoy backs with its own secure random).
pub(super) struct HostEntropy;

impl Entropy for HostEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
}
