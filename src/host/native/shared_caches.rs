//! The process-wide tier of the caches (`crate::shared_tier`): what one worker learned the
//! expensive way, found by the others. One per configuration: a reload starts with an empty
//! one, as the workers' own caches do.
//!
//! Bounded caches are `quick_cache`'s sharded concurrent cache, with the capacities the
//! workers' caches have; the rate-limit buckets and the JWKS are under one plain lock each
//! (only requests matched by a rate-limit rule, and JWKS misses, take them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use quick_cache::sync::Cache;

use crate::bearer::TokenKeys;
use crate::cache::Key;
use crate::config::Settings;
use crate::flow::SESSION_CACHE_ENTRIES;
use crate::jwks::Jwk;
use crate::metrics::GAUGES;
use crate::policy::{Limit, RateLimits};
use crate::shared_tier::{SharedJwks, SharedSession, SharedTier, SharedVerdict};

/// See the module documentation.
pub(super) struct SharedCaches {
    keys: TokenKeys,
    /// By web session and the cookie's last segment, as in a worker's session cache.
    sessions: Cache<(usize, String), Arc<SharedSession>>,
    tokens: Cache<Key, (SharedVerdict, u64)>,
    /// By site and subject key.
    sites: Cache<(usize, Key), (Arc<str>, u64)>,
    jwks: Mutex<HashMap<usize, SharedJwks>>,
    limits: Mutex<RateLimits>,
    /// What this tier has added to the shared-cache gauges, which every configuration's tier
    /// adds to (see `stats::flush_shared`).
    reported: [AtomicI64; GAUGES.len()],
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
            reported: Default::default(),
        }
    }

    /// Entries held, in the order of [`GAUGES`].
    pub(super) fn sizes(&self) -> [usize; GAUGES.len()] {
        [self.sessions.len(), self.tokens.len(), self.sites.len()]
    }

    /// Sets what this tier has added to gauge `i` to `size`; returns the change to hand to
    /// Envoy. Any worker may flush: the swap makes each change handed over once.
    pub(super) fn report(&self, i: usize, size: i64) -> i64 {
        self.reported
            .get(i)
            .map_or(0, |r| size.saturating_sub(r.swap(size, Ordering::Relaxed)))
    }

    /// A change Envoy did not take: reported again at the next flush.
    pub(super) fn unreport(&self, i: usize, delta: i64) {
        if let Some(r) = self.reported.get(i) {
            r.fetch_sub(delta, Ordering::Relaxed);
        }
    }

    /// Hands what `old` (a destroyed configuration's tier) added to the gauges over to this
    /// tier, whose next flush takes it back out. Once: the first worker to reap `old` takes it.
    pub(super) fn carry_from(&self, old: &SharedCaches) {
        for (mine, theirs) in self.reported.iter().zip(&old.reported) {
            mine.fetch_add(theirs.swap(0, Ordering::Relaxed), Ordering::Relaxed);
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

    fn jwks(&self, op: usize) -> Option<SharedJwks> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bearer::{TokenCache, TokenInfo};
    use crate::http::HeaderOps;
    use crate::login::tests::CountingEntropy;
    use crate::session::{KeyRing, SessionCache};
    use std::time::Instant;

    const NOW: u64 = 1_800_000_000;

    fn settings() -> Settings {
        let json = serde_json::json!({
            "op": {"issuer": "https://op.example.com", "cluster": "op",
                   "authorization_endpoint": "https://op.example.com/auth",
                   "token_endpoint": "https://op.example.com/token",
                   "jwks_uri": "https://op.example.com/jwks"},
            "client": {"client_id": "c", "client_secret": "s",
                       "redirect_uri": "https://gw.example.com/pa/oidc/cb"},
            "session": {"signing_keys": [{"kid": "k1", "secret": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}]}
        });
        Settings::from_json(json.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn one_tier_per_configuration_and_the_later_jwks_wins() {
        let s = settings();
        let a = SharedCaches::for_config(9001, &s);
        assert!(Arc::ptr_eq(&a, &SharedCaches::for_config(9001, &s)));
        let b = SharedCaches::for_config(9002, &s);
        assert!(!Arc::ptr_eq(&a, &b), "a reload gets a tier of its own");
        a.put_jwks(0, Arc::new(Vec::new()), NOW + 10);
        a.put_jwks(0, Arc::new(Vec::new()), NOW);
        assert_eq!(a.jwks(0).map(|(_, at)| at), Some(NOW + 10));
        assert!(b.jwks(0).is_none());
        drop((a, b));
        let c = SharedCaches::for_config(9001, &s);
        assert!(c.jwks(0).is_none(), "no worker held it: a new one");
    }

    #[test]
    fn gauge_changes_are_handed_over_once_and_a_reloads_old_tier_is_taken_out() {
        let s = settings();
        let (old, new) = (SharedCaches::new(&s), SharedCaches::new(&s));
        assert_eq!(old.report(0, 5), 5);
        assert_eq!(old.report(0, 5), 0, "nothing moved");
        assert_eq!(old.report(0, 3), -2);
        // Envoy did not take the change: it comes again.
        old.unreport(1, old.report(1, 4));
        assert_eq!(old.report(1, 4), 4);
        // The old configuration is gone: the new tier's next report takes its entries out,
        // and a second reaper carries nothing.
        new.carry_from(&old);
        new.carry_from(&old);
        assert_eq!(new.report(0, 1), 1 - 3);
        assert_eq!(new.report(1, 0), -4);
        assert_eq!(old.report(2, 0), 0);
        assert_eq!(new.sizes(), [0, 0, 0]);
    }

    /// Per lookup: a hit in a worker's own cache, a hit in the shared tier (a worker that has
    /// not seen the cookie), and a miss in both (the cookie opened and its JSON parsed).
    /// `cargo test --release --lib shared_caches -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn what_a_session_lookup_costs() {
        let s = settings();
        let tier: Arc<dyn SharedTier> = SharedCaches::for_config(9100, &s);
        let keys = KeyRing::new(&[("k1".into(), vec![7; 32])]);
        let mut claims = serde_json::Map::new();
        claims.insert("groups".into(), serde_json::json!(["staff", "admins"]));
        let session = crate::session::Session {
            sid: "sid".into(),
            sub: "alice".into(),
            auth_time: NOW,
            created_at: NOW,
            expires_at: NOW + 3600,
            last_activity: NOW,
            claims,
            op: Default::default(),
        };
        let token = session.encode(&keys, &mut CountingEntropy(0)).unwrap();
        let derive = |s: &crate::session::Session| {
            let h = |n: &str, v: &str| (n.to_string(), Some(v.to_string()));
            let groups = "staff,admins";
            let all = [
                h("x-wam-user", &s.sub),
                h("x-wam-email", "a@example.com"),
                h("x-wam-groups", groups),
            ];
            Some(HeaderOps::from(all))
        };
        let mut warm = SessionCache::new(10).with_tier(Some(tier.clone()), 0);
        assert!(warm.lookup(&token, &keys, NOW, 3600, derive).is_some());
        let n = 200_000u32;
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        };
        let l1 = time(&mut || {
            std::hint::black_box(warm.lookup(&token, &keys, NOW, 3600, derive));
        });
        let l2 = time(&mut || {
            let mut cold = SessionCache::new(10).with_tier(Some(tier.clone()), 0);
            std::hint::black_box(cold.lookup(&token, &keys, NOW, 3600, derive));
        });
        let miss = time(&mut || {
            let mut cold = SessionCache::new(10);
            std::hint::black_box(cold.lookup(&token, &keys, NOW, 3600, derive));
        });
        println!(
            "session lookup: L1 hit {l1:.3} µs, L2 hit {l2:.3} µs, miss (verify) {miss:.3} µs"
        );

        // A bearer-token verdict: a worker's own cache, and the tier's (a worker that has not
        // seen the token: its miss, then the tier, then its own cache filled).
        let key = [3u8; 32];
        let info = TokenInfo {
            sub: Some("svc".into()),
            client_id: Some("api_client".into()),
            scopes: vec!["orders:read".into()],
            expires_at: NOW + 600,
            claims: serde_json::Map::new(),
            headers: derive(&session).unwrap(),
            provider: 0,
        };
        let mut warm = TokenCache::new(10, 300, 10).with_tier(Some(tier.clone()));
        warm.lookup(&key, 1, NOW);
        warm.complete(&key, Some(Ok(info)), NOW);
        let l1 = time(&mut || {
            std::hint::black_box(warm.lookup(&key, 1, NOW));
        });
        let l2 = time(&mut || {
            let mut cold = TokenCache::new(10, 300, 10).with_tier(Some(tier.clone()));
            std::hint::black_box(cold.lookup(&key, 1, NOW));
            std::hint::black_box(cold.verdict_in_tier(&key, NOW));
        });
        println!("bearer lookup: L1 hit {l1:.3} µs, L2 hit {l2:.3} µs");
    }
}
