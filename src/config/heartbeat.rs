//! The heartbeat's settings: what `/pa/heartbeat.ping` answers.

use serde::Deserialize;

use super::ConfigError;

/// `heartbeat`, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeat {
    /// Answer with a JSON body saying whether sign-in can work (as PingAccess's detailed
    /// heartbeat does), rather than a bare `OK`.
    #[serde(default)]
    detailed: bool,
    /// The status of a detailed answer when this worker cannot sign anyone in.
    #[serde(default = "default_not_ready_status")]
    not_ready_status: u32,
}

impl Default for RawHeartbeat {
    fn default() -> Self {
        Self {
            detailed: false,
            not_ready_status: default_not_ready_status(),
        }
    }
}

fn default_not_ready_status() -> u32 {
    503
}

/// What `/pa/heartbeat.ping` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatSettings {
    pub detailed: bool,
    pub not_ready_status: u32,
}

pub(super) fn read(raw: RawHeartbeat) -> Result<HeartbeatSettings, ConfigError> {
    // 200 keeps a load balancer that only reads the status from ever pulling the gateway;
    // anything else must be an error status it can act on.
    if raw.not_ready_status != 200 && !(500..=599).contains(&raw.not_ready_status) {
        return Err(ConfigError::new(
            "heartbeat.not_ready_status",
            "must be 200 or a 5xx status",
        ));
    }
    Ok(HeartbeatSettings {
        detailed: raw.detailed,
        not_ready_status: raw.not_ready_status,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::sample_json;
    use crate::config::Settings;
    use serde_json::json;

    fn with(key: &str, value: serde_json::Value) -> Result<Settings, crate::config::ConfigError> {
        let mut v = sample_json();
        v[key] = value;
        Settings::from_json(v.to_string().as_bytes())
    }

    #[test]
    fn heartbeat_and_access_log_fields_default_to_the_plain_answer_and_off() {
        let s = crate::config::tests::sample();
        assert!(!s.heartbeat.detailed);
        assert_eq!(s.heartbeat.not_ready_status, 503);
        assert!(!s.access_log_fields);
    }

    #[test]
    fn heartbeat_settings_are_read_and_checked() {
        let s = with(
            "heartbeat",
            json!({"detailed": true, "not_ready_status": 200}),
        )
        .unwrap();
        assert!(s.heartbeat.detailed);
        assert_eq!(s.heartbeat.not_ready_status, 200);
        let e = with("heartbeat", json!({"not_ready_status": 404})).unwrap_err();
        assert_eq!(e.field, "heartbeat.not_ready_status");
        let e = with("heartbeat", json!({"detail": true})).unwrap_err();
        assert_eq!(e.field, "heartbeat.detail");
        assert!(
            with("access_log_fields", json!(true))
                .unwrap()
                .access_log_fields
        );
    }
}
