//! Request preservation in the flow: a form post that needs a sign-in has its body read and
//! kept (sealed, in cookies for the callback) through the login; after the callback, the
//! browser gets a page that posts it again. See [`crate::preserve`].

use super::head::RequestHead;
use super::route;
use super::state::VmState;
use super::{BodyFor, Level, RequestFlow, Stage};
use crate::config::Settings;
use crate::http::{Action, Body, LocalResponse};
use crate::login::{random_token, safe_return_path, Entropy, LoginTransaction};
use crate::preserve::{self, NotKept, PreservedPost};
use crate::request::HeaderSource;

/// What the callback found of a kept form post.
#[derive(Default)]
pub(super) struct PostAtCallback {
    /// The post, opened for this sign-in.
    post: Option<PreservedPost>,
    /// The `Set-Cookie`s that clear the post's cookies the callback carried.
    clear: Vec<String>,
}

/// The content types an HTML form submits.
const FORM_TYPES: [&str; 3] = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
];

impl RequestFlow {
    /// A browser's form post that needs a sign-in, with preservation on: read its body to keep
    /// it (`ReadBody`), or, when it cannot be kept, the sign-in without it. `None` for every
    /// other request, which signs in (or not) as it always did.
    pub(super) fn login_for_post(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        head: &RequestHead,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Option<Action> {
        let max = self.web(settings).session.preserve_post_bytes;
        if max == 0 || head.method != "POST" || !head.navigates() {
            return None;
        }
        let content_type = head.request.single("content-type").ok().flatten()?;
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        if !FORM_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
            return None;
        }
        let why = if !preserve::is_urlencoded(content_type) {
            Some("its content type is not application/x-www-form-urlencoded in UTF-8")
        } else if !head.is_same_origin(settings, self.ws) {
            // Re-posted from this origin, another site's post would carry the session cookie
            // that SameSite kept from it.
            Some("it was not sent from this origin")
        } else if safe_return_path(head.path).is_none() {
            Some("its path cannot be returned to")
        } else if self.reruns > 0 {
            // The body may have streamed past while the request waited: only the request's
            // headers may ask for it.
            Some("it was decided after a callout")
        } else {
            match head.request.single("content-length") {
                Ok(None) => None,
                Ok(Some(n)) if n.parse::<usize>().is_ok_and(|n| n <= max) => None,
                _ => Some("its content-length is over session.preserve_post_bytes"),
            }
        };
        if let Some(why) = why {
            self.note(
                Level::Info,
                format!("form post not kept through the sign-in: {why}"),
            );
            return Some(match self.login_redirect(settings, vm, head, now, rng) {
                Ok((redirect, _)) => Action::Respond(redirect),
                Err(action) => action,
            });
        }
        self.stage = Stage::Body(BodyFor::LoginPost);
        Some(Action::ReadBody { max })
    }

    /// The body of a form post that needs a sign-in: the sign-in, with the body kept when it
    /// can be.
    pub(super) fn login_post_body(
        &mut self,
        settings: &Settings,
        vm: &mut VmState,
        request: &dyn HeaderSource,
        body: Body,
        now: u64,
        rng: &mut dyn Entropy,
    ) -> Action {
        // The same request routed the same way at its headers.
        let Ok(route) = route::route(settings, request) else {
            return Action::Respond(self.internal_error());
        };
        let head = RequestHead::read(request, &route);
        let (mut redirect, txn) = match self.login_redirect(settings, vm, &head, now, rng) {
            Ok(started) => started,
            Err(action) => return action,
        };
        let kept = match body {
            Body::Complete(bytes) => keep(settings, self.ws, &head, &txn, &bytes, now, rng),
            Body::TooLarge => Err(NotKept::TooLarge),
            Body::Unreadable => Err(NotKept::Unreadable),
        };
        match kept {
            Ok(cookies) => {
                self.note(
                    Level::Info,
                    format!(
                        "form post kept through the sign-in (login slot {})",
                        txn.slot
                    ),
                );
                for c in cookies {
                    redirect = redirect.header("set-cookie", c);
                }
            }
            Err(why) => {
                self.note(
                    Level::Info,
                    format!("form post not kept through the sign-in: {why}"),
                );
            }
        }
        Action::Respond(redirect)
    }

    /// At the callback of sign-in `txn`: the post kept for it, if any. Every post cookie of
    /// the slot is cleared with the callback's answer, whether it opens or not.
    pub(super) fn read_preserved(
        &mut self,
        settings: &Settings,
        request: &dyn HeaderSource,
        txn: &LoginTransaction,
        now: u64,
    ) {
        let (sealed, clear) = preserve::read(self.web(settings), request, txn.slot);
        self.post.clear = clear;
        let Some(sealed) = sealed else {
            return;
        };
        let binding = preserve::binding(self.web(settings), request);
        let keys = &self.web(settings).session.keys;
        self.post.post = PreservedPost::open(keys, &sealed, &txn.state, binding.as_deref(), now);
        if self.post.post.is_none() {
            self.note(
                Level::Info,
                format!(
                    "a kept form post in login slot {} is another sign-in's or browser's, \
                     expired or damaged; dropped",
                    txn.slot
                ),
            );
        }
    }

    /// Where a completed sign-in sends the browser: the page that posts the kept form again,
    /// or back to where it started.
    pub(super) fn landing(&mut self, return_to: &str) -> LocalResponse {
        match self.post.post.take() {
            Some(post) => {
                self.note(Level::Info, "posting the kept form again".into());
                post.page()
            }
            None => LocalResponse::redirect(return_to),
        }
    }

    /// `action` with the clearing of the kept post's cookies, when it is the answer.
    pub(super) fn with_post_cleared(&mut self, action: Action) -> Action {
        match action {
            Action::Respond(mut response) if !self.post.clear.is_empty() => {
                for c in std::mem::take(&mut self.post.clear) {
                    response = response.header("set-cookie", c);
                }
                Action::Respond(response)
            }
            other => other,
        }
    }
}

/// The `Set-Cookie`s that keep `body` for sign-in `txn`.
fn keep(
    settings: &Settings,
    ws: usize,
    head: &RequestHead,
    txn: &LoginTransaction,
    body: &[u8],
    now: u64,
    rng: &mut dyn Entropy,
) -> Result<Vec<String>, NotKept> {
    // Checked at the headers; the path the post goes back to is the request's own, even
    // when the login's return path had to be shortened.
    let path = safe_return_path(head.path).ok_or(NotKept::NotExact)?;
    let max = settings.web(ws).session.preserve_post_bytes;
    let post = PreservedPost::new(path, body, max)?;
    // A browser with a kept post in another tab keeps its binding: replacing it would drop
    // that one.
    let binding = match preserve::binding(settings.web(ws), head.request) {
        Some(b) => b,
        None => random_token(rng, 16).ok_or(NotKept::NoRandomness)?,
    };
    let keys = &settings.web(ws).session.keys;
    let sealed = post.seal(
        keys,
        &txn.state,
        &binding,
        now,
        settings.login_timeout_s,
        rng,
    )?;
    let mut cookies = preserve::set_cookies(settings, settings.web(ws), txn.slot, &sealed)?;
    cookies.push(preserve::binding_set_cookie(
        settings,
        settings.web(ws),
        &binding,
    ));
    Ok(cookies)
}
