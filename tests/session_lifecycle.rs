//! A session's life through the public, sans-IO API, on two workers sharing one store: the
//! encrypted (and chunked) cookie a sign-in gives, UserInfo at sign-in, the session's access
//! token upstream, and the ways a session ends: back-channel, front-channel and gateway logout.

use envoy_wam::flow::RequestFlow;
use envoy_wam::http::{Action, Callout, CalloutResult};
use jwt_simple::prelude::*;
use serde_json::{json, Value};

mod common;
use common::*;
#[path = "common/life.rs"]
mod life;
use life::*;

// ---- 1. Sign-in with an encrypted cookie ----------------------------------------------------

#[test]
fn login_gives_an_encrypted_cookie_that_forwards_with_identity_and_no_gateway_cookie() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    assert_eq!(jar.session_names(), ["PA.wam"]);
    let value = jar.session_value();
    let parts: Vec<&str> = value.split('.').collect();
    assert_eq!(parts.len(), 5, "a compact JWE");
    assert_eq!(parts[1], "", "dir: no encrypted key");
    for secret in ["alice", "rt-1", "at-1", OP_SID, "staff"] {
        assert!(!value.contains(secret), "{secret} readable in the cookie");
    }
    let s = w.decode(&value, NOW + 1).unwrap();
    assert_eq!(s.sub, "alice");
    assert_eq!(s.created_at, NOW);
    assert_eq!(s.op.op_sid.as_deref(), Some(OP_SID));
    assert_eq!(s.op.refresh_token.as_deref(), Some("rt-1"));
    assert_eq!(s.op.validated_at, NOW);
    assert!(
        s.op.id_token.is_some(),
        "a small ID token is kept for id_token_hint"
    );
    assert_eq!(s.op.access_token, None, "nothing needs the access token");

    // The transaction cookies were cleared; other cookies and both workers.
    let mut with_theirs = jar.clone();
    with_theirs.0.insert("theirs".into(), "1".into());
    with_theirs.0.insert("PA.wam.9".into(), "junk".into());
    for vm in 0..2 {
        let f = forward(w.quiet(vm, &World::page(&with_theirs, &[]), NOW + 10));
        assert_eq!(upstream(&f, "x-wam-user"), Some(Some("alice".into())));
        assert_eq!(
            upstream(&f, "x-wam-email"),
            Some(Some("alice@example.com".into()))
        );
        assert_eq!(
            upstream(&f, "x-wam-groups"),
            Some(Some("staff,admins".into()))
        );
        assert_eq!(upstream(&f, "cookie"), Some(Some("theirs=1".into())));
        assert!(f.response_cookies.is_empty());
    }
}

fn many_groups(n: usize) -> Value {
    let groups: Vec<String> = (0..n).map(|i| format!("grp-{i:04}-example")).collect();
    json!(groups)
}

#[test]
fn a_large_session_is_chunked_and_round_trips_with_no_chunk_upstream() {
    let mut w = World::new(&config(|_| {}));
    let mut jar = Jar::default();
    let groups = many_groups(300);
    let g = groups.clone();
    let r = w.login_with(
        0,
        &mut jar,
        NOW,
        |c| c["groups"] = g,
        tokens("at-1", "rt-1"),
        None,
    );
    assert_eq!(r.status, 302);
    let names = jar.session_names();
    assert!(names.len() >= 3 && names.len() <= 5, "{names:?}");
    assert_eq!(names[0], "PA.wam.0");
    assert!(!names.contains(&"PA.wam"));
    for set in set_cookies(&r).iter().filter(|c| c.starts_with("PA.wam.")) {
        assert!(set.len() < 4000, "chunk of {} bytes", set.len());
    }
    let s = w.decode(&jar.session_value(), NOW).unwrap();
    assert_eq!(s.claims["groups"], groups);

    jar.0.insert("other".into(), "x".into());
    for vm in 0..2 {
        let f = forward(w.quiet(vm, &World::page(&jar, &[]), NOW + 5));
        let header = upstream(&f, "x-wam-groups").unwrap().unwrap();
        assert!(header.starts_with("grp-0000-example,grp-0001-example"));
        assert_eq!(header.matches("-example").count(), 300);
        assert_eq!(upstream(&f, "cookie"), Some(Some("other=x".into())));
    }
}

#[test]
fn a_session_too_large_for_its_chunks_refuses_the_login() {
    let mut w = World::new(&config(|c| c["session"]["max_cookie_chunks"] = 2.into()));
    let mut jar = Jar::default();
    let g = many_groups(300);
    let r = w.login_with(
        0,
        &mut jar,
        NOW,
        |c| c["groups"] = g,
        tokens("at-1", "rt-1"),
        None,
    );
    assert_eq!(r.status, 500);
    let body = String::from_utf8_lossy(&r.body);
    assert!(body.contains("too large"), "{body}");
    assert!(jar.session_names().is_empty(), "{:?}", jar.0);
    assert!(
        !jar.0
            .keys()
            .any(|n| n.starts_with("PA.wam.txn.") && n != "PA.wam.txn.next"),
        "the transaction is consumed: {:?}",
        jar.0
    );
}

#[test]
fn renewal_and_relogin_clear_stale_chunks() {
    let mut w = World::new(&config(|c| c["session"]["validate_interval_s"] = 0.into()));
    let mut jar = w.login(0, NOW);
    // The browser kept chunks of an earlier, larger session.
    jar.0.insert("PA.wam.0".into(), "2~old".into());
    jar.0.insert("PA.wam.1".into(), "old".into());
    let f = forward(w.quiet(0, &World::page(&jar, &[]), NOW + 59));
    assert!(f.response_cookies.is_empty(), "not due for renewal");
    let f = forward(w.quiet(1, &World::page(&jar, &[]), NOW + 61));
    let sets = &f.response_cookies;
    let names: Vec<(&str, bool)> = sets
        .iter()
        .map(|s| (pair(s).0, s.contains("Max-Age=0;")))
        .collect();
    assert_eq!(
        names,
        [("PA.wam", false), ("PA.wam.0", true), ("PA.wam.1", true)]
    );
    jar.apply(sets);
    assert_eq!(jar.session_names(), ["PA.wam"]);

    // A large session replacing a small one clears the single cookie.
    let g = many_groups(300);
    let r = w.login_with(
        0,
        &mut jar,
        NOW + 100,
        |c| c["groups"] = g,
        tokens("at-1", "rt-1"),
        None,
    );
    let cleared: Vec<&str> = set_cookies(&r)
        .iter()
        .filter(|s| s.contains("Max-Age=0;") && s.starts_with("PA.wam="))
        .map(|_| "PA.wam")
        .collect();
    assert_eq!(cleared, ["PA.wam"]);
    assert!(!jar.session_names().contains(&"PA.wam"));
}

// ---- 2. Back-channel logout ------------------------------------------------------------------

fn jwks_op(w: &World) -> impl FnMut(&Callout) -> CalloutResult {
    let jwks = w.op.jwks();
    move |c: &Callout| {
        assert_eq!(c.path, "/jwks");
        CalloutResult::Response {
            status: 200,
            body: jwks.clone(),
        }
    }
}

#[test]
fn backchannel_logout_ends_the_session_on_both_workers() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    forward(w.quiet(1, &World::page(&jar, &[]), NOW + 1));
    let token = w.logout_token(logout_claims(NOW + 10, "jti-1"));
    let r = respond(w.backchannel(0, &token, NOW + 10, &mut no_op));
    assert_eq!(r.status, 200);
    assert_eq!(r.header_value("cache-control"), Some("no-store"));

    let page = World::page(&jar, &[]);
    assert_eq!(respond(w.quiet(0, &page, NOW + 11)).status, 302);
    assert_eq!(respond(w.quiet(0, &World::xhr(&jar), NOW + 11)).status, 401);
    // Worker 1 learns of it on its tick.
    w.tick(1, NOW + 11);
    let r = respond(w.quiet(1, &page, NOW + 11));
    assert_eq!(r.status, 302);
    assert!(r
        .header_value("location")
        .unwrap()
        .starts_with("https://op.example.com/auth?"));
}

/// The OP gets its 200 once the other worker has taken the logout in: an OP (or a test suite)
/// that checks the session right after finds it ended on every worker.
#[test]
fn the_backchannel_200_waits_until_every_worker_refuses_the_session() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    forward(w.quiet(1, &page, NOW + 1));
    let token = w.logout_token(logout_claims(NOW + 10, "jti-held"));
    let (mut flow, h) = (RequestFlow::new(), World::backchannel_post());
    let a = w.backchannel_in(0, &mut flow, &token, NOW + 10);
    assert_eq!((a, flow.holds_answer()), (Action::Wait, true));
    forward(w.quiet(1, &page, NOW + 10));
    w.tick(0, NOW + 10);
    w.tick(1, NOW + 10);
    assert_eq!(respond(w.quiet(1, &page, NOW + 10)).status, 302);
    let r = respond(w.released_by_ticks(0, &mut flow, &h, NOW + 10));
    assert_eq!(r.status, 200);
}

/// The wasm build reads the time at its ticks: a worker whose clock is a second behind the one
/// that opened a session must still end it when the OP logs it out (CI caught a front-channel
/// logout that ended nothing, the session stamped a second after the logout).
#[test]
fn a_logout_ends_a_session_another_worker_stamped_a_second_later() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW + 10);
    let page = World::page(&jar, &[]);
    let path = format!("/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid={OP_SID}");
    let r = respond(w.quiet(1, &at("gw.example.com", "GET", &path, &[]), NOW + 9));
    assert_eq!(r.status, 200);
    assert_eq!(respond(w.quiet(1, &page, NOW + 10)).status, 302);

    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW + 10);
    let page = World::page(&jar, &[]);
    let token = w.logout_token(logout_claims(NOW + 10, "jti-late"));
    let mut op = jwks_op(&w);
    assert_eq!(
        respond(w.backchannel(1, &token, NOW + 9, &mut op)).status,
        200
    );
    assert_eq!(respond(w.quiet(1, &page, NOW + 10)).status, 302);
}

#[test]
fn backchannel_logout_by_sub_spares_sessions_opened_after_it() {
    let mut w = World::new(&config(|_| {}));
    let before = w.login(0, NOW);
    let mut claims = logout_claims(NOW + 10, "jti-sub");
    claims.as_object_mut().unwrap().remove("sid");
    let r = respond(w.backchannel(1, &w.logout_token(claims), NOW + 10, &mut jwks_op(&w)));
    assert_eq!(r.status, 200);
    // A sign-in after the logout (beyond the clock skew the OP's iat is given).
    let skew = w.settings.clock_skew_s;
    let after = w.login(0, NOW + 11 + skew);
    let t = NOW + 12 + skew;
    w.tick(0, t);
    assert_eq!(
        respond(w.quiet(0, &World::page(&before, &[]), t)).status,
        302
    );
    forward(w.quiet(0, &World::page(&after, &[]), t));
    forward(w.quiet(1, &World::page(&after, &[]), t));
}

/// Each token the spec says to refuse: 400, and no session ends.
#[test]
fn backchannel_refuses_bad_logout_tokens_and_changes_nothing() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let t = NOW + 10;
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = logout_claims(t, "jti-bad");
        f(c.as_object_mut().unwrap());
        c
    };
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let hs256 = {
        let claims: JWTClaims<serde_json::Map<String, Value>> =
            serde_json::from_value(logout_claims(t, "jti-hs")).unwrap();
        HS256Key::from_bytes(CLIENT_SECRET.as_bytes())
            .authenticate(claims)
            .unwrap()
    };
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "logout+jwt"})),
        b64(&logout_claims(t, "jti-none"))
    );
    let id_token_typ = {
        let claims: JWTClaims<serde_json::Map<String, Value>> =
            serde_json::from_value(logout_claims(t, "jti-typ")).unwrap();
        let opts = HeaderOptions {
            signature_type: Some("JWT".into()),
            ..Default::default()
        };
        w.op.key.sign_with_options(claims, &opts).unwrap()
    };
    let cases: Vec<(&str, String)> = vec![
        ("HS256 with the client secret", hs256),
        ("alg none", none),
        ("typ JWT", id_token_typ),
        (
            "wrong aud",
            w.logout_token(edit(&|c| drop(c.insert("aud".into(), "other".into())))),
        ),
        (
            "wrong iss",
            w.logout_token(edit(&|c| {
                drop(c.insert("iss".into(), "https://evil".into()))
            })),
        ),
        (
            "no events",
            w.logout_token(edit(&|c| drop(c.remove("events")))),
        ),
        (
            "other event",
            w.logout_token(edit(&|c| {
                drop(c.insert("events".into(), json!({"urn:x": {}})))
            })),
        ),
        (
            "nonce",
            w.logout_token(edit(&|c| drop(c.insert("nonce".into(), "n".into())))),
        ),
        (
            "no sid, no sub",
            w.logout_token(edit(&|c| {
                c.remove("sid");
                c.remove("sub");
            })),
        ),
        ("no jti", w.logout_token(edit(&|c| drop(c.remove("jti"))))),
        (
            "too old",
            w.logout_token(edit(&|c| drop(c.insert("iat".into(), (t - 3600).into())))),
        ),
        (
            "signed by another key",
            Op::new()
                .key
                .sign_with_options(
                    serde_json::from_value::<JWTClaims<serde_json::Map<String, Value>>>(
                        logout_claims(t, "jti-k"),
                    )
                    .unwrap(),
                    &HeaderOptions {
                        signature_type: Some("logout+jwt".into()),
                        ..Default::default()
                    },
                )
                .unwrap(),
        ),
    ];
    for (why, token) in &cases {
        for vm in 0..2 {
            let mut op = jwks_op(&w);
            let r = respond(w.backchannel(vm, token, t, &mut op));
            assert_eq!(r.status, 400, "{why} on worker {vm}");
            assert_eq!(r.header_value("content-type"), Some("application/json"));
        }
    }
    for vm in 0..2 {
        w.tick(vm, t + 1);
        assert!(w.vms[vm].revoked.is_empty(), "{why:?}", why = vm);
        forward(w.quiet(vm, &World::page(&jar, &[]), t + 1));
    }
}

#[test]
fn a_replayed_logout_token_is_refused_on_either_worker() {
    let mut w = World::new(&config(|_| {}));
    let token = w.logout_token(logout_claims(NOW, "jti-once"));
    let r = respond(w.backchannel(0, &token, NOW, &mut jwks_op(&w)));
    assert_eq!(r.status, 200);
    let r = respond(w.backchannel(0, &token, NOW + 1, &mut no_op));
    assert_eq!(r.status, 400);
    // The other worker, before its tick: it reads the shared list when a token arrives.
    let r = respond(w.backchannel(1, &token, NOW + 1, &mut jwks_op(&w)));
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("already used"));
}

#[test]
fn backchannel_takes_only_a_form_post() {
    let mut w = World::new(&config(|_| {}));
    for (method, ct, status) in [
        ("GET", "application/x-www-form-urlencoded", 405),
        ("PUT", "application/x-www-form-urlencoded", 405),
        ("POST", "application/json", 400),
    ] {
        let h = at(
            "gw.example.com",
            method,
            "/pa/oidc/backchannel",
            &[("content-type", ct)],
        );
        let r = respond(w.quiet(0, &h, NOW));
        assert_eq!(r.status, status, "{method} {ct}");
        if status == 405 {
            assert_eq!(r.header_value("allow"), Some("POST"));
        }
    }
    // A body over the limit, or without exactly one token.
    let h = at(
        "gw.example.com",
        "POST",
        "/pa/oidc/backchannel",
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    for body in [
        envoy_wam::http::Body::TooLarge,
        envoy_wam::http::Body::Complete(b"logout_token=a&logout_token=b".to_vec()),
        envoy_wam::http::Body::Complete(b"other=1".to_vec()),
        envoy_wam::http::Body::Complete(b"logout_token=".to_vec()),
        envoy_wam::http::Body::Complete(vec![0xff, 0xfe, b'&', b'=']),
    ] {
        let mut flow = envoy_wam::flow::RequestFlow::new();
        assert!(matches!(
            w.start(0, &mut flow, &h, NOW),
            Action::ReadBody { .. }
        ));
        let r = respond(flow.on_body(&w.settings, &mut w.vms[0], &h, body, NOW, &mut w.rng));
        assert_eq!(r.status, 400);
    }
    // A body the host could not read (the upstream answered the held request first): the OP
    // is told to retry, never that the logout was taken.
    let mut flow = envoy_wam::flow::RequestFlow::new();
    assert!(matches!(
        w.start(0, &mut flow, &h, NOW),
        Action::ReadBody { .. }
    ));
    let body = envoy_wam::http::Body::Unreadable;
    let r = respond(flow.on_body(&w.settings, &mut w.vms[0], &h, body, NOW, &mut w.rng));
    assert_eq!(r.status, 503);
}

#[test]
fn a_logout_token_with_a_key_not_yet_loaded_fetches_the_jwks_first() {
    let mut w = World::new(&config(|_| {}));
    let token = w.logout_token(logout_claims(NOW, "jti-keys"));
    let r = respond(w.backchannel(1, &token, NOW, &mut jwks_op(&w)));
    assert_eq!(r.status, 200);
    assert_eq!(w.callouts.len(), 1);
    assert_eq!(w.callouts[0].path, "/jwks");
    // The OP's JWKS cannot be fetched: 503, so that the OP retries; nothing revoked.
    let mut w = World::new(&config(|_| {}));
    let token = w.logout_token(logout_claims(NOW, "jti-keys2"));
    let r = respond(w.backchannel(0, &token, NOW, &mut |_: &Callout| CalloutResult::Failed));
    assert_eq!(r.status, 503);
    assert!(w.vms[0].revoked.is_empty());
}

// ---- 3. Front-channel logout ----------------------------------------------------------------

#[test]
fn frontchannel_logout_ends_the_op_session() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let page = World::page(&jar, &[]);
    for bad in [
        "/pa/oidc/frontchannel?sid=op-sid-1".to_string(),
        format!("/pa/oidc/frontchannel?iss=https%3A%2F%2Fevil&sid={OP_SID}"),
        "/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid=".to_string(),
    ] {
        let r = respond(w.quiet(0, &at("gw.example.com", "GET", &bad, &[]), NOW + 1));
        assert_eq!(r.status, 400, "{bad}");
    }
    // Another OP session of the same user is not this one.
    let other = "/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid=op-sid-2";
    let r = respond(w.quiet(0, &at("gw.example.com", "GET", other, &[]), NOW + 1));
    assert_eq!(r.status, 200);
    forward(w.quiet(0, &page, NOW + 2));

    let path = format!("/pa/oidc/frontchannel?iss=https%3A%2F%2Fop.example.com&sid={OP_SID}");
    let r = respond(w.quiet(1, &at("gw.example.com", "GET", &path, &[]), NOW + 3));
    assert_eq!(r.status, 200);
    assert_eq!(r.header_value("cache-control"), Some("no-store"));
    assert_eq!(respond(w.quiet(1, &page, NOW + 3)).status, 302);
    forward(w.quiet(0, &page, NOW + 3));
    // Worker 1 publishes on its tick, worker 0 learns on its own (tests/frontchannel_flood.rs).
    w.tick(1, NOW + 4);
    w.tick(0, NOW + 4);
    assert_eq!(respond(w.quiet(0, &page, NOW + 4)).status, 302);
}

// ---- 4. Gateway logout ----------------------------------------------------------------------

#[test]
fn gateway_logout_revokes_the_copy_and_the_refresh_token() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let copy = jar.clone();
    let id_token = w
        .decode(&jar.session_value(), NOW)
        .unwrap()
        .op
        .id_token
        .unwrap();
    let h = at(
        "gw.example.com",
        "GET",
        "/pa/oidc/logout",
        &[BROWSER, ("cookie", &jar.header())],
    );
    let mut revoked = Vec::new();
    let r = respond(w.run(
        0,
        &mut envoy_wam::flow::RequestFlow::new(),
        &h,
        NOW + 5,
        &mut |c: &Callout| {
            revoked.push((
                c.path.clone(),
                form(c),
                callout_header(c, "authorization").map(String::from),
            ));
            ok_json(json!({}))
        },
    ));
    assert_eq!(revoked.len(), 1);
    let (path, body, auth) = &revoked[0];
    assert_eq!(path, "/token/revocation");
    assert_eq!(body["token"], "rt-1");
    assert_eq!(body["token_type_hint"], "refresh_token");
    assert!(auth.as_deref().is_some_and(|a| a.starts_with("Basic ")));

    assert_eq!(r.status, 302);
    let location = url::Url::parse(r.header_value("location").unwrap()).unwrap();
    assert_eq!(location.path(), "/session/end");
    let q: std::collections::BTreeMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(q["id_token_hint"], id_token);
    assert_eq!(q["client_id"], "pa_wam");
    assert_eq!(q["post_logout_redirect_uri"], "https://gw.example.com/");
    assert!(!location.as_str().contains("rt-1"));
    let sets = set_cookies(&r);
    assert!(sets
        .iter()
        .any(|s| s.starts_with("PA.wam=;") && s.contains("Max-Age=0;")));

    // The copy is refused at once on this worker, and after its tick on the other.
    assert_eq!(
        respond(w.quiet(0, &World::page(&copy, &[]), NOW + 6)).status,
        302
    );
    w.tick(1, NOW + 6);
    assert_eq!(respond(w.quiet(1, &World::xhr(&copy), NOW + 6)).status, 401);
}

#[test]
fn gateway_logout_still_logs_out_when_the_op_cannot_revoke() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let h = at(
        "gw.example.com",
        "GET",
        "/pa/oidc/logout",
        &[BROWSER, ("cookie", &jar.header())],
    );
    let mut flow = envoy_wam::flow::RequestFlow::new();
    let r = respond(w.run(0, &mut flow, &h, NOW + 5, &mut |_: &Callout| {
        CalloutResult::TimedOut
    }));
    assert_eq!(r.status, 302);
    let log: Vec<String> = flow.take_log().into_iter().map(|l| l.message).collect();
    assert!(
        log.iter().any(|l| l.contains("could not be revoked")),
        "{log:?}"
    );
    assert!(log.iter().all(|l| !l.contains("rt-1")), "{log:?}");
    assert_eq!(
        respond(w.quiet(0, &World::page(&jar, &[]), NOW + 6)).status,
        302
    );
}

#[test]
fn a_cross_site_logout_asks_and_ends_nothing() {
    let mut w = World::new(&config(|_| {}));
    let jar = w.login(0, NOW);
    let h = at(
        "gw.example.com",
        "GET",
        "/pa/oidc/logout",
        &[
            BROWSER,
            ("cookie", &jar.header()),
            ("sec-fetch-site", "cross-site"),
        ],
    );
    let r = respond(w.quiet(0, &h, NOW + 5));
    assert_eq!(r.status, 200);
    assert!(set_cookies(&r).is_empty());
    forward(w.quiet(0, &World::page(&jar, &[]), NOW + 6));
}

// ---- 6. UserInfo at sign-in, the access token upstream ---------------------------------------

#[test]
fn userinfo_about_another_subject_refuses_the_login() {
    let mut w = World::new(&config(|c| c["session"]["userinfo"] = true.into()));
    let mut jar = Jar::default();
    let r = w.login_with(
        0,
        &mut jar,
        NOW,
        |_| {},
        tokens("at-1", "rt-1"),
        Some(json!({"sub": "mallory", "email": "m@example.com"})),
    );
    assert_eq!(r.status, 403);
    assert!(jar.session_names().is_empty());
    let me = w.callouts.iter().find(|c| c.path == "/me").unwrap();
    assert_eq!(callout_header(me, "authorization"), Some("Bearer at-1"));
}

#[test]
fn userinfo_claims_are_merged_at_login() {
    let mut w = World::new(&config(|c| c["session"]["userinfo"] = true.into()));
    let mut jar = Jar::default();
    let r = w.login_with(
        0,
        &mut jar,
        NOW,
        |_| {},
        tokens("at-1", "rt-1"),
        Some(json!({"sub": "alice", "email": "alice@new.example.com", "groups": ["ops"]})),
    );
    assert_eq!(r.status, 302);
    let f = forward(w.quiet(1, &World::page(&jar, &[]), NOW + 1));
    assert_eq!(
        upstream(&f, "x-wam-email"),
        Some(Some("alice@new.example.com".into()))
    );
    assert_eq!(upstream(&f, "x-wam-groups"), Some(Some("ops".into())));
    let s = w.decode(&jar.session_value(), NOW).unwrap();
    assert_eq!(
        s.op.access_token.as_deref(),
        Some("at-1"),
        "kept for UserInfo"
    );
}

#[test]
fn the_sessions_access_token_goes_upstream_instead_of_the_clients() {
    let mut w = World::new(&config(|c| {
        c["session"]["keep_access_token"] = true.into();
        c["session"]["forward_access_token"] = true.into();
    }));
    let jar = w.login(0, NOW);
    let h = World::page(&jar, &[("authorization", "Bearer forged")]);
    let f = forward(w.quiet(1, &h, NOW + 1));
    assert_eq!(
        upstream(&f, "authorization"),
        Some(Some("Bearer at-1".into()))
    );
    let auths = f
        .request_headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .count();
    assert_eq!(auths, 1);
    // Without a session nothing is vouched for, and no token is made up.
    let anon = at("gw.example.com", "GET", "/app/page", &[XHR]);
    assert_eq!(respond(w.quiet(0, &anon, NOW + 1)).status, 401);
}
