use super::*;
use crate::login::tests::CountingEntropy;
use crate::request::HeaderList;
use crate::session::CookieType;

const NOW: u64 = 1_800_000_000;
const STATE: &str = "state-of-this-login";
const BINDING: &str = "AAAAAAAAAAAAAAAAAAAAAA";

fn keys() -> KeyRing {
    KeyRing::with_type(&[("k1".to_string(), vec![7u8; 32])], CookieType::Encrypted)
}

fn sealed(post: &PreservedPost) -> String {
    post.seal(&keys(), STATE, BINDING, NOW, 600, &mut CountingEntropy(1))
        .unwrap()
}

fn body_of(r: &LocalResponse) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

#[test]
fn round_trip() {
    let body = b"title=Hello+world&amount=12%2C50&note=caf%C3%A9+%26+cr%C3%A8me&empty=&flag";
    let post = PreservedPost::new("/orders/new?x=1", body, 8192).unwrap();
    assert_eq!(
        post.pairs(),
        [
            ("title".to_string(), "Hello world".to_string()),
            ("amount".into(), "12,50".into()),
            ("note".into(), "café & crème".into()),
            ("empty".into(), "".into()),
            ("flag".into(), "".into()),
        ]
    );
    let token = sealed(&post);
    assert!(!token.contains("Hello"), "the body is encrypted");
    let opened = PreservedPost::open(&keys(), &token, STATE, Some(BINDING), NOW + 10).unwrap();
    assert_eq!(opened, post);
    assert_eq!(opened.path, "/orders/new?x=1");
}

#[test]
fn another_login_expired_or_other_keys_are_refused() {
    let post = PreservedPost::new("/f", b"a=1", 100).unwrap();
    let token = sealed(&post);
    assert!(PreservedPost::open(&keys(), &token, "another-state", Some(BINDING), NOW).is_none());
    assert!(PreservedPost::open(&keys(), &token, "", Some(BINDING), NOW).is_none());
    // Another browser's binding, or none.
    assert!(PreservedPost::open(&keys(), &token, STATE, Some("other"), NOW).is_none());
    assert!(PreservedPost::open(&keys(), &token, STATE, None, NOW).is_none());
    assert!(PreservedPost::open(&keys(), &token, STATE, Some(BINDING), NOW + 600).is_none());
    let other = KeyRing::with_type(&[("k1".to_string(), vec![8u8; 32])], CookieType::Encrypted);
    assert!(PreservedPost::open(&other, &token, STATE, Some(BINDING), NOW).is_none());
    // Another purpose's key cannot open it: a session cookie is never a preserved post.
    assert!(keys().open(SealPurpose::Session, &token).is_none());
}

#[test]
fn tampered_is_refused() {
    let post = PreservedPost::new("/f", b"a=1&b=2", 100).unwrap();
    let token = sealed(&post);
    let mut changed = 0;
    for i in 0..token.len() {
        let c = token.as_bytes()[i];
        if c == b'.' {
            continue;
        }
        let flipped = if c == b'A' { 'B' } else { 'A' };
        let bad = format!("{}{}{}", &token[..i], flipped, &token[i + 1..]);
        match PreservedPost::open(&keys(), &bad, STATE, Some(BINDING), NOW) {
            // Only the padding bits of a segment's last character may change nothing.
            Some(p) => assert_eq!(p, post),
            None => changed += 1,
        }
    }
    assert!(changed > token.len() / 2);
    for junk in ["", "x", "a.b.c.d.e", "....", &format!("{token}.x")] {
        assert!(PreservedPost::open(&keys(), junk, STATE, Some(BINDING), NOW).is_none());
    }
}

#[test]
fn names_and_values_are_escaped() {
    let body = b"%22%3E%3Cscript%3Ex%3C%2Fscript%3E=%27%3Cb%3E%26amp%3B%22&ok=%22";
    let post = PreservedPost::new("/a?b=1&c=\"2\"", body, 1000).unwrap();
    let page = body_of(&post.page());
    assert!(page.contains(
        "<input type=\"hidden\" name=\"&quot;&gt;&lt;script&gt;x&lt;/script&gt;\" \
         value=\"&#39;&lt;b&gt;&amp;amp;&quot;\">"
    ));
    assert!(page.contains("name=\"ok\" value=\"&quot;\">"));
    assert!(page.contains("action=\"/a?b=1&amp;c=&quot;2&quot;\""));
    assert_eq!(page.matches("<script>").count(), 1, "only ours");
    assert!(!page.contains("</script>x"));
}

#[test]
fn the_page_posts_the_form_and_its_policy_allows_only_its_script() {
    let post = PreservedPost::new("/form", b"submit=1&action=x", 100).unwrap();
    let r = post.page();
    assert_eq!(r.status, 200);
    assert_eq!(r.header_value("location"), None);
    let page = body_of(&r);
    assert!(page.contains(
        "<form method=\"post\" enctype=\"application/x-www-form-urlencoded\" \
         accept-charset=\"UTF-8\" action=\"/form\">"
    ));
    assert!(page.contains("<noscript>") && page.contains("<button type=\"submit\">"));
    let script = page
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .unwrap()
        .0;
    assert_eq!(script, SCRIPT);
    // The hash a browser computes over the exact script text.
    let hash = STANDARD.encode(hmac_sha256::Hash::hash(script.as_bytes()));
    let csp = r.header_value("content-security-policy").unwrap();
    assert_eq!(
        csp,
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; form-action 'self'; \
             base-uri 'none'; frame-ancestors 'none'"
        )
    );
    assert_eq!(r.header_value("cache-control"), Some("no-store"));
    assert_eq!(r.header_value("referrer-policy"), Some("no-referrer"));
    assert_eq!(r.header_value("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header_value("content-type"),
        Some("text/html; charset=utf-8")
    );
}

#[test]
fn bodies_a_browser_would_not_post_unchanged_are_refused() {
    for body in [
        &b"a=%FF"[..],
        b"a=%C3",
        b"%FF=1",
        b"a=\xff",
        b"a=%00",
        b"a=x%0Ay",
        b"a=x%0Dy",
        b"a=%0A",
        b"a=x%0A%0Dy",
        b"=value",
        b"_charset_=latin1",
        b"_CHARSET_=UTF-8",
        b"a%0A=1",
    ] {
        assert_eq!(
            PreservedPost::new("/f", body, 100),
            Err(NotKept::NotExact),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    // CRLF is what a browser posts for a line break: it survives.
    let post = PreservedPost::new("/f", b"text=one%0D%0Atwo&x=%E2%82%AC%F0%9F%98%80", 100).unwrap();
    assert_eq!(post.pairs()[0].1, "one\r\ntwo");
    assert_eq!(post.pairs()[1].1, "€😀");
}

#[test]
fn size_limits() {
    let body = vec![b'a'; 101];
    assert_eq!(PreservedPost::new("/f", &body, 100), Err(NotKept::TooLarge));
    assert!(PreservedPost::new("/f", &body[..100], 100).is_ok());
    let settings = crate::config::tests::sample();
    // Small posts are one cookie; large ones chunks; past ten chunks, none.
    let small = PreservedPost::new("/f", b"a=1", 100).unwrap();
    let cookies = set_cookies(&settings, settings.default_web(), 1, &sealed(&small)).unwrap();
    assert_eq!(cookies.len(), 1);
    assert!(cookies[0].starts_with("PA.wam.txn.post.1="));
    let big: Vec<u8> = b"a=".iter().copied().chain(vec![b'x'; 9000]).collect();
    let big = PreservedPost::new("/f", &big, 10_000).unwrap();
    let cookies = set_cookies(&settings, settings.default_web(), 2, &sealed(&big)).unwrap();
    assert_eq!(cookies.len(), 4);
    assert!(cookies[0].starts_with("PA.wam.txn.post.2.0=4~"));
    assert!(cookies.iter().all(|c| c.len() < 4000
        && c.contains("; Path=/pa/oidc/cb;")
        && c.contains("; Max-Age=600;")
        && c.contains("HttpOnly")
        && c.contains("SameSite=Lax")));
    let huge: Vec<u8> = b"a=".iter().copied().chain(vec![b'x'; 40_000]).collect();
    let huge = PreservedPost::new("/f", &huge, 50_000).unwrap();
    assert_eq!(
        set_cookies(&settings, settings.default_web(), 0, &sealed(&huge)),
        Err(NotKept::TooManyCookies)
    );
}

#[test]
fn cookies_round_trip_and_are_cleared() {
    let settings = crate::config::tests::sample();
    let big: Vec<u8> = b"a=".iter().copied().chain(vec![b'y'; 5000]).collect();
    let post = PreservedPost::new("/f", &big, 10_000).unwrap();
    let token = sealed(&post);
    let cookies = set_cookies(&settings, settings.default_web(), 1, &token).unwrap();
    let header: Vec<&str> = cookies
        .iter()
        .map(|c| c.split(';').next().unwrap())
        .collect();
    let header = format!("other=1; {}", header.join("; "));
    let request = HeaderList::new([(":path", "/pa/oidc/cb"), ("cookie", header.as_str())]);
    let (value, clear) = read(settings.default_web(), &request, 1);
    assert_eq!(value.as_deref(), Some(token.as_str()));
    assert_eq!(clear.len(), cookies.len());
    assert!(clear
        .iter()
        .all(|c| c.contains("=; Path=/pa/oidc/cb; Max-Age=0;")));
    // Another slot's cookies are not this slot's.
    let (value, clear) = read(settings.default_web(), &request, 0);
    assert_eq!((value, clear.len()), (None, 0));
}

#[test]
fn content_types() {
    for ok in [
        "application/x-www-form-urlencoded",
        "Application/X-WWW-Form-Urlencoded",
        "application/x-www-form-urlencoded; charset=UTF-8",
        "application/x-www-form-urlencoded;charset=\"utf-8\"",
    ] {
        assert!(is_urlencoded(ok), "{ok}");
    }
    for bad in [
        "multipart/form-data; boundary=x",
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded; charset=iso-8859-1",
        "application/x-www-form-urlencodedx",
        "",
    ] {
        assert!(!is_urlencoded(bad), "{bad}");
    }
}
