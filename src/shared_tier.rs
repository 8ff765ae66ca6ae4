//! The process-wide second tier (L2) of the caches, for a host whose workers share memory (the
//! native build; the wasm build has none: its VMs share nothing but proxy-wasm's shared data).
//!
//! Each worker keeps its own caches (`VmState`: sessions, bearer-token checks, JWKS, mediated
//! site tokens) as the first tier: lock-free, and a hit there never looks here. This tier is
//! asked only on a first-tier miss, and told whatever a worker learned the expensive way (a
//! verified cookie, a checked token, a fetched JWKS, an exchanged token), so that a token or
//! key is learned once per process rather than once per worker. Rate-limit buckets live only
//! here when there is a tier: then a limit is exact per Envoy.
//!
//! Sans-IO and without threads: the trait only says what the tier keeps. Entries are keyed as
//! in the first tier and carry their expiry; the core, not the tier, decides whether an entry
//! found here is still good (the same rules as the first tier), so an entry past its expiry is
//! a miss whatever the implementation keeps. Values are owned or `Arc`: `Send + Sync`.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::bearer::{BearerError, TokenInfo, TokenKeys};
use crate::cache::Key;
use crate::http::HeaderOps;
use crate::jwks::Jwk;
use crate::policy::Limit;
use crate::session::Session;

/// Identity header values, as `HeaderOps` but shareable between threads.
pub type Headers = Arc<[(String, Option<String>)]>;

/// A verified session cookie: the whole cookie value (a hit needs all of it to match, as in
/// the first tier), the session and its identity headers.
#[derive(Debug)]
pub struct SharedSession {
    pub token: String,
    pub session: Session,
    pub headers: Headers,
}

/// A checked bearer token, as [`TokenInfo`].
#[derive(Debug)]
pub struct SharedToken {
    pub sub: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub expires_at: u64,
    pub claims: Map<String, Value>,
    pub headers: Headers,
    pub provider: usize,
}

/// A bearer token's cached verdict: its check, or why it was refused.
pub type SharedVerdict = Result<Arc<SharedToken>, BearerError>;

/// An OP's JWKS and when it was fetched.
pub type SharedJwks = (Arc<Vec<Jwk>>, u64);

/// What the workers of one process share, for one configuration (a reload gets a new one).
/// `until`: the second from which an entry must no longer be served.
pub trait SharedTier: Send + Sync {
    /// How bearer tokens and mediation subjects are turned into keys: the same in every
    /// worker, or their keys would never meet here.
    fn token_keys(&self) -> &TokenKeys;
    /// The session cookie of web session `ws` whose last segment is `sig`.
    fn session(&self, ws: usize, sig: &str) -> Option<Arc<SharedSession>>;
    fn put_session(&self, ws: usize, sig: &str, entry: Arc<SharedSession>);
    fn token(&self, key: &Key) -> Option<(SharedVerdict, u64)>;
    fn put_token(&self, key: &Key, verdict: SharedVerdict, until: u64);
    /// OP `op`'s JWKS and when it was fetched.
    fn jwks(&self, op: usize) -> Option<SharedJwks>;
    /// Keeps the set unless the tier holds one fetched later.
    fn put_jwks(&self, op: usize, keys: Arc<Vec<Jwk>>, fetched_at: u64);
    /// Site `site`'s token (the value sent upstream) for the subject of `key`.
    fn site_token(&self, site: usize, key: &Key) -> Option<(Arc<str>, u64)>;
    fn put_site_token(&self, site: usize, key: &Key, value: Arc<str>, until: u64);
    /// Takes one token from the rate-limit bucket of (`limit`, `key`), as
    /// `RateLimits::take`: `Err(seconds)` until one is available again.
    fn take(&self, limit: &Limit, key: &str, now_ms: u64) -> Result<(), u64>;
}

/// The tier, when the host has one.
pub type Tier = Option<Arc<dyn SharedTier>>;

/// What a cache holds of the tier, to use: always `None` in the wasm build, which has no tier,
/// so that the compiler drops every use of it there (the .wasm stays as it was).
#[inline(always)]
pub fn active<T>(held: &Option<T>) -> Option<&T> {
    if cfg!(target_arch = "wasm32") {
        None
    } else {
        held.as_ref()
    }
}

pub fn shared_headers(headers: &HeaderOps) -> Headers {
    Arc::from(&headers[..])
}

pub fn local_headers(headers: &Headers) -> HeaderOps {
    HeaderOps::from(&headers[..])
}

impl SharedToken {
    pub fn of(info: &TokenInfo) -> Self {
        Self {
            sub: info.sub.clone(),
            client_id: info.client_id.clone(),
            scopes: info.scopes.clone(),
            expires_at: info.expires_at,
            claims: info.claims.clone(),
            headers: shared_headers(&info.headers),
            provider: info.provider,
        }
    }

    pub fn to_info(&self) -> TokenInfo {
        TokenInfo {
            sub: self.sub.clone(),
            client_id: self.client_id.clone(),
            scopes: self.scopes.clone(),
            expires_at: self.expires_at,
            claims: self.claims.clone(),
            headers: local_headers(&self.headers),
            provider: self.provider,
        }
    }
}
