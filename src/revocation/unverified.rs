//! The share of the list that front-channel logouts may fill.
//!
//! Nothing vouches for a front-channel logout: any page can load its URL with a made-up sid.
//! Its entries are therefore held to a quarter of the list, in entries and in encoded bytes
//! (so that they always fit in the shared list beside the verified ones), and a new one that
//! finds the share full is refused rather than pushing out an older one: a flood cannot undo
//! a real logout, only delay new ones until entries expire with the session lifetime.

use super::codec::{MAX_ENCODED_BYTES, RECORD_HEADER};
use super::{Entry, Kind, RevocationList};

/// The share is 1/SHARE of the capacity and of the encoded list's bound.
const SHARE: usize = 4;
/// What a refusal asks the OP to wait when the list is full of verified entries (whose expiry
/// is not tracked here): about when [`RevocationList::expire`] runs next.
const FULL_RETRY_S: u64 = 60;

/// A front-channel logout refused because its share of the list is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareFull {
    /// Live front-channel entries held.
    pub held: usize,
    /// Front-channel logouts refused by this list so far.
    pub refused: u64,
    /// Seconds until the oldest entry expires and makes room (at least 1).
    pub retry_after_s: u64,
}

/// Live unverified entries: how many, their encoded bytes, and the earliest expiry.
struct Usage {
    count: usize,
    bytes: usize,
    first_until: Option<u64>,
}

impl RevocationList {
    /// Revokes an OP sid named by a front-channel logout, unless its share of the list is full
    /// (or the whole list is): then nothing changes but the count of refusals. Never drops an
    /// entry. A sid already held is widened as [`revoke`](Self::revoke) would. `Ok(true)`: the
    /// list changed (there is something to share).
    pub fn revoke_unverified(
        &mut self,
        op_sid: String,
        before: u64,
        until: u64,
        now: u64,
    ) -> Result<bool, ShareFull> {
        let kind = Kind::UnverifiedOpSid;
        if !self.map(kind).contains_key(&op_sid) {
            let usage = self.unverified_usage(now);
            let (max_count, max_bytes) = self.unverified_share();
            let fits = usage.count < max_count
                && usage.bytes + RECORD_HEADER + op_sid.len() <= max_bytes
                && self.len() < self.capacity;
            if !fits {
                self.refused_unverified = self.refused_unverified.saturating_add(1);
                let retry_after_s = match usage.first_until {
                    Some(t) if usage.count >= max_count => t.saturating_add(1).saturating_sub(now),
                    _ => FULL_RETRY_S,
                };
                return Err(ShareFull {
                    held: usage.count,
                    refused: self.refused_unverified,
                    retry_after_s: retry_after_s.max(1),
                });
            }
        }
        let changed = self.upsert(kind, op_sid, Entry::new(before, until));
        if changed {
            self.bump();
            self.dirty = true;
        }
        Ok(changed)
    }

    /// Front-channel logouts refused so far because their share was full.
    pub fn unverified_refused(&self) -> u64 {
        self.refused_unverified
    }

    /// The most front-channel entries, and their most encoded bytes.
    fn unverified_share(&self) -> (usize, usize) {
        ((self.capacity / SHARE).max(1), MAX_ENCODED_BYTES / SHARE)
    }

    /// One pass over the unverified entries (at most the share, a few thousand, live; expired
    /// ones until the next [`expire`](Self::expire)).
    fn unverified_usage(&self, now: u64) -> Usage {
        let mut usage = Usage {
            count: 0,
            bytes: 0,
            first_until: None,
        };
        for (key, e) in self.map(Kind::UnverifiedOpSid) {
            if e.until < now {
                continue;
            }
            usage.count += 1;
            usage.bytes += RECORD_HEADER + key.len();
            usage.first_until = Some(usage.first_until.map_or(e.until, |t| t.min(e.until)));
        }
        usage
    }

    /// Brings the unverified entries merged from other workers back within their share,
    /// keeping the earliest logouts (every worker keeps the same ones), and drops the expired
    /// ones. Returns how many live entries were dropped.
    pub(super) fn trim_unverified(&mut self, now: u64) -> usize {
        let usage = self.unverified_usage(now);
        let (max_count, max_bytes) = self.unverified_share();
        if usage.count <= max_count && usage.bytes <= max_bytes {
            return 0;
        }
        let map = &mut self.maps[Kind::UnverifiedOpSid as usize];
        let mut live: Vec<(u64, String)> = map
            .iter()
            .filter(|(_, e)| e.until >= now)
            .map(|(k, e)| (e.until, k.clone()))
            .collect();
        live.sort_unstable();
        let (mut count, mut bytes) = (0, 0);
        let mut keep = 0;
        for (_, key) in &live {
            if count == max_count || bytes + RECORD_HEADER + key.len() > max_bytes {
                break;
            }
            count += 1;
            bytes += RECORD_HEADER + key.len();
            keep += 1;
        }
        let dropped = live.len().saturating_sub(keep);
        let kept: std::collections::HashMap<String, Entry> = live
            .into_iter()
            .take(keep)
            .filter_map(|(_, k)| map.remove_entry(&k))
            .collect();
        *map = kept;
        self.bump();
        dropped
    }
}
