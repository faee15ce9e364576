//! Client addresses named by trusted proxies in request headers.
//!
//! When the socket peer of a request is a trusted proxy, the address that matters for limits is
//! the one the proxy saw, which it passes on in a request header. This module holds the pure
//! parsing: [`client_from_headers`] picks that address out of a [`HeaderMap`], given which header
//! to read and how many trusted proxies stand in front of the server. Checking that the peer is
//! trusted, and what to do when no address is found, is the caller's business.
//!
//! # Why read from the right
//!
//! `X-Forwarded-For` and `Forwarded` are lists that every proxy on the way appends to, on the
//! same header line or on a new one. The left part of the list is whatever the client sent, and a
//! client can send anything: a hostile one writes `X-Forwarded-For: 6.6.6.6` to be counted as
//! somebody else, or a fresh address on every request to escape its limit. Only the entries
//! appended by proxies we trust are believable, and those are the rightmost ones: with `hops`
//! trusted proxies, the last `hops` entries were written by them, and the entry `hops` from the
//! right is the address the outermost trusted proxy saw connecting to it: the client.
//!
//! So the parsing runs from the right and stops as soon as it has that entry: header lines are
//! taken last first, and each line is split from its end, over its raw bytes. Nothing left of the
//! chosen entry is ever read. That matters as much as not believing it: if anything the client
//! wrote could make the header unusable (too many entries, a byte that is not visible ASCII, an
//! unterminated quoted string in `Forwarded`), the client could make every request name no
//! address, and the caller would then count it under the proxy's address, escaping its own limit
//! and crowding out every honest client behind the same proxy. Reading from the right, only the
//! chosen entry and the entries right of it, which the trusted proxies wrote, have to be well
//! formed. The leftmost entry is never taken just because it is leftmost either: too few entries
//! means a proxy is missing or misconfigured, and the answer is "no address", not a guess.
//!
//! The work per request is bounded by `hops` (at most [`MAX_TRUSTED_HOPS`] entries, and as many
//! header lines) plus the bytes of those entries, however long the header is.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderMap, HeaderName};

use super::{ClientIpHeader, MAX_TRUSTED_HOPS};

const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The client address that trusted proxies name in `headers`, read as `header` says, with
/// `hops` trusted proxies in front of the server.
///
/// The caller has already checked that the socket peer is a trusted proxy. `None` when the
/// header names no usable address: see [`ClientIpHeader`] for the rules. `hops` must be between
/// 1 and [`MAX_TRUSTED_HOPS`] (as configuration checks); any other value names no entry.
/// IPv4-mapped IPv6 addresses are returned as they are.
///
/// Lines and entries are read from the right, and reading stops at the chosen entry: what lies
/// left of it cannot change the answer. The work is bounded by `hops` plus the bytes of the
/// entries read. Never panics, and allocates nothing.
pub(crate) fn client_from_headers(
    headers: &HeaderMap,
    header: ClientIpHeader,
    hops: usize,
) -> Option<IpAddr> {
    match header {
        ClientIpHeader::None => None,
        ClientIpHeader::XForwardedFor => {
            let entry = nth_from_right(headers, &X_FORWARDED_FOR, hops, |line| {
                // Every comma splits: quotes mean nothing in `X-Forwarded-For`.
                Some(line.iter().rposition(|&b| b == b','))
            })?;
            parse_node(entry.trim())
        }
        ClientIpHeader::Forwarded => {
            let element =
                nth_from_right(headers, &FORWARDED, hops, |line| last_unquoted(line, b','))?;
            forwarded_for(element)
        }
        ClientIpHeader::XRealIp => {
            let last = headers.get_all(&X_REAL_IP).iter().next_back()?;
            parse_node(visible_ascii(last.as_bytes())?.trim())
        }
    }
}

/// The entry `hops` from the right (1 is the last) of the list made of all lines of header
/// `name`, in order. `last_separator` gives the position of the last separator in a line (or
/// what is left of one), `Some(None)` if it has none, or `None` if the line cannot be split.
///
/// Lines are taken last first and split from their end, stopping at the chosen entry, so
/// nothing left of it is read. `None` if there are fewer than `hops` entries, `hops` is 0 or
/// more than [`MAX_TRUSTED_HOPS`], a line cannot be split before the chosen entry is found, or
/// the chosen entry or one right of it is not visible ASCII.
fn nth_from_right<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    hops: usize,
    last_separator: impl Fn(&[u8]) -> Option<Option<usize>>,
) -> Option<&'a str> {
    if hops == 0 || hops > MAX_TRUSTED_HOPS {
        return None;
    }
    let mut remaining = hops;
    // Every line holds at least one entry, so at most `hops` lines are looked at.
    for line in headers.get_all(name).iter().rev() {
        let mut rest = line.as_bytes();
        loop {
            let separator = last_separator(rest)?;
            let entry = match separator {
                Some(at) => rest.get(at + 1..)?,
                None => rest,
            };
            let entry = visible_ascii(entry)?;
            remaining -= 1;
            if remaining == 0 {
                return Some(entry);
            }
            match separator {
                Some(at) => rest = rest.get(..at)?,
                None => break,
            }
        }
    }
    None
}

/// `bytes` as a string, if they are all visible ASCII or tabs (what
/// [`HeaderValue::to_str`](http::HeaderValue::to_str) accepts).
fn visible_ascii(bytes: &[u8]) -> Option<&str> {
    if bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// The address of a `Forwarded` element's `for=` parameter; `None` if it has none, has it
/// twice, has a pair without `=`, or its value is not an address.
///
/// `element` has balanced quotes: [`last_unquoted`] found its left end outside any quoted string.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let mut value = None;
    let mut rest = Some(element);
    while let Some(pairs) = rest {
        let pair = match last_unquoted(pairs.as_bytes(), b';')? {
            Some(at) => {
                // `;` is ASCII, so both sides of it are char boundaries.
                rest = pairs.get(..at);
                pairs.get(at + 1..)?
            }
            None => {
                rest = None;
                pairs
            }
        };
        let pair = pair.trim();
        if pair.is_empty() {
            // `for=1.2.3.4;` and `;;` are allowed by the grammar: empty pairs.
            continue;
        }
        let (name, pair_value) = pair.split_once('=')?;
        if name.trim_end().eq_ignore_ascii_case("for") && value.replace(pair_value).is_some() {
            // RFC 7239 forbids a parameter twice in one element; which one would be the truth?
            return None;
        }
    }
    parse_node(unquote(value?.trim_start())?)
}

/// A `Forwarded` parameter value without its quotes, if quoted. `None` for a quoted string with
/// backslash escapes (an address never needs them) or a stray quote.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => {
            let inner = rest.strip_suffix('"')?;
            (!inner.contains(['"', '\\'])).then_some(inner)
        }
        None => (!value.contains('"')).then_some(value),
    }
}

/// The address in one list entry: `1.2.3.4`, `1.2.3.4:port`, `2001:db8::1`, `[2001:db8::1]` or
/// `[2001:db8::1]:port`, where the port may be RFC 7239's obfuscated `_port`. Anything else,
/// including `unknown` and obfuscated `_node` identifiers, is `None`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Some(rest) = node.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        if !after.is_empty() && !valid_port(after.strip_prefix(':')?) {
            return None;
        }
        return host.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = node.split_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A decimal port (at most 65535) or an RFC 7239 obfuscated port (`_` then letters, digits,
/// `.`, `_` or `-`).
fn valid_port(port: &str) -> bool {
    match port.strip_prefix('_') {
        Some(obfuscated) => {
            !obfuscated.is_empty()
                && obfuscated
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        None => {
            !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
                && port.parse::<u16>().is_ok()
        }
    }
}

/// The position of the last `sep` in `bytes` that is outside any quoted string, scanning from
/// the end: `Some(None)` if there is none, `None` if the scan reaches the start of `bytes`
/// inside a quoted string (an unterminated one).
///
/// Only the bytes right of the returned `sep` are read, plus, for a quote inside a quoted
/// string, the run of backslashes just before it: an odd number of them escapes it, an even
/// number are escaped backslashes, and the quote opens the string. On well-formed input this
/// agrees with reading RFC 7230 quoted strings from the left.
fn last_unquoted(bytes: &[u8], sep: u8) -> Option<Option<usize>> {
    let mut in_quotes = false;
    for (at, &b) in bytes.iter().enumerate().rev() {
        if in_quotes {
            if b == b'"' {
                let before = bytes.get(..at)?;
                let backslashes = before.iter().rev().take_while(|&&b| b == b'\\').count();
                in_quotes = backslashes % 2 == 1;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == sep {
            return Some(Some(at));
        }
    }
    (!in_quotes).then_some(None)
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    fn headers(name: &'static str, lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(
                name,
                HeaderValue::from_str(line).expect("valid header value"),
            );
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("valid test address"))
    }

    fn xff(lines: &[&str], hops: usize) -> Option<IpAddr> {
        client_from_headers(
            &headers("x-forwarded-for", lines),
            ClientIpHeader::XForwardedFor,
            hops,
        )
    }

    fn fwd(lines: &[&str], hops: usize) -> Option<IpAddr> {
        client_from_headers(
            &headers("forwarded", lines),
            ClientIpHeader::Forwarded,
            hops,
        )
    }

    fn real(lines: &[&str], hops: usize) -> Option<IpAddr> {
        client_from_headers(&headers("x-real-ip", lines), ClientIpHeader::XRealIp, hops)
    }

    const ALL: [ClientIpHeader; 4] = ClientIpHeader::ALL;

    // ---- None ----

    #[test]
    fn none_ignores_every_header() {
        let mut map = headers("x-forwarded-for", &["1.2.3.4"]);
        map.append("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        map.append("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        assert_eq!(client_from_headers(&map, ClientIpHeader::None, 1), None);
    }

    #[test]
    fn missing_header_is_none() {
        let map = headers("x-other", &["1.2.3.4"]);
        for header in ALL {
            assert_eq!(client_from_headers(&map, header, 1), None, "{header}");
        }
    }

    #[test]
    fn other_header_not_read() {
        let map = headers("x-forwarded-for", &["1.2.3.4"]);
        assert_eq!(
            client_from_headers(&map, ClientIpHeader::Forwarded, 1),
            None
        );
        assert_eq!(client_from_headers(&map, ClientIpHeader::XRealIp, 1), None);
    }

    // ---- X-Forwarded-For ----

    #[test]
    fn xff_single() {
        assert_eq!(xff(&["1.2.3.4"], 1), ip("1.2.3.4"));
        assert_eq!(xff(&["  1.2.3.4  "], 1), ip("1.2.3.4"));
    }

    #[test]
    fn xff_hops_count_from_right() {
        let line = ["1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4"];
        assert_eq!(xff(&line, 1), ip("4.4.4.4"));
        assert_eq!(xff(&line, 2), ip("3.3.3.3"));
        assert_eq!(xff(&line, 3), ip("2.2.2.2"));
        assert_eq!(xff(&line, 4), ip("1.1.1.1"));
        assert_eq!(xff(&line, 5), None);
    }

    #[test]
    fn xff_too_few_entries_never_falls_back_to_leftmost() {
        assert_eq!(xff(&["1.2.3.4"], 2), None);
        assert_eq!(xff(&["1.2.3.4, 5.6.7.8"], 3), None);
        assert_eq!(xff(&["1.2.3.4", "5.6.7.8"], 3), None);
    }

    #[test]
    fn xff_zero_or_huge_hops() {
        assert_eq!(xff(&["1.2.3.4, 5.6.7.8"], 0), None);
        assert_eq!(xff(&["1.2.3.4"], usize::MAX), None);
        assert_eq!(xff(&["1.2.3.4"], MAX_TRUSTED_HOPS + 1), None);
    }

    #[test]
    fn xff_spoofed_leftmost_ignored() {
        // The client sent `X-Forwarded-For: 6.6.6.6`; the proxy appended the real address.
        assert_eq!(xff(&["6.6.6.6, 203.0.113.7"], 1), ip("203.0.113.7"));
        assert_eq!(xff(&["6.6.6.6", "203.0.113.7"], 1), ip("203.0.113.7"));
        // Two proxies: the outer one appended the client, the inner one the outer proxy.
        assert_eq!(
            xff(&["6.6.6.6, 7.7.7.7, 203.0.113.7, 10.0.0.2"], 2),
            ip("203.0.113.7")
        );
        // Spoofed garbage on the left does not matter either.
        assert_eq!(
            xff(&["garbage, , unknown, 203.0.113.7"], 1),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn xff_multiple_lines_concatenate_in_order() {
        let lines = ["1.1.1.1, 2.2.2.2", "3.3.3.3", "4.4.4.4, 5.5.5.5"];
        assert_eq!(xff(&lines, 1), ip("5.5.5.5"));
        assert_eq!(xff(&lines, 2), ip("4.4.4.4"));
        assert_eq!(xff(&lines, 3), ip("3.3.3.3"));
        assert_eq!(xff(&lines, 4), ip("2.2.2.2"));
        assert_eq!(xff(&lines, 5), ip("1.1.1.1"));
        assert_eq!(xff(&lines, 6), None);
    }

    #[test]
    fn xff_address_forms() {
        assert_eq!(xff(&["1.2.3.4:8080"], 1), ip("1.2.3.4"));
        assert_eq!(xff(&["1.2.3.4:0"], 1), ip("1.2.3.4"));
        assert_eq!(xff(&["1.2.3.4:65535"], 1), ip("1.2.3.4"));
        assert_eq!(xff(&["2001:db8::1"], 1), ip("2001:db8::1"));
        assert_eq!(xff(&["[2001:db8::1]"], 1), ip("2001:db8::1"));
        assert_eq!(xff(&["[2001:db8::1]:443"], 1), ip("2001:db8::1"));
        assert_eq!(xff(&["::1"], 1), ip("::1"));
        assert_eq!(
            xff(&["1.1.1.1, [2001:db8::1]:443, 2.2.2.2:80"], 2),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn xff_ipv4_mapped_returned_as_is() {
        let got = xff(&["::ffff:1.2.3.4"], 1);
        assert_eq!(got, ip("::ffff:1.2.3.4"));
        assert!(matches!(got, Some(IpAddr::V6(_))));
        assert_eq!(xff(&["[::ffff:1.2.3.4]:80"], 1), ip("::ffff:1.2.3.4"));
    }

    #[test]
    fn xff_unbracketed_ipv6_with_port_is_read_as_address() {
        // Ambiguous by nature; documented: a port on IPv6 needs brackets.
        assert_eq!(xff(&["2001:db8::1:80"], 1), ip("2001:db8::1:80"));
    }

    #[test]
    fn xff_chosen_entry_invalid() {
        for bad in [
            "unknown",
            "_hidden",
            "garbage",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "1.2.3.4:",
            "1.2.3.4:99999",
            "1.2.3.4:65536",
            "1.2.3.4:+80",
            "1.2.3.4:-1",
            "1.2.3.4:80:80",
            "1.2.3.4 5.6.7.8",
            "[1.2.3.4]",
            "[1.2.3.4]:80",
            "[2001:db8::1",
            "[2001:db8::1]80",
            "[2001:db8::1]:",
            "[2001:db8::1]:abc",
            "[]",
            "[garbage]",
            "fe80::1%eth0",
            "[fe80::1%25eth0]",
            "\"1.2.3.4\"",
            ":80",
            "localhost",
            "localhost:80",
            "2001:db8::g",
        ] {
            assert_eq!(xff(&[bad], 1), None, "{bad:?}");
            assert_eq!(xff(&[&format!("{bad}, 1.2.3.4")], 2), None, "{bad:?}");
            // A bad entry on the left of the chosen one does not matter.
            assert_eq!(
                xff(&[&format!("{bad}, 1.2.3.4")], 1),
                ip("1.2.3.4"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn xff_empty_entries_count() {
        assert_eq!(xff(&[""], 1), None);
        assert_eq!(xff(&["1.2.3.4,"], 1), None);
        assert_eq!(xff(&["1.2.3.4, "], 2), ip("1.2.3.4"));
        assert_eq!(xff(&["1.2.3.4,,5.6.7.8"], 2), None);
        assert_eq!(xff(&["1.2.3.4,,5.6.7.8"], 3), ip("1.2.3.4"));
        assert_eq!(xff(&["", "5.6.7.8"], 1), ip("5.6.7.8"));
    }

    #[test]
    fn xff_non_ascii_left_of_chosen_entry_ignored() {
        // A separate earlier line the client sent, not even UTF-8.
        let mut map = headers("x-forwarded-for", &["1.1.1.1"]);
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 2.2.2.2").unwrap(),
        );
        map.append("x-forwarded-for", HeaderValue::from_static("3.3.3.3"));
        let get = |hops| client_from_headers(&map, ClientIpHeader::XForwardedFor, hops);
        assert_eq!(get(1), ip("3.3.3.3"));
        assert_eq!(get(2), ip("2.2.2.2"));
        // The chosen entry itself is bad.
        assert_eq!(get(3), None);
        // A bad entry right of the chosen one was written by a "trusted" proxy: unusable.
        assert_eq!(get(4), None);
        assert_eq!(get(5), None);

        // The client's part of the same line the proxy appended to.
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes("6.6.6.6\u{e9}, 203.0.113.7".as_bytes()).unwrap(),
        );
        let get = |hops| client_from_headers(&map, ClientIpHeader::XForwardedFor, hops);
        assert_eq!(get(1), ip("203.0.113.7"));
        assert_eq!(get(2), None);
        let mut map = HeaderMap::new();
        map.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\x80\xffgarbage\"\xfe, 203.0.113.7, 10.0.0.2").unwrap(),
        );
        let get = |hops| client_from_headers(&map, ClientIpHeader::XForwardedFor, hops);
        assert_eq!(get(2), ip("203.0.113.7"));
        assert_eq!(get(1), ip("10.0.0.2"));
        assert_eq!(get(3), None);
    }

    #[test]
    fn xff_non_ascii_chosen_entry_has_no_address() {
        for bytes in [
            "1.2.3.4\u{e9}".as_bytes(),
            "\u{a0}1.2.3.4".as_bytes(),
            b"1.2.3.4\x80",
            b"1.2.\xff3.4",
        ] {
            let mut map = HeaderMap::new();
            map.append("x-forwarded-for", HeaderValue::from_bytes(bytes).unwrap());
            assert_eq!(
                client_from_headers(&map, ClientIpHeader::XForwardedFor, 1),
                None,
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn xff_long_client_list_ignored() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("10.{}.{}.{}", i / 65536, i / 256 % 256, i % 256))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // 1,000 client-supplied entries before the proxy's.
        let line = format!("{}, 203.0.113.7", list(1000));
        assert_eq!(xff(&[&line], 1), ip("203.0.113.7"));
        assert_eq!(xff(&[&line], 2), ip("10.0.3.231"));
        assert_eq!(xff(&[&line], MAX_TRUSTED_HOPS), ip("10.0.3.169"));
        assert_eq!(xff(&[&line, "10.0.0.2"], 2), ip("203.0.113.7"));
        let line = list(1000);
        assert_eq!(xff(&[&line, "203.0.113.7"], 1), ip("203.0.113.7"));
        // Or 1,000 lines, or 100,000 empty entries.
        let lines: Vec<String> = (0..1000)
            .map(|i| format!("10.1.{}.{}", i / 256, i % 256))
            .collect();
        let mut lines: Vec<&str> = lines.iter().map(String::as_str).collect();
        lines.push("203.0.113.7");
        assert_eq!(xff(&lines, 1), ip("203.0.113.7"));
        assert_eq!(xff(&lines, 2), ip("10.1.3.231"));
        let empties = format!("{}203.0.113.7", ",".repeat(100_000));
        assert_eq!(xff(&[&empties], 1), ip("203.0.113.7"));
        assert_eq!(xff(&[&empties], 2), None);
    }

    #[test]
    fn xff_hops_limit() {
        let line = (0..=MAX_TRUSTED_HOPS)
            .map(|i| format!("10.0.0.{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(xff(&[&line], 1), ip("10.0.0.64"));
        assert_eq!(xff(&[&line], MAX_TRUSTED_HOPS), ip("10.0.0.1"));
        // More hops than configuration allows names nothing, however many entries there are.
        assert_eq!(xff(&[&line], MAX_TRUSTED_HOPS + 1), None);
    }

    // ---- Forwarded ----

    #[test]
    fn fwd_token_and_quoted() {
        assert_eq!(fwd(&["for=1.2.3.4"], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&["for=\"1.2.3.4\""], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&["for=\"1.2.3.4:80\""], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&["for=\"[2001:db8::1]\""], 1), ip("2001:db8::1"));
        assert_eq!(fwd(&["for=\"[2001:db8::1]:4711\""], 1), ip("2001:db8::1"));
        assert_eq!(fwd(&["for=\"[::ffff:1.2.3.4]\""], 1), ip("::ffff:1.2.3.4"));
    }

    #[test]
    fn fwd_lenient_unquoted_forms() {
        // Not valid tokens, but unambiguous; the value was written by a trusted proxy.
        assert_eq!(fwd(&["for=1.2.3.4:80"], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&["for=2001:db8::1"], 1), ip("2001:db8::1"));
        assert_eq!(fwd(&["for=[2001:db8::1]:4711"], 1), ip("2001:db8::1"));
        assert_eq!(fwd(&["for = 1.2.3.4"], 1), ip("1.2.3.4"));
    }

    #[test]
    fn fwd_parameter_name_case_insensitive() {
        assert_eq!(fwd(&["FOR=1.2.3.4"], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&["For=\"1.2.3.4\""], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&["proto=https;fOr=1.2.3.4"], 1), ip("1.2.3.4"));
        assert_eq!(
            fwd(&["BY=1.1.1.1;FOR=1.2.3.4;PROTO=http"], 1),
            ip("1.2.3.4")
        );
    }

    #[test]
    fn fwd_other_parameters() {
        assert_eq!(
            fwd(&["for=192.0.2.60;proto=http;by=203.0.113.43"], 1),
            ip("192.0.2.60")
        );
        assert_eq!(
            fwd(
                &["proto=https; by=\"[2001:db8::2]\" ; for=\"[2001:db8::1]\";host=example.com"],
                1
            ),
            ip("2001:db8::1")
        );
        assert_eq!(fwd(&["for=1.2.3.4;"], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&[";;for=1.2.3.4;;"], 1), ip("1.2.3.4"));
        // `by=` is the proxy, never the client.
        assert_eq!(fwd(&["by=1.2.3.4"], 1), None);
        // A parameter whose name merely contains "for" is not `for`.
        assert_eq!(fwd(&["xfor=1.2.3.4"], 1), None);
        assert_eq!(fwd(&["fore=1.2.3.4"], 1), None);
    }

    #[test]
    fn fwd_hops_count_from_right() {
        let line = ["for=1.1.1.1, for=2.2.2.2;proto=https, for=\"[2001:db8::3]:1\", for=4.4.4.4"];
        assert_eq!(fwd(&line, 1), ip("4.4.4.4"));
        assert_eq!(fwd(&line, 2), ip("2001:db8::3"));
        assert_eq!(fwd(&line, 3), ip("2.2.2.2"));
        assert_eq!(fwd(&line, 4), ip("1.1.1.1"));
        assert_eq!(fwd(&line, 5), None);
        assert_eq!(fwd(&line, 0), None);
    }

    #[test]
    fn fwd_too_few_entries() {
        assert_eq!(fwd(&["for=1.2.3.4"], 2), None);
        assert_eq!(fwd(&["for=1.2.3.4, for=5.6.7.8"], 3), None);
        assert_eq!(fwd(&["for=1.2.3.4", "for=5.6.7.8"], 3), None);
    }

    #[test]
    fn fwd_multiple_lines() {
        let lines = [
            "for=1.1.1.1, for=2.2.2.2",
            "for=3.3.3.3",
            "for=4.4.4.4;by=x",
        ];
        assert_eq!(fwd(&lines, 1), ip("4.4.4.4"));
        assert_eq!(fwd(&lines, 2), ip("3.3.3.3"));
        assert_eq!(fwd(&lines, 3), ip("2.2.2.2"));
        assert_eq!(fwd(&lines, 4), ip("1.1.1.1"));
        assert_eq!(fwd(&lines, 5), None);
    }

    #[test]
    fn fwd_spoofed_leftmost_ignored() {
        assert_eq!(fwd(&["for=6.6.6.6, for=203.0.113.7"], 1), ip("203.0.113.7"));
        assert_eq!(
            fwd(&["for=6.6.6.6", "for=203.0.113.7"], 1),
            ip("203.0.113.7")
        );
        assert_eq!(
            fwd(&["for=6.6.6.6;for=7.7.7.7, garbage, for=203.0.113.7"], 1),
            ip("203.0.113.7")
        );
        // A spoofed quoted string full of separators stays one element.
        assert_eq!(
            fwd(
                &["for=\"6.6.6.6, for=7.7.7.7; for=8.8.8.8\", for=203.0.113.7"],
                1
            ),
            ip("203.0.113.7")
        );
        assert_eq!(
            fwd(
                &["for=\"6.6.6.6, for=7.7.7.7; for=8.8.8.8\", for=203.0.113.7"],
                2
            ),
            None
        );
        assert_eq!(
            fwd(
                &["for=\"6.6.6.6, for=7.7.7.7; for=8.8.8.8\", for=203.0.113.7"],
                3
            ),
            None
        );
    }

    #[test]
    fn fwd_quoted_commas_and_semicolons() {
        let line =
            ["for=1.1.1.1;host=\"a,b;c\", by=\"x,y\";for=\"[2001:db8::1]:80\";proto=\"h;t,t\""];
        assert_eq!(fwd(&line, 1), ip("2001:db8::1"));
        assert_eq!(fwd(&line, 2), ip("1.1.1.1"));
        assert_eq!(fwd(&line, 3), None);
        // An escaped quote does not end the string.
        let line = ["host=\"a\\\",b\";for=1.1.1.1, for=2.2.2.2"];
        assert_eq!(fwd(&line, 2), ip("1.1.1.1"));
        assert_eq!(fwd(&line, 1), ip("2.2.2.2"));
        assert_eq!(fwd(&line, 3), None);
    }

    #[test]
    fn fwd_element_without_for_counts_as_a_hop() {
        let line = ["for=1.1.1.1, proto=https, for=3.3.3.3"];
        assert_eq!(fwd(&line, 1), ip("3.3.3.3"));
        assert_eq!(fwd(&line, 2), None);
        assert_eq!(fwd(&line, 3), ip("1.1.1.1"));
        assert_eq!(fwd(&["proto=https"], 1), None);
        assert_eq!(fwd(&["for=1.1.1.1,"], 1), None);
        assert_eq!(fwd(&["for=1.1.1.1,"], 2), ip("1.1.1.1"));
        assert_eq!(fwd(&["for=1.1.1.1,,for=3.3.3.3"], 3), ip("1.1.1.1"));
        assert_eq!(fwd(&[""], 1), None);
    }

    #[test]
    fn fwd_unknown_and_obfuscated() {
        assert_eq!(fwd(&["for=unknown"], 1), None);
        assert_eq!(fwd(&["for=\"unknown\""], 1), None);
        assert_eq!(fwd(&["for=_hidden"], 1), None);
        assert_eq!(fwd(&["for=\"_SEVKISEK\""], 1), None);
        assert_eq!(fwd(&["for=\"unknown:80\""], 1), None);
        // An obfuscated port still leaves a known address.
        assert_eq!(fwd(&["for=\"1.2.3.4:_abc-1.x\""], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&["for=\"[2001:db8::1]:_p\""], 1), ip("2001:db8::1"));
        assert_eq!(fwd(&["for=\"1.2.3.4:_\""], 1), None);
        assert_eq!(fwd(&["for=\"1.2.3.4:_a b\""], 1), None);
        // And `unknown` on the left does not matter.
        assert_eq!(fwd(&["for=unknown, for=1.2.3.4"], 1), ip("1.2.3.4"));
    }

    #[test]
    fn fwd_malformed_element_has_no_address() {
        for bad in [
            "for=",
            "for=\"\"",
            "for=\"1.2.3.4\"x",
            "for=\"1.2\"3.4\"\"",
            "for=\"1.2.3.\\4\"",
            "for=\" 1.2.3.4\"",
            "for=1.2.3.4;for=1.2.3.4",
            "for=1.2.3.4;FOR=5.6.7.8",
            "for=1.2.3.4;garbage",
            "for",
            "=1.2.3.4",
            "for=garbage",
            "for=256.0.0.1",
            "for=1.2.3.4:99999",
            "for=\"[1.2.3.4]\"",
            "for=\"[2001:db8::1\"",
        ] {
            assert_eq!(fwd(&[bad], 1), None, "{bad:?}");
            assert_eq!(
                fwd(&[&format!("{bad}, for=1.2.3.4")], 1),
                ip("1.2.3.4"),
                "{bad:?}"
            );
            assert_eq!(fwd(&[&format!("{bad}, for=1.2.3.4")], 2), None, "{bad:?}");
        }
    }

    #[test]
    fn fwd_unterminated_quote_in_chosen_element() {
        assert_eq!(fwd(&["for=\"1.2.3.4"], 1), None);
        assert_eq!(fwd(&["for=1.2.3.4\""], 1), None);
        assert_eq!(fwd(&["for=\"1.2.3.4\\\""], 1), None);
        // Right of the chosen element, written by a trusted proxy: nothing can be trusted.
        assert_eq!(fwd(&["for=203.0.113.7", "by=\"x"], 2), None);
        assert_eq!(fwd(&["for=203.0.113.7, by=\"x"], 2), None);
        assert_eq!(fwd(&["for=203.0.113.7", "by=\"x"], 1), None);
    }

    #[test]
    fn fwd_unterminated_quote_left_of_chosen_element_ignored() {
        // The client opens a quote and the proxy appends its element to the same line.
        let line = ["for=\"6.6.6.6, for=203.0.113.7"];
        assert_eq!(fwd(&line, 1), ip("203.0.113.7"));
        assert_eq!(fwd(&line, 2), None);
        assert_eq!(fwd(&line, 3), None);
        assert_eq!(
            fwd(&["host=\"a\\\", for=203.0.113.7"], 1),
            ip("203.0.113.7")
        );
        assert_eq!(
            fwd(&["for=1.2.3.4\", for=203.0.113.7"], 1),
            ip("203.0.113.7")
        );
        // The proxy's own element may be quoted.
        assert_eq!(
            fwd(&["for=\"6.6.6.6, for=\"[2001:db8::1]:4711\""], 1),
            ip("2001:db8::1")
        );
        // Two trusted proxies after it.
        assert_eq!(
            fwd(&["by=\"x, for=203.0.113.7, for=10.0.0.2;proto=https"], 2),
            ip("203.0.113.7")
        );
        // Or on a line of its own.
        assert_eq!(
            fwd(&["for=\"6.6.6.6", "for=203.0.113.7"], 1),
            ip("203.0.113.7")
        );
        assert_eq!(fwd(&["for=1.2.3.4\"", "for=5.6.7.8"], 1), ip("5.6.7.8"));
        assert_eq!(fwd(&["for=1.2.3.4\"", "for=5.6.7.8"], 2), None);
    }

    #[test]
    fn fwd_escapes_left_of_chosen_element_ignored() {
        let line = ["for=\"\\\"6.6.6.6, for=7.7.7.7\\\"\", for=203.0.113.7"];
        assert_eq!(fwd(&line, 1), ip("203.0.113.7"));
        // The client's element is one element, and names no address.
        assert_eq!(fwd(&line, 2), None);
        assert_eq!(fwd(&line, 3), None);
        let line = ["for=\"6.6.6.\\6\";host=\"\\\\\", for=203.0.113.7"];
        assert_eq!(fwd(&line, 1), ip("203.0.113.7"));
        assert_eq!(fwd(&line, 2), None);
        // Escaped backslashes before a closing quote.
        let line = ["host=\"a\\\\\\\\\";for=1.1.1.1, for=203.0.113.7"];
        assert_eq!(fwd(&line, 2), ip("1.1.1.1"));
        // Stray backslashes and quotes outside quoted strings, on the client's side.
        let line = ["\\\\\"\\\"\\, for=203.0.113.7"];
        assert_eq!(fwd(&line, 1), ip("203.0.113.7"));
        assert_eq!(fwd(&line, 2), None);
    }

    #[test]
    fn fwd_non_ascii_left_of_chosen_element_ignored() {
        let mut map = headers("forwarded", &["for=1.1.1.1"]);
        map.append(
            "forwarded",
            HeaderValue::from_bytes(b"host=\"\xc3\xa9\"").unwrap(),
        );
        map.append("forwarded", HeaderValue::from_static("for=2.2.2.2"));
        let get = |hops| client_from_headers(&map, ClientIpHeader::Forwarded, hops);
        assert_eq!(get(1), ip("2.2.2.2"));
        assert_eq!(get(2), None);
        assert_eq!(get(3), None);
        // The client's part of the same line.
        let mut map = HeaderMap::new();
        map.append(
            "forwarded",
            HeaderValue::from_bytes(b"for=\"\xff\x80, for=203.0.113.7;proto=https").unwrap(),
        );
        let get = |hops| client_from_headers(&map, ClientIpHeader::Forwarded, hops);
        assert_eq!(get(1), ip("203.0.113.7"));
        assert_eq!(get(2), None);
        // The chosen element itself.
        let mut map = HeaderMap::new();
        map.append(
            "forwarded",
            HeaderValue::from_bytes(b"for=1.2.3.4;host=\"\xc3\xa9\"").unwrap(),
        );
        assert_eq!(
            client_from_headers(&map, ClientIpHeader::Forwarded, 1),
            None
        );
    }

    #[test]
    fn fwd_long_client_list_ignored() {
        let list = |n: usize| {
            (0..n)
                .map(|i| format!("for=10.0.{}.{}", i / 256, i % 256))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let line = format!("{}, for=203.0.113.7", list(1000));
        assert_eq!(fwd(&[&line], 1), ip("203.0.113.7"));
        assert_eq!(fwd(&[&line], 2), ip("10.0.3.231"));
        assert_eq!(fwd(&[&line], MAX_TRUSTED_HOPS), ip("10.0.3.169"));
        assert_eq!(fwd(&[&line], MAX_TRUSTED_HOPS + 1), None);
        assert_eq!(fwd(&[&list(1000), "for=1.2.3.4"], 1), ip("1.2.3.4"));
        // Commas inside quotes do not count.
        let quoted = format!("host=\"{}\";for=1.2.3.4", ",".repeat(1000));
        assert_eq!(fwd(&[&quoted], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&[&quoted], 2), None);
        let empties = format!("{}for=1.2.3.4", ",".repeat(100_000));
        assert_eq!(fwd(&[&empties], 1), ip("1.2.3.4"));
        assert_eq!(fwd(&[&empties], 2), None);
    }

    // ---- X-Real-IP ----

    #[test]
    fn real_ip_forms() {
        assert_eq!(real(&["1.2.3.4"], 1), ip("1.2.3.4"));
        assert_eq!(real(&[" 1.2.3.4 "], 1), ip("1.2.3.4"));
        assert_eq!(real(&["1.2.3.4:5678"], 1), ip("1.2.3.4"));
        assert_eq!(real(&["2001:db8::1"], 1), ip("2001:db8::1"));
        assert_eq!(real(&["[2001:db8::1]"], 1), ip("2001:db8::1"));
        assert_eq!(real(&["[2001:db8::1]:443"], 1), ip("2001:db8::1"));
        assert_eq!(real(&["::ffff:1.2.3.4"], 1), ip("::ffff:1.2.3.4"));
    }

    #[test]
    fn real_ip_ignores_hops() {
        for hops in [0, 1, 2, 3, MAX_TRUSTED_HOPS, usize::MAX] {
            assert_eq!(real(&["1.2.3.4"], hops), ip("1.2.3.4"), "{hops}");
        }
    }

    #[test]
    fn real_ip_last_line_wins() {
        assert_eq!(real(&["6.6.6.6", "1.2.3.4"], 1), ip("1.2.3.4"));
        assert_eq!(real(&["6.6.6.6", "garbage"], 1), None);
        assert_eq!(real(&["garbage", "1.2.3.4"], 1), ip("1.2.3.4"));
    }

    #[test]
    fn real_ip_rejects_everything_else() {
        for bad in [
            "",
            "unknown",
            "_hidden",
            "garbage",
            "1.2.3.4, 5.6.7.8",
            "1.2.3.4,",
            "for=1.2.3.4",
            "\"1.2.3.4\"",
            "1.2.3.4:99999",
            "[1.2.3.4]",
            "[2001:db8::1",
        ] {
            assert_eq!(real(&[bad], 1), None, "{bad:?}");
        }
    }

    #[test]
    fn real_ip_non_ascii() {
        // An earlier line is not read.
        let mut map = HeaderMap::new();
        map.append("x-real-ip", HeaderValue::from_bytes(b"\x80").unwrap());
        map.append("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        assert_eq!(
            client_from_headers(&map, ClientIpHeader::XRealIp, 1),
            ip("1.2.3.4")
        );
        // The last one is.
        let mut map = HeaderMap::new();
        map.append("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        map.append(
            "x-real-ip",
            HeaderValue::from_bytes(b"1.2.3.4\x80").unwrap(),
        );
        assert_eq!(client_from_headers(&map, ClientIpHeader::XRealIp, 1), None);
    }

    #[test]
    fn real_ip_many_lines() {
        let mut lines = vec!["6.6.6.6"; 1000];
        lines.push("1.2.3.4");
        assert_eq!(real(&lines, 1), ip("1.2.3.4"));
    }

    // ---- robustness ----

    #[test]
    fn never_panics_on_odd_input() {
        let odd = [
            "",
            ",",
            ";",
            "=",
            "\"",
            "\\",
            "\"\\",
            "[",
            "]",
            "[]:",
            ":",
            "::",
            ":::",
            "[::]:",
            "for=\"\\",
            "for=\"\\\"",
            "\",\"",
            "for=[",
            "for=\"[\"",
            "_",
            "_:_",
            "1.2.3.4:_",
            "\t1.2.3.4\t",
            "for=1.2.3.4\t;\tproto=http",
        ];
        for line in odd {
            for header in ALL {
                for hops in [0, 1, 2, 3, 64, 65, usize::MAX] {
                    let map = headers(
                        match header {
                            ClientIpHeader::Forwarded => "forwarded",
                            ClientIpHeader::XRealIp => "x-real-ip",
                            _ => "x-forwarded-for",
                        },
                        &[line, line],
                    );
                    let _ = client_from_headers(&map, header, hops);
                }
            }
        }
    }

    #[test]
    fn hostile_left_part_never_changes_answer() {
        // Whatever the client sends, on the proxy's line or on lines of its own, the answer for
        // hops within the proxies' entries is the answer for the proxies' entries alone.
        const ALPHABET: &[u8] = b"0123456789.:[]for=;, \t\"\\\x80\xff\xc3\xa9_unk";
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let proxies: [(&str, &[&str]); 2] = [
            (
                "x-forwarded-for",
                &["203.0.113.7", "[2001:db8::1]:80", "unknown", "10.0.0.2"],
            ),
            (
                "forwarded",
                &[
                    "for=203.0.113.7;proto=https",
                    "for=\"[2001:db8::1]:80\";host=\"a,b;c\"",
                    "proto=http",
                    "for=unknown",
                    "by=\"\\\"x\";for=10.0.0.2",
                ],
            ),
        ];
        for _ in 0..2000 {
            let len = (next() % 60) as usize;
            let left: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            for (name, entries) in proxies {
                let header = if name == "forwarded" {
                    ClientIpHeader::Forwarded
                } else {
                    ClientIpHeader::XForwardedFor
                };
                let count = 1 + (next() % entries.len() as u64) as usize;
                let suffix = entries[..count].join(", ");
                let alone = headers(name, &[&suffix]);
                // On the same line, after a comma, and on an earlier line.
                let mut same_line = left.clone();
                same_line.extend_from_slice(b", ");
                same_line.extend_from_slice(suffix.as_bytes());
                let mut same = HeaderMap::new();
                same.append(name, HeaderValue::from_bytes(&same_line).unwrap());
                let mut separate = HeaderMap::new();
                separate.append(name, HeaderValue::from_bytes(&left).unwrap());
                separate.append(name, HeaderValue::from_str(&suffix).unwrap());
                for hops in 1..=count {
                    let expected = client_from_headers(&alone, header, hops);
                    assert_eq!(
                        client_from_headers(&same, header, hops),
                        expected,
                        "{same_line:?} {hops}"
                    );
                    assert_eq!(
                        client_from_headers(&separate, header, hops),
                        expected,
                        "{left:?} {hops}"
                    );
                }
            }
        }
    }

    #[test]
    fn never_panics_on_random_input() {
        const ALPHABET: &[u8] = b"0123456789abcdefFOR:[]._-=;, \t\"\\unk";
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let len = (next() % 40) as usize;
            let line: Vec<u8> = (0..len)
                .map(|_| ALPHABET[(next() % ALPHABET.len() as u64) as usize])
                .collect();
            let value = HeaderValue::from_bytes(&line).unwrap();
            let hops = (next() % 5) as usize;
            for name in ["forwarded", "x-forwarded-for", "x-real-ip"] {
                let mut map = HeaderMap::new();
                map.append(name, value.clone());
                map.append(name, value.clone());
                for header in ALL {
                    let found = client_from_headers(&map, header, hops);
                    // An IPv4 address is only ever read from its canonical text.
                    if let Some(IpAddr::V4(addr)) = found {
                        let text = std::str::from_utf8(&line).unwrap();
                        assert!(text.contains(&addr.to_string()), "{text:?} -> {addr}");
                    }
                }
            }
        }
    }
}
