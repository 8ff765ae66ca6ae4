//! Property tests for `canonical::canonicalize`: the wire form the gateway forwards must be
//! served by each common kind of backend as the very path the policy matched on.
//!
//! Each model below takes the wire path and returns the path that server would serve (None
//! where it would refuse the request). They are deliberately small and written from each
//! server's documented order of steps, not from the canonicaliser's code: where a model
//! and `canonicalize` disagree, the gateway's decision and the backend's resource differ.

use envoy_wam::canonical::{canonicalize, PathError};
use proptest::prelude::*;

/// Percent-decodes once. `separators` is set when a decoded byte is '/' or '\\', which the
/// servlet model refuses and the others treat as separators.
fn percent_decode(s: &str) -> Option<(Vec<u8>, bool)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut separators = false;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            let d = u8::from_str_radix(hex, 16).ok()?;
            separators |= d == b'/' || d == b'\\';
            out.push(d);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some((out, separators))
}

fn merge_slashes(p: &str) -> String {
    let mut out = String::new();
    for c in p.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// RFC 3986 §5.2.4 remove_dot_segments, transcribed step by step, except that a `..` with
/// nothing left to remove is refused (None) instead of ignored: nginx answers 400 there.
fn remove_dot_segments(path: &str) -> Option<String> {
    let mut input = path.to_string();
    let mut output = String::new();
    fn pop_last(output: &mut String) -> Option<()> {
        let i = output.rfind('/')?;
        output.truncate(i);
        Some(())
    }
    while !input.is_empty() {
        if input.starts_with("../") {
            input.drain(..3);
        } else if input.starts_with("./") {
            input.drain(..2);
        } else if input.starts_with("/./") {
            input.replace_range(..3, "/");
        } else if input == "/." {
            input = "/".into();
        } else if input.starts_with("/../") {
            input.replace_range(..4, "/");
            pop_last(&mut output)?;
        } else if input == "/.." {
            input = "/".into();
            pop_last(&mut output)?;
        } else if input == "." || input == ".." {
            input.clear();
        } else {
            let start = usize::from(input.starts_with('/'));
            let end = input[start..].find('/').map_or(input.len(), |i| i + start);
            output.push_str(&input[..end]);
            input.drain(..end);
        }
    }
    Some(output)
}

/// A Java servlet container, as Tomcat's CoyoteAdapter does it.
fn servlet(wire: &str) -> Option<String> {
    // Path parameters are removed from the still-encoded path, segment by segment: so for
    // Tomcat a %3B is data, and `..;x` is a `..`.
    let stripped: Vec<&str> = wire
        .split('/')
        .map(|s| s.split(';').next().unwrap_or(""))
        .collect();
    // Then decoded once; an encoded '/' or '\\' is refused (ALLOW_ENCODED_SLASH off).
    let (bytes, separators) = percent_decode(&stripped.join("/"))?;
    if separators {
        return None;
    }
    let mut p = String::from_utf8(bytes).ok()?;
    // Then normalised by string replacement, as normalize() does: a trailing "/." or "/.."
    // gets a '/' so the loops below see it, "//" merged, "/./" dropped, "/../" eats the
    // segment before it, and one at the root makes the request invalid.
    if p.ends_with("/.") || p.ends_with("/..") {
        p.push('/');
    }
    while let Some(i) = p.find("//") {
        p.remove(i);
    }
    while let Some(i) = p.find("/./") {
        p.replace_range(i..i + 2, "");
    }
    while let Some(i) = p.find("/../") {
        if i == 0 {
            return None;
        }
        let j = p[..i].rfind('/')?;
        p.replace_range(j..i + 3, "");
    }
    Some(p)
}

/// nginx with its defaults (merge_slashes on).
fn nginx(wire: &str) -> Option<String> {
    // Decoded first; an encoded '/' becomes a separator like any other, ';' is plain data.
    let (bytes, _) = percent_decode(wire)?;
    let p = String::from_utf8(bytes).ok()?;
    // Then slashes merged and dot segments resolved; a `..` above the root is a 400.
    remove_dot_segments(&merge_slashes(&p))
}

/// IIS serving from a Windows file system.
fn iis(wire: &str) -> Option<String> {
    // Decoded first; '\\' is a separator like '/'.
    let (bytes, _) = percent_decode(wire)?;
    let p = String::from_utf8(bytes).ok()?.replace('\\', "/");
    // Windows drops trailing dots and spaces from a name; a segment that is exactly '.' or
    // '..' is a relative step, not a name, and is left for dot resolution.
    let trimmed: Vec<&str> = p
        .split('/')
        .map(|s| match s {
            "." | ".." => s,
            _ => s.trim_end_matches(['.', ' ']),
        })
        .collect();
    let resolved = remove_dot_segments(&merge_slashes(&trimmed.join("/")))?;
    // Names are case-insensitive: compare lowercased.
    Some(resolved.to_lowercase())
}

/// Paths built from the pieces that make readings diverge; separators and backslashes are
/// rarer, or most paths would be refused before anything interesting happens.
fn stress_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => Just("/"),
        6 => Just("."),
        3 => Just(";"),
        3 => Just("%2e"),
        3 => Just("%2E"),
        1 => Just("%2f"),
        1 => Just("%5c"),
        2 => Just("%3b"),
        2 => Just("%25"),
        6 => Just("a"),
        3 => Just("A"),
        2 => Just(" "),
        2 => Just("%20"),
        3 => Just("..;"),
        1 => Just("\\"),
        2 => Just(".."),
        1 => Just("%c3%a9"),
        1 => Just("%3f"),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| format!("/{}", pieces.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    /// The wire form is a fixed point: forwarding it through a second gateway changes
    /// nothing, and it is never refused.
    #[test]
    fn wire_is_idempotent(p in stress_path()) {
        if let Ok(c) = canonicalize(&p) {
            let again = canonicalize(&c.wire);
            prop_assert!(again.is_ok(), "{p:?} -> wire {:?} refused: {:?}", c.wire, again);
            if let Ok(again) = again {
                prop_assert_eq!(&again.decoded, &c.decoded);
                prop_assert_eq!(&again.wire, &c.wire);
                prop_assert_eq!(&again.iis_trimmed, &c.iis_trimmed);
                prop_assert!(!again.changed());
            }
        }
    }

    /// Every backend model serves the wire form as the decoded path. For IIS, when a
    /// segment has trailing dots or spaces, it serves `iis_trimmed`: the router refuses the
    /// request unless `decoded` and `iis_trimmed` route to the same resource.
    #[test]
    fn backends_serve_what_the_policy_matched(p in stress_path()) {
        if let Ok(c) = canonicalize(&p) {
            prop_assert!(c.decoded.starts_with('/'));
            prop_assert_eq!(servlet(&c.wire), Some(c.decoded.to_string()), "servlet, raw {:?}", p);
            prop_assert_eq!(nginx(&c.wire), Some(c.decoded.to_string()), "nginx, raw {:?}", p);
            let iis_expected = c.iis_trimmed.as_deref().unwrap_or(&c.decoded).to_lowercase();
            prop_assert_eq!(iis(&c.wire), Some(iis_expected), "iis, raw {:?}", p);
        }
    }

    /// Never panics, whatever the input; anything accepted has a wire form within the cap.
    #[test]
    fn never_panics(s in any::<String>(), t in "[/%.;aAfF0-9 \\\\]{0,40}") {
        for raw in [s.clone(), format!("/{s}"), t.clone(), format!("/{t}")] {
            if let Ok(c) = canonicalize(&raw) {
                prop_assert!(c.wire.len() <= envoy_wam::canonical::MAX_PATH_LEN);
                prop_assert!(c.wire.is_ascii());
            }
        }
    }
}

/// The motivating attack: the servers read the raw path three ways, and its wire form one.
#[test]
fn raw_attack_is_read_differently_but_its_wire_form_is_not() {
    let raw = "/public/%2e%2e;/admin/";
    assert_eq!(servlet(raw).as_deref(), Some("/admin/"));
    assert_eq!(nginx(raw).as_deref(), Some("/public/..;/admin/"));
    let c = canonicalize(raw).unwrap();
    assert_eq!(c.decoded, "/admin/");
    assert_eq!(c.wire, "/admin/");
    assert!(c.changed());
    for model in [servlet, nginx, iis] {
        assert_eq!(model(&c.wire).as_deref(), Some("/admin/"));
    }
    assert_eq!(
        canonicalize("/public/..\\admin"),
        Err(PathError::Backslash),
        "IIS would climb on it"
    );
}

/// The models themselves, on paths whose readings are known.
#[test]
fn models_read_known_paths() {
    assert_eq!(servlet("/a;x/b/..;/c").as_deref(), Some("/a/c"));
    assert_eq!(servlet("/a/%2f").as_deref(), None);
    assert_eq!(servlet("/..;/a").as_deref(), None);
    assert_eq!(servlet("/a/b/..").as_deref(), Some("/a/"));
    assert_eq!(nginx("/a//b/../c").as_deref(), Some("/a/c"));
    assert_eq!(nginx("/a%2f..%2fb").as_deref(), Some("/b"));
    assert_eq!(nginx("/..").as_deref(), None);
    assert_eq!(iis("/A/B.%20/..").as_deref(), Some("/a/"));
    assert_eq!(iis("/a\\..\\b").as_deref(), Some("/b"));
    assert_eq!(iis("/a/..../b").as_deref(), Some("/a/b"));
}

/// The cost per request: `cargo test --release --test canonical -- --ignored --nocapture`.
/// Paths already canonical must take one scan and no allocation (borrowed results).
#[test]
#[ignore]
fn bench_canonicalize() {
    use std::hint::black_box;
    use std::time::Instant;
    let paths = [
        "/app/page",
        "/app/static/js/main.3f2a1b9c.chunk.js",
        "/app/a%20b/c",
        "/public/%2e%2e;/admin/",
    ];
    const N: u32 = 1_000_000;
    for path in paths {
        let start = Instant::now();
        let mut changed = 0u32;
        for _ in 0..N {
            if let Ok(c) = canonicalize(black_box(path)) {
                changed += u32::from(c.changed());
            }
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
        println!("{path:45} {ns:7.1} ns/call (changed {changed})");
    }
}
