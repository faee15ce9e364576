//! Forgetting clients: expired records swept about once a second, and, when the table is full,
//! idle clients evicted to make room.

use std::sync::atomic::Ordering;

use super::Limiter;
use crate::key::ClientKey;

/// How many entries one eviction looks at, at most, and how many drained ones it samples.
const EVICTION_SCAN: usize = 4096;
const EVICTION_SAMPLE: usize = 256;

/// The least time between two sweeps of expired, drained entries.
const SWEEP_INTERVAL_NANOS: u64 = 1_000_000_000;

impl Limiter {
    /// Forgets the drained clients whose state has expired, if the last sweep was at least a
    /// second ago. Called before a decision takes its shard lock; at most one caller sweeps.
    pub(super) fn sweep_if_due(&self, now: u64) {
        let next = &self.shared.next_sweep;
        let due = next.load(Ordering::Relaxed);
        if now >= due
            && next
                .compare_exchange(
                    due,
                    now + SWEEP_INTERVAL_NANOS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.purge_expired();
        }
    }

    /// Forgets every client that has nothing open and whose rate and ban state has expired.
    ///
    /// Admissions already do this about once a second while rate rules or bans are in use; call
    /// it from a timer of your own to reclaim memory promptly on an idle server. Takes each
    /// shard's write lock in turn.
    pub fn purge_expired(&self) {
        let shared = &*self.shared;
        let now = self.now();
        // Cleared first: a release that keeps an entry during the scan sets it again.
        shared.retaining.store(false, Ordering::Relaxed);
        let mut kept_drained = false;
        let mut removed = 0;
        shared.clients.retain(|_, state| {
            let forget = state.is_forgettable(|| now);
            kept_drained |= !forget && state.is_idle();
            removed += usize::from(forget);
            !forget
        });
        shared.tracked.fetch_sub(removed, Ordering::Relaxed);
        if kept_drained {
            shared.retaining.store(true, Ordering::Relaxed);
        }
    }

    /// Makes room for new clients: samples up to [`EVICTION_SAMPLE`] drained clients (those with
    /// nothing open) and forgets the quarter whose records expire first — the stalest, expired
    /// ones before all. Evicting in batches spreads the cost of a scan over many newcomers.
    /// Returns whether any client was forgotten.
    pub(super) fn evict_stalest(&self) -> bool {
        let shared = &*self.shared;
        let mut sample: Vec<(u64, ClientKey)> = shared
            .clients
            .iter()
            .take(EVICTION_SCAN)
            .filter(|entry| entry.is_idle())
            .take(EVICTION_SAMPLE)
            .map(|entry| (entry.retain_until, *entry.key()))
            .collect();
        sample.sort_unstable_by_key(|(until, _)| *until);
        let batch = sample.len().div_ceil(4);
        let mut evicted = 0;
        for (_, key) in sample.iter().take(batch) {
            if shared
                .clients
                .remove_if(key, |_, state| state.is_idle())
                .is_some()
            {
                evicted += 1;
                tracing::debug!(client = %key, "forgot a drained client to make room");
            }
        }
        shared.tracked.fetch_sub(evicted, Ordering::Relaxed);
        shared
            .counters
            .evictions
            .fetch_add(evicted as u64, Ordering::Relaxed);
        evicted > 0
    }
}
