//! What one Envoy worker keeps per filter configuration (as the wasm build keeps per VM), the
//! ticker that drives every worker's tick, and the store shared by all workers (the caches'
//! shared tier is in `shared_caches`).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::abi::{log, Filter, LogLevel, Scheduler};
use super::filter::Config;
use super::shared_caches::SharedCaches;
use super::stats::{self, Reported, StatIds};
use crate::config::Settings;
use crate::flow::{Level, LogLine, VmState};
use crate::host::common::{new_vm, TICK_MS};
use crate::http::Wake;
use crate::revocation::{SharedStore, StoreError};

/// Scheduler events.
pub(super) const EVENT_TICK: u64 = 1;
pub(super) const EVENT_WAKE: u64 = 2;

pub(super) fn now_since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub(super) fn now_secs() -> u64 {
    now_since_epoch().as_secs()
}

pub(super) fn now_ms() -> u64 {
    u64::try_from(now_since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// A line of the core's, prefixed as the wasm build's are (Envoy writes those as
/// `wasm log envoy-wam: ...`): log readers and tests match `envoy-wam: <kind>:`.
pub(super) fn log_line(line: &LogLine) {
    let level = match line.level {
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    log(level, &format!("envoy-wam: {}", line.message));
}

/// A parked request of this worker: how to reach it (its scheduler) and where to leave why
/// it is woken.
pub(super) struct Parked {
    pub(super) wake: Rc<Cell<Option<Wake>>>,
    pub(super) scheduler: Scheduler,
}

/// One worker's state for one configuration.
pub(super) struct Worker {
    pub(super) settings: Rc<Settings>,
    pub(super) vm: RefCell<VmState>,
    pub(super) parked: RefCell<HashMap<u32, Parked>>,
    next_ctx: Cell<u32>,
    last_tick_ms: Cell<u64>,
    /// The discovery callout under way: the request that sent it, the callout's id, the OP
    /// and when it was sent (ms).
    pub(super) discovery: Cell<Option<(u32, u64, usize, u64)>>,
    stats: Arc<StatIds>,
    reported: Cell<Reported>,
    /// The configuration's process-wide tier, also behind `vm`'s caches: its sizes go to the
    /// shared-cache gauges.
    tier: Arc<SharedCaches>,
}

/// A worker's state per configuration id, with whether Envoy still holds the configuration.
type Workers = HashMap<u64, (Rc<Worker>, Arc<AtomicBool>)>;

thread_local! {
    static WORKERS: RefCell<Workers> = RefCell::new(HashMap::new());
}

impl Worker {
    /// This thread's state for `config` (parsed from its JSON on first use; the
    /// configuration was checked when Envoy loaded it).
    pub(super) fn for_config(config: &Config) -> Option<Rc<Worker>> {
        let id = config.id;
        if let Some(w) = WORKERS.with(|m| m.borrow().get(&id).map(|(w, _)| w.clone())) {
            return Some(w);
        }
        let settings = Settings::from_json(&config.json).ok()?;
        let store: Rc<dyn SharedStore> = Rc::new(ProcessStore(config.filter_name.clone()));
        let mut vm = new_vm(&settings, store, now_secs());
        let tier = SharedCaches::for_config(id, &settings);
        vm.share(tier.clone());
        let w = Rc::new(Worker {
            settings: Rc::new(settings),
            vm: RefCell::new(vm),
            parked: RefCell::new(HashMap::new()),
            next_ctx: Cell::new(1),
            last_tick_ms: Cell::new(now_ms()),
            discovery: Cell::new(None),
            stats: config.stats.clone(),
            reported: Cell::new(Reported::default()),
            tier,
        });
        WORKERS.with(|m| m.borrow_mut().insert(id, (w.clone(), config.alive.clone())));
        w.reap_destroyed();
        Some(w)
    }

    /// Drops this thread's state for the configurations Envoy has destroyed (Envoy destroys
    /// one only after its last filter, so nothing uses it any more). What such a state added
    /// to the cache-size gauges is taken back out by this state's next flush: the gauges of
    /// every configuration are one stat per name. Called when a configuration starts on this
    /// worker and from the tick, so a reload's old caches leave the gauges within a tick of
    /// Envoy dropping them (after the listener's drain).
    fn reap_destroyed(&self) {
        let mut carried = self.reported.get();
        WORKERS.with(|m| {
            m.borrow_mut().retain(|_, (old, alive)| {
                let keep = alive.load(Ordering::Relaxed);
                if !keep {
                    for (c, g) in carried.iter_mut().zip(old.reported.get()) {
                        *c = c.saturating_add(g);
                    }
                    self.tier.carry_from(&old.tier);
                }
                keep
            })
        });
        self.reported.set(carried);
    }

    /// Hands Envoy what this worker counted, through `envoy`, a filter of this configuration
    /// in one of its own hooks (see `stats`).
    pub(super) fn flush_stats(&self, envoy: Filter) {
        let mut reported = self.reported.get();
        stats::flush(&self.stats, &mut reported, &mut self.vm.borrow_mut(), envoy);
        self.reported.set(reported);
        stats::flush_shared(&self.stats, &self.tier, envoy);
    }

    /// A request id unique on this worker (the flow's single flights name waiters by it).
    pub(super) fn next_ctx(&self) -> u32 {
        let id = self.next_ctx.get();
        self.next_ctx.set(id.wrapping_add(1).max(1));
        id
    }

    /// The tick's share, at most once per [`TICK_MS`]: other workers' revocations in, this
    /// worker's out, requests held for ticks released, log budgets rolled.
    pub(super) fn tick_if_due(&self) {
        let now = now_ms();
        if now.saturating_sub(self.last_tick_ms.get()) < TICK_MS {
            return;
        }
        self.last_tick_ms.set(now);
        self.reap_destroyed();
        let secs = now / 1000;
        let line = self.vm.borrow_mut().on_tick(&self.settings, secs);
        if let Some(line) = line {
            log_line(&line);
        }
        let suppressed = self.vm.borrow_mut().refused_lines.roll(secs);
        if let Some(line) = suppressed {
            log_line(&line);
        }
        self.wake_released();
    }

    /// Shares this worker's revocations with the others now. The wasm build leaves that to its
    /// next tick, which comes every 100 ms; here a worker ticks from its requests, and the
    /// request that revoked a session (a front-channel logout) may be its last for a while.
    pub(super) fn publish_if_dirty(&self) {
        let dirty = self.vm.borrow().revoked.is_dirty();
        if dirty {
            let line = self.vm.borrow_mut().publish_revocations(now_secs());
            if let Some(line) = line {
                log_line(&line);
            }
        }
    }

    /// Hands every request the core released its reason, and posts it a wake-up: it runs in
    /// its own hook (`on_http_filter_scheduled`), never inside another request's.
    pub(super) fn wake_released(&self) {
        let woken = std::mem::take(&mut self.vm.borrow_mut().woken);
        let parked = self.parked.borrow();
        for (ctx, why) in woken {
            if let Some(p) = parked.get(&ctx) {
                p.wake.set(Some(why));
                p.scheduler.commit(EVENT_WAKE);
            }
        }
    }

    pub(super) fn park(&self, ctx: u32, wake: Rc<Cell<Option<Wake>>>, scheduler: Scheduler) {
        self.parked
            .borrow_mut()
            .insert(ctx, Parked { wake, scheduler });
        ticker_add(scheduler);
    }

    /// `true` when the request was parked.
    pub(super) fn unpark(&self, ctx: u32) -> bool {
        match self.parked.borrow_mut().remove(&ctx) {
            Some(p) => {
                ticker_remove(p.scheduler);
                true
            }
            None => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The ticker: Envoy gives a dynamic module no per-worker timer, so one thread posts a tick to
// every parked request every TICK_MS; each runs its worker's tick in its own hook. A worker
// with no parked request ticks from its next request instead (nothing waits for it then).

// A set: requests park and leave at every wake-up, and held answers may be thousands at once.
fn ticker() -> &'static Mutex<HashSet<Scheduler>> {
    static TICKER: OnceLock<Mutex<HashSet<Scheduler>>> = OnceLock::new();
    TICKER.get_or_init(|| {
        let spawned = std::thread::Builder::new()
            .name("envoy-wam-tick".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_millis(TICK_MS));
                if let Ok(list) = ticker().lock() {
                    for s in list.iter() {
                        s.commit(EVENT_TICK);
                    }
                }
            });
        if spawned.is_err() {
            log(
                LogLevel::Critical,
                "envoy-wam: could not start the ticker thread; parked requests wake only on \
                 other requests",
            );
        }
        Mutex::new(HashSet::new())
    })
}

fn ticker_add(s: Scheduler) {
    if let Ok(mut list) = ticker().lock() {
        list.insert(s);
    }
}

/// Takes `s` off the ticker's list; once this returns the ticker no longer commits to it, so
/// it may be deleted.
pub(super) fn ticker_remove(s: Scheduler) {
    let mut list = match ticker().lock() {
        Ok(list) => list,
        // A poisoned lock still guards the list: a panic elsewhere must not leave a deleted
        // scheduler in it.
        Err(poisoned) => poisoned.into_inner(),
    };
    list.remove(&s);
}

// ---------------------------------------------------------------------------------------
// The store the revocation list and validation slots are shared through: one per process,
// keyed by the filter's name, with proxy-wasm's shared-data compare-and-swap semantics. Not
// by configuration: a reload must not forget the logouts so far (a logged-out cookie would
// open again), and the old configurations' entries must not pile up.

type Entries = HashMap<(Arc<str>, String), (Vec<u8>, u32)>;

fn store() -> &'static Mutex<(Entries, u32)> {
    static STORE: OnceLock<Mutex<(Entries, u32)>> = OnceLock::new();
    STORE.get_or_init(|| Mutex::new((HashMap::new(), 0)))
}

/// Every worker's view of the process-wide store, for the filters named `.0`.
struct ProcessStore(Arc<str>);

impl SharedStore for ProcessStore {
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let guard = store().lock().ok()?;
        guard.0.get(&(self.0.clone(), key.to_owned())).cloned()
    }

    fn store(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut guard = store().lock().map_err(|_| StoreError::Other)?;
        let (entries, last) = &mut *guard;
        let k = (self.0.clone(), key.to_owned());
        // As in Envoy's shared data: a CAS value only matters when the key exists.
        if let (Some(cas), Some((_, current))) = (cas, entries.get(&k)) {
            if cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        *last = last.wrapping_add(1).max(1);
        entries.insert(k, (value.to_vec(), *last));
        Ok(())
    }
}
