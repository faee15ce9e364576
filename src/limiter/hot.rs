//! [`HotConfig`]: the few settings a common decision reads, copied out of the config in force so
//! that reading them takes no read-modify-write.
//!
//! The config in force sits behind an `ArcSwap`, whose every load writes to a slot of the
//! reading thread's and clears it again: two read-modify-writes, a fifth of a warm admission.
//! A common decision (no global budget of its kind, no path rule to match, a client seen before with no ban
//! and no exempt address) reads only the key's prefixes, the request limit, the config's
//! generation, and the rate rule of its kind, if there is one (the client's connection limit is
//! kept in its entry, per generation); so those are copied here, under a sequence lock: the
//! reader loads a sequence number, the settings, and the sequence number again, and uses the
//! settings only if no config was published in between. Other decisions, and a reader that
//! meets a publication, load the whole config.

use std::sync::atomic::{fence, AtomicU64, Ordering};

use std::time::Duration;

use super::Kind;
use crate::limits::Limits;
use crate::rate::{RateLimit, Strategy};

/// The hot settings of the config in force, under a sequence lock.
pub(super) struct HotConfig {
    /// Odd while a config is being published; it moves on with every publication.
    sequence: AtomicU64,
    generation: AtomicU64,
    /// The prefixes, in the low two bytes, and [`SIMPLE`].
    packed: AtomicU64,
    max_requests_per_client: AtomicU64,
    /// The rate rule of each [`Kind`] (see [`pack_rule`]), or zeros for none, and its interval.
    rules: [[AtomicU64; 3]; 2],
}

/// Set in [`HotConfig::packed`], per [`Kind`], when a decision of the kind needs nothing but the
/// hot settings (no global count of the kind), unless the client's entry says otherwise.
const SIMPLE: [u64; 2] = [1 << 16, 1 << 21];
/// Set when the config has path rules: a request with a route needs the whole config.
const PATHS: u64 = 1 << 17;
/// Set, per [`Kind`], when its rule runs dry: its refusals are counted, not made.
const DRY_RUN: [u64; 2] = [1 << 18, 1 << 19];
/// Set when keyed requests are held to the config's own request limits, per key, and to
/// nothing per address but a ban: no tier, no assignment, no limit per address.
const KEYS_PLAIN: u64 = 1 << 20;

/// The hot settings of one config, as one reader saw them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Hot {
    sequence: u64,
    pub(super) generation: u64,
    pub(super) ipv4_prefix: u8,
    pub(super) ipv6_prefix: u8,
    pub(super) max_requests_per_client: usize,
    /// Whether a keyed request is decided like an address's: see [`KEYS_PLAIN`].
    pub(super) keys_plain: bool,
    /// The rate rule of the decision's kind, packed (see [`Hot::rule`]), and its interval.
    rule: [u64; 3],
}

impl Hot {
    /// The rate rule of the decision's kind, if it has one, with its interval (what a decision
    /// would otherwise divide for). Kept packed until asked for, so that a decision with no
    /// rule carries three words, not a rule.
    #[inline]
    pub(super) fn rule(&self) -> Option<(RateLimit, u64)> {
        let [first, second, interval] = self.rule;
        unpack_rule([first, second]).map(|rule| (rule, interval))
    }
}

impl HotConfig {
    pub(super) fn new(limits: &Limits) -> Self {
        let hot = HotConfig {
            sequence: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            packed: AtomicU64::new(0),
            max_requests_per_client: AtomicU64::new(0),
            rules: Default::default(),
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
        let flag = |set: bool, bit: u64| if set { bit } else { 0 };
        let rules = [&limits.connect_rate, &limits.request_rate];
        let packed = u64::from(limits.ipv4_prefix)
            | (u64::from(limits.ipv6_prefix) << 8)
            | flag(!limits.counts_total(Kind::Connection), SIMPLE[0])
            | flag(!limits.counts_total(Kind::Request), SIMPLE[1])
            | flag(!limits.path_rules.is_empty(), PATHS)
            | flag(rules[0].is_some_and(|r| r.dry_run), DRY_RUN[0])
            | flag(rules[1].is_some_and(|r| r.dry_run), DRY_RUN[1])
            | flag(limits.keys.is_plain(), KEYS_PLAIN);
        for (words, rule) in self.rules.iter().zip(rules) {
            let [first, second] = rule.as_ref().map_or([0, 0], pack_rule);
            words[0].store(first, Ordering::Relaxed);
            words[1].store(second, Ordering::Relaxed);
            let interval = rule.as_ref().map_or(0, RateLimit::interval_nanos);
            words[2].store(interval, Ordering::Relaxed);
        }
        self.generation
            .store(limits.lookups.generation, Ordering::Relaxed);
        self.packed.store(packed, Ordering::Relaxed);
        self.max_requests_per_client
            .store(limits.max_requests_per_client as u64, Ordering::Relaxed);
        self.sequence.store(sequence + 2, Ordering::Release);
    }

    /// The hot settings for a decision of `kind` (a request `routed` or not), when they are
    /// enough for it and no publication got in the way; `None` otherwise, and the decision loads
    /// the whole config.
    #[inline]
    pub(super) fn read(&self, kind: Kind, routed: bool) -> Option<Hot> {
        let sequence = self.sequence.load(Ordering::Acquire);
        let packed = self.packed.load(Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Relaxed);
        let max_requests_per_client = self.max_requests_per_client.load(Ordering::Relaxed) as usize;
        let words = &self.rules[kind as usize];
        let rule = [
            words[0].load(Ordering::Relaxed),
            words[1].load(Ordering::Relaxed),
            words[2].load(Ordering::Relaxed),
        ];
        // The settings are read before the sequence number is read again.
        fence(Ordering::Acquire);
        let unchanged = self.sequence.load(Ordering::Relaxed) == sequence;
        let needs_paths = routed && packed & PATHS != 0;
        let dry_run = packed & DRY_RUN[kind as usize] != 0;
        let simple = packed & SIMPLE[kind as usize] != 0;
        if sequence % 2 == 1 || !unchanged || !simple || needs_paths || dry_run {
            return None;
        }
        Some(Hot {
            keys_plain: packed & KEYS_PLAIN != 0,
            sequence,
            generation,
            ipv4_prefix: packed as u8,
            ipv6_prefix: (packed >> 8) as u8,
            max_requests_per_client,
            rule,
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

/// A rule in two words: its events and burst; its period in nanoseconds (at most 100 years, so
/// under 2^62) and its strategy in the top two bits. A rule's events are at least 1, so a first
/// word of 0 is no rule.
fn pack_rule(rule: &RateLimit) -> [u64; 2] {
    let strategy = match rule.strategy {
        Strategy::Cooldown => 0,
        Strategy::FixedWindow => 1,
        Strategy::SlidingWindow => 2,
        Strategy::TokenBucket => 3,
    };
    let period = crate::clock::nanos(rule.period);
    [
        u64::from(rule.events) | u64::from(rule.burst) << 32,
        period | strategy << 62,
    ]
}

/// The rule [`pack_rule`] packed, if any.
#[inline]
fn unpack_rule([first, second]: [u64; 2]) -> Option<RateLimit> {
    if first == 0 {
        return None;
    }
    let strategy = match second >> 62 {
        0 => Strategy::Cooldown,
        1 => Strategy::FixedWindow,
        2 => Strategy::SlidingWindow,
        _ => Strategy::TokenBucket,
    };
    let rule = RateLimit::new(first as u32, Duration::from_nanos(second & (u64::MAX >> 2)));
    Some(rule.strategy(strategy).burst((first >> 32) as u32))
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
        let hot = HotConfig::new(&config)
            .read(Kind::Connection, false)
            .expect("simple");
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
    fn a_global_cap_path_rules_for_a_route_and_dry_runs_need_the_whole_config() {
        let rule = crate::RateLimit::new(5, std::time::Duration::from_secs(1));
        let cap = limits(|l| l.max_conns_total = 10);
        assert_eq!(HotConfig::new(&cap).read(Kind::Connection, false), None);
        assert!(HotConfig::new(&cap).read(Kind::Request, false).is_some());
        let requests = limits(|l| l.max_requests_total = 10);
        assert_eq!(HotConfig::new(&requests).read(Kind::Request, false), None);
        assert!(HotConfig::new(&requests)
            .read(Kind::Connection, false)
            .is_some());
        let paths = limits(|l| l.path_rules = vec![crate::rate::PathRule::exact("/a", rule)]);
        assert_eq!(HotConfig::new(&paths).read(Kind::Request, true), None);
        assert!(HotConfig::new(&paths).read(Kind::Request, false).is_some());
        let dry = limits(|l| l.request_rate = Some(rule.dry_run()));
        assert_eq!(HotConfig::new(&dry).read(Kind::Request, false), None);
        assert!(HotConfig::new(&dry).read(Kind::Connection, false).is_some());
    }

    #[test]
    fn each_kind_reads_its_rate_rule_as_it_was() {
        let longest = std::time::Duration::from_secs(100 * 365 * 86_400);
        for rule in [
            crate::RateLimit::new(1, longest).strategy(Strategy::Cooldown),
            crate::RateLimit::new(u32::MAX, longest)
                .strategy(Strategy::TokenBucket)
                .burst(u32::MAX),
            crate::RateLimit::new(7, std::time::Duration::from_nanos(700))
                .strategy(Strategy::FixedWindow),
            crate::RateLimit::new(3, std::time::Duration::from_millis(1500)),
        ] {
            let config = limits(|l| l.request_rate = Some(rule));
            let hot = HotConfig::new(&config);
            assert_eq!(
                hot.read(Kind::Request, false).unwrap().rule(),
                Some((rule, rule.interval_nanos()))
            );
            assert_eq!(hot.read(Kind::Connection, false).unwrap().rule(), None);
        }
    }

    #[test]
    fn a_publication_makes_earlier_readings_stale() {
        let hot_config = HotConfig::new(&limits(|_| {}));
        let before = hot_config.read(Kind::Connection, false).unwrap();
        assert!(hot_config.still(&before));
        let next = limits(|l| l.ipv4_prefix = 16);
        hot_config.publish(&next);
        assert!(!hot_config.still(&before));
        let after = hot_config.read(Kind::Connection, false).unwrap();
        assert_eq!(after.ipv4_prefix, 16);
        assert_eq!(after.generation, next.lookups.generation);
    }
}
