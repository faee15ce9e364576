//! Deadlines on a listener's connections: the first byte, idleness, and a minimum receive rate.
//!
//! All three are checked inside [`TrackedIo`](crate::TrackedIo)'s reads and writes, so they cost
//! nothing when off and need no task of their own: a connection whose reads and writes are
//! pending polls one timer, set to the earliest deadline that could pass. When a deadline
//! passes, the pending read or write fails with [`io::ErrorKind::TimedOut`], the server drops
//! the connection, and the permit goes with it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::limiter::Closed;
use crate::{Config, ConfigError};

/// The slowest a client may send while the server waits on it, in the style of Apache
/// `mod_reqtimeout`'s `MinRate`. Set in [`Config::min_receive_rate`].
///
/// The rule applies to each *receive turn*: from the first byte the client sends after the
/// server last wrote, until the server writes again (for HTTP/1, a request's turn ends with its
/// response; for TLS, the handshake takes a few turns). Within a turn, the client gets `grace`
/// for free, and then must keep up `bytes_per_sec` on average: a turn that has brought `b`
/// bytes may have lasted at most `grace + b / bytes_per_sec`. A client trickling a request one
/// byte a second is cut off soon after `grace`; a slow but honest client, which sends its
/// request at a steady rate however low, is not, and neither is one that has sent its request
/// and waits quietly for a long-poll answer.
///
/// The check runs when bytes arrive, so a client that stops sending altogether is not caught
/// by this rule: pair it with [`Config::idle_timeout`].
///
/// ```
/// use std::time::Duration;
/// use tower_connlimit::{Config, MinReceiveRate};
///
/// // mod_reqtimeout's `header=10,MinRate=500`, roughly.
/// let config = Config {
///     min_receive_rate: Some(MinReceiveRate::new(500, Duration::from_secs(10))),
///     idle_timeout: Duration::from_secs(60),
///     ..Config::default()
/// };
/// config.validate().unwrap();
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MinReceiveRate {
    /// The average rate, in bytes per second, a client must keep up after `grace`. At least 1.
    pub bytes_per_sec: u32,
    /// The time each receive turn gets before the rate applies.
    pub grace: Duration,
}

impl MinReceiveRate {
    /// At least `bytes_per_sec` on average, after `grace`.
    pub fn new(bytes_per_sec: u32, grace: Duration) -> Self {
        MinReceiveRate {
            bytes_per_sec,
            grace,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.bytes_per_sec == 0 {
            return Err(ConfigError::new(
                "min_receive_rate.bytes_per_sec",
                "must be at least 1 (leave min_receive_rate out to turn it off)",
            ));
        }
        Ok(())
    }

    /// Whether a turn that has brought `bytes` after `elapsed` is too slow.
    fn is_broken_by(&self, elapsed: Duration, bytes: u64) -> bool {
        let allowed_nanos = self.grace.as_nanos()
            + u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_sec);
        elapsed.as_nanos() > allowed_nanos
    }
}

/// The deadlines in force for one connection, taken from the config when it is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeadlineSettings {
    handshake: Option<Duration>,
    idle: Option<Duration>,
    min_rate: Option<MinReceiveRate>,
}

impl DeadlineSettings {
    /// The config's deadlines, or `None` when every one is off (and connections carry no state).
    pub(crate) fn from_config(config: &Config) -> Option<Self> {
        let on = |d: Duration| (!d.is_zero()).then_some(d);
        let settings = DeadlineSettings {
            handshake: on(config.handshake_timeout),
            idle: on(config.idle_timeout),
            min_rate: config.min_receive_rate,
        };
        (settings.handshake.is_some() || settings.idle.is_some() || settings.min_rate.is_some())
            .then_some(settings)
    }
}

pin_project! {
    /// One connection's deadline state: what it has seen, and the one timer that wakes it.
    #[derive(Debug)]
    pub(crate) struct Deadlines {
        settings: DeadlineSettings,
        #[pin]
        timer: Sleep,
        accepted: Instant,
        last_activity: Instant,
        first_byte_seen: bool,
        // The current receive turn: when its first byte came, and how many bytes it has brought.
        turn: Option<(Instant, u64)>,
        expired: Option<Closed>,
    }
}

impl Deadlines {
    /// Deadlines starting now. Needs a tokio runtime with its time driver.
    pub(crate) fn new(settings: DeadlineSettings) -> Self {
        let now = Instant::now();
        Deadlines {
            settings,
            timer: tokio::time::sleep_until(now),
            accepted: now,
            last_activity: now,
            first_byte_seen: false,
            turn: None,
            expired: None,
        }
    }

    /// The deadline that already passed, if one did.
    pub(crate) fn expired(&self) -> Option<Closed> {
        self.expired
    }

    /// Notes `n` bytes read from the client, and fails if they came too slowly.
    pub(crate) fn received(self: Pin<&mut Self>, n: usize) -> Result<(), Closed> {
        if n == 0 {
            return Ok(()); // end of stream: nothing arrived
        }
        let this = self.project();
        let now = Instant::now();
        *this.first_byte_seen = true;
        *this.last_activity = now;
        if let Some(rate) = this.settings.min_rate {
            let (started, bytes) = this.turn.get_or_insert((now, 0));
            *bytes += n as u64;
            if rate.is_broken_by(now - *started, *bytes) {
                *this.expired = Some(Closed::MinReceiveRate);
                return Err(Closed::MinReceiveRate);
            }
        }
        Ok(())
    }

    /// Notes `n` bytes written to the client: activity, and the end of the client's turn.
    pub(crate) fn sent(self: Pin<&mut Self>, n: usize) {
        if n == 0 {
            return;
        }
        let this = self.project();
        if this.settings.idle.is_some() {
            *this.last_activity = Instant::now();
        }
        *this.turn = None;
    }

    /// Polled while a read or write is pending: ready with the deadline that passed, if one
    /// does before the IO makes progress.
    pub(crate) fn poll_expired(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Closed> {
        // Each turn either returns or waits for the timer to fire at the nearest deadline; once
        // it has fired, that deadline has passed and the next turn returns.
        loop {
            let Some((deadline, why)) = self.next_deadline() else {
                return Poll::Pending; // nothing can expire while waiting
            };
            let mut this = self.as_mut().project();
            if Instant::now() >= deadline {
                *this.expired = Some(why);
                return Poll::Ready(why);
            }
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            ready!(this.timer.poll(cx));
        }
    }

    /// The earliest deadline that could pass while the connection waits, and which one it is.
    fn next_deadline(&self) -> Option<(Instant, Closed)> {
        let handshake = self
            .settings
            .handshake
            .filter(|_| !self.first_byte_seen)
            .map(|d| (self.accepted + d, Closed::HandshakeTimeout));
        let idle = self
            .settings
            .idle
            .map(|d| (self.last_activity + d, Closed::IdleTimeout));
        match (handshake, idle) {
            (Some(h), Some(i)) => Some(if h.0 <= i.0 { h } else { i }),
            (h, i) => h.or(i),
        }
    }
}

/// The error a read or write returns once a deadline has passed.
pub(crate) fn timed_out(why: Closed) -> io::Error {
    let message = match why {
        Closed::HandshakeTimeout => "connection closed: no first byte within handshake_timeout",
        Closed::IdleTimeout => "connection closed: idle for idle_timeout",
        Closed::MinReceiveRate => "connection closed: client sent slower than min_receive_rate",
        _ => "connection closed",
    };
    io::Error::new(io::ErrorKind::TimedOut, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_allows_grace_plus_what_the_bytes_earn() {
        let rate = MinReceiveRate::new(100, Duration::from_secs(10));
        // 100 bytes earn one second on top of the grace.
        assert!(!rate.is_broken_by(Duration::from_secs(11), 100));
        assert!(rate.is_broken_by(Duration::from_millis(11_001), 100));
        // A trickle of one byte a second falls behind just after the grace.
        assert!(!rate.is_broken_by(Duration::from_secs(10), 10));
        assert!(rate.is_broken_by(Duration::from_secs(11), 11));
        // Huge counts do not overflow.
        assert!(!rate.is_broken_by(Duration::from_secs(1), u64::MAX));
    }

    #[test]
    fn settings_are_absent_when_every_deadline_is_off() {
        assert_eq!(DeadlineSettings::from_config(&Config::default()), None);
        let config = Config {
            idle_timeout: Duration::from_secs(1),
            ..Config::default()
        };
        let settings = DeadlineSettings::from_config(&config).unwrap();
        assert_eq!(settings.idle, Some(Duration::from_secs(1)));
        assert_eq!(settings.handshake, None);
    }

    #[test]
    fn a_zero_rate_is_refused_by_name() {
        let err = Config {
            min_receive_rate: Some(MinReceiveRate::new(0, Duration::from_secs(1))),
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field(), "min_receive_rate.bytes_per_sec");
    }
}
