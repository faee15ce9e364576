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

/// The default clock: the CPU's time-stamp counter, calibrated to nanoseconds (as governor
/// reads it, through `quanta`), or tokio's paused clock in tests.
///
/// A decision with a rate rule reads the clock once; the counter costs a few nanoseconds to
/// read, where the system clock (`Instant::now`, a `clock_gettime` call) costs several times
/// that, and tokio's [`Instant`](tokio::time::Instant) more again in a build with tokio's
/// `test-util` (it looks for a paused clock on every read). Where the counter is not usable
/// (not invariant, or a virtual machine that hides it), `quanta` falls back to the system clock.
///
/// **Paused tokio time.** A clock made inside a tokio runtime whose time is paused (in
/// `#[tokio::test(start_paused = true)]`, or after `tokio::time::pause()`) follows tokio's
/// clock instead, so that `tokio::time::advance` and auto-advance move the limiter's time as
/// they move timers. Which clock to follow is decided once, when the clock is made: make the
/// [`Limiter`](crate::Limiter) after pausing time.
#[derive(Clone, Debug)]
pub struct TokioClock {
    source: Source,
}

/// Where a [`TokioClock`] reads time.
#[derive(Clone, Debug)]
enum Source {
    /// The calibrated counter, from the reading taken when the clock was made.
    Counter { clock: quanta::Clock, origin: u64 },
    /// Tokio's paused clock.
    Paused { origin: tokio::time::Instant },
}

impl TokioClock {
    /// A clock whose origin is now: tokio's, when the runtime this is called in has its time
    /// paused; the counter otherwise.
    pub fn new() -> Self {
        let source = if tokio_time_is_paused() {
            Source::Paused {
                origin: tokio::time::Instant::now(),
            }
        } else {
            let clock = quanta::Clock::new();
            let origin = clock.raw();
            Source::Counter { clock, origin }
        };
        TokioClock { source }
    }
}

/// Whether the tokio runtime this is called in, if any, has its time paused: paused time stands
/// still while real time passes and nothing awaits (tokio auto-advances only an idle runtime).
/// Spins for 50 µs, once per clock made inside a runtime.
fn tokio_time_is_paused() -> bool {
    if tokio::runtime::Handle::try_current().is_err() {
        return false;
    }
    let before = tokio::time::Instant::now();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_micros(50) {
        std::hint::spin_loop();
    }
    tokio::time::Instant::now() == before
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Duration {
        match &self.source {
            Source::Counter { clock, origin } => {
                Duration::from_nanos(clock.delta_as_nanos(*origin, clock.raw()))
            }
            Source::Paused { origin } => {
                tokio::time::Instant::now().saturating_duration_since(*origin)
            }
        }
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
        assert!(matches!(clock.source, Source::Paused { .. }));
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), Duration::from_secs(90));
    }

    /// Outside paused time, the clock keeps real time: what it counts over 20 ms lies between
    /// what the system clock counted from just after its first reading to just before its
    /// last and from just before to just after, give or take 50 µs of calibration.
    fn keeps_real_time(clock: &TokioClock) {
        let (t0, origin, t1) = (
            std::time::Instant::now(),
            clock.now(),
            std::time::Instant::now(),
        );
        while t0.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let (u0, now, u1) = (
            std::time::Instant::now(),
            clock.now(),
            std::time::Instant::now(),
        );
        let counted = now - origin;
        let slack = Duration::from_micros(50);
        assert!(counted + slack >= u0 - t1, "{counted:?} < {:?}", u0 - t1);
        assert!(counted <= u1 - t0 + slack, "{counted:?} > {:?}", u1 - t0);
    }

    #[test]
    fn tokio_clock_keeps_real_time_outside_a_runtime() {
        let clock = TokioClock::new();
        assert!(matches!(clock.source, Source::Counter { .. }));
        keeps_real_time(&clock);
    }

    #[tokio::test]
    async fn tokio_clock_keeps_real_time_in_a_running_runtime() {
        let clock = TokioClock::new();
        assert!(matches!(clock.source, Source::Counter { .. }));
        keeps_real_time(&clock);
    }
}
