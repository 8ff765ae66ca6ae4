//! How the workers of one Envoy agree on a session's validation at the OP: one shared-data
//! slot per session (hashed, so the number of keys stays bounded) says who is validating it,
//! and once done, the successor cookie. With rotating refresh tokens this is what keeps a
//! burst of parallel requests from presenting the same refresh token twice: the OP would take
//! the second use for a stolen token and end the user's whole grant.

use std::fmt::Write;

/// Slots in shared data. A collision only costs the single flight between the two sessions
/// that share a slot at the same moment.
pub const SLOTS: u64 = 16_384;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotState {
    /// A worker asked the OP at `since` and has not answered yet.
    Busy { since: u64 },
    /// Validated at `at`; `cookie` is the successor session's cookie value.
    Done { at: u64, cookie: String },
    /// The OP could not be asked at `at` (down, slow, unusable answer).
    Failed { at: u64 },
    /// The OP refused the session at `at`.
    Ended { at: u64 },
    /// The leader went away without an answer: whoever comes next asks.
    Idle,
}

/// One slot's content: which session it is about, and where its validation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub sid: String,
    pub state: SlotState,
}

/// The shared-data key of `sid`'s slot.
pub fn key(sid: &str) -> String {
    let h = hmac_sha256::Hash::hash(sid.as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&h[..8]);
    key_of_index(u64::from_le_bytes(n) % SLOTS)
}

/// The shared-data key of slot number `i`.
pub fn key_of_index(i: u64) -> String {
    format!("envoy-wam.validation.{i}")
}

impl Slot {
    /// A slot no session uses yet.
    pub fn idle() -> Self {
        Self {
            sid: "-".into(),
            state: SlotState::Idle,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("v1 {} ", self.sid);
        let _ = match &self.state {
            SlotState::Busy { since } => write!(out, "busy {since}"),
            SlotState::Done { at, cookie } => write!(out, "done {at} {cookie}"),
            SlotState::Failed { at } => write!(out, "failed {at}"),
            SlotState::Ended { at } => write!(out, "ended {at}"),
            SlotState::Idle => write!(out, "idle"),
        };
        out.into_bytes()
    }

    /// `None` for anything unreadable: the slot then counts as free.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.split(' ');
        if parts.next()? != "v1" {
            return None;
        }
        let sid = parts.next()?.to_string();
        let kind = parts.next()?;
        let mut number = || parts.next()?.parse::<u64>().ok();
        let state = match kind {
            "busy" => SlotState::Busy { since: number()? },
            "done" => {
                let at = number()?;
                let cookie = parts.next()?.to_string();
                if cookie.is_empty() {
                    return None;
                }
                SlotState::Done { at, cookie }
            }
            "failed" => SlotState::Failed { at: number()? },
            "ended" => SlotState::Ended { at: number()? },
            "idle" => SlotState::Idle,
            _ => return None,
        };
        if parts.next().is_some() || sid.is_empty() {
            return None;
        }
        Some(Self { sid, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_garbage_is_free() {
        for state in [
            SlotState::Busy { since: 5 },
            SlotState::Done {
                at: 7,
                cookie: "a.b..c.d~1".into(),
            },
            SlotState::Failed { at: 9 },
            SlotState::Ended { at: 11 },
            SlotState::Idle,
        ] {
            let slot = Slot {
                sid: "sid-1".into(),
                state,
            };
            assert_eq!(Slot::decode(&slot.encode()), Some(slot));
        }
        for bad in [
            &b""[..],
            b"v1",
            b"v2 s busy 1",
            b"v1 s busy x",
            b"v1 s done 1 ",
            b"v1 s done 1 c extra",
            b"v1  busy 1",
            b"\xff\xfe",
            b"v1 s what 1",
        ] {
            assert_eq!(Slot::decode(bad), None, "{bad:?}");
        }
        assert_eq!(key("a"), key("a"));
        assert!(key("a").starts_with("envoy-wam.validation."));
    }
}
