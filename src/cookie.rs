//! Reading the `Cookie` request header and writing `Set-Cookie` (RFC 6265).

use crate::request::HeaderSource;

/// Iterates `name=value` pairs of a `Cookie` header, skipping malformed pieces.
pub fn pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|piece| {
        let (name, value) = piece.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some((name, value))
    })
}

/// The value of the first cookie called `name`.
pub fn get<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    pairs(header).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The value of the first cookie called `name` in any of the request's `Cookie` headers (a
/// client may send several).
pub fn find<'r>(request: &'r dyn HeaderSource, name: &str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .filter(|(n, _)| *n == "cookie")
        .filter_map(|(_, v)| std::str::from_utf8(v).ok())
        .find_map(|c| get(c, name))
}

/// The `Cookie` header to send upstream without the gateway's own cookies, or `None` when
/// nothing is left. Returns `Some(original)`-equivalent only when something was removed, so the
/// caller can skip rewriting the header in the common case.
pub fn without(header: &str, is_ours: impl Fn(&str) -> bool) -> Option<Option<String>> {
    if !pairs(header).any(|(n, _)| is_ours(n)) {
        return None;
    }
    let mut kept = String::with_capacity(header.len());
    for piece in header.split(';').map(str::trim) {
        let name = piece.split_once('=').map_or(piece, |(n, _)| n.trim());
        if piece.is_empty() || is_ours(name) {
            continue;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(piece);
    }
    Some((!kept.is_empty()).then_some(kept))
}

/// One `Cookie` header built from several (`values`, as the client sent them): pieces named
/// `is_ours`, and pieces that are not UTF-8, are left out. `None` when nothing needs to change
/// (one header, all UTF-8, none of ours, and not `joined`); `Some(None)` when nothing is left.
/// One pass: this runs on every request that carries cookies.
pub fn without_in_all<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    joined: bool,
    is_ours: impl Fn(&str) -> bool,
) -> Option<Option<String>> {
    let mut kept = String::new();
    let mut dropped = false;
    // `true` when the piece was left out.
    let mut keep = |piece: &str| {
        // What JavaScript's trim() removes too: Node's `cookie` reads `\u{a0}site=x` and
        // `\u{feff}site=x` as `site`.
        let js_space = |c: char| c.is_whitespace() || c == '\u{feff}';
        let piece = piece.trim_matches(js_space);
        if piece.is_empty() {
            return false;
        }
        if is_ours(
            piece
                .split_once('=')
                .map_or(piece, |(n, _)| n.trim_matches(js_space)),
        ) {
            return true;
        }
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(piece);
        false
    };
    for value in values {
        match std::str::from_utf8(value) {
            // The common case: split on the str, which finds `;` with memchr.
            Ok(text) => {
                for piece in text.split(';') {
                    dropped |= keep(piece);
                }
            }
            Err(_) => {
                for piece in value.split(|c| *c == b';') {
                    dropped |= std::str::from_utf8(piece).map_or(true, &mut keep);
                }
            }
        }
    }
    if !dropped && !joined {
        return None;
    }
    Some((!kept.is_empty()).then_some(kept))
}

/// Attributes shared by the gateway's cookies.
#[derive(Debug, Clone)]
pub struct CookieAttributes<'a> {
    pub path: &'a str,
    pub domain: Option<&'a str>,
    pub secure: bool,
    pub same_site: &'a str,
}

/// A `Set-Cookie` value. `max_age` of 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, attrs: &CookieAttributes<'_>) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 96);
    out.push_str(name);
    out.push('=');
    out.push_str(value);
    out.push_str("; Path=");
    out.push_str(attrs.path);
    if let Some(domain) = attrs.domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    out.push_str("; Max-Age=");
    out.push_str(&max_age.to_string());
    out.push_str("; HttpOnly");
    if attrs.secure {
        out.push_str("; Secure");
    }
    out.push_str("; SameSite=");
    out.push_str(attrs.same_site);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_leniently() {
        let h = "a=1; PA.wam=tok.en.sig ;; junk; b=\"q\"; =x";
        assert_eq!(get(h, "PA.wam"), Some("tok.en.sig"));
        assert_eq!(get(h, "b"), Some("q"));
        assert_eq!(get(h, "junk"), None);
        assert_eq!(get(h, "c"), None);
        assert_eq!(pairs(h).count(), 3);
    }

    #[test]
    fn removes_only_our_cookies() {
        let ours = |n: &str| n == "PA.wam" || n.starts_with("PA.wam.txn.");
        assert_eq!(without("a=1; b=2", ours), None);
        assert_eq!(
            without("a=1; PA.wam=x; b=2; PA.wam.txn.abc=y", ours),
            Some(Some("a=1; b=2".into()))
        );
        assert_eq!(without("PA.wam=x", ours), Some(None));
        assert_eq!(without("PA.wam=x; PA.wam=y", ours), Some(None));
    }

    #[test]
    fn cleans_every_cookie_header() {
        let ours = |n: &str| n == "PA.wam";
        let one: Vec<&[u8]> = vec![b"a=1; b=2"];
        assert_eq!(without_in_all(one.iter().copied(), false, ours), None);
        let two: Vec<&[u8]> = vec![b"a=1", b"PA.wam=x; b=2"];
        assert_eq!(
            without_in_all(two.iter().copied(), true, ours),
            Some(Some("a=1; b=2".into()))
        );
        let bad: Vec<&[u8]> = vec![b"a=1; PA.wam=x\xff; c=\xfe; PA.wam=y"];
        assert_eq!(
            without_in_all(bad.iter().copied(), false, ours),
            Some(Some("a=1".into()))
        );
        let only: Vec<&[u8]> = vec![b" PA.wam=x ", b"PA.wam=y"];
        assert_eq!(without_in_all(only.iter().copied(), true, ours), Some(None));
    }

    #[test]
    fn set_cookie_attributes() {
        let attrs = CookieAttributes {
            path: "/",
            domain: Some("example.com"),
            secure: true,
            same_site: "Lax",
        };
        assert_eq!(
            set_cookie("PA.wam", "v", 60, &attrs),
            "PA.wam=v; Path=/; Domain=example.com; Max-Age=60; HttpOnly; Secure; SameSite=Lax"
        );
        let attrs = CookieAttributes {
            domain: None,
            secure: false,
            ..attrs
        };
        assert_eq!(
            set_cookie("x", "", 0, &attrs),
            "x=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
        );
    }
}
