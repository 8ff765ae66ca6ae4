//! Where a request goes: its canonical path, its host, and the application and resource that
//! serve them. Every later stage sees only what routing decided on, and the backend gets the
//! path routing decided on, never a spelling of it that some server would read otherwise.

use std::borrow::Cow;

use crate::canonical::{self, CanonicalPath};
use crate::config::Settings;
use crate::policy::{self, Application, DefaultDecision, Resource};
use crate::request::HeaderSource;

/// A routed request.
pub(crate) struct Route<'s, 'r> {
    pub target: Target<'s>,
    /// The canonical path the policy matched (percent-decoded; see [`crate::canonical`]).
    pub path: Cow<'r, str>,
    /// The raw query string (after `?`).
    pub query: &'r str,
    /// The `:path` that goes upstream, where the raw one differs from the canonical one.
    pub rewrite: Option<String>,
    pub method: &'r str,
    /// Lower-case, without trailing dots, with the port if one was sent; `""` when absent.
    pub host: Cow<'r, str>,
    /// The raw `:path` (with query), for return URLs.
    pub raw_path: &'r str,
}

pub(crate) enum Target<'s> {
    /// One of the gateway's own endpoints under the base path.
    Endpoint(Endpoint),
    /// A global unprotected path: forwarded with no identity, to the backend of the
    /// application that serves the host and path, if one does.
    Unprotected(Option<&'s Application>),
    App {
        app: &'s Application,
        resource: &'s Resource,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Heartbeat,
    Callback,
    Logout,
    AuthtokenJwks,
}

/// Why routing refused a request.
pub(crate) enum Refused<'s> {
    /// 400: `:path` absent, not UTF-8, or ambiguous to some backend.
    Path(&'static str),
    /// 400: the authority is not a host name (userinfo, odd characters).
    Host,
    /// 400: a header that must appear once is repeated or not UTF-8.
    Header(&'static str),
    /// No application serves this host and path (`default_decision: deny`).
    NoApplication { host: String, path: String },
    /// The application serves the path, but no resource does, by path or (`allowed` not
    /// empty) by method.
    NoResource {
        app: &'s Application,
        allowed: Vec<&'s str>,
    },
}

pub(crate) fn route<'s, 'r>(
    settings: &'s Settings,
    request: &'r dyn HeaderSource,
) -> Result<Route<'s, 'r>, Refused<'s>> {
    let raw_path = match request.single(":path") {
        Ok(Some(p)) => p,
        _ => return Err(Refused::Path("unreadable")),
    };
    let (raw, query) = raw_path.split_once('?').unwrap_or((raw_path, ""));
    if raw.contains('#') || query.contains('#') {
        // A fragment never leaves a browser; in a request it is a smuggling attempt.
        return Err(Refused::Path("fragment"));
    }
    let canonical = canonical::canonicalize(raw).map_err(|e| Refused::Path(e.reason()))?;
    let method = request
        .single(":method")
        .map_err(|_| Refused::Header(":method"))?
        .unwrap_or_default();
    let authority = request
        .single(":authority")
        .map_err(|_| Refused::Header(":authority"))?
        .unwrap_or_default();
    let host = normalize_host(authority).ok_or(Refused::Host)?;
    let target = target(settings, &host, &canonical.decoded, method)?;
    if let (Target::App { resource, .. }, Some(trimmed)) = (&target, &canonical.iis_trimmed) {
        // IIS trims trailing dots and spaces from segments: both readings must be one resource.
        let same = match self::target(settings, &host, trimmed, method) {
            Ok(Target::App {
                resource: other, ..
            }) => std::ptr::eq(*resource, other),
            _ => false,
        };
        if !same {
            return Err(Refused::Path("trailing_dot_or_space"));
        }
    }
    let rewrite = rewrite(&canonical, query);
    Ok(Route {
        target,
        path: canonical.decoded,
        query,
        rewrite,
        method,
        host,
        raw_path,
    })
}

/// The request path that goes upstream, when it is not the one received.
fn rewrite(canonical: &CanonicalPath<'_>, query: &str) -> Option<String> {
    if !canonical.changed() {
        return None;
    }
    let mut path = canonical.wire.to_string();
    if !query.is_empty() {
        path.push('?');
        path.push_str(query);
    }
    Some(path)
}

fn target<'s>(
    settings: &'s Settings,
    host: &str,
    path: &str,
    method: &str,
) -> Result<Target<'s>, Refused<'s>> {
    if let Some(endpoint) = endpoint(settings, path) {
        return Ok(Target::Endpoint(endpoint));
    }
    let policy = match settings.policy_is_implicit {
        true => &settings.fallback,
        false => &settings.policy,
    };
    match policy.route(host, path, method) {
        policy::Target::Unprotected(app) => Ok(Target::Unprotected(app)),
        policy::Target::App { app, resource } => Ok(Target::App { app, resource }),
        policy::Target::NoResource { app, allowed } => Err(Refused::NoResource { app, allowed }),
        policy::Target::NoApplication(DefaultDecision::Deny) => Err(Refused::NoApplication {
            host: host.to_string(),
            path: path.to_string(),
        }),
        policy::Target::NoApplication(DefaultDecision::Allow) => {
            match settings.fallback.route(host, path, method) {
                policy::Target::App { app, resource } => Ok(Target::App { app, resource }),
                _ => Err(Refused::NoApplication {
                    host: host.to_string(),
                    path: path.to_string(),
                }),
            }
        }
    }
}

fn endpoint(settings: &Settings, path: &str) -> Option<Endpoint> {
    if !path.starts_with(settings.base_path.as_str()) {
        return None;
    }
    if path == settings.heartbeat_path {
        Some(Endpoint::Heartbeat)
    } else if path == settings.callback_path {
        Some(Endpoint::Callback)
    } else if path == settings.logout_path {
        Some(Endpoint::Logout)
    } else if path == settings.authtoken_jwks_path && settings.authtoken.is_some() {
        Some(Endpoint::AuthtokenJwks)
    } else {
        None
    }
}

/// An authority as a host to match: lower-case, trailing dots removed, port kept. `None` for
/// anything a host cannot be: userinfo (`user@host`), characters outside host names and IP
/// literals, an empty label, a port that is not a number.
pub(crate) fn normalize_host(authority: &str) -> Option<Cow<'_, str>> {
    if authority.is_empty() {
        return Some(Cow::Borrowed(""));
    }
    let (name, port) = split_port(authority)?;
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
    }
    let literal = name.starts_with('[');
    let trimmed = if literal {
        let inner = name.strip_prefix('[')?.strip_suffix(']')?;
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|c| c.is_ascii_hexdigit() || b":.".contains(&c))
        {
            return None;
        }
        name
    } else {
        let bare = name.trim_end_matches('.');
        let valid_char = |c: u8| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.';
        if bare.is_empty() || !bare.bytes().all(valid_char) || bare.split('.').any(str::is_empty) {
            return None;
        }
        bare
    };
    let changed = trimmed.len() != name.len() || trimmed.bytes().any(|c| c.is_ascii_uppercase());
    if !changed {
        return Some(Cow::Borrowed(authority));
    }
    let mut out = trimmed.to_ascii_lowercase();
    if let Some(port) = port {
        out.push(':');
        out.push_str(port);
    }
    Some(Cow::Owned(out))
}

/// `host:port`, `[v6]:port`, or no port.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (name, rest) = authority.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Some((name, Some(port))),
            None if rest.is_empty() => Some((name, None)),
            None => None,
        };
    }
    match authority.split_once(':') {
        Some((name, port)) => Some((name, Some(port))),
        None => Some((authority, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::normalize_host;

    #[test]
    fn hosts() {
        let ok = |a: &str| normalize_host(a).map(|h| h.into_owned());
        assert_eq!(ok("secure.test").as_deref(), Some("secure.test"));
        assert_eq!(ok("Secure.Test.").as_deref(), Some("secure.test"));
        assert_eq!(ok("secure.test.:8080").as_deref(), Some("secure.test:8080"));
        assert_eq!(ok("[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(ok("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(ok("").as_deref(), Some(""));
        for bad in [
            "localhost:8080@evil.example",
            "user@host",
            "a b",
            "host:port",
            "host:",
            "a..b",
            ".",
            "[::1",
            "[zz]",
            "host:123456",
            "h%41st",
            "evil.example/x",
            "a:1:2",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }
}
