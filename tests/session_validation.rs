//! Session validation at the OP (`session.validate_interval_s`) through the public, sans-IO API,
//! on two workers sharing one store: the refresh-token grant once the interval is over, one
//! callout per session across the workers, rotation written back, the OP's no, the OP down.

use envoy_wam::flow::RequestFlow;
use envoy_wam::http::{Action, Callout, CalloutResult, Wake};
use serde_json::{json, Value};

mod common;
use common::*;
#[path = "common/life.rs"]
mod life;
use life::*;

/// Past the 60 s interval of the test configuration.
const DUE: u64 = NOW + 61;

/// The OP's refresh answer: rotated tokens and a refreshed ID token with `claims` edited.
fn refreshed(w: &World, now: u64, edit: impl FnOnce(&mut Value)) -> CalloutResult {
    let mut id = id_claims(None, now);
    edit(&mut id);
    let mut t = tokens("at-2", "rt-2");
    t["id_token"] = w.op.sign(id).into();
    ok_json(t)
}

/// Asserts `c` is the refresh-token grant with `rt`.
fn assert_refresh(c: &Callout, rt: &str) {
    assert_eq!((c.method, c.path.as_str()), ("POST", "/token"));
    let f = form(c);
    assert_eq!(f["grant_type"], "refresh_token");
    assert_eq!(f["refresh_token"], rt);
    assert!(callout_header(c, "authorization").is_some_and(|a| a.starts_with("Basic ")));
}

/// An OP that answers the refresh with `answer` and the JWKS with its keys.
fn with_keys(w: &World, answer: CalloutResult) -> impl FnMut(&Callout) -> CalloutResult {
    let jwks = w.op.jwks();
    move |c: &Callout| match c.path.as_str() {
        "/token" => answer.clone(),
        "/jwks" => CalloutResult::Response {
            status: 200,
            body: jwks.clone(),
        },
        other => panic!("unexpected callout to {other}"),
    }
}

/// The successor session value in the response cookies, as a jar update.
fn session_sets(cookies: &[String]) -> Vec<&String> {
    cookies.iter().filter(|c| c.starts_with("PA.wam")).collect()
}

#[test]
fn nothing_is_asked_before_the_interval_then_the_refresh_rotates_the_cookie() {
    let mut w = World::new(&config(|_| {}));
    let mut jar = w.login(0, NOW);
    let f = forward(w.quiet(0, &World::page(&jar, &[]), NOW + 59));
    assert!(f.response_cookies.is_empty());
    forward(w.quiet(1, &World::page(&jar, &[]), NOW + 59));

    let answer = refreshed(&w, DUE, |c| c["groups"] = json!(["staff"]));
    let mut flow = RequestFlow::new();
    let h = World::page(&jar, &[]);
    let c = callout(w.start(0, &mut flow, &h, DUE));
    assert_refresh(&c, "rt-1");
    let f = forward(
        w.settle(0, &mut flow, &h, Action::Callout(c), DUE, &mut |_| {
            answer.clone()
        }),
    );
    assert_eq!(upstream(&f, "x-wam-groups"), Some(Some("staff".into())));
    assert_eq!(upstream(&f, "x-wam-user"), Some(Some("alice".into())));
    let sets = session_sets(&f.response_cookies);
    assert_eq!(sets.len(), 1, "{sets:?}");
    jar.apply(&sets);
    let s = w.decode(&jar.session_value(), DUE).unwrap();
    assert_eq!(s.op.refresh_token.as_deref(), Some("rt-2"));
    assert_eq!(s.op.validated_at, DUE);
    assert_eq!(s.claims["groups"], json!(["staff"]));
    assert_eq!(s.op.op_sid.as_deref(), Some(OP_SID));
    assert_eq!(s.created_at, NOW, "the same session");

    // The successor works on both workers without asking again until its own interval.
    for vm in 0..2 {
        let f = forward(w.quiet(vm, &World::page(&jar, &[]), DUE + 59));
        assert_eq!(upstream(&f, "x-wam-groups"), Some(Some("staff".into())));
    }
    let c = callout(w.start(
        1,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE + 60,
    ));
    assert_refresh(&c, "rt-2");
}

#[test]
fn concurrent_requests_wait_for_the_one_refresh_on_every_worker() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let h = World::page(&jar, &[]);
    let (mut lead, mut same, mut other) = (
        RequestFlow::for_context(1),
        RequestFlow::for_context(2),
        RequestFlow::for_context(3),
    );
    let c = callout(w.start(0, &mut lead, &h, DUE));
    assert_refresh(&c, "rt-1");
    assert_eq!(w.start(0, &mut same, &h, DUE), Action::Wait);
    assert_eq!(w.start(1, &mut other, &h, DUE), Action::Wait);
    // Worker 1's tick while the refresh is under way wakes nobody.
    w.tick(1, DUE);
    assert!(w.vms[1].woken.is_empty());

    let answer = refreshed(&w, DUE, |_| {});
    let f = forward(
        w.settle(0, &mut lead, &h, Action::Callout(c), DUE, &mut |_| {
            answer.clone()
        }),
    );
    let successor = session_sets(&f.response_cookies)[0].clone();
    assert_eq!(w.vms[0].woken, vec![(2, Wake::Ready)]);
    w.vms[0].woken.clear();
    let f2 = forward(w.wake(0, &mut same, &h, DUE));
    assert_eq!(session_sets(&f2.response_cookies), [&successor]);

    w.tick(1, DUE + 1);
    assert_eq!(w.vms[1].woken, vec![(3, Wake::Ready)]);
    let f3 = forward(w.wake(1, &mut other, &h, DUE + 1));
    let adopted = session_sets(&f3.response_cookies);
    assert_eq!(adopted.len(), 1);
    assert_eq!(pair(adopted[0]), pair(&successor), "the same successor");
    assert_eq!(
        w.callouts.len(),
        1 + 2,
        "login (token, JWKS) and one refresh"
    );

    // Later requests with the old cookie, on either worker, also get the successor.
    for vm in 0..2 {
        let f = forward(w.quiet(vm, &h, DUE + 2));
        assert_eq!(pair(session_sets(&f.response_cookies)[0]), pair(&successor));
    }
}

#[test]
fn the_op_saying_no_ends_the_session_everywhere() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let copy = jar.clone();
    let no = status_json(400, json!({"error": "invalid_grant"}));
    let r = respond(w.run(
        0,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE,
        &mut |c| {
            assert_refresh(c, "rt-1");
            no.clone()
        },
    ));
    assert_eq!(r.status, 302);
    assert!(r
        .header_value("location")
        .unwrap()
        .starts_with("https://op.example.com/auth?"));
    // An API request of the same session: 401, and the OP is not asked again.
    assert_eq!(respond(w.quiet(0, &World::xhr(&jar), DUE + 1)).status, 401);
    w.tick(1, DUE + 1);
    assert_eq!(respond(w.quiet(1, &World::xhr(&copy), DUE + 1)).status, 401);
    assert_eq!(
        respond(w.quiet(1, &World::page(&copy, &[]), DUE + 1)).status,
        302
    );
}

#[test]
fn an_xhr_whose_session_the_op_ends_gets_401() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let no = status_json(401, json!({"error": "invalid_client"}));
    let r = respond(w.run(
        1,
        &mut RequestFlow::new(),
        &World::xhr(&jar),
        DUE,
        &mut |_| no.clone(),
    ));
    assert_eq!(r.status, 401);
    assert!(r.header_value("www-authenticate").is_some());
    // Worker 0 has not ticked: the shared slot already says the session ended.
    assert_eq!(
        respond(w.quiet(0, &World::page(&jar, &[]), DUE + 1)).status,
        302
    );
}

/// The clocks of the workers are read at their ticks: a session due on one worker may not be
/// due yet on another, which serves it from its cache. The answer that tells the client its
/// session ended waits until that worker has taken the revocation in (CI caught a browser
/// request served right after its XHR's 401).
#[test]
fn the_answer_to_a_session_the_op_ended_waits_until_every_worker_refuses_it() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    forward(w.quiet(0, &page, NOW + 1));
    let (mut flow, h) = (RequestFlow::new(), World::xhr(&jar));
    w.refused_at_validation(1, &mut flow, &h, DUE);
    // Worker 0's clock, behind, finds no validation due: it still serves the copy...
    forward(w.quiet(0, &page, DUE - 2));
    // ...until its tick, which comes before worker 1's third.
    w.tick(1, DUE);
    w.tick(0, DUE - 2);
    assert_eq!(respond(w.quiet(0, &page, DUE - 2)).status, 302);
    let r = respond(w.released_by_ticks(1, &mut flow, &h, DUE));
    assert_eq!(r.status, 401);
}

#[test]
fn the_op_down_is_tolerated_for_the_grace_then_fails_closed() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let h = World::page(&jar, &[]);
    let mut down = |_: &Callout| CalloutResult::Failed;
    let f = forward(w.run(0, &mut RequestFlow::new(), &h, DUE, &mut down));
    // At most the activity renewal of the same session: no successor, nothing validated.
    for set in session_sets(&f.response_cookies) {
        let s = w.decode(pair(set).1, DUE).unwrap();
        assert_eq!(s.op.validated_at, NOW);
        assert_eq!(s.op.refresh_token.as_deref(), Some("rt-1"));
    }
    assert_eq!(upstream(&f, "x-wam-user"), Some(Some("alice".into())));
    assert_eq!(w.callouts.len(), 3);
    // Within the retry window, on either worker: no new callout.
    forward(w.quiet(0, &h, DUE + 4));
    forward(w.quiet(1, &h, DUE + 4));
    // After it, one more try (a 503 from Envoy counts as down too).
    let mut unavailable = |_: &Callout| status_json(503, json!({}));
    forward(w.run(1, &mut RequestFlow::new(), &h, DUE + 6, &mut unavailable));
    assert_eq!(w.callouts.len(), 4);
    // Past interval + grace (login + 60 + 300): 503, after one more try.
    let end = NOW + 60 + 300;
    forward(w.run(0, &mut RequestFlow::new(), &h, end - 1, &mut down));
    let r = respond(w.run(0, &mut RequestFlow::new(), &h, end, &mut down));
    assert_eq!(r.status, 503);
    assert_eq!(respond(w.quiet(1, &h, end + 1)).status, 503);
    // The OP back: the session is validated again.
    let answer = refreshed(&w, end + 10, |_| {});
    let f = forward(w.run(1, &mut RequestFlow::new(), &h, end + 10, &mut |_| {
        answer.clone()
    }));
    assert_eq!(session_sets(&f.response_cookies).len(), 1);
}

#[test]
fn a_refreshed_id_token_about_another_subject_ends_the_session() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let answer = refreshed(&w, DUE, |c| c["sub"] = "mallory".into());
    let r = respond(w.run(
        0,
        &mut RequestFlow::new(),
        &World::xhr(&jar),
        DUE,
        &mut |_| answer.clone(),
    ));
    assert_eq!(r.status, 401);
    w.tick(1, DUE);
    assert_eq!(
        respond(w.quiet(1, &World::page(&jar, &[]), DUE)).status,
        302
    );
}

#[test]
fn a_refresh_without_id_token_keeps_the_claims_and_rotates() {
    let mut w = World::new(&config(|_| {}));
    let mut jar = w.login(0, NOW);
    let answer = ok_json(json!({"access_token": "at-2", "token_type": "Bearer"}));
    let f = forward(w.run(
        0,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE,
        &mut |_| answer.clone(),
    ));
    assert_eq!(
        upstream(&f, "x-wam-groups"),
        Some(Some("staff,admins".into()))
    );
    jar.apply(&session_sets(&f.response_cookies));
    let s = w.decode(&jar.session_value(), DUE).unwrap();
    assert_eq!(
        s.op.refresh_token.as_deref(),
        Some("rt-1"),
        "not rotated: the same one stays"
    );
    assert_eq!(s.op.validated_at, DUE);
}

#[test]
fn a_large_session_that_shrinks_at_validation_clears_its_chunks() {
    let mut w = World::new(&config(|_| {}));
    let mut jar = Jar::default();
    let groups: Vec<String> = (0..300).map(|i| format!("grp-{i:04}-example")).collect();
    let g = json!(groups);
    w.login_with(
        0,
        &mut jar,
        NOW,
        |c| c["groups"] = g,
        tokens("at-1", "rt-1"),
        None,
    );
    let chunks = jar.session_names().len();
    assert!(chunks >= 2, "{:?}", jar.session_names());
    let answer = refreshed(&w, DUE, |c| c["groups"] = json!(["staff"]));
    let f = forward(w.run(
        1,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE,
        &mut with_keys(&w, answer),
    ));
    let sets = session_sets(&f.response_cookies);
    let names: Vec<&str> = sets.iter().map(|s| pair(s).0).collect();
    assert_eq!(sets.len(), 1 + chunks, "{names:?}");
    assert!(sets[0].starts_with("PA.wam=") && !sets[0].contains("Max-Age=0;"));
    assert!(sets[1..].iter().all(|s| s.contains("Max-Age=0;")));
    jar.apply(&sets);
    assert_eq!(jar.session_names(), ["PA.wam"]);
    forward(w.quiet(0, &World::page(&jar, &[]), DUE + 1));
}

#[test]
fn validation_through_userinfo_when_there_is_no_refresh_token() {
    let mut w = World::new(&config(|c| c["session"]["userinfo"] = true.into()));
    let mut jar = Jar::default();
    let no_refresh = json!({"access_token": "at-1", "token_type": "Bearer"});
    let me = json!({"sub": "alice", "email": "alice@example.com", "groups": ["staff"]});
    w.login_with(0, &mut jar, NOW, |_| {}, no_refresh, Some(me));
    let answer = ok_json(json!({"sub": "alice", "email": "a@new.example.com"}));
    let f = forward(w.run(
        0,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE,
        &mut |c| {
            assert_eq!(c.path, "/me");
            assert_eq!(callout_header(c, "authorization"), Some("Bearer at-1"));
            answer.clone()
        },
    ));
    assert_eq!(
        upstream(&f, "x-wam-email"),
        Some(Some("a@new.example.com".into()))
    );
    assert_eq!(
        upstream(&f, "x-wam-groups"),
        Some(None),
        "no longer asserted"
    );
    // UserInfo about someone else ends it.
    let jar2 = {
        let mut j = Jar::default();
        j.apply(&session_sets(&f.response_cookies));
        j
    };
    let other = ok_json(json!({"sub": "mallory"}));
    let r = respond(w.run(
        1,
        &mut RequestFlow::new(),
        &World::xhr(&jar2),
        DUE + 61,
        &mut |_| other.clone(),
    ));
    assert_eq!(r.status, 401);
}

/// Worker 1 never signed anyone in, so it has not loaded the OP's keys: it fetches them to
/// check the refreshed ID token instead of keeping a session the OP now describes otherwise.
#[test]
fn a_worker_without_the_ops_keys_fetches_them_to_check_the_refreshed_id_token() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let jwks = w.op.jwks();
    let answer = refreshed(&w, DUE, |c| c["sub"] = "mallory".into());
    let mut op = |c: &Callout| match c.path.as_str() {
        "/token" => answer.clone(),
        "/jwks" => CalloutResult::Response {
            status: 200,
            body: jwks.clone(),
        },
        other => panic!("{other}"),
    };
    let r = respond(w.run(1, &mut RequestFlow::new(), &World::xhr(&jar), DUE, &mut op));
    assert_eq!(
        r.status, 401,
        "the OP names another subject: the session ends"
    );
    let paths: Vec<&str> = w.callouts[2..].iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/token", "/jwks"]);
    assert_eq!(
        respond(w.quiet(0, &World::page(&jar, &[]), DUE + 1)).status,
        302
    );

    // Groups taken away at the OP are taken away here too; the keys are loaded once.
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let answer = refreshed(&w, DUE, |c| c["groups"] = json!(["staff"]));
    let jwks = w.op.jwks();
    let mut op = |c: &Callout| match c.path.as_str() {
        "/token" => answer.clone(),
        _ => CalloutResult::Response {
            status: 200,
            body: jwks.clone(),
        },
    };
    let f = forward(w.run(
        1,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE,
        &mut op,
    ));
    assert_eq!(upstream(&f, "x-wam-groups"), Some(Some("staff".into())));
    assert_eq!(w.callouts.len(), 2 + 2);

    // The JWKS cannot be fetched: the rotated refresh token is still kept (the OP has
    // forgotten the old one), and the claims wait for the next validation.
    let mut w = World::new(&config(|_| {}));
    let mut jar = w.login(0, NOW);
    let answer = refreshed(&w, DUE, |c| c["groups"] = json!(["staff"]));
    let mut op = |c: &Callout| match c.path.as_str() {
        "/token" => answer.clone(),
        _ => CalloutResult::TimedOut,
    };
    let f = forward(w.run(
        1,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE,
        &mut op,
    ));
    jar.apply(&session_sets(&f.response_cookies));
    let s = w.decode(&jar.session_value(), DUE).unwrap();
    assert_eq!(s.op.refresh_token.as_deref(), Some("rt-2"));
    assert_eq!(s.op.validated_at, DUE);
}

/// The slot's successor cookie is only ever the same session's: a slot that names the session
/// but holds another session's cookie (shared data written by something else in the Envoy) is
/// not adopted as it.
#[test]
fn a_successor_of_another_session_is_not_adopted() {
    use envoy_wam::revocation::SharedStore;
    use envoy_wam::session::slot::{self, Slot, SlotState};
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let alice = w.decode(&jar.session_value(), NOW).unwrap();
    let mut bob = alice.clone();
    bob.sid = "bob-session".into();
    bob.sub = "bob".into();
    bob.op.validated_at = DUE;
    let bob_cookie = bob
        .encode(&w.settings.default_web().session.keys, &mut Rng(3))
        .unwrap();
    let planted = Slot {
        sid: alice.sid.clone(),
        state: SlotState::Done {
            at: DUE,
            cookie: bob_cookie,
        },
    };
    w.store
        .store(&slot::key(&alice.sid), &planted.encode(), None)
        .unwrap();
    let answer = refreshed(&w, DUE, |_| {});
    let f = forward(w.run(
        1,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE,
        &mut with_keys(&w, answer),
    ));
    assert_eq!(upstream(&f, "x-wam-user"), Some(Some("alice".into())));
}

/// With `session.userinfo`, a validation by refresh also asks UserInfo with the new access
/// token: the claims are the union of the refreshed ID token's and UserInfo's; a UserInfo about
/// another subject ends the session; UserInfo down leaves the refresh standing.
#[test]
fn a_refresh_with_userinfo_merges_both_and_another_subject_ends_it() {
    let mut w = World::new(&config(|c| c["session"]["userinfo"] = true.into()));
    let mut jar = Jar::default();
    let me = json!({"sub": "alice", "email": "alice@example.com"});
    w.login_with(0, &mut jar, NOW, |_| {}, tokens("at-1", "rt-1"), Some(me));
    let answer = refreshed(&w, DUE, |c| c["groups"] = json!(["staff"]));
    let mut asked = Vec::new();
    let f = forward(w.run(
        0,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        DUE,
        &mut |c| {
            asked.push(c.path.clone());
            match c.path.as_str() {
                "/token" => answer.clone(),
                "/me" => {
                    assert_eq!(callout_header(c, "authorization"), Some("Bearer at-2"));
                    ok_json(json!({"sub": "alice", "email": "new@example.com"}))
                }
                other => panic!("unexpected callout to {other}"),
            }
        },
    ));
    assert_eq!(asked, ["/token", "/me"]);
    assert_eq!(
        upstream(&f, "x-wam-email"),
        Some(Some("new@example.com".into()))
    );
    assert_eq!(
        upstream(&f, "x-wam-groups"),
        Some(Some("staff".into())),
        "from the ID token"
    );
    jar.apply(&session_sets(&f.response_cookies));
    assert_eq!(
        w.decode(&jar.session_value(), DUE)
            .unwrap()
            .op
            .refresh_token
            .as_deref(),
        Some("rt-2")
    );

    // UserInfo unavailable: the refresh (and its rotated token) stands.
    let next = DUE + 61;
    let answer = ok_json({
        let mut t = tokens("at-3", "rt-3");
        t["id_token"] = w.op.sign(id_claims(None, next)).into();
        t
    });
    let f = forward(w.run(
        0,
        &mut RequestFlow::new(),
        &World::page(&jar, &[]),
        next,
        &mut |c| match c.path.as_str() {
            "/token" => answer.clone(),
            _ => CalloutResult::Failed,
        },
    ));
    jar.apply(&session_sets(&f.response_cookies));
    let s = w.decode(&jar.session_value(), next).unwrap();
    assert_eq!(s.op.refresh_token.as_deref(), Some("rt-3"));

    // UserInfo about someone else: the session ends.
    let last = next + 61;
    let answer = ok_json({
        let mut t = tokens("at-4", "rt-4");
        t["id_token"] = w.op.sign(id_claims(None, last)).into();
        t
    });
    let jwks = w.op.jwks();
    let r = respond(w.run(
        1,
        &mut RequestFlow::new(),
        &World::xhr(&jar),
        last,
        &mut |c| match c.path.as_str() {
            "/token" => answer.clone(),
            "/jwks" => CalloutResult::Response {
                status: 200,
                body: jwks.clone(),
            },
            _ => ok_json(json!({"sub": "mallory"})),
        },
    ));
    assert_eq!(r.status, 401);
}

/// The client of the request that leads a validation goes away after the OP rotated the
/// refresh token but before the JWKS (or UserInfo) answered: the refresh is completed anyway, so
/// the session's next request takes the successor instead of presenting the rotated-away token.
#[test]
fn a_validation_the_op_answered_survives_its_request_going_away() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let answer = refreshed(&w, DUE, |c| c["groups"] = json!(["staff"]));
    // Worker 1 has no keys: after the refresh grant it asks for the JWKS, and the client leaves.
    let mut leader = RequestFlow::new();
    let h = World::page(&jar, &[]);
    let c = callout(w.start(1, &mut leader, &h, DUE));
    assert_refresh(&c, "rt-1");
    let next = leader.on_callout(&w.settings, &mut w.vms[1], &h, answer, DUE, &mut w.rng);
    let Action::Callout(keys) = next else {
        panic!("expected the JWKS callout, got {next:?}")
    };
    assert_eq!(keys.path, "/jwks");
    leader.on_abandon_in(&w.settings, &mut w.vms[1], DUE, &mut w.rng);

    // Either worker: the successor, with the rotated token, and no second refresh.
    for vm in [1, 0] {
        let f = forward(w.quiet(vm, &World::page(&jar, &[]), DUE + 1));
        let sets = session_sets(&f.response_cookies);
        assert_eq!(sets.len(), 1, "worker {vm}: {sets:?}");
        let mut j = Jar::default();
        j.apply(&sets);
        let s = w.decode(&j.session_value(), DUE + 1).unwrap();
        assert_eq!(s.op.refresh_token.as_deref(), Some("rt-2"), "worker {vm}");
    }
}

/// Another worker takes the validation lease between this worker's read of the slot and its
/// write: the compare-and-swap fails, and this worker waits instead of presenting the same
/// refresh token a second time. Also when the slot did not exist yet (shared data has no
/// "create if absent": the slot is created idle first, then leased under CAS).
#[test]
fn a_lease_taken_between_read_and_write_makes_the_other_worker_wait() {
    use envoy_wam::revocation::{MemoryStore, SharedStore, StoreError};
    use envoy_wam::session::slot::{Slot, SlotState};
    use std::cell::Cell;
    use std::rc::Rc;

    /// Shared data where "another worker" leases the slot just before this worker's CAS write.
    struct Racing {
        inner: MemoryStore,
        raced: Cell<bool>,
    }
    impl SharedStore for Racing {
        fn load(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.inner.load(key)
        }
        fn store(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            let busy =
                Slot::decode(value).is_some_and(|s| matches!(s.state, SlotState::Busy { .. }));
            if busy && !self.raced.replace(true) {
                let theirs = Slot::decode(value).unwrap();
                self.inner.store(key, &theirs.encode(), None)?;
            }
            self.inner.store(key, value, cas)
        }
    }

    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let store = Rc::new(Racing {
        inner: MemoryStore::default(),
        raced: Cell::new(false),
    });
    w.vms[0].store = store.clone();
    let h = World::page(&jar, &[]);
    let action = w.start(0, &mut RequestFlow::new(), &h, DUE);
    assert_eq!(
        action,
        Action::Wait,
        "the other worker leads; no second refresh"
    );
    assert!(store.raced.get());
    assert!(!w
        .callouts
        .iter()
        .any(|c| c.path == "/token" && form(c)["grant_type"] == "refresh_token"));
}

/// UserInfo is unsigned: at sign-in it adds claims about the user but never replaces the ID
/// token's own (the OP's `sid`, which back-channel logout names, or the subject).
#[test]
fn userinfo_at_login_does_not_replace_the_id_tokens_sid() {
    let mut w = World::new(&config(|c| c["session"]["userinfo"] = true.into()));
    let mut jar = Jar::default();
    let me = json!({"sub": "alice", "sid": "attacker-chosen", "email": "alice@example.com"});
    w.login_with(0, &mut jar, NOW, |_| {}, tokens("at-1", "rt-1"), Some(me));
    let s = w.decode(&jar.session_value(), NOW).unwrap();
    assert_eq!(s.op.op_sid.as_deref(), Some(OP_SID));
    assert_eq!(s.claims.get("email"), Some(&json!("alice@example.com")));
}
