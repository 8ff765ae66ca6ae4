//! The revocation list: sessions ended by a logout, refused on every Envoy worker.
//!
//! Sessions live in cookies, so ending one means remembering that it is dead until it would
//! have expired anyway. Each worker (VM) holds a [`RevocationList`]; the workers share it
//! through proxy-wasm shared data, behind [`SharedStore`] so that this module stays sans-IO.
//! A worker that revokes [`publish`](RevocationList::publish)es at once; every worker's root
//! tick calls [`refresh`](RevocationList::refresh), which reads one small version key and
//! the list itself only when that version moved.
//!
//! The list is bounded (`capacity` entries). When it is full, expired entries go first, then
//! those that expire soonest, and a session revoked by a dropped entry would be accepted
//! again. So capacity must exceed the number of logouts in the longest session lifetime; the
//! calls that may drop live entries return how many they dropped, for the caller to log.
//!
//! Front-channel logouts are anonymous, so their entries get a fixed share of the list (see
//! [`unverified`]): when it is full a new one is refused rather than pushing out an older one,
//! and a flood of made-up sids cannot undo a real logout.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;

mod codec;
mod unverified;

pub use unverified::ShareFull;

/// Shared-data key of the version counter (a little-endian u64), bumped after every publish.
pub const VERSION_KEY: &str = "envoy-wam.revoked.version";
/// Shared-data key of the encoded list.
pub const LIST_KEY: &str = "envoy-wam.revoked.list";
/// Compare-and-swap rounds before a publish gives up (left dirty, retried on the next tick).
const PUBLISH_TRIES: usize = 5;

/// What a logout revokes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// A gateway session id: that one session, whenever it was created.
    Session(String),
    /// The OP's session id (the ID token's `sid`): sessions it opened up to `before`.
    OpSid(String),
    /// A subject: all of its sessions created up to `before`.
    Sub(String),
    /// The OP's session id as a front-channel logout names it: like `OpSid`, but nothing
    /// vouches for it (any page can load that URL), so these entries are held to a share of
    /// the list and go first when it is full: a flood of made-up ones can push out neither a
    /// verified revocation nor an earlier front-channel one.
    UnverifiedOpSid(String),
}

/// The kinds of keys, as indexes into [`RevocationList::maps`] and in the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Session = 0,
    OpSid = 1,
    Sub = 2,
    /// Logout token ids seen (replay protection); `before` unused.
    Jti = 3,
    UnverifiedOpSid = 4,
}

const REVOCATIONS: [Kind; 4] = [Kind::Session, Kind::OpSid, Kind::Sub, Kind::UnverifiedOpSid];

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Session,
            1 => Self::OpSid,
            2 => Self::Sub,
            3 => Self::Jti,
            4 => Self::UnverifiedOpSid,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// Sessions created at or before this time are revoked.
    before: u64,
    /// After this time the entry is useless (every session it covers has expired).
    until: u64,
    /// The list's generation when this entry last changed here (not shared: each worker's own
    /// count), so that a refusal can tell a revocation of a moment ago from an old one.
    changed_in: u64,
}

impl Entry {
    fn new(before: u64, until: u64) -> Self {
        Self {
            before,
            until,
            changed_in: 0,
        }
    }
}

/// Where the list is shared between workers: proxy-wasm shared data in the filter.
/// `cas` follows proxy-wasm: a value from `load`, and a `store` with a stale one fails with
/// `CasMismatch`; `None` stores unconditionally.
pub trait SharedStore {
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    fn store(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    CasMismatch,
    Other,
}

/// Why a publish did not reach the other workers. The local list is intact and stays dirty:
/// publishing again later (the next tick) sends the same changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishError {
    /// Other workers kept writing; every compare-and-swap round lost.
    Contended,
    /// The store refused the write.
    Store,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Contended => "revocation list not shared: concurrent updates, will retry",
            Self::Store => "revocation list not shared: shared data refused the write",
        })
    }
}

/// What a successful publish had to leave out, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Unexpired entries dropped because the merged list exceeded its capacity.
    pub dropped_live: usize,
    /// Entries kept locally but not shared: the encoding exceeded its size bound.
    pub unshared: usize,
}

/// This worker's copy of the revocation list and the logout-token replay set.
#[derive(Debug)]
pub struct RevocationList {
    capacity: usize,
    /// Indexed by `Kind`: the revocations, then the jti set. Separate maps by kind so that a
    /// lookup borrows a `&str` instead of building a key.
    maps: [HashMap<String, Entry>; 5],
    generation: u64,
    /// The shared version whose list was merged last.
    seen_version: Option<u64>,
    /// Local changes not yet published.
    dirty: bool,
    /// Front-channel logouts refused because their share was full.
    refused_unverified: u64,
}

impl RevocationList {
    /// A list of at most `capacity` revocations (and as many remembered jtis).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            maps: Default::default(),
            generation: 0,
            seen_version: None,
            dirty: false,
            refused_unverified: 0,
        }
    }

    /// Revokes `what` for sessions created at or before `before`, until `until` (`before` +
    /// the longest session lifetime). Revoking again keeps the later times. Returns how many
    /// unexpired entries had to be dropped to stay within capacity. An unverified OP sid goes
    /// through [`revoke_unverified`](Self::revoke_unverified), and is left out (and counted)
    /// when its share is full.
    pub fn revoke(&mut self, what: Revoked, before: u64, until: u64, now: u64) -> usize {
        let (kind, key) = match what {
            Revoked::Session(k) => (Kind::Session, k),
            Revoked::OpSid(k) => (Kind::OpSid, k),
            Revoked::Sub(k) => (Kind::Sub, k),
            Revoked::UnverifiedOpSid(k) => {
                let _refused = self.revoke_unverified(k, before, until, now);
                return 0;
            }
        };
        if self.upsert(kind, key, Entry::new(before, until)) {
            self.bump();
            self.dirty = true;
        }
        self.trim(&REVOCATIONS, now)
    }

    /// Whether a session is revoked. A few hash lookups; nothing when the list is empty.
    pub fn is_revoked(&self, sid: &str, op_sid: Option<&str>, sub: &str, created_at: u64) -> bool {
        self.revoked_in(sid, op_sid, sub, created_at).is_some()
    }

    /// The generation in which the entry that revokes a session last changed (the latest, if
    /// several do); `None`: not revoked.
    pub fn revoked_in(
        &self,
        sid: &str,
        op_sid: Option<&str>,
        sub: &str,
        created_at: u64,
    ) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        // A gateway sid is random and never reused: its entry covers it whatever the times.
        let session = self.map(Kind::Session).get(sid).map(|e| e.changed_in);
        let hit = |kind: Kind, key: &str| {
            self.map(kind)
                .get(key)
                .filter(|e| created_at <= e.before)
                .map(|e| e.changed_in)
        };
        let op = op_sid.and_then(|s| hit(Kind::OpSid, s).max(hit(Kind::UnverifiedOpSid, s)));
        session.max(op).max(hit(Kind::Sub, sub))
    }

    /// Changes whenever the revocations change (not the jti set): a cache that found a session
    /// valid at generation `g` need not look again while the generation is still `g`.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The number of revocations held.
    pub fn len(&self) -> usize {
        REVOCATIONS.iter().map(|&k| self.map(k).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        REVOCATIONS.iter().all(|&k| self.map(k).is_empty())
    }

    /// Whether local changes still wait to be published (a publish failed or none was tried).
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Drops the entries whose `until` has passed. A full scan: call it now and then (say once
    /// a minute), not per request.
    pub fn expire(&mut self, now: u64) {
        let mut changed = false;
        for kind in REVOCATIONS.into_iter().chain([Kind::Jti]) {
            let map = &mut self.maps[kind as usize];
            let before = map.len();
            map.retain(|_, e| e.until >= now);
            changed |= kind != Kind::Jti && map.len() != before;
        }
        if changed {
            self.bump();
        }
    }

    /// Records a logout token's `jti`, remembered until `until` (its `iat` + the accepted
    /// age). True if it was seen before: a replayed token. Other workers learn of it with the
    /// next publish, so a replay to another worker within that window goes unnoticed; it
    /// would only revoke again what is already revoked.
    pub fn seen_jti(&mut self, jti: &str, until: u64, now: u64) -> bool {
        if self.map(Kind::Jti).get(jti).is_some_and(|e| e.until >= now) {
            return true;
        }
        self.maps[Kind::Jti as usize].insert(jti.to_owned(), Entry::new(0, until));
        self.dirty = true;
        self.trim(&[Kind::Jti], now);
        false
    }

    /// Shares the local changes: merges them with the stored list under compare-and-swap
    /// (what others published comes in too), then bumps the version so that the other
    /// workers' `refresh` picks the list up. Nothing to do when nothing changed locally.
    pub fn publish(
        &mut self,
        store: &dyn SharedStore,
        now: u64,
    ) -> Result<Published, PublishError> {
        if !self.dirty {
            return Ok(Published::default());
        }
        let mut report = Published::default();
        for _ in 0..PUBLISH_TRIES {
            let (stored, cas) = match store.load(LIST_KEY) {
                Some((bytes, cas)) => (codec::decode(&bytes), Some(cas)),
                None => (None, None),
            };
            // Garbage in the store decodes to nothing and is overwritten below.
            if let Some(records) = stored {
                report.dropped_live += self.merge(records, now);
            }
            let (bytes, unshared) = codec::encode(self, now);
            match store.store(LIST_KEY, &bytes, cas) {
                Ok(()) if cas.is_some() => {
                    report.unshared = unshared;
                    bump_version(store)?;
                    self.dirty = false;
                    return Ok(report);
                }
                // Created without a compare-and-swap: another worker may have created it at
                // the same moment, so go round once more and merge under CAS.
                Ok(()) => {}
                Err(StoreError::CasMismatch) => {}
                Err(StoreError::Other) => return Err(PublishError::Store),
            }
        }
        Err(PublishError::Contended)
    }

    /// Takes in what other workers published: reads the version key and, only when it moved,
    /// the list. For the root tick (every 100 ms). Returns how many unexpired entries had to
    /// be dropped to stay within capacity.
    pub fn refresh(&mut self, store: &dyn SharedStore, now: u64) -> usize {
        let Some((bytes, _)) = store.load(VERSION_KEY) else {
            return 0; // nothing published yet
        };
        let version = decode_version(&bytes);
        // An unreadable version reads the list every time, until a publish repairs it.
        if version.is_some() && version == self.seen_version {
            return 0;
        }
        // The list is written before the version is bumped, so a list read now holds at least
        // what `version` announced.
        self.seen_version = version;
        match store.load(LIST_KEY).and_then(|(b, _)| codec::decode(&b)) {
            Some(records) => self.merge(records, now),
            None => 0,
        }
    }

    fn map(&self, kind: Kind) -> &HashMap<String, Entry> {
        &self.maps[kind as usize]
    }

    fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Inserts or widens an entry (later `before`, later `until`). True if anything changed;
    /// the caller then bumps the generation, which the entry records.
    fn upsert(&mut self, kind: Kind, key: String, new: Entry) -> bool {
        let changed_in = self.generation.wrapping_add(1);
        match self.maps[kind as usize].get_mut(&key) {
            Some(old) => {
                let (before, until) = (old.before.max(new.before), old.until.max(new.until));
                let changed = (before, until) != (old.before, old.until);
                if changed {
                    *old = Entry {
                        before,
                        until,
                        changed_in,
                    };
                }
                changed
            }
            None => {
                self.maps[kind as usize].insert(key, Entry { changed_in, ..new });
                true
            }
        }
    }

    /// Union with records from the store, skipping expired ones. Returns the live entries
    /// dropped to stay within capacity.
    fn merge(&mut self, records: Vec<(Kind, String, Entry)>, now: u64) -> usize {
        let mut changed = false;
        for (kind, key, entry) in records {
            if entry.until >= now && self.upsert(kind, key, entry) {
                changed |= kind != Kind::Jti;
            }
        }
        if changed {
            self.bump();
        }
        // Each worker keeps its own front-channel entries within the share; together they may
        // not be.
        self.trim_unverified(now) + self.trim(&REVOCATIONS, now) + self.trim(&[Kind::Jti], now)
    }

    /// Brings `kinds` (one bounded group) back within capacity: expired entries first, then
    /// those expiring soonest. Returns how many unexpired entries were dropped.
    fn trim(&mut self, kinds: &[Kind], now: u64) -> usize {
        let len = |s: &Self| kinds.iter().map(|&k| s.map(k).len()).sum::<usize>();
        if len(self) <= self.capacity {
            return 0;
        }
        let revocations = kinds.iter().any(|&k| k != Kind::Jti);
        for &kind in kinds {
            self.maps[kind as usize].retain(|_, e| e.until >= now);
        }
        let excess = len(self).saturating_sub(self.capacity);
        if excess > 0 {
            let mut all: Vec<(u64, Kind, String)> = kinds
                .iter()
                .flat_map(|&k| {
                    self.map(k)
                        .iter()
                        .map(move |(key, e)| (e.until, k, key.clone()))
                })
                .collect();
            // Unverified entries first, the latest logouts among them (all live as long, so
            // a burst of made-up ones goes before an earlier real one); then those that
            // expire soonest.
            all.select_nth_unstable_by_key(excess - 1, |(until, kind, _)| {
                let unverified = *kind == Kind::UnverifiedOpSid;
                (
                    !unverified,
                    if unverified { u64::MAX - until } else { *until },
                )
            });
            for (_, kind, key) in all.into_iter().take(excess) {
                self.maps[kind as usize].remove(&key);
            }
        }
        if revocations {
            self.bump();
        }
        excess
    }
}

/// Adds one to the shared version under compare-and-swap. A missing key is created and then
/// bumped once more under CAS: two workers creating it at once must still end on distinct
/// values, or a worker could miss the second one's list.
fn bump_version(store: &dyn SharedStore) -> Result<(), PublishError> {
    for _ in 0..PUBLISH_TRIES {
        let (current, cas) = match store.load(VERSION_KEY) {
            Some((bytes, cas)) => (decode_version(&bytes).unwrap_or(0), Some(cas)),
            None => (0, None),
        };
        let next = current.wrapping_add(1).to_le_bytes();
        match store.store(VERSION_KEY, &next, cas) {
            Ok(()) if cas.is_some() => return Ok(()),
            Ok(()) | Err(StoreError::CasMismatch) => {}
            Err(StoreError::Other) => return Err(PublishError::Store),
        }
    }
    Err(PublishError::Contended)
}

fn decode_version(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// A [`SharedStore`] in memory with proxy-wasm's compare-and-swap semantics, for tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    last_cas: Cell<u32>,
}

impl SharedStore for MemoryStore {
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.data.borrow().get(key).cloned()
    }

    fn store(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut data = self.data.borrow_mut();
        // As in Envoy: a CAS value only matters when the key exists.
        if let (Some(cas), Some((_, current))) = (cas, data.get(key)) {
            if cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        let next = self.last_cas.get().wrapping_add(1).max(1);
        self.last_cas.set(next);
        data.insert(key.to_owned(), (value.to_vec(), next));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
