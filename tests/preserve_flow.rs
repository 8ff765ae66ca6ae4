//! Request preservation through the public, sans-IO API: a form post that needs a sign-in is
//! read, kept in cookies for the callback, and posted again by the page the callback answers.

use envoy_wam::flow::{HeaderList, RequestFlow};
use envoy_wam::http::{Action, Body, CalloutResult, LocalResponse};
use serde_json::{json, Value};

mod common;
use common::*;

fn config(preserve_post_bytes: u64) -> Value {
    merge(
        base_config(),
        json!({
            "session": {"preserve_post_bytes": preserve_post_bytes},
            "identity_headers": [{"header": "X-WAM-User", "claim": "sub"}]
        }),
    )
}

const FORM: &str = "item=book&qty=2&note=%3Cb%3E+%22hi%22+%26+%27bye%27";
const URLENCODED: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A form submission by a browser, from a page of the gateway's own origin.
fn form_post(path: &str, extra: &[(&str, &str)]) -> HeaderList {
    let mut headers = vec![
        ("accept", "text/html,application/xhtml+xml"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("origin", "https://gw.example.com"),
    ];
    headers.extend_from_slice(extra);
    head("POST", path, &headers)
}

fn set_cookies(r: &LocalResponse) -> Vec<&str> {
    r.headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect()
}

fn pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap()
}

fn logged(flow: &mut RequestFlow) -> String {
    flow.take_log()
        .iter()
        .map(|l| l.message.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `state` and `nonce` of the authorization redirect.
fn login_params(r: &LocalResponse) -> (String, String) {
    assert_eq!(r.status, 302);
    let url = url::Url::parse(r.header_value("location").unwrap()).unwrap();
    assert!(url.as_str().starts_with("https://op.example.com/auth?"));
    let get = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    (get("state"), get("nonce"))
}

/// Comes back to the callback of the login with `state` and `nonce`, carrying `cookies`, and
/// answers its token and JWKS callouts; the gateway's final answer and its log.
fn callback(
    gw: &mut Gateway,
    op: &Op,
    state: &str,
    nonce: &str,
    cookies: &str,
) -> (LocalResponse, String) {
    let mut flow = RequestFlow::new();
    let h = head(
        "GET",
        &format!("/pa/oidc/cb?code=c&state={state}"),
        &[("accept", "text/html"), ("cookie", cookies)],
    );
    let c = callout(gw.request_in(&mut flow, &h));
    assert_eq!(c.path, "/token");
    let id_token = op.sign(json!({
        "iss": ISSUER, "sub": "alice", "aud": "pa_wam", "exp": NOW + 300, "iat": NOW,
        "nonce": nonce
    }));
    let tokens = CalloutResult::Response {
        status: 200,
        body: json!({"access_token": "at", "token_type": "Bearer", "id_token": id_token})
            .to_string()
            .into_bytes(),
    };
    let r = match gw.answer(&mut flow, &h, tokens) {
        Action::Callout(c) => {
            assert_eq!(c.path, "/jwks");
            let keys = CalloutResult::Response {
                status: 200,
                body: op.jwks(),
            };
            respond(gw.answer(&mut flow, &h, keys))
        }
        other => respond(other),
    };
    (r, logged(&mut flow))
}

/// Starts a sign-in with a kept form post; the redirect and its log.
fn post_and_keep(gw: &mut Gateway, h: &HeaderList, body: &str) -> (LocalResponse, String) {
    let mut flow = RequestFlow::new();
    assert_eq!(
        gw.request_in(&mut flow, h),
        Action::ReadBody { max: 8192 },
        "a form post that needs a sign-in has its body read"
    );
    let r = respond(gw.body(&mut flow, h, Body::Complete(body.as_bytes().to_vec())));
    (r, logged(&mut flow))
}

#[test]
fn a_form_post_is_kept_through_the_sign_in_and_posted_again() {
    let op = Op::new();
    let mut gw = Gateway::with(&config(8192));
    let len = FORM.len().to_string();
    let h = form_post(
        "/orders/new?x=1",
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=UTF-8",
            ),
            ("content-length", &len),
        ],
    );
    let (r, log) = post_and_keep(&mut gw, &h, FORM);
    assert!(log.contains("form post kept"), "{log}");
    assert!(!log.contains("book"), "never the body: {log}");
    let (state, nonce) = login_params(&r);
    let cookies = set_cookies(&r);
    assert_eq!(
        cookies.len(),
        4,
        "login, counter, post, binding: {cookies:?}"
    );
    let post = cookies[2];
    assert!(post.starts_with("PA.wam.txn.post.0="), "{post}");
    assert!(
        post.ends_with("; Path=/pa/oidc/cb; Max-Age=600; HttpOnly; Secure; SameSite=Lax"),
        "{post}"
    );
    assert!(!post.contains("book"), "the body is encrypted");

    let jar: Vec<&str> = cookies.iter().map(|c| pair(c)).collect();
    let (page, log) = callback(&mut gw, &op, &state, &nonce, &jar.join("; "));
    assert_eq!(page.status, 200, "{}", String::from_utf8_lossy(&page.body));
    assert_eq!(page.header_value("location"), None);
    let csp = page.header_value("content-security-policy").unwrap();
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-")
            && csp.ends_with("'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.header_value("cache-control"), Some("no-store"));
    assert_eq!(page.header_value("referrer-policy"), Some("no-referrer"));
    assert_eq!(page.header_value("x-content-type-options"), Some("nosniff"));
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.contains("action=\"/orders/new?x=1\""), "{html}");
    for input in [
        "name=\"item\" value=\"book\"",
        "name=\"qty\" value=\"2\"",
        "name=\"note\" value=\"&lt;b&gt; &quot;hi&quot; &amp; &#39;bye&#39;\"",
    ] {
        assert!(html.contains(input), "{input} in {html}");
    }
    assert!(log.contains("posting the kept form again"), "{log}");
    let set = set_cookies(&page);
    let session = set.iter().find(|c| c.starts_with("PA.wam=")).unwrap();
    assert!(set.contains(
        &"PA.wam.txn.post.0=; Path=/pa/oidc/cb; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
    ));
    assert!(set.iter().any(|c| c.starts_with("PA.wam.txn.0=;")));

    // The page's post: the same origin's, with the new session cookie.
    let cookie = format!("theme=dark; {}", pair(session));
    let again = form_post("/orders/new?x=1", &[URLENCODED, ("cookie", &cookie)]);
    let f = forward(gw.request(&again));
    assert!(f
        .identity
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("x-wam-user") && v.as_deref() == Some("alice")));
}

#[test]
fn a_post_opens_only_for_its_own_sign_in_and_is_always_cleared() {
    let op = Op::new();
    let mut gw = Gateway::with(&config(8192));
    let h = form_post("/orders/new", &[URLENCODED]);
    let (first, _) = post_and_keep(&mut gw, &h, FORM);
    let kept = pair(set_cookies(&first)[2]).to_string();
    // Another sign-in in the same slot, from a plain page load.
    let r = respond(gw.request(&head(
        "GET",
        "/elsewhere",
        &[("accept", "text/html"), ("sec-fetch-mode", "navigate")],
    )));
    let (state, nonce) = login_params(&r);
    let txn = pair(set_cookies(&r)[0]).to_string();
    assert!(txn.starts_with("PA.wam.txn.0="));
    let (r, log) = callback(&mut gw, &op, &state, &nonce, &format!("{txn}; {kept}"));
    assert_eq!(r.status, 302, "no re-post of another sign-in's form");
    assert_eq!(r.header_value("location"), Some("/elsewhere"));
    assert!(log.contains("another sign-in's"), "{log}");
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("PA.wam.txn.post.0=; Path=/pa/oidc/cb; Max-Age=0")));

    // A sign-in the OP refused clears the kept post too.
    let (r, _) = post_and_keep(&mut gw, &h, FORM);
    let (state, _) = login_params(&r);
    let jar: Vec<&str> = set_cookies(&r).iter().map(|c| pair(c)).collect();
    let cb = head(
        "GET",
        &format!("/pa/oidc/cb?error=access_denied&state={state}"),
        &[("accept", "text/html"), ("cookie", &jar.join("; "))],
    );
    let r = respond(gw.request(&cb));
    assert_eq!(r.status, 401);
    assert!(set_cookies(&r)
        .iter()
        .any(|c| c.starts_with("PA.wam.txn.post.0=; Path=/pa/oidc/cb; Max-Age=0")));
}

/// The answer to `h` is a plain sign-in (no body read, no post cookie), with a log line that
/// says why.
fn plain_login(gw: &mut Gateway, h: &HeaderList, why: &str) {
    let mut flow = RequestFlow::new();
    let r = respond(gw.request_in(&mut flow, h));
    assert_eq!(r.status, 302, "{h:?}");
    assert_eq!(set_cookies(&r).len(), 2, "no post cookie: {h:?}");
    let log = logged(&mut flow);
    assert!(
        log.contains("form post not kept") && log.contains(why),
        "{log}"
    );
}

#[test]
fn other_bodies_sign_in_without_being_kept_and_the_log_says_why() {
    let mut gw = Gateway::with(&config(8192));
    plain_login(
        &mut gw,
        &form_post("/f", &[("content-type", "multipart/form-data; boundary=x")]),
        "content type",
    );
    plain_login(
        &mut gw,
        &form_post(
            "/f",
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=iso-8859-1",
            )],
        ),
        "content type",
    );
    plain_login(
        &mut gw,
        &form_post("/f", &[URLENCODED, ("content-length", "8193")]),
        "content-length",
    );
    let cross = head(
        "POST",
        "/f",
        &[
            ("accept", "text/html"),
            ("sec-fetch-mode", "navigate"),
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
            URLENCODED,
        ],
    );
    plain_login(&mut gw, &cross, "not sent from this origin");
    let unknown = head("POST", "/f", &[("accept", "text/html"), URLENCODED]);
    plain_login(&mut gw, &unknown, "not sent from this origin");
    let foreign = head(
        "POST",
        "/f",
        &[
            ("accept", "text/html"),
            ("origin", "https://evil.example"),
            URLENCODED,
        ],
    );
    plain_login(&mut gw, &foreign, "not sent from this origin");

    // Larger than the host let through, or not a form a browser posts again unchanged.
    for (body, why) in [
        (Body::TooLarge, "larger than session.preserve_post_bytes"),
        (Body::Complete(b"a=%FF".to_vec()), "not UTF-8 form fields"),
        (
            Body::Unreadable,
            "the upstream answered before the body came",
        ),
    ] {
        let h = form_post("/f", &[URLENCODED]);
        let mut flow = RequestFlow::new();
        assert_eq!(gw.request_in(&mut flow, &h), Action::ReadBody { max: 8192 });
        let r = respond(gw.body(&mut flow, &h, body));
        assert_eq!(r.status, 302);
        assert_eq!(set_cookies(&r).len(), 2);
        let log = logged(&mut flow);
        assert!(log.contains(why), "{log}");
    }
}

#[test]
fn posts_that_are_not_form_submissions_are_answered_as_before() {
    let mut gw = Gateway::with(&config(8192));
    for h in [
        head(
            "POST",
            "/api/orders",
            &[
                ("accept", "application/json"),
                ("content-type", "application/json"),
            ],
        ),
        form_post("/f", &[("content-type", "application/json")]),
        form_post("/f", &[]),
        head(
            "POST",
            "/f",
            &[
                ("accept", "text/html"),
                ("sec-fetch-mode", "cors"),
                ("sec-fetch-site", "same-origin"),
                URLENCODED,
            ],
        ),
    ] {
        let r = respond(gw.request(&h));
        assert_eq!(r.status, 401, "{h:?}");
    }
    // Preservation off: a form post gets what it always got.
    let mut gw = Gateway::with(&config(0));
    let r = respond(gw.request(&form_post("/f", &[URLENCODED])));
    assert_eq!(r.status, 401);
}

#[test]
fn a_large_post_is_kept_in_chunks() {
    let op = Op::new();
    let mut gw = Gateway::with(&config(8192));
    let body = format!("text={}", "x%0D%0A".repeat(1000));
    let h = form_post("/f", &[URLENCODED]);
    let (r, _) = post_and_keep(&mut gw, &h, &body);
    let (state, nonce) = login_params(&r);
    let cookies = set_cookies(&r);
    assert!(cookies.len() > 3, "chunked: {cookies:?}");
    assert!(cookies[2].starts_with("PA.wam.txn.post.0.0="));
    let jar: Vec<&str> = cookies.iter().map(|c| pair(c)).collect();
    let (page, _) = callback(&mut gw, &op, &state, &nonce, &jar.join("; "));
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body.clone()).unwrap();
    assert!(html.contains(&format!("name=\"text\" value=\"{}\"", "x\r\n".repeat(1000))));
    let cleared = set_cookies(&page)
        .into_iter()
        .filter(|c| c.starts_with("PA.wam.txn.post.0.") && c.contains("Max-Age=0"))
        .count();
    assert_eq!(
        cleared,
        cookies.len() - 3,
        "all but the login, counter and binding cookies"
    );
}

/// Login CSRF of a kept post: an attacker starts a sign-in with their own form post (any client
/// can send `Origin: https://gw.example.com`), then tosses its login and post cookies into the
/// victim's browser from a sibling subdomain (`Domain=example.com; Path=/pa/oidc/cb`) or over
/// plain HTTP, and sends the victim to the OP with the attacker's `state`. The victim signs in as
/// themselves; the attacker's form must not be posted again with the victim's session. Only a
/// `__Host-` cookie, which neither a sibling nor plain HTTP can set, ties a kept post to the
/// browser that sent it.
#[test]
fn a_post_tossed_into_another_browser_is_not_posted_again() {
    let op = Op::new();
    let mut gw = Gateway::with(&config(8192));
    let h = form_post("/transfer", &[URLENCODED]);
    let (r, _) = post_and_keep(&mut gw, &h, "to=mallory&amount=1000");
    let (state, nonce) = login_params(&r);
    let sets = set_cookies(&r);
    let binding = sets
        .iter()
        .find(|c| c.starts_with("__Host-"))
        .expect("the kept post is bound to a __Host- cookie");
    assert!(
        binding.starts_with("__Host-PA.wam.txn.bind=")
            && binding.ends_with("; Path=/; Max-Age=600; HttpOnly; Secure; SameSite=Lax"),
        "{binding}"
    );
    // What a sibling subdomain or a network attacker can plant: every cookie but the __Host- one.
    let tossed: Vec<&str> = sets
        .iter()
        .filter(|c| !c.starts_with("__Host-"))
        .map(|c| pair(c))
        .collect();
    // The victim's browser has a binding of its own (from a post of its own), or none.
    for victim in ["", "; __Host-PA.wam.txn.bind=victims-own-binding-value"] {
        let cookies = format!("{}{victim}", tossed.join("; "));
        let (r, log) = callback(&mut gw, &op, &state, &nonce, &cookies);
        assert_eq!(
            r.status,
            302,
            "no re-post: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header_value("location"), Some("/transfer"));
        assert!(log.contains("dropped"), "{log}");
    }
    // The browser that posted it gets it back.
    let jar: Vec<&str> = sets.iter().map(|c| pair(c)).collect();
    let (page, _) = callback(&mut gw, &op, &state, &nonce, &jar.join("; "));
    assert_eq!(page.status, 200);
    // The binding (a Path=/ cookie) never goes upstream.
    let session = set_cookies(&page)
        .into_iter()
        .find(|c| c.starts_with("PA.wam="))
        .unwrap();
    let cookie = format!("a=1; {}; {}", pair(session), pair(binding));
    let f = forward(gw.request(&head("GET", "/orders", &[("cookie", &cookie)])));
    let upstream: Vec<_> = f
        .request_headers
        .iter()
        .filter(|(n, _)| n == "cookie")
        .collect();
    assert_eq!(upstream, [&("cookie".to_string(), Some("a=1".to_string()))]);
}
