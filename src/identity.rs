//! Identity mapping: the request headers that tell the backend who the user is.

use serde_json::Value;

use serde_json::Map;

use crate::config::IdentityHeader;
use crate::http::HeaderOps;
use crate::session::Session;

/// A claim as a header value: strings as they are, lists joined with commas, other JSON as
/// JSON. `None` when the claim is absent or would not be a safe header value.
pub fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => return None,
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
    (!text.bytes().any(|c| c < 0x20 && c != b'\t' || c == 0x7f)).then_some(text)
}

/// Header operations for `session`: every configured header is set from its claim, or removed
/// when the user has no such claim, so a copy sent by the client never survives.
pub fn request_headers(map: &[IdentityHeader], session: Option<&Session>) -> HeaderOps {
    match session {
        Some(s) => claim_headers(map, Some(&s.sub), &s.claims),
        None => claim_headers(map, None, &Map::new()),
    }
}

/// Header operations for a subject and its claims (a session's, or a bearer token's).
pub fn claim_headers(
    map: &[IdentityHeader],
    sub: Option<&str>,
    claims: &Map<String, Value>,
) -> HeaderOps {
    map.iter()
        .map(|h| {
            let value = if h.claim == "sub" {
                sub.and_then(|s| header_value(&Value::String(s.to_string())))
            } else {
                claims.get(&h.claim).and_then(header_value)
            };
            (h.header.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values() {
        assert_eq!(header_value(&json!("alice")).as_deref(), Some("alice"));
        assert_eq!(header_value(&json!(["a", "b"])).as_deref(), Some("a,b"));
        assert_eq!(header_value(&json!(42)).as_deref(), Some("42"));
        assert_eq!(header_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(header_value(&json!({"a": 1})).as_deref(), Some("{\"a\":1}"));
        assert_eq!(header_value(&json!(null)), None);
        assert_eq!(header_value(&json!("a\r\nx-admin: 1")), None);
        assert_eq!(header_value(&json!("a\0b")), None);
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
        };
        assert_eq!(
            request_headers(&map, Some(&s)).to_vec(),
            vec![
                ("x-user".into(), Some("alice".into())),
                ("x-groups".into(), Some("staff".into())),
                ("x-phone".into(), None),
            ]
        );
        assert!(request_headers(&map, None).iter().all(|(_, v)| v.is_none()));
    }
}
