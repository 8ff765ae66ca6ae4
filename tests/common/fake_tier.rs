//! The caches' shared tier (the native build's process-wide L2) as plain maps, for tests that
//! play two workers (two `VmState`s) sharing one: it keeps what the real one keeps, with the
//! same "later JWKS wins" rule, and counts the entries it hands out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use envoy_wam::bearer::TokenKeys;
use envoy_wam::cache::Key;
use envoy_wam::config::Settings;
use envoy_wam::flow::{HeaderList, RequestFlow, VmState};
use envoy_wam::http::{Action, CalloutResult};
use envoy_wam::jwks::Jwk;
use envoy_wam::policy::{Limit, RateLimits};
use envoy_wam::shared_tier::{SharedJwks, SharedSession, SharedTier, SharedVerdict};
use serde_json::Value;

use super::Rng;

type SiteEntry = (Arc<str>, u64);

/// The tier of one process, in plain maps; `hits` counts the entries it handed out.
#[derive(Default)]
pub struct FakeTier {
    pub keys: TokenKeys,
    pub sessions: Mutex<HashMap<(usize, String), Arc<SharedSession>>>,
    pub tokens: Mutex<HashMap<Key, (SharedVerdict, u64)>>,
    pub jwks: Mutex<HashMap<usize, SharedJwks>>,
    pub sites: Mutex<HashMap<(usize, Key), SiteEntry>>,
    pub limits: Mutex<RateLimits>,
    pub hits: AtomicUsize,
}

impl FakeTier {
    fn hit<T>(&self, found: Option<T>) -> Option<T> {
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::Relaxed)
    }
}

impl SharedTier for FakeTier {
    fn token_keys(&self) -> &TokenKeys {
        &self.keys
    }
    fn session(&self, ws: usize, sig: &str) -> Option<Arc<SharedSession>> {
        let found = self
            .sessions
            .lock()
            .unwrap()
            .get(&(ws, sig.into()))
            .cloned();
        self.hit(found)
    }
    fn put_session(&self, ws: usize, sig: &str, entry: Arc<SharedSession>) {
        self.sessions
            .lock()
            .unwrap()
            .insert((ws, sig.into()), entry);
    }
    fn token(&self, key: &Key) -> Option<(SharedVerdict, u64)> {
        let found = self.tokens.lock().unwrap().get(key).cloned();
        self.hit(found)
    }
    fn put_token(&self, key: &Key, verdict: SharedVerdict, until: u64) {
        self.tokens.lock().unwrap().insert(*key, (verdict, until));
    }
    fn jwks(&self, op: usize) -> Option<SharedJwks> {
        let found = self.jwks.lock().unwrap().get(&op).cloned();
        self.hit(found)
    }
    /// As the real tier (`host::native::shared_caches`): the later set is kept.
    fn put_jwks(&self, op: usize, keys: Arc<Vec<Jwk>>, fetched_at: u64) {
        let mut sets = self.jwks.lock().unwrap();
        if sets.get(&op).is_none_or(|(_, at)| *at <= fetched_at) {
            sets.insert(op, (keys, fetched_at));
        }
    }
    fn site_token(&self, site: usize, key: &Key) -> Option<(Arc<str>, u64)> {
        let found = self.sites.lock().unwrap().get(&(site, *key)).cloned();
        self.hit(found)
    }
    fn put_site_token(&self, site: usize, key: &Key, value: Arc<str>, until: u64) {
        self.sites
            .lock()
            .unwrap()
            .insert((site, *key), (value, until));
    }
    fn take(&self, limit: &Limit, key: &str, now_ms: u64) -> Result<(), u64> {
        self.limits.lock().unwrap().take(limit, key, now_ms)
    }
}

/// Two workers of one process: each with its own caches, both with `tier` (or none).
pub struct Process {
    pub settings: Settings,
    pub workers: [VmState; 2],
    pub rng: Rng,
}

impl Process {
    pub fn with(config: &Value, tier: Option<Arc<FakeTier>>) -> Self {
        let settings = Settings::from_json(config.to_string().as_bytes()).unwrap();
        let workers = [VmState::new(&settings), VmState::new(&settings)].map(|mut vm| {
            if let Some(tier) = &tier {
                vm.share(tier.clone());
            }
            vm
        });
        Self {
            settings,
            workers,
            rng: Rng(7),
        }
    }

    /// Request `h` on worker `w`, in `flow`.
    pub fn request_in(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        h: &HeaderList,
        now: u64,
    ) -> Action {
        flow.on_request(&self.settings, &mut self.workers[w], h, now, &mut self.rng)
    }

    /// The answer `r` to `flow`'s callout, on worker `w`.
    pub fn answer_at(
        &mut self,
        w: usize,
        flow: &mut RequestFlow,
        h: &HeaderList,
        r: CalloutResult,
        now: u64,
    ) -> Action {
        flow.on_callout(
            &self.settings,
            &mut self.workers[w],
            h,
            r,
            now,
            &mut self.rng,
        )
    }
}
