//! Front-channel logout is anonymous: any page can load its URL with made-up sids. A flood of
//! them must stay cheap (no republishing per request), keep the log bounded, and never undo a
//! real logout (front-channel or gateway) by pushing its entry out of the revocation list.

use envoy_wam::flow::{HeaderList, LogLine, RequestFlow};
use envoy_wam::http::Action;
use envoy_wam::http::LocalResponse;
use envoy_wam::revocation::{SharedStore, LIST_KEY};
use serde_json::Value;

mod common;
use common::*;
#[path = "common/life.rs"]
mod life;
use life::*;

/// A revocation list of 40 entries: a front-channel share of 10.
fn small_list() -> Value {
    config(|c| {
        c["session"]["revocation_list_entries"] = 40.into();
        c["session"]["validate_interval_s"] = 0.into();
        c["op"]["revocation_endpoint"] = Value::Null;
    })
}

fn front(sid: &str) -> HeaderList {
    let path = format!("/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid={sid}");
    at("gw.example.com", "GET", &path, &[])
}

/// A front-channel logout on worker `vm`: the answer (an accepted one is held until worker
/// `vm` has ticked three times) and the lines it logged.
fn frontchannel(w: &mut World, vm: usize, sid: &str, now: u64) -> (LocalResponse, Vec<LogLine>) {
    let mut flow = RequestFlow::new();
    let h = front(sid);
    let mut action = w.start(vm, &mut flow, &h, now);
    let mut log = flow.take_log();
    if action == Action::Wait && flow.holds_answer() {
        for _ in 0..3 {
            log.extend(w.vms[vm].on_tick(&w.settings, now));
        }
        assert!(!std::mem::take(&mut w.vms[vm].woken).is_empty());
        action = w.wake(vm, &mut flow, &h, now);
    }
    (respond(action), log)
}

/// Both workers' ticks; their lines.
fn tick_both(w: &mut World, now: u64) -> Vec<LogLine> {
    (0..2)
        .filter_map(|vm| w.vms[vm].on_tick(&w.settings, now))
        .collect()
}

/// Whether worker `vm` refuses the jar's session: a page request is sent to sign in again, or
/// that answer is held (the logout is a moment old; no tick runs here).
fn refused(w: &mut World, vm: usize, jar: &Jar, now: u64) -> bool {
    let mut flow = RequestFlow::new();
    match w.start(vm, &mut flow, &World::page(jar, &[]), now) {
        Action::Respond(r) => r.status == 302,
        Action::Wait => flow.holds_answer(),
        _ => false,
    }
}

#[test]
fn a_frontchannel_logout_is_shared_by_the_tick_not_by_its_request() {
    let mut w = World::new(&small_list());
    let jar = w.login(0, NOW);
    let (mut flow, h) = (RequestFlow::new(), front(OP_SID));
    assert_eq!(w.start(1, &mut flow, &h, NOW + 1), Action::Wait);
    // This worker refuses the session at once; nothing is written to shared data yet.
    assert!(refused(&mut w, 1, &jar, NOW + 1));
    assert!(w.store.load(LIST_KEY).is_none());
    w.tick(0, NOW + 1);
    assert!(!refused(&mut w, 0, &jar, NOW + 1));
    // Worker 1's tick publishes; worker 0 learns it on its next one.
    w.tick(1, NOW + 1);
    assert!(w.store.load(LIST_KEY).is_some());
    w.tick(0, NOW + 2);
    assert!(refused(&mut w, 0, &jar, NOW + 2));
    // The OP's page gets its answer at worker 1's third tick: the other worker has ticked
    // since the publish, so a copy of the cookie is refused everywhere by then.
    let r = respond(w.released_by_ticks(1, &mut flow, &h, NOW + 2));
    assert_eq!(r.status, 200);
}

#[test]
fn a_flood_of_made_up_sids_is_refused_and_undoes_no_logout() {
    let mut w = World::new(&small_list());
    let alice = w.login(0, NOW);
    let mut bob = Jar::default();
    let r = w.login_with(
        1,
        &mut bob,
        NOW,
        |c| {
            c["sub"] = "bob".into();
            c["sid"] = "op-sid-2".into();
        },
        tokens("at-2", "rt-2"),
        None,
    );
    assert_eq!(r.status, 302);
    // Bob logs out at the gateway; the OP ends alice's session by front-channel.
    let h = at(
        "gw.example.com",
        "GET",
        "/pa/oidc/logout",
        &[BROWSER, ("cookie", &bob.header())],
    );
    assert_eq!(respond(w.quiet(1, &h, NOW + 1)).status, 302);
    assert_eq!(frontchannel(&mut w, 0, OP_SID, NOW + 1).0.status, 200);
    // A sid longer than any session keeps can end no session.
    assert_eq!(
        frontchannel(&mut w, 0, &"y".repeat(300), NOW + 1).0.status,
        400
    );

    // 2,000 made-up sids of the longest kind, on both workers, ticking as they go.
    let (mut accepted, mut refusals, mut lines) = (0, 0, Vec::new());
    for i in 0..2000u64 {
        let now = NOW + 2 + i / 100;
        let sid = format!("{i:04}{}", "f".repeat(252));
        let (r, log) = frontchannel(&mut w, (i % 2) as usize, &sid, now);
        match r.status {
            200 => accepted += 1,
            503 => {
                refusals += 1;
                let retry: u64 = r.header_value("retry-after").unwrap().parse().unwrap();
                assert!(retry > 0 && retry <= 8 * 3600 + 1, "{retry}");
                assert_eq!(r.header_value("cache-control"), Some("no-store"));
            }
            other => panic!("status {other}"),
        }
        lines.extend(
            log.into_iter()
                .filter(|l| !l.message.starts_with("front-channel logout:")),
        );
        if i % 10 == 9 {
            lines.extend(tick_both(&mut w, now));
        }
    }
    // The share (10, alice's among them) fills and then everything is refused, and counted.
    // (Each worker counts what it holds: before a tick brings the other's entries, both may
    // accept; the union is cut back to the earliest 10.)
    assert!(accepted < 2 * 10, "{accepted} accepted");
    assert_eq!(accepted + refusals, 2000);
    let counted: u64 = w.vms.iter().map(|vm| vm.revoked.unverified_refused()).sum();
    assert_eq!(counted, refusals);
    // The log: a few warnings per worker and window of 60 s, the rest counted.
    assert!(
        lines.len() <= 2 * 5 + 2,
        "{} lines: {lines:#?}",
        lines.len()
    );
    assert!(lines
        .iter()
        .any(|l| l.message.starts_with("front-channel logout refused")));

    // Both logouts hold on both workers.
    lines.extend(tick_both(&mut w, NOW + 30));
    for vm in 0..2 {
        // The share of front-channel entries, and bob's gateway logout.
        assert_eq!(w.vms[vm].revoked.len(), 10 + 1);
        assert!(
            refused(&mut w, vm, &alice, NOW + 30),
            "alice on worker {vm}"
        );
        assert!(refused(&mut w, vm, &bob, NOW + 30), "bob on worker {vm}");
    }
    // Once the window is over, the lines held back are told.
    let (r, log) = frontchannel(&mut w, 0, "one-more", NOW + 100);
    assert_eq!(r.status, 503);
    assert_eq!(log.len(), 1);
    assert!(
        log[0].message.contains("revocation-list lines suppressed"),
        "{log:?}"
    );
}
