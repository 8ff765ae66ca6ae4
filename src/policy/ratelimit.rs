//! Token buckets for rate-limit rules. Sans-IO: the caller owns one [`RateLimits`] per VM
//! and passes the time in. Without a shared tier the buckets are the VM's (so per Envoy
//! worker: with N workers a client may get up to N times the configured rate); with one
//! (the native build) every worker draws from the tier's, and a limit is exact per Envoy. A new compiled policy numbers its rules anew, so the caller starts
//! a new [`RateLimits`] with it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use crate::shared_tier::{active, Tier};

/// Default bound on the number of buckets kept.
pub const DEFAULT_MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
    /// When the bucket is full again if untouched: from then on it equals a new bucket and
    /// may be dropped without changing any answer.
    full_at_ms: u64,
}

/// The buckets of every rate-limit rule, keyed by rule id and a keyed hash of the client key.
pub struct RateLimits {
    buckets: HashMap<(u32, u64), Bucket>,
    max: usize,
    /// Randomly keyed per instance, so clients cannot aim collisions at someone's bucket.
    hasher: RandomState,
    /// Where the buckets are when the workers share them (then `buckets` stays empty).
    shared: Tier,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("buckets", &self.buckets.len())
            .field("max", &self.max)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BUCKETS)
    }
}

/// A rule's bucket shape, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub id: u32,
    /// Bucket size (`burst`), at least 1.
    pub capacity: f64,
    /// Tokens added per millisecond (`requests / interval_s / 1000`), above 0.
    pub per_ms: f64,
}

impl RateLimits {
    /// At most `max_buckets` buckets are kept (at least 16).
    pub fn new(max_buckets: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            max: max_buckets.max(16),
            hasher: RandomState::new(),
            shared: None,
        }
    }

    /// Buckets kept by the shared tier `tier`, the same for every worker that has it.
    pub fn shared(tier: Tier) -> Self {
        Self {
            shared: tier,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Takes one token from the bucket of (`limit`, `key`): `Ok(())`, or `Err(seconds)` until
    /// one is available again (at least 1).
    pub fn take(&mut self, limit: &Limit, key: &str, now_ms: u64) -> Result<(), u64> {
        if let Some(tier) = active(&self.shared) {
            return tier.take(limit, key, now_ms);
        }
        let slot = (limit.id, self.hasher.hash_one(key));
        if !self.buckets.contains_key(&slot) && self.buckets.len() >= self.max {
            self.evict(now_ms);
        }
        let b = self.buckets.entry(slot).or_insert(Bucket {
            tokens: limit.capacity,
            last_ms: now_ms,
            full_at_ms: now_ms,
        });
        // A clock that steps back refills nothing (and does not move `last_ms` back).
        let elapsed = now_ms.saturating_sub(b.last_ms) as f64;
        b.tokens = (b.tokens + elapsed * limit.per_ms).min(limit.capacity);
        b.last_ms = b.last_ms.max(now_ms);
        let result = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = (1.0 - b.tokens) / limit.per_ms;
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        };
        let to_full = ((limit.capacity - b.tokens) / limit.per_ms).ceil();
        b.full_at_ms = b.last_ms.saturating_add(to_full as u64);
        result
    }

    /// Makes room: drops the buckets that are full again (no answer changes), and if that
    /// frees less than a tenth, the least recently used until a tenth is free. Amortised:
    /// it runs once per tenth of the bound in new keys at most.
    fn evict(&mut self, now_ms: u64) {
        self.buckets.retain(|_, b| b.full_at_ms > now_ms);
        let target = self.max - self.max / 10;
        if self.buckets.len() <= target {
            return;
        }
        let mut ages: Vec<u64> = self.buckets.values().map(|b| b.last_ms).collect();
        let drop = self.buckets.len() - target;
        // The `drop`-th oldest access time; everything at or before it goes.
        let (_, cutoff, _) = ages.select_nth_unstable(drop - 1);
        let cutoff = *cutoff;
        self.buckets.retain(|_, b| b.last_ms > cutoff);
    }
}
