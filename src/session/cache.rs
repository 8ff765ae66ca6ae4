//! Verified session cookies of one VM (one per Envoy worker), and, in the native build, of
//! the process (the shared tier, asked on a miss here).

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use super::{Dead, KeyRing, Session};
use crate::http::HeaderOps;
use crate::shared_tier::{active, local_headers, shared_headers, SharedSession, SharedTier};

fn cache_key(token: &str) -> &str {
    token.rsplit('.').next().unwrap_or(token)
}

/// A verified session and what the gateway derived from it once (the identity header values),
/// shared by every request that presents the same cookie.
#[derive(Debug, PartialEq)]
pub struct SessionEntry {
    pub session: Session,
    pub headers: HeaderOps,
    /// When a successor cookie was last issued for this one. Clients that ignore Set-Cookie
    /// (or send many requests at once) then cost one re-issue per refresh interval, not one
    /// sealing per request.
    pub renewed_at: Cell<u64>,
    /// The revocation list's generation at which this session was last found not revoked:
    /// while the list has not changed, the hot path does not look again.
    pub not_revoked_at: Cell<Option<u64>>,
}

impl SessionEntry {
    pub fn new(session: Session, headers: HeaderOps) -> Self {
        let renewed_at = Cell::new(session.last_activity);
        Self {
            session,
            headers,
            renewed_at,
            not_revoked_at: Cell::new(None),
        }
    }
}

/// Verified cookies of this VM, keyed by the exact cookie value. A hit skips the opening (HMAC
/// or decryption), the JSON parse and the header derivation; the time checks still run on every
/// request. Bounded: when full, dead entries are dropped, and if that is not enough the map
/// starts over (a miss only costs one opening).
pub struct SessionCache {
    /// Keyed by the last segment, the JWS signature or the JWE authentication tag (short, so
    /// hashing is cheap); the entry keeps the whole cookie value, and a hit counts only if all
    /// of it matches.
    entries: HashMap<String, (String, Rc<SessionEntry>)>,
    capacity: usize,
    /// The process-wide tier and this cache's web session there.
    shared: Option<(Arc<dyn SharedTier>, usize)>,
}

impl SessionCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            shared: None,
        }
    }

    /// Also asks and tells `tier`, as web session `ws`'s cache.
    pub fn with_tier(mut self, tier: Option<Arc<dyn SharedTier>>, ws: usize) -> Self {
        self.shared = tier.map(|t| (t, ws));
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The live session for `token`, verifying and remembering it on a miss (`derive` computes
    /// the header values then).
    pub fn lookup(
        &mut self,
        token: &str,
        keys: &KeyRing,
        now: u64,
        idle_timeout_s: u64,
        derive: impl FnOnce(&Session) -> Option<HeaderOps>,
    ) -> Option<Rc<SessionEntry>> {
        self.check(token, keys, now, idle_timeout_s, derive).ok()
    }

    /// As [`Self::lookup`], with why there is no session.
    pub fn check(
        &mut self,
        token: &str,
        keys: &KeyRing,
        now: u64,
        idle_timeout_s: u64,
        derive: impl FnOnce(&Session) -> Option<HeaderOps>,
    ) -> Result<Rc<SessionEntry>, Dead> {
        let key = cache_key(token);
        if let Some((full, e)) = self.entries.get(key) {
            if full == token {
                if e.session.is_live(now, idle_timeout_s) {
                    return Ok(e.clone());
                }
                let dead = e.session.why_dead(now);
                self.entries.remove(key);
                return Err(dead);
            }
        }
        if let Some(found) = self.in_tier(key, token) {
            // Another worker verified it: the same time checks as a hit here; the revocation
            // list is the caller's to consult, as for any entry.
            if !found.session.is_live(now, idle_timeout_s) {
                return Err(found.session.why_dead(now));
            }
            let entry = SessionEntry::new(found.session.clone(), local_headers(&found.headers));
            return Ok(self.keep(token.to_string(), entry, now, idle_timeout_s));
        }
        let session = Session::decode_checked(token, keys, now, idle_timeout_s)?;
        // No headers, no session: a claim that cannot be a header value never goes upstream.
        let headers = derive(&session).ok_or(Dead::Invalid)?;
        Ok(self.insert(
            token.to_string(),
            SessionEntry::new(session, headers),
            now,
            idle_timeout_s,
        ))
    }

    /// The shared tier's entry for exactly `token`, if any.
    fn in_tier(&self, key: &str, token: &str) -> Option<Arc<SharedSession>> {
        let (tier, ws) = active(&self.shared)?;
        tier.session(*ws, key).filter(|s| s.token == token)
    }

    /// Remembers a session verified (or issued) here, and tells the shared tier.
    pub fn insert(
        &mut self,
        token: String,
        entry: SessionEntry,
        now: u64,
        idle_timeout_s: u64,
    ) -> Rc<SessionEntry> {
        if let Some((tier, ws)) = active(&self.shared) {
            let shared = SharedSession {
                token: token.clone(),
                session: entry.session.clone(),
                headers: shared_headers(&entry.headers),
            };
            tier.put_session(*ws, cache_key(&token), Arc::new(shared));
        }
        self.keep(token, entry, now, idle_timeout_s)
    }

    /// Remembers a session in this cache only.
    fn keep(
        &mut self,
        token: String,
        entry: SessionEntry,
        now: u64,
        idle_timeout_s: u64,
    ) -> Rc<SessionEntry> {
        if self.entries.len() >= self.capacity {
            self.entries
                .retain(|_, (_, e)| e.session.is_live(now, idle_timeout_s));
            if self.entries.len() >= self.capacity {
                self.entries.clear();
            }
        }
        let entry = Rc::new(entry);
        self.entries
            .insert(cache_key(&token).to_string(), (token, entry.clone()));
        entry
    }
}
