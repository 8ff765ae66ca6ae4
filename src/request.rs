//! A request as the core sees it: every header the client sent, read from the host in one go.
//!
//! This sits below the policy, the flow and the hosts, so that all of them share one idea of
//! what a request carried. Headers are kept as received (lower-case names, raw bytes, repeats
//! in order), because the attacks a gateway must stop live in exactly those details: a second
//! `Cookie` header, a value that is not UTF-8, `x_wam_user` for `x-wam-user`.

use std::ops::Range;

/// Where the core reads a request from.
pub trait HeaderSource {
    /// Every header as received: lower-case names, raw values, repeats kept, pseudo-headers
    /// (`:path`, `:authority`, `:method`, `:scheme`) included.
    fn headers(&self) -> &HeaderList;

    /// The first value of `name`, when it is UTF-8. Headers that must not be repeated are read
    /// with [`HeaderSource::single`] instead.
    fn header(&self, name: &str) -> Option<&str> {
        let (_, v) = self.headers().iter().find(|(n, _)| *n == name)?;
        std::str::from_utf8(v).ok()
    }

    /// The one value of `name`: `Ok(None)` when absent, `Err` when it is repeated or not UTF-8
    /// (a gateway and a backend could each read another copy).
    #[allow(clippy::result_unit_err)]
    fn single(&self, name: &str) -> Result<Option<&str>, ()> {
        self.headers().single(name)
    }

    /// How many times `name` was sent.
    fn count(&self, name: &str) -> usize {
        self.headers().iter().filter(|(n, _)| *n == name).count()
    }

    /// The downstream peer's address as Envoy reports it (`1.2.3.4:5678`, `[::1]:5678`).
    fn client_address(&self) -> Option<String> {
        self.header(":source-address").map(str::to_string)
    }

    /// A microsecond clock for measuring time spent in the filter (audit lines).
    fn now_us(&self) -> u64 {
        0
    }
}

/// A header list held in memory: what the hosts read from Envoy, and what tests build. The
/// values stay in one buffer (for the wasm host, the very bytes Envoy serialized) and the
/// names in one string: a request's headers cost three allocations, not two per header.
#[derive(Debug, Clone, Default)]
pub struct HeaderList {
    /// Every name, lower-case, one after the other.
    names: String,
    values: Vec<u8>,
    /// (name range in `names`, value range in `values`).
    entries: Vec<(Range<usize>, Range<usize>)>,
    /// Where the request line's headers are ([`INDEXED`]), found once when the list is built:
    /// every request reads them, and scanning for repeats each time is what it would cost.
    line: [Slot; 3],
}

/// The headers [`HeaderList`] indexes.
const INDEXED: [&str; 3] = [":path", ":method", ":authority"];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Slot {
    #[default]
    Absent,
    At(usize),
    Repeated,
}

impl HeaderList {
    /// An empty list with room for `count` headers whose names and values take `names` and
    /// `values` bytes: a host that knows them fills it without growing it.
    pub fn with_capacity(count: usize, names: usize, values: usize) -> Self {
        Self {
            names: String::with_capacity(names),
            values: Vec::with_capacity(values),
            entries: Vec::with_capacity(count),
            ..Self::default()
        }
    }

    pub fn new<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut list = Self::default();
        for (n, v) in headers {
            list.push(n, v.as_bytes());
        }
        list
    }

    /// A header map as proxy-wasm serializes it (`proxy_get_header_map_pairs`), values kept in
    /// place: a little-endian u32 count, then a (name length, value length) u32 pair per
    /// header, then each name and value followed by a NUL. `None` when the bytes do not add
    /// up. Names that are not UTF-8 (which no HTTP codec lets through) are kept lossily.
    pub fn from_serialized(buf: Vec<u8>) -> Option<Self> {
        if buf.is_empty() {
            return Some(Self::default());
        }
        let count = u32_at(&buf, 0)?;
        let mut data = count.checked_mul(8)?.checked_add(4)?;
        if data > buf.len() {
            return None;
        }
        let mut list = Self {
            entries: Vec::with_capacity(count),
            ..Self::default()
        };
        for i in 0..count {
            let (name_len, value_len) = (u32_at(&buf, 4 + i * 8)?, u32_at(&buf, 8 + i * 8)?);
            let name = buf.get(data..data.checked_add(name_len)?)?;
            data = data.checked_add(name_len)?.checked_add(1)?;
            let value = data..data.checked_add(value_len)?;
            data = value.end.checked_add(1)?;
            if value.end > buf.len() {
                return None;
            }
            let start = list.names.len();
            match std::str::from_utf8(name) {
                Ok(name) => list.names.push_str(name),
                Err(_) => list.names.push_str(&String::from_utf8_lossy(name)),
            }
            list.names.get_mut(start..)?.make_ascii_lowercase();
            list.entries.push((start..list.names.len(), value));
            list.index(list.entries.len() - 1);
        }
        list.values = buf;
        Some(list)
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        let name_start = self.names.len();
        // Lower-cased in place: no allocation per header (the native host pushes every one).
        self.names.push_str(name);
        if let Some(added) = self.names.get_mut(name_start..) {
            added.make_ascii_lowercase();
        }
        let value_start = self.values.len();
        self.values.extend_from_slice(value);
        self.entries
            .push((name_start..self.names.len(), value_start..self.values.len()));
        self.index(self.entries.len() - 1);
    }

    fn entry(&self, (n, v): &(Range<usize>, Range<usize>)) -> (&str, &[u8]) {
        (
            self.names.get(n.clone()).unwrap_or_default(),
            self.values.get(v.clone()).unwrap_or_default(),
        )
    }

    /// Every header in order: (lower-case name, raw value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + Clone + '_ {
        self.entries.iter().map(|e| self.entry(e))
    }

    /// The headers as owned pairs (tests, tools).
    pub fn to_vec(&self) -> Vec<(String, Vec<u8>)> {
        self.iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    #[allow(clippy::result_unit_err)]
    pub fn single(&self, name: &str) -> Result<Option<&str>, ()> {
        let value = match INDEXED.iter().position(|n| *n == name) {
            Some(k) => match self.line.get(k).copied().unwrap_or_default() {
                Slot::Absent => return Ok(None),
                Slot::Repeated => return Err(()),
                Slot::At(i) => self.entries.get(i).map(|e| self.entry(e).1),
            },
            None => {
                let mut values = self.iter().filter(|(n, _)| *n == name);
                let first = values.next();
                if values.next().is_some() {
                    return Err(());
                }
                first.map(|(_, v)| v)
            }
        };
        value
            .map(|v| std::str::from_utf8(v).map_err(|_| ()))
            .transpose()
    }

    fn index(&mut self, at: usize) {
        let Some(name) = self.entries.get(at).map(|e| self.entry(e).0) else {
            return;
        };
        if let Some(k) = INDEXED.iter().position(|n| *n == name) {
            if let Some(slot) = self.line.get_mut(k) {
                *slot = match slot {
                    Slot::Absent => Slot::At(at),
                    _ => Slot::Repeated,
                };
            }
        }
    }
}

impl HeaderSource for HeaderList {
    fn headers(&self) -> &HeaderList {
        self
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Option<usize> {
    let b = <[u8; 4]>::try_from(bytes.get(at..at.checked_add(4)?)?).ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

/// Whether query parameter name `name` (decoded) reads as `want` to some backend: names are
/// compared without case (ASP.NET), without leading spaces and with ` `, `.` and `[` read as
/// `_` (PHP), and without array brackets (`tenant[]`, `[tenant]`: PHP and Rack).
pub fn query_name_eq(name: &str, want: &str) -> bool {
    let name = name.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let name = name.strip_suffix("[]").unwrap_or(name);
    let name = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(inner) => inner,
        None => name,
    };
    let fold = |c: u8| match c {
        b' ' | b'.' | b'[' => b'_',
        c => c.to_ascii_lowercase(),
    };
    name.len() == want.len()
        && name
            .bytes()
            .zip(want.bytes())
            .all(|(a, b)| fold(a) == fold(b))
}

/// Whether a backend that reads headers CGI-style (`_` and `-` alike, any case) reads `a` and
/// `b` as one header: [`dashed_eq`] both ways, for names that may each have either.
pub fn cgi_eq(a: &str, b: &str) -> bool {
    let norm = |c: u8| match c {
        b'_' => b'-',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

/// Whether header name `name` reads as `want` (lower-case, with dashes) to a backend that
/// folds case and reads `_` as `-`. Allocates nothing: it runs over every header.
pub fn dashed_eq(name: &str, want: &str) -> bool {
    name.len() == want.len()
        && name
            .bytes()
            .zip(want.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_refuses_repeats_and_non_utf8() {
        let mut h = HeaderList::new([("Authorization", "Bearer a"), ("x", "1")]);
        assert_eq!(h.single("authorization"), Ok(Some("Bearer a")));
        assert_eq!(h.single("absent"), Ok(None));
        h.push("authorization", b"Bearer b");
        assert_eq!(h.single("authorization"), Err(()));
        h.push("y", b"\xff");
        assert_eq!(h.single("y"), Err(()));
        assert_eq!(h.header("y"), None);
        assert_eq!(h.count("authorization"), 2);
    }

    #[test]
    fn parses_the_host_serialization() {
        let mut b = Vec::new();
        b.extend(2u32.to_le_bytes());
        for (n, v) in [(5u32, 1u32), (6, 2)] {
            b.extend(n.to_le_bytes());
            b.extend(v.to_le_bytes());
        }
        b.extend(b":path\0/\0cookie\0\xff\x01\0");
        let map = HeaderList::from_serialized(b.clone()).unwrap().to_vec();
        assert_eq!(map[0], (":path".to_string(), b"/".to_vec()));
        assert_eq!(map[1], ("cookie".to_string(), vec![0xff, 1]));
        let parse = |b: &[u8]| HeaderList::from_serialized(b.to_vec()).map(|l| l.to_vec());
        assert_eq!(parse(&b[..b.len() - 2]), None);
        assert_eq!(parse(&[1, 0, 0]), None);
        assert_eq!(parse(&[255, 255, 255, 255]), None);
        assert_eq!(parse(&[]), Some(vec![]));
        // Names are lower-cased in place; one that is not UTF-8 is kept lossily.
        let mut b = Vec::new();
        b.extend(1u32.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        b.extend(b"X\xffA\0v\0");
        let list = HeaderList::from_serialized(b).unwrap();
        assert_eq!(
            list.to_vec(),
            vec![("x\u{fffd}a".to_string(), b"v".to_vec())]
        );
    }

    #[test]
    fn underscored_names() {
        assert!(dashed_eq("X_Wam_user", "x-wam-user"));
        for spelling in ["tenant", "TENANT", " tenant", "tenant[]", "[tenant]"] {
            assert!(query_name_eq(spelling, "tenant"), "{spelling}");
        }
        for spelling in ["_method", ".method", "[method", " _METHOD"] {
            assert!(query_name_eq(spelling, "_method"), "{spelling}");
        }
        assert!(!query_name_eq("tenants", "tenant"));
        assert!(dashed_eq("X_HTTP-Method", "x-http-method"));
        assert!(!dashed_eq("x-http-methods", "x-http-method"));
    }
}
