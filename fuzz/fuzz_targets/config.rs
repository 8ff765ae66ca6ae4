//! The plugin configuration: `Settings::from_json` on arbitrary bytes. Never panics; neither the
//! Debug output of a configuration that loads nor the error of one that does not contains the
//! secrets of the input (client secrets, session keys, authtoken private keys).
#![no_main]

use envoy_wam::config::Settings;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// Two valid P-256 keys: a secret PEM is replaced by whichever differs from it.
const PEMS: [&str; 2] = [
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgpbfKYolxAhiKCTKF\ngzF6pRTAjlgeNY3LffxKfa658pChRANCAARbFTCqmJYqFRmNmMetiLp1aznNJ71B\nn5gWqy527Ze/H1cESbsawa9j2dmlpmjMRw6aazXGF2O62IbvRs5imdo7\n-----END PRIVATE KEY-----\n",
    "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg1ww7cOz8fUSl+2D0\n7Hgckxm+gNo0tJ+9t8bZ+DV2clahRANCAAS194fEUnxh2KbK2ryaRqM7cD3O6K6v\nqW2VYfW8oe6DigwrKBVJl86W78ImCw44Woz/9TOMCgd/knxZMZ7nW3lX\n-----END PRIVATE KEY-----\n",
];
/// Two valid session keys (32 bytes, base64).
const SESSION_KEYS: [&str; 2] = [
    "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",
];

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    ClientSecret,
    StsSecret,
    SessionKey,
    Pem,
}

/// A secret of the input: where it is (a JSON pointer) and what kind it is.
struct Secret {
    pointer: String,
    kind: Kind,
    value: String,
}

fn secrets(v: &Value) -> Vec<Secret> {
    let mut out = Vec::new();
    let mut add = |pointer: String, kind| {
        if let Some(s) = v.pointer(&pointer).and_then(Value::as_str) {
            out.push(Secret {
                pointer,
                kind,
                value: s.to_string(),
            });
        }
    };
    add("/client/client_secret".into(), Kind::ClientSecret);
    for (list, field, kind) in [
        ("/session/signing_keys", "secret", Kind::SessionKey),
        ("/authtoken/keys", "private_key_pem", Kind::Pem),
        ("/site_authenticators", "sts/client_secret", Kind::StsSecret),
    ] {
        let n = v
            .pointer(list)
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..n {
            add(format!("{list}/{i}/{field}"), kind);
        }
    }
    out
}

/// The forms a secret could take in the output: as written, as Rust's Debug quotes it, and for
/// a PEM its base64 body.
fn needles(s: &Secret) -> Vec<String> {
    let mut n = vec![s.value.clone(), format!("{:?}", s.value)];
    if s.kind == Kind::Pem {
        let body: String = s
            .value
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        n.push(body.split_whitespace().collect());
    }
    n.into_iter()
        .map(|x| x.trim().to_string())
        .filter(|x| x.len() >= 12)
        .collect()
}

fn replacement(s: &Secret) -> Value {
    let other = |choices: [&'static str; 2]| {
        if s.value.trim() == choices[0].trim() {
            choices[1]
        } else {
            choices[0]
        }
    };
    Value::from(match s.kind {
        Kind::ClientSecret | Kind::StsSecret => "replacement-secret-for-the-fuzzer",
        Kind::SessionKey => other(SESSION_KEYS),
        Kind::Pem => other(PEMS),
    })
}

/// The text the filter could show for this input: the Debug of the settings or the error.
fn shown(bytes: &[u8]) -> String {
    match Settings::from_json(bytes) {
        Ok(s) => format!("{s:?}"),
        Err(e) => format!("{e} {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let result = Settings::from_json(data);
    // What the filter logs for a configuration that loads, or one that does not.
    let text = match &result {
        Ok(s) => format!("{s:?}"),
        Err(e) => format!("{e} {e:?}"),
    };
    let Ok(json) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for secret in secrets(&json) {
        for needle in needles(&secret) {
            if !text.contains(&needle) {
                continue;
            }
            // The same input with another secret: if the text still contains this one, it
            // comes from elsewhere in the input (say the client id is the same string).
            let mut other = json.clone();
            let Some(slot) = other.pointer_mut(&secret.pointer) else {
                continue;
            };
            *slot = replacement(&secret);
            let other_text = shown(other.to_string().as_bytes());
            if other_text.contains(&needle) {
                continue;
            }
            panic!(
                "secret at {} ({needle:?}) shown in {}",
                secret.pointer,
                if result.is_ok() {
                    "Debug of Settings"
                } else {
                    "the error"
                }
            );
        }
    }
});
