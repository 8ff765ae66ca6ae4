//! A bounded, per-VM cache with single flight: the outcome of an expensive check or exchange
//! (a token introspection, an STS token exchange, a signed identity JWT), keyed by the SHA-256
//! of whatever identifies it, so the key material itself is never kept.
//!
//! Rules, in the order they apply:
//! - an entry is never served at or after its `expires_at`, which is the earlier of the
//!   value's own expiry (given by the caller) and `now + max_lifetime_s`;
//! - with an idle timeout, an entry not hit for `idle_s` seconds is dropped; every hit
//!   refreshes its last use;
//! - concurrent lookups of a missing key make one leader (who does the work and then calls
//!   [`FlightCache::complete`]) and waiters (released by `complete` or `abandon`, who then
//!   look up again: a hit, or, if the leader failed, one of them becomes the new leader);
//! - at most `max_entries` entries: when full, expired and idle entries go first, then the
//!   least recently used one. Pending entries are never evicted (requests wait on them); if the
//!   cache is full of them the caller does the work alone and its result is not kept.
//!
//! Sans-IO: the time is an input. The hit path is one hash lookup; only an insert into a full
//! cache scans it.

use std::collections::HashMap;

/// A cache key: SHA-256 of the key material.
pub type Key = [u8; 32];

/// What [`FlightCache::lookup`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<V> {
    /// A cached value (a clone: use `Rc` for anything large).
    Hit(V),
    /// Nobody is working on it: the caller is the leader, does the work, and then calls
    /// [`FlightCache::complete`] (or [`FlightCache::abandon`] if its request goes away).
    Miss,
    /// Another request is working on it; the caller is named in the answer of `complete` or
    /// `abandon`, and then looks up again.
    Wait,
}

enum Slot<V> {
    Ready {
        value: V,
        expires_at: u64,
        /// Time of the last hit (or of the insert), for the idle timeout.
        last_used: u64,
        /// Recency order for eviction: a counter, so entries used in the same second still
        /// have an order.
        seq: u64,
    },
    Pending {
        leader: u32,
        started: u64,
        waiters: Vec<u32>,
    },
}

/// See the module documentation.
pub struct FlightCache<V> {
    slots: HashMap<Key, Slot<V>>,
    max_entries: usize,
    idle_s: Option<u64>,
    max_lifetime_s: u64,
    /// A pending entry older than this is presumed lost (its leader never came back): the next
    /// lookup takes over as leader. Longer than any callout timeout.
    pending_timeout_s: u64,
    seq: u64,
}

impl<V> std::fmt::Debug for FlightCache<V> {
    /// Sizes only: never the values (they may be tokens).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightCache")
            .field("entries", &self.slots.len())
            .field("max_entries", &self.max_entries)
            .field("idle_s", &self.idle_s)
            .field("max_lifetime_s", &self.max_lifetime_s)
            .finish()
    }
}

/// Default for [`FlightCache::with_pending_timeout`]: past the longest callout timeout (60 s).
pub const DEFAULT_PENDING_TIMEOUT_S: u64 = 120;

impl<V: Clone> FlightCache<V> {
    /// `max_entries` (at least 1), `idle_s` (`None`: no idle timeout), and the longest any
    /// entry is kept (`u64::MAX`: only the value's own expiry counts).
    pub fn new(max_entries: usize, idle_s: Option<u64>, max_lifetime_s: u64) -> Self {
        Self {
            slots: HashMap::new(),
            max_entries: max_entries.max(1),
            idle_s,
            max_lifetime_s,
            pending_timeout_s: DEFAULT_PENDING_TIMEOUT_S,
            seq: 0,
        }
    }

    pub fn with_pending_timeout(mut self, seconds: u64) -> Self {
        self.pending_timeout_s = seconds;
        self
    }

    /// Entries, pending ones included.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn idle(idle_s: Option<u64>, last_used: u64, now: u64) -> bool {
        idle_s.is_some_and(|idle| now.saturating_sub(last_used) >= idle)
    }

    /// Looks `key` up for the request context `waiter_ctx`.
    pub fn lookup(&mut self, key: &Key, waiter_ctx: u32, now: u64) -> Lookup<V> {
        let seq = self.next_seq();
        let idle_s = self.idle_s;
        let pending_timeout_s = self.pending_timeout_s;
        match self.slots.get_mut(key) {
            Some(Slot::Ready {
                value,
                expires_at,
                last_used,
                seq: used,
            }) if now < *expires_at && !Self::idle(idle_s, *last_used, now) => {
                *last_used = now;
                *used = seq;
                return Lookup::Hit(value.clone());
            }
            Some(Slot::Pending {
                leader,
                started,
                waiters,
            }) => {
                if *leader == waiter_ctx {
                    // Still the leader (asking again): carry on.
                    return Lookup::Miss;
                }
                if now.saturating_sub(*started) < pending_timeout_s {
                    if !waiters.contains(&waiter_ctx) {
                        waiters.push(waiter_ctx);
                    }
                    return Lookup::Wait;
                }
                // The leader never came back: this caller takes over, the waiters stay.
                *leader = waiter_ctx;
                *started = now;
                waiters.retain(|w| *w != waiter_ctx);
                return Lookup::Miss;
            }
            Some(slot @ Slot::Ready { .. }) => {
                // Expired or idle: replaced in place, no room needed.
                *slot = Slot::Pending {
                    leader: waiter_ctx,
                    started: now,
                    waiters: Vec::new(),
                };
                return Lookup::Miss;
            }
            None => {}
        }
        if self.make_room(now) {
            self.slots.insert(
                *key,
                Slot::Pending {
                    leader: waiter_ctx,
                    started: now,
                    waiters: Vec::new(),
                },
            );
        }
        // Full of pending entries: the caller works alone and nothing is kept.
        Lookup::Miss
    }

    /// Records the leader's outcome: `Some((value, expires_at))` is kept until the earlier of
    /// `expires_at` and `now + max_lifetime_s` (not at all if that is already past); `None`
    /// (the work could not be done) keeps nothing. Returns the waiting contexts to wake.
    pub fn complete(&mut self, key: &Key, outcome: Option<(V, u64)>, now: u64) -> Vec<u32> {
        let waiters = match self.slots.remove(key) {
            Some(Slot::Pending { waiters, .. }) => waiters,
            // A late leader (taken over, or its entry dropped): its result is still good.
            _ => Vec::new(),
        };
        if let Some((value, expires_at)) = outcome {
            let expires_at = expires_at.min(now.saturating_add(self.max_lifetime_s));
            if now < expires_at && self.make_room(now) {
                let seq = self.next_seq();
                self.slots.insert(
                    *key,
                    Slot::Ready {
                        value,
                        expires_at,
                        last_used: now,
                        seq,
                    },
                );
            }
        }
        waiters
    }

    /// The request `ctx` went away. If it was the leader for `key`, the entry is dropped and the
    /// waiters are returned: wake them, and the first to look up again becomes the new leader.
    /// If it was a waiter, it is just forgotten. Returns nothing otherwise.
    pub fn abandon(&mut self, key: &Key, ctx: u32) -> Vec<u32> {
        match self.slots.get_mut(key) {
            Some(Slot::Pending { leader, .. }) if *leader == ctx => match self.slots.remove(key) {
                Some(Slot::Pending { waiters, .. }) => waiters,
                _ => Vec::new(),
            },
            Some(Slot::Pending { waiters, .. }) => {
                waiters.retain(|w| *w != ctx);
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// Drops `key` if it holds a value (e.g. the backend refused the cached token). A pending
    /// entry is left alone.
    pub fn invalidate(&mut self, key: &Key) {
        if matches!(self.slots.get(key), Some(Slot::Ready { .. })) {
            self.slots.remove(key);
        }
    }

    /// Makes room for one more entry: expired and idle entries first, then the least recently
    /// used value. `false` when every entry is pending.
    fn make_room(&mut self, now: u64) -> bool {
        if self.slots.len() < self.max_entries {
            return true;
        }
        let idle_s = self.idle_s;
        self.slots.retain(|_, s| match s {
            Slot::Ready {
                expires_at,
                last_used,
                ..
            } => now < *expires_at && !Self::idle(idle_s, *last_used, now),
            Slot::Pending { .. } => true,
        });
        if self.slots.len() < self.max_entries {
            return true;
        }
        let oldest = self
            .slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready { seq, .. } => Some((*seq, *k)),
                Slot::Pending { .. } => None,
            })
            .min_by_key(|(seq, _)| *seq)
            .map(|(_, k)| k);
        match oldest {
            Some(k) => {
                self.slots.remove(&k);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn key(s: &str) -> Key {
        hmac_sha256::Hash::hash(s.as_bytes())
    }

    fn fill(c: &mut FlightCache<u32>, name: &str, value: u32, expires_at: u64, now: u64) {
        assert_eq!(c.lookup(&key(name), 1, now), Lookup::Miss);
        assert_eq!(
            c.complete(&key(name), Some((value, expires_at)), now),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn hit_until_value_expiry_and_max_lifetime() {
        let mut c = FlightCache::new(10, None, 1000);
        fill(&mut c, "a", 7, NOW + 100, NOW);
        assert_eq!(c.lookup(&key("a"), 2, NOW + 99), Lookup::Hit(7));
        assert_eq!(
            c.lookup(&key("a"), 2, NOW + 100),
            Lookup::Miss,
            "never at or past the value's own expiry"
        );
        c.complete(&key("a"), Some((8, NOW + 100_000)), NOW + 100);
        assert_eq!(c.lookup(&key("a"), 2, NOW + 1099), Lookup::Hit(8));
        assert_eq!(
            c.lookup(&key("a"), 2, NOW + 1100),
            Lookup::Miss,
            "never past the cache's maximum lifetime, hits or not"
        );
        // An outcome that is already expired is not kept.
        c.complete(&key("a"), Some((9, NOW)), NOW + 1100);
        assert_eq!(c.lookup(&key("a"), 2, NOW + 1100), Lookup::Miss);
        assert_eq!(c.len(), 1, "the expired entry became the new pending one");
    }

    #[test]
    fn idle_entries_drop_and_hits_refresh() {
        let mut c = FlightCache::new(10, Some(60), 10_000);
        fill(&mut c, "a", 1, NOW + 5000, NOW);
        assert_eq!(c.lookup(&key("a"), 2, NOW + 59), Lookup::Hit(1));
        assert_eq!(
            c.lookup(&key("a"), 2, NOW + 118),
            Lookup::Hit(1),
            "refreshed"
        );
        assert_eq!(
            c.lookup(&key("a"), 2, NOW + 178),
            Lookup::Miss,
            "idle for 60 s"
        );
        // Without an idle timeout, only the lifetimes count.
        let mut c = FlightCache::new(10, None, 10_000);
        fill(&mut c, "a", 1, NOW + 5000, NOW);
        assert_eq!(c.lookup(&key("a"), 2, NOW + 4999), Lookup::Hit(1));
    }

    #[test]
    fn single_flight_and_waiters_released() {
        let mut c = FlightCache::new(10, None, 1000);
        let k = key("a");
        assert_eq!(c.lookup(&k, 1, NOW), Lookup::Miss);
        assert_eq!(c.lookup(&k, 2, NOW), Lookup::Wait, "one leader at a time");
        assert_eq!(c.lookup(&k, 3, NOW), Lookup::Wait);
        assert_eq!(c.lookup(&k, 3, NOW), Lookup::Wait, "a waiter is named once");
        assert_eq!(
            c.lookup(&k, 1, NOW),
            Lookup::Miss,
            "the leader asking again still leads"
        );
        assert_eq!(c.complete(&k, Some((5, NOW + 100)), NOW + 1), vec![2, 3]);
        assert_eq!(c.lookup(&k, 2, NOW + 1), Lookup::Hit(5));
        assert_eq!(c.lookup(&k, 3, NOW + 1), Lookup::Hit(5));

        // A failure keeps nothing but still releases the waiters; the first back leads.
        let k = key("b");
        c.lookup(&k, 1, NOW);
        c.lookup(&k, 2, NOW);
        c.lookup(&k, 3, NOW);
        assert_eq!(c.complete(&k, None, NOW), vec![2, 3]);
        assert_eq!(c.lookup(&k, 3, NOW), Lookup::Miss);
        assert_eq!(c.lookup(&k, 2, NOW), Lookup::Wait);
    }

    #[test]
    fn abandoned_leader_hands_over() {
        let mut c: FlightCache<u32> = FlightCache::new(10, None, 1000);
        let k = key("a");
        c.lookup(&k, 1, NOW);
        c.lookup(&k, 2, NOW);
        c.lookup(&k, 3, NOW);
        c.lookup(&k, 4, NOW);
        assert_eq!(
            c.abandon(&k, 3),
            Vec::<u32>::new(),
            "a waiter leaving wakes nobody"
        );
        assert_eq!(
            c.abandon(&k, 1),
            vec![2, 4],
            "the leader leaving wakes the waiters"
        );
        assert_eq!(c.abandon(&k, 1), Vec::<u32>::new());
        assert_eq!(
            c.lookup(&k, 4, NOW),
            Lookup::Miss,
            "a woken waiter becomes the leader"
        );
        assert_eq!(c.lookup(&k, 2, NOW), Lookup::Wait);
        assert_eq!(c.complete(&k, Some((9, NOW + 10)), NOW), vec![2]);
        assert_eq!(c.abandon(&k, 2), Vec::<u32>::new(), "nothing pending");
        assert_eq!(c.lookup(&k, 2, NOW), Lookup::Hit(9));
    }

    #[test]
    fn lost_leader_is_taken_over_after_the_pending_timeout() {
        let mut c: FlightCache<u32> = FlightCache::new(10, None, 1000).with_pending_timeout(30);
        let k = key("a");
        c.lookup(&k, 1, NOW);
        assert_eq!(c.lookup(&k, 2, NOW + 29), Lookup::Wait);
        assert_eq!(c.lookup(&k, 3, NOW + 30), Lookup::Miss, "takes over");
        assert_eq!(c.lookup(&k, 4, NOW + 31), Lookup::Wait);
        assert_eq!(c.complete(&k, Some((1, NOW + 100)), NOW + 32), vec![2, 4]);
        // The old leader completing late overwrites with an equally good value.
        assert_eq!(
            c.complete(&k, Some((2, NOW + 100)), NOW + 33),
            Vec::<u32>::new()
        );
        assert_eq!(c.lookup(&k, 5, NOW + 33), Lookup::Hit(2));
    }

    #[test]
    fn bounded_expired_first_then_least_recently_used() {
        let mut c = FlightCache::new(3, Some(100), 1000);
        fill(&mut c, "a", 1, NOW + 500, NOW);
        fill(&mut c, "b", 2, NOW + 10, NOW);
        fill(&mut c, "c", 3, NOW + 500, NOW);
        // "b" has expired: it goes, although "a" is older in use.
        fill(&mut c, "d", 4, NOW + 500, NOW + 20);
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup(&key("a"), 9, NOW + 20), Lookup::Hit(1));
        // Now "c" is the least recently used ("a" was just hit, "d" inserted after "c").
        fill(&mut c, "e", 5, NOW + 500, NOW + 21);
        assert_eq!(c.len(), 3);
        assert_eq!(c.lookup(&key("a"), 9, NOW + 21), Lookup::Hit(1));
        assert_eq!(c.lookup(&key("d"), 9, NOW + 21), Lookup::Hit(4));
        assert_eq!(c.lookup(&key("e"), 9, NOW + 21), Lookup::Hit(5));
        // Three entries, and "a", "d", "e" among them: "c" was the one evicted.
        assert_eq!(c.len(), 3);
        // Idle entries go before used ones: at +121 "a", "d", "e" were last used at +21.
        fill(&mut c, "f", 6, NOW + 500, NOW + 121);
        assert_eq!(c.len(), 1, "every idle entry dropped at once");
        for i in 0..50 {
            fill(&mut c, &format!("k{i}"), i, NOW + 500, NOW + 122);
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn pending_entries_are_never_evicted_and_a_full_cache_still_answers() {
        let mut c: FlightCache<u32> = FlightCache::new(2, None, 1000);
        assert_eq!(c.lookup(&key("a"), 1, NOW), Lookup::Miss);
        assert_eq!(c.lookup(&key("b"), 2, NOW), Lookup::Miss);
        // Full of pending entries: the third caller works alone, nothing kept, no waiting.
        assert_eq!(c.lookup(&key("c"), 3, NOW), Lookup::Miss);
        assert_eq!(c.lookup(&key("c"), 4, NOW), Lookup::Miss);
        assert_eq!(c.len(), 2);
        assert_eq!(
            c.complete(&key("c"), Some((3, NOW + 10)), NOW),
            Vec::<u32>::new()
        );
        assert_eq!(c.len(), 2, "no room: not kept");
        assert_eq!(c.lookup(&key("a"), 5, NOW), Lookup::Wait, "still pending");
        c.complete(&key("a"), Some((1, NOW + 10)), NOW);
        assert_eq!(c.lookup(&key("a"), 5, NOW), Lookup::Hit(1));
    }

    #[test]
    fn invalidate_drops_values_only() {
        let mut c = FlightCache::new(4, None, 1000);
        fill(&mut c, "a", 1, NOW + 50, NOW);
        c.invalidate(&key("a"));
        assert_eq!(c.lookup(&key("a"), 1, NOW), Lookup::Miss);
        c.invalidate(&key("a"));
        assert_eq!(c.lookup(&key("a"), 2, NOW), Lookup::Wait, "pending kept");
        assert!(format!("{c:?}").contains("entries: 1"));
    }
}
