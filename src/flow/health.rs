//! The heartbeat's answer (`/pa/heartbeat.ping`): a bare `OK`, or with `heartbeat.detailed` a
//! JSON body that says whether this worker can sign anyone in, so that a load balancer can
//! take a gateway that cannot (OP endpoints unknown, the OP naming another issuer, its keys
//! not to be had) out of rotation.
//!
//! The check takes plain data ([`OpHealth`], one per OP) rather than the VM, so that it does
//! not care how the VM keeps its OPs; [`ops_health`] reads them. Every OP must be ready for the
//! gateway to be: the JSON says which is not.

use serde_json::{json, Value};

use super::state::{stale_after_s, VmState};
use crate::config::{HeartbeatSettings, Settings};
use crate::http::LocalResponse;
use crate::jwks::JwksHealth;

/// Where the OP's endpoints stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// Named in the configuration: nothing to fetch.
    Configured,
    /// Fetched by discovery.
    Discovered,
    /// Discovery has not (yet) succeeded.
    Missing,
    /// The discovery document names another issuer: sign-in is refused until fixed.
    OtherIssuer,
}

/// What the health check needs to know of one OP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpHealth<'a> {
    pub issuer: &'a str,
    pub endpoints: Endpoints,
    pub jwks: JwksHealth,
}

impl OpHealth<'_> {
    /// Sign-in can work: the endpoints are known, and the keys are loaded or have not failed.
    /// The JWKS is fetched when the first token needs it, so "not fetched yet" is ready;
    /// a fetch that brought nothing while no keys are held is not.
    pub fn ready(&self) -> bool {
        matches!(
            self.endpoints,
            Endpoints::Configured | Endpoints::Discovered
        ) && (self.jwks.keys > 0 || !self.jwks.failing)
    }

    fn to_json(self) -> Value {
        let endpoints = match self.endpoints {
            Endpoints::Configured => "configured",
            Endpoints::Discovered => "discovered",
            Endpoints::Missing => "missing",
            Endpoints::OtherIssuer => "issuer_mismatch",
        };
        let state = match (self.jwks.keys, self.jwks.failing, self.jwks.age_s) {
            (1.., false, _) => "loaded",
            (1.., true, _) => "stale",
            (0, true, _) => "failing",
            (0, false, Some(_)) => "empty",
            (0, false, None) => "not_fetched",
        };
        json!({
            "issuer": self.issuer,
            "ready": self.ready(),
            "endpoints": endpoints,
            "jwks": {"state": state, "keys": self.jwks.keys, "age_s": self.jwks.age_s},
        })
    }
}

/// The heartbeat's answer for these OPs.
pub fn heartbeat(settings: &HeartbeatSettings, ops: &[OpHealth<'_>]) -> LocalResponse {
    if !settings.detailed {
        return LocalResponse::new(200).body("text/plain", "OK");
    }
    let ready = !ops.is_empty() && ops.iter().all(OpHealth::ready);
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "ops": ops.iter().map(|o| o.to_json()).collect::<Vec<_>>(),
    });
    let status = if ready {
        200
    } else {
        settings.not_ready_status
    };
    LocalResponse::new(status).body("application/json", body.to_string())
}

/// Every OP (each web session's, each token provider's) as this VM knows it.
pub fn ops_health<'a>(settings: &'a Settings, vm: &mut VmState, now: u64) -> Vec<OpHealth<'a>> {
    settings
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let rt = vm.op(i);
            let endpoints = match (&rt.endpoints, rt.issuer_mismatch) {
                (_, true) => Endpoints::OtherIssuer,
                (Some(_), false) if op.discovery.is_some() => Endpoints::Discovered,
                (Some(_), false) => Endpoints::Configured,
                (None, false) => Endpoints::Missing,
            };
            OpHealth {
                issuer: &op.issuer,
                endpoints,
                // A fetch is given the callout timeout and a margin before it counts as failed.
                jwks: rt.jwks.health(now, stale_after_s(op.timeout_ms)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwks::JwksCache;

    const DETAILED: HeartbeatSettings = HeartbeatSettings {
        detailed: true,
        not_ready_status: 503,
    };

    fn op(endpoints: Endpoints, jwks: JwksHealth) -> OpHealth<'static> {
        OpHealth {
            issuer: "https://op.example.com",
            endpoints,
            jwks,
        }
    }

    fn body(r: &LocalResponse) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn the_plain_heartbeat_is_ok_whatever_the_state() {
        let plain = HeartbeatSettings {
            detailed: false,
            ..DETAILED
        };
        let jwks = JwksCache::default().health(100, 7);
        let r = heartbeat(&plain, &[op(Endpoints::Missing, jwks)]);
        assert_eq!((r.status, r.body.as_slice()), (200, b"OK".as_slice()));
    }

    #[test]
    fn ready_with_endpoints_and_keys_not_failing() {
        let mut cache = JwksCache::default();
        let never = cache.health(100, 7);
        assert_eq!((never.keys, never.age_s, never.failing), (0, None, false));
        let r = heartbeat(&DETAILED, &[op(Endpoints::Configured, never)]);
        assert_eq!(
            r.status, 200,
            "keys are fetched at first use: not fetched is ready"
        );
        assert_eq!(body(&r)["ops"][0]["jwks"]["state"], "not_fetched");
        assert_eq!(r.header_value("content-type"), Some("application/json"));
        assert_eq!(r.header_value("cache-control"), Some("no-store"));

        // A routine fetch started at 100 and nothing came: failing once past the grace.
        cache.attempted(100, 3600);
        assert!(
            !cache.health(105, 7).failing,
            "still within the callout's time"
        );
        let failing = cache.health(110, 7);
        assert!(failing.failing);
        let r = heartbeat(&DETAILED, &[op(Endpoints::Discovered, failing)]);
        assert_eq!(r.status, 503);
        let b = body(&r);
        assert_eq!(b["status"], "not_ready");
        assert_eq!(b["ops"][0]["jwks"]["state"], "failing");
        assert_eq!(b["ops"][0]["endpoints"], "discovered");

        cache.replace(Vec::new(), 111);
        assert!(
            !cache.health(120, 7).failing,
            "a fetch came back after the attempt"
        );
    }

    #[test]
    fn not_ready_without_endpoints_or_with_another_issuer() {
        let jwks = JwksCache::default().health(100, 7);
        for (e, name) in [
            (Endpoints::Missing, "missing"),
            (Endpoints::OtherIssuer, "issuer_mismatch"),
        ] {
            let r = heartbeat(&DETAILED, &[op(e, jwks)]);
            assert_eq!(r.status, 503);
            assert_eq!(body(&r)["ops"][0]["endpoints"], name);
            assert_eq!(body(&r)["ops"][0]["ready"], false);
        }
        let lenient = HeartbeatSettings {
            not_ready_status: 200,
            ..DETAILED
        };
        let r = heartbeat(&lenient, &[op(Endpoints::Missing, jwks)]);
        assert_eq!(
            (r.status, body(&r)["status"].clone()),
            (200, json!("not_ready"))
        );
        // Every OP must be ready (several OPs after issue 11).
        let ok = op(Endpoints::Configured, jwks);
        let r = heartbeat(&DETAILED, &[ok, op(Endpoints::Missing, jwks)]);
        assert_eq!(r.status, 503);
    }

    #[test]
    fn stale_keys_with_a_failing_refresh_still_serve() {
        let h = JwksHealth {
            keys: 2,
            age_s: Some(4000),
            failing: true,
        };
        let r = heartbeat(&DETAILED, &[op(Endpoints::Configured, h)]);
        assert_eq!(r.status, 200);
        assert_eq!(body(&r)["ops"][0]["jwks"]["state"], "stale");
        assert_eq!(body(&r)["ops"][0]["jwks"]["age_s"], 4000);
    }
}
