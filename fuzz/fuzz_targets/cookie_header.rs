//! `Cookie` header parsing: `pairs`, `get` and `without` on arbitrary text.
//!
//! Input: `<names>\n<header>`; `<names>` is a `\t`-separated list of the cookie names the
//! gateway calls its own (plus, as in the filter, every name starting with the first one
//! followed by `.txn.`).
#![no_main]

use envoy_wam::cookie::{get, pairs, without};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (names, header) = text.split_once('\n').unwrap_or(("PA.wam", text));
    let ours: Vec<&str> = names.split('\t').collect();
    let txn_prefix = format!("{}.txn.", ours[0]);
    let is_ours = |n: &str| ours.contains(&n) || n.starts_with(&txn_prefix);

    let all: Vec<(&str, &str)> = pairs(header).collect();
    for (i, &(name, value)) in all.iter().enumerate() {
        assert!(!name.is_empty(), "empty name from {header:?}");
        assert_eq!(name, name.trim());
        assert!(!name.contains(';') && !value.contains(';'));
        // get() finds a value pairs() yields: the first one with that name.
        let first = all.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(get(header, name), first, "get({name:?}) in {header:?}");
        if all[..i].iter().all(|(n, _)| *n != name) {
            assert_eq!(get(header, name), Some(value));
        }
    }
    for name in &ours {
        if all.iter().all(|(n, _)| n != name) {
            assert_eq!(get(header, name), None);
        }
    }

    let kept_pairs: Vec<(&str, &str)> = all.iter().copied().filter(|(n, _)| !is_ours(n)).collect();
    match without(header, is_ours) {
        // Nothing of ours: the header goes upstream as it is.
        None => assert!(
            all.iter().all(|(n, _)| !is_ours(n)),
            "without() kept {header:?} although it has our cookies"
        ),
        Some(None) => assert!(
            kept_pairs.is_empty(),
            "without() dropped everything from {header:?}"
        ),
        Some(Some(rest)) => {
            assert!(!rest.is_empty());
            let left: Vec<(&str, &str)> = pairs(&rest).collect();
            for (n, _) in &left {
                assert!(
                    !is_ours(n),
                    "without() left {n:?} in {rest:?} (from {header:?})"
                );
            }
            // Everything else is kept, in order, as the backend would read it.
            assert_eq!(left, kept_pairs, "{header:?} -> {rest:?}");
            // Nothing of ours left: a second pass has nothing to do.
            assert_eq!(without(&rest, is_ours), None);
        }
    }
});
