//! [`CidrTable`]: which of a list of networks is the longest to contain an address, at a cost that
//! does not grow with the list.
//!
//! Networks form a laminar family: any two are either disjoint or one contains the other. So the
//! address space of a family (IPv4 or IPv6) is cut into ranges by the networks' first and
//! one-past-last addresses, and inside each range the longest containing network is the same.
//! The table keeps each range's start, sorted, and that network. A lookup first looks up which
//! ranges an address may be in, in an index of about as many equal slices of the networks' span
//! as there are ranges, then searches those few ranges: for networks spread over their span, one
//! slice holds one or two ranges whatever the length of the list (a list crowded into one corner
//! of its span falls back to a binary search within its slice).

use std::net::IpAddr;

use crate::cidr::Cidr;

/// Networks, each with a value, for longest-prefix lookups. See the [module docs](self).
#[derive(Clone, Debug)]
pub(crate) struct CidrTable<T> {
    v4: Ranges,
    v6: Ranges,
    networks: Box<[(Cidr, T)]>,
}

/// How a network of clients relates to the networks of a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overlap {
    /// No network of the table has an address in it.
    None,
    /// Some addresses in it are in a network of the table, others are not.
    Partly,
    /// A network of the table contains it whole.
    Fully,
}

/// One family's ranges: `starts` ascending from 0, and the longest network covering each range
/// (an index into the table's networks), with the [`Slices`] that find a range fast.
#[derive(Clone, Debug, Default)]
struct Ranges {
    starts: Vec<u128>,
    matches: Vec<Option<u32>>,
    slices: Option<Slices>,
}

/// The span from the second range's start to the last's, cut into `2^bits` slices of
/// `2^shift` addresses each: the ranges an address in slice `s` may be in are
/// `first[s]..=first[s + 1]`, `first[s]` being the range the slice's first address is in.
#[derive(Clone, Debug)]
struct Slices {
    base: u128,
    shift: u32,
    first: Box<[u32]>,
}

/// Fewer ranges than this are searched directly: the slices would not pay for themselves.
const SLICED_FROM: usize = 16;
/// The most slices one family's index has: 64 Ki, 256 KiB of index.
const MAX_SLICE_BITS: u32 = 16;

impl<T> Default for CidrTable<T> {
    fn default() -> Self {
        CidrTable {
            v4: Ranges::default(),
            v6: Ranges::default(),
            networks: Box::default(),
        }
    }
}

impl<T> CidrTable<T> {
    /// A table of `networks`, which must be distinct (configs refuse a network listed twice).
    pub(crate) fn new(networks: impl IntoIterator<Item = (Cidr, T)>) -> Self {
        let networks: Box<[(Cidr, T)]> = networks.into_iter().collect();
        let spans = |v4: bool| -> Vec<(u128, u128, u32)> {
            networks
                .iter()
                .enumerate()
                .filter(|(_, (cidr, _))| cidr.network().is_ipv4() == v4)
                .map(|(i, (cidr, _))| {
                    let (first, last) = span(cidr);
                    (
                        first,
                        last,
                        u32::try_from(i).expect("fewer than 2^32 networks"),
                    )
                })
                .collect()
        };
        CidrTable {
            v4: Ranges::build(spans(true), u128::from(u32::MAX)),
            v6: Ranges::build(spans(false), u128::MAX),
            networks,
        }
    }

    /// Whether the table has no network.
    pub(crate) fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// The longest network containing `ip` (IPv4-mapped IPv6 counts as IPv4), with its value.
    #[inline]
    pub(crate) fn longest(&self, ip: IpAddr) -> Option<&(Cidr, T)> {
        let (ranges, address) = self.family(ip);
        ranges.find(address).map(|i| &self.networks[i as usize])
    }

    /// Whether a network of the table contains `ip`.
    #[inline]
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        !self.is_empty() && self.longest(ip).is_some()
    }

    /// How the table's networks relate to the network `of` (the addresses of one client).
    pub(crate) fn overlap(&self, of: Cidr) -> Overlap {
        if self.is_empty() {
            return Overlap::None;
        }
        let (ranges, first) = self.family(of.network());
        let (_, last) = span(&of);
        if let Some(i) = ranges.find(first) {
            if self.networks[i as usize].0.prefix_len() <= of.prefix_len() {
                return Overlap::Fully;
            }
            return Overlap::Partly;
        }
        // No network at its first address: any network starting inside it?
        if ranges.any_between(first, last) {
            Overlap::Partly
        } else {
            Overlap::None
        }
    }

    fn family(&self, ip: IpAddr) -> (&Ranges, u128) {
        match ip.to_canonical() {
            IpAddr::V4(v4) => (&self.v4, u128::from(u32::from(v4))),
            IpAddr::V6(v6) => (&self.v6, u128::from(v6)),
        }
    }
}

/// The first and last address of `cidr`, as integers of its family.
fn span(cidr: &Cidr) -> (u128, u128) {
    let (first, bits) = match cidr.network() {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let host_bits = bits - u32::from(cidr.prefix_len());
    let size_minus_one = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    (first, first + size_minus_one)
}

impl Ranges {
    /// The ranges that `spans` (first, last, network) cut `0..=max` into.
    fn build(mut spans: Vec<(u128, u128, u32)>, max: u128) -> Self {
        // Outer networks before the networks inside them.
        spans.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut ranges = Ranges {
            starts: vec![0],
            matches: vec![None],
            slices: None,
        };
        // The networks containing the current position, innermost last.
        let mut open: Vec<(u128, u32)> = Vec::new();
        for (first, last, network) in spans {
            while let Some(&(end, _)) = open.last() {
                if end >= first {
                    break;
                }
                open.pop();
                ranges.mark(end + 1, open.last().map(|&(_, n)| n));
            }
            open.push((last, network));
            ranges.mark(first, Some(network));
        }
        while let Some((end, _)) = open.pop() {
            if end < max {
                ranges.mark(end + 1, open.last().map(|&(_, n)| n));
            }
        }
        ranges.slices = Slices::build(&ranges.starts);
        ranges
    }

    /// From `start` on, `network` is the longest match.
    fn mark(&mut self, start: u128, network: Option<u32>) {
        if self.starts.last() == Some(&start) {
            *self
                .matches
                .last_mut()
                .expect("starts and matches have one length") = network;
        } else {
            self.starts.push(start);
            self.matches.push(network);
        }
    }

    /// The longest network containing `address`.
    #[inline]
    fn find(&self, address: u128) -> Option<u32> {
        let (from, to) = match &self.slices {
            Some(slices) => slices.candidates(address),
            // An empty family (a default table) has no range at all.
            None => (0, self.starts.len().checked_sub(1)?),
        };
        // `starts[from] <= address`, so the partition point is at least 1.
        let i = from + self.starts[from..=to].partition_point(|&start| start <= address) - 1;
        self.matches[i]
    }

    /// Whether a range starting in `first..=last` has a network.
    fn any_between(&self, first: u128, last: u128) -> bool {
        let from = self.starts.partition_point(|&start| start <= first);
        self.starts[from..]
            .iter()
            .zip(&self.matches[from..])
            .take_while(|(&start, _)| start <= last)
            // Ranges alternate between networks and gaps: the first two tell.
            .take(2)
            .any(|(_, network)| network.is_some())
    }
}

impl Slices {
    /// The slices for `starts`, when there are enough ranges for them to pay.
    fn build(starts: &[u128]) -> Option<Slices> {
        if starts.len() < SLICED_FROM {
            return None;
        }
        let (base, top) = (starts[1], *starts.last()?);
        let bits = (starts.len().next_power_of_two().trailing_zeros()).min(MAX_SLICE_BITS);
        // The least shift that fits the span into `2^bits` slices.
        let span_bits = 128 - (top - base).leading_zeros();
        let shift = span_bits.saturating_sub(bits);
        let first = (0..=(1u128 << bits))
            .map(|slice| {
                let at = base.saturating_add(slice << shift);
                let range = starts.partition_point(|&start| start <= at) - 1;
                u32::try_from(range).expect("fewer than 2^32 ranges")
            })
            .collect();
        Some(Slices { base, shift, first })
    }

    /// The ranges `address` may be in: `from..=to`.
    #[inline]
    fn candidates(&self, address: u128) -> (usize, usize) {
        if address < self.base {
            return (0, 0);
        }
        let last = self.first.len() - 2;
        let slice = usize::try_from((address - self.base) >> self.shift)
            .map_or(last, |slice| slice.min(last));
        (self.first[slice] as usize, self.first[slice + 1] as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The longest match the slow way: every network, longest first.
    fn naive(networks: &[(Cidr, usize)], ip: IpAddr) -> Option<&(Cidr, usize)> {
        networks
            .iter()
            .filter(|(c, _)| c.contains(ip))
            .max_by_key(|(c, _)| c.prefix_len())
    }

    #[test]
    fn nested_networks_give_the_longest_match() {
        let table = CidrTable::new([
            (cidr("10.0.0.0/8"), 8),
            (cidr("10.1.0.0/16"), 16),
            (cidr("10.1.2.0/24"), 24),
            (cidr("0.0.0.0/0"), 0),
            (cidr("2001:db8::/32"), 32),
            (cidr("2001:db8::/64"), 64),
        ]);
        let value = |s: &str| table.longest(ip(s)).map(|(_, v)| *v);
        assert_eq!(value("10.1.2.3"), Some(24));
        assert_eq!(value("10.1.3.3"), Some(16));
        assert_eq!(value("10.2.0.0"), Some(8));
        assert_eq!(value("11.0.0.0"), Some(0));
        assert_eq!(value("255.255.255.255"), Some(0));
        assert_eq!(value("::ffff:10.1.2.3"), Some(24), "IPv4-mapped is IPv4");
        assert_eq!(value("2001:db8::1"), Some(64));
        assert_eq!(value("2001:db8:0:1::1"), Some(32));
        assert_eq!(value("2001:db9::1"), None, "0.0.0.0/0 is IPv4 only");
        assert_eq!(CidrTable::<()>::default().longest(ip("1.2.3.4")), None);
    }

    #[test]
    fn whole_families_and_their_edges() {
        let table = CidrTable::new([(cidr("::/0"), ()), (cidr("255.255.255.255/32"), ())]);
        assert!(table.contains(ip("::")));
        assert!(table.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(table.contains(ip("255.255.255.255")));
        assert!(!table.contains(ip("255.255.255.254")));
        assert!(!table.contains(ip("0.0.0.0")));
    }

    #[test]
    fn lookups_agree_with_the_slow_way_on_random_networks() {
        let mut next = crate::testing::xorshift(0x9e37_79b9_7f4a_7c15);
        for round in 0..20 {
            let mut networks: Vec<(Cidr, usize)> = Vec::new();
            for i in 0..200 {
                // Short prefixes over a small space, so that many networks nest.
                let bits = next();
                let candidate = if i % 3 == 0 {
                    let len = (bits % 33) as u8;
                    let addr = IpAddr::from((bits as u32 >> 8).to_be_bytes());
                    Cidr::new(crate::key::mask(addr, len), len)
                } else {
                    let len = 16 + (bits % 17) as u8;
                    let addr = IpAddr::from(((bits as u32) & 0x0a0b_ffff).to_be_bytes());
                    Cidr::new(crate::key::mask(addr, len), len)
                };
                let candidate = candidate.unwrap();
                if !networks.iter().any(|(c, _)| *c == candidate) {
                    networks.push((candidate, i));
                }
            }
            let table = CidrTable::new(networks.clone());
            for _ in 0..2000 {
                let bits = next() as u32;
                let probe = IpAddr::from(
                    (bits
                        & if round % 2 == 0 {
                            0x0a0b_ffff
                        } else {
                            u32::MAX
                        })
                    .to_be_bytes(),
                );
                assert_eq!(table.longest(probe), naive(&networks, probe), "{probe}");
            }
        }
    }

    #[test]
    fn lookups_agree_with_the_slow_way_at_every_edge_of_many_ipv6_networks() {
        let mut next = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        let mut networks: Vec<(Cidr, usize)> = Vec::new();
        for i in 0..1500 {
            let bits = next();
            let len = 32 + (bits % 97) as u8;
            // Inside 2001:db8::/32, crowded into a few corners of it.
            let address = (0x2001_0db8u128 << 96)
                | (u128::from(bits % 4) << 94)
                | (u128::from(next()) << 30)
                | u128::from(next() as u32);
            let network = IpAddr::from(address.to_be_bytes());
            let candidate = Cidr::new(crate::key::mask(network, len), len).unwrap();
            if !networks.iter().any(|(c, _)| *c == candidate) {
                networks.push((candidate, i));
            }
        }
        let table = CidrTable::new(networks.clone());
        assert!(table.v6.slices.is_some(), "enough ranges to be sliced");
        // Each network's first and last address, and one either side.
        for (network, _) in &networks {
            let (first, last) = span(network);
            for probe in [first.wrapping_sub(1), first, last, last.wrapping_add(1)] {
                let probe = IpAddr::from(probe.to_be_bytes());
                assert_eq!(table.longest(probe), naive(&networks, probe), "{probe}");
            }
        }
        for probe in [
            "::",
            "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff",
            "ffff::1",
            "2001:db8::",
        ] {
            let probe = ip(probe);
            assert_eq!(table.longest(probe), naive(&networks, probe), "{probe}");
        }
    }

    #[test]
    fn overlap_tells_whole_partial_and_none() {
        let table = CidrTable::new([
            (cidr("2001:db8:0:1::/64"), ()),
            (cidr("2001:db8:0:2::7/128"), ()),
            (cidr("192.0.2.0/24"), ()),
        ]);
        assert_eq!(table.overlap(cidr("2001:db8:0:1::/64")), Overlap::Fully);
        assert_eq!(table.overlap(cidr("2001:db8:0:2::/64")), Overlap::Partly);
        assert_eq!(table.overlap(cidr("2001:db8:0:3::/64")), Overlap::None);
        assert_eq!(table.overlap(cidr("2001:db8::/48")), Overlap::Partly);
        assert_eq!(table.overlap(cidr("192.0.2.9/32")), Overlap::Fully);
        assert_eq!(table.overlap(cidr("192.0.3.9/32")), Overlap::None);
        assert_eq!(
            CidrTable::<()>::default().overlap(cidr("::/0")),
            Overlap::None
        );
    }
}
