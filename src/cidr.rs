//! [`Cidr`]: an IP network, for exemptions and per-network limits.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::key::{full_len, mask, ClientKey};

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32`.
///
/// A `Cidr` is always a network address: constructing one whose host bits are set
/// (`10.0.0.1/8`) is an error rather than a silent truncation, because such a value is nearly
/// always a typo for a different network. An IPv4-mapped IPv6 network
/// (`::ffff:10.0.0.0/104`) becomes the IPv4 network it maps (`10.0.0.0/8`), matching how client
/// addresses are normalised.
///
/// # Examples
///
/// ```
/// use tower_connlimit::Cidr;
///
/// let lan: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(lan.contains("10.20.30.40".parse().unwrap()));
/// assert!(lan.contains("::ffff:10.0.0.1".parse().unwrap()));
/// assert!(!lan.contains("192.0.2.1".parse().unwrap()));
///
/// let err = "10.0.0.1/8".parse::<Cidr>().unwrap_err();
/// assert_eq!(err.to_string(), "10.0.0.1/8 has host bits set; the network is 10.0.0.0/8");
/// ```
///
/// In config files (feature `serde`), a network is written as a string, as [`FromStr`] parses it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "String", into = "String")
)]
pub struct Cidr {
    network: IpAddr,
    prefix_len: u8,
}

impl Cidr {
    /// The network `addr/prefix_len`.
    ///
    /// # Errors
    ///
    /// When `prefix_len` is longer than the address (33+ for IPv4, 129+ for IPv6), or when `addr`
    /// has bits set past the prefix.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > full_len(addr) {
            return Err(CidrError::PrefixTooLong { addr, prefix_len });
        }
        let (addr, prefix_len) = match addr {
            IpAddr::V6(v6) if prefix_len >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix_len - 96),
                None => (addr, prefix_len),
            },
            _ => (addr, prefix_len),
        };
        let network = mask(addr, prefix_len);
        if network != addr {
            return Err(CidrError::HostBitsSet {
                addr,
                prefix_len,
                network,
            });
        }
        Ok(Cidr {
            network,
            prefix_len,
        })
    }

    /// The network address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix_len) == self.network
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `addr/len`; a bare address is the single-address network (`/32` or `/128`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || CidrError::Syntax(s.to_owned());
        let (addr, prefix_len) = match s.split_once('/') {
            Some((addr, len)) => {
                let addr: IpAddr = addr.trim().parse().map_err(|_| invalid())?;
                let len: u8 = len.trim().parse().map_err(|_| invalid())?;
                (addr, len)
            }
            None => {
                let addr: IpAddr = s.trim().parse().map_err(|_| invalid())?;
                (addr, full_len(addr))
            }
        };
        Cidr::new(addr, prefix_len)
    }
}

impl From<ClientKey> for Cidr {
    /// The network of one client: the addresses that share its key.
    fn from(key: ClientKey) -> Self {
        Cidr {
            network: key.network(),
            prefix_len: key.prefix_len(),
        }
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    /// The network as [`FromStr`] reads it back: `10.0.0.0/8`.
    fn from(cidr: Cidr) -> Self {
        cidr.to_string()
    }
}

impl From<IpAddr> for Cidr {
    /// The single-address network.
    fn from(addr: IpAddr) -> Self {
        let addr = addr.to_canonical();
        Cidr {
            network: addr,
            prefix_len: full_len(addr),
        }
    }
}

/// Why a string or an address/length pair is not a [`Cidr`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrError {
    /// Not of the form `address/length` (or a bare address).
    Syntax(String),
    /// The prefix is longer than the address.
    PrefixTooLong {
        /// The address given.
        addr: IpAddr,
        /// The prefix length given.
        prefix_len: u8,
    },
    /// Bits past the prefix are set, so the value names a host, not a network.
    HostBitsSet {
        /// The address given.
        addr: IpAddr,
        /// The prefix length given.
        prefix_len: u8,
        /// The network the address lies in.
        network: IpAddr,
    },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Syntax(s) => write!(f, "{s:?} is not a CIDR such as 10.0.0.0/8"),
            CidrError::PrefixTooLong { addr, prefix_len } => write!(
                f,
                "prefix /{prefix_len} is longer than the {} bits of {addr}",
                full_len(*addr)
            ),
            CidrError::HostBitsSet {
                addr,
                prefix_len,
                network,
            } => write!(
                f,
                "{addr}/{prefix_len} has host bits set; the network is {network}/{prefix_len}"
            ),
        }
    }
}

impl std::error::Error for CidrError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_bare_addresses() {
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert_eq!(c.prefix_len(), 32);
        assert!(c.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!c.contains("2001:db9::1".parse().unwrap()));
        let single: Cidr = "192.0.2.1".parse().unwrap();
        assert_eq!(single.to_string(), "192.0.2.1/32");
        assert_eq!(" 0.0.0.0/0 ".parse::<Cidr>().unwrap().prefix_len(), 0);
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>().unwrap_err().to_string(),
            "prefix /33 is longer than the 32 bits of 10.0.0.0"
        );
        assert!(matches!(
            "banana".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::Syntax(_))
        ));
        assert!(matches!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBitsSet { .. })
        ));
    }

    #[test]
    fn mapped_networks_become_ipv4() {
        let c: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn families_do_not_mix() {
        let all_v4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(!all_v4.contains("::1".parse().unwrap()));
        let all_v6: Cidr = "::/0".parse().unwrap();
        assert!(!all_v6.contains("127.0.0.1".parse().unwrap()));
    }
}
