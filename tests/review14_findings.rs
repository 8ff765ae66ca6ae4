//! Review 14 (answers held until every worker knows a session ended): requests that learn of
//! the end in other ways than ending it themselves answer at once, before the other workers
//! have taken the revocation in; a front-channel call could park requests without bound; a
//! hold could end before its revocation was shared. Each test failed on a260472/5aec44a (the
//! first holds) and passes with `flow/hold.rs`.

use envoy_wam::flow::{RequestFlow, VmState};
use envoy_wam::http::{Action, Wake};
use serde_json::json;

mod common;
use common::*;
#[path = "common/life.rs"]
mod life;
use life::*;

/// Past the 60 s interval of the test configuration.
const DUE: u64 = NOW + 61;

/// Whether `a` lets the session's request through to the backend.
fn served(a: &Action) -> bool {
    matches!(a, Action::Forward(_))
}

/// A request of the same session, on the same worker, that waited for the validation the OP
/// refused: it is woken with the refusal and answers 401 at once, while the leader's answer is
/// held. The client has seen its session end; the other worker (clock behind, not ticked)
/// still serves the copy.
#[test]
fn a_waiter_of_the_refused_validation_answers_before_the_other_worker_knows() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    forward(w.quiet(0, &page, NOW + 1));
    let h = World::xhr(&jar);
    let (mut lead, mut same) = (RequestFlow::for_context(1), RequestFlow::for_context(2));
    let c = callout(w.start(1, &mut lead, &h, DUE));
    assert_eq!(w.start(1, &mut same, &h, DUE), Action::Wait);
    let no = status_json(401, json!({"error": "invalid_grant"}));
    let a = lead.on_callout(&w.settings, &mut w.vms[1], &h, no, DUE, &mut w.rng);
    assert_eq!((a, lead.holds_answer()), (Action::Wait, true), "{c:?}");
    assert_eq!(std::mem::take(&mut w.vms[1].woken), vec![(2, Wake::Ready)]);
    let seen = w.wake(1, &mut same, &h, DUE);
    let seen_ended = matches!(&seen, Action::Respond(r) if r.status == 401);
    let later = w.quiet(0, &page, DUE - 2);
    assert!(
        !(seen_ended && served(&later)),
        "the waiter got 401 unheld ({seen:?}); worker 0 then served the session"
    );
}

/// A new request of the session on the worker that ended it, during the leader's hold: the
/// revocation is local there, so it gets its 401 at once, unheld.
#[test]
fn a_new_request_on_the_ending_worker_answers_before_the_other_worker_knows() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    forward(w.quiet(0, &page, NOW + 1));
    let h = World::xhr(&jar);
    w.refused_at_validation(1, &mut RequestFlow::for_context(1), &h, DUE);
    let mut flow = RequestFlow::for_context(5);
    let seen = w.start(1, &mut flow, &h, DUE);
    let seen_ended = matches!(&seen, Action::Respond(r) if r.status == 401);
    let later = w.quiet(0, &page, DUE - 2);
    assert!(
        !(seen_ended && served(&later)),
        "a new request got 401 unheld ({seen:?}); worker 0 then served the session"
    );
}

/// Three workers: a worker whose clock finds the session due reads the validation slot
/// (`Ended`) and answers 401 at once, unheld and without having the revocation itself; a
/// third worker, clock behind and not ticked, still serves the copy.
#[test]
fn a_worker_reading_the_ended_slot_answers_before_a_third_worker_knows() {
    let mut w = World::new(&config(|_| {}));
    let mut third = VmState::new(&w.settings);
    third.store = w.store.clone();
    w.vms.push(third);
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    forward(w.quiet(2, &page, NOW + 1));
    let h = World::xhr(&jar);
    w.refused_at_validation(1, &mut RequestFlow::for_context(1), &h, DUE);
    let mut flow = RequestFlow::for_context(7);
    let seen = w.start(0, &mut flow, &h, DUE);
    let seen_ended = matches!(&seen, Action::Respond(r) if r.status == 401);
    let later = w.quiet(2, &page, DUE - 2);
    assert!(
        !(seen_ended && served(&later)),
        "worker 0 answered 401 unheld from the slot ({seen:?}); worker 2 then served the session"
    );
}

/// Anonymous: the same front-channel sid, again and again. Each is accepted without using the
/// share (the sid is on the list already, published) and each is parked for three ticks:
/// nothing bounds the parked requests.
#[test]
fn a_repeated_frontchannel_sid_parks_every_request() {
    let mut w = World::new(&config(|_| {}));
    let path = format!("/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid={OP_SID}");
    let h = at("gw.example.com", "GET", &path, &[]);
    // The first one, published and answered.
    let _ = respond(w.quiet(1, &h, NOW));
    w.tick(0, NOW);
    let mut parked = 0;
    for ctx in 100..1100 {
        let mut flow = RequestFlow::for_context(ctx);
        if w.start(1, &mut flow, &h, NOW) == Action::Wait && flow.holds_answer() {
            parked += 1;
        }
    }
    assert!(
        parked < 1000,
        "{parked} anonymous requests for a sid already on the list are parked"
    );
}

/// Shared data that refuses the revocation list (full, or another worker always winning the
/// compare-and-swap): everything else goes through.
struct ListRefused(std::rc::Rc<envoy_wam::revocation::MemoryStore>);

impl envoy_wam::revocation::SharedStore for ListRefused {
    fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.load(key)
    }
    fn store(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), envoy_wam::revocation::StoreError> {
        if key == envoy_wam::revocation::LIST_KEY {
            return Err(envoy_wam::revocation::StoreError::CasMismatch);
        }
        self.0.store(key, value, cas)
    }
}

/// The hold counts ticks, not the publish: when the revocation could not be shared, the
/// answer is released all the same after three ticks, and the other worker (ticked, clock
/// behind) serves the session after the client got its 401.
#[test]
fn the_hold_is_released_though_the_revocation_was_never_published() {
    use envoy_wam::revocation::SharedStore as _;
    let mut w = World::new(&config(|_| {}));
    w.vms[1].store = std::rc::Rc::new(ListRefused(w.store.clone()));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    forward(w.quiet(0, &page, NOW + 1));
    let h = World::xhr(&jar);
    w.refused_at_validation(1, &mut RequestFlow::for_context(1), &h, DUE);
    for _ in 0..3 {
        let _ = w.vms[1].on_tick(&w.settings, DUE);
        let _ = w.vms[0].on_tick(&w.settings, DUE - 2);
    }
    assert!(w.store.load(envoy_wam::revocation::LIST_KEY).is_none());
    let released = !std::mem::take(&mut w.vms[1].woken).is_empty();
    let later = w.quiet(0, &page, DUE - 2);
    assert!(
        !(released && served(&later)),
        "the 401 was released unpublished; worker 0 then served the session"
    );
}
