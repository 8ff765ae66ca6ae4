//! What the gateway answers when the policy or a bearer-token check says no, and the audit
//! line of a decision. Plain functions of the decision: the flow in `gateway` chooses when.

use crate::bearer::{self, BearerError};
use crate::config::Settings;
use crate::http::printable;
use crate::http::LocalResponse;
use crate::pages::Problem;
use crate::policy::{Application, AuditRecord, Decision, Outcome, RequestFacts, Resource};
use crate::request::HeaderSource;

/// The answer to a request the policy refused (403, 429 or a redirect), and a log line.
/// `api`: the caller presented a bearer token (RFC 6750 answers apply).
pub fn refusal(
    settings: &Settings,
    decision: &Decision<'_>,
    html: bool,
    api: bool,
    reference: &str,
) -> (LocalResponse, Option<String>) {
    let rule = decision.rule;
    let log = |status: u32| {
        Some(format!(
            "access denied by rule `{}` (status={status} reference={reference})",
            printable(rule)
        ))
    };
    match &decision.outcome {
        Outcome::Redirect { url, status } => (
            LocalResponse::new(u32::from(*status)).header("location", *url),
            None,
        ),
        Outcome::RateLimited { retry_after_s } => {
            let problem = Problem {
                status: 429,
                code: "rate_limited",
                message: "Too many requests; try again later.",
                reference: Some(reference),
                retry: None,
            };
            let response = match decision.handler {
                Some(h) => rendered(h.render("rate_limited", reference, rule)),
                None => problem.respond(false),
            };
            (
                response.header("retry-after", retry_after_s.max(&1).to_string()),
                log(429),
            )
        }
        Outcome::Forbidden | Outcome::NeedIdentity | Outcome::Allow => {
            if let Some(h) = decision.handler {
                let response = rendered(h.render("forbidden", reference, rule));
                let status = response.status;
                return (response, log(status));
            }
            let mut response = Problem {
                status: 403,
                code: if decision.scope.is_some() && api {
                    "insufficient_scope"
                } else {
                    "forbidden"
                },
                message: "You do not have access to this resource.",
                reference: Some(reference),
                retry: None,
            }
            .respond(html && !api);
            if api {
                response = response.header(
                    "www-authenticate",
                    bearer::challenge(
                        &settings.api.realm,
                        Some("insufficient_scope").filter(|_| decision.scope.is_some()),
                        decision.scope,
                    ),
                );
            }
            (response, log(403))
        }
    }
}

fn rendered((status, headers, body): (u16, Vec<(String, String)>, Vec<u8>)) -> LocalResponse {
    let mut r = LocalResponse::new(u32::from(status));
    r.headers.extend(headers);
    r.body = body;
    r
}

/// RFC 6750 §3: a request with a missing, malformed or refused bearer token.
pub fn bearer_challenge(realm: &str, e: &BearerError) -> LocalResponse {
    let (status, error, message) = match e {
        BearerError::Malformed => (
            400,
            Some("invalid_request"),
            "The Authorization header is not a valid bearer credential.",
        ),
        BearerError::Missing => (401, None, "A bearer token is required."),
        BearerError::InvalidToken(_) | BearerError::NeedKeys => {
            (401, Some("invalid_token"), "The access token is not valid.")
        }
    };
    Problem {
        status,
        code: error.unwrap_or("token_required"),
        message,
        reference: None,
        retry: None,
    }
    .respond(false)
    .header("www-authenticate", bearer::challenge(realm, error, None))
}

/// One JSON audit line for a decision on an audited resource. Holds no token, cookie or
/// query string (a query may carry secrets).
pub fn audit_line(
    facts: &RequestFacts<'_>,
    app: &Application,
    resource: Option<&Resource>,
    decision: &Decision<'_>,
    request: &dyn HeaderSource,
    elapsed_us: u64,
) -> String {
    let request_id = request
        .header("x-request-id")
        .map(printable)
        .unwrap_or_default();
    let record = AuditRecord {
        time: facts.now_ms,
        request_id: &request_id,
        subject: facts.identity.map(|i| i.sub),
        client_ip: facts.client_ip,
        application: &app.name,
        resource: resource.map(|r| r.name.as_str()),
        method: facts.method,
        path: facts.path,
        decision: AuditRecord::decision_name(&decision.outcome),
        rule: decision.rule,
        elapsed_us,
    };
    format!("audit: {}", record.to_json())
}
