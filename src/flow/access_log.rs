//! The request's outcome for Envoy's access log (`access_log_fields`): who, which application
//! and resource, and what the policy decided. The flow fills them in as it decides and hands
//! them over with its final action ([`RequestFlow::take_access_fields`]); the host writes them
//! into Envoy's filter state, where `%FILTER_STATE(wasm.envoy_wam.subject:PLAIN)%` and the like
//! print them. Off, none of this costs more than a branch.

use super::identify::Who;
use super::RequestFlow;
use crate::config::Settings;
use crate::http::printable;
use crate::policy::{Application, Resource};

/// Filter-state names (Envoy prefixes them with `wasm.`).
pub const SUBJECT: &str = "envoy_wam.subject";
pub const APPLICATION: &str = "envoy_wam.application";
pub const RESOURCE: &str = "envoy_wam.resource";
pub const DECISION: &str = "envoy_wam.decision";

/// What the access log gets to know of a request. Never a token, cookie or path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFields {
    pub subject: Option<String>,
    pub application: Option<String>,
    pub resource: Option<String>,
    /// `allow`, `deny`, `login`, `redirect`, `rate_limited` (the policy's outcomes, as in
    /// audit lines), `unprotected`, `invalid_identity` (a refused bearer token), `error` (the
    /// identity could not be established: the OP or introspection down, slow or not ready), or
    /// `refused` (routing refused the request: no application or resource, a hostile path or
    /// header).
    pub decision: Option<&'static str>,
}

impl AccessFields {
    /// The (filter-state name, value) pairs that are known.
    pub fn entries(&self) -> Vec<(&'static str, &str)> {
        [
            (SUBJECT, self.subject.as_deref()),
            (APPLICATION, self.application.as_deref()),
            (RESOURCE, self.resource.as_deref()),
            (DECISION, self.decision),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect()
    }
}

impl RequestFlow {
    /// The fields for the access log, once the request is answered or forwarded.
    pub fn take_access_fields(&mut self) -> Option<AccessFields> {
        self.access.take()
    }

    fn access_mut(&mut self, settings: &Settings) -> Option<&mut AccessFields> {
        settings
            .access_log_fields
            .then(|| self.access.get_or_insert_with(AccessFields::default))
    }

    /// Where routing took the request (a new run starts over).
    pub(super) fn access_target(
        &mut self,
        settings: &Settings,
        app: Option<&Application>,
        resource: Option<&Resource>,
    ) {
        if let Some(a) = self.access_mut(settings) {
            *a = AccessFields {
                application: app.map(|x| x.name.clone()),
                resource: resource.map(|x| x.name.clone()),
                ..AccessFields::default()
            };
        }
    }

    /// Who the request is from: the subject, or for a token without one its client.
    pub(super) fn access_subject(&mut self, settings: &Settings, who: &Who<'_>) {
        let Some(a) = self.access_mut(settings) else {
            return;
        };
        let client = who.token.as_ref().and_then(|t| t.client_id.as_deref());
        a.subject = who.identity().map(|id| match (id.sub, client) {
            ("", Some(c)) => format!("client:{}", printable(c)),
            (sub, _) => printable(sub),
        });
    }

    pub(super) fn access_decision(&mut self, settings: &Settings, decision: &'static str) {
        if let Some(a) = self.access_mut(settings) {
            a.decision = Some(decision);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_fields_are_written() {
        let f = AccessFields {
            subject: Some("alice".into()),
            application: None,
            resource: Some("root".into()),
            decision: Some("allow"),
        };
        assert_eq!(
            f.entries(),
            vec![(SUBJECT, "alice"), (RESOURCE, "root"), (DECISION, "allow")]
        );
        assert!(AccessFields::default().entries().is_empty());
    }
}
