//! Arbitrary header lines as the client-address headers a trusted proxy forwards.
//!
//! The input's first byte picks the number of trusted hops (0 to 6, or one past the most a
//! config allows); the rest, split at `\n`, gives the header lines. Each line goes to
//! `Forwarded`, `X-Forwarded-For` and `X-Real-IP` alike (lines `HeaderValue` refuses are
//! skipped). Checks, on the reader the request layer uses (`client_from_headers`, through
//! `__fuzz`):
//! - it never panics, whatever the lines and the hops;
//! - `none` never names a client, and `X-Real-IP` ignores the hops;
//! - reading stops at the chosen entry: a line added before the others (so its entries lie left
//!   of every other entry) never changes an address that was found.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_connlimit::__fuzz::client_from_headers;
use tower_connlimit::ClientIpHeader;

const HEADERS: [(ClientIpHeader, &str); 3] = [
    (ClientIpHeader::Forwarded, "forwarded"),
    (ClientIpHeader::XForwardedFor, "x-forwarded-for"),
    (ClientIpHeader::XRealIp, "x-real-ip"),
];

/// `lines` as lines of header `name`, after `first` if there is one.
fn headers(name: &'static str, first: Option<&[u8]>, lines: &[&[u8]]) -> HeaderMap {
    let name = HeaderName::from_static(name);
    let mut map = HeaderMap::new();
    for line in first.into_iter().chain(lines.iter().copied()) {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            map.append(name.clone(), value);
        }
    }
    map
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // 0 to 6 hops, or one past the most a config allows (64).
    let hops = match first % 8 {
        7 => 65,
        n => usize::from(n),
    };
    let lines: Vec<&[u8]> = rest.split(|&b| b == b'\n').take(8).collect();
    for (header, name) in HEADERS {
        let map = headers(name, None, &lines);
        let found = client_from_headers(&map, header, hops);
        assert_eq!(client_from_headers(&map, ClientIpHeader::None, hops), None);
        if header == ClientIpHeader::XRealIp {
            assert_eq!(
                found,
                client_from_headers(&map, header, 1),
                "hops are ignored"
            );
        } else if found.is_some() {
            let earlier = b"for=192.0.2.99, 192.0.2.99, \"for=[2001:db8::99]\"";
            let widened = headers(name, Some(earlier), &lines);
            assert_eq!(
                client_from_headers(&widened, header, hops),
                found,
                "a line left of the chosen entry changed the answer"
            );
        }
    }
});
