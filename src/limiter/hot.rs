//! [`HotConfig`]: the few settings a common decision reads, copied out of the config in force so
//! that reading them takes no read-modify-write.
//!
//! The config in force sits behind an `ArcSwap`, whose every load writes to a slot of the
//! reading thread's and clears it again: two read-modify-writes, a fifth of a warm admission.
//! A decision with no rate rule and no global cap to look after reads only the key's prefixes,
//! the request limit and the config's generation (the client's connection limit is kept in its
//! entry, per generation), so those are copied here, under a sequence lock: the reader loads a
//! sequence number, the settings, and the sequence number again, and uses the settings only if
//! no config was published in between. Other decisions, and a reader that meets a publication,
//! load the whole config.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use crate::limits::Limits;

/// The hot settings of the config in force, under a sequence lock.
pub(super) struct HotConfig {
    /// Odd while a config is being published; it moves on with every publication.
    sequence: AtomicU64,
    generation: AtomicU64,
    /// The prefixes, in the low two bytes, and [`SIMPLE`].
    packed: AtomicU64,
    max_requests_per_client: AtomicU64,
}

/// Set in [`HotConfig::packed`] when a decision needs nothing but the hot settings (no rate rule,
/// no global count), unless the client's entry says otherwise.
const SIMPLE: u64 = 1 << 16;

/// The hot settings of one config, as one reader saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hot {
    sequence: u64,
    pub(super) generation: u64,
    pub(super) ipv4_prefix: u8,
    pub(super) ipv6_prefix: u8,
    pub(super) max_requests_per_client: usize,
}

impl HotConfig {
    pub(super) fn new(limits: &Limits) -> Self {
        let hot = HotConfig {
            sequence: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            packed: AtomicU64::new(0),
            max_requests_per_client: AtomicU64::new(0),
        };
        hot.publish(limits);
        hot
    }

    /// Copies the hot settings of `limits`, the config now in force. Publications must not
    /// overlap: the limiter makes them while it holds its install lock.
    pub(super) fn publish(&self, limits: &Limits) {
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence.store(sequence + 1, Ordering::Relaxed);
        // The odd number is seen before any of the new settings.
        fence(Ordering::Release);
        let simple = !limits.has_rates() && !limits.counts_total();
        let packed = u64::from(limits.ipv4_prefix)
            | (u64::from(limits.ipv6_prefix) << 8)
            | if simple { SIMPLE } else { 0 };
        self.generation
            .store(limits.lookups.generation, Ordering::Relaxed);
        self.packed.store(packed, Ordering::Relaxed);
        self.max_requests_per_client
            .store(limits.max_requests_per_client as u64, Ordering::Relaxed);
        self.sequence.store(sequence + 2, Ordering::Release);
    }

    /// The hot settings, when the config in force is simple and no publication got in the way;
    /// `None` otherwise, and the decision loads the whole config.
    #[inline]
    pub(super) fn read(&self) -> Option<Hot> {
        let sequence = self.sequence.load(Ordering::Acquire);
        let packed = self.packed.load(Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Relaxed);
        let max_requests_per_client = self.max_requests_per_client.load(Ordering::Relaxed) as usize;
        // The settings are read before the sequence number is read again.
        fence(Ordering::Acquire);
        let unchanged = self.sequence.load(Ordering::Relaxed) == sequence;
        if sequence % 2 == 1 || !unchanged || packed & SIMPLE == 0 {
            return None;
        }
        Some(Hot {
            sequence,
            generation,
            ipv4_prefix: packed as u8,
            ipv6_prefix: (packed >> 8) as u8,
            max_requests_per_client,
        })
    }

    /// Whether `hot` is still the config in force: no publication began since it was read.
    ///
    /// A decision asks this under its map shard's read lock, just before counting. Putting a
    /// global cap in force publishes first, then visits every shard under its write lock; so a
    /// decision either counts before that visit, which then sees the count, or finds here that
    /// the config changed, and decides again on the new one.
    #[inline]
    pub(super) fn still(&self, hot: &Hot) -> bool {
        self.sequence.load(Ordering::Acquire) == hot.sequence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(change: impl FnOnce(&mut Limits)) -> Limits {
        let mut limits = Limits::default();
        change(&mut limits);
        limits.compile().unwrap()
    }

    #[test]
    fn a_simple_config_is_read_hot() {
        let config = limits(|l| {
            l.ipv4_prefix = 24;
            l.ipv6_prefix = 56;
            l.max_requests_per_client = 7;
        });
        let hot = HotConfig::new(&config).read().expect("simple");
        assert_eq!(
            (
                hot.ipv4_prefix,
                hot.ipv6_prefix,
                hot.max_requests_per_client
            ),
            (24, 56, 7)
        );
        assert_eq!(hot.generation, config.lookups.generation);
    }

    #[test]
    fn rates_and_a_global_cap_need_the_whole_config() {
        let rates = limits(|l| {
            l.connect_rate = Some(crate::RateLimit::new(5, std::time::Duration::from_secs(1)));
        });
        assert_eq!(HotConfig::new(&rates).read(), None);
        let cap = limits(|l| l.max_conns_total = 10);
        assert_eq!(HotConfig::new(&cap).read(), None);
    }

    #[test]
    fn a_publication_makes_earlier_readings_stale() {
        let hot_config = HotConfig::new(&limits(|_| {}));
        let before = hot_config.read().unwrap();
        assert!(hot_config.still(&before));
        let next = limits(|l| l.ipv4_prefix = 16);
        hot_config.publish(&next);
        assert!(!hot_config.still(&before));
        let after = hot_config.read().unwrap();
        assert_eq!(after.ipv4_prefix, 16);
        assert_eq!(after.generation, next.lookups.generation);
    }
}
