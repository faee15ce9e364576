//! Forgetting clients: the ones with nothing open and nothing to remember are swept every
//! second by one thread the process shares, never by an admission; and when the table is full,
//! an admission forgets one idle client, drawn from the whole table, to make room. The same
//! thread works out the fair levels of fair share (`fair.rs`), about ten times a second.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, TryLockError, Weak};
use std::time::{Duration, Instant};

use super::fair::FAIR_INTERVAL;
use super::{Limiter, Shared};
use crate::key::ClientKey;
use crate::limits::WhenFull;

/// How many clients one pass of a sweep forgets at most: their keys are gathered under read
/// locks, then removed one by one (256 Ki keys: 4.5 MiB for the pass).
const SWEEP_BATCH: usize = 1 << 18;

/// How often the sweeper forgets expired clients.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How often the counts of the clients each reason refused most are halved (`refused_by.rs`).
const FADE_INTERVAL: Duration = Duration::from_secs(60);

/// The limiters the sweeper looks after, or `None` if its thread could not be started.
static SWEPT: OnceLock<Option<Mutex<Vec<Weak<Shared>>>>> = OnceLock::new();

/// Has the sweeper look after `shared` from now on, starting the sweeper on first use.
///
/// One thread serves every limiter in the process: it wakes every [`FAIR_INTERVAL`] to work
/// out the fair levels of the limiters with fair share on, and every second sweeps each limiter
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
    let mut last_sweep = Instant::now();
    let mut last_fade = Instant::now();
    loop {
        std::thread::sleep(FAIR_INTERVAL);
        let Some(Some(limiters)) = SWEPT.get() else {
            continue;
        };
        let sweep = last_sweep.elapsed() >= SWEEP_INTERVAL;
        if sweep {
            last_sweep = Instant::now();
        }
        let fade = last_fade.elapsed() >= FADE_INTERVAL;
        if fade {
            last_fade = Instant::now();
        }
        // Keep the limiters alive for this round, and the list unlocked while sweeping.
        let alive: Vec<Arc<Shared>> = {
            let mut limiters = lock(limiters);
            limiters.retain(|limiter| limiter.strong_count() > 0);
            limiters.iter().filter_map(Weak::upgrade).collect()
        };
        for shared in alive {
            let limiter = Limiter { shared };
            limiter.fair_turn();
            if sweep {
                limiter.sweep_unless_sweeping();
            }
            if fade {
                limiter.shared.refused_by.fade();
            }
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

    /// Makes room for a new client in a full map: forgets one client with nothing open, drawn
    /// from the whole table (`roster.rs`). With [`WhenFull::EvictStalest`], the one whose record
    /// was looked at longest ago, of a random sample, clients with nothing left to remember
    /// first; with [`WhenFull::RefuseNew`], only a client with nothing left to remember. A
    /// running ban is never forgotten. Bounded work: a sample and a short walk. Returns whether
    /// a client was forgotten.
    pub(super) fn make_room(&self, when_full: WhenFull, now: u64) -> bool {
        let shared = &*self.shared;
        let rank = |entry: &super::Entry| {
            let rank = entry.eviction_rank(now)?;
            (rank == 0 || when_full == WhenFull::EvictStalest).then_some(rank)
        };
        let Some(victim) = shared.roster.pick(rank) else {
            return false;
        };
        let stale = rank(&victim).is_some_and(|rank| rank > 0);
        // Looked at again under the shard's write lock: it may have been busy again meanwhile.
        let gone = self.forget_if(&victim.key, |entry| {
            Arc::ptr_eq(entry, &victim) && rank(entry).is_some()
        });
        if gone == 1 && stale {
            tracing::debug!(client = %victim.key, "forgot a drained client to make room");
            shared.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        gone == 1
    }

    /// Removes `key`'s entry if `still` holds for it under the shard's write lock; 1 if it did.
    pub(super) fn forget_if(
        &self,
        key: &ClientKey,
        still: impl FnOnce(&Arc<super::Entry>) -> bool,
    ) -> usize {
        let shared = &*self.shared;
        let Some((record, ())) = shared
            .clients
            .remove_if(key, |record, ()| still(record.entry()))
        else {
            return 0;
        };
        let entry = record.entry();
        shared.roster.remove(entry);
        if entry.network_prefix != 0 {
            self.leave_network(&entry.key, entry.network_prefix);
        }
        shared.tracked.fetch_sub(1, Ordering::Relaxed);
        1
    }
}

/// Shrinks the map, and the arrays beside it, when they hold less than a quarter of what they
/// have room for.
fn give_memory_back(shared: &Shared) {
    let clients = &shared.clients;
    if clients.len() * 4 < clients.capacity() {
        clients.shrink_to_fit();
    }
    shared.roster.shrink();
    let networks = &shared.networks;
    if networks.len() * 4 < networks.capacity() {
        networks.shrink_to_fit();
    }
}
