//! Which application and resource serve a request: hosts, context roots and path patterns.
//! The flow hands over a canonical path ([`crate::canonical`]) and a normalised host.

use std::collections::{HashMap, HashSet};

use super::{AppType, Application, DefaultDecision, Kind, Node, Policy, Resource};

/// Which applications a host can match, so routing looks at a few candidates instead of
/// every application.
#[derive(Debug, Clone, Default)]
pub(super) struct HostIndex {
    /// Exact host patterns (`host` or `host:port`) -> application indexes.
    exact: HashMap<String, Vec<usize>>,
    /// The host names of exact patterns that name a port (`admin.example.com` for
    /// `admin.example.com:8443`).
    ported: HashSet<String>,
    /// Applications with a `*.domain` pattern (each listed once).
    suffix: Vec<usize>,
    /// Applications with `*`.
    any: Vec<usize>,
}

impl HostIndex {
    pub(super) fn new(apps: &[Application]) -> Self {
        let mut ix = HostIndex::default();
        for (i, app) in apps.iter().enumerate() {
            let mut suffix = false;
            for h in &app.hosts {
                if h == "*" {
                    if ix.any.last() != Some(&i) {
                        ix.any.push(i);
                    }
                } else if h.starts_with('*') {
                    suffix = true;
                } else {
                    if strip_port(h).len() != h.len() {
                        ix.ported.insert(strip_port(h).to_string());
                    }
                    let list = ix.exact.entry(h.clone()).or_default();
                    if list.last() != Some(&i) {
                        list.push(i);
                    }
                }
            }
            if suffix {
                ix.suffix.push(i);
            }
        }
        ix
    }

    /// Every application that may match `host` (lower-case), in no particular order,
    /// possibly with repeats.
    fn candidates<'a>(&'a self, host: &'a str) -> impl Iterator<Item = usize> + 'a {
        let bare = strip_port(host);
        let exact = self.exact.get(bare).into_iter().flatten();
        let with_port = (bare.len() != host.len())
            .then(|| self.exact.get(host))
            .flatten()
            .into_iter()
            .flatten();
        exact
            .chain(with_port)
            .chain(self.suffix.iter())
            .chain(self.any.iter())
            .copied()
    }
}

#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) pattern: Pattern,
    pub(super) resource: usize,
}

/// A path pattern: literal segments separated by `*`, which matches any run of characters
/// (slashes included); or, written with a leading `~`, a regex (unanchored unless it says so).
#[derive(Debug, Clone)]
pub(super) struct Pattern {
    pub(super) raw: String,
    pub(super) regex: Option<regex_lite::Regex>,
}

impl Pattern {
    pub(super) fn new(raw: &str) -> Self {
        Self {
            raw: raw.into(),
            regex: None,
        }
    }

    /// `/admin/*` also covers `/admin`, and any pattern that does not end in `/` or `*` covers
    /// the path with a trailing slash (`/export/`, `/users/5/edit/`): servers and frameworks
    /// (Rails, Express, Spring before 6) answer both with the same page, so neither may fall
    /// outside the resource.
    fn matches(&self, path: &str) -> bool {
        let slashless = path.strip_suffix('/').filter(|p| !p.is_empty());
        match &self.regex {
            Some(re) => re.is_match(path) || slashless.is_some_and(|p| re.is_match(p)),
            None => {
                glob(self.raw.as_bytes(), path.as_bytes())
                    || self
                        .raw
                        .strip_suffix("/*")
                        .is_some_and(|dir| dir == path && !dir.is_empty())
                    || (!self.raw.ends_with(['/', '*'])
                        && slashless.is_some_and(|p| glob(self.raw.as_bytes(), p.as_bytes())))
            }
        }
    }

    /// Whether the pattern's last segment names an extension (`/app.js`, `/admin/*.css`): an
    /// operator who wrote that means files, not a format of `/app` or `/admin/x`.
    fn names_an_extension(&self) -> bool {
        self.regex.is_none()
            && self
                .raw
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains('.'))
    }

    /// Sort key, smallest = most specific: exact paths, then the longer literal prefix, then
    /// fewer wildcards, then more literal characters.
    pub(super) fn specificity(
        &self,
    ) -> (
        bool,
        std::cmp::Reverse<usize>,
        usize,
        std::cmp::Reverse<usize>,
    ) {
        let stars = self.raw.matches('*').count();
        let prefix = self.raw.find('*').unwrap_or(self.raw.len());
        (
            stars > 0,
            std::cmp::Reverse(prefix),
            stars,
            std::cmp::Reverse(self.raw.len() - stars),
        )
    }
}

/// `*` wildcard match, iterative with single backtrack point: linear-ish, never recursive.
pub(super) fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(b'*') => {
                star = Some((p, i));
                p += 1;
            }
            Some(c) if *c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|c| *c == b'*')
}

/// Where [`Policy::route`] sent a request.
#[derive(Debug, Clone)]
pub enum Target<'p> {
    /// A global unprotected path: no identity, no policy. The application that would serve
    /// the host and path otherwise, if any: its backend still must not get client-made tokens.
    Unprotected(Option<&'p Application>),
    /// No application serves this host and path; the configured default applies.
    NoApplication(DefaultDecision),
    /// An application and the resource that serves the request.
    App {
        app: &'p Application,
        resource: &'p Resource,
    },
    /// The application serves this path, but no resource does: refused. `allowed` lists the
    /// methods of resources whose path matched (empty: none matched the path at all).
    NoResource {
        app: &'p Application,
        allowed: Vec<&'p str>,
    },
    /// `/x.json` where a resource names `/x` (or `/x/*`) and another one would serve the
    /// request: frameworks with format suffixes (Rails, older Spring) serve it as `/x`, a
    /// static server as a file of its own. Refused rather than guessed.
    NearMiss { app: &'p Application },
}

impl Policy {
    /// The policy in force when the configuration has none: one web application for every
    /// host and path, with no rules (a session is required everywhere).
    pub fn implicit() -> Policy {
        let all = Node {
            label: "default:rules".into(),
            kind: Kind::All(Vec::new()),
            rejection: None,
        };
        Policy::new(
            DefaultDecision::Deny,
            0,
            Vec::new(),
            vec![Application {
                name: "default".into(),
                hosts: vec!["*".into()],
                context_root: String::new(),
                app_type: AppType::Web,
                api: None,
                site_authenticator: None,
                web_session_name: None,
                web_session: 0,
                rules: all,
                rejection: None,
                case_sensitive_paths: false,
                resources: vec![Resource::root()],
                routes: vec![Route {
                    pattern: Pattern::new("/*"),
                    resource: 0,
                }],
            }],
        )
    }

    pub(super) fn new(
        default_decision: DefaultDecision,
        xff_trusted_hops: u8,
        unprotected: Vec<(Pattern, Pattern)>,
        applications: Vec<Application>,
    ) -> Policy {
        Policy {
            default_decision,
            xff_trusted_hops,
            unprotected,
            hosts: HostIndex::new(&applications),
            applications,
        }
    }

    /// Finds the application (best host match, then longest context root) and the resource
    /// (first matching pattern in order, with a matching method). `host` must be lower-case
    /// without trailing dots, `path` canonical (see [`crate::canonical`]).
    pub fn route(&self, host: &str, path: &str, method: &str) -> Target<'_> {
        // One lower-cased copy, only when the path has upper case at all.
        let folded = path
            .bytes()
            .any(|c| c.is_ascii_uppercase())
            .then(|| path.to_ascii_lowercase());
        let lower = folded.as_deref().unwrap_or(path);
        let lower_host;
        let host = if host.bytes().any(|c| c.is_ascii_uppercase()) {
            lower_host = host.to_ascii_lowercase();
            lower_host.as_str()
        } else {
            host
        };
        let mut best: Option<(&Application, (u8, usize), usize)> = None;
        for app in self
            .hosts
            .candidates(host)
            .filter_map(|i| self.applications.get(i))
        {
            let Some(h) = app.hosts.iter().filter_map(|p| host_rank(p, host)).max() else {
                continue;
            };
            let Some(_) = strip_root(&app.context_root, app.path_for(path, lower)) else {
                continue;
            };
            let root = app.context_root.len();
            if best.is_none_or(|(_, bh, br)| (h, root) > (bh, br)) {
                best = Some((app, h, root));
            }
        }
        if best.is_some_and(|(_, (rank, _), _)| rank < 2)
            && self.hosts.ported.contains(strip_port(host))
        {
            // An application names this host on another port, and a wildcard took it: Envoy,
            // routing by host name (or stripping ports), may send it to that application's
            // backend. Refused rather than judged by the wildcard's rules.
            return Target::NoApplication(DefaultDecision::Deny);
        }
        let app = best.map(|(app, _, _)| app);
        let unprotected = match app.is_some_and(|a| a.case_sensitive_paths) {
            true => self.unprotected.iter().any(|(_, p)| p.matches(path)),
            false => self.unprotected.iter().any(|(p, _)| p.matches(lower)),
        };
        if unprotected {
            return Target::Unprotected(app);
        }
        let Some((app, _, _)) = best else {
            return Target::NoApplication(self.default_decision);
        };
        let rel = strip_root(&app.context_root, app.path_for(path, lower)).unwrap_or("/");
        let mut on_path = app
            .routes
            .iter()
            .filter(|r| r.pattern.matches(rel))
            .filter_map(|r| app.resources.get(r.resource));
        let chosen = app.routes.iter().find(|r| {
            r.pattern.matches(rel)
                && app
                    .resources
                    .get(r.resource)
                    .is_some_and(|res| res.allows(method))
        });
        if let Some(resource) = chosen.and_then(|r| app.resources.get(r.resource)) {
            let deliberate = chosen.is_some_and(|r| r.pattern.names_an_extension());
            if let Some(other) = app.near_miss(rel, method).filter(|_| !deliberate) {
                if !std::ptr::eq(other, resource) {
                    return Target::NearMiss { app };
                }
            }
            return Target::App { app, resource };
        }
        let mut allowed: Vec<&str> = Vec::new();
        for res in on_path.by_ref() {
            for m in res.methods.iter().flatten() {
                if !allowed.contains(&m.as_str()) {
                    allowed.push(m);
                }
            }
        }
        Target::NoResource { app, allowed }
    }

    /// Whether `host` (lower-case, no trailing dot) is one an application names itself, by
    /// name or as a subdomain of a `*.domain` pattern: a request host the gateway may build
    /// a redirect back to. `*` never counts.
    pub fn names_host(&self, host: &str) -> bool {
        self.applications.iter().any(|app| {
            app.hosts
                .iter()
                .filter(|p| p.as_str() != "*")
                .any(|p| host_rank(p, host).is_some())
        })
    }

    /// The implicit policy's one application and root resource (see [`Policy::implicit`]).
    pub fn implicit_target(&self) -> Option<(&Application, &Resource)> {
        let app = self.applications.first()?;
        Some((app, app.resources.first()?))
    }

    /// Whether an application serves every host (`*`).
    pub fn serves_any_host(&self) -> bool {
        self.applications
            .iter()
            .any(|app| app.hosts.iter().any(|h| h == "*"))
    }

    pub fn applications(&self) -> &[Application] {
        &self.applications
    }

    /// For the configuration's resolution of names (web sessions, token providers) into
    /// indices, once, at load.
    pub fn applications_mut(&mut self) -> &mut [Application] {
        &mut self.applications
    }
}

/// How well a host pattern matches, higher is better: exact, then longer `*.` suffix, then
/// `*`. A pattern without a port ignores the request's port.
fn host_rank(pattern: &str, host: &str) -> Option<(u8, usize)> {
    if pattern == "*" {
        return Some((0, 0));
    }
    let bare = strip_port(host);
    let candidate = if strip_port(pattern).len() == pattern.len() {
        bare
    } else {
        host
    };
    if let Some(suffix) = pattern.strip_prefix('*') {
        // `*.example.com` matches any subdomain depth, not the apex.
        (candidate.len() > suffix.len() && candidate.ends_with(suffix)).then_some((1, suffix.len()))
    } else {
        (pattern == candidate).then_some((2, pattern.len()))
    }
}

pub(super) fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        // `[::1]:8080` keeps its brackets; a bare IPv6 address has no port.
        Some(i)
            if !host[i..].contains(']') && (host.starts_with('[') || !host[..i].contains(':')) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

/// The path relative to the context root (always starting with `/`), when it is under it.
fn strip_root<'a>(root: &str, path: &'a str) -> Option<&'a str> {
    let rest = path.strip_prefix(root)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None // `/app` does not serve `/apple`
    }
}

impl Application {
    /// The resource that names the path without its last segment's format suffix
    /// (`/x.json` -> `/x`), if the path has one and some resource names that.
    fn near_miss(&self, rel: &str, method: &str) -> Option<&Resource> {
        // `/x.json/` is `/x.json` to Rails; `/x.tar.gz` and `/x.json.x` are `/x` to a suffix
        // pattern (`/x.*`): the stem ends at the first dot of the last segment.
        let rel = rel
            .strip_suffix('/')
            .filter(|r| !r.is_empty())
            .unwrap_or(rel);
        let (dir, last) = rel.rsplit_once('/')?;
        let (stem, _) = last.split_once('.')?;
        if stem.is_empty() {
            return None;
        }
        let bare = rel.get(..dir.len() + 1 + stem.len())?;
        self.routes
            .iter()
            .filter(|r| r.pattern.matches(bare))
            .filter_map(|r| self.resources.get(r.resource))
            .find(|res| res.allows(method))
    }

    /// The authority this request goes upstream with once this application took it: the host
    /// as matched (lower-case, no trailing dot), and the port only where the matching host
    /// pattern names one or is `*`. Envoy picks its route by the authority it is handed: a port
    /// or a spelling the policy looked past must not pick another backend.
    pub fn authority_for<'h>(&self, host: &'h str) -> &'h str {
        let pattern = self
            .hosts
            .iter()
            .filter_map(|p| host_rank(p, host).map(|rank| (rank, p)))
            .max();
        match pattern {
            Some((_, p)) if p == "*" || strip_port(p).len() != p.len() => host,
            Some(_) => strip_port(host),
            None => host,
        }
    }

    /// The path as this application matches it: as sent, or lower-cased.
    fn path_for<'a>(&self, path: &'a str, lower: &'a str) -> &'a str {
        if self.case_sensitive_paths {
            path
        } else {
            lower
        }
    }
}
