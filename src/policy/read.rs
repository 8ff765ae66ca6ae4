//! Reads the policy JSON, already parsed into a [`Value`], into the `Raw*` structs of
//! [`super::config`]. Written by hand rather than derived: serde's code for the internally
//! tagged rule enum with flattened value tests, deserialized through `serde_path_to_error`,
//! cost about 168 KB of .wasm. The rules are the ones the derives had: unknown fields are
//! refused, required fields must be present, absent fields take the same defaults, and `null`
//! stands for "absent" only where a field is optional. Errors name the JSON field, relative to
//! the policy object (an empty field is the policy object itself).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::raw::{
    default_content_type, default_error_status, default_offset, default_redirect_status,
    default_root,
};
use super::{
    AppType, DefaultDecision, Mode, Ordering, Per, RawAppApi, RawApplication, RawPolicy,
    RawRejection, RawResource, RawRule, RawRuleSet, RawTest, Validation,
};
use crate::config::ConfigError;

type Result<T, E = ConfigError> = std::result::Result<T, E>;

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::new(field, message)
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// "`a`, `b`, `c`", for messages.
fn quoted(names: &[&str]) -> String {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push('`');
        out.push_str(n);
        out.push('`');
    }
    out
}

pub(crate) fn string(at: &str, v: &Value) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| err(at, "must be a string"))
}

pub(crate) fn strings(at: &str, v: &Value) -> Result<Vec<String>> {
    let items = v
        .as_array()
        .ok_or_else(|| err(at, "must be an array of strings"))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(string(&format!("{at}[{i}]"), item)?);
    }
    Ok(out)
}

/// A non-negative integer up to `max`.
pub(crate) fn uint(at: &str, v: &Value, max: u64) -> Result<u64> {
    v.as_u64()
        .filter(|n| *n <= max)
        .ok_or_else(|| err(at, format!("must be an integer from 0 to {max}")))
}

/// The index in `names` of the string `v`.
fn pick(at: &str, v: &Value, names: &[&str]) -> Result<usize> {
    let s = v.as_str().unwrap_or_default();
    names
        .iter()
        .position(|n| *n == s)
        .ok_or_else(|| err(at, format!("must be one of {}", quoted(names))))
}

/// An object being read: where it is, and its fields.
pub(crate) struct Obj<'v> {
    at: &'v str,
    map: &'v Map<String, Value>,
}

impl<'v> Obj<'v> {
    /// `v` as an object whose fields are all among `fields`.
    pub(crate) fn new(at: &'v str, v: &'v Value, fields: &[&str]) -> Result<Self> {
        let map = v.as_object().ok_or_else(|| err(at, "must be an object"))?;
        if let Some(k) = map.keys().find(|k| !fields.contains(&k.as_str())) {
            return Err(err(
                join(at, k),
                format!("unknown field `{k}`, expected one of {}", quoted(fields)),
            ));
        }
        Ok(Self { at, map })
    }

    pub(crate) fn path(&self, key: &str) -> String {
        join(self.at, key)
    }

    /// The field as written (`null` included); `None` when absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key)
    }

    /// An optional field: absent or `null` is `None`.
    pub(crate) fn opt(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn req(&self, key: &str) -> Result<&'v Value> {
        self.map
            .get(key)
            .ok_or_else(|| err(self.path(key), format!("missing field `{key}`")))
    }

    pub(crate) fn string(&self, key: &str) -> Result<String> {
        string(&self.path(key), self.req(key)?)
    }

    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<String>> {
        self.opt(key)
            .map(|v| string(&self.path(key), v))
            .transpose()
    }

    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>> {
        strings(&self.path(key), self.req(key)?)
    }

    pub(crate) fn opt_strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        self.opt(key)
            .map(|v| strings(&self.path(key), v))
            .transpose()
    }

    /// A list of strings, empty when absent.
    pub(crate) fn strings_or_empty(&self, key: &str) -> Result<Vec<String>> {
        Ok(self
            .get(key)
            .map(|v| strings(&self.path(key), v))
            .transpose()?
            .unwrap_or_default())
    }

    /// A boolean, false when absent.
    pub(crate) fn flag(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| err(self.path(key), "must be true or false")),
        }
    }

    /// An integer up to `max`, `default` when absent.
    pub(crate) fn uint_or(&self, key: &str, max: u64, default: u64) -> Result<u64> {
        self.get(key)
            .map_or(Ok(default), |v| uint(&self.path(key), v, max))
    }

    pub(crate) fn uint(&self, key: &str, max: u64) -> Result<u64> {
        uint(&self.path(key), self.req(key)?, max)
    }

    /// The index in `names` of the field's value; `None` when absent.
    pub(crate) fn choice(&self, key: &str, names: &[&str]) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| pick(&self.path(key), v, names))
            .transpose()
    }

    pub(crate) fn required_choice(&self, key: &str, names: &[&str]) -> Result<usize> {
        pick(&self.path(key), self.req(key)?, names)
    }

    /// An array (of objects, read by the caller), empty when absent unless `required`.
    pub(crate) fn items(&self, key: &str, required: bool) -> Result<&'v [Value]> {
        let v = match self.get(key) {
            None if !required => return Ok(&[]),
            _ => self.req(key)?,
        };
        v.as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| err(self.path(key), "must be an array"))
    }

    fn rules(&self, key: &str, required: bool) -> Result<Vec<RawRule>> {
        let at = self.path(key);
        let mut out = Vec::new();
        for (i, v) in self.items(key, required)?.iter().enumerate() {
            out.push(rule(&format!("{at}[{i}]"), v)?);
        }
        Ok(out)
    }

    fn rejection(&self) -> Result<Option<RawRejection>> {
        self.opt("rejection")
            .map(|v| rejection(&self.path("rejection"), v))
            .transpose()
    }

    fn mode(&self) -> Result<Mode> {
        Ok(match self.choice("mode", &["all", "any"])? {
            Some(1) => Mode::Any,
            _ => Mode::All,
        })
    }
}

/// The `type` of a tagged object (a rule or a rejection handler), one of `types`.
fn tag<'v>(at: &str, v: &'v Value, types: &[&str]) -> Result<&'v str> {
    let map = v.as_object().ok_or_else(|| err(at, "must be an object"))?;
    let at = join(at, "type");
    let ty = map
        .get("type")
        .ok_or_else(|| err(&at, "missing field `type`"))?;
    let s = ty.as_str().ok_or_else(|| err(&at, "must be a string"))?;
    if !types.contains(&s) {
        return Err(err(
            at,
            format!("unknown type `{s}`, expected one of {}", quoted(types)),
        ));
    }
    Ok(s)
}

impl RawPolicy {
    /// Reads a policy object (already parsed JSON); the error names the JSON field at fault,
    /// relative to the policy object (empty: the object itself).
    pub fn from_value(v: &Value) -> Result<Self> {
        let o = Obj::new(
            "",
            v,
            &[
                "default_decision",
                "unprotected_paths",
                "rule_sets",
                "applications",
                "xff_trusted_hops",
            ],
        )?;
        let mut rule_sets = Vec::new();
        for (i, v) in o.items("rule_sets", false)?.iter().enumerate() {
            rule_sets.push(rule_set(&format!("rule_sets[{i}]"), v)?);
        }
        let mut applications = Vec::new();
        for (i, v) in o.items("applications", false)?.iter().enumerate() {
            applications.push(application(&format!("applications[{i}]"), v)?);
        }
        Ok(RawPolicy {
            default_decision: match o.choice("default_decision", &["deny", "allow"])? {
                Some(1) => DefaultDecision::Allow,
                _ => DefaultDecision::Deny,
            },
            unprotected_paths: o.strings_or_empty("unprotected_paths")?,
            rule_sets,
            applications,
            xff_trusted_hops: o.uint_or("xff_trusted_hops", u8::MAX.into(), 0)? as u8,
        })
    }
}

fn rule_set(at: &str, v: &Value) -> Result<RawRuleSet> {
    let o = Obj::new(at, v, &["name", "mode", "rules", "rejection"])?;
    Ok(RawRuleSet {
        name: o.string("name")?,
        mode: o.mode()?,
        rules: o.rules("rules", true)?,
        rejection: o.rejection()?,
    })
}

fn application(at: &str, v: &Value) -> Result<RawApplication> {
    let o = Obj::new(
        at,
        v,
        &[
            "name",
            "hosts",
            "context_root",
            "type",
            "api",
            "site_authenticator",
            "web_session",
            "rejection",
            "ordering",
            "mode",
            "rules",
            "resources",
            "case_sensitive_paths",
        ],
    )?;
    let api = match o.opt("api") {
        None => None,
        Some(v) => {
            let at = o.path("api");
            let a = Obj::new(
                &at,
                v,
                &[
                    "validation",
                    "audiences",
                    "forward_token",
                    "token_providers",
                ],
            )?;
            let token_providers = a.strings_or_empty("token_providers")?;
            let validation = if token_providers.is_empty() {
                Some(a.required_choice("validation", &["jwt", "introspection"])?)
            } else {
                a.choice("validation", &["jwt", "introspection"])?
            };
            Some(RawAppApi {
                validation: validation.map(|i| match i {
                    0 => Validation::Jwt,
                    _ => Validation::Introspection,
                }),
                audiences: a.strings_or_empty("audiences")?,
                forward_token: a.flag("forward_token")?,
                token_providers,
            })
        }
    };
    let mut resources = Vec::new();
    for (i, v) in o.items("resources", false)?.iter().enumerate() {
        resources.push(resource(&format!("{at}.resources[{i}]"), v)?);
    }
    Ok(RawApplication {
        name: o.string("name")?,
        hosts: o.strings("hosts")?,
        context_root: match o.get("context_root") {
            None => default_root(),
            Some(v) => string(&o.path("context_root"), v)?,
        },
        app_type: match o.choice("type", &["web", "api", "both"])? {
            Some(1) => AppType::Api,
            Some(2) => AppType::Both,
            _ => AppType::Web,
        },
        api,
        site_authenticator: o.opt_string("site_authenticator")?,
        web_session: o.opt_string("web_session")?,
        case_sensitive_paths: o.flag("case_sensitive_paths")?,
        rejection: o.rejection()?,
        ordering: match o.choice("ordering", &["automatic", "manual"])? {
            Some(1) => Ordering::Manual,
            _ => Ordering::Automatic,
        },
        mode: o.mode()?,
        rules: o.rules("rules", false)?,
        resources,
    })
}

fn resource(at: &str, v: &Value) -> Result<RawResource> {
    let o = Obj::new(
        at,
        v,
        &[
            "name",
            "paths",
            "methods",
            "unprotected",
            "anonymous",
            "audit",
            "mode",
            "rules",
            "rejection",
        ],
    )?;
    Ok(RawResource {
        name: o.string("name")?,
        paths: o.strings("paths")?,
        methods: o.opt_strings("methods")?,
        unprotected: o.flag("unprotected")?,
        anonymous: o.flag("anonymous")?,
        audit: o.flag("audit")?,
        mode: o.mode()?,
        rules: o.rules("rules", false)?,
        rejection: o.rejection()?,
    })
}

fn rejection(at: &str, v: &Value) -> Result<RawRejection> {
    Ok(match tag(at, v, &["error", "redirect"])? {
        "error" => {
            let o = Obj::new(at, v, &["type", "status", "content_type", "body"])?;
            RawRejection::Error {
                status: o.uint_or("status", u16::MAX.into(), default_error_status().into())? as u16,
                content_type: match o.get("content_type") {
                    None => default_content_type(),
                    Some(v) => string(&o.path("content_type"), v)?,
                },
                body: o.string("body")?,
            }
        }
        _ => {
            let o = Obj::new(at, v, &["type", "url", "status"])?;
            RawRejection::Redirect {
                url: o.string("url")?,
                status: o.uint_or("status", u16::MAX.into(), default_redirect_status().into())?
                    as u16,
            }
        }
    })
}

const RULE_TYPES: [&str; 12] = [
    "all",
    "any",
    "rule_set",
    "attribute",
    "scope",
    "network",
    "time",
    "method",
    "header",
    "query",
    "redirect",
    "rate_limit",
];

/// The value tests shared by attribute, header and query rules (flattened into the rule).
fn test(o: &Obj) -> Result<RawTest> {
    Ok(RawTest {
        equals: o.opt_string("equals")?,
        one_of: o.opt_strings("one_of")?,
        like: o.opt_string("like")?,
        matches: o.opt_string("matches")?,
        present: o.flag("present")?,
        case_insensitive: o.flag("case_insensitive")?,
        negate: o.flag("negate")?,
    })
}

fn rule(at: &str, v: &Value) -> Result<RawRule> {
    let ty = tag(at, v, &RULE_TYPES)?;
    // Every rule but a rule-set reference may have a name and a rejection handler; the
    // value-test rules also take the fields of `RawTest`.
    let fields: &[&str] = match ty {
        "all" | "any" => &["type", "name", "rejection", "rules"],
        "rule_set" => &["type", "name"],
        "attribute" => &[
            "type",
            "name",
            "rejection",
            "claim",
            "equals",
            "one_of",
            "like",
            "matches",
            "present",
            "case_insensitive",
            "negate",
        ],
        "scope" => &["type", "name", "rejection", "all", "any"],
        "network" => &["type", "name", "rejection", "cidrs", "negate"],
        "time" => &[
            "type",
            "name",
            "rejection",
            "days",
            "from",
            "to",
            "utc_offset",
        ],
        "method" => &["type", "name", "rejection", "methods"],
        "header" => &[
            "type",
            "name",
            "rejection",
            "header",
            "equals",
            "one_of",
            "like",
            "matches",
            "present",
            "case_insensitive",
            "negate",
        ],
        "query" => &[
            "type",
            "name",
            "rejection",
            "param",
            "equals",
            "one_of",
            "like",
            "matches",
            "present",
            "case_insensitive",
            "negate",
        ],
        "redirect" => &["type", "name", "rejection", "url", "status"],
        _ => &[
            "type",
            "name",
            "rejection",
            "requests",
            "interval_s",
            "burst",
            "per",
        ],
    };
    let o = Obj::new(at, v, fields)?;
    if ty == "rule_set" {
        return Ok(RawRule::RuleSet {
            name: o.string("name")?,
        });
    }
    let name = o.opt_string("name")?;
    let rejection = o.rejection()?;
    Ok(match ty {
        "all" => RawRule::All {
            name,
            rejection,
            rules: o.rules("rules", true)?,
        },
        "any" => RawRule::Any {
            name,
            rejection,
            rules: o.rules("rules", true)?,
        },
        "attribute" => RawRule::Attribute {
            name,
            rejection,
            claim: o.string("claim")?,
            test: test(&o)?,
        },
        "scope" => RawRule::Scope {
            name,
            rejection,
            all: o.opt_strings("all")?,
            any: o.opt_strings("any")?,
        },
        "network" => RawRule::Network {
            name,
            rejection,
            cidrs: o.strings("cidrs")?,
            negate: o.flag("negate")?,
        },
        "time" => RawRule::Time {
            name,
            rejection,
            days: o.opt_strings("days")?,
            from: o.opt_string("from")?,
            to: o.opt_string("to")?,
            utc_offset: match o.get("utc_offset") {
                None => default_offset(),
                Some(v) => string(&o.path("utc_offset"), v)?,
            },
        },
        "method" => RawRule::Method {
            name,
            rejection,
            methods: o.strings("methods")?,
        },
        "header" => RawRule::Header {
            name,
            rejection,
            header: o.string("header")?,
            test: test(&o)?,
        },
        "query" => RawRule::Query {
            name,
            rejection,
            param: o.string("param")?,
            test: test(&o)?,
        },
        "redirect" => RawRule::Redirect {
            name,
            rejection,
            url: o.string("url")?,
            status: o.uint_or("status", u16::MAX.into(), default_redirect_status().into())? as u16,
        },
        _ => RawRule::RateLimit {
            name,
            rejection,
            requests: o.uint("requests", u32::MAX.into())? as u32,
            interval_s: o.uint("interval_s", u32::MAX.into())? as u32,
            burst: o
                .opt("burst")
                .map(|v| uint(&o.path("burst"), v, u32::MAX.into()).map(|n| n as u32))
                .transpose()?,
            per: match o.required_choice(
                "per",
                &["identity", "client_address", "oauth_client", "resource"],
            )? {
                0 => Per::Identity,
                1 => Per::ClientAddress,
                2 => Per::OauthClient,
                _ => Per::Resource,
            },
        },
    })
}

/// Deserializes an optional policy object (`null`: none) as a [`Value`], refusing an object
/// with a key twice: serde_json's own `Value` keeps the last silently, and a second `rules`
/// would drop the first. For `#[serde(deserialize_with)]`.
pub fn deserialize_policy<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(Option::<StrictValue>::deserialize(d)?.map(|v| v.0))
}

/// Deserializes a list of objects as [`Value`]s without duplicate keys (see
/// [`deserialize_policy`]). For `#[serde(deserialize_with)]`.
pub fn deserialize_values<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Ok(Vec::<StrictValue>::deserialize(d)?
        .into_iter()
        .map(|v| v.0)
        .collect())
}

/// A JSON value without duplicate keys.
pub(super) struct StrictValue(pub Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }
    fn visit_f64<E>(self, n: f64) -> Result<Value, E> {
        Ok(Number::from_f64(n).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_string()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                // Failing in the value puts the key in serde_path_to_error's path.
                return Err(match map.next_value_seed(Duplicate(key)) {
                    Err(e) => e,
                    Ok(()) => de::Error::custom("duplicate field"),
                });
            }
            let StrictValue(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

/// Refuses a duplicate key's value.
struct Duplicate(String);

impl<'de> DeserializeSeed<'de> for Duplicate {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, _: D) -> Result<(), D::Error> {
        Err(de::Error::custom(format_args!(
            "duplicate field `{}`",
            self.0
        )))
    }
}
