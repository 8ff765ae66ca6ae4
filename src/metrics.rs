//! What the gateway did, counted per worker in plain memory: logins, session checks, policy
//! decisions per application, bearer tokens, key and discovery fetches, mediation, callout
//! latencies. The request path only adds to an array; the host's root tick hands the counts
//! to Envoy (proxy-wasm metrics) and starts them again from zero, so no request pays a host
//! call for its metrics.
//!
//! Names follow Envoy's dotted style with bounded labels as `.<label>.<value>` segments, e.g.
//! `envoy_wam.decisions_total.app.portal.outcome.allow`. Envoy files them under `wasmcustom.`
//! (shown without it), and its Prometheus output strips that namespace; with the `stats_tags`
//! of `examples/envoy-stats-tags.yaml` the segments become labels
//! (`envoy_wam_decisions_total{app="portal",outcome="allow"}`). Label values come from the
//! code or from the configuration (application names), never from a request.

use std::cell::Cell;

use crate::bearer::{BearerError, UNKNOWN_ISSUER, UNKNOWN_KEY, UNUSABLE_CLAIM};
use crate::config::Settings;
use crate::policy::{Application, Outcome};

/// The namespace of every name here.
pub const PREFIX: &str = "envoy_wam";

macro_rules! counters {
    ($($variant:ident => $name:literal,)*) => {
        /// A counter without a per-application label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter { $($variant,)* }

        impl Counter {
            /// Every counter, in index order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            /// The stat name after [`PREFIX`].
            pub fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }
        }
    };
}

counters! {
    LoginStarted => "logins_started_total",
    LoginCompleted => "logins_completed_total",
    // Sign-ins that ended without a session, by why.
    LoginFailedState => "login_failures_total.reason.state",
    LoginFailedOpError => "login_failures_total.reason.op_error",
    LoginFailedTokenEndpoint => "login_failures_total.reason.token_endpoint",
    LoginFailedJwks => "login_failures_total.reason.jwks",
    LoginFailedIdToken => "login_failures_total.reason.id_token",
    LoginFailedUserinfo => "login_failures_total.reason.userinfo",
    LoginFailedTimeout => "login_failures_total.reason.timeout",
    LoginFailedSession => "login_failures_total.reason.session",
    LoginFailedUnavailable => "login_failures_total.reason.unavailable",
    // Requests for a protected web resource, by the session cookie they carried (`none`:
    // no cookie).
    SessionNone => "session_checks_total.result.none",
    SessionValid => "session_checks_total.result.valid",
    SessionExpired => "session_checks_total.result.expired",
    SessionIdle => "session_checks_total.result.idle",
    SessionInvalid => "session_checks_total.result.invalid",
    SessionRevoked => "session_checks_total.result.revoked",
    // Sessions validated at the OP (`session.validate_interval_s`).
    ValidationOk => "session_validations_total.result.ok",
    ValidationEnded => "session_validations_total.result.ended",
    ValidationFailed => "session_validations_total.result.failed",
    // Bearer tokens: the per-worker result cache, and each request's verdict.
    BearerHit => "bearer_cache_total.result.hit",
    BearerMiss => "bearer_cache_total.result.miss",
    BearerValid => "bearer_tokens_total.result.valid",
    BearerMissing => "bearer_tokens_total.result.invalid.reason.missing",
    BearerMalformed => "bearer_tokens_total.result.invalid.reason.malformed",
    BearerExpired => "bearer_tokens_total.result.invalid.reason.expired",
    BearerNotYetValid => "bearer_tokens_total.result.invalid.reason.not_yet_valid",
    BearerSignature => "bearer_tokens_total.result.invalid.reason.signature",
    BearerAlgorithm => "bearer_tokens_total.result.invalid.reason.algorithm",
    BearerIssuer => "bearer_tokens_total.result.invalid.reason.issuer",
    BearerAudience => "bearer_tokens_total.result.invalid.reason.audience",
    BearerUnknownKey => "bearer_tokens_total.result.invalid.reason.unknown_key",
    BearerInactive => "bearer_tokens_total.result.invalid.reason.inactive",
    BearerClaims => "bearer_tokens_total.result.invalid.reason.claims",
    BearerOther => "bearer_tokens_total.result.invalid.reason.other",
    Introspections => "introspections_total",
    JwksOk => "jwks_fetches_total.result.ok",
    JwksFailed => "jwks_fetches_total.result.failed",
    DiscoveryOk => "discovery_fetches_total.result.ok",
    DiscoveryFailed => "discovery_fetches_total.result.failed",
    // Mediated tokens: the per-worker cache, STS exchanges by the gateway's answer, and
    // tokens the gateway signed itself (JWT identity mapping).
    MediationHit => "mediation_cache_total.result.hit",
    MediationMiss => "mediation_cache_total.result.miss",
    MediationExchangeOk => "mediation_exchanges_total.status.ok",
    MediationExchange502 => "mediation_exchanges_total.status.502",
    MediationExchange503 => "mediation_exchanges_total.status.503",
    MediationExchange504 => "mediation_exchanges_total.status.504",
    MediationSigned => "mediation_signed_total",
}

/// The policy outcomes counted per application, as the audit line names them.
pub const OUTCOMES: [&str; 5] = ["allow", "deny", "login", "rate_limited", "redirect"];

/// Who a callout went to, for its latency histogram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    /// The OP's token endpoint: code redemption at sign-in, refresh grants.
    OpToken,
    Jwks,
    Introspection,
    Sts,
    Userinfo,
    /// RFC 7009 revocation at logout.
    Revocation,
    Discovery,
}

impl Upstream {
    pub const ALL: [Upstream; 7] = [
        Upstream::OpToken,
        Upstream::Jwks,
        Upstream::Introspection,
        Upstream::Sts,
        Upstream::Userinfo,
        Upstream::Revocation,
        Upstream::Discovery,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Upstream::OpToken => "op_token",
            Upstream::Jwks => "jwks",
            Upstream::Introspection => "introspection",
            Upstream::Sts => "sts",
            Upstream::Userinfo => "userinfo",
            Upstream::Revocation => "revocation",
            Upstream::Discovery => "discovery",
        }
    }
}

/// The cache-size gauges, in the order of [`Metrics::gauge_names`].
pub const GAUGES: [&str; 3] = ["sessions", "bearer", "mediation"];

/// Latencies a worker keeps between two ticks, per upstream; more are dropped (the tick comes
/// ten times a second, so this is 640 callouts a second to one upstream on one worker).
const LATENCIES_PER_TICK: usize = 64;

/// One worker's counts since the host last took them.
#[derive(Debug, Default)]
pub struct Metrics {
    /// [`Counter`]s, then [`OUTCOMES`] per application. Empty when metrics are off: every
    /// count then misses the array and does nothing. Cells: stages that only read the VM's
    /// state count too, and a worker is one thread.
    counts: Vec<Cell<u64>>,
    /// Per application (policy order, then the fallback's), its name as a label value.
    apps: Vec<String>,
    /// Callout latencies in milliseconds, per [`Upstream`].
    latencies: Vec<Vec<u32>>,
}

impl Metrics {
    /// Counters for `settings`' applications, or none when `metrics` is off.
    pub fn new(settings: &Settings) -> Self {
        if !settings.metrics {
            return Self::default();
        }
        let apps: Vec<String> = settings
            .policy
            .applications()
            .iter()
            .chain(settings.fallback.applications())
            .map(|a| label_value(&a.name))
            .collect();
        Self {
            counts: vec![Cell::new(0); Counter::ALL.len() + apps.len() * OUTCOMES.len()],
            apps,
            latencies: Upstream::ALL
                .iter()
                .map(|_| Vec::with_capacity(LATENCIES_PER_TICK))
                .collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        !self.counts.is_empty()
    }

    #[inline]
    pub fn count(&self, c: Counter) {
        self.add(c as usize);
    }

    #[inline]
    fn add(&self, i: usize) {
        if let Some(v) = self.counts.get(i) {
            v.set(v.get().wrapping_add(1));
        }
    }

    /// A policy decision for `app`, which must be one of `settings`' applications (another
    /// one is not counted).
    pub fn decision(&self, settings: &Settings, app: &Application, outcome: &Outcome) {
        if !self.enabled() {
            return;
        }
        let Some(a) = app_index(settings, app) else {
            return;
        };
        let o = match outcome {
            Outcome::Allow => 0,
            Outcome::Forbidden => 1,
            Outcome::NeedIdentity => 2,
            Outcome::RateLimited { .. } => 3,
            Outcome::Redirect { .. } => 4,
        };
        self.add(Counter::ALL.len() + a * OUTCOMES.len() + o);
    }

    /// A request refused for its bearer token, by why.
    pub fn bearer_refused(&self, e: &BearerError) {
        self.count(bearer_reason(e));
    }

    /// A callout to `to` answered (or gave up) after `ms` milliseconds.
    pub fn latency(&mut self, to: Upstream, ms: u64) {
        if let Some(buf) = self.latencies.get_mut(to as usize) {
            if buf.len() < LATENCIES_PER_TICK {
                buf.push(u32::try_from(ms).unwrap_or(u32::MAX));
            }
        }
    }

    /// The full stat name of every count, in index order (for the host to define once).
    pub fn counter_names(&self) -> Vec<String> {
        if !self.enabled() {
            return Vec::new();
        }
        let fixed = Counter::ALL
            .iter()
            .map(|c| format!("{PREFIX}.{}", c.name()));
        let per_app = self.apps.iter().flat_map(|app| {
            OUTCOMES
                .iter()
                .map(move |o| format!("{PREFIX}.decisions_total.app.{app}.outcome.{o}"))
        });
        fixed.chain(per_app).collect()
    }

    /// The histogram name of each [`Upstream`], in its order (none when off).
    pub fn histogram_names(&self) -> Vec<String> {
        if !self.enabled() {
            return Vec::new();
        }
        Upstream::ALL
            .iter()
            .map(|u| format!("{PREFIX}.callout_duration_ms.upstream.{}", u.label()))
            .collect()
    }

    /// The gauge name of each cache in [`GAUGES`] (none when off).
    pub fn gauge_names(&self) -> Vec<String> {
        self.gauges_named("cache_entries")
    }

    /// The gauge name of each cache in [`GAUGES`] for the entries of the caches the workers of
    /// a process share (the native build's tier; none when off).
    pub fn shared_gauge_names(&self) -> Vec<String> {
        self.gauges_named("shared_cache_entries")
    }

    fn gauges_named(&self, name: &str) -> Vec<String> {
        if !self.enabled() {
            return Vec::new();
        }
        GAUGES
            .iter()
            .map(|g| format!("{PREFIX}.{name}.cache.{g}"))
            .collect()
    }

    /// Hands every count that moved since the last call to `sink` (index, how much) and
    /// starts it again from zero.
    pub fn take_counts(&mut self, mut sink: impl FnMut(usize, u64)) {
        for (i, v) in self.counts.iter().enumerate() {
            let n = v.take();
            if n > 0 {
                sink(i, n);
            }
        }
    }

    /// Hands every latency kept since the last call to `sink` (upstream index, ms).
    pub fn take_latencies(&mut self, mut sink: impl FnMut(usize, u32)) {
        for (i, buf) in self.latencies.iter_mut().enumerate() {
            for ms in buf.drain(..) {
                sink(i, ms);
            }
        }
    }

    /// The count of `c` not yet taken (tests).
    pub fn get(&self, c: Counter) -> u64 {
        self.counts.get(c as usize).map_or(0, Cell::get)
    }

    /// The not yet taken count of decisions `outcome` (one of [`OUTCOMES`]) for the
    /// application named `app` (tests).
    pub fn decisions(&self, app: &str, outcome: &str) -> u64 {
        let a = self.apps.iter().position(|n| n == app);
        let o = OUTCOMES.iter().position(|n| *n == outcome);
        a.zip(o)
            .and_then(|(a, o)| self.counts.get(Counter::ALL.len() + a * OUTCOMES.len() + o))
            .map_or(0, Cell::get)
    }

    /// Latencies kept for `to` and not yet taken (tests).
    pub fn latencies(&self, to: Upstream) -> &[u32] {
        self.latencies
            .get(to as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Which of `settings`' applications `app` is: the policy's, then the fallback's. By address,
/// since the route hands out references into these lists: no name is hashed per request.
fn app_index(settings: &Settings, app: &Application) -> Option<usize> {
    let policy = settings.policy.applications();
    if let Some(i) = position_by_address(policy, app) {
        return Some(i);
    }
    position_by_address(settings.fallback.applications(), app).map(|i| policy.len() + i)
}

fn position_by_address<T>(items: &[T], item: &T) -> Option<usize> {
    let size = std::mem::size_of::<T>().max(1);
    let start = items.as_ptr() as usize;
    let at = item as *const T as usize;
    let offset = at.checked_sub(start)?;
    let i = offset / size;
    (offset % size == 0 && i < items.len()).then_some(i)
}

/// An application name as one stat-name segment: Envoy splits names at `.`, and tag regexes
/// and Prometheus want plain characters, so anything else becomes `_`.
fn label_value(name: &str) -> String {
    let v: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    if v.is_empty() {
        "_".into()
    } else {
        v
    }
}

fn bearer_reason(e: &BearerError) -> Counter {
    match e {
        BearerError::Missing => Counter::BearerMissing,
        BearerError::Malformed => Counter::BearerMalformed,
        BearerError::NeedKeys => Counter::BearerUnknownKey,
        BearerError::InvalidToken(why) => match *why {
            "expired" => Counter::BearerExpired,
            "not valid yet" => Counter::BearerNotYetValid,
            "bad signature" => Counter::BearerSignature,
            "malformed" => Counter::BearerMalformed,
            "algorithm not allowed" => Counter::BearerAlgorithm,
            "wrong issuer" | UNKNOWN_ISSUER => Counter::BearerIssuer,
            "wrong audience" => Counter::BearerAudience,
            "inactive" => Counter::BearerInactive,
            w if w == UNKNOWN_KEY => Counter::BearerUnknownKey,
            w if w == UNUSABLE_CLAIM => Counter::BearerClaims,
            _ => Counter::BearerOther,
        },
    }
}

#[cfg(test)]
mod tests;
