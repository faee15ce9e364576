//! Arbitrary bytes as the start of a connection behind a PROXY-protocol listener.
//!
//! Checks, on the parser the listener uses (`parse_header`, through `__fuzz`):
//! - neither parsing nor reading ever panics;
//! - a read never takes a byte past the header (at most 107 bytes for v1, 16 + 4096 for v2),
//!   and what it took is one whole header: a v1 line ending at its first CRLF, or a v2 header
//!   of exactly the length it announces;
//! - what a read returns is what parsing the bytes it took returns;
//! - a whole header that parses is read the same way, taking every byte (`parse_header` also
//!   takes a v1 line ending in a bare LF; the read must then find no header);
//! - the address of an accepted header is the one written in it: for v1, the source address
//!   and port fields of the text; for v2, the source address and port bytes of its family, and
//!   none for `LOCAL`, `UNSPEC` and Unix sockets;
//! - an accepted v2 header, `LOCAL` included, is laid out as it says: its family's address
//!   block fits in the declared length, the rest is a whole number of TLVs, none running past
//!   the end, and a CRC32c TLV, if there is one, is the only one and matches.
#![no_main]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tower_connlimit::__fuzz::{parse_proxy_header, read_proxy_header};

const V1_MAX: usize = 107;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_MAX_PAYLOAD: usize = 4096;

/// Reads a header from `data`: the result and how many bytes the read took.
fn read(data: &[u8]) -> (Result<Option<SocketAddr>, ()>, usize) {
    let mut rest = data;
    let result = {
        let future = pin!(read_proxy_header(&mut rest));
        // A byte slice never blocks, so the read finishes on its first poll.
        match future.poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => panic!("reading from a byte slice returned Pending"),
        }
    };
    (result, data.len() - rest.len())
}

/// The source address a v1 line names, read from its text by hand.
fn v1_source(line: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(line).expect("an accepted v1 header is text");
    let text = text.strip_suffix("\r\n").expect("a v1 header ends in CRLF");
    let fields: Vec<&str> = text.split(' ').collect();
    assert_eq!(fields[0], "PROXY", "{text:?}");
    match fields[1] {
        "UNKNOWN" => None,
        proto @ ("TCP4" | "TCP6") => {
            assert_eq!(fields.len(), 6, "{text:?}");
            let ip: IpAddr = fields[2].parse().expect("the v1 source address parses");
            let port: u16 = fields[4].parse().expect("the v1 source port parses");
            // The destination must be well-formed too, and of the same family.
            let dst: IpAddr = fields[3]
                .parse()
                .expect("the v1 destination address parses");
            let _: u16 = fields[5].parse().expect("the v1 destination port parses");
            let v4 = proto == "TCP4";
            assert_eq!(ip.is_ipv4(), v4, "{text:?}");
            assert_eq!(dst.is_ipv4(), v4, "{text:?}");
            Some(SocketAddr::new(ip, port))
        }
        other => panic!("a v1 header with protocol {other:?} was accepted: {text:?}"),
    }
}

/// The source address a v2 header names, read from its bytes by hand.
fn v2_source(header: &[u8]) -> Option<SocketAddr> {
    assert_eq!(header[12] >> 4, 2, "version 2");
    let port = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
    match (header[12] & 0x0f, header[13] >> 4) {
        (0x0, _) => None, // LOCAL
        (0x1, 0x1) => {
            let ip = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
            Some(SocketAddr::new(ip.into(), port(24)))
        }
        (0x1, 0x2) => {
            let octets: [u8; 16] = header[16..32].try_into().unwrap();
            Some(SocketAddr::new(Ipv6Addr::from(octets).into(), port(48)))
        }
        (0x1, 0x0 | 0x3) => None, // UNSPEC, Unix
        (command, family) => {
            panic!("a v2 header with command {command:#x}, family {family:#x} was accepted")
        }
    }
}

/// Checks, by hand, the layout of an accepted v2 header: the address block of its family,
/// then TLVs (type, big-endian length, value) that end exactly at the header's end.
fn check_v2_layout(header: &[u8]) {
    let addresses = match header[13] >> 4 {
        0x0 => 0,
        0x1 => 12,
        0x2 => 36,
        0x3 => 216,
        family => panic!("a v2 header of family {family:#x} was accepted"),
    };
    assert!(
        16 + addresses <= header.len(),
        "a v2 address block past the end"
    );
    let mut rest = &header[16 + addresses..];
    let mut checksums = Vec::new();
    // Bounded: each turn takes at least 3 bytes off `rest`.
    while !rest.is_empty() {
        assert!(
            rest.len() >= 3,
            "a v2 header ending in a TLV fragment: {header:02x?}"
        );
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]]));
        assert!(3 + len <= rest.len(), "a TLV past the end: {header:02x?}");
        if rest[0] == 0x03 {
            let value = header.len() - rest.len() + 3;
            checksums.push(value..value + len);
        }
        rest = &rest[3 + len..];
    }
    assert!(checksums.len() <= 1, "two CRC32c TLVs: {header:02x?}");
    if let Some(field) = checksums.pop() {
        let sent: [u8; 4] = header[field.clone()].try_into().expect("a 4-byte CRC32c");
        let mut zeroed = header.to_vec();
        zeroed[field].fill(0);
        assert_eq!(crc32c(&zeroed), u32::from_be_bytes(sent), "{header:02x?}");
    }
}

/// CRC32c of `bytes`, as RFC 4960 appendix B has it: reflected, initial and final XOR all ones.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = u32::MAX;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// The checks on a whole header that was accepted as naming `addr`.
fn check_accepted(header: &[u8], addr: Option<SocketAddr>) {
    if header.starts_with(b"PROXY ") {
        assert!(header.ends_with(b"\r\n"));
        let first_crlf = header.windows(2).position(|w| w == b"\r\n").unwrap();
        assert_eq!(
            first_crlf + 2,
            header.len(),
            "a v1 header runs past its first CRLF"
        );
        assert_eq!(
            v1_source(header),
            addr,
            "{:?}",
            String::from_utf8_lossy(header)
        );
    } else if header.starts_with(V2_SIGNATURE) {
        let payload = usize::from(u16::from_be_bytes([header[14], header[15]]));
        assert_eq!(
            header.len(),
            16 + payload,
            "a v2 header of another length than announced"
        );
        check_v2_layout(header);
        assert_eq!(v2_source(header), addr, "{header:02x?}");
    } else {
        panic!("a header with neither signature was accepted: {header:02x?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let (read_result, taken) = read(data);
    if let Ok(addr) = read_result {
        let header = &data[..taken];
        if header.starts_with(b"PROXY ") {
            assert!(taken <= V1_MAX, "a v1 read took {taken} bytes");
        } else {
            assert!(taken <= 16 + V2_MAX_PAYLOAD, "a v2 read took {taken} bytes");
        }
        assert_eq!(
            parse_proxy_header(header),
            Ok(addr),
            "read and parse disagree"
        );
        check_accepted(header, addr);
    }

    let parsed = parse_proxy_header(data);
    if let Ok(addr) = parsed {
        if data.starts_with(b"PROXY ") && !data.ends_with(b"\r\n") {
            // ppp also ends a v1 line at a bare LF that stands as a field of its own ("... 443
            // \n"), and after `UNKNOWN` ignores whatever follows that field up to a CR. The
            // listener never takes such a line whole: it reads up to the first CRLF, and what it
            // takes was checked above.
            assert!(read_result.is_err() || taken < data.len());
            return;
        }
        check_accepted(data, addr);
        // A whole header the listener would take is read the same way, every byte of it.
        let readable = if data.starts_with(b"PROXY ") {
            data.len() <= V1_MAX
        } else {
            data.len() <= 16 + V2_MAX_PAYLOAD
        };
        if readable {
            assert_eq!(
                (read_result, taken),
                (Ok(addr), data.len()),
                "parse and read disagree"
            );
        }
    }
});
