//! Session validation at the OP (`session.validate_interval_s`): once the interval has passed,
//! the next request of the session asks the OP again, with the refresh-token grant (or
//! UserInfo when the session has no refresh token). One request per session asks, on all the
//! workers of the Envoy together; the session's other requests wait for it and then carry the
//! successor cookie. The OP saying no ends the session; the OP not answering is tolerated for
//! `session.validation_grace_s`.

use std::collections::HashMap;
use std::rc::Rc;

use super::state::VmState;
use super::{Level, RequestFlow, Stage};
use crate::config::Settings;
use crate::http::{Action, CalloutResult, Wake};
use crate::id_token::{self, IdTokenError, RefreshExpected};
use crate::jwks::parse_jwks;
use crate::login::Entropy;
use crate::metrics::Counter;
use crate::op_session::{self, RefreshError, UserinfoError};
use crate::revocation::Revoked;
use crate::session::slot::{self, Slot, SlotState};
use crate::session::{Session, SessionEntry};

/// The access token is refreshed this long before it expires.
const ACCESS_MARGIN_S: u64 = 10;
/// After the OP could not be asked about a session, it is asked again no sooner than this:
/// with the OP down, every request would otherwise wait out a callout timeout.
const RETRY_AFTER_FAILURE_S: u64 = 5;
/// A worker's memory of validation outcomes is cleared when it holds more sessions than this.
const MAX_OUTCOMES: usize = 10_000;

/// Whether `session` must be validated before it is used again.
pub(super) fn is_due(settings: &Settings, ws: usize, session: &Session, now: u64) -> bool {
    let s = &settings.web(ws).session;
    let op = &session.op;
    let interval_over =
        s.validate_interval_s > 0 && now >= op.validated_at.saturating_add(s.validate_interval_s);
    // Ahead of expiry by the margin, or by half its life for tokens shorter than that.
    // At most once a second: an OP answering `expires_in: 0` would otherwise be asked on
    // every request.
    let access_expiring = s.keep_access_token
        && op.refresh_token.is_some()
        && now > op.validated_at
        && op.access_expires_at.is_some_and(|e| {
            let margin = ACCESS_MARGIN_S.min(e.saturating_sub(op.validated_at) / 2);
            now.saturating_add(margin) >= e
        });
    interval_over || access_expiring
}

/// What became of a due session.
pub(super) enum Validated {
    /// Use it as it is (validated elsewhere and not newer, or the OP is down within the grace).
    Keep,
    /// The validated successor: its cookie value, to send to the browser, and its entry.
    Successor(String, Rc<SessionEntry>),
    /// The OP refused it: no session.
    Ended,
}

enum Outcome {
    Successor(String, Rc<SessionEntry>),
    Failed(u64),
    Ended(u64),
}

/// What one worker knows of its sessions' validations.
#[derive(Default)]
pub struct Validations {
    outcomes: HashMap<String, Outcome>,
    /// Sessions being validated (by a request of this worker when `leader_here`, else by
    /// another worker), with the requests of this worker waiting for the answer.
    waiting: HashMap<String, Waiting>,
}

struct Waiting {
    leader_here: bool,
    since: u64,
    waiters: Vec<u32>,
}

impl Validations {
    /// The newest copy of session `sid` this worker knows of, when newer than `generation`.
    pub(super) fn newer(&self, sid: &str, generation: u32) -> Option<&Session> {
        match self.outcomes.get(sid) {
            Some(Outcome::Successor(_, e)) if e.session.op.generation > generation => {
                Some(&e.session)
            }
            _ => None,
        }
    }

    fn remember(&mut self, sid: &str, outcome: Outcome) {
        if self.outcomes.len() >= MAX_OUTCOMES {
            self.outcomes.clear();
        }
        self.outcomes.insert(sid.to_string(), outcome);
    }
}

impl VmState {
    /// Creates every validation slot that does not exist yet (once per worker, at start): a
    /// slot created while two workers race for the same session's lease is the one case the
    /// compare-and-swap cannot settle.
    pub fn prepare_validation_slots(&self) {
        for i in 0..slot::SLOTS {
            let key = slot::key_of_index(i);
            if self.store.load(&key).is_none() {
                let _ = self.store.store(&key, &Slot::idle().encode(), None);
            }
        }
    }

    /// For the root tick: requests that wait for another worker's validation are woken once
    /// its slot says it is over (or its leader is presumed lost).
    pub(super) fn poll_validations(&mut self, now: u64, stale_after_s: u64) {
        let mut done = Vec::new();
        for (sid, w) in &self.validations.waiting {
            if w.leader_here && now < w.since.saturating_add(stale_after_s) {
                continue;
            }
            let busy = self
                .store
                .load(&slot::key(sid))
                .and_then(|(b, _)| Slot::decode(&b))
                // Another session's fresh lease on a shared slot counts too: waking would only
                // find it busy again.
                .is_some_and(|s| {
                    matches!(s.state, SlotState::Busy { since }
                            if now < since.saturating_add(stale_after_s))
                });
            if !busy {
                done.push(sid.clone());
            }
        }
        for sid in done {
            if let Some(w) = self.validations.waiting.remove(&sid) {
                self.wake(w.waiters, Wake::Ready);
            }
        }
    }

    pub(super) fn write_slot(&self, sid: &str, state: SlotState) {
        let slot = Slot {
            sid: sid.to_string(),
            state,
        };
        // Unconditional: the leader's answer replaces whatever is there.
        let _ = self.store.store(&slot::key(sid), &slot.encode(), None);
    }
}

/// The validation slot at `key` as session `sid` sees it, and its version for the write that
/// takes it.
fn load_slot(
    vm: &VmState,
    key: &str,
    sid: &str,
    now: u64,
    stale_after: u64,
) -> (Option<Slot>, Option<u32>) {
    let (slot, cas) = match vm.store.load(key) {
        Some((bytes, cas)) => (Slot::decode(&bytes), Some(cas)),
        None => (None, None),
    };
    // Two sessions hashed to one slot: another's fresh lease is waited out rather than
    // taken over (its waiters would otherwise ask the OP with the same refresh token).
    let slot = match slot {
        Some(s) if s.sid != sid => match s.state {
            SlotState::Busy { since } if now < since.saturating_add(stale_after) => Some(Slot {
                sid: sid.to_string(),
                state: SlotState::Busy { since },
            }),
            _ => None,
        },
        other => other,
    };
    (slot, cas)
}

impl RequestFlow {
    /// A due session: the outcome known here or at another worker, a wait for the one asking,
    /// or this request asks (`Err(Action::Callout)`).
    #[allow(clippy::result_large_err)]
    pub(super) fn validate(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: &Rc<SessionEntry>,
        now: u64,
    ) -> Result<Validated, Action> {
        let sid = entry.session.sid.as_str();
        let mine = entry.session.op.validated_at;
        let generation = entry.session.op.generation;
        match vm.validations.outcomes.get(sid) {
            Some(Outcome::Successor(v, e)) if e.session.op.generation > generation => {
                return Ok(Validated::Successor(v.clone(), e.clone()));
            }
            Some(Outcome::Ended(at)) if *at >= mine => {
                self.ended_session |= ended_recently(*at, now);
                return Ok(Validated::Ended);
            }
            Some(Outcome::Failed(at)) if now < at.saturating_add(RETRY_AFTER_FAILURE_S) => {
                return self.within_grace(settings, entry, now);
            }
            _ => {}
        }
        if let Some(w) = vm.validations.waiting.get_mut(sid) {
            w.waiters.push(self.ctx);
            return Err(Action::Wait);
        }
        let stale_after = validation_stale_after_s(settings, self.ws);
        let key = slot::key(sid);
        for _ in 0..4 {
            let (slot, cas) = load_slot(vm, &key, sid, now, stale_after);
            match slot.map(|s| s.state) {
                Some(SlotState::Done { cookie, .. }) => {
                    // Only this session's newer successor: shared data is not the gateway's
                    // alone, and an older copy must not replace a newer one.
                    let adopted = adopt(settings, self.ws, vm, &cookie, now).filter(|e| {
                        e.session.sid == entry.session.sid
                            && e.session.sub == entry.session.sub
                            && e.session.op.generation > generation
                    });
                    if let Some(e) = adopted {
                        vm.validations
                            .remember(sid, Outcome::Successor(cookie.clone(), e.clone()));
                        return Ok(Validated::Successor(cookie, e));
                    }
                }
                Some(SlotState::Ended { at }) if at >= mine => {
                    vm.validations.remember(sid, Outcome::Ended(at));
                    self.ended_session |= ended_recently(at, now);
                    return Ok(Validated::Ended);
                }
                Some(SlotState::Failed { at })
                    if now < at.saturating_add(RETRY_AFTER_FAILURE_S) =>
                {
                    vm.validations.remember(sid, Outcome::Failed(at));
                    return self.within_grace(settings, entry, now);
                }
                Some(SlotState::Busy { since }) if now < since.saturating_add(stale_after) => {
                    return Err(self.wait_elsewhere(vm, sid, now));
                }
                _ => {}
            }
            let Some(cas) = cas else {
                // Shared data has no "create if absent": a lease written where no key is would
                // not be compared with another worker's, and both would ask the OP with the same
                // refresh token. The slot is created idle, and the lease taken under CAS.
                let idle = Slot {
                    sid: sid.to_string(),
                    state: SlotState::Idle,
                };
                let _ = vm.store.store(&key, &idle.encode(), None);
                continue;
            };
            let busy = Slot {
                sid: sid.to_string(),
                state: SlotState::Busy { since: now },
            };
            match vm.store.store(&key, &busy.encode(), Some(cas)) {
                Err(crate::revocation::StoreError::CasMismatch) => continue,
                // Taken, or shared data refuses writes (then this worker asks on its own).
                _ => return self.ask_op(settings, vm, entry, now),
            }
        }
        // Other workers kept changing the slot: wait for the tick to look again.
        Err(self.wait_elsewhere(vm, sid, now))
    }

    /// This request waits for session `sid`'s validation at another worker; the root tick
    /// wakes it once the slot says it is over (`poll_validations`).
    fn wait_elsewhere(&self, vm: &mut VmState, sid: &str, now: u64) -> Action {
        vm.validations.waiting.insert(
            sid.to_string(),
            Waiting {
                leader_here: false,
                since: now,
                waiters: vec![self.ctx],
            },
        );
        Action::Wait
    }

    /// The session may go on while the OP cannot be asked, until the grace is over.
    #[allow(clippy::result_large_err)]
    fn within_grace(
        &mut self,
        settings: &Settings,
        entry: &SessionEntry,
        now: u64,
    ) -> Result<Validated, Action> {
        let s = &self.web(settings).session;
        let deadline = entry
            .session
            .op
            .validated_at
            .saturating_add(s.validate_interval_s)
            .saturating_add(s.validation_grace_s);
        if now < deadline {
            return Ok(Validated::Keep);
        }
        Err(Action::Respond(self.validation_unavailable()))
    }

    fn validation_unavailable(&mut self) -> crate::http::LocalResponse {
        self.note(
            Level::Warn,
            "session refused: the OP could not validate it and the grace is over".into(),
        );
        crate::pages::Problem {
            status: 503,
            code: "session_unverifiable",
            message: "Your session cannot be verified right now. Try again later.",
            reference: None,
            retry: None,
        }
        .respond(false)
    }

    /// This request asks the OP: the refresh-token grant, or UserInfo without a refresh token.
    #[allow(clippy::result_large_err)]
    fn ask_op(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: &Rc<SessionEntry>,
        now: u64,
    ) -> Result<Validated, Action> {
        let sid = entry.session.sid.clone();
        let op = &entry.session.op;
        let rp = self.rp(settings);
        let endpoints = vm.op(rp.web.op).endpoints.clone();
        let callout = endpoints.and_then(|e| match &op.refresh_token {
            Some(rt) => op_session::refresh_request(rp, &e, rt),
            None => op
                .access_token
                .as_ref()
                .and_then(|at| op_session::userinfo_request(rp, &e, at)),
        });
        let Some(callout) = callout else {
            // Nothing to ask with (or no endpoints yet): as if the OP were down.
            vm.validations.remember(&sid, Outcome::Failed(now));
            vm.write_slot(&sid, SlotState::Failed { at: now });
            return self.within_grace(settings, entry, now);
        };
        vm.validations.waiting.insert(
            sid,
            Waiting {
                leader_here: true,
                since: now,
                waiters: Vec::new(),
            },
        );
        self.stage = Stage::Validate {
            entry: entry.clone(),
        };
        Err(Action::Callout(callout))
    }

    /// The OP answered (or did not): the outcome for every worker, then the request again.
    /// `Some` is the JWKS callout when the refreshed ID token's key is not loaded on this
    /// worker (a worker that never signed anyone in has no keys): the ID token is what says
    /// whether the subject and the claims still hold, so it is not skipped for want of keys.
    pub(super) fn validation_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: Rc<SessionEntry>,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Option<Action> {
        let mut answer = match entry.session.op.refresh_token {
            Some(_) => self.refreshed(settings, vm, &entry, &result, now, false),
            None => self.userinfo_validated(settings, &entry, &result, now),
        };
        // Another worker may have fetched the keys already.
        if matches!(answer, Answer::NeedKeys) && vm.keys_from_peers(self.web(settings).op) {
            answer = self.refreshed(settings, vm, &entry, &result, now, false);
        }
        if matches!(answer, Answer::NeedKeys) {
            let rp = self.rp(settings);
            let endpoints = vm.op(rp.web.op).endpoints.clone();
            if let Some(callout) = endpoints.and_then(|e| crate::jwks::request(rp.op, &e)) {
                vm.op(rp.web.op).jwks.attempted(now, rp.op.jwks_max_age_s);
                // The lease is renewed: the other workers must not take this validation over
                // (and present the refresh token the OP has just rotated) during the fetch.
                vm.write_slot(&entry.session.sid, SlotState::Busy { since: now });
                if let Some(w) = vm.validations.waiting.get_mut(&entry.session.sid) {
                    w.since = now;
                }
                self.stage = Stage::ValidateKeys {
                    entry,
                    answer: result,
                };
                return Some(Action::Callout(callout));
            }
            // Nowhere to fetch from: as if fetched in vain (the rotated token is kept).
            answer = self.refreshed(settings, vm, &entry, &result, now, true);
        }
        self.then_userinfo(settings, vm, entry, answer, now, rng)
    }

    /// The JWKS arrived (or did not) for the refreshed ID token of `answer`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn validation_keys_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: Rc<SessionEntry>,
        answer: CalloutResult,
        keys: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Option<Action> {
        let fetched = match keys {
            CalloutResult::Response { status: 200, body } => match parse_jwks(&body) {
                Some(keys) => {
                    vm.keys_fetched(self.web(settings).op, keys, now);
                    Counter::JwksOk
                }
                None => {
                    self.note(
                        Level::Warn,
                        "session validation: JWKS is not a JWK Set".into(),
                    );
                    Counter::JwksFailed
                }
            },
            _ => {
                self.note(
                    Level::Warn,
                    "session validation: the JWKS could not be fetched".into(),
                );
                Counter::JwksFailed
            }
        };
        vm.metrics.count(fetched);
        let decided = self.refreshed(settings, vm, &entry, &answer, now, true);
        self.then_userinfo(settings, vm, entry, decided, now, rng)
    }

    /// The outcome for every worker, and the requests waiting for it woken.
    pub(super) fn validation_decided(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: &SessionEntry,
        answer: Answer,
        now: u64,
        rng: &mut dyn Entropy,
    ) {
        let sid = entry.session.sid.clone();
        if let Some(w) = vm.validations.waiting.remove(&sid) {
            vm.wake(w.waiters, Wake::Ready);
        }
        vm.metrics.count(match &answer {
            Answer::Valid(_) => Counter::ValidationOk,
            Answer::Refused(_) => Counter::ValidationEnded,
            Answer::NeedKeys | Answer::Unavailable(_) => Counter::ValidationFailed,
        });
        match answer {
            Answer::Valid(session) => {
                let headers = settings
                    .web(self.ws)
                    .identity_for(Some(&session.sub), &session.claims);
                let value = session.encode(&self.web(settings).session.keys, rng);
                let (Ok(headers), Some(value)) = (headers, value) else {
                    return self.end_validated(settings, vm, entry, now, "unusable session");
                };
                let next = vm.sessions(self.ws).insert(
                    value.clone(),
                    SessionEntry::new(*session, headers),
                    now,
                    self.web(settings).session.idle_timeout_s,
                );
                vm.write_slot(
                    &sid,
                    SlotState::Done {
                        at: now,
                        cookie: value.clone(),
                    },
                );
                vm.validations
                    .remember(&sid, Outcome::Successor(value, next));
            }
            Answer::Refused(why) => self.end_validated(settings, vm, entry, now, &why),
            // `refreshed` with `keys_fetched` never asks for keys; kept total all the same.
            Answer::NeedKeys => {
                self.note(
                    Level::Warn,
                    format!("session validation: ID token key missing; sid={sid}"),
                );
                vm.validations.remember(&sid, Outcome::Failed(now));
                vm.write_slot(&sid, SlotState::Failed { at: now });
            }
            Answer::Unavailable(why) => {
                self.note(
                    Level::Warn,
                    format!("session validation failed: {why}; sid={sid}"),
                );
                vm.validations.remember(&sid, Outcome::Failed(now));
                vm.write_slot(&sid, SlotState::Failed { at: now });
            }
        }
    }

    /// The OP refused the session: it ends here and on every worker, copies included.
    pub(super) fn end_validated(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: &SessionEntry,
        now: u64,
        why: &str,
    ) {
        let s = &entry.session;
        self.note(
            Level::Info,
            format!(
                "session ended at validation: {why}; sub={} sid={}",
                super::printable(&s.sub),
                s.sid
            ),
        );
        let until = s
            .expires_at
            .max(now.saturating_add(self.web(settings).session.idle_timeout_s));
        vm.revoked
            .revoke(Revoked::Session(s.sid.clone()), now, until, now);
        self.log.extend(vm.publish_revocations(now));
        self.ended_session = true;
        vm.validations.remember(&s.sid, Outcome::Ended(now));
        vm.write_slot(&s.sid, SlotState::Ended { at: now });
    }

    /// The refresh answer as a session; `keys_fetched`: the JWKS was fetched for its ID token
    /// already (a key still missing is not fetched for again).
    fn refreshed(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        entry: &SessionEntry,
        result: &CalloutResult,
        now: u64,
        keys_fetched: bool,
    ) -> Answer {
        let tokens = match op_session::refresh_outcome(result) {
            Ok(t) => t,
            Err(e @ RefreshError::Refused { .. }) => return Answer::Refused(e.to_string()),
            Err(e) => return Answer::Unavailable(e.to_string()),
        };
        let mut s = entry.session.clone();
        s.op.validated_at = now;
        s.op.generation = s.op.generation.wrapping_add(1);
        s.last_activity = now;
        if let Some(rt) = tokens.refresh_token {
            s.op.refresh_token = Some(rt);
        }
        if s.op.access_token.is_some() {
            s.op.access_expires_at = tokens.expires_in.map(|e| now.saturating_add(e));
            s.op.access_token = tokens.access_token;
        }
        let Some(raw) = tokens.id_token else {
            return Answer::Valid(Box::new(s));
        };
        let op = self.rp(settings).op;
        let expected = RefreshExpected {
            issuer: &op.issuer,
            client_id: &self.web(settings).client.client_id,
            sub: &entry.session.sub,
            auth_time: None,
            now,
            clock_skew_s: settings.clock_skew_s,
            algorithms: &settings.id_token_algorithms,
        };
        let (max_age, refetch) = (op.jwks_max_age_s, op.jwks_min_refetch_interval_s);
        match id_token::validate_refreshed(
            &raw,
            &vm.op(self.web(settings).op).jwks,
            max_age,
            refetch,
            &expected,
        ) {
            Ok(t) => {
                op_session::merge_claims(
                    &mut s.claims,
                    &self.web(settings).session.claims,
                    &t.claims,
                );
                if s.op.id_token.is_some() {
                    s.op.id_token = super::op_tokens::keepable_id_token(settings, self.ws, raw);
                }
                Answer::Valid(Box::new(s))
            }
            Err(IdTokenError::NeedKeys) if !keys_fetched => Answer::NeedKeys,
            // The keys could not be had (fetched just now, or too recently to fetch again): the
            // grant itself was renewed, and the OP has forgotten the old refresh token, so the
            // successor is kept; the claims are updated at the next validation.
            Err(IdTokenError::NeedKeys | IdTokenError::UnknownKey) => {
                self.note(
                    Level::Info,
                    "refreshed ID token not checked (key not loaded); claims kept".into(),
                );
                Answer::Valid(Box::new(s))
            }
            Err(e) => Answer::Refused(format!("refreshed ID token refused: {e}")),
        }
    }

    fn userinfo_validated(
        &mut self,
        settings: &Settings,
        entry: &SessionEntry,
        result: &CalloutResult,
        now: u64,
    ) -> Answer {
        match op_session::userinfo_outcome(result, &entry.session.sub) {
            Ok(claims) => {
                let mut s = entry.session.clone();
                s.op.validated_at = now;
                s.op.generation = s.op.generation.wrapping_add(1);
                s.last_activity = now;
                op_session::merge_claims(
                    &mut s.claims,
                    &self.web(settings).session.claims,
                    &claims,
                );
                Answer::Valid(Box::new(s))
            }
            Err(e @ (UserinfoError::Refused { .. } | UserinfoError::SubMismatch)) => {
                Answer::Refused(e.to_string())
            }
            Err(e) => Answer::Unavailable(e.to_string()),
        }
    }

    /// The validating request went away before the OP answered: the next one asks.
    pub(super) fn validation_abandoned(vm: &mut VmState, entry: &SessionEntry) {
        let sid = &entry.session.sid;
        if let Some(w) = vm.validations.waiting.remove(sid) {
            vm.wake(w.waiters, Wake::Ready);
        }
        vm.write_slot(sid, SlotState::Idle);
    }
}

pub(super) enum Answer {
    Valid(Box<Session>),
    Refused(String),
    Unavailable(String),
    /// The refreshed ID token's key is not loaded here: fetch the JWKS, then decide.
    NeedKeys,
}

/// The successor cookie another worker stored, as a session of this worker's cache.
fn adopt(
    settings: &Settings,
    ws: usize,
    vm: &mut VmState,
    cookie: &str,
    now: u64,
) -> Option<Rc<SessionEntry>> {
    let web = settings.web(ws);
    vm.sessions(ws).lookup(
        cookie,
        &web.session.keys,
        now,
        web.session.idle_timeout_s,
        |s| web.identity_for(Some(&s.sub), &s.claims).ok(),
    )
}

/// A validation whose leader has not answered within the OP's timeout (and a margin) is
/// presumed lost.
/// A validation that ended the session at `at` (seconds, on whichever worker) a moment ago: the
/// workers may not all have taken in its revocation (see `hold.rs`). A second covers the
/// ticks the revocation needs, and the workers' clocks read at their ticks.
fn ended_recently(at: u64, now: u64) -> bool {
    now <= at.saturating_add(1)
}

pub(super) fn validation_stale_after_s(settings: &Settings, ws: usize) -> u64 {
    super::state::stale_after_s(settings.rp(ws).op.timeout_ms)
}
