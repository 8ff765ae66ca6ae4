//! OpenID Connect messages: the authorization request, the token request and its response,
//! and the RP-initiated logout request.

use serde_json::{Map, Value};
use url::Url;

use crate::config::{Endpoint, OpEndpoints, RelyingParty};
use crate::http::{client_authentication, form_encode, form_post_headers, Callout};
use crate::login::LoginTransaction;

/// The OP authorization-endpoint URL for `txn` (authorization code flow, PKCE S256).
pub fn authorization_url(
    rp: RelyingParty<'_>,
    endpoints: &OpEndpoints,
    txn: &LoginTransaction,
) -> Option<String> {
    let mut url: Url = endpoints.authorization.clone()?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &rp.web.client.client_id)
        .append_pair("redirect_uri", &txn.redirect_uri)
        .append_pair("scope", &rp.web.client.scope)
        .append_pair("state", &txn.state)
        .append_pair("nonce", &txn.nonce)
        .append_pair("code_challenge", &txn.code_challenge())
        .append_pair("code_challenge_method", "S256");
    Some(url.into())
}

/// The token request that redeems `code` (RFC 6749 §4.1.3 with the PKCE verifier).
pub fn token_request(
    rp: RelyingParty<'_>,
    endpoints: &OpEndpoints,
    txn: &LoginTransaction,
    code: &str,
) -> Option<Callout> {
    let form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", txn.redirect_uri.as_str()),
        ("code_verifier", txn.verifier.as_str()),
    ];
    Some(client_form_post(rp, endpoints.token.as_ref()?, form))
}

/// A form POST to one of the OP's client endpoints (token, revocation), with the client's
/// authentication (RFC 6749 §2.3.1) added to the form or the headers.
pub(crate) fn client_form_post<'a>(
    rp: RelyingParty<'a>,
    endpoint: &Endpoint,
    mut form: Vec<(&'a str, &'a str)>,
) -> Callout {
    let client = &rp.web.client;
    let mut headers = form_post_headers();
    if let Some(h) = client_authentication(
        client.auth_method,
        &client.client_id,
        &client.client_secret,
        &mut form,
    ) {
        headers.push(h);
    }
    Callout {
        cluster: rp.op.cluster.clone(),
        method: "POST",
        authority: endpoint.authority.clone(),
        path: endpoint.path.clone(),
        headers,
        body: form_encode(&form).into_bytes(),
        timeout_ms: rp.op.timeout_ms,
    }
}

/// Why the OP's token response could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The OP refused the grant (`invalid_grant`, `invalid_client`, …): its error code only.
    Refused { status: u16, error: String },
    /// Not a token response: bad JSON, no `id_token`, wrong token type.
    Malformed(&'static str),
}

/// The largest token (or scope) accepted from the OP. Tokens end up in the session cookie,
/// whose chunks together stay well below this; anything larger is not a real token.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a successful token-endpoint answer carried (RFC 6749 §5.1, OpenID Core §3.1.3.3).
/// Empty strings count as absent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TokenSet {
    pub id_token: Option<String>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub expires_in: Option<u64>,
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    /// Lengths only: the tokens are credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = |t: &Option<String>| t.as_ref().map(String::len);
        f.debug_struct("TokenSet")
            .field("id_token_len", &len(&self.id_token))
            .field("access_token_len", &len(&self.access_token))
            .field("refresh_token_len", &len(&self.refresh_token))
            .field("expires_in", &self.expires_in)
            .field("scope_len", &len(&self.scope))
            .finish()
    }
}

/// The OP's error code from an error answer, short and printable for logs; empty when the
/// body is not an OAuth error object.
pub(crate) fn error_code(body: &[u8]) -> String {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return String::new();
    };
    match map.get("error") {
        Some(Value::String(e)) => e
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect(),
        _ => String::new(),
    }
}

/// A string member: absent, `null` or empty is `None`; another type or an absurd size is
/// not a token response.
fn token_field(
    map: &Map<String, Value>,
    name: &str,
    why: &'static str,
) -> Result<Option<String>, TokenError> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_TOKEN_BYTES => Err(TokenError::Malformed(why)),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::Malformed(why)),
    }
}

/// The tokens from a token-endpoint answer (any grant). Which of them the grant requires is
/// the caller's to check; see [`parse_code_response`] for the authorization-code grant.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<TokenSet, TokenError> {
    if status != 200 {
        return Err(TokenError::Refused {
            status,
            error: error_code(body),
        });
    }
    // An object, read member by member: serde's derived structs would also take a JSON array.
    let map = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => return Err(TokenError::Malformed("not a JSON token response")),
    };
    match map.get("token_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t))
            if t.eq_ignore_ascii_case("bearer") || t.eq_ignore_ascii_case("dpop") => {}
        Some(_) => return Err(TokenError::Malformed("unexpected token_type")),
    }
    let expires_in = match map.get("expires_in") {
        None | Some(Value::Null) => None,
        // RFC 6749 §5.1: seconds, a JSON number. Negative or fractional is not that. Callers
        // add it to the time with saturating arithmetic: it may be as large as u64 allows.
        Some(Value::Number(n)) => Some(n.as_u64().ok_or(TokenError::Malformed(
            "expires_in is not a number of seconds",
        ))?),
        Some(_) => return Err(TokenError::Malformed("expires_in is not a number")),
    };
    Ok(TokenSet {
        id_token: token_field(&map, "id_token", "id_token is not a usable string")?,
        access_token: token_field(&map, "access_token", "access_token is not a usable string")?,
        refresh_token: token_field(
            &map,
            "refresh_token",
            "refresh_token is not a usable string",
        )?,
        expires_in,
        scope: token_field(&map, "scope", "scope is not a usable string")?,
    })
}

/// The answer to the authorization-code grant: the ID token it must carry (OpenID Core
/// §3.1.3.3), and every token it came with.
pub fn parse_code_response(status: u16, body: &[u8]) -> Result<(String, TokenSet), TokenError> {
    let tokens = parse_token_response(status, body)?;
    let id_token = tokens
        .id_token
        .clone()
        .ok_or(TokenError::Malformed("no id_token in the token response"))?;
    Ok((id_token, tokens))
}

/// The OP end-session URL (OpenID Connect RP-Initiated Logout 1.0). `id_token_hint` is the
/// session's ID token where it was kept; `client_id` goes along always (§2 allows both, and
/// requires one of them with `post_logout_redirect_uri`). The hint rides in the URL, the
/// spec's own transport for it: an ID token grants access to nothing, unlike the OP's other
/// tokens, which never go into a URL.
pub fn end_session_url(
    rp: RelyingParty<'_>,
    endpoints: Option<&OpEndpoints>,
    id_token_hint: Option<&str>,
    post_logout_redirect_uri: Option<&str>,
) -> Option<String> {
    if !rp.web.logout.use_end_session_endpoint {
        return None;
    }
    let mut url = endpoints?.end_session.clone()?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(hint) = id_token_hint.filter(|h| !h.is_empty()) {
            q.append_pair("id_token_hint", hint);
        }
        q.append_pair("client_id", &rp.web.client.client_id);
        if let Some(uri) = post_logout_redirect_uri {
            q.append_pair("post_logout_redirect_uri", uri);
        }
    }
    Some(url.into())
}

#[cfg(test)]
mod tests {
    use crate::config::Settings;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    use super::*;
    use crate::config::tests::{sample, sample_json};
    use crate::login::tests::CountingEntropy;

    fn txn() -> LoginTransaction {
        LoginTransaction::new(
            &mut CountingEntropy(0),
            "/app".into(),
            "https://gw.example.com/pa/oidc/cb".into(),
        )
        .unwrap()
    }

    fn ep() -> OpEndpoints {
        sample()
            .op(0)
            .endpoints
            .complete(crate::config::OpUse::Login)
            .unwrap()
    }

    fn query(url: &str) -> Vec<(String, String)> {
        Url::parse(url)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    #[test]
    fn authorization_request_has_every_parameter() {
        let t = txn();
        let url = authorization_url(sample().rp(0), &ep(), &t).unwrap();
        assert!(url.starts_with("https://op.example.com/auth?"));
        let q = query(&url);
        let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("response_type"), Some("code"));
        assert_eq!(get("client_id"), Some("pa_wam"));
        assert_eq!(
            get("redirect_uri"),
            Some("https://gw.example.com/pa/oidc/cb")
        );
        assert_eq!(get("scope"), Some("openid profile email"));
        assert_eq!(get("state"), Some(t.state.as_str()));
        assert_eq!(get("nonce"), Some(t.nonce.as_str()));
        assert_eq!(get("code_challenge"), Some(t.code_challenge().as_str()));
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert!(
            !url.contains(&t.verifier),
            "the verifier never leaves the gateway"
        );
        assert!(!url.contains("s3cret"));
    }

    #[test]
    fn token_request_with_basic_auth() {
        let t = txn();
        let c = token_request(sample().rp(0), &ep(), &t, "the+code").unwrap();
        assert_eq!(c.method, "POST");
        assert_eq!(c.cluster, "op");
        assert_eq!(c.authority, "op.example.com");
        assert_eq!(c.path, "/token");
        let auth = c
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap();
        assert_eq!(
            auth.1,
            format!("Basic {}", STANDARD.encode("pa_wam:s3cret"))
        );
        let body = String::from_utf8(c.body).unwrap();
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        assert!(form.contains(&("grant_type".into(), "authorization_code".into())));
        assert!(form.contains(&("code".into(), "the+code".into())));
        assert!(form.contains(&("code_verifier".into(), t.verifier.clone())));
        assert!(form.contains(&("redirect_uri".into(), t.redirect_uri.clone())));
        assert!(!body.contains("s3cret"));
    }

    #[test]
    fn token_request_with_post_auth_and_encoded_basic_credentials() {
        let mut v = sample_json();
        v["client"]["auth_method"] = "client_secret_post".into();
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        let c = token_request(s.rp(0), &ep(), &txn(), "c").unwrap();
        assert!(c.headers.iter().all(|(n, _)| n != "authorization"));
        let body = String::from_utf8(c.body).unwrap();
        assert!(body.contains("client_id=pa_wam") && body.contains("client_secret=s3cret"));

        let mut v = sample_json();
        v["client"]["client_secret"] = "a:b c".into();
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        let c = token_request(s.rp(0), &ep(), &txn(), "c").unwrap();
        let auth = &c
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert_eq!(
            auth,
            &format!("Basic {}", STANDARD.encode("pa_wam:a%3Ab+c"))
        );
    }

    #[test]
    fn token_responses() {
        let (id, set) = parse_code_response(
            200,
            br#"{"id_token":"a.b.c","token_type":"Bearer","access_token":"x"}"#,
        )
        .unwrap();
        assert_eq!(id, "a.b.c");
        assert_eq!(set.access_token.as_deref(), Some("x"));
        assert_eq!(
            parse_code_response(
                400,
                br#"{"error":"invalid_grant","error_description":"code used"}"#
            ),
            Err(TokenError::Refused {
                status: 400,
                error: "invalid_grant".into()
            })
        );
        assert_eq!(
            parse_code_response(500, b"<html>oops</html>"),
            Err(TokenError::Refused {
                status: 500,
                error: String::new()
            })
        );
        assert!(matches!(
            parse_code_response(200, b"garbage"),
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(
            parse_code_response(200, br#"{"access_token":"x"}"#),
            Err(TokenError::Malformed("no id_token in the token response"))
        );
        assert!(matches!(
            parse_code_response(200, br#"{"id_token":""}"#),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse_code_response(200, br#"{"id_token":"a","token_type":"mac"}"#),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn the_whole_token_set() {
        let body = br#"{"id_token":"i.d.t","access_token":"at","refresh_token":"rt",
            "expires_in":3600,"scope":"openid email","token_type":"DPoP","other":[1]}"#;
        assert_eq!(
            parse_token_response(200, body),
            Ok(TokenSet {
                id_token: Some("i.d.t".into()),
                access_token: Some("at".into()),
                refresh_token: Some("rt".into()),
                expires_in: Some(3600),
                scope: Some("openid email".into()),
            })
        );
        // Nulls and empty strings are absent; nothing is required at this level.
        assert_eq!(
            parse_token_response(200, br#"{"refresh_token":null,"access_token":""}"#),
            Ok(TokenSet::default())
        );
    }

    #[test]
    fn token_sets_with_wrong_types_or_sizes_are_malformed() {
        let huge = "x".repeat(MAX_TOKEN_BYTES + 1);
        let fits = "x".repeat(MAX_TOKEN_BYTES);
        let bodies = [
            r#"{"id_token":1}"#.to_string(),
            r#"{"access_token":{"a":1}}"#.into(),
            r#"{"refresh_token":["rt"]}"#.into(),
            r#"{"refresh_token":true}"#.into(),
            r#"{"scope":3}"#.into(),
            r#"{"expires_in":"3600"}"#.into(),
            r#"{"expires_in":-1}"#.into(),
            r#"{"expires_in":1.5}"#.into(),
            r#"{"token_type":7}"#.into(),
            r#"["i.d.t","at"]"#.into(),
            r#""at""#.into(),
            "null".into(),
            "".into(),
            "\u{0}\u{ff}".into(),
            format!(r#"{{"refresh_token":"{huge}"}}"#),
            format!(r#"{{"access_token":"{huge}"}}"#),
            format!(r#"{{"id_token":"{huge}"}}"#),
        ];
        for b in &bodies {
            assert!(
                matches!(
                    parse_token_response(200, b.as_bytes()),
                    Err(TokenError::Malformed(_))
                ),
                "{}",
                &b[..b.len().min(40)]
            );
        }
        let ok = format!(r#"{{"refresh_token":"{fits}"}}"#);
        assert!(parse_token_response(200, ok.as_bytes()).is_ok());
    }

    #[test]
    fn error_codes_are_short_and_printable() {
        let long = format!(r#"{{"error":"{}"}}"#, "e".repeat(500));
        assert_eq!(error_code(long.as_bytes()).len(), 64);
        assert_eq!(
            error_code(br#"{"error":"bad\n<b>\u0000grant"}"#),
            "bad<b>grant"
        );
        assert_eq!(error_code(br#"{"error":5}"#), "");
        assert_eq!(error_code(br#"["invalid_grant"]"#), "");
    }

    #[test]
    fn token_set_debug_shows_no_token() {
        let set = TokenSet {
            id_token: Some("IDTOKENSECRET".into()),
            access_token: Some("ACCESSSECRET".into()),
            refresh_token: Some("REFRESHSECRET".into()),
            expires_in: Some(60),
            scope: None,
        };
        let shown = format!("{set:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(shown.contains("13") && shown.contains("60"), "{shown}");
    }

    #[test]
    fn end_session() {
        let url = end_session_url(
            sample().rp(0),
            Some(&ep()),
            None,
            Some("https://gw.example.com/"),
        )
        .unwrap();
        let q = query(&url);
        assert!(q.iter().all(|(n, _)| n != "id_token_hint"));
        assert!(url.starts_with("https://op.example.com/session/end?"));
        assert!(q.contains(&("client_id".into(), "pa_wam".into())));
        assert!(q.contains(&(
            "post_logout_redirect_uri".into(),
            "https://gw.example.com/".into()
        )));
        let mut v = sample_json();
        v["logout"] = serde_json::json!({"use_end_session_endpoint": false});
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(
            end_session_url(s.rp(0), Some(&ep()), Some("i.d.t"), None),
            None
        );
    }

    #[test]
    fn end_session_with_the_id_token_hint_and_client_id() {
        let url = end_session_url(sample().rp(0), Some(&ep()), Some("h.e+a/d"), None).unwrap();
        let q = query(&url);
        assert!(q.contains(&("id_token_hint".into(), "h.e+a/d".into())));
        assert!(q.contains(&("client_id".into(), "pa_wam".into())));
        assert!(q.iter().all(|(n, _)| n != "post_logout_redirect_uri"));
        let url = end_session_url(sample().rp(0), Some(&ep()), Some(""), None).unwrap();
        assert!(!url.contains("id_token_hint"));
        assert_eq!(
            end_session_url(sample().rp(0), None, Some("i.d.t"), None),
            None
        );
    }
}
