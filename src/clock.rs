//! [`Clock`]: where the limiter reads time, so that time-driven behaviour can be tested without
//! sleeping.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A monotonic clock: the time elapsed since an origin of the clock's choosing.
///
/// The limiter reads it only for decisions that depend on time (rates, bans, expiry), and only
/// compares readings of one clock with each other.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The time elapsed since this clock's origin. Must never go backwards.
    fn now(&self) -> Duration;
}

/// The default clock: tokio's [`Instant`](tokio::time::Instant), which follows paused and
/// advanced time in `#[tokio::test(start_paused = true)]` tests and is the monotonic system clock
/// everywhere else.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Duration {
        tokio::time::Instant::now().saturating_duration_since(self.origin)
    }
}

/// A clock that moves only when told to. Clones share one time, so a test can keep a clone and
/// advance the clock a limiter reads.
///
/// ```
/// use std::time::Duration;
/// use tower_connlimit::{clock::Clock, clock::FakeClock};
///
/// let clock = FakeClock::new();
/// let shared = clock.clone();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(shared.now(), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, Default)]
pub struct FakeClock {
    nanos: Arc<AtomicU64>,
}

impl FakeClock {
    /// A clock at its origin (zero).
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(nanos(by), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

/// The longest duration a config may hold: 100 years, far past any sensible window, ban or
/// deadline. A decision adds a few such durations to the clock's reading (in u64 nanoseconds,
/// which cover 584 years), so bounding them keeps that arithmetic exact.
pub(crate) const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Refuses a duration longer than [`LONGEST`], naming `field`.
pub(crate) fn at_most_longest(field: &str, d: Duration) -> Result<(), crate::error::ConfigError> {
    if d > LONGEST {
        return Err(crate::error::ConfigError::new(
            field,
            format!("{d:?} is longer than the longest duration allowed, 100 years"),
        ));
    }
    Ok(())
}

/// `d` in whole nanoseconds, saturating (u64 nanoseconds cover 584 years).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_clock_clones_share_time() {
        let clock = FakeClock::new();
        let other = clock.clone();
        other.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Duration::from_millis(1500));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), Duration::from_secs(90));
    }
}
