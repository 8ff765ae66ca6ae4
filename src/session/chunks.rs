//! A session too large for one cookie is split into `<name>.0`, `<name>.1`, … Browsers keep
//! about 4 KB per cookie (RFC 6265 §6.1 asks for at least 4096 bytes of name, value and
//! attributes), so each chunk's value stays below [`CHUNK_VALUE_BYTES`].
//!
//! The first chunk starts with the number of chunks (`3~…`): a stale chunk the browser kept
//! (it dropped one of our clearing `Set-Cookie`s) is then ignored instead of breaking the
//! joined value.

use std::borrow::Cow;

use crate::cookie;
use crate::request::HeaderSource;

/// Room for the name (`PA.wam.9=`) and the attributes within 4,000 bytes.
pub const CHUNK_VALUE_BYTES: usize = 3800;
/// At most this many chunks, whatever the configuration says.
pub const MAX_CHUNKS: usize = 10;

/// Which of the session's cookie names a request carried: bit 0 the single cookie, bit `i + 1`
/// chunk `i`. The writer clears the carried ones it does not set again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Carried(u16);

impl Carried {
    fn has(self, bit: usize) -> bool {
        self.0 & (1 << bit) != 0
    }
    pub fn any(self) -> bool {
        self.0 != 0
    }
}

/// Whether `n` is the session cookie or a chunk of it (or any other cookie in the gateway's
/// `<name>.` namespace): none of them ever goes upstream.
pub fn is_ours(n: &str, name: &str) -> bool {
    n.strip_prefix(name)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The chunk index of cookie `n`, when it is one of `name`'s.
fn chunk_index(n: &str, name: &str) -> Option<usize> {
    let digits = n.strip_prefix(name)?.strip_prefix('.')?;
    if digits.is_empty() || digits.len() > 1 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The session cookie's value, for every request: the first single cookie ends the scan; only a
/// chunked session costs the full pass of [`read`].
pub fn read_value<'r>(request: &'r dyn HeaderSource, name: &str) -> Option<Cow<'r, str>> {
    match cookie::find(request, name) {
        Some(v) => Some(Cow::Borrowed(v)),
        None => read(request, name).0,
    }
}

/// Which of the session's cookie names `request` carried (for clearing the stale ones).
pub fn carried(request: &dyn HeaderSource, name: &str) -> Carried {
    read(request, name).1
}

/// The session cookie's value: the single cookie when there is one, else the chunks joined.
/// The first cookie of each name counts (as for any cookie the gateway reads). One pass over
/// the `Cookie` headers; no allocation unless the session is chunked.
pub fn read<'r>(request: &'r dyn HeaderSource, name: &str) -> (Option<Cow<'r, str>>, Carried) {
    let mut single = None;
    let mut chunks: [Option<&str>; MAX_CHUNKS] = [None; MAX_CHUNKS];
    let mut carried = 0u16;
    let headers = request.headers();
    for (_, value) in headers.iter().filter(|(n, _)| *n == "cookie") {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for (n, v) in cookie::pairs(value) {
            if n == name {
                carried |= 1;
                single.get_or_insert(v);
            } else if let Some(i) = chunk_index(n, name) {
                carried |= 1 << (i + 1);
                if let Some(slot) = chunks.get_mut(i) {
                    slot.get_or_insert(v);
                }
            }
        }
    }
    let carried = Carried(carried);
    if let Some(v) = single {
        return (Some(Cow::Borrowed(v)), carried);
    }
    (join(&chunks).map(Cow::Owned), carried)
}

fn join(chunks: &[Option<&str>]) -> Option<String> {
    let (count, first) = chunks.first().copied().flatten()?.split_once('~')?;
    let count: usize = count.parse().ok()?;
    if !(2..=MAX_CHUNKS).contains(&count) {
        return None;
    }
    let mut joined = String::with_capacity(count * CHUNK_VALUE_BYTES);
    joined.push_str(first);
    for chunk in chunks.get(1..count)? {
        joined.push_str((*chunk)?);
    }
    Some(joined)
}

/// Cookie names with their values.
pub type NamedValues = Vec<(String, String)>;

/// The cookies to set for `value` (name and value each), and the carried names to clear.
/// `None` when the value needs more than `max_chunks` chunks.
pub fn write(
    name: &str,
    value: &str,
    max_chunks: usize,
    carried: Carried,
) -> Option<(NamedValues, Vec<String>)> {
    let max_chunks = max_chunks.min(MAX_CHUNKS);
    let mut set = Vec::new();
    if value.len() <= CHUNK_VALUE_BYTES {
        set.push((name.to_string(), value.to_string()));
    } else {
        // The count prefix takes three bytes of the first chunk.
        let per = CHUNK_VALUE_BYTES;
        let count = (value.len() + 3).div_ceil(per);
        if count > max_chunks {
            return None;
        }
        let mut rest = value;
        for i in 0..count {
            let room = if i == 0 { per - 3 } else { per };
            // Cookie values here are base64url and dots: ASCII, so any byte is a boundary.
            let (part, tail) = rest.split_at(room.min(rest.len()));
            rest = tail;
            let part = if i == 0 {
                format!("{count}~{part}")
            } else {
                part.to_string()
            };
            set.push((format!("{name}.{i}"), part));
        }
    }
    let cleared = clear(name, carried, |n| set.iter().any(|(s, _)| s == n));
    Some((set, cleared))
}

/// Every carried name of the session's cookies that `keep` does not keep.
pub fn clear(name: &str, carried: Carried, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut cleared = Vec::new();
    if carried.has(0) && !keep(name) {
        cleared.push(name.to_string());
    }
    for i in 0..MAX_CHUNKS {
        let chunk = format!("{name}.{i}");
        if carried.has(i + 1) && !keep(&chunk) {
            cleared.push(chunk);
        }
    }
    cleared
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::HeaderList;

    fn request(cookies: &[&str]) -> HeaderList {
        let mut pairs = vec![(":path", "/".to_string())];
        pairs.extend(cookies.iter().map(|c| ("cookie", c.to_string())));
        HeaderList::new(pairs.iter().map(|(n, v)| (*n, v.as_str())))
    }

    fn cookie_header(set: &[(String, String)]) -> String {
        set.iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn a_small_value_is_one_cookie_and_clears_old_chunks() {
        let carried = read(&request(&["PA.wam.0=2~a; PA.wam.1=b"]), "PA.wam").1;
        let (set, cleared) = write("PA.wam", "small", 5, carried).unwrap();
        assert_eq!(set, vec![("PA.wam".to_string(), "small".to_string())]);
        assert_eq!(cleared, vec!["PA.wam.0", "PA.wam.1"]);
    }

    #[test]
    fn a_large_value_round_trips_through_chunks() {
        let value: String = (0..9000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let (set, cleared) = write("PA.wam", &value, 5, Carried(1)).unwrap();
        assert_eq!(set.len(), 3);
        assert!(set.iter().all(|(_, v)| v.len() <= CHUNK_VALUE_BYTES));
        assert_eq!(cleared, vec!["PA.wam"], "the single cookie goes");
        let req = request(&[&cookie_header(&set)]);
        assert_eq!(read(&req, "PA.wam").0.as_deref(), Some(value.as_str()));
        // Split over several Cookie headers, in any order, with a stale fourth chunk.
        let mut parts: Vec<String> = set.iter().map(|(n, v)| format!("{n}={v}")).collect();
        parts.reverse();
        parts.push("PA.wam.3=stale".into());
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        assert_eq!(
            read(&request(&refs), "PA.wam").0.as_deref(),
            Some(value.as_str())
        );
        assert!(
            write("PA.wam", &value, 2, Carried(0)).is_none(),
            "over the maximum"
        );
    }

    #[test]
    fn missing_or_malformed_chunks_are_no_value() {
        for cookies in [
            "PA.wam.0=3~a; PA.wam.1=b",
            "PA.wam.1=b; PA.wam.2=c",
            "PA.wam.0=a; PA.wam.1=b",
            "PA.wam.0=1~a",
            "PA.wam.0=99~a; PA.wam.1=b",
            "PA.wam.0=x~a; PA.wam.1=b",
            "PA.wam.00=2~a; PA.wam.1=b",
        ] {
            assert_eq!(read(&request(&[cookies]), "PA.wam").0, None, "{cookies}");
        }
        assert_eq!(
            read(
                &request(&["PA.wam=one; PA.wam.0=2~a; PA.wam.1=b"]),
                "PA.wam"
            )
            .0
            .as_deref(),
            Some("one")
        );
    }

    #[test]
    fn the_namespace_is_ours() {
        for n in ["PA.wam", "PA.wam.0", "PA.wam.9", "PA.wam.txn.1", "PA.wam.x"] {
            assert!(is_ours(n, "PA.wam"), "{n}");
        }
        for n in ["PA.wamx", "PA.wa", "other", "PA.wam0"] {
            assert!(!is_ours(n, "PA.wam"), "{n}");
        }
    }
}
