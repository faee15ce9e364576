//! Admission: the one function that decides and counts.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::mapref::entry::Entry;

use super::state::{ClientState, Denial, Event, Notes};
use super::{Kind, Limiter, PointId, Route};
use crate::key::ClientKey;
use crate::limits::WhenFull;
use crate::reason::{RejectReason, Rejected};

impl Limiter {
    /// The one admission decision. Loads the limits once, then, under the client's shard lock:
    /// a ban, the rate rules (before the concurrency checks, so a flood is refused at the
    /// cheapest check), the per-client limit, a place under the global cap, and the count.
    /// Nothing is counted unless every check passes, so a refused attempt never makes the totals
    /// look higher to concurrent callers. Returns the key the permit must release.
    pub(super) fn admit(
        &self,
        ip: IpAddr,
        kind: Kind,
        route: Option<Route<'_>>,
        point: PointId,
    ) -> Result<ClientKey, Rejected> {
        let shared = &*self.shared;
        let installed = shared.config.load();
        let limits = &installed.limits;
        let (key, exempt) = limits.client(ip);
        let limit = match (exempt, kind) {
            (true, _) => 0,
            (false, Kind::Connection) => limits.conn_limit_for(ip),
            (false, Kind::Request) => limits.max_requests_per_client,
        };
        // Only connections have a global count, and a cap on it.
        let total = (kind == Kind::Connection).then_some(&*shared.open_connections);
        let total_cap = if exempt { 0 } else { limits.max_conns_total };
        // The clock is read at most once per decision, and only when something needs it.
        let clock_reading = Cell::new(None);
        let now = || match clock_reading.get() {
            Some(now) => now,
            None => {
                let now = self.now();
                clock_reading.set(Some(now));
                now
            }
        };
        if limits.has_rates() || shared.retaining.load(Ordering::Relaxed) {
            self.sweep_if_due(now());
        }
        let event = Event {
            limits,
            kind,
            route,
            exempt,
            key: &key,
            now: &now,
        };
        let mut notes = Notes::default();

        let mut evicted = false;
        let verdict = loop {
            // The shard lock is held only inside this match: no await, no second map call.
            break match shared.clients.entry(key) {
                Entry::Occupied(mut occupied) => {
                    let state = occupied.get_mut();
                    state
                        .check_gate(&event, &mut notes)
                        .and_then(|()| count(state, kind, limit, total, total_cap))
                }
                Entry::Vacant(vacant) => {
                    if !reserve(&shared.tracked, limits.max_tracked_clients) {
                        drop(vacant);
                        // Full: make room once, outside the lock, then try again.
                        if !evicted
                            && limits.when_full == WhenFull::EvictStalest
                            && self.evict_stalest()
                        {
                            evicted = true;
                            continue;
                        }
                        Err((RejectReason::TrackedClientsFull, None))
                    } else {
                        let mut state = ClientState::default();
                        let verdict = state
                            .check_gate(&event, &mut notes)
                            .and_then(|()| count(&mut state, kind, limit, total, total_cap));
                        if verdict.is_ok() || !state.is_forgettable(now) {
                            // Kept even when refused, if the attempt left a record (a
                            // violation, a ban) that must outlive it.
                            vacant.insert(state);
                            if verdict.is_err() {
                                shared.retaining.store(true, Ordering::Relaxed);
                            }
                        } else {
                            shared.tracked.fetch_sub(1, Ordering::Relaxed);
                        }
                        verdict
                    }
                }
            };
        };
        self.record(&key, &notes);
        match verdict {
            Ok(()) => {
                let counters = shared.points.get(point);
                counters.open[kind as usize].fetch_add(1, Ordering::Relaxed);
                counters.admitted[kind as usize].fetch_add(1, Ordering::Relaxed);
                Ok(key)
            }
            Err((reason, wait)) => {
                self.refused(kind, point, reason as usize, reason.info(), Some(&key));
                Err(Rejected {
                    reason,
                    retry_after: wait.map(Duration::from_nanos),
                })
            }
        }
    }
}

/// The concurrency checks, after the gate: the per-client limit, then a place under the global
/// cap; counts the client when both pass.
fn count(
    state: &mut ClientState,
    kind: Kind,
    limit: usize,
    total: Option<&AtomicUsize>,
    total_cap: usize,
) -> Result<(), Denial> {
    if limit != 0 && *state.count_mut(kind) >= limit {
        Err((kind.client_limit_reason(), None))
    } else if total.is_some_and(|total| !reserve(total, total_cap)) {
        Err((RejectReason::TotalConnections, None))
    } else {
        *state.count_mut(kind) += 1;
        Ok(())
    }
}

/// Adds one to `total` unless that would pass `cap` (0 = no cap). A compare-and-swap loop, so
/// racing callers can never push the count past the cap, even for an instant.
#[inline]
pub(super) fn reserve(total: &AtomicUsize, cap: usize) -> bool {
    if cap == 0 {
        total.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    total
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_respects_the_cap() {
        let total = AtomicUsize::new(0);
        assert!(reserve(&total, 2));
        assert!(reserve(&total, 2));
        assert!(!reserve(&total, 2));
        assert_eq!(total.load(Ordering::Relaxed), 2);
        assert!(reserve(&total, 0));
        assert_eq!(total.load(Ordering::Relaxed), 3);
    }
}
