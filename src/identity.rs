//! Identity mapping: the request headers that tell the backend who the user is.

use serde_json::Value;

use serde_json::Map;

use crate::config::IdentityHeader;
use crate::http::HeaderOps;
use crate::session::Session;

/// A claim as a header value: strings as they are, lists joined with commas, other JSON as
/// JSON. `Ok(None)` when the claim is absent (null); `Err` when the value could not be sent
/// as a header value: the request is then refused, never forwarded without the header.
#[allow(clippy::result_unit_err)]
pub fn header_value(value: &Value) -> Result<Option<String>, ()> {
    let text = match value {
        Value::Null => return Ok(None),
        Value::String(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect();
            parts.join(",")
        }
        other => other.to_string(),
    };
    // CR, LF and NUL would split or truncate the header; other controls have no business there.
    match text.bytes().any(|c| c < 0x20 && c != b'\t' || c == 0x7f) {
        true => Err(()),
        false => Ok(Some(text)),
    }
}

/// A claim whose value cannot be sent as a header value (it holds CR, LF, NUL or another
/// control character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableClaim(pub String);

/// Header operations for `session`: every configured header is set from its claim, or removed
/// when the user has no such claim, so a copy sent by the client never survives.
pub fn request_headers(
    map: &[IdentityHeader],
    session: &Session,
) -> Result<HeaderOps, UnusableClaim> {
    claim_headers(map, Some(&session.sub), &session.claims)
}

/// Every identity header removed: for requests that go on without an identity.
pub fn no_identity(map: &[IdentityHeader]) -> HeaderOps {
    map.iter().map(|h| (h.header.clone(), None)).collect()
}

/// Header operations for a subject and its claims (a session's, or a bearer token's).
pub fn claim_headers(
    map: &[IdentityHeader],
    sub: Option<&str>,
    claims: &Map<String, Value>,
) -> Result<HeaderOps, UnusableClaim> {
    map.iter()
        .map(|h| {
            let value = if h.claim == "sub" {
                sub.map_or(Ok(None), |s| header_value(&Value::String(s.to_string())))
            } else {
                claims.get(&h.claim).map_or(Ok(None), header_value)
            };
            value
                .map(|v| (h.header.clone(), v))
                .map_err(|()| UnusableClaim(h.claim.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values() {
        let v = |j| header_value(&j).map(|v| v.unwrap_or_default());
        assert_eq!(v(json!("alice")).as_deref(), Ok("alice"));
        assert_eq!(v(json!(["a", "b"])).as_deref(), Ok("a,b"));
        assert_eq!(v(json!(42)).as_deref(), Ok("42"));
        assert_eq!(v(json!(true)).as_deref(), Ok("true"));
        assert_eq!(v(json!({"a": 1})).as_deref(), Ok("{\"a\":1}"));
        assert_eq!(header_value(&json!(null)), Ok(None));
        assert_eq!(header_value(&json!("a\r\nx-admin: 1")), Err(()));
        assert_eq!(header_value(&json!("a\0b")), Err(()));
        assert_eq!(header_value(&json!(["ok", "a\nb"])), Err(()));
    }

    #[test]
    fn every_configured_header_is_set_or_removed() {
        let map = vec![
            IdentityHeader {
                header: "x-user".into(),
                claim: "sub".into(),
            },
            IdentityHeader {
                header: "x-groups".into(),
                claim: "groups".into(),
            },
            IdentityHeader {
                header: "x-phone".into(),
                claim: "phone".into(),
            },
        ];
        let mut claims = serde_json::Map::new();
        claims.insert("groups".into(), json!(["staff"]));
        let s = Session {
            sid: "s".into(),
            sub: "alice".into(),
            auth_time: 0,
            expires_at: 10,
            last_activity: 0,
            claims,
            created_at: 0,
            op: Default::default(),
        };
        assert_eq!(
            request_headers(&map, &s).map(|h| h.to_vec()),
            Ok(vec![
                ("x-user".into(), Some("alice".into())),
                ("x-groups".into(), Some("staff".into())),
                ("x-phone".into(), None),
            ])
        );
        assert!(no_identity(&map).iter().all(|(_, v)| v.is_none()));
        let mut bad = s.clone();
        bad.claims
            .insert("groups".into(), json!("staff\r\nx-admin: 1"));
        assert_eq!(
            request_headers(&map, &bad),
            Err(UnusableClaim("groups".into()))
        );
    }
}
