//! What a VM (one per Envoy worker) keeps across requests: caches, single flights, wake-ups.

use std::rc::Rc;
use std::sync::Arc;

use super::{failure_text, folded_status, normalize, Level, LogLine};
use crate::bearer::{self, TokenCache};
use crate::cache::FlightCache;
use crate::cache::Key;
use crate::config::{OpEndpoints, Settings};
use crate::discovery::{self, DiscoveryError, DiscoveryState};
use crate::http::{Callout, CalloutResult, Wake};
use crate::jwks::{Jwk, JwksCache};
use crate::mediation::{CacheSettings, SiteAuthenticator};
use crate::metrics::{Counter, Metrics};
use crate::policy::RateLimits;
use crate::revocation::{MemoryStore, RevocationList, SharedStore};
use crate::session::SessionCache;
use crate::shared_tier::{active, SharedTier, Tier};

/// Verified session cookies remembered per VM (and per process, in the shared tier).
pub const SESSION_CACHE_ENTRIES: usize = 10_000;
/// A JWKS or token response larger than this is not from a sane OP.
pub const MAX_CALLOUT_BODY: usize = 256 * 1024;

/// Refused-token lines a VM writes per window; beyond that they are only counted, so a client
/// sending bad tokens in a loop cannot flood Envoy's log (or fill its disk).
const REFUSED_LINES_PER_WINDOW: u32 = 10;
const REFUSED_WINDOW_S: u64 = 10;
/// Revocation-list lines (list full, not shared, front-channel logout refused): a flood of
/// anonymous front-channel logouts would otherwise write one per request.
const REVOCATION_LINES_PER_WINDOW: u32 = 5;
const REVOCATION_WINDOW_S: u64 = 60;

/// A budget of log lines of one kind per window: how many were written and held back in the
/// current one.
#[derive(Debug)]
pub struct LineBudget {
    /// Names the lines in the count of those held back.
    what: &'static str,
    per_window: u32,
    window_s: u64,
    window_start: u64,
    written: u32,
    suppressed: u64,
}

/// The budget of refused-token lines.
impl Default for LineBudget {
    fn default() -> Self {
        Self::new("refused-token", REFUSED_LINES_PER_WINDOW, REFUSED_WINDOW_S)
    }
}

impl LineBudget {
    pub fn new(what: &'static str, per_window: u32, window_s: u64) -> Self {
        Self {
            what,
            per_window,
            window_s,
            window_start: 0,
            written: 0,
            suppressed: 0,
        }
    }

    /// Whether one more line may be written at `now`; and, when a window has just ended with
    /// lines held back, the line that says how many.
    pub fn admit(&mut self, now: u64) -> (bool, Option<LogLine>) {
        let report = self.roll(now);
        if self.written < self.per_window {
            self.written += 1;
            (true, report)
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            (false, report)
        }
    }

    /// `line` if the budget allows it (with the count held back before it, if any, appended);
    /// otherwise only counted.
    pub fn pass(&mut self, now: u64, line: LogLine) -> Option<LogLine> {
        match self.admit(now) {
            (true, None) => Some(line),
            (true, Some(report)) => Some(LogLine {
                level: line.level,
                message: format!("{}; {}", line.message, report.message),
            }),
            (false, report) => report,
        }
    }

    /// Ends the window if it is over (the host also calls this on its timer, so the count is
    /// told even when no line follows); returns the line for what it held back.
    pub fn roll(&mut self, now: u64) -> Option<LogLine> {
        if now.saturating_sub(self.window_start) < self.window_s {
            return None;
        }
        self.window_start = now;
        self.written = 0;
        let n = std::mem::take(&mut self.suppressed);
        (n > 0).then(|| LogLine {
            level: Level::Warn,
            message: format!("{n} {} lines suppressed", self.what),
        })
    }
}

/// What a VM knows of one OP (`Settings::ops`): its endpoints and keys, and whether it can be
/// used. Each OP has its own, so a broken OP holds up only its own applications.
#[derive(Default)]
pub struct OpRuntime {
    pub jwks: JwksCache,
    /// From the configuration, or once discovery has fetched them.
    pub endpoints: Option<Rc<OpEndpoints>>,
    pub discovery: DiscoveryState,
    /// The last discovery document named another issuer: sign-in is misconfigured, not
    /// starting up, and browsers are told so.
    pub issuer_mismatch: bool,
    /// A JWKS fetch for bearer tokens under way, and the requests waiting for it.
    pub keys_flight: Option<KeysFlight>,
}

/// State a VM keeps across requests (one VM per Envoy worker thread).
pub struct VmState {
    /// One per OP of the settings, in their order.
    ops: Vec<OpRuntime>,
    /// Verified session cookies, one cache per web session (a cookie value is only ever looked
    /// up among its own web session's).
    sessions: Vec<SessionCache>,
    /// Bearer-token checks (valid and refused), by token hash, with their identity headers.
    pub tokens: TokenCache,
    /// Token buckets of rate-limit rules (per worker, or the shared tier's).
    pub limits: RateLimits,
    /// What the workers of the process share (the native build; `None` in wasm): asked on
    /// a miss of this worker's caches, told what this worker learns.
    shared: Tier,
    /// Parked requests to wake (context id, why). The host drains this after every callback.
    pub woken: Vec<(u32, Wake)>,
    /// Mediated tokens, one cache per site authenticator (same order as `Settings::sites`).
    pub mediated: Vec<FlightCache<Rc<SiteToken>>>,
    /// How bearer tokens are turned into cache keys.
    pub token_keys: bearer::TokenKeys,
    /// Rate limit of the refused-token log lines (bearer and ID tokens).
    pub refused_lines: LineBudget,
    /// Rate limit of the revocation list's warnings (full, not shared, front-channel refused).
    pub revocation_lines: LineBudget,
    /// Sessions ended by a logout (this gateway's, or the OP's back- or front-channel), and
    /// the logout tokens seen.
    pub revoked: RevocationList,
    /// Where the revocation list is shared with the other workers (proxy-wasm shared data in
    /// the filter; this VM's own memory until the host says otherwise).
    pub store: Rc<dyn SharedStore>,
    /// Session validations at the OP: outcomes known here, and who waits for which.
    pub validations: super::Validations,
    /// What this worker did since the host last handed it to Envoy (see `crate::metrics`).
    pub metrics: Metrics,
    /// When the revocation list last dropped its expired entries.
    expired_at: u64,
    /// Answers held until every worker knows a session ended (see `hold::Holds`).
    holds: super::hold::Holds,
}

/// A site's token as it goes upstream, prepared once when it is cached.
pub struct SiteToken {
    /// The header value (`Bearer <token>` for `authorization`), or the cookie value.
    pub value: String,
}

/// One JWKS fetch at a time for bearer tokens; the others wait for it.
pub struct KeysFlight {
    pub leader: u32,
    pub since: u64,
    pub waiters: Vec<u32>,
}

impl std::fmt::Debug for SiteToken {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SiteToken(<{} bytes>)", self.value.len())
    }
}

impl VmState {
    pub fn new(settings: &Settings) -> Self {
        let api = &settings.api;
        Self {
            ops: settings
                .ops
                .iter()
                .map(|op| OpRuntime {
                    endpoints: op.endpoints.complete(op.used).map(Rc::new),
                    ..OpRuntime::default()
                })
                .collect(),
            sessions: settings
                .web_sessions
                .iter()
                .map(|_| SessionCache::new(SESSION_CACHE_ENTRIES))
                .collect(),
            tokens: TokenCache::new(
                api.cache_max_entries,
                api.cache_max_ttl_s,
                api.negative_ttl_s,
            ),
            token_keys: bearer::TokenKeys::default(),
            limits: RateLimits::default(),
            shared: None,
            woken: Vec::new(),
            refused_lines: LineBudget::default(),
            revocation_lines: LineBudget::new(
                "revocation-list",
                REVOCATION_LINES_PER_WINDOW,
                REVOCATION_WINDOW_S,
            ),
            revoked: RevocationList::new(settings.revocation_list_entries),
            store: Rc::new(MemoryStore::default()),
            validations: Default::default(),
            metrics: Metrics::new(settings),
            expired_at: 0,
            holds: Default::default(),
            mediated: settings
                .sites
                .iter()
                .map(|s| {
                    s.cache
                        .new_cache()
                        .with_pending_timeout(stale_after_s(site_timeout_ms(s)))
                })
                .collect(),
        }
    }

    /// Makes the caches the first tier of `tier`'s (before any request: what is cached so
    /// far is not told to it) and takes the rate-limit buckets there.
    pub fn share(&mut self, tier: Arc<dyn SharedTier>) {
        let shared = Some(tier.clone());
        self.token_keys = tier.token_keys().clone();
        for (ws, cache) in self.sessions.iter_mut().enumerate() {
            let fresh = SessionCache::new(SESSION_CACHE_ENTRIES);
            *cache = fresh.with_tier(shared.clone(), ws);
        }
        let tokens = std::mem::replace(&mut self.tokens, TokenCache::new(0, 0, 0));
        self.tokens = tokens.with_tier(shared.clone());
        self.limits = RateLimits::shared(shared.clone());
        self.shared = shared;
    }

    /// OP `op`'s keys were fetched by this worker: kept, and told to the others.
    /// The tier orders sets by when their request was sent, not answered: an answer to a
    /// request sent before the OP dropped a key, arriving after a later request's, must not
    /// become the "latest" set that other workers take (and trust the dropped key again).
    pub fn keys_fetched(&mut self, op: usize, keys: Vec<Jwk>, now: u64) {
        let asked = self.op(op).jwks.last_attempt().map_or(now, |t| t.min(now));
        if let Some(tier) = active(&self.shared) {
            tier.put_jwks(op, Arc::new(keys.clone()), asked);
        }
        self.op(op).jwks.replace(keys, now);
    }

    /// Before fetching OP `op`'s keys: takes another worker's set if it was fetched later than
    /// this worker's. `true` when it did (check the token again before fetching).
    pub fn keys_from_peers(&mut self, op: usize) -> bool {
        let Some((keys, at)) = active(&self.shared).and_then(|t| t.jwks(op)) else {
            return false;
        };
        let jwks = &mut self.op(op).jwks;
        if jwks.fetched_at().is_some_and(|mine| mine >= at) {
            return false;
        }
        jwks.replace(keys.to_vec(), at);
        true
    }

    /// After a miss of site `site`'s cache (the caller leads): the token another worker
    /// obtained for `key`, if still good at `now`; kept here too, and its waiters woken.
    pub fn site_token_from_peers(
        &mut self,
        site: usize,
        key: &Key,
        now: u64,
    ) -> Option<Rc<SiteToken>> {
        let (value, until) = active(&self.shared)?.site_token(site, key)?;
        if now >= until {
            return None;
        }
        let token = Rc::new(SiteToken {
            value: value.to_string(),
        });
        let waiters = self
            .mediated
            .get_mut(site)?
            .complete(key, Some((token.clone(), until)), now);
        self.wake(waiters, Wake::Ready);
        Some(token)
    }

    /// Tells the other workers site `site`'s token for `key`, good until `until` (as kept
    /// here: no longer than the cache's lifetime, nor, as no hit there refreshes it, its idle
    /// timeout).
    pub fn site_token_made(
        &self,
        site: usize,
        key: &Key,
        token: &SiteToken,
        (until, cache): (u64, &CacheSettings),
        now: u64,
    ) {
        if let Some(tier) = active(&self.shared) {
            let until = until
                .min(now.saturating_add(cache.max_lifetime_s))
                .min(now.saturating_add(cache.idle_timeout_s));
            if now < until {
                tier.put_site_token(site, key, Arc::from(token.value.as_str()), until);
            }
        }
    }

    /// What this VM knows of OP `i` (an index of `Settings::ops`).
    pub fn op(&mut self, i: usize) -> &mut OpRuntime {
        if i >= self.ops.len() {
            // Only when the settings and this state disagree, which `VmState::new` rules out;
            // an empty runtime (no endpoints yet) then fails closed.
            self.ops.resize_with(i + 1, OpRuntime::default);
        }
        &mut self.ops[i]
    }

    /// Verified session cookies of web session `i`.
    pub fn sessions(&mut self, i: usize) -> &mut SessionCache {
        if i >= self.sessions.len() {
            let shared = &self.shared;
            let mut ws = self.sessions.len();
            self.sessions.resize_with(i + 1, || {
                ws += 1;
                SessionCache::new(SESSION_CACHE_ENTRIES).with_tier(shared.clone(), ws - 1)
            });
        }
        &mut self.sessions[i]
    }

    /// Sessions cached, over every web session (for the host's figures).
    pub fn sessions_cached(&self) -> usize {
        self.sessions.iter().map(SessionCache::len).sum()
    }

    /// Shares this worker's revocations with the others; a line for the log when that did not
    /// (fully) work, within the budget of such lines. Retried from the tick while the list
    /// stays dirty.
    pub fn publish_revocations(&mut self, now: u64) -> Option<LogLine> {
        self.publish_with(0, now)
    }

    /// Parks request `ctx` until every other worker has taken in the revocation list as it
    /// is now (it gets `Action::Wait`; a tick wakes it); `anonymous`: anyone can make such a
    /// request. `false` when too many are held: the caller answers at once.
    pub(super) fn hold(&mut self, ctx: u32, anonymous: bool) -> bool {
        let unpublished = self.revoked.is_dirty();
        self.holds.hold(ctx, unpublished, anonymous)
    }

    /// Whether a revocation that changed in generation `changed_in` of the list did so within
    /// the last few ticks: a session it ends may still be served by a worker that has not
    /// ticked since.
    pub(super) fn revoked_recently(&self, changed_in: u64) -> bool {
        self.holds.changed_since_recent_ticks(changed_in)
    }

    /// Publishes (`dropped`: live entries a refresh just dropped, for the same line).
    fn publish_with(&mut self, dropped: usize, now: u64) -> Option<LogLine> {
        let line = match self.revoked.publish(self.store.as_ref(), now) {
            Ok(p) => list_full(dropped + p.dropped_live, p.unshared)?,
            Err(e) => LogLine {
                level: Level::Warn,
                message: e.to_string(),
            },
        };
        self.revocation_lines.pass(now, line)
    }

    /// The root tick's share: other workers' revocations in, this worker's out (front-channel
    /// logouts are published here, batched, rather than by their requests; and anything an
    /// earlier publish could not share), expired entries dropped now and then.
    pub fn on_tick(&mut self, settings: &Settings, now: u64) -> Option<LogLine> {
        // Validations of every web session are polled together: the slowest OP sets the pace.
        let timeout_ms = settings.ops.iter().map(|op| op.timeout_ms).max();
        self.poll_validations(now, stale_after_s(timeout_ms.unwrap_or(0)));
        let dropped = self.revoked.refresh(self.store.as_ref(), now);
        let line = if self.revoked.is_dirty() {
            self.publish_with(dropped, now)
        } else {
            // Once a minute: the tick comes ten times a second, and `expire` is a full scan.
            if now >= self.expired_at.saturating_add(60) {
                self.expired_at = now;
                self.revoked.expire(now);
            }
            list_full(dropped, 0).and_then(|l| self.revocation_lines.pass(now, l))
        };
        // After the publish: a held answer goes only once its revocation is shared.
        let (unpublished, generation) = (self.revoked.is_dirty(), self.revoked.generation());
        let due = self.holds.on_tick(unpublished, generation);
        if !due.is_empty() {
            self.wake(due, Wake::Ready);
        }
        line.or_else(|| self.revocation_lines.roll(now))
    }

    /// Entries in this worker's caches, in the order of `crate::metrics::GAUGES`.
    pub fn cache_sizes(&self) -> [usize; 3] {
        let mediated = self.mediated.iter().map(FlightCache::len).sum();
        [self.sessions_cached(), self.tokens.len(), mediated]
    }

    pub(super) fn wake(&mut self, waiters: Vec<u32>, why: Wake) {
        self.woken.extend(waiters.into_iter().map(|w| (w, why)));
    }

    /// The discovery requests to send now (OP index, request): each OP on its own schedule.
    pub fn discoveries_due(&mut self, settings: &Settings, now: u64) -> Vec<(usize, Callout)> {
        let mut due = Vec::new();
        for (i, op) in settings.ops.iter().enumerate() {
            let rt = self.op(i);
            if !rt.discovery.due(now, rt.endpoints.is_some()) {
                continue;
            }
            if let Some(callout) = discovery::request(op) {
                rt.discovery.started(now);
                due.push((i, callout));
            }
        }
        due
    }

    /// The first discovery request due (OP index, request), for a host that sends one at a
    /// time; the others stay due.
    pub fn next_discovery_due(
        &mut self,
        settings: &Settings,
        now: u64,
    ) -> Option<(usize, Callout)> {
        for (i, op) in settings.ops.iter().enumerate() {
            let rt = self.op(i);
            if !rt.discovery.due(now, rt.endpoints.is_some()) {
                continue;
            }
            if let Some(callout) = discovery::request(op) {
                rt.discovery.started(now);
                return Some((i, callout));
            }
        }
        None
    }

    /// Takes in OP `i`'s discovery answer; returns a line for the log.
    pub fn on_discovery(
        &mut self,
        settings: &Settings,
        i: usize,
        result: CalloutResult,
    ) -> LogLine {
        let op = settings.op(i);
        let folded = folded_status(&result);
        let outcome = match normalize(result) {
            CalloutResult::Response { status: 200, body } => discovery::parse(op, &body),
            failed => Err(DiscoveryError::Unusable(failure_text(&failed, folded))),
        };
        self.metrics.count(match outcome {
            Ok(_) => Counter::DiscoveryOk,
            Err(_) => Counter::DiscoveryFailed,
        });
        let rt = self.op(i);
        rt.discovery.finished();
        rt.issuer_mismatch = matches!(outcome, Err(DiscoveryError::OtherIssuer(_)));
        match outcome {
            Ok(endpoints) => {
                rt.endpoints = Some(Rc::new(endpoints));
                LogLine {
                    level: Level::Info,
                    message: format!("discovered the endpoints of {}", op.issuer),
                }
            }
            Err(DiscoveryError::OtherIssuer(named)) => LogLine {
                level: Level::Error,
                message: format!(
                    "discovery at {configured} failed: the document names issuer {named}, not \
                     the configured {configured}; sign-in is refused until the configuration \
                     or the OP is fixed; retrying in {}s",
                    discovery::RETRY_S,
                    configured = op.issuer,
                ),
            },
            Err(DiscoveryError::Unusable(why)) => LogLine {
                level: Level::Warn,
                message: format!(
                    "discovery at {} failed: {why}; retrying in {}s",
                    op.issuer,
                    discovery::RETRY_S
                ),
            },
        }
    }
}

/// The warning for entries dropped or not shared, if any.
fn list_full(dropped: usize, unshared: usize) -> Option<LogLine> {
    (dropped > 0 || unshared > 0).then(|| LogLine {
        level: Level::Warn,
        message: format!(
            "revocation list full: {dropped} live entries dropped, {unshared} not shared; raise \
             session.revocation_list_entries"
        ),
    })
}

fn site_timeout_ms(site: &SiteAuthenticator) -> u64 {
    site.token_exchange().map_or(5000, |x| x.sts.timeout_ms)
}

/// A single flight whose leader has not finished within its callout timeout (and a margin) is
/// presumed lost, and the next request takes it over.
pub(super) fn stale_after_s(timeout_ms: u64) -> u64 {
    timeout_ms / 1000 + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_lines_are_limited_per_window_and_the_rest_counted() {
        let mut lines = LineBudget::default();
        let t = 1_000;
        for _ in 0..10 {
            assert_eq!(lines.admit(t), (true, None));
        }
        for i in 0..7 {
            assert_eq!(lines.admit(t + i), (false, None));
        }
        assert_eq!(lines.roll(t + 9), None, "the window is not over");
        let (write, report) = lines.admit(t + 10);
        assert!(write);
        let report = report.expect("the held-back lines are told");
        assert_eq!(report.message, "7 refused-token lines suppressed");
        assert_eq!(report.level, Level::Warn);
        // Told once; a window without suppression says nothing.
        assert_eq!(lines.roll(t + 20), None);
        for _ in 0..11 {
            lines.admit(t + 21);
        }
        let told = lines.roll(t + 31).map(|l| l.message);
        assert_eq!(told.as_deref(), Some("1 refused-token lines suppressed"));
    }

    #[test]
    fn a_passed_line_carries_the_count_held_back_before_it() {
        let mut lines = LineBudget::new("revocation-list", 2, 60);
        let line = |m: &str| LogLine {
            level: Level::Warn,
            message: m.into(),
        };
        let t = 1_000;
        assert_eq!(lines.pass(t, line("a")), Some(line("a")));
        assert_eq!(lines.pass(t, line("b")), Some(line("b")));
        for _ in 0..5 {
            assert_eq!(lines.pass(t + 1, line("c")), None);
        }
        let told = lines.pass(t + 60, line("d")).map(|l| l.message);
        assert_eq!(
            told.as_deref(),
            Some("d; 5 revocation-list lines suppressed")
        );
    }
}
