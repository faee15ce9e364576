//! [`AtomicRate`]: one rate rule's per-client state in one word, decided and counted with a
//! compare-and-swap, so that a rated decision takes no lock.
//!
//! Each strategy packs what it remembers into 64 bits:
//!
//! | strategy | the word |
//! |---|---|
//! | cooldown | the last allowed event's time, plus one (0: none yet) |
//! | token bucket | the theoretical arrival time (GCRA), as governor keeps it |
//! | fixed window | the window's number (its low 32 bits) and the events allowed in it (32 bits) |
//! | sliding window | the window's number (low 24 bits), the previous window's count and this one's (20 bits each) |
//!
//! A window's number is its start divided by the period; only its low bits are kept, and the
//! full number is recovered from the time of the decision, which is never that many windows
//! after the last one this state saw (a record that has not refused anything for a period is
//! forgotten long before). The sliding window's counts are at most [`SLIDING_MAX_EVENTS`], the
//! most a sliding rule's `events` may be.
//!
//! The decisions are exactly [`RateState`](super::RateState)'s (the tests check them against
//! it and against a reference model); concurrent decisions on one client are serialized by the
//! compare-and-swap, each one deciding on the state the others left.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{sliding_estimate_below, sliding_wait, RateLimit, Strategy};

/// The most events a sliding-window rule may allow per period: its counts take 20 bits each.
pub(crate) const SLIDING_MAX_EVENTS: u32 = (1 << 20) - 1;

const LOW20: u64 = (1 << 20) - 1;
const LOW24: u64 = (1 << 24) - 1;
const LOW32: u64 = (1 << 32) - 1;

/// One rate rule's state for one client: see the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct AtomicRate(AtomicU64);

impl AtomicRate {
    /// Decides an event at `now` (nanoseconds on the limiter's clock) and counts it if allowed.
    /// A refusal carries how long until the same event would be allowed, in nanoseconds (at
    /// least 1).
    #[inline]
    pub(crate) fn check(&self, rule: &RateLimit, now: u64) -> Result<(), u64> {
        self.check_with(rule, None, now)
    }

    /// [`AtomicRate::check`], with the rule's [interval](RateLimit::interval_nanos) worked out
    /// already (a division saved on the hot path), or `None` to work it out if needed.
    #[inline]
    pub(crate) fn check_with(
        &self,
        rule: &RateLimit,
        interval: Option<u64>,
        now: u64,
    ) -> Result<(), u64> {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let next = step(word, rule, interval, now)?;
            match self
                .0
                .compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => word = seen,
            }
        }
    }

    /// What is left of the rule at `now`, spending nothing: how many events it would admit in
    /// a burst now, and nanoseconds until more are admitted (when none is left) or until the
    /// state is back to a quiet client's (when some are).
    pub(crate) fn remaining(&self, rule: &RateLimit, now: u64) -> (u32, u64) {
        let word = self.0.load(Ordering::Relaxed);
        let until_quiet = expiry(word, rule, None, now).saturating_sub(now);
        match rule.strategy {
            Strategy::Cooldown => match step(word, rule, None, now) {
                Ok(_) => (1, until_quiet),
                Err(wait) => (0, wait),
            },
            Strategy::TokenBucket => {
                let interval = rule.interval_nanos().max(1);
                let burst = u64::from(rule.burst_or_events());
                let ahead = word.max(now) - now;
                // Each token left is `interval` of room under the bucket's depth.
                let room = (burst * interval).saturating_sub(ahead);
                let left = (room / interval).min(burst) as u32;
                if left == 0 {
                    (0, step(word, rule, None, now).err().unwrap_or(1))
                } else {
                    (left, ahead)
                }
            }
            Strategy::FixedWindow => {
                let period = rule.period_nanos();
                let window = Window::at(now, period);
                let left = rule.events.saturating_sub(fixed_count(word, window.number));
                (left, window.start + period - now)
            }
            Strategy::SlidingWindow => {
                let period = rule.period_nanos();
                let window = Window::at(now, period);
                let (prev, count) = sliding_counts(word, window.number);
                let elapsed = now - window.start;
                // The most further events the estimate admits now, one after the other.
                let weighted = u128::from(prev) * u128::from(period - elapsed);
                let room = u128::from(rule.events) * u128::from(period);
                let used = weighted + u128::from(count) * u128::from(period);
                let left = room.saturating_sub(used).div_ceil(u128::from(period)) as u32;
                if left == 0 {
                    (0, sliding_wait(prev, count, rule.events, period, elapsed))
                } else {
                    (left, until_quiet)
                }
            }
        }
    }

    /// Counts `n` events that happened elsewhere (on other nodes of a fleet) as if they had
    /// happened at `now`, whether or not the rule would have admitted them: they happened.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn charge(&self, rule: &RateLimit, now: u64, n: u32) {
        if n == 0 {
            return;
        }
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                Some(charged(word, rule, now, n))
            });
    }

    /// From when on this state can no longer refuse anything, so it may be forgotten, as seen
    /// at `now`.
    pub(crate) fn expires_at(&self, rule: &RateLimit, now: u64) -> u64 {
        self.expires_at_with(rule, None, now)
    }

    /// [`AtomicRate::expires_at`], with the rule's interval worked out already, if it is.
    #[inline]
    pub(crate) fn expires_at_with(&self, rule: &RateLimit, interval: Option<u64>, now: u64) -> u64 {
        expiry(self.0.load(Ordering::Relaxed), rule, interval, now)
    }

    /// Forgets everything.
    pub(crate) fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

/// The state after allowing an event at `now`, or the wait until one would be allowed.
#[inline]
fn step(word: u64, rule: &RateLimit, interval: Option<u64>, now: u64) -> Result<u64, u64> {
    let interval = || interval.unwrap_or_else(|| rule.interval_nanos());
    match rule.strategy {
        Strategy::Cooldown => {
            let gap = interval();
            let since = now.saturating_sub(word.wrapping_sub(1));
            if word == 0 || since >= gap {
                Ok(now.saturating_add(1))
            } else {
                Err(gap - since)
            }
        }
        Strategy::TokenBucket => {
            let interval = interval();
            let tolerance = interval.saturating_mul(u64::from(rule.burst_or_events() - 1));
            let tat = word.max(now);
            let ahead = tat - now;
            if ahead > tolerance {
                Err(ahead - tolerance)
            } else {
                Ok(tat.saturating_add(interval))
            }
        }
        Strategy::FixedWindow => {
            let period = rule.period_nanos();
            let window = Window::at(now, period);
            let count = fixed_count(word, window.number);
            if count < rule.events {
                Ok(fixed_word(window.number, count + 1))
            } else {
                Err(window.start + period - now)
            }
        }
        Strategy::SlidingWindow => {
            let period = rule.period_nanos();
            let window = Window::at(now, period);
            let (prev, count) = sliding_counts(word, window.number);
            let elapsed = now - window.start;
            if sliding_estimate_below(prev, count, rule.events, period, elapsed) {
                Ok(sliding_word(window.number, prev, count + 1))
            } else {
                Err(sliding_wait(prev, count, rule.events, period, elapsed))
            }
        }
    }
}

/// The state after `n` more events at `now`, allowed or not.
fn charged(word: u64, rule: &RateLimit, now: u64, n: u32) -> u64 {
    match rule.strategy {
        Strategy::Cooldown => word.max(now.saturating_add(1)),
        Strategy::TokenBucket => {
            let spent = rule.interval_nanos().saturating_mul(u64::from(n));
            word.max(now).saturating_add(spent)
        }
        Strategy::FixedWindow => {
            let window = Window::at(now, rule.period_nanos());
            let count = fixed_count(word, window.number).saturating_add(n);
            fixed_word(window.number, count)
        }
        Strategy::SlidingWindow => {
            let window = Window::at(now, rule.period_nanos());
            let (prev, count) = sliding_counts(word, window.number);
            sliding_word(window.number, prev, count.saturating_add(n))
        }
    }
}

/// When the state `word` stops refusing anything, seen at `now`.
fn expiry(word: u64, rule: &RateLimit, interval: Option<u64>, now: u64) -> u64 {
    if word == 0 {
        return 0;
    }
    let period = rule.period_nanos();
    match rule.strategy {
        Strategy::Cooldown => {
            let interval = interval.unwrap_or_else(|| rule.interval_nanos());
            (word - 1).saturating_add(interval)
        }
        Strategy::TokenBucket => word,
        Strategy::FixedWindow => {
            let number = full_number(word >> 32, LOW32, now, period);
            number.saturating_add(1).saturating_mul(period)
        }
        Strategy::SlidingWindow => {
            let number = full_number(word >> 40, LOW24, now, period);
            number.saturating_add(2).saturating_mul(period)
        }
    }
}

/// The aligned window of `period` that `now` falls in.
struct Window {
    number: u64,
    start: u64,
}

impl Window {
    #[inline]
    fn at(now: u64, period: u64) -> Self {
        let number = now / period;
        Window {
            number,
            start: number * period,
        }
    }
}

/// The events a fixed-window state allowed in window `number`.
#[inline]
fn fixed_count(word: u64, number: u64) -> u32 {
    if word >> 32 == number & LOW32 {
        (word & LOW32) as u32
    } else {
        0
    }
}

#[inline]
fn fixed_word(number: u64, count: u32) -> u64 {
    (number & LOW32) << 32 | u64::from(count)
}

/// A sliding-window state's counts for window `number`: the window before's, and this one's.
#[inline]
fn sliding_counts(word: u64, number: u64) -> (u32, u32) {
    let (prev, count) = (((word >> 20) & LOW20) as u32, (word & LOW20) as u32);
    match number.wrapping_sub(word >> 40) & LOW24 {
        0 => (prev, count),
        1 => (count, 0),
        _ => (0, 0),
    }
}

#[inline]
fn sliding_word(number: u64, prev: u32, count: u32) -> u64 {
    let saturate = |n: u32| u64::from(n).min(LOW20);
    (number & LOW24) << 40 | saturate(prev) << 20 | saturate(count)
}

/// The full number of the window whose low bits (`mask`) are `low`: the latest one at or
/// before `now`'s window.
fn full_number(low: u64, mask: u64, now: u64, period: u64) -> u64 {
    let current = now / period;
    current - (current.wrapping_sub(low) & mask)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rate::RateState;

    const SEC: u64 = 1_000_000_000;

    /// The locked state's test rules, and a period of a few hundred nanoseconds.
    fn rules() -> Vec<RateLimit> {
        let mut rules = crate::rate::tests::rules();
        for strategy in [
            Strategy::Cooldown,
            Strategy::FixedWindow,
            Strategy::SlidingWindow,
            Strategy::TokenBucket,
        ] {
            rules.push(RateLimit::new(7, Duration::from_nanos(333)).strategy(strategy));
        }
        rules
    }

    /// Bursts and quiet spells, some longer than many periods.
    fn times(seed: u64, count: usize, max_gap: u64) -> Vec<u64> {
        let mut state = seed | 1;
        let mut now = 5 * SEC;
        (0..count)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                now += match state % 5 {
                    0 => 0,
                    1 => state % (max_gap / 50 + 1),
                    2 => state % (max_gap * 40),
                    _ => state % max_gap,
                };
                now
            })
            .collect()
    }

    #[test]
    fn what_is_left_is_what_a_burst_gets_and_spends_nothing() {
        for rule in rules() {
            for seed in 1..=4u64 {
                let state = AtomicRate::default();
                for now in times(seed, 100, 2 * rule.period_nanos()) {
                    let (left, wait) = state.remaining(&rule, now);
                    let word = state.0.load(Ordering::Relaxed);
                    assert_eq!(state.remaining(&rule, now), (left, wait), "spends nothing");
                    assert_eq!(word, state.0.load(Ordering::Relaxed));
                    // A burst now gets exactly `left` (bounded: the rules allow at most 100).
                    let burst = AtomicRate(AtomicU64::new(word));
                    let admitted = (0..=left).take_while(|_| burst.check(&rule, now).is_ok());
                    assert_eq!(admitted.count() as u32, left, "{rule:?} at {now}");
                    if left == 0 {
                        assert_eq!(Err(wait), state.check(&rule, now), "{rule:?} at {now}");
                    }
                    let _ = state.check(&rule, now);
                }
            }
        }
    }

    #[test]
    fn decides_as_the_locked_state_does_refusal_waits_included() {
        for rule in rules() {
            for seed in 1..=8u64 {
                let (atomic, mut locked) = (AtomicRate::default(), RateState::default());
                for (i, now) in times(seed, 400, 2 * rule.period_nanos())
                    .into_iter()
                    .enumerate()
                {
                    assert_eq!(
                        atomic.check(&rule, now),
                        locked.check(&rule, now),
                        "{rule:?}, seed {seed}, event {i} at {now}"
                    );
                    assert!(
                        atomic.expires_at(&rule, now) >= locked.expires_at(&rule),
                        "{rule:?}: forgotten before the locked state would be"
                    );
                }
            }
        }
    }

    #[test]
    fn charges_as_the_locked_state_does() {
        for rule in rules() {
            let (atomic, mut locked) = (AtomicRate::default(), RateState::default());
            for (i, now) in times(11, 300, rule.period_nanos()).into_iter().enumerate() {
                if i % 3 == 0 {
                    let n = (i % 5) as u32;
                    atomic.charge(&rule, now, n);
                    locked.charge(&rule, now, n);
                } else {
                    assert_eq!(
                        atomic.check(&rule, now),
                        locked.check(&rule, now),
                        "{rule:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn window_numbers_survive_the_wrap_of_their_low_bits() {
        let period = 1_000;
        for strategy in [Strategy::FixedWindow, Strategy::SlidingWindow] {
            let rule = RateLimit::new(2, Duration::from_nanos(period)).strategy(strategy);
            let (atomic, mut locked) = (AtomicRate::default(), RateState::default());
            // Far past 2^32 windows, where the kept bits of the number wrap.
            let base = (1u64 << 33) * period + 17;
            for k in 0..50u64 {
                let now = base + k * period / 3;
                assert_eq!(
                    atomic.check(&rule, now),
                    locked.check(&rule, now),
                    "{strategy:?}"
                );
                assert!(atomic.expires_at(&rule, now) >= locked.expires_at(&rule));
            }
        }
    }

    #[test]
    fn racing_threads_never_admit_past_the_rule() {
        let rule = RateLimit::new(1_000, Duration::from_secs(3600)).strategy(Strategy::FixedWindow);
        let state = AtomicRate::default();
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..600 {
                        if state.check(&rule, SEC).is_ok() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 1_000);
    }
}
