use serde_json::json;

use super::*;
use crate::bearer::BearerError;

fn settings(extra: serde_json::Value) -> Settings {
    let mut config = json!({
        "op": {"issuer": "https://op.example.com", "cluster": "op",
               "authorization_endpoint": "https://op.example.com/auth",
               "token_endpoint": "https://op.example.com/token",
               "jwks_uri": "https://op.example.com/jwks"},
        "client": {"client_id": "c", "client_secret": "s",
                   "redirect_uri": "https://gw.example.com/pa/oidc/cb"},
        "session": {"signing_keys": [{"kid": "k", "secret": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}]}
    });
    if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Settings::from_json(config.to_string().as_bytes()).unwrap()
}

fn with_apps() -> Settings {
    settings(json!({"policy": {"applications": [
        {"name": "portal", "hosts": ["gw.example.com"], "resources": [{"name": "r", "paths": ["/*"]}]},
        {"name": "orders api.v2", "hosts": ["api.example.com"], "resources": [{"name": "r", "paths": ["/*"]}]}
    ]}}))
}

#[test]
fn counts_are_taken_once_and_start_again_from_zero() {
    let s = with_apps();
    let mut m = Metrics::new(&s);
    assert!(m.enabled());
    m.count(Counter::LoginStarted);
    m.count(Counter::LoginStarted);
    m.count(Counter::SessionValid);
    assert_eq!(m.get(Counter::LoginStarted), 2);
    let mut taken = Vec::new();
    m.take_counts(|i, n| taken.push((i, n)));
    assert_eq!(
        taken,
        vec![
            (Counter::LoginStarted as usize, 2),
            (Counter::SessionValid as usize, 1)
        ]
    );
    assert_eq!(m.get(Counter::LoginStarted), 0);
    let mut again = 0;
    m.take_counts(|_, _| again += 1);
    assert_eq!(again, 0, "nothing moved, nothing handed over");
}

#[test]
fn every_count_has_one_name_and_names_are_unique() {
    let s = with_apps();
    let m = Metrics::new(&s);
    let names = m.counter_names();
    assert_eq!(names.len(), Counter::ALL.len() + 3 * OUTCOMES.len());
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    assert_eq!(names[0], "envoy_wam.logins_started_total");
    for (i, c) in Counter::ALL.iter().enumerate() {
        assert_eq!(*c as usize, i, "index order");
    }
    // Application names are one segment of plain characters; the fallback comes last.
    assert!(names.contains(&"envoy_wam.decisions_total.app.portal.outcome.allow".to_string()));
    assert!(names.contains(&"envoy_wam.decisions_total.app.orders_api_v2.outcome.deny".to_string()));
    assert!(names.contains(&"envoy_wam.decisions_total.app.default.outcome.login".to_string()));
    for n in names
        .iter()
        .chain(&m.histogram_names())
        .chain(&m.gauge_names())
        .chain(&m.shared_gauge_names())
    {
        assert!(n.starts_with("envoy_wam."), "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "{n}"
        );
    }
}

#[test]
fn decisions_are_counted_per_application_by_address() {
    let s = with_apps();
    let m = Metrics::new(&s);
    let apps = s.policy.applications();
    m.decision(&s, &apps[1], &Outcome::Allow);
    m.decision(&s, &apps[1], &Outcome::Forbidden);
    m.decision(&s, &apps[0], &Outcome::RateLimited { retry_after_s: 3 });
    m.decision(&s, &apps[0], &Outcome::NeedIdentity);
    let fallback = &s.fallback.applications()[0];
    m.decision(
        &s,
        fallback,
        &Outcome::Redirect {
            url: "/x",
            status: 302,
        },
    );
    assert_eq!(m.decisions("orders_api_v2", "allow"), 1);
    assert_eq!(m.decisions("orders_api_v2", "deny"), 1);
    assert_eq!(m.decisions("portal", "rate_limited"), 1);
    assert_eq!(m.decisions("portal", "login"), 1);
    assert_eq!(m.decisions("default", "redirect"), 1);
    assert_eq!(m.decisions("portal", "allow"), 0);
    // An application of another configuration is not one of these: not counted.
    let other = with_apps();
    m.decision(&s, &other.policy.applications()[0], &Outcome::Allow);
    assert_eq!(m.decisions("portal", "allow"), 0);
}

#[test]
fn bearer_refusals_are_counted_by_a_bounded_reason() {
    let m = Metrics::new(&settings(json!({})));
    for e in [
        BearerError::Missing,
        BearerError::Malformed,
        BearerError::InvalidToken("malformed"),
        BearerError::InvalidToken("expired"),
        BearerError::InvalidToken("wrong audience"),
        BearerError::InvalidToken(UNKNOWN_KEY),
        BearerError::NeedKeys,
        BearerError::InvalidToken("inactive"),
        BearerError::InvalidToken(UNUSABLE_CLAIM),
        BearerError::InvalidToken("no identity"),
    ] {
        m.bearer_refused(&e);
    }
    assert_eq!(m.get(Counter::BearerMissing), 1);
    assert_eq!(m.get(Counter::BearerMalformed), 2);
    assert_eq!(m.get(Counter::BearerExpired), 1);
    assert_eq!(m.get(Counter::BearerAudience), 1);
    assert_eq!(m.get(Counter::BearerUnknownKey), 2);
    assert_eq!(m.get(Counter::BearerInactive), 1);
    assert_eq!(m.get(Counter::BearerClaims), 1);
    assert_eq!(m.get(Counter::BearerOther), 1);
}

#[test]
fn latencies_are_kept_per_upstream_up_to_a_bound_per_tick() {
    let mut m = Metrics::new(&settings(json!({})));
    m.latency(Upstream::Sts, 12);
    m.latency(Upstream::Jwks, u64::MAX);
    assert_eq!(m.latencies(Upstream::Sts), &[12]);
    assert_eq!(m.latencies(Upstream::Jwks), &[u32::MAX]);
    for _ in 0..1000 {
        m.latency(Upstream::OpToken, 5);
    }
    assert_eq!(m.latencies(Upstream::OpToken).len(), LATENCIES_PER_TICK);
    let mut taken = Vec::new();
    m.take_latencies(|i, ms| taken.push((i, ms)));
    assert_eq!(taken.len(), LATENCIES_PER_TICK + 2);
    assert!(taken.contains(&(Upstream::Sts as usize, 12)));
    assert!(m.latencies(Upstream::OpToken).is_empty());
    assert_eq!(
        m.histogram_names()[Upstream::Introspection as usize],
        "envoy_wam.callout_duration_ms.upstream.introspection"
    );
}

#[test]
fn metrics_off_count_nothing_and_define_nothing() {
    let s = settings(json!({"metrics": false}));
    let mut m = Metrics::new(&s);
    assert!(!m.enabled());
    m.count(Counter::LoginStarted);
    m.decision(&s, &s.fallback.applications()[0], &Outcome::Allow);
    m.latency(Upstream::Sts, 3);
    assert_eq!(m.get(Counter::LoginStarted), 0);
    assert!(m.counter_names().is_empty());
    assert!(m.histogram_names().is_empty());
    assert!(m.gauge_names().is_empty());
    assert!(m.shared_gauge_names().is_empty());
    let mut any = false;
    m.take_counts(|_, _| any = true);
    m.take_latencies(|_, _| any = true);
    assert!(!any);
}

#[test]
fn label_values_are_single_plain_segments() {
    assert_eq!(label_value("portal"), "portal");
    assert_eq!(label_value("a.b c/d"), "a_b_c_d");
    assert_eq!(label_value(""), "_");
    assert_eq!(label_value("Ünï-1_x"), "_n_-1_x");
}
