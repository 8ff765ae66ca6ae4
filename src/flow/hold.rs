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
//! while the revocation entry that ends their session changed recently: they too tell the
//! client its session is over. A cookie revoked long ago is refused at once.

/// Ticks of this worker, after the one in which the revocation was published, before a held
/// answer goes: the first is the period in which every other worker ticks at least once; the
/// second is a margin for ticks that come late.
const TICKS_AFTER_PUBLISH: u64 = 2;
/// A revocation this worker could not publish (shared data refused it, again and again) still
/// lets its answer go after this many ticks (5 s): the local worker refuses the session, the
/// publish is retried at every tick, and the failure is in the log.
const GIVE_UP_TICKS: u64 = 50;
/// At most this many answers held per worker; beyond it they go at once.
const MAX_HELD: usize = 4096;
/// Of which requests anyone can make (front-channel logouts, held while they change the list:
/// one per listed sid and second at most) may take this many, so that a flood of them leaves
/// room for the sessions that really end.
const MAX_ANONYMOUS_HELD: usize = 1024;
/// Generations of the revocation list remembered, one per tick: an entry that changed within
/// this many ticks changed recently.
const RECENT_TICKS: usize = 3;

struct Held {
    ctx: u32,
    anonymous: bool,
    /// The tick in which this request's revocation was published; `None` while the list has
    /// changes not yet shared.
    published_in: Option<u64>,
    give_up_at: u64,
}

/// The answers held on one worker, and the revocation list's recent generations.
#[derive(Default)]
pub(super) struct Holds {
    /// This worker's ticks so far.
    ticks: u64,
    held: Vec<Held>,
    /// How many of `held` are anonymous.
    anonymous: usize,
    generations: [u64; RECENT_TICKS],
}

impl Holds {
    /// Holds request `ctx`'s answer; `unpublished`: the revocation list has changes not yet
    /// shared (they are shared at the next tick); `anonymous`: anyone can make the request.
    /// `false` when too many are held: the caller answers at once.
    pub(super) fn hold(&mut self, ctx: u32, unpublished: bool, anonymous: bool) -> bool {
        let ticks = self.ticks;
        if self.held.len() >= MAX_HELD || (anonymous && self.anonymous >= MAX_ANONYMOUS_HELD) {
            return false;
        }
        self.anonymous += usize::from(anonymous);
        // Published by the request itself, between two ticks: counted from the next one.
        let published_in = (!unpublished).then_some(ticks.saturating_add(1));
        self.held.push(Held {
            ctx,
            anonymous,
            published_in,
            give_up_at: ticks.saturating_add(GIVE_UP_TICKS),
        });
        true
    }

    /// At the end of a tick (after its publish; `unpublished`: changes still not shared): the
    /// requests whose answers may go now. `generation`: the revocation list's.
    pub(super) fn on_tick(&mut self, unpublished: bool, generation: u64) -> Vec<u32> {
        self.ticks = self.ticks.saturating_add(1);
        let ticks = self.ticks;
        self.generations.rotate_left(1);
        if let Some(last) = self.generations.last_mut() {
            *last = generation;
        }
        if self.held.is_empty() {
            return Vec::new();
        }
        let (mut due, mut anonymous_due) = (Vec::new(), 0);
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
                anonymous_due += usize::from(h.anonymous);
            }
            !go
        });
        self.anonymous = self.anonymous.saturating_sub(anonymous_due);
        due
    }

    /// Whether generation `changed_in` of the revocation list came within the last ticks
    /// (here, or with what another worker published).
    pub(super) fn changed_since_recent_ticks(&self, changed_in: u64) -> bool {
        self.generations.first().is_none_or(|&old| changed_in > old)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` ticks (`unpublished` as given), each releasing nothing.
    fn quiet_ticks(h: &mut Holds, n: u64, unpublished: bool) {
        for t in 0..n {
            assert!(h.on_tick(unpublished, 0).is_empty(), "{t}");
        }
    }

    #[test]
    fn an_answer_published_by_its_request_goes_at_the_third_tick() {
        let mut h = Holds::default();
        assert!(h.hold(7, false, false));
        quiet_ticks(&mut h, 2, false);
        assert_eq!(h.on_tick(false, 0), vec![7]);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn an_answer_waits_for_its_publish_then_two_ticks() {
        let mut h = Holds::default();
        assert!(h.hold(7, true, false));
        // Two ticks could not publish; the third did.
        quiet_ticks(&mut h, 2, true);
        quiet_ticks(&mut h, 2, false);
        assert_eq!(h.on_tick(false, 0), vec![7]);
    }

    #[test]
    fn an_answer_never_published_goes_after_the_give_up() {
        let mut h = Holds::default();
        assert!(h.hold(7, true, false));
        quiet_ticks(&mut h, GIVE_UP_TICKS - 1, true);
        assert_eq!(h.on_tick(true, 0), vec![7]);
    }

    #[test]
    fn holds_are_bounded_and_anonymous_ones_leave_room_for_the_others() {
        let mut h = Holds::default();
        for ctx in 0..MAX_ANONYMOUS_HELD as u32 {
            assert!(h.hold(ctx, false, true));
        }
        assert!(!h.hold(u32::MAX, false, true));
        for ctx in 0..(MAX_HELD - MAX_ANONYMOUS_HELD) as u32 {
            assert!(h.hold(ctx, false, false));
        }
        assert!(!h.hold(u32::MAX, false, false));
        // Released, the anonymous ones make room for more.
        quiet_ticks(&mut h, 2, false);
        assert_eq!(h.on_tick(false, 0).len(), MAX_HELD);
        assert!(h.hold(1, false, true));
    }

    #[test]
    fn a_change_is_recent_for_three_ticks() {
        let mut h = Holds::default();
        assert!(!h.changed_since_recent_ticks(0));
        assert!(h.changed_since_recent_ticks(1));
        h.on_tick(false, 1);
        assert!(h.changed_since_recent_ticks(1));
        h.on_tick(false, 1);
        assert!(h.changed_since_recent_ticks(1));
        h.on_tick(false, 1);
        assert!(!h.changed_since_recent_ticks(1));
        // A later change is recent; the earlier one stays old.
        h.on_tick(false, 2);
        assert!(h.changed_since_recent_ticks(2) && !h.changed_since_recent_ticks(1));
    }
}
