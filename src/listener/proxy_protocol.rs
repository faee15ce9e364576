//! The PROXY protocol header (v1 text and v2 binary) that load balancers put in front of a
//! connection to name the client they accepted it from.
//!
//! The header is read exactly, never a byte past its end, so whatever the client sent after it
//! reaches the application untouched. Parsing is [`ppp`]'s.

use std::net::{IpAddr, SocketAddr};

use ppp::v2;
use ppp::HeaderResult;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::reason::ReasonInfo;

// The listener closes these connections without an answer; the statuses and gRPC codes are what
// an answer would carry, for completeness of the table.

/// gRPC's `INVALID_ARGUMENT`, `DEADLINE_EXCEEDED` and `PERMISSION_DENIED`.
const INVALID_ARGUMENT: u8 = 3;
const DEADLINE_EXCEEDED: u8 = 4;
const PERMISSION_DENIED: u8 = 7;

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
        io.read_exact(&mut fixed[V1_MIN..16])
            .await
            .map_err(|_| InvalidHeader)?;
        let payload = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        if payload > V2_MAX_PAYLOAD {
            return Err(InvalidHeader);
        }
        let mut header = Vec::with_capacity(16 + payload);
        header.extend_from_slice(&fixed[..16]);
        header.resize(16 + payload, 0);
        io.read_exact(&mut header[16..])
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
        HeaderResult::V2(Ok(header)) if header.len() == bytes.len() => {
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
}
