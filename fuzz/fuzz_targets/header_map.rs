//! The request's header map as the wasm host reads it from Envoy (`HeaderList::from_serialized`):
//! arbitrary bytes never panic, every name comes out lower-case, and the request-line lookups
//! agree with a plain scan of the list.
#![no_main]

use envoy_wam::request::HeaderList;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(list) = HeaderList::from_serialized(data.to_vec()) else {
        return;
    };
    for (name, _) in list.iter() {
        assert!(!name.bytes().any(|c| c.is_ascii_uppercase()), "{name:?}");
    }
    for name in [":path", ":method", ":authority", "cookie"] {
        let copies: Vec<&[u8]> = list.iter().filter(|(n, _)| *n == name).map(|(_, v)| v).collect();
        let expected = match copies.as_slice() {
            [] => Ok(None),
            [one] => std::str::from_utf8(one).map(Some).map_err(|_| ()),
            _ => Err(()),
        };
        assert_eq!(list.single(name), expected, "{name}");
    }
});
