//! Where a request goes: its canonical path, its host, and the application and resource that
//! serve them. Every later stage sees only what routing decided on, and the backend gets the
//! path routing decided on, never a spelling of it that some server would read otherwise.

use std::borrow::Cow;

use crate::canonical::{self, CanonicalPath};
use crate::config::Settings;
use crate::policy::{self, Application, DefaultDecision, Resource};
use crate::request::{dashed_eq, query_name_eq, HeaderSource};

/// A routed request.
pub(crate) struct Route<'s, 'r> {
    pub target: Target<'s>,
    /// The canonical path the policy matched (percent-decoded; see [`crate::canonical`]).
    pub path: Cow<'r, str>,
    /// The raw query string (after `?`).
    pub query: &'r str,
    /// The `:path` that goes upstream, where the raw one differs from the canonical one.
    pub rewrite: Option<String>,
    /// The `:authority` that goes upstream, where the raw one differs from the one the
    /// decision was made on (see [`Application::authority_for`]).
    pub authority: Option<String>,
    pub method: &'r str,
    /// Lower-case, without trailing dots, with the port if one was sent; `""` when absent.
    pub host: Cow<'r, str>,
    /// The raw `:path` (with query), for return URLs.
    pub raw_path: &'r str,
    /// Other resources whose rules the request must also pass: those of the methods a form
    /// POST may carry in its body (`_method`, which Rails, Laravel and Symfony honour and a
    /// filter that reads no body cannot see).
    pub also: Vec<&'s Resource>,
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
    /// The callback of web session `.0` (an index of `Settings::web_sessions`), and likewise
    /// the logouts.
    Callback(usize),
    Logout(usize),
    /// OpenID Connect Back-Channel Logout: the OP posts a logout token.
    Backchannel(usize),
    /// OpenID Connect Front-Channel Logout: the OP's page loads this in an iframe.
    Frontchannel(usize),
    AuthtokenJwks,
}

impl Target<'_> {
    /// The web session the request deals with: its application's, its endpoint's, or the
    /// default one.
    pub(crate) fn web_session(&self) -> usize {
        match self {
            Target::App { app, .. } | Target::Unprotected(Some(app)) => app.web_session,
            Target::Endpoint(e) => e.web_session(),
            Target::Unprotected(None) => 0,
        }
    }
}

impl Endpoint {
    /// The web session the endpoint belongs to (the default for the shared ones).
    pub(crate) fn web_session(&self) -> usize {
        match self {
            Self::Callback(ws)
            | Self::Logout(ws)
            | Self::Backchannel(ws)
            | Self::Frontchannel(ws) => *ws,
            Self::Heartbeat | Self::AuthtokenJwks => 0,
        }
    }
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
    if let Some(why) = ambiguous_spelling(&canonical.decoded) {
        return Err(Refused::Path(why));
    }
    if overrides_method(request, method, query) {
        // Jersey, ASP.NET Core, Express, Symfony and Spring execute the override: the policy
        // would judge a POST while the backend runs a DELETE.
        return Err(Refused::Header("method-override"));
    }
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
    let also = match &target {
        Target::App { resource, .. } if method == "POST" && is_form(request) => {
            overridable(settings, &host, &canonical.decoded, resource)
        }
        _ => Vec::new(),
    };
    let rewrite = rewrite(&canonical, query);
    let upstream_host = match &target {
        Target::App { app, .. } | Target::Unprotected(Some(app)) => app.authority_for(&host),
        _ => &host,
    };
    let authority = (upstream_host != authority).then(|| upstream_host.to_string());
    Ok(Route {
        target,
        path: canonical.decoded,
        query,
        rewrite,
        authority,
        method,
        host,
        raw_path,
        also,
    })
}

/// Whether the request body is a form, which may carry a `_method` override.
fn is_form(request: &dyn HeaderSource) -> bool {
    request.headers().iter().any(|(n, v)| {
        n == "content-type"
            && ["application/x-www-form-urlencoded", "multipart/form-data"]
                .iter()
                .any(|t| {
                    v.get(..t.len())
                        .is_some_and(|p| p.eq_ignore_ascii_case(t.as_bytes()))
                })
    })
}

/// The resources a form POST to `path` would reach if its body overrode the method, where they
/// are not `post`'s own.
fn overridable<'s>(
    settings: &'s Settings,
    host: &str,
    path: &str,
    post: &Resource,
) -> Vec<&'s Resource> {
    let mut also: Vec<&Resource> = Vec::new();
    for method in ["PUT", "PATCH", "DELETE"] {
        if let Ok(Target::App { resource, .. }) = target(settings, host, path, method) {
            if !std::ptr::eq(resource, post) && !also.iter().any(|r| std::ptr::eq(*r, resource)) {
                also.push(resource);
            }
        }
    }
    also
}

/// Spellings that some backend resolves to another resource than the decoded path names,
/// beyond what [`crate::canonical`] resolves: characters whose case mapping is ASCII (Java's
/// and .NET's case-insensitive matching read `ı` as `I`, `ſ` as `S`, the Kelvin sign as `K`),
/// IIS 8.3 short names (`ADMINI~1`) and NTFS streams (`admin::$DATA`).
fn ambiguous_spelling(path: &str) -> Option<&'static str> {
    if !path.is_ascii() && path.contains(['\u{130}', '\u{131}', '\u{17f}', '\u{212a}']) {
        return Some("ambiguous_case");
    }
    let short_name = |w: &[u8]| matches!(w, [a, b'~', d] if *a != b'/' && d.is_ascii_digit());
    if path.contains('~') && path.as_bytes().windows(3).any(short_name) {
        return Some("short_file_name");
    }
    path.contains(":$").then_some("file_stream")
}

/// Whether a method-override header (any spelling a backend reads as one) or a `_method`
/// query parameter names another method than the request's.
fn overrides_method(request: &dyn HeaderSource, method: &str, query: &str) -> bool {
    let other = |v: &[u8]| !v.trim_ascii().eq_ignore_ascii_case(method.as_bytes());
    let header = request.headers().iter().any(|(name, value)| {
        [
            "x-http-method-override",
            "x-http-method",
            "x-method-override",
        ]
        .iter()
        .any(|o| dashed_eq(name, o))
            && other(value)
    });
    // Every query is parsed: `%5Fmethod`, `_METHOD` and `.method` are `_method` to some
    // framework.
    header
        || (!query.is_empty()
            && url::form_urlencoded::parse(query.as_bytes())
                .any(|(k, v)| query_name_eq(&k, "_method") && other(v.as_bytes())))
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
    if let Some(endpoint) = endpoint(settings, path)? {
        return Ok(Target::Endpoint(endpoint));
    }
    if settings.policy_is_implicit {
        // One application for every host and path, with one root resource: nothing to match.
        return match settings.fallback.implicit_target() {
            Some((app, resource)) => Ok(Target::App { app, resource }),
            None => Err(Refused::NoApplication {
                host: host.to_string(),
                path: path.to_string(),
            }),
        };
    }
    match settings.policy.route(host, path, method) {
        policy::Target::Unprotected(app) => Ok(Target::Unprotected(app)),
        policy::Target::App { app, resource } => Ok(Target::App { app, resource }),
        policy::Target::NoResource { app, allowed } => Err(Refused::NoResource { app, allowed }),
        policy::Target::NearMiss { .. } => Err(Refused::Path("ambiguous_resource")),
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

fn endpoint(settings: &Settings, path: &str) -> Result<Option<Endpoint>, Refused<'static>> {
    let base = settings.base_path.as_str();
    let near = path.len() >= base.len()
        && path
            .get(..base.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(base));
    if !near {
        return Ok(None);
    }
    let exact = exact_endpoint(settings, path);
    if exact.is_none() {
        // `/PA/oidc/cb`, `/pa/oidc/logout/`: the user meant the endpoint, and a backend must not
        // get a callback's code or a logout that silently did nothing.
        let trimmed = path.strip_suffix('/').unwrap_or(path).to_ascii_lowercase();
        if exact_endpoint(settings, &trimmed).is_some() {
            return Err(Refused::Path("endpoint_spelling"));
        }
    }
    Ok(exact)
}

fn exact_endpoint(settings: &Settings, path: &str) -> Option<Endpoint> {
    if path == settings.heartbeat_path {
        return Some(Endpoint::Heartbeat);
    }
    if path == settings.authtoken_jwks_path && settings.authtoken.is_some() {
        return Some(Endpoint::AuthtokenJwks);
    }
    settings
        .web_sessions
        .iter()
        .enumerate()
        .find_map(|(ws, web)| {
            if path == web.callback_path {
                Some(Endpoint::Callback(ws))
            } else if path == web.logout_path {
                Some(Endpoint::Logout(ws))
            } else if path == web.backchannel_path {
                Some(Endpoint::Backchannel(ws))
            } else if path == web.frontchannel_path {
                Some(Endpoint::Frontchannel(ws))
            } else {
                None
            }
        })
}

/// An authority as a host to match: lower-case, trailing dots removed, port kept. `None` for
/// anything a host cannot be: userinfo (`user@host`), characters outside host names and IP
/// literals, an empty label, a port that is not a number.
pub(crate) fn normalize_host(authority: &str) -> Option<Cow<'_, str>> {
    if authority.is_empty() {
        return Some(Cow::Borrowed(""));
    }
    let (name, port) = split_port(authority)?;
    // A port is a number: `08443` is `8443` to Envoy's port stripping and to most servers.
    let port = match port {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|c| c.is_ascii_digit()) => {
            let n: u16 = p.parse().ok()?;
            Some((n, p))
        }
        Some(_) => return None,
        None => None,
    };
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
    let port_changed = port.is_some_and(|(n, p)| n.to_string() != p);
    let changed = trimmed.len() != name.len()
        || trimmed.bytes().any(|c| c.is_ascii_uppercase())
        || port_changed;
    if !changed {
        return Some(Cow::Borrowed(authority));
    }
    let mut out = trimmed.to_ascii_lowercase();
    if let Some((n, _)) = port {
        out.push(':');
        out.push_str(&n.to_string());
    }
    Some(Cow::Owned(out))
}

/// `host:port`, `[v6]:port`, or no port.
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if authority.starts_with('[') {
        let (inside, rest) = authority.split_once(']')?;
        let name = authority.get(..inside.len() + 1)?;
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
        assert_eq!(ok("h:08443").as_deref(), Some("h:8443"));
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
            "host:70000",
            "h%41st",
            "evil.example/x",
            "a:1:2",
        ] {
            assert_eq!(ok(bad), None, "{bad}");
        }
    }
}
