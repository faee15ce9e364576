//! Rate rules: "at most `events` per `period`", counted by one of four strategies.
//!
//! | strategy | allows an event when | state | memory of the past |
//! |---|---|---|---|
//! | [`Cooldown`](Strategy::Cooldown) | at least `period / events` has passed since the last allowed event | last event | one gap |
//! | [`FixedWindow`](Strategy::FixedWindow) | fewer than `events` were allowed in the current aligned window of `period` | window start, count | one window |
//! | [`SlidingWindow`](Strategy::SlidingWindow) | the two-window estimate `prev × (1 − elapsed/period) + current` is below `events` | window start, two counts | two windows |
//! | [`TokenBucket`](Strategy::TokenBucket) | a token is left in a bucket of `burst` tokens refilled at `events` per `period` (GCRA) | theoretical arrival time | until the bucket is full |
//!
//! Refused events are not counted: a client hammering a limit is refused for as long as it
//! hammers, but is not pushed further back for it (bans deal with persistent offenders).
//!
//! **The sliding window is the two-window weighted estimate**, not an exact log: it keeps two
//! counters instead of a timestamp per event. It is exact when events are spread evenly over the
//! previous window. It can err both ways when they are not: it refuses early when the previous
//! window's events came at its start, and admits more than `events` in a window of length
//! `period` when they came at its end.
//!
//! # Each strategy's bound
//!
//! The most events one client gets admitted in any window of length `period` (any, not only an
//! aligned one; from one instant up to, not including, `period` later). Each figure is reached, and never passed, by a client that tries without pause
//! from a quiet start or bursts at a window's very end; `tests/rates.rs` measures them with
//! `20 per 10 s` on a fake clock, 1,000 steps per period:
//!
//! | strategy | most in any window of `period` | with `20 per 10 s` |
//! |---|---|---|
//! | `Cooldown` | `events`, exactly: one every `period / events` | 20 |
//! | `TokenBucket` | `burst + events − 1`, exactly (GCRA); `events` with `burst(1)` | 39 (burst 5: 24) |
//! | `SlidingWindow` | `2 × events`: a burst at a window's end, then the next window's estimate discounts it while it is still inside the sliding window | 40 |
//! | `FixedWindow` | `2 × events`: a burst at the end of a window and another at the start of the next | 40 |
//!
//! Outside these edges the sliding window is close to the rule: clients whose events spread over
//! the period get what the rule says. **For an exact bound choose the token bucket**: it holds
//! any window of length `t` (from one instant up to, not including, `t` later) to
//! `burst + ⌈events × t / period⌉ − 1`, so "never more than `M` in any
//! `period`, in bursts of up to `b`" is `RateLimit::new(M − b + 1, period)` with
//! `.strategy(Strategy::TokenBucket).burst(b)`. The cooldown is the same bound with no burst.
//!
//! Windows are aligned to the limiter clock's origin. Time is kept in nanoseconds; a rule whose
//! `period / events` is below one nanosecond is refused by validation.

use std::time::Duration;

mod atomic;
mod path;
mod quota;

pub(crate) use self::atomic::{AtomicRate, SLIDING_MAX_EVENTS};
pub use self::path::{PathMatch, PathRule};
pub use self::quota::{InFlightQuota, Quota, RateQuota};

use crate::clock::nanos;
use crate::error::ConfigError;

/// How a [`RateLimit`] counts events. See the [module docs](self) for the exact semantics.
///
/// In config files: `cooldown`, `fixed_window`, `sliding_window`, `token_bucket`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
#[non_exhaustive]
pub enum Strategy {
    /// A minimum gap of `period / events` between allowed events.
    Cooldown,
    /// At most `events` per aligned window of `period`.
    FixedWindow,
    /// At most `events` per sliding `period`, by the two-window weighted estimate.
    #[default]
    SlidingWindow,
    /// A bucket of `burst` tokens (default `events`), refilled at `events` per `period`.
    TokenBucket,
}

impl Strategy {
    /// The strategy as config files name it: `cooldown`, `fixed_window`, `sliding_window`,
    /// `token_bucket`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Cooldown => "cooldown",
            Strategy::FixedWindow => "fixed_window",
            Strategy::SlidingWindow => "sliding_window",
            Strategy::TokenBucket => "token_bucket",
        }
    }
}

/// At most `events` events per `period`, counted by `strategy`.
///
/// ```
/// use std::time::Duration;
/// use tower_connlimit::{RateLimit, rate::Strategy};
///
/// // 10 requests a second, in bursts of up to 20.
/// let rule = RateLimit::new(10, Duration::from_secs(1))
///     .strategy(Strategy::TokenBucket)
///     .burst(20);
/// # let _ = rule;
/// ```
///
/// In a config file (feature `serde`), a rule is a table with `events`, `period` (`"1s"`,
/// `"10m"`), and optionally `strategy`, `burst` and `dry_run`; a rule that names no strategy
/// gets its field's default: `cooldown` for `connect_rate`, `sliding_window` for the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(from = "file::RateSpec", into = "file::RateSpec")
)]
pub struct RateLimit {
    /// Events allowed per `period`; at least 1.
    pub events: u32,
    /// The period `events` are counted over; more than zero.
    pub period: Duration,
    /// How events are counted.
    pub strategy: Strategy,
    /// Token bucket only: how many events may come at once after a quiet spell. 0 means `events`.
    pub burst: u32,
    /// Shadow mode: decide and count as if enforcing, log what would be refused, but admit.
    /// Stats count such events under `dry_run`, apart from enforced refusals.
    pub dry_run: bool,
}

impl RateLimit {
    /// At most `events` per `period`, by the sliding window.
    pub fn new(events: u32, period: Duration) -> Self {
        RateLimit {
            events,
            period,
            strategy: Strategy::SlidingWindow,
            burst: 0,
            dry_run: false,
        }
    }

    /// The same rule in shadow mode: refusals are counted and logged, not enforced.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// The same rule counted by `strategy`.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The same rule with a token-bucket burst of `burst` (0: `events`).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Checks the rule, naming `field` in the error.
    pub(crate) fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.events == 0 {
            return Err(ConfigError::zero_count(format!("{field}.events"), field));
        }
        if self.period.is_zero() {
            return Err(ConfigError::new(
                format!("{field}.period"),
                "must be longer than zero",
            ));
        }
        if self.strategy == Strategy::SlidingWindow && self.events > SLIDING_MAX_EVENTS {
            return Err(ConfigError::new(
                format!("{field}.events"),
                format!(
                    "a sliding window counts at most {SLIDING_MAX_EVENTS} events per period, \
                     got {}: use a longer period, or a token bucket",
                    self.events
                ),
            ));
        }
        crate::clock::at_most_longest(&format!("{field}.period"), self.period)?;
        if nanos(self.period) / u64::from(self.events) == 0 {
            return Err(ConfigError::new(
                format!("{field}.period"),
                format!(
                    "{:?} for {} events is less than a nanosecond per event",
                    self.period, self.events
                ),
            ));
        }
        Ok(())
    }

    fn period_nanos(&self) -> u64 {
        nanos(self.period)
    }

    /// The gap between events at the sustained rate: `period / events`, in nanoseconds.
    pub(crate) fn interval_nanos(&self) -> u64 {
        self.period_nanos() / u64::from(self.events)
    }

    fn burst_or_events(&self) -> u32 {
        if self.burst == 0 {
            self.events
        } else {
            self.burst
        }
    }
}

/// Rate rules in config files, where each rule's field chooses the default strategy.
#[cfg(feature = "serde")]
pub(crate) mod file {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::{RateLimit, Strategy};

    /// A rule as a file writes it: the strategy may be left to the rule's field. A rule is
    /// written with its strategy, so that it reads back the same under any field.
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(crate) struct RateSpec {
        events: u32,
        #[serde(with = "humantime_serde")]
        period: Duration,
        #[serde(default)]
        strategy: Option<Strategy>,
        #[serde(default)]
        burst: u32,
        #[serde(default)]
        dry_run: bool,
    }

    impl RateSpec {
        fn into_rule(self, default_strategy: Strategy) -> RateLimit {
            RateLimit {
                events: self.events,
                period: self.period,
                strategy: self.strategy.unwrap_or(default_strategy),
                burst: self.burst,
                dry_run: self.dry_run,
            }
        }
    }

    impl From<RateSpec> for RateLimit {
        /// A rule with no strategy of its own counts by the sliding window.
        fn from(spec: RateSpec) -> Self {
            spec.into_rule(Strategy::SlidingWindow)
        }
    }

    impl From<RateLimit> for RateSpec {
        fn from(rule: RateLimit) -> Self {
            RateSpec {
                events: rule.events,
                period: rule.period,
                strategy: Some(rule.strategy),
                burst: rule.burst,
                dry_run: rule.dry_run,
            }
        }
    }

    /// `connect_rate`, whose rules count by [`Strategy::Cooldown`] unless they say otherwise,
    /// as a typical connection gate does.
    pub(crate) fn cooldown_by_default<'de, D>(d: D) -> Result<Option<RateLimit>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        Option::<RateSpec>::deserialize(d).map(|spec| spec.map(|s| s.into_rule(Strategy::Cooldown)))
    }
}

/// The per-client state of one rate rule, plainly, as a lock would guard it: the reference the
/// tests hold [`AtomicRate`], the state the limiter keeps, to (and check against a model of
/// every strategy).
///
/// - cooldown: `mark` is the last allowed event, `count` whether there was one;
/// - fixed window: `mark` is the window start, `count` the events allowed in it;
/// - sliding window: as fixed, with `prev` the count of the window before;
/// - token bucket: `mark` is the theoretical arrival time (GCRA).
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RateState {
    mark: u64,
    count: u32,
    prev: u32,
}

#[cfg(test)]
impl RateState {
    /// Decides an event at `now` (nanoseconds on the limiter's clock) and counts it if allowed.
    /// A refusal carries how long until the same event would be allowed, in nanoseconds (at
    /// least 1).
    pub(crate) fn check(&mut self, rule: &RateLimit, now: u64) -> Result<(), u64> {
        match rule.strategy {
            Strategy::Cooldown => self.cooldown(rule, now),
            Strategy::FixedWindow => self.fixed_window(rule, now),
            Strategy::SlidingWindow => self.sliding_window(rule, now),
            Strategy::TokenBucket => self.token_bucket(rule, now),
        }
    }

    /// Counts `n` events that happened elsewhere (on other nodes of a fleet) as if they had
    /// happened at `now`, whether or not the rule would have admitted them: they happened.
    pub(crate) fn charge(&mut self, rule: &RateLimit, now: u64, n: u32) {
        if n == 0 {
            return;
        }
        match rule.strategy {
            Strategy::Cooldown => {
                self.mark = self.mark.max(now);
                self.count = 1;
            }
            Strategy::FixedWindow => {
                self.roll_window(rule.period_nanos(), now, false);
                self.count = self.count.saturating_add(n);
            }
            Strategy::SlidingWindow => {
                self.roll_window(rule.period_nanos(), now, true);
                self.count = self.count.saturating_add(n);
            }
            Strategy::TokenBucket => {
                let spent = rule.interval_nanos().saturating_mul(u64::from(n));
                self.mark = self.mark.max(now).saturating_add(spent);
            }
        }
    }

    /// From when on this state can no longer refuse anything, so it may be forgotten.
    pub(crate) fn expires_at(&self, rule: &RateLimit) -> u64 {
        let period = rule.period_nanos();
        match rule.strategy {
            Strategy::Cooldown => self.mark.saturating_add(rule.interval_nanos()),
            Strategy::FixedWindow => self.mark.saturating_add(period),
            Strategy::SlidingWindow => self.mark.saturating_add(period.saturating_mul(2)),
            Strategy::TokenBucket => self.mark,
        }
    }

    fn cooldown(&mut self, rule: &RateLimit, now: u64) -> Result<(), u64> {
        let gap = rule.interval_nanos();
        let since = now.saturating_sub(self.mark);
        if self.count == 0 || since >= gap {
            self.mark = now;
            self.count = 1;
            Ok(())
        } else {
            Err(gap - since)
        }
    }

    /// Moves the window forward to the one containing `now`; returns its start.
    fn roll_window(&mut self, period: u64, now: u64, keep_previous: bool) -> u64 {
        let start = now - now % period;
        if start != self.mark {
            self.prev = if keep_previous && start == self.mark.saturating_add(period) {
                self.count
            } else {
                0
            };
            self.count = 0;
            self.mark = start;
        }
        start
    }

    fn fixed_window(&mut self, rule: &RateLimit, now: u64) -> Result<(), u64> {
        let period = rule.period_nanos();
        let start = self.roll_window(period, now, false);
        if self.count < rule.events {
            self.count += 1;
            Ok(())
        } else {
            Err(start + period - now)
        }
    }

    fn sliding_window(&mut self, rule: &RateLimit, now: u64) -> Result<(), u64> {
        let period = rule.period_nanos();
        let start = self.roll_window(period, now, true);
        let elapsed = now - start;
        if sliding_estimate_below(self.prev, self.count, rule.events, period, elapsed) {
            self.count += 1;
            return Ok(());
        }
        Err(sliding_wait(
            self.prev,
            self.count,
            rule.events,
            period,
            elapsed,
        ))
    }

    fn token_bucket(&mut self, rule: &RateLimit, now: u64) -> Result<(), u64> {
        let interval = rule.interval_nanos();
        let tolerance = interval.saturating_mul(u64::from(rule.burst_or_events() - 1));
        let tat = self.mark.max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            Err(ahead - tolerance)
        } else {
            self.mark = tat.saturating_add(interval);
            Ok(())
        }
    }
}

/// Whether `prev × (period − elapsed) / period + count < events`, in exact integer arithmetic.
fn sliding_estimate_below(prev: u32, count: u32, events: u32, period: u64, elapsed: u64) -> bool {
    let weighted_prev = u128::from(prev) * u128::from(period - elapsed);
    weighted_prev + u128::from(count) * u128::from(period) < u128::from(events) * u128::from(period)
}

/// How long until the sliding estimate admits one more event, given no further events.
fn sliding_wait(prev: u32, count: u32, events: u32, period: u64, elapsed: u64) -> u64 {
    // Within this window, the estimate falls as `elapsed` grows, if `count < events`.
    if count < events {
        if let Some(at) = first_elapsed_below(prev, count, events, period) {
            if at < period {
                return at.saturating_sub(elapsed).max(1);
            }
        }
    }
    // Otherwise in the next window, where `prev` becomes `count` and `count` becomes 0.
    let to_next = period - elapsed;
    to_next + first_elapsed_below(count, 0, events, period).unwrap_or(0)
}

/// The least elapsed time `e` (in `0..=period`) with `prev × (period − e) + count × period <
/// events × period`, or `None` when even `e = period` does not satisfy it.
fn first_elapsed_below(prev: u32, count: u32, events: u32, period: u64) -> Option<u64> {
    if count >= events {
        return None;
    }
    if prev == 0 {
        return Some(0);
    }
    // prev × (period − e) < (events − count) × period
    // ⇔ period − e < (events − count) × period / prev, i.e. period − e ≤ ceil(..) − 1.
    let room = u128::from(events - count) * u128::from(period);
    let max_remaining = room.div_ceil(u128::from(prev)) - 1;
    let max_remaining = u64::try_from(max_remaining).unwrap_or(u64::MAX);
    Some(period.saturating_sub(max_remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    /// The reference model: every strategy decided from the full log of allowed events.
    struct Model {
        rule: RateLimit,
        allowed: Vec<u64>,
    }

    impl Model {
        fn allows(&mut self, now: u64) -> bool {
            let rule = self.rule;
            let period = rule.period_nanos();
            let events = u64::from(rule.events);
            let ok = match rule.strategy {
                Strategy::Cooldown => self
                    .allowed
                    .last()
                    .is_none_or(|&last| now - last >= period / events),
                Strategy::FixedWindow => {
                    let window = now / period;
                    (self
                        .allowed
                        .iter()
                        .filter(|&&t| t / period == window)
                        .count() as u64)
                        < events
                }
                Strategy::SlidingWindow => {
                    let start = now - now % period;
                    let count = self.allowed.iter().filter(|&&t| t >= start).count() as u128;
                    let prev = self
                        .allowed
                        .iter()
                        .filter(|&&t| t < start && t + period >= start)
                        .count() as u128;
                    prev * u128::from(period - (now - start)) + count * u128::from(period)
                        < u128::from(events) * u128::from(period)
                }
                Strategy::TokenBucket => {
                    // A bucket of `burst` tokens, refilled continuously at `events` per
                    // `period`; amounts scaled by `period` to stay in integers.
                    let capacity = u128::from(rule.burst_or_events()) * u128::from(period);
                    let refill = |tokens: u128, from: u64, to: u64| {
                        (tokens + u128::from(to - from) * u128::from(events)).min(capacity)
                    };
                    let mut tokens = capacity;
                    let mut last = 0u64;
                    for &t in &self.allowed {
                        tokens = refill(tokens, last, t) - u128::from(period);
                        last = t;
                    }
                    refill(tokens, last, now) >= u128::from(period)
                }
            };
            if ok {
                self.allowed.push(now);
            }
            ok
        }
    }

    /// A deterministic, bounded stream of event times: bursts and quiet spells.
    fn event_times(seed: u64, count: usize, max_gap: u64) -> Vec<u64> {
        let mut state = seed | 1;
        let mut now = 0;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let gap = match state % 4 {
                    0 => 0,
                    1 => state % (max_gap / 50 + 1),
                    _ => state % max_gap,
                };
                now += gap;
                now
            })
            .collect()
    }

    /// Rules of every strategy, of several sizes; a token bucket with its own burst.
    pub(super) fn rules() -> Vec<RateLimit> {
        let mut rules = Vec::new();
        for strategy in [
            Strategy::Cooldown,
            Strategy::FixedWindow,
            Strategy::SlidingWindow,
            Strategy::TokenBucket,
        ] {
            for (events, period) in [(1, SEC), (5, SEC), (3, 10 * SEC), (100, 60 * SEC)] {
                rules.push(RateLimit::new(events, Duration::from_nanos(period)).strategy(strategy));
            }
        }
        rules.push(
            RateLimit::new(2, Duration::from_secs(1))
                .strategy(Strategy::TokenBucket)
                .burst(7),
        );
        rules
    }

    #[test]
    fn every_strategy_matches_its_reference_model() {
        for rule in rules() {
            for seed in 1..=8u64 {
                let mut state = RateState::default();
                let mut model = Model {
                    rule,
                    allowed: Vec::new(),
                };
                for (i, now) in event_times(seed, 400, 2 * rule.period_nanos())
                    .into_iter()
                    .enumerate()
                {
                    let expected = model.allows(now);
                    let got = state.check(&rule, now).is_ok();
                    assert_eq!(got, expected, "{rule:?}, seed {seed}, event {i} at {now}");
                }
            }
        }
    }

    #[test]
    fn retry_after_is_exactly_when_the_event_would_pass() {
        for rule in rules() {
            for seed in 1..=4u64 {
                let mut state = RateState::default();
                for now in event_times(seed, 300, rule.period_nanos()) {
                    if let Err(wait) = state.check(&rule, now) {
                        assert!(wait >= 1);
                        let mut just_before = state;
                        assert!(
                            just_before.check(&rule, now + wait - 1).is_err() || wait == 1,
                            "{rule:?}: allowed before the promised wait {wait} at {now}"
                        );
                        let mut at = state;
                        assert!(
                            at.check(&rule, now + wait).is_ok(),
                            "{rule:?}: still refused after the promised wait {wait} at {now}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn expired_state_refuses_nothing() {
        for rule in rules() {
            let mut state = RateState::default();
            for now in event_times(3, 200, rule.period_nanos() / 4 + 1) {
                let _ = state.check(&rule, now);
            }
            let mut later = state;
            let expiry = state.expires_at(&rule);
            let mut fresh = RateState::default();
            for k in 0..u64::from(rule.burst_or_events()) {
                assert_eq!(
                    later.check(&rule, expiry + k).is_ok(),
                    fresh.check(&rule, expiry + k).is_ok(),
                    "{rule:?}: state after expiry differs from a fresh one"
                );
            }
        }
    }

    #[test]
    fn window_edges() {
        let rule = RateLimit::new(2, Duration::from_secs(1)).strategy(Strategy::FixedWindow);
        let mut s = RateState::default();
        assert!(s.check(&rule, SEC - 2).is_ok());
        assert!(s.check(&rule, SEC - 1).is_ok());
        assert_eq!(s.check(&rule, SEC - 1), Err(1));
        // The window boundary resets the count at once.
        assert!(s.check(&rule, SEC).is_ok());
        assert!(s.check(&rule, SEC).is_ok());
        assert_eq!(s.check(&rule, SEC), Err(SEC));

        // The sliding window carries the previous window's weight across the edge.
        let rule = RateLimit::new(2, Duration::from_secs(1));
        let mut s = RateState::default();
        assert!(s.check(&rule, SEC - 2).is_ok());
        assert!(s.check(&rule, SEC - 1).is_ok());
        assert!(
            s.check(&rule, SEC).is_err(),
            "2 × (1 − 0) + 0 is not below 2"
        );
        assert!(
            s.check(&rule, SEC + SEC / 2 + 1).is_ok(),
            "2 × (just under ½) < 2"
        );
    }

    #[test]
    fn token_bucket_bursts_then_refills() {
        let rule = RateLimit::new(1, Duration::from_secs(1))
            .strategy(Strategy::TokenBucket)
            .burst(3);
        let mut s = RateState::default();
        for _ in 0..3 {
            assert!(s.check(&rule, 10 * SEC).is_ok());
        }
        assert_eq!(s.check(&rule, 10 * SEC), Err(SEC));
        assert!(
            s.check(&rule, 11 * SEC).is_ok(),
            "one token back after one interval"
        );
        assert!(s.check(&rule, 11 * SEC).is_err());
        assert!(s.check(&rule, 20 * SEC).is_ok());
        assert!(s.check(&rule, 20 * SEC).is_ok());
        assert!(
            s.check(&rule, 20 * SEC).is_ok(),
            "refilled to the full burst"
        );
        assert!(s.check(&rule, 20 * SEC).is_err());
    }

    #[test]
    fn cooldown_keeps_a_gap() {
        let rule = RateLimit::new(2, Duration::from_secs(1)).strategy(Strategy::Cooldown);
        let mut s = RateState::default();
        assert!(s.check(&rule, 0).is_ok());
        assert_eq!(s.check(&rule, SEC / 4), Err(SEC / 4));
        assert!(s.check(&rule, SEC / 2).is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let err = RateLimit::new(0, Duration::from_secs(1))
            .validate("connect_rate")
            .unwrap_err();
        assert_eq!(err.field(), "connect_rate.events");
        let err = RateLimit::new(1, Duration::ZERO).validate("x").unwrap_err();
        assert_eq!(err.field(), "x.period");
        let err = RateLimit::new(10, Duration::from_nanos(5))
            .validate("x")
            .unwrap_err();
        assert!(err.reason().contains("less than a nanosecond per event"));
    }
}
