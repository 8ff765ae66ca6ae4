use super::codec::{decode, encode, MAX_ENCODED_BYTES, MAX_KEY_BYTES};
use super::*;

const NOW: u64 = 1_800_000_000;
const LIFETIME: u64 = 8 * 3600;

fn sub(s: &str) -> Revoked {
    Revoked::Sub(s.into())
}

/// Revokes `what` as a logout at `at` would.
fn revoke_at(list: &mut RevocationList, what: Revoked, at: u64) -> usize {
    list.revoke(what, at, at + LIFETIME, at)
}

#[test]
fn an_empty_list_revokes_nothing() {
    let list = RevocationList::new(10);
    assert!(list.is_empty());
    assert!(!list.is_revoked("gw1", Some("op1"), "alice", NOW));
    assert!(!list.is_dirty());
}

#[test]
fn revokes_by_each_kind() {
    let mut list = RevocationList::new(10);
    revoke_at(&mut list, Revoked::Session("gw1".into()), NOW);
    revoke_at(&mut list, Revoked::OpSid("op1".into()), NOW);
    revoke_at(&mut list, sub("alice"), NOW);
    assert_eq!(list.len(), 3);
    assert!(list.is_dirty());

    // The gateway sid whatever its creation time; OP sid and sub up to `before`.
    assert!(list.is_revoked("gw1", None, "bob", NOW + 100));
    assert!(list.is_revoked("gw2", Some("op1"), "bob", NOW));
    assert!(list.is_revoked("gw2", None, "alice", NOW - 10));
    assert!(!list.is_revoked("gw2", Some("op2"), "bob", NOW));
    // A new login after the logout is not revoked.
    assert!(!list.is_revoked("gw3", Some("op1"), "bob", NOW + 1));
    assert!(!list.is_revoked("gw3", Some("op9"), "alice", NOW + 1));
    // Kinds do not mix: a sub equal to a revoked OP sid is not revoked.
    assert!(!list.is_revoked("op1", Some("alice"), "op1", NOW + 1));
    assert!(!list.is_revoked("gw9", Some("gw1"), "gw1", NOW));
}

#[test]
fn revoking_again_keeps_the_later_times() {
    let mut list = RevocationList::new(10);
    revoke_at(&mut list, sub("alice"), NOW + 50);
    revoke_at(&mut list, sub("alice"), NOW);
    assert!(list.is_revoked("gw", None, "alice", NOW + 50));
    assert!(!list.is_revoked("gw", None, "alice", NOW + 51));
    // The earlier logout did not shorten the entry's life either.
    list.expire(NOW + 50 + LIFETIME);
    assert_eq!(list.len(), 1);
}

#[test]
fn expired_entries_go() {
    let mut list = RevocationList::new(10);
    revoke_at(&mut list, sub("alice"), NOW);
    revoke_at(&mut list, sub("bob"), NOW + 100);
    list.expire(NOW + LIFETIME);
    assert_eq!(list.len(), 2);
    list.expire(NOW + LIFETIME + 1);
    assert_eq!(list.len(), 1);
    assert!(!list.is_revoked("gw", None, "alice", NOW));
    assert!(list.is_revoked("gw", None, "bob", NOW));
}

#[test]
fn a_full_list_drops_expired_entries_then_the_soonest_to_expire() {
    let mut list = RevocationList::new(3);
    list.revoke(sub("old"), NOW - 10, NOW - 1, NOW);
    revoke_at(&mut list, sub("a"), NOW);
    revoke_at(&mut list, sub("b"), NOW + 1);
    // Over capacity: the expired entry goes, nothing live is lost.
    assert_eq!(revoke_at(&mut list, sub("c"), NOW + 2), 0);
    assert_eq!(list.len(), 3);
    // Over again: `a` expires soonest and is dropped, and the caller is told.
    assert_eq!(revoke_at(&mut list, sub("d"), NOW + 3), 1);
    assert_eq!(list.len(), 3);
    assert!(!list.is_revoked("gw", None, "a", NOW));
    for s in ["b", "c", "d"] {
        assert!(list.is_revoked("gw", None, s, NOW), "{s}");
    }
    // All kinds share the capacity.
    assert_eq!(
        revoke_at(&mut list, Revoked::Session("s".into()), NOW + 4),
        1
    );
    assert_eq!(list.len(), 3);
}

#[test]
fn the_generation_moves_with_the_revocations_only() {
    let mut list = RevocationList::new(10);
    let g0 = list.generation();
    revoke_at(&mut list, sub("alice"), NOW);
    let g1 = list.generation();
    assert_ne!(g0, g1);
    // The same revocation again, a lookup, a jti: no change.
    revoke_at(&mut list, sub("alice"), NOW);
    assert!(list.is_revoked("gw", None, "alice", NOW));
    assert!(!list.seen_jti("j1", NOW + 180, NOW));
    list.expire(NOW);
    assert_eq!(list.generation(), g1);
    // A later `before` is a change.
    revoke_at(&mut list, sub("alice"), NOW + 5);
    let g2 = list.generation();
    assert_ne!(g1, g2);
    list.expire(NOW + 5 + LIFETIME + 1);
    assert_ne!(list.generation(), g2);
}

#[test]
fn a_replayed_jti_is_recognised_until_it_expires() {
    let mut list = RevocationList::new(2);
    assert!(!list.seen_jti("j1", NOW + 180, NOW));
    assert!(list.seen_jti("j1", NOW + 180, NOW + 10));
    assert!(list.seen_jti("j1", NOW + 180, NOW + 180));
    assert!(!list.seen_jti("j1", NOW + 400, NOW + 181));
    // Bounded: the one expiring soonest makes room.
    assert!(!list.seen_jti("j2", NOW + 300, NOW + 181));
    assert!(!list.seen_jti("j3", NOW + 500, NOW + 181));
    assert!(!list.seen_jti("j2", NOW + 300, NOW + 182));
    assert!(list.seen_jti("j3", NOW + 500, NOW + 182));
    // The replay set does not count against revocations.
    assert!(list.is_empty());
}

#[test]
fn a_revocation_published_by_one_worker_reaches_another() {
    let store = MemoryStore::default();
    let mut a = RevocationList::new(10);
    let mut b = RevocationList::new(10);
    assert_eq!(b.refresh(&store, NOW), 0);
    revoke_at(&mut a, Revoked::OpSid("op1".into()), NOW);
    assert!(!a.seen_jti("j1", NOW + 180, NOW));
    assert_eq!(a.publish(&store, NOW), Ok(Published::default()));
    assert!(!a.is_dirty());

    let g = b.generation();
    b.refresh(&store, NOW);
    assert!(b.is_revoked("gw", Some("op1"), "alice", NOW));
    assert!(b.seen_jti("j1", NOW + 180, NOW));
    assert_ne!(b.generation(), g);
    // What B received is not B's to publish again.
    assert!(!b.is_dirty());
}

#[test]
fn refresh_reads_the_list_only_when_the_version_moved() {
    struct Counting<'a>(&'a MemoryStore, Cell<usize>);
    impl SharedStore for Counting<'_> {
        fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            if key == LIST_KEY {
                self.1.set(self.1.get() + 1);
            }
            self.0.load(key)
        }
        fn store(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.0.store(key, value, cas)
        }
    }
    let store = MemoryStore::default();
    let counting = Counting(&store, Cell::new(0));
    let mut a = RevocationList::new(10);
    let mut b = RevocationList::new(10);
    revoke_at(&mut a, sub("alice"), NOW);
    a.publish(&store, NOW).unwrap();
    for _ in 0..5 {
        b.refresh(&counting, NOW);
    }
    assert_eq!(counting.1.get(), 1);
    revoke_at(&mut a, sub("bob"), NOW);
    a.publish(&store, NOW).unwrap();
    b.refresh(&counting, NOW);
    b.refresh(&counting, NOW);
    assert_eq!(counting.1.get(), 2);
    assert!(b.is_revoked("gw", None, "bob", NOW));
    // Publishing nothing new writes nothing.
    assert_eq!(b.publish(&counting, NOW), Ok(Published::default()));
    assert_eq!(counting.1.get(), 2);
}

#[test]
fn concurrent_publishes_merge() {
    let store = MemoryStore::default();
    let mut a = RevocationList::new(10);
    let mut b = RevocationList::new(10);
    revoke_at(&mut a, sub("alice"), NOW);
    revoke_at(&mut a, sub("carol"), NOW);
    revoke_at(&mut b, sub("bob"), NOW);
    revoke_at(&mut b, sub("alice"), NOW + 7);
    a.publish(&store, NOW).unwrap();
    // B had not refreshed: its publish merges A's entry instead of overwriting it.
    b.publish(&store, NOW).unwrap();
    assert!(b.is_revoked("gw", None, "alice", NOW + 7));
    a.refresh(&store, NOW);
    let mut c = RevocationList::new(10);
    c.refresh(&store, NOW);
    for list in [&a, &b, &c] {
        assert!(list.is_revoked("gw", None, "bob", NOW));
        assert!(list.is_revoked("gw", None, "carol", NOW));
        assert!(list.is_revoked("gw", None, "alice", NOW + 7));
        assert!(!list.is_revoked("gw", None, "alice", NOW + 8));
    }
}

type Interference<'a> = Box<dyn FnOnce(&MemoryStore) + 'a>;

/// Runs `interfere` against the inner store just before the first write (the window
/// between another worker's load and store).
struct Interfering<'a> {
    inner: &'a MemoryStore,
    interfere: RefCell<Option<Interference<'a>>>,
    stores: Cell<usize>,
}

impl SharedStore for Interfering<'_> {
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.inner.load(key)
    }
    fn store(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        if let Some(f) = self.interfere.borrow_mut().take() {
            f(self.inner);
        }
        self.stores.set(self.stores.get() + 1);
        self.inner.store(key, value, cas)
    }
}

#[test]
fn a_lost_compare_and_swap_is_retried_with_the_other_write_merged() {
    let store = MemoryStore::default();
    let mut seed = RevocationList::new(10);
    revoke_at(&mut seed, sub("carol"), NOW);
    seed.publish(&store, NOW).unwrap();

    let mut a = RevocationList::new(10);
    revoke_at(&mut a, sub("alice"), NOW);
    let racing = Interfering {
        inner: &store,
        interfere: RefCell::new(Some(Box::new(|s: &MemoryStore| {
            let mut b = RevocationList::new(10);
            revoke_at(&mut b, sub("bob"), NOW);
            b.publish(s, NOW).unwrap();
        }))),
        stores: Cell::new(0),
    };
    a.publish(&racing, NOW).unwrap();
    // One list write lost its CAS and was redone, then the version bump.
    assert_eq!(racing.stores.get(), 3);
    let mut c = RevocationList::new(10);
    c.refresh(&store, NOW);
    for s in ["alice", "bob", "carol"] {
        assert!(c.is_revoked("gw", None, s, NOW), "{s}");
    }
}

#[test]
fn publishing_gives_up_on_endless_contention_or_a_broken_store() {
    struct Refusing(StoreError);
    impl SharedStore for Refusing {
        fn load(&self, _: &str) -> Option<(Vec<u8>, u32)> {
            Some((b"EWRL1".to_vec(), 1))
        }
        fn store(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
            Err(self.0)
        }
    }
    let mut a = RevocationList::new(10);
    revoke_at(&mut a, sub("alice"), NOW);
    let contended = a.publish(&Refusing(StoreError::CasMismatch), NOW);
    assert_eq!(contended, Err(PublishError::Contended));
    let broken = a.publish(&Refusing(StoreError::Other), NOW);
    assert_eq!(broken, Err(PublishError::Store));
    assert!(!broken.unwrap_err().to_string().is_empty());
    // Still dirty, still revoked locally; a later publish gets it out.
    assert!(a.is_dirty());
    assert!(a.is_revoked("gw", None, "alice", NOW));
    let store = MemoryStore::default();
    a.publish(&store, NOW).unwrap();
    assert!(!a.is_dirty());
}

#[test]
fn garbage_in_the_store_is_ignored_and_then_replaced() {
    let store = MemoryStore::default();
    store.store(LIST_KEY, b"\xff\x00garbage", None).unwrap();
    store.store(VERSION_KEY, b"not a u64", None).unwrap();
    let mut b = RevocationList::new(10);
    assert_eq!(b.refresh(&store, NOW), 0);
    assert!(b.is_empty());

    let mut a = RevocationList::new(10);
    revoke_at(&mut a, sub("alice"), NOW);
    a.publish(&store, NOW).unwrap();
    b.refresh(&store, NOW);
    assert!(b.is_revoked("gw", None, "alice", NOW));
    let (version, _) = store.load(VERSION_KEY).unwrap();
    assert_eq!(version, 1u64.to_le_bytes());
}

#[test]
fn the_version_is_created_then_bumped_under_cas() {
    let store = MemoryStore::default();
    let mut a = RevocationList::new(10);
    revoke_at(&mut a, sub("alice"), NOW);
    a.publish(&store, NOW).unwrap();
    let version = |s: &MemoryStore| s.load(VERSION_KEY).map(|(b, _)| b);
    assert_eq!(version(&store), Some(2u64.to_le_bytes().to_vec()));
    revoke_at(&mut a, sub("bob"), NOW);
    a.publish(&store, NOW).unwrap();
    assert_eq!(version(&store), Some(3u64.to_le_bytes().to_vec()));
}

#[test]
fn merging_from_the_store_respects_capacity_and_expiry() {
    let store = MemoryStore::default();
    let mut big = RevocationList::new(10);
    for i in 0..5 {
        revoke_at(&mut big, sub(&format!("u{i}")), NOW + i);
    }
    big.revoke(sub("gone"), NOW - 100, NOW - 1, NOW - 200);
    big.publish(&store, NOW - 200).unwrap();
    let mut small = RevocationList::new(3);
    // The already expired entry is skipped, and two live ones do not fit.
    assert_eq!(small.refresh(&store, NOW), 2);
    assert_eq!(small.len(), 3);
    assert!(!small.is_revoked("gw", None, "gone", NOW - 200));
    assert!(small.is_revoked("gw", None, "u4", NOW));
}

#[test]
fn the_encoding_round_trips_and_refuses_anything_else() {
    let mut list = RevocationList::new(10);
    revoke_at(&mut list, Revoked::Session("gw1".into()), NOW);
    revoke_at(&mut list, Revoked::OpSid("op-ü".into()), NOW + 1);
    revoke_at(&mut list, sub("alice"), NOW + 2);
    list.seen_jti("j1", NOW + 180, NOW);
    list.revoke(sub("expired"), NOW - 10, NOW - 1, NOW);
    let (bytes, left_out) = encode(&list, NOW);
    assert_eq!(left_out, 0);
    let mut records = decode(&bytes).unwrap();
    records.sort_by_key(|r| r.0 as u8);
    let keys: Vec<(Kind, &str)> = records.iter().map(|(k, s, _)| (*k, s.as_str())).collect();
    assert_eq!(
        keys,
        [
            (Kind::Session, "gw1"),
            (Kind::OpSid, "op-ü"),
            (Kind::Sub, "alice"),
            (Kind::Jti, "j1")
        ]
    );
    assert_eq!(records[2].2, Entry::new(NOW + 2, NOW + 2 + LIFETIME));

    // Every truncation, and a few corruptions, decode to nothing or to fewer records.
    for cut in 0..bytes.len() {
        if let Some(r) = decode(&bytes[..cut]) {
            assert!(r.len() < 4, "{cut}");
        }
    }
    assert_eq!(decode(b""), None);
    assert_eq!(decode(b"EWRL1"), Some(vec![]));
    let mut bad_kind = bytes.clone();
    bad_kind[5] = 9;
    assert_eq!(decode(&bad_kind), None);
    let mut bad_utf8 = b"EWRL1\x02".to_vec();
    bad_utf8.extend_from_slice(&[0; 16]);
    bad_utf8.extend_from_slice(&[1, 0, 0xff]);
    assert_eq!(decode(&bad_utf8), None);
    assert_eq!(decode(&vec![0; MAX_ENCODED_BYTES + 1]), None);
}

#[test]
fn the_encoding_is_bounded() {
    let mut list = RevocationList::new(5000);
    let long = "k".repeat(MAX_KEY_BYTES);
    for i in 0..1100u64 {
        revoke_at(&mut list, sub(&format!("{i:04}{long}")), NOW + i);
    }
    revoke_at(&mut list, sub(&"x".repeat(MAX_KEY_BYTES + 1)), NOW);
    let (bytes, left_out) = encode(&list, NOW);
    assert!(bytes.len() <= MAX_ENCODED_BYTES);
    // ~1,000 records fit; the ones left out are those expiring soonest, and the oversized key.
    let kept = decode(&bytes).unwrap();
    assert_eq!(kept.len() + left_out, 1101);
    assert!(left_out > 1);
    assert!(kept
        .iter()
        .all(|(_, _, e)| e.until >= NOW + 1100 - kept.len() as u64 + LIFETIME - 1));

    // Publishing reports what was not shared; the local list keeps it all.
    let store = MemoryStore::default();
    let report = list.publish(&store, NOW).unwrap();
    assert_eq!(report.unshared, left_out);
    assert_eq!(list.len(), 1101);
}

fn unverified(list: &mut RevocationList, sid: &str, at: u64) -> Result<(), ShareFull> {
    list.revoke_unverified(sid.into(), at, at + LIFETIME, at)
        .map(|_| ())
}

#[test]
fn unverified_entries_are_refused_beyond_their_share_and_push_out_nothing() {
    // A share of 2 front-channel entries.
    let mut list = RevocationList::new(8);
    // A gateway logout whose session ends soon: the first to go by expiry alone.
    list.revoke(Revoked::Session("gw1".into()), NOW, NOW + 60, NOW);
    assert_eq!(unverified(&mut list, "real", NOW), Ok(()));
    assert_eq!(unverified(&mut list, "junk-0", NOW + 1), Ok(()));
    let generation = list.generation();
    for i in 1..10 {
        let refused = unverified(&mut list, &format!("junk-{i}"), NOW + 1 + i);
        assert_eq!(
            refused,
            Err(ShareFull {
                held: 2,
                refused: i,
                // Room again once the first one expires.
                retry_after_s: LIFETIME - i,
            })
        );
    }
    assert_eq!(list.unverified_refused(), 9);
    assert_eq!(list.generation(), generation, "a refusal changes nothing");
    // Through `revoke` too: left out.
    revoke_at(
        &mut list,
        Revoked::UnverifiedOpSid("junk-x".into()),
        NOW + 20,
    );
    assert_eq!(list.len(), 3);
    assert!(list.is_revoked("gw1", None, "bob", NOW));
    assert!(list.is_revoked("gw2", Some("real"), "bob", NOW));
    assert!(!list.is_revoked("gw2", Some("junk-5"), "bob", NOW));
    // A sid held already is widened, share full or not.
    assert_eq!(unverified(&mut list, "real", NOW + 30), Ok(()));
    assert!(list.is_revoked("gw2", Some("real"), "bob", NOW + 30));
    // Room again once the oldest has expired.
    assert_eq!(unverified(&mut list, "late", NOW + LIFETIME + 2), Ok(()));

    // Verified entries still push unverified ones out, the latest logouts first.
    let mut list = RevocationList::new(8);
    assert_eq!(unverified(&mut list, "real", NOW), Ok(()));
    assert_eq!(unverified(&mut list, "junk", NOW + 1), Ok(()));
    for i in 0..7 {
        revoke_at(&mut list, sub(&format!("u{i}")), NOW + 2);
    }
    assert_eq!(list.len(), 8);
    assert!(list.is_revoked("gw", Some("real"), "bob", NOW));
    assert!(!list.is_revoked("gw", Some("junk"), "bob", NOW));
    // A full list refuses a new unverified entry rather than drop one.
    let full = unverified(&mut list, "more", NOW + 3).unwrap_err();
    assert_eq!((full.held, full.retry_after_s), (1, 60));
    assert_eq!(list.len(), 8);

    // Shared in the same order: within the revocations, unverified ones last.
    list.seen_jti("j1", NOW + 180, NOW);
    let (bytes, _) = encode(&list, NOW);
    let kinds: Vec<Kind> = decode(&bytes).unwrap().iter().map(|r| r.0).collect();
    assert_eq!(kinds.len(), 9);
    assert_eq!(kinds[7..], [Kind::UnverifiedOpSid, Kind::Jti]);
}

#[test]
fn the_unverified_share_is_bounded_in_bytes_too() {
    let mut list = RevocationList::new(100_000);
    let long = "s".repeat(250);
    let mut held = 0;
    while unverified(&mut list, &format!("{held:06}{long}"), NOW).is_ok() {
        held += 1;
    }
    // A quarter of the shared list's bound, at 275 bytes a record.
    assert_eq!(held, MAX_ENCODED_BYTES / 4 / 275);
    // A short sid may still fit in what is left.
    assert_eq!(unverified(&mut list, "short", NOW), Ok(()));
    let (bytes, left_out) = encode(&list, NOW);
    assert_eq!(left_out, 0);
    assert!(bytes.len() <= MAX_ENCODED_BYTES / 4 + 5);
}

#[test]
fn workers_agree_on_which_unverified_entries_stay() {
    // Each worker fills its share of 2 on its own; the union keeps the earliest logouts.
    let store = MemoryStore::default();
    let mut a = RevocationList::new(8);
    let mut b = RevocationList::new(8);
    assert_eq!(unverified(&mut a, "a-real", NOW), Ok(()));
    assert_eq!(unverified(&mut a, "a-junk", NOW + 2), Ok(()));
    assert_eq!(unverified(&mut b, "b-real", NOW + 1), Ok(()));
    assert_eq!(unverified(&mut b, "b-junk", NOW + 3), Ok(()));
    a.publish(&store, NOW + 4).unwrap();
    let report = b.publish(&store, NOW + 4).unwrap();
    assert_eq!(report.dropped_live, 2);
    assert_eq!(a.refresh(&store, NOW + 4), 1);
    for list in [&a, &b] {
        assert!(list.is_revoked("gw", Some("a-real"), "bob", NOW));
        assert!(list.is_revoked("gw", Some("b-real"), "bob", NOW));
        assert!(!list.is_revoked("gw", Some("a-junk"), "bob", NOW));
        assert!(!list.is_revoked("gw", Some("b-junk"), "bob", NOW));
        assert_eq!(list.len(), 2);
    }
}
