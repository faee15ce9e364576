//! Forgetting clients: the ones with nothing open and nothing to remember are swept, off the
//! admission path when a tokio runtime can run a task for it; and when the table is full, idle
//! clients are forgotten to make room.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Limiter, Shared};
use crate::key::ClientKey;
use crate::limits::WhenFull;

/// How many entries making room looks at, at most, and how many idle ones it samples.
const EVICTION_SCAN: usize = 4096;
const EVICTION_SAMPLE: usize = 256;

/// The least time between two sweeps.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Without a housekeeping task, one admission in this many on a thread looks whether a sweep is
/// due (every admission does, while rate rules are in force).
const SWEEP_SAMPLE: u32 = 4096;

/// When the next sweep is due, and who sweeps.
pub(super) struct Housekeeping {
    /// When (clock nanoseconds) the next sweep by an admission is due.
    next: AtomicU64,
    /// Whether a task of its own sweeps, so that admissions never do.
    background: AtomicBool,
}

impl Housekeeping {
    pub(super) fn new() -> Self {
        Housekeeping {
            next: AtomicU64::new(0),
            background: AtomicBool::new(false),
        }
    }
}

thread_local! {
    /// Admissions on this thread, for [`SWEEP_SAMPLE`].
    static ADMISSIONS: Cell<u32> = const { Cell::new(0) };
}

impl Limiter {
    /// Starts the task that sweeps every second, if a tokio runtime is there to run it: each
    /// sweep runs on the runtime's blocking threads, and the task ends with the limiter.
    pub(super) fn spawn_housekeeping(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.shared
            .housekeeping
            .background
            .store(true, Ordering::Relaxed);
        let shared = Arc::downgrade(&self.shared);
        runtime.spawn(async move {
            let mut every = tokio::time::interval(SWEEP_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let limiter = Limiter { shared };
                let sweep = tokio::task::spawn_blocking(move || limiter.purge_expired());
                if sweep.await.is_err() {
                    return;
                }
            }
        });
    }

    /// Before a decision: without a housekeeping task, sweeps if one is due, looking at the
    /// clock now and then (at every decision while `rates` are in force, which read it anyway).
    #[inline]
    pub(super) fn sweep_if_due(&self, rates: bool, now: impl FnOnce() -> u64) {
        let housekeeping = &self.shared.housekeeping;
        if housekeeping.background.load(Ordering::Relaxed) {
            return;
        }
        let sampled = ADMISSIONS.with(|count| {
            let n = count.get().wrapping_add(1);
            count.set(n);
            n % SWEEP_SAMPLE == 0
        });
        if !rates && !sampled {
            return;
        }
        let now = now();
        let due = housekeeping.next.load(Ordering::Relaxed);
        let interval = crate::clock::nanos(SWEEP_INTERVAL);
        if now >= due
            && housekeeping
                .next
                .compare_exchange(due, now + interval, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.purge_expired();
        }
    }

    /// Forgets every client that has nothing open and whose rate and ban record has expired,
    /// and gives the map's memory back after a mass expiry.
    ///
    /// Inside a tokio runtime, a limiter made by [`Limiter::new`] or [`Limiter::try_new`] does
    /// this every second in a task of its own; otherwise admissions do it about once a second.
    /// Call it from a timer of your own to reclaim memory promptly then. It takes each of the
    /// map's 256 shards' write locks in turn, each for as long as it takes to look at that
    /// shard's clients.
    pub fn purge_expired(&self) {
        let shared = &*self.shared;
        let now = self.now();
        let mut removed = 0;
        shared.clients.retain(|record, ()| {
            let forget = record.0.is_forgettable(now);
            removed += usize::from(forget);
            !forget
        });
        if removed > 0 {
            shared.tracked.fetch_sub(removed, Ordering::Relaxed);
            give_memory_back(shared);
        }
    }

    /// Makes room for a new client in a full map: forgets, of up to [`EVICTION_SCAN`] clients,
    /// those with nothing open and nothing to remember, and with [`WhenFull::EvictStalest`] the
    /// quarter of up to [`EVICTION_SAMPLE`] idle ones whose records expire first. Returns
    /// whether any client was forgotten.
    pub(super) fn make_room(&self, when_full: WhenFull, now: impl FnOnce() -> u64) -> bool {
        let shared = &*self.shared;
        let now = now();
        let mut forgettable: Vec<ClientKey> = Vec::new();
        let mut idle: Vec<(u64, ClientKey)> = Vec::new();
        for record in shared.clients.iter().take(EVICTION_SCAN) {
            let entry = &record.key().0;
            if !entry.is_idle() {
                continue;
            }
            let retained_until = entry.gate().retained_until();
            if retained_until <= now {
                forgettable.push(entry.key);
            } else if idle.len() < EVICTION_SAMPLE {
                idle.push((retained_until, entry.key));
            }
        }
        let mut forgot = 0;
        for key in &forgettable {
            forgot += self.forget_if(key, |entry| entry.is_forgettable(now));
        }
        let mut evicted = 0;
        if when_full == WhenFull::EvictStalest && forgot == 0 {
            idle.sort_unstable_by_key(|(until, _)| *until);
            for (_, key) in idle.iter().take(idle.len().div_ceil(4)) {
                let gone = self.forget_if(key, |entry| entry.is_idle());
                if gone == 1 {
                    tracing::debug!(client = %key, "forgot a drained client to make room");
                }
                evicted += gone;
            }
            shared
                .counters
                .evictions
                .fetch_add(evicted as u64, Ordering::Relaxed);
        }
        forgot + evicted > 0
    }

    /// Removes `key`'s entry if `still` holds for it under the shard's write lock; 1 if it did.
    pub(super) fn forget_if(
        &self,
        key: &ClientKey,
        still: impl FnOnce(&super::Entry) -> bool,
    ) -> usize {
        let shared = &*self.shared;
        let removed = shared
            .clients
            .remove_if(key, |record, ()| still(&record.0))
            .is_some();
        if removed {
            shared.tracked.fetch_sub(1, Ordering::Relaxed);
        }
        usize::from(removed)
    }
}

/// Shrinks the map when it holds less than a quarter of what it has room for.
fn give_memory_back(shared: &Shared) {
    let clients = &shared.clients;
    if clients.len() * 4 < clients.capacity() {
        clients.shrink_to_fit();
    }
}
