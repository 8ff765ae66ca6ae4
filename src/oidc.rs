//! OpenID Connect messages: the authorization request, the token request and its response,
//! and the RP-initiated logout request.

use serde::Deserialize;
use url::Url;

use crate::config::{OpEndpoints, Settings};
use crate::http::{client_authentication, form_encode, form_post_headers, Callout};
use crate::login::LoginTransaction;

/// The OP authorization-endpoint URL for `txn` (authorization code flow, PKCE S256).
pub fn authorization_url(
    settings: &Settings,
    endpoints: &OpEndpoints,
    txn: &LoginTransaction,
) -> String {
    let mut url: Url = endpoints.authorization.clone();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &settings.client.client_id)
        .append_pair("redirect_uri", &txn.redirect_uri)
        .append_pair("scope", &settings.client.scope)
        .append_pair("state", &txn.state)
        .append_pair("nonce", &txn.nonce)
        .append_pair("code_challenge", &txn.code_challenge())
        .append_pair("code_challenge_method", "S256");
    url.into()
}

/// The token request that redeems `code` (RFC 6749 §4.1.3 with the PKCE verifier).
pub fn token_request(
    settings: &Settings,
    endpoints: &OpEndpoints,
    txn: &LoginTransaction,
    code: &str,
) -> Callout {
    let client = &settings.client;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", txn.redirect_uri.as_str()),
        ("code_verifier", txn.verifier.as_str()),
    ];
    let mut headers = form_post_headers();
    if let Some(h) = client_authentication(
        client.auth_method,
        &client.client_id,
        &client.client_secret,
        &mut form,
    ) {
        headers.push(h);
    }
    let endpoint = &endpoints.token;
    Callout {
        cluster: settings.op.cluster.clone(),
        method: "POST",
        authority: endpoint.authority.clone(),
        path: endpoint.path.clone(),
        headers,
        body: form_encode(&form).into_bytes(),
        timeout_ms: settings.op.timeout_ms,
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

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

/// The ID token from a token-endpoint answer.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<String, TokenError> {
    if status != 200 {
        let error = serde_json::from_slice::<ErrorResponse>(body)
            .map(|e| e.error)
            .unwrap_or_default();
        // The code is only what the OP says; keep it short and printable for logs.
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(TokenError::Refused { status, error });
    }
    let response: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| TokenError::Malformed("not a JSON token response"))?;
    if let Some(t) = &response.token_type {
        if !t.eq_ignore_ascii_case("bearer") && !t.eq_ignore_ascii_case("dpop") {
            return Err(TokenError::Malformed("unexpected token_type"));
        }
    }
    response
        .id_token
        .filter(|t| !t.is_empty())
        .ok_or(TokenError::Malformed("no id_token in the token response"))
}

/// The OP end-session URL (OpenID Connect RP-Initiated Logout 1.0).
pub fn end_session_url(
    settings: &Settings,
    endpoints: Option<&OpEndpoints>,
    post_logout_redirect_uri: Option<&str>,
) -> Option<String> {
    if !settings.logout.use_end_session_endpoint {
        return None;
    }
    let mut url = endpoints?.end_session.clone()?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &settings.client.client_id);
        if let Some(uri) = post_logout_redirect_uri {
            q.append_pair("post_logout_redirect_uri", uri);
        }
    }
    Some(url.into())
}

#[cfg(test)]
mod tests {
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
        sample().op.endpoints.complete().unwrap()
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
        let url = authorization_url(&sample(), &ep(), &t);
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
        let c = token_request(&sample(), &ep(), &t, "the+code");
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
        let c = token_request(&s, &ep(), &txn(), "c");
        assert!(c.headers.iter().all(|(n, _)| n != "authorization"));
        let body = String::from_utf8(c.body).unwrap();
        assert!(body.contains("client_id=pa_wam") && body.contains("client_secret=s3cret"));

        let mut v = sample_json();
        v["client"]["client_secret"] = "a:b c".into();
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        let c = token_request(&s, &ep(), &txn(), "c");
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
        assert_eq!(
            parse_token_response(
                200,
                br#"{"id_token":"a.b.c","token_type":"Bearer","access_token":"x"}"#
            ),
            Ok("a.b.c".into())
        );
        assert_eq!(
            parse_token_response(
                400,
                br#"{"error":"invalid_grant","error_description":"code used"}"#
            ),
            Err(TokenError::Refused {
                status: 400,
                error: "invalid_grant".into()
            })
        );
        assert_eq!(
            parse_token_response(500, b"<html>oops</html>"),
            Err(TokenError::Refused {
                status: 500,
                error: String::new()
            })
        );
        assert!(matches!(
            parse_token_response(200, b"garbage"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse_token_response(200, br#"{"access_token":"x"}"#),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse_token_response(200, br#"{"id_token":""}"#),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            parse_token_response(200, br#"{"id_token":"a","token_type":"mac"}"#),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn end_session() {
        let url = end_session_url(&sample(), Some(&ep()), Some("https://gw.example.com/")).unwrap();
        let q = query(&url);
        assert!(url.starts_with("https://op.example.com/session/end?"));
        assert!(q.contains(&("client_id".into(), "pa_wam".into())));
        assert!(q.contains(&(
            "post_logout_redirect_uri".into(),
            "https://gw.example.com/".into()
        )));
        let mut v = sample_json();
        v["logout"] = serde_json::json!({"use_end_session_endpoint": false});
        let s = Settings::from_json(v.to_string().as_bytes()).unwrap();
        assert_eq!(end_session_url(&s, Some(&ep()), None), None);
    }
}
