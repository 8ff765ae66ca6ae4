//! A request as the core sees it: every header the client sent, read from the host in one go.
//!
//! This sits below the policy, the flow and the hosts, so that all of them share one idea of
//! what a request carried. Headers are kept as received (lower-case names, raw bytes, repeats
//! in order), because the attacks a gateway must stop live in exactly those details: a second
//! `Cookie` header, a value that is not UTF-8, `x_wam_user` for `x-wam-user`.

/// Where the core reads a request from.
pub trait HeaderSource {
    /// Every header as received: lower-case names, raw values, repeats kept, pseudo-headers
    /// (`:path`, `:authority`, `:method`, `:scheme`) included.
    fn pairs(&self) -> &[(String, Vec<u8>)];

    /// The first value of `name`, when it is UTF-8. Headers that must not be repeated are read
    /// with [`HeaderSource::single`] instead.
    fn header(&self, name: &str) -> Option<&str> {
        let (_, v) = self.pairs().iter().find(|(n, _)| n == name)?;
        std::str::from_utf8(v).ok()
    }

    /// The one value of `name`: `Ok(None)` when absent, `Err` when it is repeated or not UTF-8
    /// (a gateway and a backend could each read another copy).
    #[allow(clippy::result_unit_err)]
    fn single(&self, name: &str) -> Result<Option<&str>, ()> {
        let mut values = self.pairs().iter().filter(|(n, _)| n == name);
        let Some((_, first)) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(());
        }
        std::str::from_utf8(first).map(Some).map_err(|_| ())
    }

    /// How many times `name` was sent.
    fn count(&self, name: &str) -> usize {
        self.pairs().iter().filter(|(n, _)| n == name).count()
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

/// A header list held in memory: what the hosts read from Envoy, and what tests build.
#[derive(Debug, Clone, Default)]
pub struct HeaderList(Vec<(String, Vec<u8>)>);

impl HeaderList {
    pub fn new<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            headers
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    /// Headers with raw values (not necessarily UTF-8); names are lower-cased.
    pub fn from_bytes(headers: Vec<(String, Vec<u8>)>) -> Self {
        Self(
            headers
                .into_iter()
                .map(|(mut n, v)| {
                    n.make_ascii_lowercase();
                    (n, v)
                })
                .collect(),
        )
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.0.push((name.to_ascii_lowercase(), value.to_vec()));
    }
}

impl HeaderSource for HeaderList {
    fn pairs(&self) -> &[(String, Vec<u8>)] {
        &self.0
    }
}

/// Parses a header map as proxy-wasm serializes it (`proxy_get_header_map_pairs`): a
/// little-endian u32 count, then a (name length, value length) u32 pair per header, then
/// each name and value followed by a NUL. `None` when the bytes do not add up. Names that are
/// not UTF-8 (which no HTTP codec lets through) are kept lossily.
pub fn parse_header_map(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let u32_at = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at.checked_add(4)?)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok()
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = u32_at(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let sizes = 4 + i * 8;
        let (name_len, value_len) = (u32_at(sizes)?, u32_at(sizes + 4)?);
        let name = bytes.get(data..data.checked_add(name_len)?)?;
        data = data.checked_add(name_len)?.checked_add(1)?;
        let value = bytes.get(data..data.checked_add(value_len)?)?;
        data = data.checked_add(value_len)?.checked_add(1)?;
        out.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
    }
    Some(out)
}

/// A header name as CGI, WSGI, PHP and Rack backends read it: lower-case with `_` for `-`
/// (they all map both to `HTTP_X_NAME`). `None` when the name has no `_`, the common case.
pub fn dashed_if_underscored(name: &str) -> Option<String> {
    name.contains('_')
        .then(|| name.to_ascii_lowercase().replace('_', "-"))
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
        let map = parse_header_map(&b).unwrap();
        assert_eq!(map[0], (":path".to_string(), b"/".to_vec()));
        assert_eq!(map[1], ("cookie".to_string(), vec![0xff, 1]));
        assert_eq!(parse_header_map(&b[..b.len() - 2]), None);
        assert_eq!(parse_header_map(&[1, 0, 0]), None);
        assert_eq!(parse_header_map(&[255, 255, 255, 255]), None);
        assert_eq!(parse_header_map(&[]), Some(vec![]));
    }

    #[test]
    fn underscored_names() {
        assert_eq!(dashed_if_underscored("x-wam-user"), None);
        assert_eq!(
            dashed_if_underscored("X_Wam_user").as_deref(),
            Some("x-wam-user")
        );
        assert!(dashed_eq("X_HTTP-Method", "x-http-method"));
        assert!(!dashed_eq("x-http-methods", "x-http-method"));
    }
}
