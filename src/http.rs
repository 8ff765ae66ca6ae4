//! The plain-data messages between the core and the host: what the core asks the host to do
//! (answer locally, call out, let the request through) and what comes back from a callout.

use std::rc::Rc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::config::ClientAuth;

/// Request-header operations (set, or remove with `None`), derived once per session or token
/// and shared by every request that presents it.
pub type HeaderOps = Rc<[(String, Option<String>)]>;

/// An HTTP request the host sends to an Envoy cluster on the core's behalf.
#[derive(Clone, PartialEq, Eq)]
pub struct Callout {
    pub cluster: String,
    pub method: &'static str,
    pub authority: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for Callout {
    /// Header names and the body's length only: they carry client secrets and tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Callout")
            .field("cluster", &self.cluster)
            .field("method", &self.method)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// How a callout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutResult {
    Response {
        status: u16,
        body: Vec<u8>,
    },
    /// No answer in time.
    TimedOut,
    /// Connection refused, reset, no healthy host, or the callout could not be sent.
    Failed,
}

/// A response the gateway sends itself instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl LocalResponse {
    pub fn new(status: u32) -> Self {
        Self {
            status,
            headers: vec![("cache-control".into(), "no-store".into())],
            body: Vec::new(),
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.headers
            .push(("content-type".into(), content_type.into()));
        self.body = body.into();
        self
    }

    pub fn redirect(location: &str) -> Self {
        Self::new(302).header("location", location)
    }

    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Changes to the request before it goes upstream, and to the response on its way back.
#[derive(Clone, PartialEq)]
pub struct Forward {
    /// Headers removed (every copy) before anything is set: client headers that a backend
    /// would read as the gateway's own, and repeated copies of the ones it sets.
    pub removed: Vec<String>,
    /// The identity headers: each configured one set from the session or token, or removed.
    pub identity: HeaderOps,
    /// Bit i set: `identity[i]` is a removal of a header the request does not carry (all its
    /// headers were read at once), which the host layer need not make: one host call fewer
    /// per such header, e.g. for every other web session's identity headers.
    pub identity_absent: u64,
    /// Request headers to set (replacing every copy) or, with `None`, to remove.
    pub request_headers: Vec<(String, Option<String>)>,
    /// `Set-Cookie` values to add to the upstream response.
    pub response_cookies: Vec<String>,
}

impl Forward {
    /// The request header changes a host makes, in order: every removal, then the identity
    /// headers (less the removals of headers the request does not carry), then the rest. A
    /// `None` value removes the header (every copy); a value replaces every copy.
    pub fn header_changes(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let removed = self.removed.iter().map(|n| (n.as_str(), None));
        let identity = self
            .identity
            .iter()
            .enumerate()
            .filter(|(i, _)| *i >= 64 || self.identity_absent & (1 << i) == 0)
            .map(|(_, (n, v))| (n.as_str(), v.as_deref()));
        let rest = self
            .request_headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()));
        removed.chain(identity).chain(rest)
    }

    /// Whether a host has any request header to change (then Envoy must route again).
    pub fn changes_headers(&self) -> bool {
        self.header_changes().next().is_some()
    }
}

impl std::fmt::Debug for Forward {
    /// Header names only: the values may be mediated tokens.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = |ops: &[(String, Option<String>)]| -> Vec<String> {
            ops.iter()
                .map(|(n, v)| format!("{n}{}", if v.is_some() { "=…" } else { " (removed)" }))
                .collect()
        };
        f.debug_struct("Forward")
            .field("removed", &self.removed)
            .field("identity", &names(&self.identity))
            .field("request_headers", &names(&self.request_headers))
            .field("response_cookies", &self.response_cookies.len())
            .finish()
    }
}

/// What the host does next with the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Forward(Forward),
    Respond(LocalResponse),
    Callout(Callout),
    /// Another request is already asking the OP or STS the same question: stay paused until
    /// the host is told (through the flow's list of woken requests) to wake this request.
    Wait,
    /// Buffer the request body (at most `max` bytes) and hand it to the flow's `on_body`.
    /// Only ever the answer to a request's headers.
    ReadBody {
        max: usize,
    },
}

/// A request body the flow asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Complete(Vec<u8>),
    /// Longer than the flow's `max`: the host stopped reading.
    TooLarge,
    /// Not to be had: the upstream answered the held request (see `Action::ReadBody`) before
    /// the body arrived, and Envoy passes no more of it to the filter.
    Unreadable,
}

/// Why a parked request is woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The answer is in the cache now (or the slot is free again): run the request again.
    Ready,
    /// The request it waited for found the OP or STS down, slow or refusing: answer with this
    /// status (502, 503 or 504) too.
    Fail(u16),
}

/// Form-encodes `pairs` (application/x-www-form-urlencoded).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// The headers of a form POST to a token-style endpoint that answers JSON.
pub fn form_post_headers() -> Vec<(String, String)> {
    vec![
        (
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        ),
        ("accept".into(), "application/json".into()),
    ]
}

/// Client authentication at a token endpoint (RFC 6749 §2.3.1): for `client_secret_basic` the
/// `Authorization` header to send (id and secret form-encoded before they are joined), for
/// `client_secret_post` the two form fields are appended to `form`.
pub fn client_authentication<'a>(
    method: ClientAuth,
    client_id: &'a str,
    client_secret: &'a str,
    form: &mut Vec<(&'a str, &'a str)>,
) -> Option<(String, String)> {
    match method {
        ClientAuth::ClientSecretBasic => {
            let user: String = url::form_urlencoded::byte_serialize(client_id.as_bytes()).collect();
            let pass: String =
                url::form_urlencoded::byte_serialize(client_secret.as_bytes()).collect();
            let credentials = STANDARD.encode(format!("{user}:{pass}"));
            Some(("authorization".into(), format!("Basic {credentials}")))
        }
        ClientAuth::ClientSecretPost => {
            form.push(("client_id", client_id));
            form.push(("client_secret", client_secret));
            None
        }
    }
}

/// A subject or other client-, OP- or STS-given value, made safe for one log line: no control
/// characters, at most 128 of them.
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(128).collect()
}
