//! Answers held until every worker of this Envoy knows that a session ended.
//!
//! Each worker keeps its own copy of the revocation list and takes in the others' changes at
//! its 100 ms tick. An answer that tells someone a session ended (the browser its logout or its
//! 401, the OP its back-channel 200) therefore waits on this worker until the change has been
//! published and two more of its ticks have passed: by then every other worker has ticked
//! since, and a copy of the cookie is refused everywhere, not only here.
//!
//! Requests that only *observe* an end (a waiter of the validation that ended it, a new request
//! of the session on this worker, a worker reading the validation's outcome) are held alike
//! while the change is recent: they too tell the client its session is over.

/// Ticks of this worker, after the one in which the revocation was published, before a held
/// answer goes: the first is the period in which every other worker ticks at least once; the
/// second is a margin for ticks that come late.
const TICKS_AFTER_PUBLISH: u64 = 2;
/// A revocation this worker could not publish (shared data refused it, again and again) still
/// lets its answer go after this many ticks (5 s): the local worker refuses the session, the
/// publish is retried at every tick, and the failure is in the log.
const GIVE_UP_TICKS: u64 = 50;
/// At most this many answers held per worker; beyond it they go at once. An anonymous caller
/// can make front-channel logouts held only while they change the list, which its share
/// bounds, so this is a backstop.
const MAX_HELD: usize = 4096;
/// Generations of the revocation list remembered, one per tick: a change within this many
/// ticks is recent.
const RECENT_TICKS: usize = 3;

struct Held {
    ctx: u32,
    /// The tick in which this request's revocation was published; `None` while the list has
    /// changes not yet shared.
    published_in: Option<u64>,
    give_up_at: u64,
}

/// The answers held on one worker, and the revocation list's recent generations.
#[derive(Default)]
pub(super) struct Holds {
    held: Vec<Held>,
    generations: [u64; RECENT_TICKS],
}

impl Holds {
    /// Holds request `ctx`'s answer at tick count `ticks`; `unpublished`: the revocation list
    /// has changes not yet shared (they are shared at the next tick). `false` when too many
    /// are held: the caller answers at once.
    pub(super) fn hold(&mut self, ctx: u32, ticks: u64, unpublished: bool) -> bool {
        if self.held.len() >= MAX_HELD {
            return false;
        }
        // Published by the request itself, between two ticks: counted from the next one.
        let published_in = (!unpublished).then_some(ticks.saturating_add(1));
        self.held.push(Held {
            ctx,
            published_in,
            give_up_at: ticks.saturating_add(GIVE_UP_TICKS),
        });
        true
    }

    /// At the end of tick `ticks` (after its publish; `unpublished`: changes still not
    /// shared): the requests whose answers may go now. `generation`: the revocation list's.
    pub(super) fn on_tick(&mut self, ticks: u64, unpublished: bool, generation: u64) -> Vec<u32> {
        self.generations.rotate_left(1);
        if let Some(last) = self.generations.last_mut() {
            *last = generation;
        }
        if self.held.is_empty() {
            return Vec::new();
        }
        let mut due = Vec::new();
        self.held.retain_mut(|h| {
            if h.published_in.is_none() && !unpublished {
                h.published_in = Some(ticks);
            }
            let published = h
                .published_in
                .is_some_and(|p| ticks >= p.saturating_add(TICKS_AFTER_PUBLISH));
            let go = published || ticks >= h.give_up_at;
            if go {
                due.push(h.ctx);
            }
            !go
        });
        due
    }

    /// Whether the revocation list (at `generation` now) changed within the last ticks, here
    /// or by what another worker published.
    pub(super) fn changed_recently(&self, generation: u64) -> bool {
        self.generations.first() != Some(&generation)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_published_by_its_request_goes_at_the_third_tick() {
        let mut h = Holds::default();
        assert!(h.hold(7, 10, false));
        assert!(h.on_tick(11, false, 0).is_empty());
        assert!(h.on_tick(12, false, 0).is_empty());
        assert_eq!(h.on_tick(13, false, 0), vec![7]);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn an_answer_waits_for_its_publish_then_two_ticks() {
        let mut h = Holds::default();
        assert!(h.hold(7, 10, true));
        // Ticks 11 and 12 could not publish; 13 did.
        assert!(h.on_tick(11, true, 0).is_empty());
        assert!(h.on_tick(12, true, 0).is_empty());
        assert!(h.on_tick(13, false, 0).is_empty());
        assert!(h.on_tick(14, false, 0).is_empty());
        assert_eq!(h.on_tick(15, false, 0), vec![7]);
    }

    #[test]
    fn an_answer_never_published_goes_after_the_give_up() {
        let mut h = Holds::default();
        assert!(h.hold(7, 0, true));
        for t in 1..GIVE_UP_TICKS {
            assert!(h.on_tick(t, true, 0).is_empty(), "{t}");
        }
        assert_eq!(h.on_tick(GIVE_UP_TICKS, true, 0), vec![7]);
    }

    #[test]
    fn holds_are_bounded() {
        let mut h = Holds::default();
        for ctx in 0..MAX_HELD as u32 {
            assert!(h.hold(ctx, 0, false));
        }
        assert!(!h.hold(u32::MAX, 0, false));
    }

    #[test]
    fn a_change_is_recent_for_three_ticks() {
        let mut h = Holds::default();
        assert!(!h.changed_recently(0));
        assert!(h.changed_recently(1));
        h.on_tick(1, false, 1);
        assert!(h.changed_recently(1));
        h.on_tick(2, false, 1);
        assert!(h.changed_recently(1));
        h.on_tick(3, false, 1);
        assert!(!h.changed_recently(1));
    }
}
