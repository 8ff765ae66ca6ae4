//! Request-path canonicalisation: `envoy_wam::canonical::canonicalize`.
//!
//! If a path is accepted, the decoded form is absolute, has no empty, `.` or `..` segment and
//! no `;`, and canonicalising the wire form again gives the same result (idempotence).
#![no_main]

use envoy_wam::canonical::canonicalize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(c) = canonicalize(raw) else {
        return;
    };
    let decoded: &str = &c.decoded;
    assert!(decoded.starts_with('/'), "{raw:?} -> {decoded:?}");
    assert!(!decoded.contains("//"), "{raw:?} -> {decoded:?}");
    assert!(!decoded.contains(';'), "{raw:?} -> {decoded:?}");
    for segment in decoded.split('/').skip(1) {
        assert!(segment != "." && segment != "..", "{raw:?} -> {decoded:?}");
    }
    assert!(!decoded.contains("/./") && !decoded.contains("/../"));
    assert!(!decoded.ends_with("/.") && !decoded.ends_with("/.."));

    let wire: &str = &c.wire;
    let again =
        canonicalize(wire).unwrap_or_else(|e| panic!("{raw:?} -> wire {wire:?} refused: {e:?}"));
    assert_eq!(&*again.decoded, decoded, "{raw:?} -> wire {wire:?}");
    assert_eq!(&*again.wire, wire, "{raw:?} -> wire {wire:?}");
    let _ = &c.iis_trimmed;
});
