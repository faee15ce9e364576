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
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::ConfigError;

/// The slowest a client may send while the server waits on it, in the style of Apache
/// `mod_reqtimeout`'s `MinRate`. Set in
/// [`ListenerConfig::min_receive_rate`](crate::listener::ListenerConfig::min_receive_rate).
///
/// The rule applies to a connection's *first phase*: from the client's first byte until the
/// server first writes (for HTTP/1, until the first response starts; for TLS, until the
/// ServerHello). That is where a slowloris lives: it opens many connections and trickles a
/// request on each that never ends. Within the phase, the client gets `grace` for free and must
/// then keep up `bytes_per_sec` on average: a phase that has brought `b` bytes may have lasted
/// at most `grace + b / bytes_per_sec`. A client trickling one byte a second is cut off soon
/// after `grace`; a client that sends its request within `grace` (or faster than the rate) is
/// never affected, even if it then waits quietly for a long-poll answer.
///
/// The rate is checked as bytes arrive that the server was waiting for, so a server slow to
/// read (busy in a handler) never counts against the client, and a client that stops sending
/// altogether is left to [`ListenerConfig::idle_timeout`](crate::listener::ListenerConfig::idle_timeout).
/// After the phase (keep-alive requests,
/// WebSocket messages, HTTP/2 streams after the server's SETTINGS) the rule no longer applies;
/// with hyper, `http1().header_read_timeout(..)` covers later requests' headers.
///
/// ```
/// use std::time::Duration;
/// use tower_connlimit::listener::MinReceiveRate;
///
/// // After 10 s, at least 500 bytes a second while the client sends.
/// let rate = MinReceiveRate::new(500, Duration::from_secs(10));
/// # let _ = rate;
/// ```
///
/// In a config file (feature `serde`): `{ bytes_per_sec = 500, grace = "10s" }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(deny_unknown_fields)
)]
pub struct MinReceiveRate {
    /// The average rate, in bytes per second, a client must keep up after `grace`. At least 1.
    pub bytes_per_sec: u32,
    /// The time the first phase gets before the rate applies.
    #[cfg_attr(feature = "serde", serde(with = "humantime_serde"))]
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
            return Err(ConfigError::zero_count(
                "min_receive_rate.bytes_per_sec",
                "min_receive_rate",
            ));
        }
        crate::clock::at_most_longest("min_receive_rate.grace", self.grace)
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
    pub(super) handshake: Option<Duration>,
    pub(super) idle: Option<Duration>,
    pub(super) min_rate: Option<MinReceiveRate>,
}

/// Which deadline closed an admitted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Deadline {
    Handshake,
    Idle,
    MinReceiveRate,
}

impl Deadline {
    /// Why the listener closed the connection early, as counted in
    /// [`Stats::closed`](crate::Stats::closed).
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Deadline::Handshake => "handshake_timeout",
            Deadline::Idle => "idle_timeout",
            Deadline::MinReceiveRate => "min_receive_rate",
        }
    }
}

/// Why a connection the listener admitted was cut early: each deadline's name,
/// [`HEADER_TIMEOUT`], and fair share's reclaims, as the listener's admission point declares its
/// early closes.
pub(super) static CLOSES: [&str; 6] = [
    Deadline::Handshake.name(),
    Deadline::Idle.name(),
    Deadline::MinReceiveRate.name(),
    HEADER_TIMEOUT,
    crate::limiter::RECLAIMED_IDLE,
    crate::limiter::RECLAIMED_GOAWAY,
];

/// A request's headers did not arrive within the header timeout of the server on top of the
/// listener (`serve::Serve`: every HTTP/1 request, every HTTP/2 header block); counted under
/// the listener, which admitted the connection.
pub(crate) const HEADER_TIMEOUT: &str = "header_timeout";

/// Which side of the connection is waiting on the deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Read,
    Write,
}

/// The first phase, the only one the minimum receive rate applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No byte yet from the client.
    NotStarted,
    /// The client has started sending, and the server has not written yet.
    Receiving { since: Instant, bytes: u64 },
    /// The server has written: the client was heard out.
    Over,
}

/// The tasks waiting on a connection's read and write sides. The deadline timer wakes both, so
/// a connection split between two tasks cannot leave one parked on a deadline that passed.
#[derive(Debug, Default)]
struct Waiters {
    read: Mutex<Option<Waker>>,
    write: Mutex<Option<Waker>>,
}

impl Waiters {
    fn slot(&self, side: Side) -> std::sync::MutexGuard<'_, Option<Waker>> {
        let slot = match side {
            Side::Read => &self.read,
            Side::Write => &self.write,
        };
        slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, side: Side, waker: &Waker) {
        let mut slot = self.slot(side);
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }
}

impl Wake for Waiters {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        for side in [Side::Read, Side::Write] {
            if let Some(waker) = self.slot(side).take() {
                waker.wake();
            }
        }
    }
}

pin_project! {
    /// One connection's deadline state: what it has seen, and the one timer that wakes it.
    #[derive(Debug)]
    pub(crate) struct Deadlines {
        settings: DeadlineSettings,
        #[pin]
        timer: Sleep,
        waiters: Arc<Waiters>,
        // What the timer wakes: both sides' waiters.
        timer_waker: Waker,
        accepted: Instant,
        last_activity: Instant,
        first_byte_seen: bool,
        phase: Phase,
        // Whether the last read found nothing, so the server is waiting on the client.
        read_waited: bool,
        expired: Option<Deadline>,
    }
}

impl Deadlines {
    /// Deadlines starting now. Needs a tokio runtime with its time driver.
    pub(crate) fn new(settings: DeadlineSettings) -> Self {
        let now = Instant::now();
        let waiters = Arc::new(Waiters::default());
        Deadlines {
            settings,
            timer: tokio::time::sleep_until(now),
            timer_waker: Waker::from(Arc::clone(&waiters)),
            waiters,
            accepted: now,
            last_activity: now,
            first_byte_seen: false,
            phase: Phase::NotStarted,
            read_waited: false,
            expired: None,
        }
    }

    /// The deadline that already passed, if one did.
    pub(crate) fn expired(&self) -> Option<Deadline> {
        self.expired
    }

    /// Notes `n` bytes moved on `side`; fails if, read from the client, they came too slowly.
    pub(crate) fn moved(self: Pin<&mut Self>, side: Side, n: usize) -> Result<(), Deadline> {
        match side {
            Side::Read => self.received(n),
            Side::Write => {
                self.sent(n);
                Ok(())
            }
        }
    }

    /// Notes `n` bytes read from the client, and fails if they came too slowly.
    ///
    /// The rate is checked only for bytes the server was waiting for (the read before found
    /// nothing): bytes that sat in the socket while the server was busy elsewhere say nothing
    /// about the client's speed.
    fn received(self: Pin<&mut Self>, n: usize) -> Result<(), Deadline> {
        let this = self.project();
        let waited = std::mem::take(this.read_waited);
        if n == 0 {
            return Ok(()); // end of stream: nothing arrived
        }
        *this.first_byte_seen = true;
        if this.settings.idle.is_none() && this.settings.min_rate.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        *this.last_activity = now;
        let Some(rate) = this.settings.min_rate else {
            return Ok(());
        };
        match this.phase {
            Phase::NotStarted => {
                *this.phase = Phase::Receiving {
                    since: now,
                    bytes: n as u64,
                }
            }
            Phase::Receiving { since, bytes } => {
                *bytes += n as u64;
                if waited && rate.is_broken_by(now - *since, *bytes) {
                    *this.expired = Some(Deadline::MinReceiveRate);
                    return Err(Deadline::MinReceiveRate);
                }
            }
            Phase::Over => {}
        }
        Ok(())
    }

    /// Notes `n` bytes written to the client: activity, and the end of the first phase.
    fn sent(self: Pin<&mut Self>, n: usize) {
        if n == 0 {
            return;
        }
        let this = self.project();
        if this.settings.idle.is_some() {
            *this.last_activity = Instant::now();
        }
        *this.phase = Phase::Over;
    }

    /// Polled while `side` is pending: ready with the deadline that passed, if one does before
    /// the IO makes progress.
    pub(crate) fn poll_expired(
        mut self: Pin<&mut Self>,
        side: Side,
        cx: &mut Context<'_>,
    ) -> Poll<Deadline> {
        if side == Side::Read {
            *self.as_mut().project().read_waited = true;
        }
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
            this.waiters.register(side, cx.waker());
            if this.timer.deadline() != deadline {
                this.timer.as_mut().reset(deadline);
            }
            let mut timer_cx = Context::from_waker(this.timer_waker);
            ready!(this.timer.poll(&mut timer_cx));
        }
    }

    /// The earliest deadline that could pass while the connection waits, and which one it is.
    /// A timeout too long to represent never passes.
    fn next_deadline(&self) -> Option<(Instant, Deadline)> {
        let handshake = self
            .settings
            .handshake
            .filter(|_| !self.first_byte_seen)
            .and_then(|d| self.accepted.checked_add(d))
            .map(|at| (at, Deadline::Handshake));
        let idle = self
            .settings
            .idle
            .and_then(|d| self.last_activity.checked_add(d))
            .map(|at| (at, Deadline::Idle));
        match (handshake, idle) {
            (Some(h), Some(i)) => Some(if h.0 <= i.0 { h } else { i }),
            (h, i) => h.or(i),
        }
    }
}

/// The error a read or write returns once a deadline has passed.
pub(crate) fn timed_out(why: Deadline) -> io::Error {
    let message = match why {
        Deadline::Handshake => "connection closed: no first byte within handshake_timeout",
        Deadline::Idle => "connection closed: idle for idle_timeout",
        Deadline::MinReceiveRate => "connection closed: client sent slower than min_receive_rate",
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

    #[tokio::test]
    async fn a_timeout_too_long_to_represent_never_passes() {
        let deadlines = Deadlines::new(DeadlineSettings {
            handshake: Some(Duration::MAX),
            idle: Some(Duration::MAX),
            min_rate: None,
        });
        assert_eq!(deadlines.next_deadline(), None);
    }
}
