//! [`Entry`]: one client's record, shared by the map and by the permits the client holds.
//!
//! The counts are atomics: an admission raises one with a compare-and-swap under its map shard's
//! *read* lock, and a permit lowers it without touching the map at all, so that admissions of
//! different clients never wait for each other and a release is a few atomic operations on the
//! client's own record. The rate and ban record is atomics too (`gate.rs`), so no decision takes
//! a lock. An entry outlives its last permit; the sweep (`housekeeping.rs`)
//! removes it once nothing about the client needs remembering.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use super::gate::RateRecord;
use super::{Kind, Tallies};
use crate::cidr_table::Overlap;
use crate::key::ClientKey;
use crate::limits::Limits;

/// One client's counts, what its limits are under the config in force, and its rate and ban
/// record.
///
/// Laid out for a decision: the key (compared on every lookup) and the counts come first, on one
/// cache line. Small, since the table holds one per client: with its reference counts, an entry
/// takes 136 bytes, a 144-byte block from glibc's allocator. (An entry of 104 bytes or fewer would
/// fit a 128-byte block, which glibc keeps, once freed, on lists it merges only when a large
/// block is next freed: after a million clients expire at once, that merge takes about 150 ms,
/// and shrinking the table pays it under a shard's write lock, stalling admissions.)
#[repr(C)]
pub(super) struct Entry {
    pub(super) key: ClientKey,
    /// The prefix of the network whose count of keys includes this one, or 0 when it is in
    /// none (`Limiter::insert`).
    pub(super) network_prefix: u8,
    /// Where the entry is in the table's roster (`roster.rs`); changed under the roster's lock.
    pub(super) slot: AtomicU32,
    /// Per [`Kind`], open connections (in-flight requests) in the low 32 bits; in the next 30,
    /// how many of them are not in the limiter's global count (admitted while no global budget
    /// was in force); then [`WANTS`]; and in the connections' top bit, whether the client may
    /// be banned ([`BANNED`]), so that a decision knows without a lock whether it must look.
    /// One word per kind, so that its parts change together.
    counts: [AtomicU64; 2],
    /// What this client's limits are under the config of one generation: see [`ClientLimits`].
    own_limits: AtomicU64,
    /// Where the permits count their releases.
    pub(super) tallies: Arc<Tallies>,
    /// The rate and ban record.
    pub(super) record: RateRecord,
}

/// What a client's limits are under one config: worked out once per config from its lists of
/// networks, then read from the entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ClientLimits {
    /// The per-client connection limit (0: unlimited).
    pub(super) limit: usize,
    /// Whether the client's addresses are exempt: none, some or all of them.
    pub(super) exempt: Overlap,
    /// Whether every address of the client is a trusted proxy: it then speaks for other
    /// clients, and its connections are never limited as one's (see `Decision::proxy`).
    pub(super) proxy: bool,
}

/// The most a limit held in [`ClientLimits`] can say; larger limits are held as this one, more
/// connections than a client can hold.
const LIMIT_BITS: u32 = 29;
const LIMIT_MAX: u64 = (1 << LIMIT_BITS) - 1;
/// The bit that says a client is a trusted proxy, above the limit and below the overlap.
const PROXY: u64 = 1 << LIMIT_BITS;
/// Where the overlap starts.
const OVERLAP_SHIFT: u32 = LIMIT_BITS + 1;

impl ClientLimits {
    /// `self`, for the config of `generation`, in one word: the generation's low 32 bits, the
    /// overlap, the proxy bit, the limit.
    fn pack(self, generation: u64) -> u64 {
        let overlap = match self.exempt {
            Overlap::None => 0,
            Overlap::Partly => 1,
            Overlap::Fully => 2,
        };
        let limit = (self.limit as u64).min(LIMIT_MAX);
        let proxy = if self.proxy { PROXY } else { 0 };
        ((generation & u64::from(u32::MAX)) << 32) | (overlap << OVERLAP_SHIFT) | proxy | limit
    }

    /// The limits packed for `generation`, if `word` holds that generation's.
    #[inline]
    fn unpack(word: u64, generation: u64) -> Option<ClientLimits> {
        // The common case in one comparison: this generation's, no address exempt, no proxy.
        let current = (generation & u64::from(u32::MAX)) << 32;
        if word >> LIMIT_BITS == current >> LIMIT_BITS {
            return Some(ClientLimits {
                limit: (word & LIMIT_MAX) as usize,
                exempt: Overlap::None,
                proxy: false,
            });
        }
        if word >> 32 != current >> 32 {
            return None;
        }
        let exempt = match (word >> OVERLAP_SHIFT) & 3 {
            0 => Overlap::None,
            1 => Overlap::Partly,
            _ => Overlap::Fully,
        };
        Some(ClientLimits {
            limit: (word & LIMIT_MAX) as usize,
            exempt,
            proxy: word & PROXY != 0,
        })
    }
}

/// How a counted connection or request stands to its kind's global count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tally {
    /// In it.
    InTotal,
    /// Outside it, admitted while no budget was in force: taken into it by [`Entry::absorb`]
    /// when one is put in force.
    Outside,
    /// Never in it: a keyed request's count under its address (the request is in it under its
    /// key).
    Apart,
}

/// The open connections' (in-flight requests') bits of a word of [`Entry::counts`].
const OPEN: u64 = u32::MAX as u64;
/// One connection (request) outside the global count, and all the bits that count them.
const ONE_UNCOUNTED: u64 = 1 << 32;
const UNCOUNTED: u64 = ((1 << 30) - 1) << 32;
/// Set when the client was refused for want of room in a budget (or by its fair share) since
/// the fair level was last worked out: it wants more than it holds (`fair.rs`).
const WANTS: u64 = 1 << 62;
/// Set in the connections' word while the client may be banned: from a ban until a decision
/// finds it over, or an unban.
const BANNED: u64 = 1 << 63;

impl Entry {
    pub(super) fn new(key: ClientKey, network_prefix: u8, tallies: Arc<Tallies>) -> Self {
        Entry {
            key,
            network_prefix,
            slot: AtomicU32::new(u32::MAX),
            counts: [AtomicU64::new(0), AtomicU64::new(0)],
            own_limits: AtomicU64::new(0),
            tallies,
            record: RateRecord::default(),
        }
    }

    /// The client's limits under `limits`, worked out on the first decision under a config.
    #[inline]
    pub(super) fn own_limits(&self, limits: &Limits) -> ClientLimits {
        let generation = limits.lookups.generation;
        match ClientLimits::unpack(self.own_limits.load(Ordering::Relaxed), generation) {
            Some(own) => own,
            None => self.work_out_own_limits(limits),
        }
    }

    /// Works out the client's limits under `limits`, and keeps them for the next decisions.
    #[cold]
    #[inline(never)]
    fn work_out_own_limits(&self, limits: &Limits) -> ClientLimits {
        // A named key (a request's API key, user or tenant) is no address: nothing about
        // addresses applies to it.
        let address = self.key.fingerprint().is_none();
        let own = ClientLimits {
            limit: limits.conn_limit_for(self.key.network()),
            exempt: if address {
                limits.exempt_overlap(self.key)
            } else {
                Overlap::None
            },
            proxy: address && limits.is_trusted_proxy_key(self.key),
        };
        let packed = own.pack(limits.lookups.generation);
        self.own_limits.store(packed, Ordering::Relaxed);
        own
    }

    /// The client's connection limit, when its entry worked it out under the config of
    /// `generation`, none of its addresses is exempt, it is no trusted proxy, and it may not be
    /// banned: the common case, which a decision takes on the hot settings alone.
    #[inline]
    pub(super) fn plain_limit(&self, generation: u64) -> Option<usize> {
        let own = ClientLimits::unpack(self.own_limits.load(Ordering::Relaxed), generation)?;
        (own.exempt == Overlap::None && !own.proxy && !self.may_be_banned()).then_some(own.limit)
    }

    /// The word of `kind`'s counts.
    #[inline]
    fn word(&self, kind: Kind) -> &AtomicU64 {
        &self.counts[kind as usize]
    }

    /// Counts one more `kind` if the client has fewer than `limit` (0: no limit), as `tally`
    /// says it stands to the global count.
    #[inline]
    pub(super) fn try_count(&self, kind: Kind, limit: usize, tally: Tally) -> bool {
        let add = match tally {
            Tally::Outside => 1 + ONE_UNCOUNTED,
            Tally::InTotal | Tally::Apart => 1,
        };
        self.word(kind)
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
                let open = word & OPEN;
                (limit == 0 || open < limit as u64).then_some(word + add)
            })
            .is_ok()
    }

    /// Gives back one `kind` counted as `tally`. Returns whether the global count holds it now
    /// (admitted into it, or taken in since by [`Entry::absorb`]), so the caller takes it out
    /// of that too.
    #[inline]
    pub(super) fn uncount(&self, kind: Kind, tally: Tally) -> bool {
        let word = self.word(kind);
        if tally != Tally::Outside {
            word.fetch_sub(1, Ordering::Relaxed);
            return tally == Tally::InTotal;
        }
        let mut held_in_total = false;
        let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |word| {
            debug_assert!(word & OPEN > 0, "released a unit never counted");
            held_in_total = word & UNCOUNTED == 0;
            Some(if held_in_total {
                word - 1
            } else {
                word - 1 - ONE_UNCOUNTED
            })
        });
        held_in_total
    }

    /// Takes the client's connections and requests that are outside the global counts into
    /// them: returns how many of each, and from now on releasing them takes them out of those
    /// too.
    pub(super) fn absorb(&self) -> [u64; 2] {
        [Kind::Connection, Kind::Request].map(|kind| {
            let word = self.word(kind).fetch_and(!UNCOUNTED, Ordering::Relaxed);
            (word & UNCOUNTED) >> 32
        })
    }

    /// Notes that the client was refused `kind` for want of room: it wants more than it holds.
    #[cold]
    pub(super) fn mark_wanting(&self, kind: Kind) {
        let word = self.word(kind);
        if word.load(Ordering::Relaxed) & WANTS == 0 {
            word.fetch_or(WANTS, Ordering::Relaxed);
        }
    }

    /// Whether the client was refused `kind` for want of room since the last call, which
    /// forgets it.
    pub(super) fn take_wanting(&self, kind: Kind) -> bool {
        let word = self.word(kind);
        word.load(Ordering::Relaxed) & WANTS != 0
            && word.fetch_and(!WANTS, Ordering::Relaxed) & WANTS != 0
    }

    /// Whether the client may be banned: a decision must then look, under the lock.
    #[inline]
    pub(super) fn may_be_banned(&self) -> bool {
        self.word(Kind::Connection).load(Ordering::Relaxed) & BANNED != 0
    }

    /// Marks the client as banned, or not, as its record's ban says; the first ban anywhere also
    /// tells keyed requests to look for their address's.
    pub(super) fn mark_banned(&self, banned: bool) {
        if banned {
            self.tallies.any_ban.store(true, Ordering::Relaxed);
            (self.word(Kind::Connection)).fetch_or(BANNED, Ordering::Relaxed);
        } else {
            (self.word(Kind::Connection)).fetch_and(!BANNED, Ordering::Relaxed);
        }
    }

    /// Open connections and in-flight requests.
    pub(super) fn counts(&self) -> (usize, usize) {
        let [connections, requests] =
            (self.counts.each_ref()).map(|word| (word.load(Ordering::Relaxed) & OPEN) as usize);
        (connections, requests)
    }

    /// Whether the client holds nothing open.
    pub(super) fn is_idle(&self) -> bool {
        self.counts() == (0, 0)
    }

    /// How forgetting the client to make room ranks at `now`, lowest first; `None` while it
    /// holds something open or is banned (see `RateRecord::eviction_rank`).
    pub(super) fn eviction_rank(&self, now: u64) -> Option<u64> {
        if !self.is_idle() {
            return None;
        }
        self.record.eviction_rank(now)
    }

    /// Whether nothing about the client needs remembering at `now`: nothing open, and no rate or
    /// ban record that could still refuse something.
    pub(super) fn is_forgettable(&self, now: u64) -> bool {
        self.is_idle() && !self.record.retains(now)
    }
}

/// An entry as the map holds it: hashed and compared by its client key, so that the map needs
/// no second copy of the key.
pub(super) struct Record(pub(super) Arc<Entry>);

impl Hash for Record {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key.hash(state);
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}

impl Eq for Record {}

impl Record {
    /// The entry.
    #[inline]
    pub(super) fn entry(&self) -> &Arc<Entry> {
        &self.0
    }
}

impl Borrow<ClientKey> for Record {
    fn borrow(&self) -> &ClientKey {
        &self.0.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        let key = ClientKey::new("192.0.2.1".parse().unwrap(), 32, 64);
        Entry::new(key, 0, Arc::new(Tallies::new()))
    }

    #[test]
    fn facts_are_kept_per_generation() {
        for proxy in [false, true] {
            for exempt in [Overlap::None, Overlap::Partly, Overlap::Fully] {
                let own = ClientLimits {
                    limit: 7,
                    exempt,
                    proxy,
                };
                let word = own.pack(5);
                assert_eq!(ClientLimits::unpack(word, 5), Some(own));
                assert_eq!(ClientLimits::unpack(word, 6), None);
            }
        }
        assert_eq!(ClientLimits::unpack(0, 1), None, "a new entry has none");
        let huge = ClientLimits {
            limit: usize::MAX,
            exempt: Overlap::Fully,
            proxy: false,
        };
        assert_eq!(
            ClientLimits::unpack(huge.pack(1), 1).unwrap().limit,
            LIMIT_MAX as usize
        );
    }

    #[test]
    fn counts_stop_at_the_limit_and_come_back() {
        let entry = entry();
        assert!(entry.try_count(Kind::Connection, 2, Tally::InTotal));
        assert!(entry.try_count(Kind::Connection, 2, Tally::Outside));
        assert!(!entry.try_count(Kind::Connection, 2, Tally::InTotal));
        assert!(entry.try_count(Kind::Request, 0, Tally::Outside));
        assert!(entry.try_count(Kind::Request, 0, Tally::Apart));
        assert_eq!(entry.counts(), (2, 2));
        assert!(entry.uncount(Kind::Connection, Tally::InTotal));
        assert!(!entry.uncount(Kind::Connection, Tally::Outside));
        assert!(!entry.uncount(Kind::Request, Tally::Outside));
        assert_eq!(entry.absorb(), [0, 0], "a count apart is never taken in");
        assert!(!entry.uncount(Kind::Request, Tally::Apart));
        assert!(entry.is_idle());
    }

    #[test]
    fn wanting_more_is_noted_until_taken() {
        let entry = entry();
        assert!(entry.try_count(Kind::Request, 1, Tally::InTotal));
        entry.mark_wanting(Kind::Request);
        assert!(
            !entry.try_count(Kind::Request, 1, Tally::InTotal),
            "the mark is no count"
        );
        assert_eq!(entry.counts(), (0, 1));
        assert!(!entry.take_wanting(Kind::Connection));
        assert!(entry.take_wanting(Kind::Request));
        assert!(!entry.take_wanting(Kind::Request), "once");
        assert!(entry.uncount(Kind::Request, Tally::InTotal));
        assert!(entry.is_idle());
    }

    #[test]
    fn the_ban_mark_leaves_the_counts_alone() {
        let entry = entry();
        assert!(entry.try_count(Kind::Connection, 1, Tally::Outside));
        entry.mark_banned(true);
        assert!(entry.may_be_banned());
        assert!(
            !entry.try_count(Kind::Connection, 1, Tally::InTotal),
            "still at the limit"
        );
        assert_eq!(entry.absorb(), [1, 0]);
        assert!(entry.may_be_banned(), "absorbing keeps the mark");
        assert!(entry.uncount(Kind::Connection, Tally::Outside));
        assert_eq!(entry.counts(), (0, 0));
        entry.mark_banned(false);
        assert!(!entry.may_be_banned());
        assert_eq!(
            std::mem::size_of::<Entry>(),
            120,
            "with its reference counts, a 144-byte block from glibc"
        );
    }

    #[test]
    fn absorbed_connections_leave_the_global_count_when_released() {
        let entry = entry();
        assert!(entry.try_count(Kind::Connection, 0, Tally::Outside));
        assert!(entry.try_count(Kind::Connection, 0, Tally::Outside));
        assert!(entry.try_count(Kind::Request, 0, Tally::Outside));
        assert_eq!(entry.absorb(), [2, 1]);
        assert_eq!(entry.absorb(), [0, 0], "once");
        assert!(entry.uncount(Kind::Request, Tally::Outside), "absorbed");
        assert!(
            entry.try_count(Kind::Connection, 0, Tally::Outside),
            "admitted after"
        );
        // One not absorbed, two absorbed: the releases tell them apart by count.
        assert!(!entry.uncount(Kind::Connection, Tally::Outside));
        assert!(entry.uncount(Kind::Connection, Tally::Outside));
        assert!(entry.uncount(Kind::Connection, Tally::Outside));
        assert!(entry.is_idle());
    }
}
