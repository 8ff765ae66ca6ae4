//! Sign-in: the redirect to the OP, the callback, and the ID token that opens a session.

use serde_json::Map;

use super::head::RequestHead;
use super::metered::login_failure;
use super::op_tokens::{keepable_id_token, op_state};
use super::state::VmState;
use super::{not_ready, printable, Level, RequestFlow, Stage};
use crate::config::{OpEndpoints, Settings};
use crate::cookie::{self, CookieAttributes};
use crate::http::{Action, CalloutResult, LocalResponse};
use crate::id_token::{self, Expected, IdToken, IdTokenError};
use crate::identity::UnusableClaim;
use crate::jwks::parse_jwks;
use crate::jws::key_miss;
use crate::login::{random_token, safe_return_path, Entropy, LoginTransaction, TXN_SLOTS};
use crate::metrics::Counter;
use crate::oidc::{self, TokenError};
use crate::pages::Problem;
use crate::session::chunks::{self, Carried};
use crate::session::{Session, SessionEntry};

impl RequestFlow {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn token_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        txn: LoginTransaction,
        html: bool,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let id_token = match result {
            CalloutResult::Response { status, body } => {
                match oidc::parse_code_response(status, &body) {
                    Ok((t, tokens)) => {
                        self.login_tokens = Some(tokens);
                        t
                    }
                    Err(TokenError::Refused { status, error }) => {
                        vm.metrics.count(Counter::LoginFailedTokenEndpoint);
                        return self.op_failure(
                            rng,
                            html,
                            &txn,
                            502,
                            format!("token endpoint refused the code: HTTP {status} {error}"),
                        );
                    }
                    Err(TokenError::Malformed(why)) => {
                        vm.metrics.count(Counter::LoginFailedTokenEndpoint);
                        return self.op_failure(
                            rng,
                            html,
                            &txn,
                            502,
                            format!("token endpoint: {why}"),
                        );
                    }
                }
            }
            other => {
                vm.metrics
                    .count(login_failure(&other, Counter::LoginFailedTokenEndpoint));
                return self.callout_failure(rng, html, &txn, "token endpoint", other);
            }
        };
        self.check_id_token(settings, vm, txn, id_token, html, now, rng, true)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn login_keys_answered(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        txn: LoginTransaction,
        id_token: String,
        html: bool,
        result: CalloutResult,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        match result {
            CalloutResult::Response { status: 200, body } => match parse_jwks(&body) {
                Some(keys) => {
                    vm.metrics.count(Counter::JwksOk);
                    vm.keys_fetched(self.web(settings).op, keys, now)
                }
                None => {
                    vm.metrics.count(Counter::JwksFailed);
                    vm.metrics.count(Counter::LoginFailedJwks);
                    return self.op_failure(rng, html, &txn, 502, "JWKS is not a JWK Set".into());
                }
            },
            CalloutResult::Response { status, .. } => {
                vm.metrics.count(Counter::JwksFailed);
                vm.metrics.count(Counter::LoginFailedJwks);
                return self.op_failure(
                    rng,
                    html,
                    &txn,
                    502,
                    format!("JWKS answered HTTP {status}"),
                );
            }
            other => {
                vm.metrics.count(Counter::JwksFailed);
                vm.metrics
                    .count(login_failure(&other, Counter::LoginFailedJwks));
                return self.callout_failure(rng, html, &txn, "JWKS", other);
            }
        }
        self.check_id_token(settings, vm, txn, id_token, html, now, rng, false)
    }

    pub(super) fn unauthenticated(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        head: &RequestHead,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        if let Some(action) = self.login_for_post(settings, vm, head, now, rng) {
            return action;
        }
        if !head.is_navigation() {
            let mut r = Problem {
                status: 401,
                code: "login_required",
                message: "A valid session is required.",
                reference: None,
                retry: None,
            }
            .respond(false);
            r.headers.push((
                "www-authenticate".into(),
                crate::bearer::challenge(&settings.api.realm, None, None),
            ));
            return Action::Respond(r);
        }
        match self.login_redirect(settings, vm, head, now, rng) {
            Ok((redirect, _)) => Action::Respond(redirect),
            Err(action) => action,
        }
    }

    /// The redirect that starts a sign-in, with its cookies, and the sign-in's transaction;
    /// or the answer when none can start.
    // A cold path: the answer is moved once, not worth a box.
    #[allow(clippy::result_large_err)]
    pub(super) fn login_redirect(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        head: &RequestHead,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Result<(LocalResponse, LoginTransaction), Action> {
        let rp = self.rp(settings);
        let op_i = rp.web.op;
        let Some(endpoints) = vm.op(op_i).endpoints.clone() else {
            vm.metrics.count(Counter::LoginFailedUnavailable);
            return Err(not_ready(vm, op_i, true));
        };
        let callback = settings
            .web(self.ws)
            .client
            .redirect_uri
            .clone()
            .or_else(|| {
                head.trusted_origin(settings, self.ws)
                    .map(|o| format!("{o}{}", self.web(settings).callback_path))
            });
        let Some(redirect_uri) = callback else {
            // Configuration makes this unreachable (a `*` host needs client.redirect_uri); a
            // redirect is never built from a host no application names.
            return Err(self.refuse(
                rng,
                true,
                400,
                "invalid_host",
                "Sign-in is not available for this host name.",
                None,
                format!("no redirect_uri for host {}", printable(head.host)),
            ));
        };
        let return_to = safe_return_path(head.path).unwrap_or("/").to_string();
        let Some(mut txn) = LoginTransaction::new(rng, return_to, redirect_uri) else {
            return Err(self.no_randomness());
        };
        let Some((set, counter)) = self.txn_cookies(settings, head, &mut txn, now) else {
            return Err(self.no_randomness());
        };
        let Some(url) = oidc::authorization_url(rp, &endpoints, &txn) else {
            vm.metrics.count(Counter::LoginFailedUnavailable);
            return Err(not_ready(vm, op_i, true));
        };
        let redirect = LocalResponse::redirect(&url)
            .header("set-cookie", set)
            .header("set-cookie", counter);
        vm.metrics.count(Counter::LoginStarted);
        Ok((redirect, txn))
    }

    /// The `Set-Cookie`s that start a sign-in: the transaction in the next cookie slot (the
    /// oldest one), and the slot counter. `None` when the transaction could not be sealed.
    fn txn_cookies(
        &mut self,
        settings: &Settings,
        head: &RequestHead,
        txn: &mut LoginTransaction,
        now: u64,
    ) -> Option<(String, String)> {
        let counter = LoginTransaction::counter_cookie_name(&self.web(settings).txn_cookie_prefix);
        txn.slot = LoginTransaction::next_slot(cookie::find(head.request, &counter));
        let mut set = txn_cookie(settings, self.ws, txn, now)?;
        if set.len() > MAX_SET_COOKIE {
            // Browsers drop a larger cookie, and the sign-in would fail at the callback.
            self.note(
                Level::Info,
                format!(
                    "return URL of {} bytes too long for the login cookie; returning to /",
                    txn.return_to.len()
                ),
            );
            txn.return_to = "/".into();
            set = txn_cookie(settings, self.ws, txn, now)?;
        }
        let next = (txn.slot + 1) % TXN_SLOTS;
        let attrs = CookieAttributes {
            path: "/",
            ..txn_cookie_attrs(settings, self.ws)
        };
        let counter = cookie::set_cookie(
            &counter,
            &next.to_string(),
            settings.login_timeout_s,
            &attrs,
        );
        Some((set, counter))
    }

    pub(super) fn callback(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        endpoints: &OpEndpoints,
        head: &RequestHead,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        self.stage = Stage::Done;
        self.carried = chunks::read(head.request, &self.web(settings).session.cookie_name).1;
        let (state, code, error, iss) = callback_params(head.query);
        let html = head.method == "GET" || head.method == "HEAD";
        let Some(state) = state else {
            return self.refuse(
                rng,
                html,
                400,
                "invalid_callback",
                "The sign-in answer is incomplete.",
                None,
                "callback without state".into(),
            );
        };
        let txn = (0..TXN_SLOTS).find_map(|slot| {
            let name = LoginTransaction::cookie_name(&self.web(settings).txn_cookie_prefix, slot);
            let sealed = cookie::find(head.request, &name)?;
            let txn =
                LoginTransaction::open(sealed, &state, &self.web(settings).session.keys, now)?;
            Some(LoginTransaction { slot, ..txn })
        });
        if let Some(txn) = &txn {
            self.read_preserved(settings, head.request, txn, now);
        }
        let Some(txn) = txn else {
            return self.refuse(
                rng,
                html,
                403,
                "login_transaction_invalid",
                "This sign-in was not started here, was already used, or took too long.",
                Some("/"),
                "callback state does not match a login transaction of this browser".into(),
            );
        };
        // From here the transaction is consumed, whatever happens next.
        // RFC 9207: an OP that names itself must be this web session's. Another OP's answer
        // (a mix-up: the browser was sent here by the wrong OP) never has its code redeemed.
        let issuer = &self.rp(settings).op.issuer;
        if iss.as_ref().is_some_and(|iss| iss != issuer) {
            let action = self.refuse(
                rng,
                html,
                403,
                "login_transaction_invalid",
                "This sign-in answer came from another identity provider.",
                Some(&txn.return_to),
                "callback names another issuer (iss parameter)".into(),
            );
            return add_cookie(action, clear_txn_cookie(settings, self.ws, &txn));
        }
        if let Some(error) = error {
            return self.login_failed_at_op(settings, &txn, &error, html, rng);
        }
        let Some(code) = code.filter(|c| !c.is_empty()) else {
            let action = self.refuse(
                rng,
                html,
                400,
                "invalid_callback",
                "The sign-in answer has no code.",
                Some(&txn.return_to),
                "callback without code".into(),
            );
            return add_cookie(action, clear_txn_cookie(settings, self.ws, &txn));
        };
        let Some(callout) = oidc::token_request(self.rp(settings), endpoints, &txn, &code) else {
            return add_cookie(
                not_ready(vm, self.web(settings).op, html),
                clear_txn_cookie(settings, self.ws, &txn),
            );
        };
        self.stage = Stage::Token { txn, html };
        Action::Callout(callout)
    }

    /// The OP answered the callback with `error` (the user denied access, or must sign in
    /// again): an error page that offers to try again.
    fn login_failed_at_op(
        &mut self,
        settings: &Settings,
        txn: &LoginTransaction,
        error: &str,
        html: bool,
        rng: &mut dyn Entropy,
    ) -> Action {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .take(64)
            .collect();
        let message = match error.as_str() {
            "access_denied" => "The identity provider did not grant access.",
            "login_required" | "interaction_required" => {
                "The identity provider needs you to sign in again."
            }
            _ => "The identity provider could not sign you in.",
        };
        let reference = random_token(rng, 6).unwrap_or_default();
        self.note(
            Level::Info,
            format!("login failed at the OP: error={error} reference={reference}"),
        );
        let problem = Problem {
            status: 401,
            code: &error,
            message,
            reference: Some(&reference),
            retry: Some(&txn.return_to),
        };
        Action::Respond(with_cookie(
            problem.respond(html),
            clear_txn_cookie(settings, self.ws, txn),
        ))
    }

    /// A verified ID token (merged with UserInfo where configured) becomes a session: its
    /// cookie, and the browser sent back.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open_session(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        txn: &LoginTransaction,
        token: IdToken,
        id_token: Option<String>,
        html: bool,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        let Some(sid) = random_token(rng, 16) else {
            return self.no_randomness();
        };
        let session = self.new_session(settings, &token, id_token, sid, now);
        let headers = match settings
            .web(self.ws)
            .identity_for(Some(&session.sub), &session.claims)
        {
            Ok(headers) => headers,
            Err(UnusableClaim(claim)) => {
                // Forwarding without the header would hide who the user is; with it, the
                // value would split or end the header.
                vm.metrics.count(Counter::LoginFailedSession);
                let action = self.refuse(
                    rng,
                    html,
                    403,
                    "identity_unusable",
                    "Your identity cannot be passed on to this application.",
                    None,
                    format!(
                        "login refused: claim `{}` of sub={} cannot be a header value",
                        printable(&claim),
                        printable(&session.sub)
                    ),
                );
                return add_cookie(action, clear_txn_cookie(settings, self.ws, txn));
            }
        };
        let Some(value) = session.encode(&self.web(settings).session.keys, rng) else {
            return self.no_randomness();
        };
        self.note(
            Level::Info,
            format!("login: sub={} sid={}", printable(&session.sub), session.sid),
        );
        let Some(set) = session_cookies(
            settings,
            self.ws,
            &value,
            session.remaining(now),
            self.carried,
        ) else {
            vm.metrics.count(Counter::LoginFailedSession);
            let action = self.refuse(
                rng,
                html,
                500,
                "session_too_large",
                "Your session is too large for this gateway's cookies.",
                None,
                format!(
                    "login refused: the session of sub={} needs more than \
                     session.max_cookie_chunks={} cookies",
                    printable(&session.sub),
                    self.web(settings).session.max_cookie_chunks
                ),
            );
            return add_cookie(action, clear_txn_cookie(settings, self.ws, txn));
        };
        vm.metrics.count(Counter::LoginCompleted);
        let entry = SessionEntry::new(session, headers);
        vm.sessions(self.ws)
            .insert(value, entry, now, self.web(settings).session.idle_timeout_s);
        let mut response = self.landing(&txn.return_to);
        for c in set {
            response = response.header("set-cookie", c);
        }
        Action::Respond(
            response
                .header("set-cookie", clear_txn_cookie(settings, self.ws, txn))
                .header("set-cookie", clear_counter_cookie(settings, self.ws)),
        )
    }

    /// The session the ID token opens, with the configured claims and what is kept of the
    /// login's tokens.
    fn new_session(
        &mut self,
        settings: &Settings,
        token: &IdToken,
        id_token: Option<String>,
        sid: String,
        now: u64,
    ) -> Session {
        let mut claims = Map::new();
        for name in &self.web(settings).session.claims {
            if let Some(v) = token.claims.get(name) {
                claims.insert(name.clone(), v.clone());
            }
        }
        Session {
            sid,
            sub: token.sub.clone(),
            auth_time: token.auth_time.unwrap_or(now),
            expires_at: now.saturating_add(self.web(settings).session.max_lifetime_s),
            last_activity: now,
            created_at: now,
            claims,
            op: op_state(
                settings,
                self.ws,
                &token.claims,
                id_token,
                self.login_tokens.take(),
                now,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_id_token(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        txn: LoginTransaction,
        id_token: String,
        html: bool,
        now: u64,
        rng: &mut dyn Entropy,
        may_fetch_keys: bool,
    ) -> Action {
        let expected = Expected {
            issuer: &self.rp(settings).op.issuer,
            client_id: &self.web(settings).client.client_id,
            nonce: &txn.nonce,
            now,
            clock_skew_s: settings.clock_skew_s,
            algorithms: &settings.id_token_algorithms,
        };
        let op_i = self.web(settings).op;
        let op = settings.op(op_i);
        match id_token::validate(
            &id_token,
            &vm.op(op_i).jwks,
            op.jwks_max_age_s,
            op.jwks_min_refetch_interval_s,
            &expected,
        ) {
            Ok(token) => {
                let kept = keepable_id_token(settings, self.ws, id_token);
                self.id_token_checked(settings, vm, txn, token, kept, html, now, rng)
            }
            // Another worker may have fetched them already.
            Err(IdTokenError::NeedKeys) if may_fetch_keys && vm.keys_from_peers(op_i) => {
                self.check_id_token(settings, vm, txn, id_token, html, now, rng, true)
            }
            Err(IdTokenError::NeedKeys) if may_fetch_keys => {
                vm.op(op_i).jwks.attempted(now, op.jwks_max_age_s);
                let endpoints = vm.op(op_i).endpoints.clone();
                let Some(callout) = endpoints.and_then(|e| crate::jwks::request(op, &e)) else {
                    vm.metrics.count(Counter::LoginFailedUnavailable);
                    return not_ready(vm, op_i, html);
                };
                self.stage = Stage::Keys {
                    txn,
                    id_token,
                    html,
                };
                Action::Callout(callout)
            }
            Err(e) => {
                let log = match e {
                    IdTokenError::NeedKeys | IdTokenError::UnknownKey => {
                        let miss = key_miss(
                            &id_token,
                            &vm.op(op_i).jwks,
                            now,
                            op.jwks_max_age_s,
                            op.jwks_min_refetch_interval_s,
                            !may_fetch_keys,
                        );
                        format!("ID token refused: {} ({miss})", IdTokenError::UnknownKey)
                    }
                    e => format!("ID token refused: {e}"),
                };
                let (action, reference) = Self::refusal(
                    rng,
                    html,
                    403,
                    "id_token_invalid",
                    "The sign-in could not be verified.",
                    Some(&txn.return_to),
                );
                let log = format!("{log} (status=403 reference={reference})");
                self.note_refused(vm, now, Level::Warn, log);
                vm.metrics.count(Counter::LoginFailedIdToken);
                add_cookie(action, clear_txn_cookie(settings, self.ws, &txn))
            }
        }
    }
}

/// The callback's `state`, `code`, `error` and `iss` parameters, each the first of its name.
type CallbackParams = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn callback_params(query: &str) -> CallbackParams {
    let (mut state, mut code, mut error, mut iss) = (None, None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "state" if state.is_none() => state = Some(v.into_owned()),
            "code" if code.is_none() => code = Some(v.into_owned()),
            "error" if error.is_none() => error = Some(v.into_owned()),
            "iss" if iss.is_none() => iss = Some(v.into_owned()),
            _ => {}
        }
    }
    (state, code, error, iss)
}

fn session_cookie_attrs(settings: &Settings, ws: usize) -> CookieAttributes<'_> {
    let s = &settings.web(ws).session;
    CookieAttributes {
        path: "/",
        domain: s.cookie_domain.as_deref(),
        secure: s.cookie_secure,
        same_site: "Lax",
    }
}

/// The `Set-Cookie`s of a session cookie value: one cookie or its chunks, and the clearing of
/// the carried ones it no longer uses. `None` when it needs more chunks than configured.
pub(super) fn session_cookies(
    settings: &Settings,
    ws: usize,
    value: &str,
    max_age: u64,
    carried: Carried,
) -> Option<Vec<String>> {
    let s = &settings.web(ws).session;
    let (set, cleared) = chunks::write(&s.cookie_name, value, s.max_cookie_chunks, carried)?;
    let attrs = session_cookie_attrs(settings, ws);
    let set = set
        .iter()
        .map(|(n, v)| cookie::set_cookie(n, v, max_age, &attrs));
    let cleared = cleared.iter().map(|n| cookie::set_cookie(n, "", 0, &attrs));
    Some(set.chain(cleared).collect())
}

/// The `Set-Cookie`s that end a session: the single cookie (always) and every carried chunk.
pub(super) fn clear_session_cookies(
    settings: &Settings,
    ws: usize,
    carried: Carried,
) -> Vec<String> {
    let name = &settings.web(ws).session.cookie_name;
    let attrs = session_cookie_attrs(settings, ws);
    let mut names = chunks::clear(name, carried, |n| n == name.as_str());
    names.insert(0, name.clone());
    names
        .iter()
        .map(|n| cookie::set_cookie(n, "", 0, &attrs))
        .collect()
}

fn txn_cookie_attrs(settings: &Settings, ws: usize) -> CookieAttributes<'_> {
    CookieAttributes {
        path: &settings.web(ws).callback_path,
        domain: None,
        secure: settings.web(ws).session.cookie_secure,
        // The OP sends the browser back with a top-level GET, which Lax cookies accompany.
        same_site: "Lax",
    }
}

fn clear_txn_cookie(settings: &Settings, ws: usize, txn: &LoginTransaction) -> String {
    let name = LoginTransaction::cookie_name(&settings.web(ws).txn_cookie_prefix, txn.slot);
    cookie::set_cookie(&name, "", 0, &txn_cookie_attrs(settings, ws))
}

/// Clears the slot counter once a sign-in completed: the browser keeps no login state then.
fn clear_counter_cookie(settings: &Settings, ws: usize) -> String {
    let name = LoginTransaction::counter_cookie_name(&settings.web(ws).txn_cookie_prefix);
    let attrs = CookieAttributes {
        path: "/",
        ..txn_cookie_attrs(settings, ws)
    };
    cookie::set_cookie(&name, "", 0, &attrs)
}

/// The `Set-Cookie` of a sign-in's transaction.
fn txn_cookie(settings: &Settings, ws: usize, txn: &LoginTransaction, now: u64) -> Option<String> {
    let sealed = txn.seal(
        &settings.web(ws).session.keys,
        now,
        settings.login_timeout_s,
    )?;
    let name = LoginTransaction::cookie_name(&settings.web(ws).txn_cookie_prefix, txn.slot);
    Some(cookie::set_cookie(
        &name,
        &sealed,
        settings.login_timeout_s,
        &txn_cookie_attrs(settings, ws),
    ))
}

/// A whole `Set-Cookie` header larger than this is dropped by browsers (RFC 6265 §6.1 asks
/// them to keep at least 4096 bytes of name, value and attributes).
const MAX_SET_COOKIE: usize = 4000;

fn with_cookie(response: LocalResponse, set_cookie: String) -> LocalResponse {
    response.header("set-cookie", set_cookie)
}

fn add_cookie(action: Action, set_cookie: String) -> Action {
    match action {
        Action::Respond(r) => Action::Respond(with_cookie(r, set_cookie)),
        other => other,
    }
}

/// `action` with the login transaction's cookie cleared.
pub(super) fn add_cookie_of(
    settings: &Settings,
    ws: usize,
    action: Action,
    txn: &LoginTransaction,
) -> Action {
    add_cookie(action, clear_txn_cookie(settings, ws, txn))
}
