//! The messages that keep a session alive at the OP: the refresh-token grant and UserInfo,
//! which tell whether the OP still stands behind the session, and RFC 7009 revocation of the
//! refresh token at logout.
//!
//! Every answer is sorted into "the OP says no" (the session ends now) and "the OP is not
//! serving" (the session lives on until the validation grace runs out, then fails closed).
//! The rule: grace is for an OP that does not answer usefully; an OP that answers the question
//! and says no ends the session, even where the "no" points at a fault of the gateway's, since
//! retrying the same request would only postpone the same end.

use std::fmt;

use serde_json::{Map, Value};

use crate::config::{OpEndpoints, RelyingParty};
use crate::http::{Callout, CalloutResult};
use crate::oidc::{client_form_post, parse_token_response, TokenError, TokenSet};

/// The largest UserInfo answer read. Claims beyond this would not fit a session cookie.
pub const MAX_USERINFO_BYTES: usize = 64 * 1024;

/// The refresh-token grant (RFC 6749 §6), authenticated like the code grant. No `scope`: the
/// OP then grants the original scope, which asking again could only narrow.
pub fn refresh_request(
    rp: RelyingParty<'_>,
    endpoints: &OpEndpoints,
    refresh_token: &str,
) -> Option<Callout> {
    let form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    Some(client_form_post(rp, endpoints.token.as_ref()?, form))
}

/// The UserInfo request (OpenID Core §5.3.1), when the OP has a UserInfo endpoint. The access
/// token goes in the header (RFC 6750 §2.1), never the URL.
pub fn userinfo_request(
    rp: RelyingParty<'_>,
    endpoints: &OpEndpoints,
    access_token: &str,
) -> Option<Callout> {
    let endpoint = endpoints.userinfo.as_ref()?;
    Some(Callout {
        cluster: rp.op.cluster.clone(),
        method: "GET",
        authority: endpoint.authority.clone(),
        path: endpoint.path.clone(),
        headers: vec![
            ("authorization".into(), format!("Bearer {access_token}")),
            ("accept".into(), "application/json".into()),
        ],
        body: Vec::new(),
        timeout_ms: rp.op.timeout_ms,
    })
}

/// The revocation of `refresh_token` (RFC 7009 §2.1), when the OP has a revocation endpoint.
/// Revoking the refresh token also ends the access tokens issued with it at most OPs (§2.1
/// says it SHOULD), and makes every other replica's next validation end the session.
pub fn revocation_request(
    rp: RelyingParty<'_>,
    endpoints: &OpEndpoints,
    refresh_token: &str,
) -> Option<Callout> {
    let endpoint = endpoints.revocation.as_ref()?;
    let form = vec![
        ("token", refresh_token),
        ("token_type_hint", "refresh_token"),
    ];
    Some(client_form_post(rp, endpoint, form))
}

/// Why a refresh did not renew the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshError {
    /// The OP refused the grant: the session must end. HTTP 400 or 401 (RFC 6749 §5.2), with
    /// the OP's error code (printable, short; empty when the body named none):
    /// - `invalid_grant`: the refresh token expired, was revoked, or its user was disabled or
    ///   signed out: the case validation exists for;
    /// - `invalid_client`, `unauthorized_client`, `unsupported_grant_type`: the OP no longer
    ///   accepts this client or this grant; no retry can vouch for the session again;
    /// - `invalid_request`, `invalid_scope`, or another code: the OP read the request and said
    ///   no. Likely a gateway bug, but still no answer that keeps the session; ending it now
    ///   rather than after the grace makes the fault visible at once.
    Refused { status: u16, error: String },
    /// The OP is not serving: 5xx, 429, another status, a `temporarily_unavailable` or
    /// `server_error` code whatever the status, an unusable 200, a timeout or no connection.
    /// The session keeps working until the grace runs out. The text is for the log.
    Unavailable(String),
}

impl RefreshError {
    /// Whether the session ends now rather than after the grace.
    pub fn ends_session(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { status, error } => {
                write!(
                    f,
                    "token endpoint refused the refresh: HTTP {status} {error}"
                )
            }
            Self::Unavailable(why) => write!(f, "token endpoint unavailable: {why}"),
        }
    }
}

/// Error codes that say the OP is not serving, not that it refuses (RFC 6749 §4.1.2.1 defines
/// them for the authorization endpoint; some OPs send them from the token endpoint too).
fn means_unavailable(error: &str) -> bool {
    matches!(error, "temporarily_unavailable" | "server_error")
}

/// The tokens from a refresh-token grant's answer. A `refresh_token` in them replaces the
/// session's (rotation); none means the one used stays valid (RFC 6749 §6). An `id_token`,
/// if any, must pass [`crate::id_token::validate_refreshed`] before it is used.
pub fn parse_refresh_response(status: u16, body: &[u8]) -> Result<TokenSet, RefreshError> {
    match parse_token_response(status, body) {
        // RFC 6749 §5.1: an access token is what a grant is for; without one the answer is not
        // a token response, whatever else it holds.
        Ok(tokens) if tokens.access_token.is_some() => Ok(tokens),
        Ok(_) => Err(RefreshError::Unavailable(
            "no access_token in the refresh response".into(),
        )),
        Err(TokenError::Malformed(why)) => Err(RefreshError::Unavailable(why.into())),
        Err(TokenError::Refused { status, error })
            if matches!(status, 400 | 401) && !means_unavailable(&error) =>
        {
            Err(RefreshError::Refused { status, error })
        }
        Err(TokenError::Refused { status, error }) => Err(RefreshError::Unavailable(
            format!("HTTP {status} {error}").trim_end().to_string(),
        )),
    }
}

/// [`parse_refresh_response`] for any way the callout ended.
pub fn refresh_outcome(result: &CalloutResult) -> Result<TokenSet, RefreshError> {
    match result {
        CalloutResult::Response { status, body } => parse_refresh_response(*status, body),
        CalloutResult::TimedOut => Err(RefreshError::Unavailable("timed out".into())),
        CalloutResult::Failed => Err(RefreshError::Unavailable("no answer".into())),
    }
}

/// Why a UserInfo answer was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserinfoError {
    /// HTTP 401 or 403 (RFC 6750 §3.1 `invalid_token`, `insufficient_scope`), or 400
    /// (`invalid_request`; by the rule in the module comment): the OP no longer honours the
    /// session's access token. The session ends; at login, the login fails.
    Refused { status: u16 },
    /// 5xx, 429, another status, a timeout or no connection: the grace applies.
    Unavailable(String),
    /// A 200 that is not a JSON object with a string `sub`, or over [`MAX_USERINFO_BYTES`].
    /// A signed or encrypted answer (`application/jwt`, Core §5.3.2) is refused here too: the
    /// gateway does not register for one, and reading it unverified would trust it unsigned.
    /// At validation this is treated like `Unavailable`: an OP answering garbage is not
    /// serving; the grace applies, then the session fails closed. At login, the login fails.
    Malformed(&'static str),
    /// The answer is about another user (Core §5.3.4, the `userinfo-invalid-sub` case): at
    /// login the login fails, at validation the session ends.
    SubMismatch,
}

impl UserinfoError {
    /// Whether the session ends now rather than after the grace.
    pub fn ends_session(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::SubMismatch)
    }
}

impl fmt::Display for UserinfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused { status } => write!(f, "userinfo endpoint refused: HTTP {status}"),
            Self::Unavailable(why) => write!(f, "userinfo endpoint unavailable: {why}"),
            Self::Malformed(why) => write!(f, "userinfo endpoint: {why}"),
            Self::SubMismatch => f.write_str("userinfo is about another subject"),
        }
    }
}

/// The claims of a UserInfo answer (including `sub`), which must be about `expected_sub`, the
/// ID token's subject, exactly.
pub fn parse_userinfo(
    status: u16,
    body: &[u8],
    expected_sub: &str,
) -> Result<Map<String, Value>, UserinfoError> {
    match status {
        200 => {}
        400 | 401 | 403 => return Err(UserinfoError::Refused { status }),
        _ => return Err(UserinfoError::Unavailable(format!("HTTP {status}"))),
    }
    if body.len() > MAX_USERINFO_BYTES {
        return Err(UserinfoError::Malformed("answer too large"));
    }
    let claims = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(claims)) => claims,
        _ => return Err(UserinfoError::Malformed("not a JSON object")),
    };
    match claims.get("sub") {
        Some(Value::String(sub)) if sub.is_empty() => Err(UserinfoError::Malformed("empty sub")),
        Some(Value::String(sub)) if sub == expected_sub => Ok(claims),
        Some(Value::String(_)) => Err(UserinfoError::SubMismatch),
        _ => Err(UserinfoError::Malformed("no string sub")),
    }
}

/// [`parse_userinfo`] for any way the callout ended.
pub fn userinfo_outcome(
    result: &CalloutResult,
    expected_sub: &str,
) -> Result<Map<String, Value>, UserinfoError> {
    match result {
        CalloutResult::Response { status, body } => parse_userinfo(*status, body, expected_sub),
        CalloutResult::TimedOut => Err(UserinfoError::Unavailable("timed out".into())),
        CalloutResult::Failed => Err(UserinfoError::Unavailable("no answer".into())),
    }
}

/// Updates the session's copies of the configured claims `names` from a newer `source` (a
/// refreshed ID token's claims, or a UserInfo answer). A configured claim the source does not
/// carry (or carries as `null`, which Core §5.3.2 says means the same) is removed: both sources
/// are the OP's complete current view, and an OP that stops asserting a claim (a user taken out
/// of every group often loses `groups` altogether) must not leave the old value granting access.
///
/// So `source` must be everything this round learned: when one validation fetched both a
/// refreshed ID token and UserInfo, pass their union, not one after the other, or the second
/// removes what only the first carried. A claim the OP releases only in the ID token is dropped
/// by a validation that uses UserInfo alone.
pub fn merge_claims(
    session_claims: &mut Map<String, Value>,
    names: &[String],
    source: &Map<String, Value>,
) {
    for name in names {
        match source.get(name) {
            Some(v) if !v.is_null() => {
                session_claims.insert(name.clone(), v.clone());
            }
            _ => {
                session_claims.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde_json::json;

    use super::*;
    use crate::config::tests::{sample, sample_json};

    fn settings() -> Settings {
        let mut v = sample_json();
        v["op"]["userinfo_endpoint"] = "https://op.example.com/me".into();
        v["op"]["revocation_endpoint"] = "https://op.example.com:8443/token/revoke".into();
        Settings::from_json(v.to_string().as_bytes()).unwrap()
    }

    fn ep(s: &Settings) -> OpEndpoints {
        s.op(0)
            .endpoints
            .complete(crate::config::OpUse::Login)
            .unwrap()
    }

    fn form(c: &Callout) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&c.body).into_owned().collect()
    }

    fn header<'a>(c: &'a Callout, name: &str) -> Option<&'a str> {
        c.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn refresh_request_is_a_client_authenticated_grant_without_scope() {
        let s = settings();
        let c = refresh_request(s.rp(0), &ep(&s), "rt+/=1").unwrap();
        assert_eq!(
            (
                c.method,
                c.cluster.as_str(),
                c.authority.as_str(),
                c.path.as_str()
            ),
            ("POST", "op", "op.example.com", "/token")
        );
        assert_eq!(
            form(&c),
            vec![
                ("grant_type".into(), "refresh_token".into()),
                ("refresh_token".into(), "rt+/=1".into()),
            ]
        );
        assert_eq!(
            header(&c, "authorization"),
            Some(format!("Basic {}", STANDARD.encode("pa_wam:s3cret")).as_str())
        );
        assert_eq!(
            header(&c, "content-type"),
            Some("application/x-www-form-urlencoded")
        );
        assert!(!format!("{c:?}").contains("rt+"), "no token in Debug");

        let mut v = sample_json();
        v["client"]["auth_method"] = "client_secret_post".into();
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        let c = refresh_request(s.rp(0), &ep(&s), "rt").unwrap();
        assert!(header(&c, "authorization").is_none());
        let f = form(&c);
        assert!(f.contains(&("client_id".into(), "pa_wam".into())));
        assert!(f.contains(&("client_secret".into(), "s3cret".into())));
        assert!(f.iter().all(|(n, _)| n != "scope"));
    }

    #[test]
    fn userinfo_request_sends_the_access_token_in_the_header() {
        let s = settings();
        let c = userinfo_request(s.rp(0), &ep(&s), "at-123").unwrap();
        assert_eq!((c.method, c.path.as_str()), ("GET", "/me"));
        assert_eq!(header(&c, "authorization"), Some("Bearer at-123"));
        assert_eq!(header(&c, "accept"), Some("application/json"));
        assert!(c.body.is_empty());
        assert!(!c.path.contains("at-123"));
        assert!(userinfo_request(sample().rp(0), &ep(&sample()), "at").is_none());
    }

    #[test]
    fn revocation_request_names_the_refresh_token() {
        let s = settings();
        let c = revocation_request(s.rp(0), &ep(&s), "rt-9").unwrap();
        assert_eq!(
            (c.method, c.authority.as_str(), c.path.as_str()),
            ("POST", "op.example.com:8443", "/token/revoke")
        );
        assert_eq!(
            form(&c),
            vec![
                ("token".into(), "rt-9".into()),
                ("token_type_hint".into(), "refresh_token".into()),
            ]
        );
        assert!(header(&c, "authorization").is_some());
        assert!(revocation_request(sample().rp(0), &ep(&sample()), "rt").is_none());
    }

    #[test]
    fn refresh_answers() {
        let ok = parse_refresh_response(
            200,
            br#"{"access_token":"at2","refresh_token":"rt2","id_token":"i.d.t",
                "token_type":"Bearer","expires_in":300}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.as_deref(), Some("at2"));
        assert_eq!(ok.refresh_token.as_deref(), Some("rt2"));
        assert_eq!(ok.expires_in, Some(300));
        // No rotation and no ID token: still a renewal.
        let ok = parse_refresh_response(200, br#"{"access_token":"at2"}"#).unwrap();
        assert_eq!((ok.refresh_token, ok.id_token), (None, None));
    }

    #[test]
    fn refresh_refusals_end_the_session() {
        for (status, body, code) in [
            (400, r#"{"error":"invalid_grant"}"#, "invalid_grant"),
            (400, r#"{"error":"invalid_request"}"#, "invalid_request"),
            (
                400,
                r#"{"error":"unauthorized_client"}"#,
                "unauthorized_client",
            ),
            (
                400,
                r#"{"error":"unsupported_grant_type"}"#,
                "unsupported_grant_type",
            ),
            (400, r#"{"error":"invalid_scope"}"#, "invalid_scope"),
            (401, r#"{"error":"invalid_client"}"#, "invalid_client"),
            (
                400,
                r#"{"error":"invalid_grant","error_description":"x"}"#,
                "invalid_grant",
            ),
            (401, "", ""),
            (400, "<html>bad request</html>", ""),
        ] {
            let e = parse_refresh_response(status, body.as_bytes()).unwrap_err();
            assert_eq!(
                e,
                RefreshError::Refused {
                    status,
                    error: code.into()
                },
                "{status} {body}"
            );
            assert!(e.ends_session());
        }
    }

    #[test]
    fn refresh_failures_that_leave_the_grace() {
        let huge = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(17 * 1024));
        let cases: Vec<(u16, String)> = vec![
            (500, r#"{"error":"server_error"}"#.into()),
            (502, "<html>bad gateway</html>".into()),
            (503, String::new()),
            (504, r#"{"error":"invalid_grant"}"#.into()),
            (429, r#"{"error":"slow_down"}"#.into()),
            (403, "forbidden".into()),
            (404, "not found".into()),
            (302, String::new()),
            (204, String::new()),
            (400, r#"{"error":"temporarily_unavailable"}"#.into()),
            (400, r#"{"error":"server_error"}"#.into()),
            (200, "garbage".into()),
            (200, String::new()),
            (200, "{}".into()),
            (200, r#"{"error":"invalid_grant"}"#.into()),
            (200, r#"{"refresh_token":"rt2"}"#.into()),
            (200, r#"{"access_token":5}"#.into()),
            (200, r#"{"access_token":"at","refresh_token":{}}"#.into()),
            (200, r#"{"access_token":"at","expires_in":"300"}"#.into()),
            (200, r#"{"access_token":"at","token_type":"mac"}"#.into()),
            (200, r#"[{"access_token":"at"}]"#.into()),
            (200, huge),
        ];
        for (status, body) in cases {
            let e = parse_refresh_response(status, body.as_bytes()).unwrap_err();
            assert!(
                matches!(e, RefreshError::Unavailable(_)) && !e.ends_session(),
                "{status} {}: {e:?}",
                &body[..body.len().min(40)]
            );
        }
        for r in [CalloutResult::TimedOut, CalloutResult::Failed] {
            assert!(matches!(
                refresh_outcome(&r),
                Err(RefreshError::Unavailable(_))
            ));
        }
        let r = CalloutResult::Response {
            status: 200,
            body: br#"{"access_token":"at"}"#.to_vec(),
        };
        assert!(refresh_outcome(&r).is_ok());
    }

    #[test]
    fn refresh_error_text_is_printable() {
        let body = format!(r#"{{"error":"bad\n\u001b[31m{}"}}"#, "x".repeat(200));
        let e = parse_refresh_response(400, body.as_bytes()).unwrap_err();
        let text = e.to_string();
        assert!(!text.chars().any(char::is_control), "{text}");
        assert!(text.len() < 120, "{text}");
        let e = parse_refresh_response(503, b"").unwrap_err();
        assert_eq!(e.to_string(), "token endpoint unavailable: HTTP 503");
    }

    #[test]
    fn userinfo_answers() {
        let body = json!({"sub": "alice", "email": "a@example.com", "groups": ["staff"]});
        let claims = parse_userinfo(200, body.to_string().as_bytes(), "alice").unwrap();
        assert_eq!(claims["email"], "a@example.com");
        assert_eq!(claims["sub"], "alice");

        for status in [400, 401, 403] {
            let e = parse_userinfo(status, b"", "alice").unwrap_err();
            assert_eq!(e, UserinfoError::Refused { status });
            assert!(e.ends_session());
        }
        for status in [500, 502, 503, 504, 429, 404, 302, 204] {
            let e = parse_userinfo(status, b"{}", "alice").unwrap_err();
            assert!(matches!(e, UserinfoError::Unavailable(_)), "{status}");
            assert!(!e.ends_session());
        }
        for r in [CalloutResult::TimedOut, CalloutResult::Failed] {
            assert!(matches!(
                userinfo_outcome(&r, "alice"),
                Err(UserinfoError::Unavailable(_))
            ));
        }
        let r = CalloutResult::Response {
            status: 200,
            body: br#"{"sub":"alice"}"#.to_vec(),
        };
        assert!(userinfo_outcome(&r, "alice").is_ok());
    }

    #[test]
    fn userinfo_about_another_subject_is_refused() {
        for sub in ["bob", "Alice", "alice ", " alice", "alice\0", ""] {
            let body = json!({"sub": sub, "email": "a@example.com"}).to_string();
            let e = parse_userinfo(200, body.as_bytes(), "alice").unwrap_err();
            if sub.is_empty() {
                assert!(matches!(e, UserinfoError::Malformed(_)));
            } else {
                assert_eq!(e, UserinfoError::SubMismatch, "{sub:?}");
                assert!(e.ends_session());
            }
        }
    }

    #[test]
    fn userinfo_that_is_not_a_json_object_is_malformed() {
        let signed = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
        let huge = json!({"sub": "alice", "blob": "x".repeat(MAX_USERINFO_BYTES)}).to_string();
        let bodies: Vec<&[u8]> = vec![
            b"",
            b"garbage",
            signed.as_bytes(),
            b"[]",
            br#"["alice"]"#,
            br#""alice""#,
            b"null",
            b"{}",
            br#"{"sub":null}"#,
            br#"{"sub":42}"#,
            br#"{"sub":["alice"]}"#,
            br#"{"sub":{"id":"alice"}}"#,
            b"\xff\xfe{",
            huge.as_bytes(),
        ];
        for body in bodies {
            let e = parse_userinfo(200, body, "alice").unwrap_err();
            assert!(
                matches!(e, UserinfoError::Malformed(_)),
                "{:?}",
                String::from_utf8_lossy(&body[..body.len().min(40)])
            );
            assert!(!e.ends_session());
        }
    }

    #[test]
    fn merged_claims_follow_the_newer_source() {
        let names: Vec<String> = ["email", "groups", "name"].map(String::from).to_vec();
        let mut session = json!({"email": "old@example.com", "groups": ["admins", "staff"],
                                 "name": "Alice", "locale": "fr"})
        .as_object()
        .unwrap()
        .clone();
        let source = json!({"sub": "alice", "email": "new@example.com", "groups": ["staff"],
                            "name": null, "phone": "+1"})
        .as_object()
        .unwrap()
        .clone();
        merge_claims(&mut session, &names, &source);
        assert_eq!(
            Value::Object(session.clone()),
            json!({"email": "new@example.com", "groups": ["staff"], "locale": "fr"}),
            "replaced, removed when gone or null; unconfigured ones untouched, none added"
        );
        // A source without the claims at all takes them away.
        merge_claims(&mut session, &names, &Map::new());
        assert_eq!(Value::Object(session), json!({"locale": "fr"}));
    }
}
