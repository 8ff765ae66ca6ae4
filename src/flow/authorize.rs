//! Whether the identified request may go on: the application's and the resource's rules, and
//! the answers to requests that routing or the rules refuse.

use std::net::IpAddr;

use super::head::RequestHead;
use super::identify::Who;
use super::metered::Counted;
use super::route::{Refused, Route};
use super::state::VmState;
use super::{printable, Level, RequestFlow};
use crate::access;
use crate::bearer::BearerError;
use crate::config::Settings;
use crate::http::{Action, LocalResponse};
use crate::login::{random_token, Entropy};
use crate::pages::Problem;
use crate::policy::{self, AppType, Application, Outcome, RateLimits, RequestFacts, Resource};
use crate::request::HeaderSource;

impl RequestFlow {
    /// `None` when the rules let the request through; otherwise the answer (a login, a
    /// challenge, a refusal). The implicit policy has no rules: an identity is all it takes.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn authorize(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        route: &Route<'_, '_>,
        app: &Application,
        resource: &Resource,
        who: &Who<'_>,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Option<Action> {
        let identity = who.identity();
        if settings.policy_is_implicit {
            let outcome = match identity {
                Some(_) => Outcome::Allow,
                None => Outcome::NeedIdentity,
            };
            if self.first(Counted::Decision) {
                vm.metrics.decision(settings, app, &outcome);
            }
            self.access_decision(settings, if identity.is_some() { "allow" } else { "login" });
            return match outcome {
                Outcome::Allow => None,
                _ => Some(self.need_identity(settings, vm, request, route, who, now, rng)),
            };
        }
        let facts = RequestFacts {
            method: route.method,
            path: &route.path,
            query: route.query,
            headers: request,
            client_ip: client_ip(settings, request),
            now,
            now_ms: now.saturating_mul(1000),
            identity,
        };
        // A rerun (after this request's own callout) decides again, but its rate-limit
        // tokens were taken and its audit line written the first time.
        let first = !std::mem::replace(&mut self.decided, true);
        let mut decision = if first {
            app.evaluate(Some(resource), &facts, &mut vm.limits)
        } else {
            app.evaluate(Some(resource), &facts, &mut RateLimits::new(64))
        };
        // A form POST must also pass the rules of what its body may turn it into; their rate
        // limits are not charged (the request is counted once, by its own resource).
        for other in &route.also {
            if decision.outcome != Outcome::Allow {
                break;
            }
            decision = app.evaluate(Some(other), &facts, &mut RateLimits::new(64));
        }
        if self.first(Counted::Decision) {
            vm.metrics.decision(settings, app, &decision.outcome);
        }
        if first && resource.audit {
            let elapsed = request
                .now_us()
                .saturating_sub(self.audit_started_us.unwrap_or(0));
            let line = access::audit_line(&facts, app, Some(resource), &decision, request, elapsed);
            self.note(Level::Info, line);
        }
        let name = policy::AuditRecord::decision_name(&decision.outcome);
        self.access_decision(settings, name);
        match decision.outcome {
            Outcome::Allow => None,
            Outcome::NeedIdentity => {
                Some(self.need_identity(settings, vm, request, route, who, now, rng))
            }
            _ => {
                let head = RequestHead::read(request, route);
                let html = !who.use_bearer && !head.is_api_like();
                let reference = random_token(rng, 6).unwrap_or_default();
                let (response, log) =
                    access::refusal(settings, &decision, html, who.use_bearer, &reference);
                if let Some(log) = log {
                    self.note(Level::Info, log);
                }
                Some(Action::Respond(response))
            }
        }
    }

    /// No identity where one is needed: a bearer challenge for API requests, a login (or a
    /// 401) for the others.
    #[allow(clippy::too_many_arguments)]
    fn need_identity(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        route: &Route<'_, '_>,
        who: &Who<'_>,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        if who.use_bearer {
            let e = match who.bearer {
                Some(_) => BearerError::InvalidToken("no identity"),
                None => BearerError::Missing,
            };
            return self.bearer_refused(settings, vm, e);
        }
        let head = RequestHead::read(request, route);
        self.unauthenticated(settings, vm, &head, now, rng)
    }

    /// The answer to a request that routing refused.
    pub(super) fn route_refused(
        &mut self,
        request: &dyn HeaderSource,
        refused: Refused<'_>,
        rng: &mut dyn Entropy,
    ) -> Action {
        let html = RequestHead::accepts_html(request);
        match refused {
            Refused::Path(why) => self.bad_request(rng, html, "invalid_path", why),
            Refused::Host => self.bad_request(rng, html, "invalid_host", "authority"),
            Refused::Header(name) => self.bad_request(rng, html, "invalid_header", name),
            Refused::NoApplication { host, path } => Action::Respond(self.forbidden_page(
                rng,
                html,
                "no_application",
                format!(
                    "no application for host {} path {}",
                    printable(&host),
                    printable(&path)
                ),
            )),
            Refused::NoResource { app, allowed } => {
                let api = match app.app_type {
                    AppType::Web => false,
                    AppType::Api => true,
                    AppType::Both => request.header("authorization").is_some() || !html,
                };
                let log = format!("no resource of application `{}` serves it", app.name);
                if api && !allowed.is_empty() {
                    self.note(Level::Info, format!("{log} (method not allowed)"));
                    return Action::Respond(method_not_allowed(&allowed));
                }
                Action::Respond(self.forbidden_page(rng, html && !api, "no_resource", log))
            }
        }
    }

    fn bad_request(&mut self, rng: &mut dyn Entropy, html: bool, code: &str, why: &str) -> Action {
        self.refuse(
            rng,
            html,
            400,
            code,
            "The gateway cannot tell what this request is for.",
            None,
            format!("request refused: {code} ({why})"),
        )
    }
}

/// 405 with the methods the matching resources allow (RFC 9110 §15.5.6).
fn method_not_allowed(allowed: &[&str]) -> LocalResponse {
    let mut r = Problem {
        status: 405,
        code: "method_not_allowed",
        message: "This method is not allowed here.",
        reference: None,
        retry: None,
    }
    .respond(false);
    r.headers.push(("allow".into(), allowed.join(", ")));
    r
}

/// The client's address for network rules and audit lines: the downstream peer, or the
/// entry of `X-Forwarded-For` that the configured number of trusted proxies vouch for.
fn client_ip(settings: &Settings, request: &dyn HeaderSource) -> Option<IpAddr> {
    if !settings.policy_needs_client_ip {
        return None; // a host call saved on every request
    }
    let hops = settings.policy.xff_trusted_hops;
    // Every copy, joined as one list: hops are counted from the right of all of them.
    let xff = (hops > 0).then(|| {
        let copies = request
            .headers()
            .iter()
            .filter(|(n, _)| *n == "x-forwarded-for");
        let text: Vec<&str> = copies
            .map(|(_, v)| std::str::from_utf8(v).unwrap_or(""))
            .collect();
        text.join(",")
    });
    policy::client_ip(request.client_address().as_deref(), xff.as_deref(), hops)
}
