//! Counting and logging refusals and admissions, with the rate-limited warning that sums up
//! refusals (see `summary.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::gate::SideEffects;
use super::points::PointCounters;
use super::summary::{Window, SAMPLE};
use super::{stripes, Kind, Limiter, PointId};
use crate::key::ClientKey;
use crate::reason::ReasonInfo;

impl Limiter {
    /// Counts, logs and sums up one refusal of `kind` at `point` for `reason`, which the point
    /// counts at `index`.
    ///
    /// Every refusal is logged at debug. At warn, the first after a quiet spell is logged on its
    /// own and opens a summary window; the others are summed up per window (see `summary`).
    pub(super) fn refused(
        &self,
        kind: Kind,
        point: PointId,
        index: usize,
        reason: &ReasonInfo,
        client: Option<&ClientKey>,
    ) {
        let shared = &*self.shared;
        let counters = shared.tallies.points.get(point);
        let previous = stripes::up(&counters.mine().refused[index]);
        if let (Some(client), 0) = (client, previous % super::refused_by::SAMPLE) {
            shared.refused_by.note(reason.name(), client);
        }
        // One load when nobody listens at debug level; the event itself is out of line.
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            log_refused(client, kind, counters, reason);
        }
        match shared.summary.open_until() {
            None => self.open_summary(client, kind, counters, reason),
            Some(end) => {
                if let Some(client) = client {
                    shared.summary.note(client);
                }
                if previous % SAMPLE == 0 {
                    self.close_summary_if_over(end);
                }
            }
        }
    }

    /// The first refusal after a quiet spell: opens a summary window, and logs the refusal at
    /// warn if this call opened it.
    #[cold]
    #[inline(never)]
    fn open_summary(
        &self,
        client: Option<&ClientKey>,
        kind: Kind,
        counters: &PointCounters,
        reason: &ReasonInfo,
    ) {
        if self.shared.summary.open(self.now(), self.total_refused()) {
            tracing::warn!(
                client = client.map(tracing::field::display),
                kind = kind.as_str(),
                point = %counters.point.name(),
                reason = reason.name(),
                "refusing: further refusals are summed up every 10s"
            );
        }
    }

    /// After an admission is made: logs it, and now and then (`sample` is this thread's count of
    /// admissions at the point) ends a summary window that is over.
    #[inline]
    pub(super) fn admitted(
        &self,
        key: &ClientKey,
        kind: Kind,
        counters: &PointCounters,
        sample: u64,
    ) {
        // One load when nobody listens at trace level; the event itself is out of line.
        if tracing::level_enabled!(tracing::Level::TRACE) {
            log_admitted(key, kind, counters);
        }
        if let Some(end) = self.shared.summary.open_until() {
            if sample % SAMPLE == 0 {
                self.close_summary_if_over(end);
            }
        }
    }

    /// Counts what a decision noticed besides its verdict, and logs bans.
    pub(super) fn record(&self, key: &ClientKey, notes: &SideEffects) {
        let c = &self.shared.counters;
        if notes.dry_run > 0 {
            c.dry_run
                .fetch_add(u64::from(notes.dry_run), Ordering::Relaxed);
            tracing::debug!(client = %key, "dry-run rule would have refused");
        }
        if notes.would_ban {
            c.dry_run.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %key, "dry-run ban policy would have banned");
        }
        if notes.banned {
            // At most one line per client per ban.
            c.bans.fetch_add(1, Ordering::Relaxed);
            self.shared.outbox.ban(super::sharing::BanNote::Banned(
                super::sharing::Banned::Client(*key),
            ));
            tracing::info!(client = %key, "client banned after repeated violations");
        }
    }

    /// Ends the summary window that ends at `end`, if it is over, and logs it.
    #[cold]
    #[inline(never)]
    fn close_summary_if_over(&self, end: u64) {
        let now = self.now();
        if now >= end {
            if let Some(window) = self
                .shared
                .summary
                .close_if_over(end, now, self.total_refused())
            {
                log_summary(&window);
            }
        }
    }

    /// Every refusal counted so far, at every point: for the summary windows, once per window.
    fn total_refused(&self) -> u64 {
        self.shared
            .tallies
            .points
            .iter()
            .flat_map(|point| point.stripes())
            .flat_map(|stripe| &stripe.refused)
            .map(|count| count.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

/// Logs a refusal at debug.
#[cold]
#[inline(never)]
fn log_refused(
    client: Option<&ClientKey>,
    kind: Kind,
    counters: &PointCounters,
    reason: &ReasonInfo,
) {
    tracing::debug!(
        client = client.map(tracing::field::display),
        kind = kind.as_str(),
        point = %counters.point.name(),
        reason = reason.name(),
        "refused"
    );
}

/// Logs an admission at trace.
#[cold]
#[inline(never)]
fn log_admitted(key: &ClientKey, kind: Kind, counters: &PointCounters) {
    tracing::trace!(
        client = %key,
        kind = kind.as_str(),
        point = %counters.point.name(),
        "admitted"
    );
}

/// Logs a finished window of refusals at warn: one line per window however many there were.
fn log_summary(window: &Window) {
    let about = if window.at_least { "at least" } else { "about" };
    tracing::warn!(
        refused = window.refused,
        clients = window.clients,
        seconds = window.seconds,
        "{} more connections or requests refused from {about} {} clients in the last {}s",
        window.refused,
        window.clients,
        window.seconds
    );
}

/// At most one log line per period for one kind of event, whichever thread sees it: for events
/// a client can cause at will (a connection cut, an unidentified request), where a line per
/// event would let it flood the log. The first event logs at once.
///
/// Reads the process's monotonic clock, not the limiter's: it paces the log, not a decision.
#[derive(Debug, Default)]
pub(crate) struct Every {
    /// When the last line was logged, in nanoseconds since the process's first look plus one (0:
    /// never).
    last: AtomicU64,
}

impl Every {
    /// Whether a line is due now, `period` after the last one; the caller that gets `true` logs.
    pub(crate) fn due(&self, period: Duration) -> bool {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let now = EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < period.as_nanos() as u64 {
            return false;
        }
        self.last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

/// How often a kind of event a client can cause at will is logged at most.
pub(crate) const EVENT_LOG_PERIOD: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lets_the_first_line_through_then_waits() {
        let every = Every::default();
        assert!(every.due(Duration::from_secs(3600)), "the first");
        assert!(!every.due(Duration::from_secs(3600)), "within the period");
        assert!(every.due(Duration::ZERO), "once the period is over");
    }
}
