//! What goes upstream: the canonical path, identity headers and nothing that looks like them,
//! the gateway's cookies removed from every `Cookie` header, the site's token, and the session
//! renewed.

use std::rc::Rc;

use super::identify::Who;
use super::login::session_cookies;
use super::route::Route;
use super::state::{SiteToken, VmState};
use crate::config::Settings;
use crate::cookie;
use crate::http::{Forward, HeaderOps};
use crate::login::Entropy;
use crate::mediation::{self, Inject, SiteAuthenticator};
use crate::request::{cgi_eq, HeaderSource};
use crate::session::chunks;
use crate::session::SessionEntry;

/// An allowed request as it goes on: with the identity the gateway vouches for (or none), and
/// the site's token where the application's backend is mediated. `forward_token`: the
/// application lets the client's bearer token through (`api.forward_token`).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    settings: &Settings,
    ws: usize,
    vm: &mut VmState,
    request: &dyn HeaderSource,
    route: &Route<'_, '_>,
    forward_token: bool,
    who: &Who<'_>,
    site: Option<&SiteAuthenticator>,
    mediated: Option<&SiteToken>,
    now: u64,
    rng: &mut dyn Entropy,
) -> Forward {
    let identity = match (&who.session, &who.token) {
        (Some(e), _) => e.headers.clone(),
        (None, Some(t)) => t.headers.clone(),
        (None, None) => settings.web(ws).no_identity.clone(),
    };
    let mut fwd = anonymous(settings, ws, request, route, Some(identity), site);
    if let Some(entry) = &who.session {
        match &who.successor {
            Some(value) => {
                let max_age = entry.session.remaining(now);
                let carried = chunks::carried(request, &settings.web(ws).session.cookie_name);
                if let Some(set) = session_cookies(settings, ws, value, max_age, carried) {
                    fwd.response_cookies.extend(set);
                }
            }
            None => renew(settings, ws, vm, request, entry, now, rng, &mut fwd),
        }
        if settings.web(ws).session.forward_access_token {
            // Set, or removed: a client's own Authorization must not pass for the session's.
            // Never an expired one (a session without a refresh token cannot renew it).
            let op = &entry.session.op;
            let bearer = op
                .access_token
                .as_ref()
                .filter(|_| op.access_expires_at.is_none_or(|e| now < e));
            fwd.request_headers.push((
                "authorization".into(),
                bearer.map(|t| format!("Bearer {t}")),
            ));
        }
    }
    // A mediated site gets its own token and nothing a client could have made up: the client's
    // Authorization and any copy of the site's header or cookie are removed, also where no
    // token is mediated (unprotected and anonymous resources).
    let keep_token = forward_token && site.is_none();
    if (who.token.is_some() && !keep_token) || site.is_some() {
        fwd.request_headers.push(("authorization".into(), None));
    }
    let Some(site) = site else {
        return fwd;
    };
    let value = mediated.map(|t| t.value.as_str());
    match &site.inject {
        Inject::Header(name) => fwd
            .request_headers
            .push((name.clone(), value.map(String::from))),
        Inject::Cookie(name) => {
            if let Some(v) = value {
                // `anonymous` already dropped every client copy of this cookie.
                let upstream = match fwd.request_headers.iter().position(|(n, _)| n == "cookie") {
                    Some(i) => fwd.request_headers.remove(i).1,
                    None => request.header("cookie").map(String::from),
                };
                let with = mediation::cookie_with_token(upstream.as_deref(), name, v);
                fwd.request_headers.push(("cookie".into(), Some(with)));
            }
        }
    }
    fwd
}

/// A request going upstream with the identity headers of `identity` (a session's or a bearer
/// token's), or all of them removed; client headers that a backend would read as one of them
/// removed; the gateway's cookies (and a mediated site's) removed; the canonical path.
pub(super) fn anonymous(
    settings: &Settings,
    ws: usize,
    request: &dyn HeaderSource,
    route: &Route<'_, '_>,
    identity: Option<HeaderOps>,
    site: Option<&SiteAuthenticator>,
) -> Forward {
    let mut fwd = Forward {
        identity: identity.unwrap_or_else(|| settings.web(ws).no_identity.clone()),
        identity_absent: 0,
        removed: Vec::new(),
        request_headers: Vec::new(),
        response_cookies: Vec::new(),
    };
    let site_header = site.and_then(|s| match &s.inject {
        Inject::Header(name) => Some(name.as_str()),
        Inject::Cookie(_) => None,
    });
    let mut cookies = 0;
    // The gateway's own headers seen so far: a second copy is removed before the gateway's
    // value is set, whatever the host's "set" does with the other copies.
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in request.headers().iter() {
        if name.starts_with(':') {
            continue;
        }
        if name == "cookie" {
            cookies += 1;
        } else if name.as_bytes().contains(&b'_')
            || settings.reserved_underscored
                && settings
                    .reserved_request_headers
                    .iter()
                    .any(|r| r != name && cgi_eq(name, r))
        {
            // CGI, WSGI, PHP and Rack read `x_wam_user` as `x-wam-user`, and the other way
            // round (an identity header may be configured with an underscore): every copy a
            // backend would read as one of the gateway's headers goes.
            let reserved = settings.reserved_request_headers.iter();
            if reserved.clone().any(|r| cgi_eq(name, r)) && !fwd.removed.iter().any(|r| r == name) {
                fwd.removed.push(name.to_string());
            }
        } else if fwd.identity.iter().any(|(n, _)| n == name) || site_header == Some(name) {
            if seen.contains(&name) {
                if !fwd.removed.iter().any(|r| r == name) {
                    fwd.removed.push(name.to_string());
                }
            } else {
                seen.push(name);
            }
        }
    }
    fwd.identity_absent = absent_removals(&fwd.identity, request);
    if cookies > 0 {
        clean_cookies(settings, request, site, cookies, &mut fwd);
    }
    if let Some(path) = &route.rewrite {
        fwd.request_headers
            .push((":path".into(), Some(path.clone())));
    }
    if let Some(authority) = &route.authority {
        fwd.request_headers
            .push((":authority".into(), Some(authority.clone())));
    }
    fwd
}

/// The removals among `identity` (the first 64 operations) of headers `request` does not
/// carry, as bits (see `Forward::identity_absent`).
fn absent_removals(identity: &[(String, Option<String>)], request: &dyn HeaderSource) -> u64 {
    let headers = request.headers();
    let mut bits = 0u64;
    for (i, (name, value)) in identity.iter().enumerate().take(64) {
        if value.is_none() && !headers.iter().any(|(n, _)| n == name) {
            bits |= 1 << i;
        }
    }
    bits
}

/// Every `Cookie` header joined into one, without the gateway's cookies, a mediated site's
/// cookie, or pieces that are not UTF-8 (the gateway could not tell whose they are).
fn clean_cookies(
    settings: &Settings,
    request: &dyn HeaderSource,
    site: Option<&SiteAuthenticator>,
    headers: usize,
    fwd: &mut Forward,
) {
    let site_cookie = site.and_then(|s| match &s.inject {
        Inject::Cookie(n) => Some(n.as_str()),
        Inject::Header(_) => None,
    });
    // Every web session's cookies, not only the application's: no backend gets another
    // application's session either. `__Host-<prefix>bind` binds kept posts to the browser
    // (`crate::preserve`).
    let is_ours = |n: &str| {
        site_cookie == Some(n)
            || settings.web_sessions.iter().any(|w| {
                let prefix = w.txn_cookie_prefix.as_str();
                chunks::is_ours(n, &w.session.cookie_name)
                    || n.starts_with(prefix)
                    || n.strip_prefix("__Host-")
                        .is_some_and(|n| n.starts_with(prefix))
            })
    };
    let values = request
        .headers()
        .iter()
        .filter(|(n, _)| *n == "cookie")
        .map(|(_, v)| v);
    if let Some(rest) = cookie::without_in_all(values, headers > 1, is_ours) {
        if headers > 1 {
            fwd.removed.push("cookie".into());
        }
        fwd.request_headers.push(("cookie".into(), rest));
    }
}

/// Re-issues the session cookie when its activity stamp is due.
#[allow(clippy::too_many_arguments)]
fn renew(
    settings: &Settings,
    ws: usize,
    vm: &mut VmState,
    request: &dyn HeaderSource,
    entry: &Rc<SessionEntry>,
    now: u64,
    rng: &mut dyn Entropy,
    fwd: &mut Forward,
) {
    if now.saturating_sub(entry.renewed_at.get()) < settings.web(ws).session.activity_refresh_s {
        return;
    }
    entry.renewed_at.set(now);
    let mut renewed = entry.session.clone();
    renewed.last_activity = now;
    let Some(value) = renewed.encode(&settings.web(ws).session.keys, rng) else {
        return;
    };
    // A cookie that no longer fits its chunks is not renewed: the old one still works until
    // its idle limit, which is better than ending the session here.
    let carried = chunks::carried(request, &settings.web(ws).session.cookie_name);
    if let Some(set) = session_cookies(settings, ws, &value, renewed.remaining(now), carried) {
        fwd.response_cookies.extend(set);
        let next = SessionEntry::new(renewed, entry.headers.clone());
        vm.sessions(ws)
            .insert(value, next, now, settings.web(ws).session.idle_timeout_s);
    }
}
