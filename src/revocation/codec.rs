//! The revocation list as stored in shared data.
//!
//! `MAGIC`, then records to the end: kind (1 byte), `before` and `until` (u64 LE), key length
//! (u16 LE), key (UTF-8). Binary rather than JSON: a few thousand entries are read by every
//! worker whenever the list changes. Any other worker, or a different build of this one,
//! may have written the bytes: anything that does not decode whole is ignored.

use super::{Entry, Kind, RevocationList, REVOCATIONS};

const MAGIC: &[u8; 5] = b"EWRL1";
/// The encoded list's bound: at ~60 bytes a record, some 17,000 entries.
pub(super) const MAX_ENCODED_BYTES: usize = 1 << 20;
/// Longest key shared; longer ones (none come from a validated logout token) stay local.
pub(super) const MAX_KEY_BYTES: usize = 1024;
pub(super) const RECORD_HEADER: usize = 1 + 8 + 8 + 2;

/// Encodes the unexpired entries: revocations first, each group latest `until` first (but
/// front-channel entries last, earliest first), so that when the size bound is reached what
/// is left out is what would expire soonest, or the latest front-channel logouts. Returns the
/// bytes and how many entries were left out.
pub(super) fn encode(list: &RevocationList, now: u64) -> (Vec<u8>, usize) {
    let mut out = MAGIC.to_vec();
    let mut left_out = 0;
    for group in [&REVOCATIONS[..], &[Kind::Jti][..]] {
        let mut records: Vec<(Kind, &String, &Entry)> = group
            .iter()
            .flat_map(|&k| list.map(k).iter().map(move |(key, e)| (k, key, e)))
            .filter(|(_, _, e)| e.until >= now)
            .collect();
        // Unverified entries last (a flood of them must not crowd out a verified one), the
        // earliest logouts among them first (nor an earlier real one).
        records.sort_unstable_by_key(|r| {
            let unverified = r.0 == Kind::UnverifiedOpSid;
            (
                unverified,
                if unverified {
                    r.2.until
                } else {
                    u64::MAX - r.2.until
                },
            )
        });
        for (kind, key, entry) in records {
            let Ok(len) = u16::try_from(key.len()) else {
                left_out += 1;
                continue;
            };
            if key.len() > MAX_KEY_BYTES
                || out.len() + RECORD_HEADER + key.len() > MAX_ENCODED_BYTES
            {
                left_out += 1;
                continue;
            }
            out.push(kind as u8);
            out.extend_from_slice(&entry.before.to_le_bytes());
            out.extend_from_slice(&entry.until.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(key.as_bytes());
        }
    }
    (out, left_out)
}

/// Decodes a stored list; `None` for anything not wholly well-formed.
pub(super) fn decode(bytes: &[u8]) -> Option<Vec<(Kind, String, Entry)>> {
    if bytes.len() > MAX_ENCODED_BYTES {
        return None;
    }
    let mut rest = bytes.strip_prefix(MAGIC)?;
    let mut records = Vec::new();
    while let Some((&kind, tail)) = rest.split_first() {
        let kind = Kind::from_byte(kind)?;
        let (before, tail) = take_u64(tail)?;
        let (until, tail) = take_u64(tail)?;
        let (len, tail) = tail.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len));
        if len > MAX_KEY_BYTES {
            return None;
        }
        let (key, tail) = tail.split_at_checked(len)?;
        let key = std::str::from_utf8(key).ok()?.to_owned();
        records.push((kind, key, Entry::new(before, until)));
        rest = tail;
    }
    Some(records)
}

fn take_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (head, tail) = bytes.split_first_chunk::<8>()?;
    Some((u64::from_le_bytes(*head), tail))
}
