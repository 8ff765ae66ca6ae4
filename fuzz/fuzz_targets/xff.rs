//! The client address from the downstream address and `X-Forwarded-For`.
//!
//! Input: `<hops byte><downstream>\n<xff>`; no `\n` means no `X-Forwarded-For` header, an
//! empty downstream part means no downstream address.
#![no_main]

use envoy_wam::policy::client_ip;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&hops, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (downstream, xff) = match text.split_once('\n') {
        Some((d, x)) => (d, Some(x)),
        None => (text, None),
    };
    let downstream = (!downstream.is_empty()).then_some(downstream);

    let ip = client_ip(downstream, xff, hops);

    if hops == 0 {
        // No trusted proxy: whatever the client writes in X-Forwarded-For does not count.
        assert_eq!(ip, client_ip(downstream, None, 0));
        assert_eq!(
            ip,
            client_ip(downstream, Some("203.0.113.9, 198.51.100.7"), 0)
        );
        assert_eq!(ip, client_ip(downstream, Some(text), 0));
        if ip.is_some() {
            assert!(downstream.is_some());
        }
        return;
    }
    // Trusted proxies: only the N-th entry from the right counts; the downstream address is
    // the last proxy and does not matter.
    assert_eq!(ip, client_ip(None, xff, hops));
    assert_eq!(ip, client_ip(Some("192.0.2.1:1234"), xff, hops));
    if let Some(xff) = xff {
        let entries = xff.split(',').count();
        if ip.is_some() {
            assert!(entries >= usize::from(hops));
        }
        if entries >= usize::from(hops) {
            // Entries the client adds on the left (before the proxies append theirs) change
            // nothing.
            let spoofed = format!("10.0.0.1, 127.0.0.1,{xff}");
            assert_eq!(ip, client_ip(downstream, Some(&spoofed), hops));
        }
    } else {
        assert_eq!(ip, None);
    }
});
