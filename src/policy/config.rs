//! The policy JSON an operator writes, and its compilation into the [`Policy`] a request is
//! matched against. Everything a request would otherwise re-parse (CIDRs, patterns, times,
//! rule-set references) is resolved here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::raw::{
    Mode, Ordering, RawApplication, RawPolicy, RawRejection, RawRule, RawRuleSet, RawTest,
};
use super::{
    Application, Cidr, Decide, Kind, Limit, Matcher, Node, Pattern, Policy, Rejection, Resource,
    Route, Template,
};
use crate::config::{is_token_char, ConfigError};

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

/// Checks and precompiles a policy. Field paths in errors are relative to the policy object;
/// a caller embedding it under a key prefixes them.
pub fn compile(raw: &RawPolicy) -> Result<Policy, ConfigError> {
    if raw.xff_trusted_hops > 10 {
        return Err(err("xff_trusted_hops", "must be 0 to 10"));
    }
    let mut sets = RuleSets {
        raw: HashMap::new(),
        done: HashMap::new(),
        visiting: Vec::new(),
        next_id: 0,
        regexes: HashMap::new(),
    };
    for (i, set) in raw.rule_sets.iter().enumerate() {
        let field = format!("rule_sets[{i}].name");
        if set.name.is_empty() {
            return Err(err(field, "must not be empty"));
        }
        if sets.raw.insert(set.name.as_str(), (i, set)).is_some() {
            return Err(err(field, format!("duplicate rule set `{}`", set.name)));
        }
    }
    // Compile every set, even unreferenced ones, so mistakes surface at load time.
    for set in &raw.rule_sets {
        sets.get(&set.name, "rule_sets")?;
    }

    // Each global unprotected path twice: lower-cased for case-insensitive applications, as
    // written for those with `case_sensitive_paths`.
    let mut unprotected = Vec::new();
    for (i, p) in raw.unprotected_paths.iter().enumerate() {
        let field = format!("unprotected_paths[{i}]");
        unprotected.push((
            path_pattern(&field, p, false)?,
            path_pattern(&field, p, true)?,
        ));
    }

    let mut applications = Vec::new();
    for (i, app) in raw.applications.iter().enumerate() {
        applications.push(compile_app(&format!("applications[{i}]"), app, &mut sets)?);
    }
    Ok(Policy::new(
        raw.default_decision,
        raw.xff_trusted_hops,
        unprotected,
        applications,
    ))
}

struct RuleSets<'r> {
    raw: HashMap<&'r str, (usize, &'r RawRuleSet)>,
    done: HashMap<String, Arc<Node>>,
    /// Names being compiled, to refuse a set that contains itself.
    visiting: Vec<String>,
    /// The next rate-limit rule id: ids follow the configuration's order, so the same
    /// configuration always numbers its rules the same way.
    next_id: u32,
    /// Value regexes by (pattern, case-insensitive): a pattern used by many rules is
    /// compiled once.
    regexes: HashMap<(String, bool), Arc<regex_lite::Regex>>,
}

impl RuleSets<'_> {
    /// A reference to the named set (compiled once, shared by every reference).
    fn get(&mut self, name: &str, field: &str) -> Result<Node, ConfigError> {
        let shared = |node: &Arc<Node>| Node {
            label: node.label.clone(),
            kind: Kind::Shared(Arc::clone(node)),
            rejection: None,
        };
        if let Some(node) = self.done.get(name) {
            return Ok(shared(node));
        }
        let Some(&(i, set)) = self.raw.get(name) else {
            return Err(err(field, format!("unknown rule set `{name}`")));
        };
        if self.visiting.iter().any(|n| n == name) {
            return Err(err(field, format!("rule set `{name}` includes itself")));
        }
        self.visiting.push(name.to_string());
        let base = format!("rule_sets[{i}]");
        let node = rule_list(&base, Some(&set.name), set.mode, &set.rules, self);
        self.visiting.pop();
        let mut node = node?;
        node.rejection = rejection(&format!("{base}.rejection"), set.rejection.as_ref())?;
        let node = Arc::new(node);
        self.done.insert(name.to_string(), Arc::clone(&node));
        Ok(shared(&node))
    }
}

fn compile_app(
    field: &str,
    raw: &RawApplication,
    sets: &mut RuleSets,
) -> Result<Application, ConfigError> {
    if raw.name.is_empty() {
        return Err(err(format!("{field}.name"), "must not be empty"));
    }
    if raw.hosts.is_empty() {
        return Err(err(format!("{field}.hosts"), "must name at least one host"));
    }
    let mut hosts = Vec::new();
    for (i, h) in raw.hosts.iter().enumerate() {
        hosts.push(host_pattern(&format!("{field}.hosts[{i}]"), h)?);
    }
    let root = raw.context_root.trim_end_matches('/');
    if !raw.context_root.starts_with('/') || root.contains(['*', '?', '#']) {
        return Err(err(
            format!("{field}.context_root"),
            "must be an absolute path without wildcards, such as /app",
        ));
    }
    let api = super::app_api::compile(field, raw)?;
    if raw.site_authenticator.as_deref() == Some("") {
        return Err(err(
            format!("{field}.site_authenticator"),
            "must name a site authenticator",
        ));
    }
    let rules = rule_list(
        field,
        Some(&format!("{}:rules", raw.name)),
        raw.mode,
        &raw.rules,
        sets,
    )?;

    if raw.resources.is_empty() {
        // Nothing would ever be served: every request must match a resource (issue 9), and
        // an application without any is almost surely a configuration that expected the old
        // "rules only" behaviour. Say how to get it.
        return Err(err(
            format!("{field}.resources"),
            "must list at least one resource; to protect every path with the application's \
             rules, add a root resource {\"name\": \"root\", \"paths\": [\"/*\"]}",
        ));
    }
    let case_sensitive = raw.case_sensitive_paths;
    let mut resources = Vec::new();
    let mut routes = Vec::new();
    for (r, res) in raw.resources.iter().enumerate() {
        let rf = format!("{field}.resources[{r}]");
        if res.name.is_empty() {
            return Err(err(format!("{rf}.name"), "must not be empty"));
        }
        if res.paths.is_empty() {
            return Err(err(format!("{rf}.paths"), "must list at least one path"));
        }
        if res.unprotected && res.anonymous {
            return Err(err(
                format!("{rf}.anonymous"),
                "a resource cannot be both unprotected and anonymous",
            ));
        }
        for (p, path) in res.paths.iter().enumerate() {
            let pf = format!("{rf}.paths[{p}]");
            let pattern = path_pattern(&pf, path, case_sensitive)?;
            if pattern.regex.is_some() && raw.ordering == Ordering::Automatic {
                return Err(err(
                    pf,
                    format!(
                        "a regex path needs manual ordering: set `{field}.ordering` to \"manual\""
                    ),
                ));
            }
            routes.push(Route {
                pattern,
                resource: r,
            });
        }
        let methods = match &res.methods {
            None => None,
            Some(m) => Some(methods(&format!("{rf}.methods"), m)?),
        };
        resources.push(Resource {
            name: res.name.clone(),
            methods,
            unprotected: res.unprotected,
            anonymous: res.anonymous,
            audit: res.audit,
            rules: rule_list(
                &rf,
                Some(&format!("{}:{}", raw.name, res.name)),
                res.mode,
                &res.rules,
                sets,
            )?,
            rejection: rejection(&format!("{rf}.rejection"), res.rejection.as_ref())?,
        });
    }
    if raw.ordering == Ordering::Automatic {
        // Most specific first; the sort is stable, so ties keep the configured order.
        routes.sort_by_key(|r| r.pattern.specificity());
    }
    Ok(Application {
        name: raw.name.clone(),
        hosts,
        context_root: if case_sensitive {
            root.to_string()
        } else {
            root.to_ascii_lowercase()
        },
        case_sensitive_paths: case_sensitive,
        app_type: raw.app_type,
        api,
        site_authenticator: raw.site_authenticator.clone(),
        web_session_name: raw.web_session.clone(),
        web_session: 0,
        rules,
        rejection: rejection(&format!("{field}.rejection"), raw.rejection.as_ref())?,
        resources,
        routes,
    })
}

/// The rules of an application, resource or rule set as one node; `field` is where the
/// `rules` list sits, `label` what an audit line calls the whole list.
fn rule_list(
    field: &str,
    label: Option<&String>,
    mode: Mode,
    rules: &[RawRule],
    sets: &mut RuleSets,
) -> Result<Node, ConfigError> {
    let mut nodes = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        nodes.push(rule(&format!("{field}.rules[{i}]"), r, sets)?);
    }
    Ok(Node {
        label: label.cloned().unwrap_or_else(|| format!("{field}.rules")),
        kind: match mode {
            Mode::All => Kind::All(nodes),
            Mode::Any => Kind::Any(nodes),
        },
        rejection: None,
    })
}

fn rule(field: &str, raw: &RawRule, sets: &mut RuleSets) -> Result<Node, ConfigError> {
    let mut node = rule_kind(field, raw, sets)?;
    let handler = match raw {
        RawRule::RuleSet { .. } => None,
        RawRule::All { rejection, .. }
        | RawRule::Any { rejection, .. }
        | RawRule::Attribute { rejection, .. }
        | RawRule::Scope { rejection, .. }
        | RawRule::Network { rejection, .. }
        | RawRule::Time { rejection, .. }
        | RawRule::Method { rejection, .. }
        | RawRule::Header { rejection, .. }
        | RawRule::Query { rejection, .. }
        | RawRule::Redirect { rejection, .. }
        | RawRule::RateLimit { rejection, .. } => rejection.as_ref(),
    };
    if handler.is_some() {
        node.rejection = rejection(&format!("{field}.rejection"), handler)?;
    }
    Ok(node)
}

fn rule_kind(field: &str, raw: &RawRule, sets: &mut RuleSets) -> Result<Node, ConfigError> {
    let label = |name: &Option<String>| name.clone().unwrap_or_else(|| field.to_string());
    let node = |label: String, kind: Kind| Node {
        label,
        kind,
        rejection: None,
    };
    Ok(match raw {
        RawRule::All { name, rules, .. } => {
            let mut n = rule_list(field, name.as_ref(), Mode::All, rules, sets)?;
            n.label = label(name);
            n
        }
        RawRule::Any { name, rules, .. } => {
            let mut n = rule_list(field, name.as_ref(), Mode::Any, rules, sets)?;
            n.label = label(name);
            n
        }
        RawRule::RuleSet { name } => sets.get(name, &format!("{field}.name"))?,
        RawRule::Attribute {
            name, claim, test, ..
        } => {
            if claim.is_empty() {
                return Err(err(format!("{field}.claim"), "must not be empty"));
            }
            if test.present {
                return Err(err(
                    format!("{field}.present"),
                    "is for header and query rules",
                ));
            }
            Node {
                label: label(name),
                rejection: None,
                kind: Kind::Attribute {
                    claim: claim.clone(),
                    test: matcher(field, test, sets)?,
                },
            }
        }
        RawRule::Scope { name, all, any, .. } => {
            let (scopes, need_all, key) = match (all, any) {
                (Some(s), None) => (s, true, "all"),
                (None, Some(s)) => (s, false, "any"),
                _ => return Err(err(field, "give exactly one of `all` or `any`")),
            };
            if scopes.is_empty() || scopes.iter().any(|s| s.is_empty() || s.contains(' ')) {
                return Err(err(
                    format!("{field}.{key}"),
                    "must list scopes (non-empty, without spaces)",
                ));
            }
            node(
                label(name),
                Kind::Scope {
                    scopes: scopes.clone(),
                    all: need_all,
                    required: scopes.join(" "),
                },
            )
        }
        RawRule::Network {
            name,
            cidrs,
            negate,
            ..
        } => {
            if cidrs.is_empty() {
                return Err(err(
                    format!("{field}.cidrs"),
                    "must list at least one range",
                ));
            }
            let mut out = Vec::new();
            for (i, c) in cidrs.iter().enumerate() {
                out.push(cidr(&format!("{field}.cidrs[{i}]"), c)?);
            }
            Node {
                label: label(name),
                rejection: None,
                kind: Kind::Network {
                    cidrs: out,
                    negate: *negate,
                },
            }
        }
        RawRule::Time {
            name,
            days,
            from,
            to,
            utc_offset,
            ..
        } => {
            let mut mask = 0x7f; // every day
            if let Some(days) = days {
                mask = 0;
                for (i, d) in days.iter().enumerate() {
                    mask |= 1 << weekday(&format!("{field}.days[{i}]"), d)?;
                }
                if mask == 0 {
                    return Err(err(format!("{field}.days"), "must list at least one day"));
                }
            }
            let from = match from {
                Some(t) => clock(&format!("{field}.from"), t)?,
                None => 0,
            };
            let to = match to {
                Some(t) => clock(&format!("{field}.to"), t)?,
                None => 24 * 60,
            };
            if from == to {
                return Err(err(format!("{field}.to"), "must differ from `from`"));
            }
            Node {
                label: label(name),
                rejection: None,
                kind: Kind::Time {
                    days: mask,
                    from,
                    to,
                    offset_s: offset(&format!("{field}.utc_offset"), utc_offset)?,
                },
            }
        }
        RawRule::Method {
            name, methods: m, ..
        } => node(
            label(name),
            Kind::Method(methods(&format!("{field}.methods"), m)?),
        ),
        RawRule::Header {
            name, header, test, ..
        } => {
            if header.is_empty() || !header.bytes().all(is_token_char) {
                return Err(err(format!("{field}.header"), "must be a header name"));
            }
            Node {
                label: label(name),
                rejection: None,
                kind: Kind::Header {
                    header: header.to_ascii_lowercase(),
                    test: matcher(field, test, sets)?,
                },
            }
        }
        RawRule::Query {
            name, param, test, ..
        } => {
            if param.is_empty() {
                return Err(err(format!("{field}.param"), "must not be empty"));
            }
            Node {
                label: label(name),
                rejection: None,
                kind: Kind::Query {
                    param: param.clone(),
                    test: matcher(field, test, sets)?,
                },
            }
        }
        RawRule::Redirect {
            name, url, status, ..
        } => {
            crate::config::parse_http_url(&format!("{field}.url"), url)?;
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Err(err(
                    format!("{field}.status"),
                    "must be 301, 302, 303, 307 or 308",
                ));
            }
            Node {
                label: label(name),
                rejection: None,
                kind: Kind::Redirect {
                    url: url.clone(),
                    status: *status,
                },
            }
        }
        RawRule::RateLimit {
            name,
            requests,
            interval_s,
            burst,
            per,
            ..
        } => {
            if *requests == 0 {
                return Err(err(format!("{field}.requests"), "must be at least 1"));
            }
            if *interval_s == 0 || *interval_s > 86_400 * 366 {
                return Err(err(
                    format!("{field}.interval_s"),
                    "must be 1 second to a year",
                ));
            }
            let burst = burst.unwrap_or(*requests);
            if burst == 0 {
                return Err(err(format!("{field}.burst"), "must be at least 1"));
            }
            let id = sets.next_id;
            sets.next_id = id.saturating_add(1);
            node(
                label(name),
                Kind::RateLimit {
                    limit: Limit {
                        id,
                        capacity: f64::from(burst),
                        per_ms: f64::from(*requests) / (f64::from(*interval_s) * 1000.0),
                    },
                    per: *per,
                },
            )
        }
    })
}

/// Compiles a rejection handler (`field` is where it sits).
fn rejection(field: &str, raw: Option<&RawRejection>) -> Result<Option<Rejection>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    Ok(Some(match raw {
        RawRejection::Error {
            status,
            content_type,
            body,
        } => {
            if !(400..=599).contains(status) {
                return Err(err(format!("{field}.status"), "must be 400 to 599"));
            }
            let essence = content_type.split(';').next().unwrap_or_default().trim();
            let valid = essence.split_once('/').is_some_and(|(t, s)| {
                !t.is_empty() && !s.is_empty() && t.bytes().chain(s.bytes()).all(is_token_char)
            }) && content_type
                .bytes()
                .all(|c| c == b'\t' || (b' '..0x7f).contains(&c));
            if !valid {
                return Err(err(
                    format!("{field}.content_type"),
                    "must be a media type such as text/html; charset=utf-8",
                ));
            }
            if body.len() > 64 * 1024 {
                return Err(err(format!("{field}.body"), "must be at most 64 KiB"));
            }
            Rejection::Error {
                status: *status,
                content_type: content_type.clone(),
                body: Template::parse(body),
            }
        }
        RawRejection::Redirect { url, status } => {
            crate::config::parse_http_url(&format!("{field}.url"), url)?;
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Err(err(
                    format!("{field}.status"),
                    "must be 301, 302, 303, 307 or 308",
                ));
            }
            Rejection::Redirect {
                url: url.clone(),
                status: *status,
            }
        }
    }))
}

/// Longest regex accepted (characters), and the compiled size and nesting bounds: a
/// configuration cannot make a regex that eats memory or stack.
const MAX_REGEX_LEN: usize = 1024;
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
const REGEX_NEST_LIMIT: u32 = 32;

fn regex(field: &str, raw: &str, case_insensitive: bool) -> Result<regex_lite::Regex, ConfigError> {
    if raw.len() > MAX_REGEX_LEN {
        return Err(err(
            field,
            format!("regex longer than {MAX_REGEX_LEN} characters"),
        ));
    }
    regex_lite::RegexBuilder::new(raw)
        .case_insensitive(case_insensitive)
        .size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(REGEX_NEST_LIMIT)
        .build()
        .map_err(|e| err(field, format!("invalid or too large regex: {e}")))
}

fn matcher(field: &str, raw: &RawTest, sets: &mut RuleSets) -> Result<Matcher, ConfigError> {
    let ci = raw.case_insensitive;
    let fold = |s: &String| if ci { s.to_lowercase() } else { s.clone() };
    let given = [
        raw.equals.is_some(),
        raw.one_of.is_some(),
        raw.like.is_some(),
        raw.matches.is_some(),
        raw.present,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        return Err(err(
            field,
            "give exactly one of `equals`, `one_of`, `like`, `matches` or `present`",
        ));
    }
    let decide = if let Some(v) = &raw.equals {
        Decide::OneOf(vec![fold(v)])
    } else if let Some(vs) = &raw.one_of {
        if vs.is_empty() {
            return Err(err(
                format!("{field}.one_of"),
                "must list at least one value",
            ));
        }
        Decide::OneOf(vs.iter().map(fold).collect())
    } else if let Some(p) = &raw.like {
        Decide::Like(fold(p))
    } else if let Some(re) = &raw.matches {
        let key = (re.clone(), ci);
        let compiled = match sets.regexes.get(&key) {
            Some(r) => Arc::clone(r),
            None => {
                let r = Arc::new(regex(&format!("{field}.matches"), re, ci)?);
                sets.regexes.insert(key, Arc::clone(&r));
                r
            }
        };
        Decide::Regex(compiled)
    } else {
        Decide::Present
    };
    Ok(Matcher {
        decide,
        case_insensitive: ci,
        negate: raw.negate,
    })
}

fn host_pattern(field: &str, raw: &str) -> Result<String, ConfigError> {
    let h = raw.to_ascii_lowercase();
    let rest = h.strip_prefix("*.").unwrap_or(&h);
    let ok = h == "*"
        || (!rest.is_empty()
            && !rest.contains('*')
            && rest
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-.:[]".contains(&c)));
    if !ok {
        return Err(err(
            field,
            "must be a host name, `*.domain` or `*` (optionally with :port)",
        ));
    }
    Ok(h)
}

/// A path with `*` wildcards, or `~` and a regex. A case-insensitive pattern is stored
/// lower-case (and its regex made case-insensitive): it is matched against the lower-cased path.
fn path_pattern(field: &str, raw: &str, case_sensitive: bool) -> Result<Pattern, ConfigError> {
    if let Some(re) = raw.strip_prefix('~') {
        let mut p = Pattern::new(raw);
        p.regex = Some(regex(field, re, !case_sensitive)?);
        return Ok(p);
    }
    if !raw.starts_with('/') || raw.contains(['?', '#']) {
        return Err(err(
            field,
            "must be a path starting with / (wildcard `*` allowed, no query), or ~ and a regex",
        ));
    }
    Ok(match case_sensitive {
        true => Pattern::new(raw),
        false => Pattern::new(&raw.to_ascii_lowercase()),
    })
}

fn methods(field: &str, raw: &[String]) -> Result<Vec<String>, ConfigError> {
    if raw.is_empty() {
        return Err(err(field, "must list at least one method"));
    }
    let mut out = Vec::new();
    for (i, m) in raw.iter().enumerate() {
        if m.is_empty() || !m.bytes().all(is_token_char) {
            return Err(err(format!("{field}[{i}]"), "must be an HTTP method"));
        }
        out.push(m.to_ascii_uppercase());
    }
    Ok(out)
}

fn cidr(field: &str, raw: &str) -> Result<Cidr, ConfigError> {
    let (addr, len) = match raw.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (raw, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| err(field, "not an IPv4 or IPv6 address or range"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| err(field, format!("prefix length must be 0..={max}")))?,
    };
    let c = Cidr::new(addr, len);
    // A range with host bits set is usually a typo for a different range; refuse it.
    if !c.contains(addr) || c.base != Cidr::bits(addr) {
        return Err(err(field, "has bits set beyond the prefix length"));
    }
    Ok(c)
}

fn weekday(field: &str, raw: &str) -> Result<u8, ConfigError> {
    // 0 = Sunday, as in the day arithmetic in `super`.
    const FULL: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let lower = raw.to_ascii_lowercase();
    FULL.iter()
        .position(|d| *d == lower || (lower.len() == 3 && d.starts_with(&lower)))
        .map(|d| d as u8)
        .ok_or_else(|| err(field, "must be a day of the week such as `mon` or `monday`"))
}

/// `HH:MM` as minutes since midnight; `24:00` is allowed as the end of the day.
fn clock(field: &str, raw: &str) -> Result<u16, ConfigError> {
    let bad = || err(field, "must be a time of day as HH:MM (00:00 to 24:00)");
    let (h, m) = raw.split_once(':').ok_or_else(bad)?;
    if h.len() != 2 || m.len() != 2 {
        return Err(bad());
    }
    let h: u16 = h.parse().map_err(|_| bad())?;
    let m: u16 = m.parse().map_err(|_| bad())?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// `+HH:MM` / `-HH:MM` (or `Z`) as seconds east of UTC.
fn offset(field: &str, raw: &str) -> Result<i64, ConfigError> {
    if raw == "Z" {
        return Ok(0);
    }
    let bad = || err(field, "must be a UTC offset such as +02:00 or -05:30");
    let sign = match raw.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(bad()),
    };
    let minutes = clock(field, &raw[1..]).map_err(|_| bad())?;
    if minutes > 14 * 60 {
        return Err(bad());
    }
    Ok(sign * i64::from(minutes) * 60)
}
