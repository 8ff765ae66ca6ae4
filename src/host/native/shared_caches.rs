//! The process-wide tier of the caches (`crate::shared_tier`): what one worker learned the
//! expensive way, found by the others. One per configuration: a reload starts with an empty
//! one, as the workers' own caches do.
//!
//! Bounded caches are `quick_cache`'s sharded concurrent cache, with the capacities the
//! workers' caches have; the rate-limit buckets and the JWKS are under one plain lock each
//! (only requests matched by a rate-limit rule, and JWKS misses, take them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use quick_cache::sync::Cache;

use crate::bearer::TokenKeys;
use crate::cache::Key;
use crate::config::Settings;
use crate::flow::SESSION_CACHE_ENTRIES;
use crate::jwks::Jwk;
use crate::policy::{Limit, RateLimits};
use crate::shared_tier::{SharedSession, SharedTier, SharedVerdict};

/// See the module documentation.
pub(super) struct SharedCaches {
    keys: TokenKeys,
    /// By web session and the cookie's last segment, as in a worker's session cache.
    sessions: Cache<(usize, String), Arc<SharedSession>>,
    tokens: Cache<Key, (SharedVerdict, u64)>,
    /// By site and subject key.
    sites: Cache<(usize, Key), (Arc<str>, u64)>,
    jwks: Mutex<HashMap<usize, (Arc<Vec<Jwk>>, u64)>>,
    limits: Mutex<RateLimits>,
}

/// A lock whose holder panicked still guards whole values (every update under it is one
/// assignment or one bucket step), so it is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SharedCaches {
    fn new(settings: &Settings) -> Self {
        let sessions = SESSION_CACHE_ENTRIES.saturating_mul(settings.web_sessions.len());
        let sites = settings
            .sites
            .iter()
            .fold(0usize, |n, s| n.saturating_add(s.cache.max_entries));
        Self {
            keys: TokenKeys::default(),
            sessions: Cache::new(sessions.max(1)),
            tokens: Cache::new(settings.api.cache_max_entries.max(1)),
            sites: Cache::new(sites.max(1)),
            jwks: Mutex::new(HashMap::new()),
            limits: Mutex::new(RateLimits::default()),
        }
    }

    /// The tier of configuration `id`, made on first use: every worker that takes up the
    /// configuration gets the same one. It lives as long as a worker holds it.
    pub(super) fn for_config(id: u64, settings: &Settings) -> Arc<SharedCaches> {
        static TIERS: OnceLock<Mutex<HashMap<u64, Weak<SharedCaches>>>> = OnceLock::new();
        let mut tiers = lock(TIERS.get_or_init(Default::default));
        if let Some(tier) = tiers.get(&id).and_then(Weak::upgrade) {
            return tier;
        }
        // Configurations no worker holds any more go with the first new one.
        tiers.retain(|_, t| t.strong_count() > 0);
        let tier = Arc::new(SharedCaches::new(settings));
        tiers.insert(id, Arc::downgrade(&tier));
        tier
    }
}

impl SharedTier for SharedCaches {
    fn token_keys(&self) -> &TokenKeys {
        &self.keys
    }

    fn session(&self, ws: usize, sig: &str) -> Option<Arc<SharedSession>> {
        self.sessions.get(&(ws, sig.to_owned()))
    }

    fn put_session(&self, ws: usize, sig: &str, entry: Arc<SharedSession>) {
        self.sessions.insert((ws, sig.to_owned()), entry);
    }

    fn token(&self, key: &Key) -> Option<(SharedVerdict, u64)> {
        self.tokens.get(key)
    }

    fn put_token(&self, key: &Key, verdict: SharedVerdict, until: u64) {
        self.tokens.insert(*key, (verdict, until));
    }

    fn jwks(&self, op: usize) -> Option<(Arc<Vec<Jwk>>, u64)> {
        lock(&self.jwks).get(&op).cloned()
    }

    fn put_jwks(&self, op: usize, keys: Arc<Vec<Jwk>>, fetched_at: u64) {
        let mut sets = lock(&self.jwks);
        // Two workers fetching at once: the later fetch is the one kept.
        if sets.get(&op).is_none_or(|(_, at)| *at <= fetched_at) {
            sets.insert(op, (keys, fetched_at));
        }
    }

    fn site_token(&self, site: usize, key: &Key) -> Option<(Arc<str>, u64)> {
        self.sites.get(&(site, *key))
    }

    fn put_site_token(&self, site: usize, key: &Key, value: Arc<str>, until: u64) {
        self.sites.insert((site, *key), (value, until));
    }

    fn take(&self, limit: &Limit, key: &str, now_ms: u64) -> Result<(), u64> {
        lock(&self.limits).take(limit, key, now_ms)
    }
}
