//! Web sessions: each a sign-in at one OP with one client, one cookie and its own keys,
//! timeouts and identity headers. The top-level `op`, `client`, `session`, `identity_headers`
//! and `logout` are the default web session (index 0); `web_sessions` adds named ones, which
//! applications choose with `web_session`.

use super::op::{read_client, read_op, OpUse};
use super::raw::{RawClient, RawIdentityHeader, RawLogout, RawOp, RawSession};
use super::{identity, is_token_char, parse_http_url, session, ConfigError, RESERVED_HEADERS};
use super::{ClientSettings, IdentityHeader, LogoutSettings, OpSettings, SessionSettings};
use crate::http::HeaderOps;
use crate::session::chunks::is_ours;

/// The name of the web session made of the top-level sections.
pub const DEFAULT_WEB_SESSION: &str = "default";

/// One web session, checked.
#[derive(Debug, Clone)]
pub struct WebSession {
    pub name: String,
    /// Index of its OP in `Settings::ops`.
    pub op: usize,
    pub client: ClientSettings,
    pub session: SessionSettings,
    pub identity_headers: Vec<IdentityHeader>,
    /// Every identity header of every web session removed: what a request without an
    /// identity gets, and what this session's own header operations also remove of the
    /// others' (a backend behind two web sessions must not trust a client's copy of either).
    pub no_identity: HeaderOps,
    /// The other web sessions' identity headers, removed where this one's are set.
    pub foreign_headers: Vec<String>,
    pub logout: LogoutSettings,
    /// `<base>/oidc/cb` for the default web session, `<base>/oidc/cb/<name>` for the others;
    /// likewise the logout, back-channel and front-channel paths.
    pub callback_path: String,
    pub logout_path: String,
    pub backchannel_path: String,
    pub frontchannel_path: String,
    /// Prefix of its login-transaction cookies (`<session cookie>.txn.<id>`).
    pub txn_cookie_prefix: String,
}

/// A web session's sections as written, wherever they came from.
pub(super) struct RawParts {
    pub(super) name: String,
    pub(super) op: RawOp,
    pub(super) client: RawClient,
    pub(super) session: RawSession,
    pub(super) identity_headers: Vec<RawIdentityHeader>,
    pub(super) logout: RawLogout,
}

/// Reads one web session. `at`: `""` for the default one (its fields are top-level), else
/// `web_sessions[i]`; `op`: the index its OP gets.
pub(super) fn read(
    at: &str,
    raw: RawParts,
    base_path: &str,
    op: usize,
) -> Result<(WebSession, OpSettings), ConfigError> {
    let under = |name: &str| match at {
        "" => name.to_string(),
        at => format!("{at}.{name}"),
    };
    let named = !at.is_empty();
    if named && !is_web_session_name(&raw.name) {
        return Err(ConfigError::new(
            under("name"),
            "must be 1 to 32 of a-z, 0-9, - and _ (it is part of the callback path)",
        ));
    }
    if named && raw.name == DEFAULT_WEB_SESSION {
        return Err(ConfigError::new(
            under("name"),
            "`default` is the web session of the top-level op, client and session",
        ));
    }
    let suffix = if named {
        format!("/{}", raw.name)
    } else {
        String::new()
    };
    let callback_path = format!("{base_path}/oidc/cb{suffix}");
    let op_settings = read_op(&under("op"), raw.op, OpUse::Login)?;
    let client = read_client(&under("client"), raw.client, &callback_path)?;
    let scope = named.then_some(raw.name.as_str());
    let session = session::read(raw.session, scope).map_err(|e| e.within(at))?;
    let identity_headers = identity_headers(&under("identity_headers"), &raw.identity_headers)?;
    let mut claims: Vec<String> = Vec::new();
    for c in session
        .claims
        .iter()
        .chain(identity_headers.iter().map(|h| &h.claim))
    {
        if c != "sub" && !claims.contains(c) {
            claims.push(c.clone());
        }
    }
    if let Some(uri) = &raw.logout.redirect_uri {
        if !uri.starts_with('/') || uri.starts_with("//") {
            parse_http_url(&under("logout.redirect_uri"), uri)?;
        }
    }
    let web = WebSession {
        op,
        client,
        no_identity: identity::no_identity(&identity_headers),
        foreign_headers: Vec::new(),
        identity_headers,
        logout: LogoutSettings {
            redirect_uri: raw.logout.redirect_uri,
            use_end_session_endpoint: raw.logout.use_end_session_endpoint,
        },
        logout_path: format!("{base_path}/oidc/logout{suffix}"),
        backchannel_path: format!("{base_path}/oidc/backchannel{suffix}"),
        frontchannel_path: format!("{base_path}/oidc/frontchannel{suffix}"),
        callback_path,
        txn_cookie_prefix: format!("{}.txn.", session.cookie_name),
        session: SessionSettings { claims, ..session },
        name: raw.name,
    };
    Ok((web, op_settings))
}

fn is_web_session_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

fn identity_headers(
    at: &str,
    raw: &[RawIdentityHeader],
) -> Result<Vec<IdentityHeader>, ConfigError> {
    let mut out: Vec<IdentityHeader> = Vec::new();
    for (i, h) in raw.iter().enumerate() {
        let name = h.header.to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(ConfigError::new(
                format!("{at}[{i}].header"),
                "must be an HTTP header name",
            ));
        }
        // Credentials go in `authorization` (a forwarded bearer token, the session's access
        // token), and one web session's identity headers are removed from the others' requests.
        let credentials = ["authorization", "proxy-authorization"].contains(&name.as_str());
        if credentials || RESERVED_HEADERS.contains(&name.as_str()) {
            return Err(ConfigError::new(
                format!("{at}[{i}].header"),
                format!("`{name}` cannot carry identity"),
            ));
        }
        if out.iter().any(|x| x.header == name) {
            return Err(ConfigError::new(
                format!("{at}[{i}].header"),
                "is listed twice",
            ));
        }
        if h.claim.is_empty() {
            return Err(ConfigError::new(
                format!("{at}[{i}].claim"),
                "must name a claim",
            ));
        }
        out.push(IdentityHeader {
            header: name,
            claim: h.claim.clone(),
        });
    }
    Ok(out)
}

/// Checks what web sessions must not share, and gives each the removal of the others'
/// identity headers. Cookie names may be the same (then a browser holds one of the two
/// sessions at a time): each web session's keys are its own, so one's cookie never opens as
/// the other's.
pub(super) fn check_all(webs: &mut [WebSession]) -> Result<(), ConfigError> {
    for (i, w) in webs.iter().enumerate() {
        if webs.iter().take(i).any(|other| other.name == w.name) {
            return Err(ConfigError::new(
                format!("web_sessions[{}].name", i.saturating_sub(1)),
                "is used twice",
            ));
        }
        // The same name is allowed (one session per browser at a time); a name inside another
        // one's namespace (its chunks `<name>.N`, its `<name>.txn.` cookies) is not: clearing
        // or chunking one session would overwrite the other's cookie.
        let (a, ap) = (&w.session.cookie_name, &w.txn_cookie_prefix);
        let inside = webs.iter().take(i).find(|o| {
            let (b, bp) = (&o.session.cookie_name, &o.txn_cookie_prefix);
            a != b && (is_ours(a, b) || is_ours(b, a) || a.starts_with(bp) || b.starts_with(ap))
        });
        if let Some(other) = inside {
            return Err(ConfigError::new(
                format!("web_sessions[{}].session.cookie_name", i.saturating_sub(1)),
                format!(
                    "`{a}` is within the cookies of web session `{}` (`{}` and its `.N` and \
                     `.txn.` cookies): use the same name or an unrelated one",
                    other.name, other.session.cookie_name
                ),
            ));
        }
    }
    let mut all: Vec<String> = Vec::new();
    for h in webs.iter().flat_map(|w| w.identity_headers.iter()) {
        if !all.contains(&h.header) {
            all.push(h.header.clone());
        }
    }
    let no_identity: HeaderOps = all.iter().map(|h| (h.clone(), None)).collect();
    for w in webs.iter_mut() {
        w.foreign_headers = all
            .iter()
            .filter(|h| !w.identity_headers.iter().any(|own| &own.header == *h))
            .cloned()
            .collect();
        w.no_identity = no_identity.clone();
    }
    Ok(())
}

impl WebSession {
    /// The header operations for a subject and its claims (a session's or a bearer token's):
    /// this web session's headers set (or removed where the claim is missing), the other web
    /// sessions' removed. `Err` names a claim that cannot be a header value.
    pub fn identity_for(
        &self,
        sub: Option<&str>,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<HeaderOps, identity::UnusableClaim> {
        let own = identity::claim_headers(&self.identity_headers, sub, claims)?;
        if self.foreign_headers.is_empty() {
            return Ok(own);
        }
        let foreign = self.foreign_headers.iter().map(|h| (h.clone(), None));
        Ok(own.iter().cloned().chain(foreign).collect())
    }
}
