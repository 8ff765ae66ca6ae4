//! One canonical request path, computed by the filter itself.
//!
//! Policies match on a path, and the backend serves a path: when the two read the same bytes
//! differently, a request that the policy lets through as `/public/...` is served as `/admin/`
//! (`/public/%2e%2e;/admin/` on a servlet container: Envoy decodes `%2e` but leaves `..;` to
//! the backend, which drops `;` parameters and then climbs). Envoy's own normalisation
//! differs by version and option, so the filter does not rely on it: [`canonicalize`] turns
//! the path into one form that every common backend reads the same way, the policy matches
//! on its decoded form, and the gateway forwards its re-encoded (`wire`) form instead of the
//! raw one. Anything ambiguous that has no single safe reading is refused (400).
//!
//! Decisions, and why:
//! - Decoding comes first, so an encoded `%3B` is a `;` like a raw one and starts the
//!   segment's parameters. Tomcat strips parameters before decoding (for it `%3B` is data),
//!   Spring's and older Jetty's paths decode first; since the forwarded path has no `;` left
//!   at all, no backend can read it differently from the policy. The price is that a
//!   resource whose name holds a `;` cannot be reached through the gateway.
//! - A `..` above the root is refused, not clamped to the root as RFC 3986 would: no honest
//!   client sends one, and servers disagree on what it means.
//! - Empty segments are merged before dot segments are resolved (`/a//..` is `/`), as nginx
//!   and Tomcat do.
//! - The wire form is capped like the raw path, so the wire form of any accepted path is
//!   itself accepted ([`canonicalize`] is idempotent on it).

use std::borrow::Cow;
use std::fmt;

/// Longest raw path accepted, and longest wire form produced; larger requests are refused
/// rather than normalised at a cost the client chooses.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// Why a path is refused (the gateway answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not starting with '/': `*`, an absolute URI, an empty path.
    NotAbsolute,
    /// '%' not followed by two hex digits.
    BadEscape,
    /// `%2F` or `%5C`: a separator that some backends split on and others do not.
    EncodedSeparator,
    /// A raw '\\', which IIS and some Java containers read as '/'.
    Backslash,
    /// A control character or DEL, raw or encoded.
    Control,
    /// A `..` that climbs above the root.
    AboveRoot,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// Longer than [`MAX_PATH_LEN`] raw or re-encoded.
    TooLong,
}

impl PathError {
    /// A short snake_case code for logs and error pages.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::BadEscape => "bad_percent_escape",
            PathError::EncodedSeparator => "encoded_separator",
            PathError::Backslash => "backslash",
            PathError::Control => "control_character",
            PathError::AboveRoot => "path_above_root",
            PathError::NotUtf8 => "path_not_utf8",
            PathError::TooLong => "path_too_long",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

/// A request path (no query: the caller splits at the first '?') made canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    /// Percent-decoded, `;` parameters removed from every segment, dot segments resolved,
    /// slashes merged: what the policy matches on. Starts with '/'.
    pub decoded: Cow<'a, str>,
    /// The same path as it is sent upstream: `decoded` re-encoded where a byte is not an
    /// RFC 3986 pchar (plus '%' itself, and '?' '#' ';' '\\' etc.), e.g. "/a%20b".
    /// Borrowed == raw when nothing changed.
    pub wire: Cow<'a, str>,
    /// When a segment ends in '.' or ' ' (IIS trims trailing dots and spaces): the decoded
    /// path as IIS would resolve it after trimming, if that differs from `decoded`. The
    /// router then checks that both route to the same resource, else 400.
    pub iis_trimmed: Option<String>,
}

impl CanonicalPath<'_> {
    /// Whether the path sent upstream differs from the raw one (the `:path` header must be
    /// rewritten).
    pub fn changed(&self) -> bool {
        // Owned only when it differs: canonicalize() hands back the raw string otherwise.
        matches!(self.wire, Cow::Owned(_))
    }
}

/// Bytes that stay as they are on the wire: unreserved, sub-delims but ';', ':' '@' and the
/// separator '/'. Everything else is percent-encoded.
const WIRE_SAFE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
                    | b'/'
            );
        b += 1;
    }
    table
};

/// Makes `raw` canonical, or says why it is refused. Never panics.
pub fn canonicalize(raw: &str) -> Result<CanonicalPath<'_>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if already_canonical(raw.as_bytes()) {
        return Ok(CanonicalPath {
            decoded: Cow::Borrowed(raw),
            wire: Cow::Borrowed(raw),
            iis_trimmed: None,
        });
    }
    canonicalize_slow(raw)
}

/// The hot path: one scan, no allocation. True when the path is already in wire form with
/// nothing to decode, strip, merge or resolve, and no segment IIS would trim. Every byte
/// wire-safe excludes '%', ';', '\\', ' ', controls and non-ASCII; a '/' after '/' is an
/// empty segment; a segment ending in '.' covers `.`, `..` and IIS's trailing dots.
fn already_canonical(raw: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in raw {
        let safe = WIRE_SAFE.get(usize::from(b)).copied().unwrap_or(false);
        if !safe || (b == b'/' && (prev == b'/' || prev == b'.')) {
            return false;
        }
        prev = b;
    }
    prev != b'.'
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_ascii_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// Rules 2 and 3: refuses raw '\\', controls and bad escapes, and decodes once. Errors in raw
/// bytes (rule 2) take precedence over errors in decoded ones (rule 3) wherever they are.
fn decode_once(raw: &str) -> Result<String, PathError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut decoded_error = None;
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => return Err(PathError::Backslash),
            b if is_ascii_control(b) => return Err(PathError::Control),
            b'%' => {
                let hi = bytes.next().and_then(hex_value);
                let lo = bytes.next().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathError::BadEscape);
                };
                let d = (hi << 4) | lo;
                let error = match d {
                    b'/' | b'\\' => Some(PathError::EncodedSeparator),
                    d if is_ascii_control(d) => Some(PathError::Control),
                    _ => None,
                };
                decoded_error = decoded_error.or(error);
                out.push(d);
            }
            b => out.push(b),
        }
    }
    if let Some(error) = decoded_error {
        return Err(error);
    }
    let decoded = String::from_utf8(out).map_err(|_| PathError::NotUtf8)?;
    // C1 controls (U+0080..U+009F), raw or encoded: ASCII ones were refused above.
    if decoded.chars().any(char::is_control) {
        return Err(PathError::Control);
    }
    Ok(decoded)
}

/// A segment without its `;` parameters (`..;x` is `..`, `;x` is empty).
fn without_params(segment: &str) -> &str {
    segment.split_once(';').map_or(segment, |(head, _)| head)
}

fn iis_trim(segment: &str) -> &str {
    segment.trim_end_matches(['.', ' '])
}

/// Joins segments into a path; `trailing` adds a final '/' (the root is always "/").
fn join(segments: &[&str], trailing: bool) -> String {
    let mut path = String::with_capacity(segments.iter().map(|s| s.len() + 1).sum::<usize>() + 1);
    for segment in segments {
        path.push('/');
        path.push_str(segment);
    }
    if trailing || segments.is_empty() {
        path.push('/');
    }
    path
}

/// An upper-case hex digit (RFC 3986 §6.2.2.1) for a nibble.
fn hex_digit(nibble: u8) -> char {
    let n = nibble & 0x0f;
    char::from(if n < 10 { b'0' + n } else { b'A' + n - 10 })
}

/// Re-encodes a decoded path for the wire: every byte that is not wire-safe as %XX.
fn encode_wire(decoded: &str) -> String {
    let mut wire = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        if c.is_ascii() && WIRE_SAFE.get(c as usize).copied().unwrap_or(false) {
            wire.push(c);
            continue;
        }
        let mut buf = [0u8; 4];
        for &b in c.encode_utf8(&mut buf).as_bytes() {
            wire.push('%');
            wire.push(hex_digit(b >> 4));
            wire.push(hex_digit(b & 0x0f));
        }
    }
    wire
}

fn canonicalize_slow(raw: &str) -> Result<CanonicalPath<'_>, PathError> {
    let full = decode_once(raw)?;

    // Rules 4 and 5. Segments are split after decoding, which is safe because decoded '/' was
    // refused: the split is the same as on the raw path. Empty segments take no stack slot,
    // so they are merged before `..` climbs.
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in full.split('/').skip(1) {
        match without_params(segment) {
            "" | "." => trailing = true,
            ".." => {
                if stack.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing = true;
            }
            kept => {
                stack.push(kept);
                trailing = false;
            }
        }
    }
    let decoded = join(&stack, trailing);

    // Rule 6. Trimming never makes a new dot segment (a segment of only dots and spaces
    // trims to nothing), so merging the emptied segments is all that is left to redo; an
    // emptied last segment leaves its slash, as `/a/` + "" would.
    let iis_trimmed = if stack.iter().any(|s| s.ends_with(['.', ' '])) {
        let trimmed: Vec<&str> = stack
            .iter()
            .map(|s| iis_trim(s))
            .filter(|s| !s.is_empty())
            .collect();
        let last_emptied = stack.last().is_some_and(|s| iis_trim(s).is_empty());
        Some(join(&trimmed, trailing || last_emptied)).filter(|t| *t != decoded)
    } else {
        None
    };

    let wire = encode_wire(&decoded);
    if wire.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    Ok(CanonicalPath {
        decoded: borrow_if_same(raw, decoded),
        wire: borrow_if_same(raw, wire),
        iis_trimmed,
    })
}

fn borrow_if_same(raw: &str, computed: String) -> Cow<'_, str> {
    if computed == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(computed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> CanonicalPath<'_> {
        match canonicalize(raw) {
            Ok(p) => p,
            Err(e) => panic!("{raw:?} refused: {e}"),
        }
    }

    fn decoded(raw: &str) -> String {
        ok(raw).decoded.into_owned()
    }

    fn err(raw: &str) -> PathError {
        match canonicalize(raw) {
            Ok(p) => panic!("{raw:?} accepted as {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn not_absolute_and_too_long() {
        for raw in ["", "*", "http://x/", "a/b", "%2fa"] {
            assert_eq!(err(raw), PathError::NotAbsolute, "{raw:?}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert_eq!(err(&long), PathError::TooLong);
        let just = format!("/{}", "a".repeat(MAX_PATH_LEN - 1));
        assert!(canonicalize(&just).is_ok());
        // Within the cap raw, past it once re-encoded.
        let spaces = format!("/{}", " ".repeat(MAX_PATH_LEN / 2));
        assert_eq!(err(&spaces), PathError::TooLong);
    }

    #[test]
    fn raw_refusals() {
        assert_eq!(err("/a\\b"), PathError::Backslash);
        assert_eq!(err("/a\tb"), PathError::Control);
        assert_eq!(err("/a\x7f"), PathError::Control);
        assert_eq!(err("/a\u{85}"), PathError::Control);
        for raw in ["/%zz", "/%", "/a%2", "/%g0", "/%%41"] {
            assert_eq!(err(raw), PathError::BadEscape, "{raw:?}");
        }
        // Raw errors win over decoded ones, wherever they are.
        assert_eq!(err("/%2f/a\\b"), PathError::Backslash);
    }

    #[test]
    fn decoded_refusals() {
        for raw in ["/a%2Fb", "/a%2fb", "/a%5cb", "/a%5Cb", "/%2f%2e%2e"] {
            assert_eq!(err(raw), PathError::EncodedSeparator, "{raw:?}");
        }
        for raw in ["/%00", "/a%0d%0a", "/%7F", "/%c2%85"] {
            assert_eq!(err(raw), PathError::Control, "{raw:?}");
        }
        for raw in ["/%ff", "/%c3", "/%c3%28", "/%ed%a0%80"] {
            assert_eq!(err(raw), PathError::NotUtf8, "{raw:?}");
        }
    }

    #[test]
    fn decodes_once() {
        assert_eq!(decoded("/%61dmin"), "/admin");
        let p = ok("/a%20b");
        assert_eq!((&*p.decoded, &*p.wire), ("/a b", "/a%20b"));
        assert!(!p.changed());
        let p = ok("/a%25b");
        assert_eq!((&*p.decoded, &*p.wire), ("/a%b", "/a%25b"));
        // %252e is "%2e" as data, never a dot.
        let p = ok("/a/%252e%252e/b");
        assert_eq!((&*p.decoded, &*p.wire), ("/a/%2e%2e/b", "/a/%252e%252e/b"));
        let p = ok("/caf%c3%a9");
        assert_eq!((&*p.decoded, &*p.wire), ("/café", "/caf%C3%A9"));
        assert!(p.changed());
        assert_eq!(ok("/café").wire, "/caf%C3%A9");
    }

    #[test]
    fn strips_parameters() {
        assert_eq!(decoded("/admin;x/"), "/admin/");
        assert_eq!(decoded("/admin;/"), "/admin/");
        assert_eq!(decoded("/a/b;jsessionid=1"), "/a/b");
        assert_eq!(decoded("/a;x=1/b;y=2/c"), "/a/b/c");
        assert_eq!(decoded("/;x/admin"), "/admin");
        assert_eq!(decoded("/a/;x"), "/a/");
        // Decoding comes first: %3B is a ';' too.
        assert_eq!(decoded("/admin%3bx/"), "/admin/");
        assert_eq!(decoded("/a%3B/b"), "/a/b");
    }

    #[test]
    fn resolves_dot_segments() {
        assert_eq!(decoded("/public/%2e%2e;/admin/"), "/admin/");
        assert_eq!(decoded("/public/.%2e;/admin/"), "/admin/");
        assert_eq!(decoded("/public/%2e.;/admin/"), "/admin/");
        assert_eq!(decoded("/public/%2E%2E/admin"), "/admin");
        assert_eq!(decoded("/public/..;x/admin"), "/admin");
        assert_eq!(decoded("/a/./b"), "/a/b");
        assert_eq!(decoded("/a/%2e/b"), "/a/b");
        assert_eq!(decoded("/a/b/../c"), "/a/c");
        assert_eq!(decoded("/a//../b"), "/b");
        // Three dots is a name, not a dot segment.
        assert_eq!(decoded("/a/.../b"), "/a/.../b");
        for raw in [
            "/..",
            "/a/../..",
            "/%2e%2e",
            "/..;/a",
            "/a/..;/..;/b",
            "/./..",
        ] {
            assert_eq!(err(raw), PathError::AboveRoot, "{raw:?}");
        }
    }

    #[test]
    fn merges_slashes_and_keeps_trailing_slash() {
        assert_eq!(decoded("//admin"), "/admin");
        assert_eq!(decoded("/a///b//"), "/a/b/");
        assert_eq!(decoded("/admin/"), "/admin/");
        assert_eq!(decoded("/admin/."), "/admin/");
        assert_eq!(decoded("/a/b/.."), "/a/");
        assert_eq!(decoded("/a/b/../"), "/a/");
        assert_eq!(decoded("/a/.."), "/");
        assert_eq!(decoded("/."), "/");
        assert_eq!(decoded("//"), "/");
        assert_eq!(decoded("/"), "/");
    }

    #[test]
    fn iis_trimmed_forms() {
        let p = ok("/files/report.");
        assert_eq!(p.decoded, "/files/report.");
        assert_eq!(p.iis_trimmed.as_deref(), Some("/files/report"));
        assert!(!p.changed());
        assert_eq!(ok("/a. /b").iis_trimmed.as_deref(), Some("/a/b"));
        assert_eq!(ok("/a%2e%20/b").iis_trimmed.as_deref(), Some("/a/b"));
        assert_eq!(ok("/a/..../b").iis_trimmed.as_deref(), Some("/a/b"));
        assert_eq!(ok("/a/....").iis_trimmed.as_deref(), Some("/a/"));
        assert_eq!(ok("/a./").iis_trimmed.as_deref(), Some("/a/"));
        assert_eq!(ok("/...").iis_trimmed.as_deref(), Some("/"));
        assert_eq!(ok("/a.b/c").iis_trimmed, None);
        assert_eq!(ok("/a/./b/").iis_trimmed, None);
    }

    #[test]
    fn fast_path_borrows() {
        for raw in [
            "/",
            "/app/page",
            "/app/page/",
            "/a.b/c-d_e~f",
            "/x:y@z!$&'()*+,=",
        ] {
            let p = ok(raw);
            assert!(matches!(p.decoded, Cow::Borrowed(_)), "{raw:?}");
            assert!(matches!(p.wire, Cow::Borrowed(_)), "{raw:?}");
            assert!(!p.changed() && p.iis_trimmed.is_none(), "{raw:?}");
            assert!(already_canonical(raw.as_bytes()), "{raw:?}");
        }
        for raw in [
            "/a/.", "/a/./b", "/a/..", "//a", "/a.", "/a;b", "/a%41", "/a b", "/é",
        ] {
            assert!(!already_canonical(raw.as_bytes()), "{raw:?}");
        }
    }

    proptest::proptest! {
        /// The one-scan shortcut answers exactly what the full computation would.
        #[test]
        fn fast_path_agrees_with_slow_path(p in "/[/a.~:@!-]{0,24}") {
            if already_canonical(p.as_bytes()) {
                proptest::prop_assert_eq!(canonicalize(&p), canonicalize_slow(&p));
            }
        }
    }

    #[test]
    fn wire_encodes_what_is_not_a_pchar() {
        let p = ok("/a%3Fb%23c%22%3C%3E%60%7B%7D%7C%5E%5B%5D");
        assert_eq!(p.decoded, "/a?b#c\"<>`{}|^[]");
        assert_eq!(p.wire, "/a%3Fb%23c%22%3C%3E%60%7B%7D%7C%5E%5B%5D");
        // Escapes of safe bytes come back as the bytes: one spelling per path.
        assert_eq!(ok("/%7e%41%3a").wire, "/~A:");
        let again = ok(&p.wire);
        assert_eq!((&again.decoded, &again.wire), (&p.decoded, &p.wire));
    }

    #[test]
    fn reasons_are_snake_case() {
        use PathError::*;
        let all = [
            NotAbsolute,
            BadEscape,
            EncodedSeparator,
            Backslash,
            Control,
            AboveRoot,
            NotUtf8,
            TooLong,
        ];
        for e in all {
            let r = e.reason();
            assert!(
                !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
        assert_eq!(EncodedSeparator.reason(), "encoded_separator");
    }
}
