//! What the slow paths (login, callback, logout, refusals) read of a request.

use super::route::Route;
use crate::config::Settings;
use crate::request::HeaderSource;

/// The parts of a request that decide how the gateway answers it (a redirect or a 401, HTML
/// or JSON) and where it sends the browser.
pub(super) struct RequestHead<'r> {
    pub method: &'r str,
    scheme: &'static str,
    /// Lower-case, without trailing dots (see [`super::route::normalize_host`]).
    pub host: &'r str,
    /// Path with query, as received.
    pub path: &'r str,
    pub query: &'r str,
    accept: Option<&'r str>,
    sec_fetch_mode: Option<&'r str>,
    sec_fetch_site: Option<&'r str>,
    origin_header: Option<&'r str>,
    x_requested_with: Option<&'r str>,
    pub request: &'r dyn HeaderSource,
}

impl<'r> RequestHead<'r> {
    pub fn read(request: &'r dyn HeaderSource, route: &'r Route<'_, 'r>) -> Self {
        // Envoy sets x-forwarded-proto at the edge; it says what the browser used.
        let https = match request.header("x-forwarded-proto") {
            Some(p @ ("https" | "http")) => p == "https",
            _ => request.header(":scheme") == Some("https"),
        };
        RequestHead {
            method: route.method,
            scheme: if https { "https" } else { "http" },
            host: &route.host,
            path: route.raw_path,
            query: route.query,
            accept: request.header("accept"),
            sec_fetch_mode: request.header("sec-fetch-mode"),
            sec_fetch_site: request.header("sec-fetch-site"),
            origin_header: request.header("origin"),
            x_requested_with: request.header("x-requested-with"),
            request,
        }
    }

    /// A browser navigation, answered with a login redirect rather than a 401.
    pub fn is_navigation(&self) -> bool {
        let method_ok = self.method == "GET" || self.method == "HEAD";
        method_ok && self.navigates()
    }

    /// A browser loading a page, with any method (a form submission is a POST navigation).
    pub fn navigates(&self) -> bool {
        let navigating = match self.sec_fetch_mode {
            Some(mode) => mode == "navigate",
            None => self.accept.is_some_and(|a| a.contains("text/html")),
        };
        let xhr = self
            .x_requested_with
            .is_some_and(|x| x.eq_ignore_ascii_case("xmlhttprequest"));
        navigating && !xhr
    }

    /// Not a browser page load: answered with JSON rather than HTML.
    pub fn is_api_like(&self) -> bool {
        !self.accept.is_some_and(|a| a.contains("text/html"))
    }

    /// Whether a request (before routing has read it) asks for HTML.
    pub fn accepts_html(request: &dyn HeaderSource) -> bool {
        request
            .header("accept")
            .is_some_and(|a| a.contains("text/html"))
    }

    /// The origin a browser sees for this request.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    /// The origin the gateway may send a browser back to: the configured redirect URI's, or
    /// this request's when an application names its host. Never one built from a host that
    /// only a `*` application serves: the client chose it.
    pub fn trusted_origin(&self, settings: &Settings, ws: usize) -> Option<String> {
        if let Some(uri) = &settings.web(ws).client.redirect_uri {
            return url::Url::parse(uri)
                .ok()
                .map(|u| u.origin().ascii_serialization());
        }
        let named = !self.host.is_empty() && settings.policy.names_host(self.host);
        named.then(|| self.origin())
    }

    /// Positive evidence that a page of this origin sent the request: Fetch Metadata, or else
    /// the `Origin` header. Without either, it could have come from anywhere.
    pub fn is_same_origin(&self, settings: &Settings, ws: usize) -> bool {
        match self.sec_fetch_site {
            Some(site) => site == "same-origin",
            None => self.origin_header.is_some_and(|origin| {
                Some(origin.to_ascii_lowercase()) == self.trusted_origin(settings, ws)
            }),
        }
    }

    /// A request another site made the browser send (a link, a form, a script): it must not
    /// end the session by itself.
    pub fn is_cross_site(&self, settings: &Settings, ws: usize) -> bool {
        if matches!(self.sec_fetch_site, Some("cross-site" | "same-site")) {
            return true;
        }
        match self.origin_header {
            None => false,
            Some(origin) => Some(origin.to_ascii_lowercase()) != self.trusted_origin(settings, ws),
        }
    }
}
