//! The PROXY protocol header (v1 text and v2 binary) that load balancers put in front of a
//! connection to name the client they accepted it from.
//!
//! The header is read exactly, never a byte past its end, so whatever the client sent after it
//! reaches the application untouched. Parsing is [`ppp`]'s, but a v2 header's structure is
//! checked here first, since `ppp` only looks at its TLVs when asked for them: its declared
//! length must be exactly what follows the fixed part, the address block of its family must fit
//! in it, the rest must be a whole number of TLVs, and a `PP2_TYPE_CRC32C` TLV must match.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use ppp::v2;
use ppp::HeaderResult;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::reason::grpc::{DEADLINE_EXCEEDED, INVALID_ARGUMENT, PERMISSION_DENIED};
use crate::reason::ReasonInfo;

// The listener closes these connections without an answer; the statuses and gRPC codes are what
// an answer would carry, for completeness of the table.

/// A connection refused because its peer is not one of `trusted_proxies`.
pub(super) static PROXY_UNTRUSTED: ReasonInfo = ReasonInfo::new(
    "proxy_untrusted",
    "connection refused",
    403,
    PERMISSION_DENIED,
);

/// A connection from a trusted proxy refused because its PROXY header was malformed, missing,
/// or too long.
pub(super) static PROXY_HEADER_INVALID: ReasonInfo =
    ReasonInfo::new("proxy_header_invalid", "bad request", 400, INVALID_ARGUMENT);

/// A connection from a trusted proxy refused because its PROXY header did not arrive within
/// `proxy_header_timeout` (or too many headers were being read at once).
pub(super) static PROXY_HEADER_TIMEOUT: ReasonInfo = ReasonInfo::new(
    "proxy_header_timeout",
    "request timeout",
    408,
    DEADLINE_EXCEEDED,
);

/// A header that cannot be used: malformed, cut short, or longer than any real proxy sends.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct InvalidHeader;

/// A v1 header is at most 107 bytes, `\r\n` included.
const V1_MAX: usize = 107;
/// The shortest v1 header, `PROXY UNKNOWN\r\n`.
const V1_MIN: usize = 15;
/// The v2 signature, which the 16-byte fixed part of a v2 header starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The most address and TLV bytes accepted after a v2 header's fixed part. Real proxies send a
/// few dozen (AWS adds a VPC endpoint id); a hostile peer must not make us buffer 64 KiB.
const V2_MAX_PAYLOAD: usize = 4096;
/// The length of a v2 header's fixed part: the signature, version and command, family and
/// protocol, and the length of what follows.
const V2_FIXED: usize = 16;
/// A TLV's type byte and big-endian 16-bit length, before its value.
const TLV_HEADER: usize = 3;
/// The TLV carrying the CRC32c of the whole header.
const PP2_TYPE_CRC32C: u8 = 0x03;

/// Reads one PROXY header from the start of `io`, and no byte more. The source address it
/// names, or `None` when it names none (v2 `LOCAL`, v1 `UNKNOWN`, a Unix socket).
pub(crate) async fn read_header<IO: AsyncRead + Unpin>(
    io: &mut IO,
) -> Result<Option<SocketAddr>, InvalidHeader> {
    let mut fixed = [0u8; V1_MAX];
    io.read_exact(&mut fixed[..V1_MIN])
        .await
        .map_err(|_| InvalidHeader)?;
    if fixed.starts_with(b"PROXY ") {
        // v1 ends at the first CRLF; reading it a byte at a time keeps what follows unread.
        let mut len = V1_MIN;
        while !fixed[..len].ends_with(b"\r\n") {
            if len == V1_MAX {
                return Err(InvalidHeader);
            }
            io.read_exact(&mut fixed[len..=len])
                .await
                .map_err(|_| InvalidHeader)?;
            len += 1;
        }
        return parse_header(&fixed[..len]);
    }
    if fixed.starts_with(V2_SIGNATURE) {
        io.read_exact(&mut fixed[V1_MIN..V2_FIXED])
            .await
            .map_err(|_| InvalidHeader)?;
        let payload = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        if payload > V2_MAX_PAYLOAD {
            return Err(InvalidHeader);
        }
        let mut header = Vec::with_capacity(V2_FIXED + payload);
        header.extend_from_slice(&fixed[..V2_FIXED]);
        header.resize(V2_FIXED + payload, 0);
        io.read_exact(&mut header[V2_FIXED..])
            .await
            .map_err(|_| InvalidHeader)?;
        return parse_header(&header);
    }
    Err(InvalidHeader)
}

/// Parses a complete header: the source address it names, if any.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Option<SocketAddr>, InvalidHeader> {
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(header)) if header.header.len() == bytes.len() => {
            Ok(match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                ppp::v1::Addresses::Unknown => None,
            })
        }
        HeaderResult::V2(Ok(header)) => {
            // Checked on what `ppp` took for v2, so the two can never disagree on the version.
            check_v2_structure(bytes)?;
            if header.command == v2::Command::Local {
                return Ok(None);
            }
            Ok(match header.addresses {
                v2::Addresses::IPv4(a) => {
                    Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
                }
                v2::Addresses::IPv6(a) => {
                    Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
                }
                v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
            })
        }
        _ => Err(InvalidHeader),
    }
}

/// Checks the layout of the whole v2 header `bytes`, which `ppp` does not: it accepts TLVs that
/// run past the header's end, or a stray byte or two after the last one, and would check them
/// only when asked for them. A header that is not exactly what it says it is was not written by
/// a real proxy, so nothing it names is believed.
///
/// The address block must fit for `LOCAL` headers too (as `ppp` requires): their addresses are
/// ignored, but the TLVs still start after them.
fn check_v2_structure(bytes: &[u8]) -> Result<(), InvalidHeader> {
    let fixed = bytes.get(..V2_FIXED).ok_or(InvalidHeader)?;
    let declared = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if declared != bytes.len() - V2_FIXED {
        return Err(InvalidHeader);
    }
    let addresses = v2_address_block(fixed[13]).ok_or(InvalidHeader)?;
    if addresses > declared {
        return Err(InvalidHeader);
    }
    let mut crc32c = None;
    let mut at = V2_FIXED + addresses;
    // Each turn consumes at least a TLV header, so this ends within `declared / 3` turns.
    while at < bytes.len() {
        let (kind, value) = next_tlv(bytes, at)?;
        if kind == PP2_TYPE_CRC32C && crc32c.replace(value.clone()).is_some() {
            // Two checksums: which one would the sender have meant?
            return Err(InvalidHeader);
        }
        at = value.end;
    }
    match crc32c {
        Some(field) => check_crc32c(bytes, field),
        None => Ok(()),
    }
}

/// The length of the address block for a v2 family-and-protocol byte, `None` for a family the
/// spec does not define.
fn v2_address_block(family_protocol: u8) -> Option<usize> {
    match family_protocol >> 4 {
        0x0 => Some(0),   // UNSPEC: no addresses.
        0x1 => Some(12),  // IPv4: two addresses and two ports.
        0x2 => Some(36),  // IPv6: the same.
        0x3 => Some(216), // Unix: two 108-byte paths.
        _ => None,
    }
}

/// The type and the value's range in `header` of the TLV starting at `at`, refused if its
/// header or its value runs past the end of `header`.
fn next_tlv(header: &[u8], at: usize) -> Result<(u8, Range<usize>), InvalidHeader> {
    let Some(&[kind, hi, lo, ..]) = header.get(at..) else {
        return Err(InvalidHeader);
    };
    let start = at + TLV_HEADER;
    let end = start + usize::from(u16::from_be_bytes([hi, lo]));
    if end > header.len() {
        return Err(InvalidHeader);
    }
    Ok((kind, start..end))
}

/// Checks the CRC32c TLV whose value is `field` in `header`: the spec has the sender compute
/// the checksum over the whole header with that field zeroed, and store it big-endian; a
/// receiver that checks it must refuse a mismatch.
fn check_crc32c(header: &[u8], field: Range<usize>) -> Result<(), InvalidHeader> {
    let sent: [u8; 4] = header[field.clone()]
        .try_into()
        .map_err(|_| InvalidHeader)?;
    let zeroed = header[..field.start]
        .iter()
        .chain(&[0; 4])
        .chain(&header[field.end..]);
    if crc32c(zeroed) == u32::from_be_bytes(sent) {
        Ok(())
    } else {
        Err(InvalidHeader)
    }
}

/// CRC32c (Castagnoli, as in RFC 4960 appendix B), a bit at a time: a header is at most a few
/// KiB and carries a checksum rarely, so a table would not pay for itself.
fn crc32c<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u32 {
    /// The Castagnoli polynomial, bit-reversed.
    const POLY: u32 = 0x82F6_3B78;
    !bytes.into_iter().fold(!0, |crc, &byte| {
        (0..8).fold(crc ^ u32::from(byte), |crc, _| {
            (crc >> 1) ^ (POLY & (crc & 1).wrapping_neg())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn v2_header(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    fn v2_tcp4(src: [u8; 4], src_port: u16) -> Vec<u8> {
        let mut a = src.to_vec();
        a.extend_from_slice(&[10, 0, 0, 1]);
        a.extend_from_slice(&src_port.to_be_bytes());
        a.extend_from_slice(&443u16.to_be_bytes());
        v2_header(0x1, 0x11, &a)
    }

    /// One TLV: its type, its big-endian length and its value.
    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut t = vec![kind];
        t.extend_from_slice(&(value.len() as u16).to_be_bytes());
        t.extend_from_slice(value);
        t
    }

    /// `header` with `tail` appended after its addresses, the declared length counting it.
    fn with_tail(header: &[u8], tail: &[u8]) -> Vec<u8> {
        let mut h = [header, tail].concat();
        let declared = (h.len() - V2_FIXED) as u16;
        h[14..16].copy_from_slice(&declared.to_be_bytes());
        h
    }

    /// A header an AWS Network Load Balancer sent, from the tests of AWS's own PROXY protocol
    /// library (elastic-load-balancing-tools, `Compatibility_AwsNetworkLoadBalancerTest`): a
    /// CRC32c, a VPC endpoint id (AWS's TLV 0xEA, subtype 0x01) and NOOP padding.
    fn aws_nlb_header() -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0x00, 0x54]);
        h.extend_from_slice(&[172, 31, 7, 113, 172, 31, 10, 31, 0xc8, 0xf2, 0x00, 0x50]);
        h.extend_from_slice(&tlv(PP2_TYPE_CRC32C, &[0xe8, 0xd6, 0x89, 0x2d]));
        h.extend_from_slice(&tlv(0xea, b"\x01vpce-08d2bf15fac5001c9"));
        h.extend_from_slice(&tlv(0x04, &[0; 36]));
        h
    }

    /// Reads a header from `input` and returns it with what is left unread.
    async fn read(input: &[u8]) -> (Result<Option<SocketAddr>, InvalidHeader>, Vec<u8>) {
        let mut reader = input;
        let result = read_header(&mut reader).await;
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        (result, rest)
    }

    #[tokio::test]
    async fn v1_names_the_client_and_leaves_the_request_unread() {
        let (addr, rest) =
            read(b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n").await;
        assert_eq!(addr, Ok(Some("203.0.113.7:56324".parse().unwrap())));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");

        let (addr, rest) = read(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 443\r\nx").await;
        assert_eq!(addr, Ok(Some("[2001:db8::7]:4000".parse().unwrap())));
        assert_eq!(rest, b"x");

        let (addr, rest) = read(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(addr, Ok(None));
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn v2_names_the_client_and_leaves_the_request_unread() {
        let mut input = v2_tcp4([198, 51, 100, 9], 1234);
        input.extend_from_slice(b"GET /");
        let (addr, rest) = read(&input).await;
        assert_eq!(addr, Ok(Some("198.51.100.9:1234".parse().unwrap())));
        assert_eq!(rest, b"GET /");

        let mut a = vec![0x20, 0x01, 0x0d, 0xb8];
        a.extend_from_slice(&[0; 11]);
        a.push(7);
        a.extend_from_slice(&[0; 16]);
        a.extend_from_slice(&[0x0f, 0xa0, 0x01, 0xbb]);
        let (addr, _) = read(&v2_header(0x1, 0x21, &a)).await;
        assert_eq!(addr, Ok(Some("[2001:db8::7]:4000".parse().unwrap())));

        // LOCAL: the proxy's own connection, e.g. a health check.
        let (addr, rest) = read(&[v2_header(0x0, 0x00, &[]), b"hi".to_vec()].concat()).await;
        assert_eq!(addr, Ok(None));
        assert_eq!(rest, b"hi");
    }

    #[tokio::test]
    async fn bad_headers_are_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 1.2.3.4\r\n",
            b"PROXY TCP4 not.an.ip 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2", // no CRLF before the end
            b"PROXY TCP9 1.2.3.4 10.0.0.1 1 2\r\n",
            b"PROXY ",
            b"",
        ] {
            assert_eq!(read(bad).await.0, Err(InvalidHeader), "{bad:?}");
        }
        // A v1 line longer than the protocol allows, without reading on forever.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200], b"\r\n"].concat();
        let (result, rest) = read(&long).await;
        assert_eq!(result, Err(InvalidHeader));
        assert_eq!(rest.len(), long.len() - V1_MAX);
        // A v2 header announcing more than any proxy sends.
        let mut huge = v2_header(0x1, 0x11, &[]);
        huge[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(read(&huge).await.0, Err(InvalidHeader));
        // A v2 header cut short, and one with a bad version.
        let cut = v2_tcp4([1, 2, 3, 4], 5);
        assert_eq!(read(&cut[..20]).await.0, Err(InvalidHeader));
        let mut bad_version = v2_tcp4([1, 2, 3, 4], 5);
        bad_version[12] = 0x31;
        assert_eq!(read(&bad_version).await.0, Err(InvalidHeader));
    }

    #[tokio::test]
    async fn v2_tlvs_are_accepted_and_the_request_left_unread() {
        let header = with_tail(
            &v2_tcp4([198, 51, 100, 9], 1234),
            &[
                tlv(0x02, b"example.com"),
                tlv(0xea, b"\x01vpce-0123456"),
                tlv(0x04, &[]),        // NOOP padding, empty
                tlv(0x7f, &[1, 2, 3]), // a type nobody defined: ignored
            ]
            .concat(),
        );
        let (addr, rest) = read(&[header, b"GET /".to_vec()].concat()).await;
        assert_eq!(addr, Ok(Some("198.51.100.9:1234".parse().unwrap())));
        assert_eq!(rest, b"GET /");

        // A real AWS NLB header, CRC32c included.
        let (addr, rest) = read(&[aws_nlb_header(), b"GET /".to_vec()].concat()).await;
        assert_eq!(addr, Ok(Some("172.31.7.113:51442".parse().unwrap())));
        assert_eq!(rest, b"GET /");
    }

    #[tokio::test]
    async fn local_headers_are_checked_too() {
        // What HAProxy sends for a health check: LOCAL, UNSPEC, nothing after.
        let (addr, rest) = read(&[v2_header(0x0, 0x00, &[]), b"GET /".to_vec()].concat()).await;
        assert_eq!(addr, Ok(None));
        assert_eq!(rest, b"GET /");
        // LOCAL with TLVs, and with addresses it is right to ignore.
        let local = with_tail(&v2_header(0x0, 0x00, &[]), &tlv(0x02, b"example.com"));
        assert_eq!(parse_header(&local), Ok(None));
        let local = v2_header(0x0, 0x11, &[1; 12]);
        assert_eq!(parse_header(&local), Ok(None));
        // But not with broken TLVs, nor with an address block that does not fit.
        let local = with_tail(&v2_header(0x0, 0x00, &[]), &[0x02, 0x00]);
        assert_eq!(parse_header(&local), Err(InvalidHeader));
        let local = v2_header(0x0, 0x11, &[]);
        assert_eq!(parse_header(&local), Err(InvalidHeader));
    }

    #[tokio::test]
    async fn a_tlv_running_past_the_declared_length_is_refused() {
        // The TLV says 20 bytes, the header ends after 11; the request's bytes must not be taken
        // for the rest of it.
        let mut overrun = tlv(0x02, b"example.com");
        overrun[1..3].copy_from_slice(&20u16.to_be_bytes());
        let header = with_tail(&v2_tcp4([198, 51, 100, 9], 1234), &overrun);
        let (addr, rest) = read(&[header.clone(), b"GET / HTTP/1.1\r\n".to_vec()].concat()).await;
        assert_eq!(addr, Err(InvalidHeader));
        // Nothing past the declared end was read.
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        // Even by one byte, and after a good TLV.
        let mut overrun = tlv(0xea, b"\x01vpce");
        overrun[2] += 1;
        let tail = [tlv(0x02, b"example.com"), overrun].concat();
        let header = with_tail(&v2_tcp4([198, 51, 100, 9], 1234), &tail);
        assert_eq!(parse_header(&header), Err(InvalidHeader));
    }

    #[test]
    fn a_truncated_tlv_header_is_refused() {
        let good = tlv(0x02, b"example.com");
        for fragment in [&[0x04][..], &[0x04, 0x00]] {
            let header = with_tail(&v2_tcp4([1, 2, 3, 4], 5), &[&good[..], fragment].concat());
            assert_eq!(parse_header(&header), Err(InvalidHeader), "{fragment:?}");
            let header = with_tail(&v2_tcp4([1, 2, 3, 4], 5), fragment);
            assert_eq!(parse_header(&header), Err(InvalidHeader), "{fragment:?}");
        }
        // A whole TLV header with an empty value is a TLV, not a fragment.
        let header = with_tail(&v2_tcp4([1, 2, 3, 4], 5), &[0x04, 0x00, 0x00]);
        assert_eq!(
            parse_header(&header),
            Ok(Some("1.2.3.4:5".parse().unwrap()))
        );
    }

    #[test]
    fn an_address_block_longer_than_the_declared_length_is_refused() {
        // (family, the address block's length): each declared one byte short of it.
        for (family, block) in [(0x11, 12), (0x21, 36), (0x31, 216)] {
            let header = v2_header(0x1, family, &vec![7; block - 1]);
            assert_eq!(parse_header(&header), Err(InvalidHeader), "{family:#x}");
            // The whole block, as a control.
            let header = v2_header(0x1, family, &vec![7; block]);
            assert!(parse_header(&header).is_ok(), "{family:#x}");
        }
        // An IPv6 header whose length covers only an IPv4 block.
        let v6_short = v2_header(0x1, 0x21, &[7; 12]);
        assert_eq!(parse_header(&v6_short), Err(InvalidHeader));
        // A family the spec does not define.
        assert_eq!(
            parse_header(&v2_header(0x1, 0x41, &[7; 12])),
            Err(InvalidHeader)
        );
    }

    #[test]
    fn the_declared_length_is_exactly_what_follows() {
        let header = with_tail(&v2_tcp4([1, 2, 3, 4], 5), &tlv(0x02, b"example.com"));
        assert!(parse_header(&header).is_ok());
        let longer = [&header[..], b"x"].concat();
        assert_eq!(parse_header(&longer), Err(InvalidHeader));
        assert_eq!(
            parse_header(&header[..header.len() - 1]),
            Err(InvalidHeader)
        );
    }

    #[test]
    fn crc32c_matches_known_vectors() {
        // The standard check value, and RFC 3720's (iSCSI) B.4 vectors.
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(&[0; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xff; 32]), 0x62a8_ab43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c(&ascending), 0x46dd_794e);
        assert_eq!(crc32c(&[]), 0);
    }

    #[test]
    fn a_crc32c_tlv_is_checked() {
        let aws = aws_nlb_header();
        assert_eq!(
            parse_header(&aws),
            Ok(Some("172.31.7.113:51442".parse().unwrap()))
        );
        // Any byte changed, the checksum's own included, and the header is refused.
        for at in [17, 26, 29, 31, 40, aws.len() - 1] {
            let mut changed = aws.clone();
            changed[at] ^= 0x01;
            assert_eq!(parse_header(&changed), Err(InvalidHeader), "byte {at}");
        }
        // A checksum of another length than 4 bytes.
        let short = with_tail(&v2_tcp4([1, 2, 3, 4], 5), &tlv(PP2_TYPE_CRC32C, &[0; 3]));
        assert_eq!(parse_header(&short), Err(InvalidHeader));
        // Two checksums, the second right for the header with its field zeroed (the first is
        // zero): which one the sender meant is anyone's guess.
        let mut two = with_tail(
            &v2_tcp4([1, 2, 3, 4], 5),
            &[tlv(PP2_TYPE_CRC32C, &[0; 4]), tlv(PP2_TYPE_CRC32C, &[0; 4])].concat(),
        );
        let sum = crc32c(&two).to_be_bytes();
        two[38..42].copy_from_slice(&sum);
        assert_eq!(parse_header(&two), Err(InvalidHeader));
    }

    #[test]
    fn a_crc32c_tlv_written_here_is_accepted() {
        // A checksum computed as a sender would: over the header with its field zeroed.
        let mut header = with_tail(
            &v2_tcp4([203, 0, 113, 7], 4000),
            &[tlv(0x02, b"example.com"), tlv(PP2_TYPE_CRC32C, &[0; 4])].concat(),
        );
        let field = header.len() - 4;
        let sum = crc32c(&header).to_be_bytes();
        header[field..].copy_from_slice(&sum);
        assert_eq!(
            parse_header(&header),
            Ok(Some("203.0.113.7:4000".parse().unwrap()))
        );
    }
}
