//! The gateway's own endpoints under the base path (`/pa`): heartbeat, callback, logout, JWKS.

use super::head::RequestHead;
use super::login::session_cookie;
use super::route::Endpoint;
use super::state::VmState;
use super::{not_ready, RequestFlow};
use crate::config::{OpEndpoints, Settings};
use crate::http::{Action, LocalResponse};
use crate::login::Entropy;
use crate::oidc;
use crate::pages;

impl RequestFlow {
    pub(super) fn endpoint(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        head: &RequestHead<'_>,
        endpoint: Endpoint,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        match endpoint {
            Endpoint::Heartbeat => {
                Action::Respond(LocalResponse::new(200).body("text/plain", "OK"))
            }
            Endpoint::Callback => match vm.endpoints.clone() {
                Some(endpoints) => self.callback(settings, &endpoints, head, now, rng),
                None => not_ready(vm, true),
            },
            Endpoint::AuthtokenJwks => match &settings.authtoken {
                Some(signer) => {
                    let mut r = LocalResponse::new(200)
                        .body("application/jwk-set+json", signer.jwks_json());
                    r.headers.retain(|(n, _)| n != "cache-control");
                    Action::Respond(r.header("cache-control", "public, max-age=300"))
                }
                None => Action::Respond(self.internal_error()),
            },
            Endpoint::Logout => Action::Respond(logout(settings, vm.endpoints.as_deref(), head)),
        }
    }
}

/// Ends the session, at the OP too where it has an end-session endpoint. A logout another
/// site made the browser send (a link or an image on a foreign page) only gets a page that
/// asks: ending someone's session is not something a stranger's page may do.
fn logout(
    settings: &Settings,
    endpoints: Option<&OpEndpoints>,
    head: &RequestHead<'_>,
) -> LocalResponse {
    if head.is_cross_site(settings) || !matches!(head.method, "GET" | "HEAD" | "POST") {
        return pages::confirm_logout(&settings.logout_path);
    }
    let clear = session_cookie(settings, "", 0);
    let origin = head.trusted_origin(settings);
    let after = match &settings.logout.redirect_uri {
        Some(u) if u.starts_with('/') => origin.as_ref().map(|o| format!("{o}{u}")),
        Some(u) => Some(u.clone()),
        None => None,
    };
    let post_logout = after
        .clone()
        .or_else(|| origin.as_ref().map(|o| format!("{o}/")));
    if let Some(url) = oidc::end_session_url(settings, endpoints, None, post_logout.as_deref()) {
        return LocalResponse::redirect(&url).header("set-cookie", clear);
    }
    match after {
        Some(url) => LocalResponse::redirect(&url).header("set-cookie", clear),
        None => LocalResponse::new(200).header("set-cookie", clear).body(
            "text/html; charset=utf-8",
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Signed out</title></head>\
                 <body><h1>Signed out</h1><p>You are signed out.</p></body></html>\n",
        ),
    }
}
