//! [`Roster`]: every entry of the client table in one array, so that making room for a newcomer
//! can draw its candidates from the whole table at random, in constant time.
//!
//! The map offers no random access: walking it always starts at the front of its first shard,
//! so a bounded look at "some clients" would always see the same few. The roster is the table's
//! entries in no particular order; each entry knows its place in it, so adding and removing one
//! is a push and a swap. It changes only when a client is first tracked or forgotten, never on
//! an admission of a tracked client.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use super::entry::Entry;

/// How many entries, drawn at random, a newcomer's search for room compares: the stalest of
/// them goes. Against a full table of records arriving in order of age, 32 keeps about 98% of
/// the freshest (16: 96%, 8: 92%).
const SAMPLE: usize = 32;

/// How many samples the search draws, at most, while none of a sample's entries may go (a
/// table mostly busy or banned): with a tenth of the table free to go, four samples all miss
/// about once in 700,000 searches.
const SAMPLES: usize = 4;

/// How many further entries the search walks through, from where the last walk stopped, when
/// no sample found one that may go: so that, over successive newcomers, every entry is looked
/// at, however few can go.
const WALK: usize = 128;

/// While searches keep finding nothing (a table of running bans and busy clients), each
/// draws one sample and walks this far: a newcomer's refusal stays cheap, and the walk still
/// goes round the whole table over successive newcomers.
const WALK_AFTER_MISS: usize = 32;

/// The table's entries, and where the walk stopped.
pub(super) struct Roster {
    inner: Mutex<Inner>,
}

struct Inner {
    entries: Vec<Arc<Entry>>,
    hand: usize,
    random: Random,
    /// Whether the last search found nothing that may go.
    missed: bool,
}

impl Roster {
    pub(super) fn new() -> Self {
        Roster {
            inner: Mutex::new(Inner {
                entries: Vec::new(),
                hand: 0,
                random: Random::new(),
                missed: false,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below is complete before anything can panic.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `entry`, which is about to enter the table.
    pub(super) fn add(&self, entry: &Arc<Entry>) {
        let mut inner = self.lock();
        entry
            .slot
            .store(inner.entries.len() as u32, Ordering::Relaxed);
        inner.entries.push(Arc::clone(entry));
    }

    /// Removes `entry`, which has just left the table.
    pub(super) fn remove(&self, entry: &Entry) {
        let mut inner = self.lock();
        let slot = entry.slot.load(Ordering::Relaxed) as usize;
        let last = inner.entries.len() - 1;
        debug_assert!(std::ptr::eq(&*inner.entries[slot], entry));
        inner.entries.swap(slot, last);
        inner.entries.pop();
        if slot < last {
            inner.entries[slot]
                .slot
                .store(slot as u32, Ordering::Relaxed);
        }
    }

    /// Gives back the array's spare room after a mass expiry.
    pub(super) fn shrink(&self) {
        let mut inner = self.lock();
        if inner.entries.len() * 4 < inner.entries.capacity() {
            inner.entries.shrink_to_fit();
        }
    }

    /// The entry to forget to make room: of [`SAMPLE`] entries drawn at random, the one `rank`
    /// ranks lowest; if `rank` refuses all of them (`None`: the entry must stay), the same with
    /// another sample, up to [`SAMPLES`]; then the first one it accepts of the next [`WALK`]
    /// entries after where the last walk stopped. `None` when nothing looked at may go: at most
    /// 256 entries are looked at, and 64 while the searches before found nothing either
    /// ([`WALK_AFTER_MISS`]).
    pub(super) fn pick(&self, rank: impl Fn(&Entry) -> Option<u64>) -> Option<Arc<Entry>> {
        let mut inner = self.lock();
        let len = inner.entries.len();
        if len == 0 {
            return None;
        }
        let (samples, walk) = if inner.missed {
            (1, WALK_AFTER_MISS)
        } else {
            (SAMPLES, WALK)
        };
        let mut best: Option<(u64, usize)> = None;
        for _ in 0..samples {
            for _ in 0..SAMPLE.min(len) {
                let i = inner.random.below(len);
                if let Some(r) = rank(&inner.entries[i]) {
                    if best.is_none_or(|(least, _)| r < least) {
                        best = Some((r, i));
                    }
                }
            }
            if best.is_some() {
                break;
            }
        }
        if best.is_none() {
            for _ in 0..walk.min(len) {
                inner.hand = (inner.hand + 1) % len;
                let i = inner.hand;
                if let Some(r) = rank(&inner.entries[i]) {
                    best = Some((r, i));
                    break;
                }
            }
        }
        inner.missed = best.is_none();
        best.map(|(_, i)| Arc::clone(&inner.entries[i]))
    }
}

/// A xorshift generator seeded at random: which entries a search for room looks at must not be
/// predictable by the clients that fill the table.
struct Random(u64);

impl Random {
    fn new() -> Self {
        use std::hash::BuildHasher;
        let seed = foldhash::fast::RandomState::default().hash_one(0u64);
        Random(seed | 1)
    }

    /// A number in `0..n` (`n > 0`; the bias of the modulo is negligible for tables this size).
    fn below(&mut self, n: usize) -> usize {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x % n as u64) as usize
    }
}
