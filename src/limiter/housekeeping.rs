//! Forgetting clients: the ones with nothing open and nothing to remember are swept every
//! second by one thread the process shares, never by an admission; and when the table is full,
//! an admission forgets a bounded number of idle clients to make room.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, TryLockError, Weak};
use std::time::Duration;

use super::{Limiter, Shared};
use crate::key::ClientKey;
use crate::limits::WhenFull;

/// How many entries making room looks at, at most, and how many idle ones it samples.
const EVICTION_SCAN: usize = 4096;
const EVICTION_SAMPLE: usize = 256;

/// How many clients one pass of a sweep forgets at most: their keys are gathered under read
/// locks, then removed one by one (256 Ki keys: 4.5 MiB for the pass).
const SWEEP_BATCH: usize = 1 << 18;

/// How often the sweeper forgets expired clients.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The limiters the sweeper looks after, or `None` if its thread could not be started.
static SWEPT: OnceLock<Option<Mutex<Vec<Weak<Shared>>>>> = OnceLock::new();

/// Has the sweeper look after `shared` from now on, starting the sweeper on first use.
///
/// One thread serves every limiter in the process: it wakes every second, sweeps each limiter
/// still alive (see [`Limiter::purge_expired`]) and forgets the dropped ones. A thread of its
/// own, rather than a task, so that sweeping needs no runtime, never occupies a runtime's
/// worker, and runs the same under tokio's paused time.
pub(super) fn look_after(shared: &Arc<Shared>) {
    let swept = SWEPT.get_or_init(|| {
        let started = std::thread::Builder::new()
            .name("connlimit-sweeper".into())
            .spawn(sweep_forever);
        match started {
            Ok(_) => Some(Mutex::new(Vec::new())),
            Err(err) => {
                tracing::warn!(
                    %err,
                    "could not start the thread that forgets expired clients: they are \
                     forgotten only by Limiter::purge_expired, and to make room when the table \
                     is full"
                );
                None
            }
        }
    });
    if let Some(limiters) = swept {
        lock(limiters).push(Arc::downgrade(shared));
    }
}

/// The sweeper's loop; it lives as long as the process.
fn sweep_forever() {
    loop {
        std::thread::sleep(SWEEP_INTERVAL);
        let Some(Some(limiters)) = SWEPT.get() else {
            continue;
        };
        // Keep the limiters alive for this round, and the list unlocked while sweeping.
        let alive: Vec<Arc<Shared>> = {
            let mut limiters = lock(limiters);
            limiters.retain(|limiter| limiter.strong_count() > 0);
            limiters.iter().filter_map(Weak::upgrade).collect()
        };
        for shared in alive {
            Limiter { shared }.sweep_unless_sweeping();
        }
    }
}

/// Locks the sweeper's list; it is only pushed to and filtered, so a panic elsewhere leaves it
/// usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Limiter {
    /// Forgets every client that has nothing open and whose rate and ban record has expired,
    /// and gives the map's memory back after a mass expiry.
    ///
    /// A thread the process's limiters share does this every second, so there is seldom a
    /// reason to call it; tests call it to see the table settle at once. It looks at the clients
    /// under the map's read locks, which admissions share, and takes a shard's write lock only
    /// to remove one client at a time: an admission never waits for more than one removal. One
    /// sweep runs at a time: a call made during the sweeper's waits for it, then sweeps.
    pub fn purge_expired(&self) {
        let _one_at_a_time = lock(&self.shared.sweeping);
        self.sweep();
    }

    /// The sweeper's turn: a sweep, unless one is running (a [`Limiter::purge_expired`] call).
    fn sweep_unless_sweeping(&self) {
        let _one_at_a_time = match self.shared.sweeping.try_lock() {
            Ok(guard) => guard,
            // It guards no data: a panic in an earlier sweep changes nothing here.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        self.sweep();
    }

    /// Forgets the clients nothing needs remembered; the caller holds `sweeping`.
    fn sweep(&self) {
        let shared = &*self.shared;
        let now = self.now();
        let mut forgotten = 0;
        // Bounded: each round forgets what it found, or finds fewer than a batch and stops.
        loop {
            let mut batch = Vec::new();
            for record in shared.clients.iter() {
                let entry = record.key().entry();
                if entry.is_forgettable(now) {
                    batch.push(entry.key);
                    if batch.len() == SWEEP_BATCH {
                        break;
                    }
                }
            }
            // Each is looked at again under the write lock: it may have come back meanwhile.
            for key in &batch {
                forgotten += self.forget_if(key, |entry| entry.is_forgettable(now));
            }
            if batch.len() < SWEEP_BATCH {
                break;
            }
        }
        if forgotten > 0 {
            give_memory_back(shared);
        }
    }

    /// Makes room for a new client in a full map: forgets, of up to [`EVICTION_SCAN`] clients,
    /// those with nothing open and nothing to remember, and with [`WhenFull::EvictStalest`] the
    /// quarter of up to [`EVICTION_SAMPLE`] idle ones whose records expire first. Returns
    /// whether any client was forgotten.
    pub(super) fn make_room(&self, when_full: WhenFull, now: u64) -> bool {
        let shared = &*self.shared;
        let mut forgettable: Vec<ClientKey> = Vec::new();
        let mut idle: Vec<(u64, ClientKey)> = Vec::new();
        for record in shared.clients.iter().take(EVICTION_SCAN) {
            let entry = record.key().entry();
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
            .remove_if(key, |record, ()| still(record.entry()))
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
