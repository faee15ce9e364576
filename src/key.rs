//! Client keys: which connections count as "the same client".
//!
//! A client is identified by its IP address, normalised and masked to a prefix:
//!
//! - an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is the IPv4 address it maps;
//! - the IPv6 zone (scope id) and the port never count: only [`IpAddr`] reaches the key;
//! - the address is masked to [`Config::ipv4_prefix`](crate::Config::ipv4_prefix) bits (default 32,
//!   one address) or [`Config::ipv6_prefix`](crate::Config::ipv6_prefix) bits (default 64: an IPv6
//!   subscriber is routinely handed a whole /64, so counting single addresses would let one host
//!   rotate through 2^64 "clients").
//!
//! hashicorp/go-connlimit keys by the exact address string; with `ipv6_prefix = 128` this crate
//! behaves the same way.
//!
//! A request can also be keyed by a *name* (an API key, a user, a tenant: see
//! [`keys`](crate::keys)). A named key holds no name: only a 64-bit fingerprint of it, a keyed
//! hash under the limiter's secret, which prints as `key:` and 16 hex digits.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The normalised, prefix-masked identity of a client: the key of the limiter's per-client map.
///
/// Two addresses with the same key share one per-client allowance. The key remembers the prefix it
/// was masked to, so a key made under `ipv6_prefix = 64` never equals one made under `/56`: a
/// live prefix change applies to new connections, and connections already open are released
/// against the key they were counted under.
///
/// # Examples
///
/// ```
/// use std::net::IpAddr;
/// use tower_connlimit::ClientKey;
///
/// let a = ClientKey::new("2001:db8:1:2::1".parse().unwrap(), 32, 64);
/// let b = ClientKey::new("2001:db8:1:2:ffff::9".parse().unwrap(), 32, 64);
/// assert_eq!(a, b);
/// assert_eq!(a.to_string(), "2001:db8:1:2::/64");
///
/// let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
/// assert_eq!(ClientKey::new(mapped, 32, 64).to_string(), "192.0.2.7");
/// ```
/// Keys order by address (IPv4 before IPv6), then prefix length, so listings can be sorted
/// stably.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClientKey {
    // The field order is the sort order. A key is 18 bytes with an alignment of 1: it is in every
    // client's entry, and compared and hashed on every decision.
    family: Family,
    /// The masked address, big-endian (an IPv4 address in the last four bytes); a name's
    /// fingerprint, in the last eight.
    bits: [u8; 16],
    prefix_len: u8,
}

impl ClientKey {
    /// Normalises `ip` and masks it to `ipv4_prefix` or `ipv6_prefix` bits.
    ///
    /// Prefixes longer than the address (more than 32 or 128) are treated as the full address;
    /// [`Config::validate`](crate::Config::validate) refuses such values before they reach here.
    #[inline]
    pub fn new(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Self {
        let v4 = |bits: u32| {
            let prefix_len = ipv4_prefix.min(32);
            ClientKey {
                family: Family::V4,
                bits: u128::from(mask_bits(bits, prefix_len)).to_be_bytes(),
                prefix_len,
            }
        };
        match ip {
            IpAddr::V4(v4_addr) => v4(u32::from(v4_addr)),
            IpAddr::V6(v6_addr) => {
                let bits = u128::from(v6_addr);
                // An IPv4-mapped address, `::ffff:a.b.c.d`, is its IPv4 address (what
                // `IpAddr::to_canonical` does, on the integer).
                if bits >> 32 == 0xffff {
                    return v4(bits as u32);
                }
                let prefix_len = ipv6_prefix.min(128);
                ClientKey {
                    family: Family::V6,
                    bits: mask_bits(bits, prefix_len).to_be_bytes(),
                    prefix_len,
                }
            }
        }
    }

    /// The key of `ip` alone: its whole address, as an exempt client is counted.
    #[inline]
    pub(crate) fn exact(ip: IpAddr) -> Self {
        ClientKey::new(ip, 32, 128)
    }

    /// The key of a name whose fingerprint is `fingerprint` (see [`keys`](crate::keys)).
    pub(crate) fn named(fingerprint: u64) -> Self {
        ClientKey {
            family: Family::Named,
            bits: u128::from(fingerprint).to_be_bytes(),
            prefix_len: 0,
        }
    }

    /// The masked network address (the client's address with the host bits cleared); for a
    /// named key, which has no address, the unspecified address `::`.
    pub fn network(&self) -> IpAddr {
        let bits = u128::from_be_bytes(self.bits);
        match self.family {
            // Only the low 32 bits are ever set for IPv4.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(bits as u32)),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(bits)),
            Family::Named => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }
    }

    /// How many leading bits of the address identify the client (0 for a named key).
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The fingerprint of a named key (a request keyed by an API key, a user or a tenant);
    /// `None` for a key of an address.
    pub fn fingerprint(&self) -> Option<u64> {
        (self.family == Family::Named).then(|| u128::from_be_bytes(self.bits) as u64)
    }
}

impl Hash for ClientKey {
    /// Two integer writes, the cheapest input for the map's hasher: this runs on every decision.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(u128::from_ne_bytes(self.bits));
        state.write_u16(u16::from(self.prefix_len) | ((self.family as u16) << 8));
    }
}

/// What a [`ClientKey`] identifies. The order is the keys' sort order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
#[repr(u8)]
enum Family {
    V4,
    V6,
    Named,
}

/// How a named key begins when printed.
const NAMED: &str = "key:";

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.family == Family::Named {
            return write!(f, "ClientKey({self})");
        }
        f.debug_struct("ClientKey")
            .field("network", &self.network())
            .field("prefix_len", &self.prefix_len)
            .finish()
    }
}

impl std::str::FromStr for ClientKey {
    type Err = std::net::AddrParseError;

    /// Reads a key as it prints: `192.0.2.7` (the whole address), `2001:db8::/64`, or a named
    /// key's `key:` and 16 hex digits.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(hex) = text.strip_prefix(NAMED) {
            return match u64::from_str_radix(hex, 16) {
                Ok(fingerprint) if hex.len() == 16 => Ok(ClientKey::named(fingerprint)),
                // The address parser's error, for one error type: "invalid IP address syntax".
                _ => Err("".parse::<IpAddr>().expect_err("an empty address")),
            };
        }
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, prefix.parse::<u8>().ok()),
            None => (text, None),
        };
        let ip: IpAddr = address.parse()?;
        let prefix = prefix.unwrap_or_else(|| full_len(ip));
        Ok(ClientKey::new(ip, prefix, prefix))
    }
}

impl fmt::Display for ClientKey {
    /// A single address prints as the address (`192.0.2.7`), a wider key as a CIDR
    /// (`2001:db8::/64`), a named key as `key:` and its fingerprint in 16 hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(fingerprint) = self.fingerprint() {
            return write!(f, "{NAMED}{fingerprint:016x}");
        }
        let network = self.network();
        if self.prefix_len == full_len(network) {
            write!(f, "{network}")
        } else {
            write!(f, "{network}/{}", self.prefix_len)
        }
    }
}

/// The number of bits in `ip`'s family: 32 or 128.
pub(crate) fn full_len(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Clears all but the leading `prefix_len` bits of `ip` (`prefix_len` is clamped to the family).
#[inline]
pub(crate) fn mask(ip: IpAddr, prefix_len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(mask_bits(u32::from(v4), prefix_len))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(mask_bits(u128::from(v6), prefix_len))),
    }
}

/// An address as an integer: [`u32`] for IPv4, [`u128`] for IPv6.
trait AddressBits: Copy + std::ops::Shl<u32, Output = Self> + std::ops::BitAnd<Output = Self> {
    const BITS: u32;
    const ZERO: Self;
    const ONES: Self;
}

impl AddressBits for u32 {
    const BITS: u32 = u32::BITS;
    const ZERO: Self = 0;
    const ONES: Self = u32::MAX;
}

impl AddressBits for u128 {
    const BITS: u32 = u128::BITS;
    const ZERO: Self = 0;
    const ONES: Self = u128::MAX;
}

/// Clears all but the leading `prefix_len` bits of `bits` (all are kept past the width).
#[inline]
fn mask_bits<T: AddressBits>(bits: T, prefix_len: u8) -> T {
    match u32::from(prefix_len) {
        0 => T::ZERO,
        n if n >= T::BITS => bits,
        n => bits & (T::ONES << (T::BITS - n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_mapped_is_ipv4() {
        assert_eq!(
            ClientKey::new(ip("::ffff:10.1.2.3"), 32, 64),
            ClientKey::new(ip("10.1.2.3"), 32, 64)
        );
    }

    #[test]
    fn ipv6_prefix_aggregates_a_subnet() {
        let a = ClientKey::new(ip("2001:db8:0:1::1"), 32, 64);
        let b = ClientKey::new(ip("2001:db8:0:1:8000::1"), 32, 64);
        let other = ClientKey::new(ip("2001:db8:0:2::1"), 32, 64);
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a.network(), ip("2001:db8:0:1::"));
        assert_eq!(a.prefix_len(), 64);
    }

    #[test]
    fn full_ipv6_prefix_keys_exact_addresses() {
        let a = ClientKey::new(ip("2001:db8::1"), 32, 128);
        let b = ClientKey::new(ip("2001:db8::2"), 32, 128);
        assert_ne!(a, b);
        assert_eq!(a.to_string(), "2001:db8::1");
    }

    #[test]
    fn ipv4_prefix_masks_host_bits() {
        let a = ClientKey::new(ip("192.0.2.200"), 24, 64);
        assert_eq!(a.to_string(), "192.0.2.0/24");
        assert_eq!(a, ClientKey::new(ip("192.0.2.1"), 24, 64));
        assert_eq!(
            ClientKey::new(ip("192.0.2.1"), 0, 0).to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn keys_read_back_as_they_print() {
        for key in [
            ClientKey::new("192.0.2.7".parse().unwrap(), 32, 64),
            ClientKey::new("192.0.2.7".parse().unwrap(), 24, 64),
            ClientKey::new("2001:db8::1".parse().unwrap(), 32, 64),
            ClientKey::new("2001:db8::1".parse().unwrap(), 32, 128),
        ] {
            assert_eq!(key.to_string().parse::<ClientKey>().unwrap(), key, "{key}");
        }
        assert!("not an address".parse::<ClientKey>().is_err());
    }

    #[test]
    fn different_prefixes_are_different_keys() {
        assert_ne!(
            ClientKey::new(ip("2001:db8::1"), 32, 64),
            ClientKey::new(ip("2001:db8::1"), 32, 56)
        );
    }

    #[test]
    fn keys_sort_by_family_then_address_then_prefix() {
        let mut keys = [
            ClientKey::new(ip("2001:db8::1"), 32, 64),
            ClientKey::new(ip("10.0.0.2"), 32, 64),
            ClientKey::new(ip("10.0.0.1"), 24, 64),
            ClientKey::new(ip("10.0.0.1"), 32, 64),
            ClientKey::new(ip("9.255.255.255"), 32, 64),
        ];
        keys.sort();
        let shown: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "9.255.255.255",
                "10.0.0.0/24",
                "10.0.0.1",
                "10.0.0.2",
                "2001:db8::/64"
            ]
        );
        assert_eq!(std::mem::size_of::<ClientKey>(), 18);
    }

    #[test]
    fn mask_edges() {
        assert_eq!(mask(ip("255.255.255.255"), 1), ip("128.0.0.0"));
        assert_eq!(mask(ip("255.255.255.255"), 31), ip("255.255.255.254"));
        assert_eq!(mask(ip("ffff::ffff"), 127), ip("ffff::fffe"));
        assert_eq!(mask(ip("ffff::ffff"), 200), ip("ffff::ffff"));
    }
}
