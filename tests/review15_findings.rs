//! Review 15 (f0e4f8a held answers, 6556273, ea54c15): a refusal of a session ended a moment
//! ago that escapes its hold (a browser's form post: its login redirect comes from `on_body`,
//! which no hold wraps); anonymous front-channel calls that fill the per-worker hold table so
//! that a real session end is answered at once; a refusal of a cookie revoked long ago held
//! because anyone changed the list. Each test failed on 86b22cd and passes with their fixes.

use envoy_wam::flow::RequestFlow;
use envoy_wam::http::{Action, Body};

mod common;
use common::*;
#[path = "common/life.rs"]
mod life;
use life::*;

/// Past the 60 s interval of the test configuration.
const DUE: u64 = NOW + 61;
/// `flow::hold::MAX_HELD`.
const MAX_HELD: u32 = 4096;

/// Whether `a` lets the session's request through to the backend.
fn served(a: &Action) -> bool {
    matches!(a, Action::Forward(_))
}

/// The session ended at validation on worker 1; the same browser then submits a form. A GET
/// of the same session is held (identify sets `ended_session`), but the post is first asked
/// for its body (`ReadBody`, not a `Respond`, so `on_request` holds nothing) and its login
/// redirect comes from `on_body`, which is never held: the browser is sent to sign in again
/// at once while worker 0 (not ticked) still serves the cookie.
#[test]
fn a_form_post_of_a_session_ended_a_moment_ago_is_answered_unheld() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    forward(w.quiet(0, &page, NOW + 1));
    w.refused_at_validation(1, &mut RequestFlow::for_context(1), &World::xhr(&jar), DUE);
    // A GET of the session is held, as the commit intends.
    let mut get = RequestFlow::for_context(2);
    assert_eq!(w.start(1, &mut get, &page, DUE), Action::Wait);
    assert!(get.holds_answer());
    let cookie = jar.header();
    let post = at(
        "gw.example.com",
        "POST",
        "/app/page",
        &[
            BROWSER,
            ("cookie", cookie.as_str()),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://gw.example.com"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
    );
    let mut flow = RequestFlow::for_context(3);
    let first = w.start(1, &mut flow, &post, DUE);
    assert!(matches!(first, Action::ReadBody { .. }), "{first:?}");
    let seen = flow.on_body(
        &w.settings,
        &mut w.vms[1],
        &post,
        Body::Complete(b"a=1".to_vec()),
        DUE,
        &mut w.rng,
    );
    let seen_ended = matches!(&seen, Action::Respond(r) if r.status == 302);
    let later = w.quiet(0, &page, DUE - 2);
    assert!(
        !(seen_ended && served(&later)),
        "the form post got its login redirect unheld ({seen:?}); worker 0 then served the session"
    );
}

/// Anonymous: a front-channel sid already on the list (published), sent again a second later,
/// widens its entry (`before`, `until` move with `now`) without using the share; while the list
/// was unpublished every call naming a listed sid was held, and 4,096 of them filled worker 1's
/// holds, so the OP's real refusal of a session there went unheld while worker 0 still served
/// the cookie. Now only the call that changed the list is held, anonymous holds have a share of
/// their own (a flood of new made-up sids fills only that), and the real end is held.
#[test]
fn anonymous_frontchannel_calls_fill_the_holds_and_a_real_end_goes_unheld() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    forward(w.quiet(0, &page, NOW + 1));
    let path = "/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid=made-up";
    let fc = at("gw.example.com", "GET", path, &[]);
    // Listed and published a second earlier: one entry of the share, once.
    let _ = respond(w.quiet(1, &fc, DUE - 1));
    w.tick(1, DUE - 1);
    assert!(!w.vms[1].revoked.is_dirty());
    let mut held = 0;
    for ctx in 100..100 + MAX_HELD {
        let mut flow = RequestFlow::for_context(ctx);
        if w.start(1, &mut flow, &fc, DUE) == Action::Wait && flow.holds_answer() {
            held += 1;
        }
    }
    assert_eq!(held, 1, "only the call that widened the entry is held");
    // New made-up sids, each a change: held up to the anonymous share of the holds.
    for ctx in 10_000..10_000 + MAX_HELD {
        let fc = at(
            "gw.example.com",
            "GET",
            &format!("/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid=s{ctx}"),
            &[],
        );
        let mut flow = RequestFlow::for_context(ctx);
        if w.start(1, &mut flow, &fc, DUE) == Action::Wait && flow.holds_answer() {
            held += 1;
        }
    }
    assert!(held < MAX_HELD / 2, "{held} anonymous calls held");
    // A real end of a real session, on the same worker, within the same tick.
    let h = World::xhr(&jar);
    let mut lead = RequestFlow::for_context(1);
    let _ = callout(w.start(1, &mut lead, &h, DUE));
    let no = status_json(401, serde_json::json!({"error": "invalid_grant"}));
    let seen = lead.on_callout(&w.settings, &mut w.vms[1], &h, no, DUE, &mut w.rng);
    let seen_ended = matches!(&seen, Action::Respond(r) if r.status == 401);
    let later = w.quiet(0, &page, DUE - 2);
    assert!(
        !(seen_ended && served(&later)),
        "anonymous holds filled the table; the real end got its 401 unheld ({seen:?}) and \
         worker 0 then served the session"
    );
}

/// A cookie revoked long ago (its logout's hold long over, every worker knows) is held again
/// whenever anything changed the revocation list in the last ticks: `revoked_recently` is the
/// whole list's generation, not this session's entry. Anyone can change the list (an
/// anonymous front-channel call), so whoever keeps a copy of a logged-out cookie can have any
/// number of requests held (up to MAX_HELD per worker), and a busy gateway's logouts hold
/// every stale cookie's refusal 200-300 ms.
#[test]
fn a_cookie_revoked_long_ago_is_held_because_someone_else_logged_out() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    let logout = at(
        "gw.example.com",
        "GET",
        "/pa/oidc/logout",
        &[BROWSER, ("cookie", &jar.header())],
    );
    let mut op = |_: &envoy_wam::http::Callout| ok_json(serde_json::json!({}));
    let _ = respond(w.run(1, &mut RequestFlow::new(), &logout, NOW + 1, &mut op));
    for t in 0..6 {
        w.tick(0, NOW + 2 + t);
        w.tick(1, NOW + 2 + t);
    }
    // Refused at once: the logout is old news.
    let mut before = RequestFlow::for_context(9);
    assert!(matches!(
        w.start(1, &mut before, &page, NOW + 10),
        Action::Respond(_)
    ));
    // Someone else's front-channel logout (anonymous, made up).
    let path = "/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid=someone-else";
    let _ = w.start(
        1,
        &mut RequestFlow::for_context(10),
        &at("gw.example.com", "GET", path, &[]),
        NOW + 10,
    );
    let mut flow = RequestFlow::for_context(11);
    let a = w.start(1, &mut flow, &page, NOW + 10);
    assert!(
        !flow.holds_answer(),
        "the refusal of a cookie revoked 9 s ago is held because another sid was listed ({a:?})"
    );
}
