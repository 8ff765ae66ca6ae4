//! One audit line per decision on an audited resource. Holds no token, cookie or query
//! string: only who, from where, what, and the answer.

use std::net::IpAddr;

use serde::Serialize;

use super::Outcome;

/// Longest path kept in an audit line (characters); longer ones are cut.
const MAX_PATH: usize = 2048;

#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord<'a> {
    /// Unix milliseconds.
    pub time: u64,
    pub request_id: &'a str,
    pub subject: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub application: &'a str,
    pub resource: Option<&'a str>,
    pub method: &'a str,
    /// The request path; anything from `?` or `#` on is dropped when serialised.
    pub path: &'a str,
    /// See [`AuditRecord::decision_name`].
    pub decision: &'a str,
    pub rule: &'a str,
    pub elapsed_us: u64,
}

impl AuditRecord<'_> {
    /// `allow`, `login` (an identity is needed), `deny`, `redirect` or `rate_limited`.
    pub fn decision_name(outcome: &Outcome) -> &'static str {
        match outcome {
            Outcome::Allow => "allow",
            Outcome::NeedIdentity => "login",
            Outcome::Forbidden => "deny",
            Outcome::Redirect { .. } => "redirect",
            Outcome::RateLimited { .. } => "rate_limited",
        }
    }

    /// One line of JSON. The path (canonical, without the query, which may carry secrets) is
    /// cut to a bounded length; a decoded `?` in it is part of the path that was served.
    pub fn to_json(&self) -> String {
        let path = match self.path.char_indices().nth(MAX_PATH) {
            Some((i, _)) => self.path.get(..i).unwrap_or_default(),
            None => self.path,
        };
        let record = AuditRecord {
            path,
            ..self.clone()
        };
        serde_json::to_string(&record).unwrap_or_default()
    }
}
