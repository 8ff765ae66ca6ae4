//! Request preservation: a form post that needed a sign-in is kept, encrypted, in cookies
//! through the login, and re-posted by the browser afterwards (PingAccess "preserve
//! requests", mod_auth_openidc `OIDCPreservePost`).
//!
//! The post is bound to its login transaction (the transaction's `state` is inside the sealed
//! plaintext), so it can only ever be re-posted at the end of the sign-in it started. Its
//! cookies are scoped to the callback path: no other request carries them.
//!
//! It is also bound to the browser that sent it, by a random value in a `__Host-` cookie (with
//! `session.cookie_secure`): the login and post cookies can be planted in another browser by a
//! sibling subdomain or over plain HTTP, together with the OP redirect's `state`, and the victim
//! signing in would then post the planter's form with the victim's session. A `__Host-` cookie
//! can only come from this host over HTTPS.
//!
//! Only what a browser re-posts byte-for-byte equivalent is kept: an
//! `application/x-www-form-urlencoded` body whose names and values are UTF-8, with nothing a
//! browser would rewrite when it submits the form again (lone CR or LF, NUL, `_charset_`,
//! empty names). Anything else is not preserved rather than changed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::{Settings, WebSession};
use crate::cookie::{self, CookieAttributes};
use crate::http::LocalResponse;
use crate::login::{constant_time_eq, Entropy};
use crate::pages::escape;
use crate::request::HeaderSource;
use crate::session::chunks::{self, Carried, MAX_CHUNKS};
use crate::session::{KeyRing, SealPurpose};

/// The re-post page's only script. Its hash is the page's whole `script-src`. It calls the
/// prototype's `submit`: a field named `submit` would shadow `form.submit`.
pub const SCRIPT: &str = "HTMLFormElement.prototype.submit.call(document.forms[0]);";

/// A form post kept through a sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreservedPost {
    /// Where it goes: the login's return path (same origin, path and query).
    pub path: String,
    /// The urlencoded body, as received.
    body: String,
    /// The decoded pairs, in order.
    pairs: Vec<(String, String)>,
}

/// Why a body is not preserved. Never says anything of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKept {
    /// Larger than `session.preserve_post_bytes`.
    TooLarge,
    /// Not UTF-8 pairs that a browser would post again unchanged.
    NotExact,
    /// Its sealed form needs more cookies than a browser would carry.
    TooManyCookies,
    /// No randomness to seal it.
    NoRandomness,
    /// The host could not read it (see `Body::Unreadable`).
    Unreadable,
}

impl std::fmt::Display for NotKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotKept::TooLarge => "the body is larger than session.preserve_post_bytes",
            NotKept::NotExact => {
                "the body is not UTF-8 form fields that a browser would post unchanged"
            }
            NotKept::TooManyCookies => "the sealed body needs too many cookies",
            NotKept::NoRandomness => "no randomness to seal it",
            NotKept::Unreadable => "the upstream answered before the body came",
        })
    }
}

/// The sealed plaintext. Short names: it travels in cookies.
#[derive(Serialize, Deserialize)]
struct Sealed {
    /// The login transaction's `state`.
    st: String,
    /// The value of the sending browser's binding cookie.
    bd: String,
    exp: u64,
    m: String,
    p: String,
    b: String,
}

impl PreservedPost {
    /// A post of `body` to `path`, when the body is at most `max` bytes and re-posts exactly.
    pub fn new(path: &str, body: &[u8], max: usize) -> Result<Self, NotKept> {
        if body.len() > max {
            return Err(NotKept::TooLarge);
        }
        let body = std::str::from_utf8(body).map_err(|_| NotKept::NotExact)?;
        let pairs = exact_pairs(body).ok_or(NotKept::NotExact)?;
        Ok(Self {
            path: path.to_string(),
            body: body.to_string(),
            pairs,
        })
    }

    /// The decoded name/value pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// Seals the post for the login transaction with `state`, valid for `ttl_s`.
    pub fn seal(
        &self,
        keys: &KeyRing,
        state: &str,
        binding: &str,
        now: u64,
        ttl_s: u64,
        rng: &mut dyn Entropy,
    ) -> Result<String, NotKept> {
        let sealed = Sealed {
            st: state.to_string(),
            bd: binding.to_string(),
            exp: now.saturating_add(ttl_s),
            m: "POST".into(),
            p: self.path.clone(),
            b: self.body.clone(),
        };
        let json = serde_json::to_vec(&sealed).map_err(|_| NotKept::NotExact)?;
        keys.seal(SealPurpose::PreservedRequest, &json, rng)
            .ok_or(NotKept::NoRandomness)
    }

    /// The post sealed in `token`, when it belongs to the login with `state`, was sent by the
    /// browser whose binding cookie is `binding`, and is still valid at `now`. Anything else
    /// (tampered, another login's or browser's, expired, another key) is `None`.
    pub fn open(
        keys: &KeyRing,
        token: &str,
        state: &str,
        binding: Option<&str>,
        now: u64,
    ) -> Option<Self> {
        let json = keys.open(SealPurpose::PreservedRequest, token)?;
        let sealed: Sealed = serde_json::from_slice(&json).ok()?;
        if !constant_time_eq(sealed.st.as_bytes(), state.as_bytes())
            || !binding.is_some_and(|b| constant_time_eq(sealed.bd.as_bytes(), b.as_bytes()))
            || now >= sealed.exp
            || sealed.m != "POST"
            || crate::login::safe_return_path(&sealed.p).is_none()
        {
            return None;
        }
        let pairs = exact_pairs(&sealed.b)?;
        Some(Self {
            path: sealed.p,
            body: sealed.b,
            pairs,
        })
    }

    /// The page that posts the form again: a hidden form, submitted by a script whose hash is
    /// all the page's policy allows, to this origin only.
    pub fn page(&self) -> LocalResponse {
        let mut body = String::with_capacity(self.body.len() * 2 + 600);
        body.push_str(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Continuing</title>\
             </head><body><form method=\"post\" enctype=\"application/x-www-form-urlencoded\" \
             accept-charset=\"UTF-8\" action=\"",
        );
        body.push_str(&escape(&self.path));
        body.push_str("\">");
        for (name, value) in &self.pairs {
            body.push_str("<input type=\"hidden\" name=\"");
            body.push_str(&escape(name));
            body.push_str("\" value=\"");
            body.push_str(&escape(value));
            body.push_str("\">");
        }
        body.push_str(
            "<noscript><p>You are signed in. Continue to send your form.</p>\
             <button type=\"submit\">Continue</button></noscript></form><script>",
        );
        body.push_str(SCRIPT);
        body.push_str("</script></body></html>\n");
        LocalResponse::new(200)
            .header("content-security-policy", content_security_policy())
            .header("referrer-policy", "no-referrer")
            .header("x-content-type-options", "nosniff")
            .header("x-frame-options", "DENY")
            .body("text/html; charset=utf-8", body)
    }
}

/// The re-post page's policy: its one script, a form to this origin, nothing else.
pub fn content_security_policy() -> String {
    let hash = STANDARD.encode(hmac_sha256::Hash::hash(SCRIPT.as_bytes()));
    format!(
        "default-src 'none'; script-src 'sha256-{hash}'; form-action 'self'; \
         base-uri 'none'; frame-ancestors 'none'"
    )
}

/// The decoded pairs of `body`, when a browser would post them again as the same pairs.
fn exact_pairs(body: &str) -> Option<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    for piece in body.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
        let name = decode(name)?;
        // A browser leaves out fields without a name, and fills `_charset_` in itself.
        if name.is_empty() || name.eq_ignore_ascii_case("_charset_") {
            return None;
        }
        pairs.push((name, decode(value)?));
    }
    Some(pairs)
}

/// One urlencoded name or value, when it is UTF-8 that survives an HTML attribute and a form
/// submission: the parser turns NUL into U+FFFD, and a submission turns a lone CR or LF into
/// CRLF.
fn decode(s: &str) -> Option<String> {
    let plus = s.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&plus).collect();
    let text = String::from_utf8(bytes).ok()?;
    let b = text.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let lone = match c {
            0 => true,
            b'\r' => b.get(i + 1) != Some(&b'\n'),
            b'\n' => i == 0 || b.get(i - 1) != Some(&b'\r'),
            _ => false,
        };
        if lone {
            return None;
        }
    }
    Some(text)
}

/// Whether `content_type` is a urlencoded form in UTF-8 (no charset, or `utf-8`).
pub fn is_urlencoded(content_type: &str) -> bool {
    let mut parts = content_type.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return false;
    }
    parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    })
}

/// The base name of login slot `slot`'s post cookies; chunks add `.0`, `.1`, …
pub fn cookie_name(prefix: &str, slot: u8) -> String {
    format!("{prefix}post.{slot}")
}

fn attrs(web: &WebSession) -> CookieAttributes<'_> {
    CookieAttributes {
        path: &web.callback_path,
        domain: None,
        secure: web.session.cookie_secure,
        // The OP sends the browser back with a top-level GET, which Lax cookies accompany.
        same_site: "Lax",
    }
}

/// The name of the cookie that binds kept posts to the browser: `__Host-` where the cookies are
/// `Secure` (browsers refuse the prefix otherwise).
pub fn binding_cookie_name(web: &WebSession) -> String {
    let prefix = if web.session.cookie_secure {
        "__Host-"
    } else {
        ""
    };
    format!("{prefix}{}bind", web.txn_cookie_prefix)
}

/// The request's binding cookie, when it is one the gateway could have made.
pub fn binding(web: &WebSession, request: &dyn HeaderSource) -> Option<String> {
    let name = binding_cookie_name(web);
    cookie::find(request, &name)
        .filter(|v| {
            v.len() >= 22
                && v.len() <= 64
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        })
        .map(String::from)
}

/// The `Set-Cookie` of the binding cookie: `Path=/` and no `Domain`, as `__Host-` requires.
pub fn binding_set_cookie(settings: &Settings, web: &WebSession, value: &str) -> String {
    let attrs = CookieAttributes {
        path: "/",
        ..attrs(web)
    };
    cookie::set_cookie(
        &binding_cookie_name(web),
        value,
        settings.login_timeout_s,
        &attrs,
    )
}

/// The `Set-Cookie`s that carry `sealed` for login slot `slot` to the callback.
pub fn set_cookies(
    settings: &Settings,
    web: &WebSession,
    slot: u8,
    sealed: &str,
) -> Result<Vec<String>, NotKept> {
    let name = cookie_name(&web.txn_cookie_prefix, slot);
    let (set, _) = chunks::write(&name, sealed, MAX_CHUNKS, Carried::default())
        .ok_or(NotKept::TooManyCookies)?;
    let attrs = attrs(web);
    Ok(set
        .iter()
        .map(|(n, v)| cookie::set_cookie(n, v, settings.login_timeout_s, &attrs))
        .collect())
}

/// The sealed post of login slot `slot` in `request`, if any, and the `Set-Cookie`s that clear
/// every post cookie of that slot the request carried.
pub fn read(
    web: &WebSession,
    request: &dyn HeaderSource,
    slot: u8,
) -> (Option<String>, Vec<String>) {
    let name = cookie_name(&web.txn_cookie_prefix, slot);
    let (value, carried) = chunks::read(request, &name);
    let attrs = attrs(web);
    let clear = chunks::clear(&name, carried, |_| false)
        .iter()
        .map(|n| cookie::set_cookie(n, "", 0, &attrs))
        .collect();
    (value.map(|v| v.into_owned()), clear)
}

#[cfg(test)]
mod tests;
