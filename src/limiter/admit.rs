//! Admission: the one function that decides and counts.

use std::cell::Cell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry as Slot;

use super::entry::{Entry, Facts, Record};
use super::gate::{Denial, Event, Notes, Route};
use super::{stripes, Kind, Limiter, PointId};
use crate::cidr_table::Overlap;
use crate::key::ClientKey;
use crate::reason::{RejectReason, Rejected};

/// An admission: the client's entry, which the permit releases into, and whether the
/// connection went into the global count.
pub(super) struct Admitted {
    pub(super) entry: Arc<Entry>,
    pub(super) in_total: bool,
}

impl Limiter {
    /// The one admission decision. Loads the config once, finds the client's entry (making it on
    /// the client's first visit), and under the entry's map shard's *read* lock checks a ban and
    /// the rate rules (under the client's own lock, only when there are any), then the per-client
    /// limit and a place under the global cap, counting the client only if every check passed.
    /// Nothing is counted unless every check passes, so a refused attempt never makes the totals
    /// look higher to concurrent callers. Returns the admission, and this thread's count of
    /// admissions at the point so far, for sampling.
    pub(super) fn admit(
        &self,
        ip: IpAddr,
        kind: Kind,
        route: Option<Route<'_>>,
        point: PointId,
    ) -> Result<(Admitted, u64), Rejected> {
        let shared = &*self.shared;
        let installed = shared.config.load();
        let limits = &installed.limits;
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
        let mut notes = Notes::default();
        let mut key = limits.key(ip);
        let mut exact = false;
        let mut made_room = false;
        let verdict = loop {
            // The shard lock is held only inside this block: no await, no second map call.
            if let Some(record) = shared.clients.get(&key) {
                let entry = &record.key().0;
                let facts = entry.facts(limits);
                let exempt = match facts.exempt {
                    Overlap::None => false,
                    Overlap::Fully => true,
                    Overlap::Partly => limits.is_exempt(ip),
                };
                if exempt && !exact {
                    // An exempt client is counted under its exact address.
                    exact = true;
                    if key != ClientKey::exact(ip) {
                        key = ClientKey::exact(ip);
                        continue;
                    }
                }
                let decision = Decision {
                    entry,
                    facts,
                    exempt,
                    event: Event {
                        limits,
                        kind,
                        route,
                        key: &key,
                        now: &now,
                    },
                };
                break decision.decide(&mut notes).map(|in_total| Admitted {
                    entry: Arc::clone(entry),
                    in_total,
                });
            }
            // The client's first visit (or a new config's first for its key).
            if !exact && limits.is_exempt(ip) {
                exact = true;
                key = ClientKey::exact(ip);
                continue;
            }
            if self.insert(key, limits.max_tracked_clients) {
                continue;
            }
            // Full: make room once, then try again.
            if !made_room && self.make_room(limits.when_full, now) {
                made_room = true;
                continue;
            }
            break Err((RejectReason::TrackedClientsFull, None));
        };
        self.record(&key, &notes);
        let counters = shared.home.points.get(point);
        let stripe = counters.mine();
        match verdict {
            Ok(admitted) => {
                stripes::up(&stripe.open[kind as usize]);
                let sample = stripes::up(&stripe.admitted[kind as usize]);
                Ok((admitted, sample))
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

    /// Puts an empty entry for `key` in the map, if none is there, reserving its place under
    /// `max_tracked_clients` (0: no limit) first. Returns `false` only when the map is full.
    pub(super) fn insert(&self, key: ClientKey, max_tracked_clients: usize) -> bool {
        let shared = &*self.shared;
        if !reserve(&shared.tracked, max_tracked_clients) {
            return false;
        }
        let entry = Arc::new(Entry::new(key, Arc::clone(&shared.home)));
        match shared.clients.entry(Record(entry)) {
            Slot::Vacant(vacant) => {
                vacant.insert(());
            }
            Slot::Occupied(_) => {
                // Another admission made it first.
                shared.tracked.fetch_sub(1, Ordering::Relaxed);
            }
        }
        true
    }
}

/// What one decision is about: the client's entry and what its limits are, and the event.
struct Decision<'a> {
    entry: &'a Entry,
    facts: Facts,
    exempt: bool,
    event: Event<'a>,
}

impl Decision<'_> {
    /// Decides and counts; returns whether the connection went into the global count.
    ///
    /// Without a global cap, a ban or a rate rule to check, the decision is one compare-and-swap
    /// on the client's count. Otherwise it is taken under the client's own lock, so that the
    /// client's attempts are checked one at a time and none raises a count that it then has to
    /// give back.
    #[inline]
    fn decide(&self, notes: &mut Notes) -> Result<bool, Denial> {
        let Decision {
            entry,
            facts,
            exempt,
            ref event,
        } = *self;
        let limits = event.limits;
        let kind = event.kind;
        let limit = match (exempt, kind) {
            (true, _) => 0,
            (false, Kind::Connection) => facts.limit,
            (false, Kind::Request) => limits.max_requests_per_client,
        };
        let in_total = kind == Kind::Connection && limits.counts_total();
        let gated =
            !exempt && (limits.has_rates() || entry.banned_until.load(Ordering::Relaxed) != 0);
        if !gated && !in_total {
            return if entry.try_count(kind, limit, false) {
                Ok(false)
            } else {
                Err((kind.client_limit_reason(), None))
            };
        }
        let mut gate = entry.gate();
        if gated {
            gate.check(event, &entry.banned_until, notes)?;
        }
        if !entry.try_count(kind, limit, in_total) {
            return Err((kind.client_limit_reason(), None));
        }
        if in_total {
            let cap = if exempt { 0 } else { limits.max_conns_total };
            if !reserve(&entry.home.total, cap) {
                entry.uncount(kind, true);
                return Err((RejectReason::TotalConnections, None));
            }
        }
        drop(gate);
        Ok(in_total)
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
