//! Fair share (`crate::fair_share`): the fair level of each global budget, worked out by the
//! housekeeping thread from the counts it walks and read by admission as one atomic; and
//! reclaim, which asks the heaviest clients to give back idle connections.
//!
//! A client's demand is what it holds, or more (the ceiling, or one more than it holds if that
//! is larger) when it was refused for want of room since the last walk: the entry's `WANTS`
//! mark. The level is the max-min fair share of the budget among those demands ([`level`]).
//! Reclaim is demand-driven: each refusal of a client under its share by a full connection
//! budget asks one idle connection back from the heaviest client over its share that has no ask
//! waiting, so that what is closed is what is wanted, never the heavy client cut down to a level
//! that the next walk may raise again.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::entry::Entry;
use super::{Kind, Limiter};
use crate::fair_share::Budget;

/// The level when no budget is contended enough to need one: no client is held below its
/// ceiling.
pub(super) const NO_LEVEL: usize = usize::MAX;

/// How often the fair levels are worked out, at most.
pub(super) const FAIR_INTERVAL: Duration = Duration::from_millis(100);

/// The early close of an idle HTTP/1 keep-alive connection of a client over its fair share,
/// given back to make room for a client under its share (`serve::Serve`).
pub(crate) const RECLAIMED_IDLE: &str = "reclaimed_idle";

/// The same for an HTTP/2 connection with no stream open, sent a graceful `GOAWAY`.
pub(crate) const RECLAIMED_GOAWAY: &str = "reclaimed_goaway";

/// How many of the heaviest clients over their connection share reclaim picks from.
const HEAVIEST: usize = 32;

/// The walk takes at most 1 / this of the housekeeping thread's time: with a large table, it
/// runs less often than every [`FAIR_INTERVAL`].
const WALK_DUTY: u32 = 20;

/// What admission and stats read of fair share, and what the walk leaves for reclaim.
pub(super) struct FairLevels {
    /// Per [`Kind`], the fair level ([`NO_LEVEL`]: none).
    level: [AtomicUsize; 2],
    /// Per [`Kind`], how many clients held more than the level at the last walk.
    over: [AtomicUsize; 2],
    /// The clients over their connection share at the last walk, heaviest first.
    heaviest: ArcSwap<Vec<Arc<Entry>>>,
    /// Connections asked back (those given back are counted as closes, by cause).
    asked: AtomicU64,
    /// When the next walk is due (the housekeeping thread's alone).
    next_walk: std::sync::Mutex<Option<Instant>>,
}

impl Default for FairLevels {
    fn default() -> Self {
        FairLevels {
            level: [AtomicUsize::new(NO_LEVEL), AtomicUsize::new(NO_LEVEL)],
            over: Default::default(),
            heaviest: ArcSwap::from_pointee(Vec::new()),
            asked: AtomicU64::new(0),
            next_walk: std::sync::Mutex::new(None),
        }
    }
}

/// What one client is asked to give back, and how its connections hear of it (feature
/// `serve`: each idle connection of the client's takes one ask and closes gracefully).
#[derive(Debug, Default)]
pub(crate) struct Giveback {
    asked: AtomicU32,
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    notify: tokio::sync::Notify,
}

impl Giveback {
    /// Takes one ask, if there is one: the caller then closes one idle connection.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn take(&self) -> bool {
        self.asked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Whether anything is asked back now.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn is_asked(&self) -> bool {
        self.asked.load(Ordering::Relaxed) > 0
    }

    /// Completes at the next ask (or the next [`Giveback::wake`]); register before looking.
    #[cfg_attr(not(feature = "serve"), allow(dead_code))]
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Wakes the client's connections waiting in [`Giveback::notified`], so that those idle now
    /// look again: after an ask, and when one of them goes idle while asks are waiting.
    pub(crate) fn wake(&self) {
        self.notify.notify_waiters();
    }

    /// Asks for one connection back, if the client holds some over its share (`over`) and
    /// none is asked already: one at a time, so that a burst of refusals closes no more than
    /// the refused clients take. Whether it asked.
    fn ask(&self, over: u32) -> bool {
        let asked = over > 0
            && self
                .asked
                .compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if asked {
            self.wake();
        }
        asked
    }

    /// Lowers what is asked to at most `most`: a client back under its share owes nothing.
    fn at_most(&self, most: u32) {
        let _ = self
            .asked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n > most).then_some(most)
            });
    }
}

/// The max-min fair level of `budget` among `demands` (each at least 1): the largest `L` with
/// `Σ min(demand, L) ≤ budget`, at least 1; [`NO_LEVEL`] when every demand fits. Sorts
/// `demands`.
pub(super) fn level(demands: &mut [u32], budget: usize) -> usize {
    let wanted: u64 = demands.iter().map(|&d| u64::from(d)).sum();
    if wanted <= budget as u64 {
        return NO_LEVEL;
    }
    demands.sort_unstable();
    let mut left = budget as u64;
    for (i, &demand) in demands.iter().enumerate() {
        let share = left / (demands.len() - i) as u64;
        if u64::from(demand) > share {
            return (share as usize).max(1);
        }
        left -= u64::from(demand);
    }
    NO_LEVEL
}

/// A client and the connections it holds, ordered lightest first in the walk's min-heap of the
/// heaviest clients.
struct Heavy(usize, Arc<Entry>);

impl PartialEq for Heavy {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for Heavy {}

impl PartialOrd for Heavy {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Heavy {
    /// Reversed, so that `BinaryHeap` (a max-heap) keeps the lightest on top, to be dropped.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.cmp(&self.0)
    }
}

/// A client's demand of a budget: what it holds, or, if it was refused for want of room, the
/// most it could be let hold (the ceiling, or one more than it holds).
fn demand(held: usize, wants: bool, budget: &Budget) -> u32 {
    let demand = if wants {
        budget.ceiling.max(held + 1)
    } else {
        held
    };
    u32::try_from(demand).unwrap_or(u32::MAX)
}

impl Limiter {
    /// The fair level of `kind`'s budget ([`NO_LEVEL`]: none).
    #[inline]
    pub(super) fn fair_level(&self, kind: Kind) -> usize {
        self.shared.fair.level[kind as usize].load(Ordering::Relaxed)
    }

    /// A client under its share found the connection budget full: asks the heaviest client
    /// over its share for one idle connection back. Bounded: a look at a few of the heaviest.
    #[cold]
    pub(super) fn ask_back(&self) {
        let fair = &self.shared.fair;
        let level = self.fair_level(Kind::Connection);
        for entry in fair.heaviest.load().iter() {
            let (held, _) = entry.counts();
            let over = u32::try_from(held.saturating_sub(level)).unwrap_or(u32::MAX);
            let asked = over > 0 && entry.record.giveback().is_some_and(|g| g.ask(over));
            if asked {
                fair.asked.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(client = %entry.key, "asked a client over its fair share for an idle connection");
                return;
            }
        }
    }

    /// The housekeeping thread's turn: works the fair levels out if fair share is on and the
    /// last walk was long enough ago; forgets them when it is off.
    pub(super) fn fair_turn(&self) {
        let shared = &*self.shared;
        let installed = self.installed();
        let budgets = [Kind::Connection, Kind::Request].map(|kind| *installed.limits.budget(kind));
        drop(installed);
        if !budgets.iter().any(|budget| budget.fair) {
            self.forget_levels();
            return;
        }
        let mut next_walk = shared
            .fair
            .next_walk
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if next_walk.is_some_and(|due| now < due) {
            return;
        }
        self.work_out_levels(&budgets);
        let took = now.elapsed();
        *next_walk = Some(now + FAIR_INTERVAL.max(took * WALK_DUTY));
    }

    /// No fair share: no level, no one to reclaim from. Writes only what a walk left, so that
    /// a limiter without fair share is not written to ten times a second.
    fn forget_levels(&self) {
        let fair = &self.shared.fair;
        for kind in 0..2 {
            if fair.level[kind].load(Ordering::Relaxed) != NO_LEVEL {
                fair.level[kind].store(NO_LEVEL, Ordering::Relaxed);
            }
            if fair.over[kind].load(Ordering::Relaxed) != 0 {
                fair.over[kind].store(0, Ordering::Relaxed);
            }
        }
        if !fair.heaviest.load().is_empty() {
            fair.heaviest.store(Arc::new(Vec::new()));
        }
    }

    /// One walk of the table: each client's demand of each fair budget, the levels, and the
    /// clients over the connection level, heaviest first. Under the map's read locks, one shard
    /// at a time, as the sweep's; it keeps a few numbers per client holding something, and
    /// a reference to the heaviest few.
    pub(super) fn work_out_levels(&self, budgets: &[Budget; 2]) {
        let shared = &*self.shared;
        let mut demands: [Vec<u32>; 2] = Default::default();
        // Connections held, per client holding some; the heaviest clients (a min-heap of at
        // most `HEAVIEST`); the clients with an ask waiting.
        let mut held_connections: Vec<u32> = Vec::new();
        let mut heaviest = std::collections::BinaryHeap::new();
        let mut asked = Vec::new();
        for record in shared.clients.iter() {
            let entry = record.key().entry();
            let (connections, requests) = entry.counts();
            for (k, (held, budget)) in [connections, requests].iter().zip(budgets).enumerate() {
                let kind = [Kind::Connection, Kind::Request][k];
                let wants = entry.take_wanting(kind);
                if budget.fair && (*held > 0 || wants) {
                    demands[k].push(demand(*held, wants, budget));
                }
            }
            if !budgets[0].fair || connections == 0 {
                continue;
            }
            held_connections.push(u32::try_from(connections).unwrap_or(u32::MAX));
            let lightest = heaviest.peek().map_or(0, |Heavy(held, _)| *held);
            if heaviest.len() < HEAVIEST || connections > lightest {
                heaviest.push(Heavy(connections, Arc::clone(entry)));
                if heaviest.len() > HEAVIEST {
                    heaviest.pop();
                }
            }
            if entry.record.giveback().is_some_and(|g| g.is_asked()) {
                asked.push((connections, Arc::clone(entry)));
            }
        }
        let fair = &shared.fair;
        let mut levels = [NO_LEVEL; 2];
        for (k, budget) in budgets.iter().enumerate() {
            if budget.fair {
                levels[k] = level(&mut demands[k], budget.total);
            }
            fair.level[k].store(levels[k], Ordering::Relaxed);
        }
        let over =
            |values: &[u32], level: usize| values.iter().filter(|&&v| v as usize > level).count();
        fair.over[0].store(over(&held_connections, levels[0]), Ordering::Relaxed);
        fair.over[1].store(over(&demands[1], levels[1]), Ordering::Relaxed);
        // What a client owes is what it holds over the level: no more is asked of it.
        for (held, entry) in asked {
            let owed = u32::try_from(held.saturating_sub(levels[0])).unwrap_or(u32::MAX);
            if let Some(giveback) = entry.record.giveback() {
                giveback.at_most(owed);
            }
        }
        let mut heaviest: Vec<_> = (heaviest.into_vec().into_iter())
            .filter(|Heavy(held, _)| *held > levels[0])
            .collect();
        heaviest.sort_unstable_by_key(|Heavy(held, _)| std::cmp::Reverse(*held));
        let heaviest: Vec<_> = heaviest.into_iter().map(|Heavy(_, entry)| entry).collect();
        if !(heaviest.is_empty() && fair.heaviest.load().is_empty()) {
            fair.heaviest.store(Arc::new(heaviest));
        }
    }

    /// Fair share as stats show it: per kind, the level and the clients over it; and the
    /// connections asked back.
    pub(super) fn fair_figures(&self) -> ([(Option<usize>, usize); 2], u64) {
        let fair = &self.shared.fair;
        let per_kind = [0, 1].map(|k| {
            let level = fair.level[k].load(Ordering::Relaxed);
            let over = fair.over[k].load(Ordering::Relaxed);
            ((level != NO_LEVEL).then_some(level), over)
        });
        (per_kind, fair.asked.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fair_share::FairShare;
    use crate::limiter::Installed;
    use crate::limits::Limits;
    use crate::reason::RejectReason;
    use std::net::{IpAddr, Ipv4Addr};

    const GUARANTEED: usize = 2;
    const BUDGET: usize = 12;
    const CEILING: usize = 8;

    /// A limiter with a fairly shared budget of 12 connections, 2 guaranteed, a ceiling of 8,
    /// whose levels only the test works out.
    fn fair_limiter() -> (Limiter, [Budget; 2]) {
        let limits = Limits {
            max_conns_per_client: GUARANTEED,
            max_conns_total: BUDGET,
            fair_share: FairShare {
                enabled: true,
                ceiling: CEILING,
                reclaim: false,
                ..FairShare::default()
            },
            ..Limits::default()
        }
        .compile()
        .unwrap();
        let budgets = [
            *limits.budget(Kind::Connection),
            *limits.budget(Kind::Request),
        ];
        let installed = Installed {
            limits,
            whole: Arc::default(),
        };
        (
            Limiter::unattended(installed, crate::clock::FakeClock::new()),
            budgets,
        )
    }

    #[test]
    fn the_level_fills_the_budget_max_min_fairly() {
        // One heavy client and twenty light ones, each wanting three: the heavy one gets what
        // the light ones leave.
        let mut demands = vec![3; 20];
        demands.push(80);
        assert_eq!(level(&mut demands, 100), 40);
        assert_eq!(level(&mut [80], 100), NO_LEVEL, "everything fits");
        assert_eq!(level(&mut [60, 60], 100), 50);
        assert_eq!(level(&mut [1; 300], 100), 1, "never 0");
        assert_eq!(level(&mut [], 100), NO_LEVEL);
    }

    #[test]
    fn under_contention_the_heaviest_client_is_refused_first() {
        let (limiter, budgets) = fair_limiter();
        let ip = |n: u8| IpAddr::V4(Ipv4Addr::new(192, 0, 2, n));
        let heavy: Vec<_> = (0..CEILING)
            .map(|_| limiter.try_acquire(ip(1)).unwrap())
            .collect();
        let refused = limiter.try_acquire(ip(1)).unwrap_err();
        assert_eq!(
            refused.reason(),
            RejectReason::ClientConnections,
            "the ceiling"
        );
        // Two light clients take 2 each (their guarantee): 12 of 12, the budget full.
        let light: Vec<_> = [2, 2, 3, 3]
            .map(|n| limiter.try_acquire(ip(n)).unwrap())
            .into();
        let full = limiter.try_acquire(ip(2)).unwrap_err();
        assert_eq!(full.reason(), RejectReason::TotalConnections);
        limiter.work_out_levels(&budgets);
        // Demands 8 (ceiling), 8 (wanting), 2: the level is 5, and the heavy client over it.
        assert_eq!(limiter.fair_level(Kind::Connection), 5);
        let (figures, _) = limiter.fair_figures();
        assert_eq!(figures[0], (Some(5), 1));
        drop(heavy);
        let heavy: Vec<_> = (0..5)
            .map(|_| limiter.try_acquire(ip(1)).unwrap())
            .collect();
        // 9 held, below the watermark of 10: one more makes the budget contended.
        let tenth = limiter.try_acquire(ip(3)).unwrap();
        let over = limiter.try_acquire(ip(1)).unwrap_err();
        assert_eq!(
            over.reason(),
            RejectReason::FairShare,
            "at the level, contended"
        );
        let under = limiter.try_acquire(ip(2)).expect("under the level");
        drop((heavy, light, tenth, under));
    }

    proptest::proptest! {
        /// Whatever clients ask for and give back, and whenever the level is worked out: a
        /// client under its share is refused only when the budget is full, a refusal for fair
        /// share is of a client at or over the level while the budget is contended, and the
        /// budget is never passed.
        #[test]
        fn no_client_under_its_share_is_refused_unless_the_budget_is_full(
            steps in proptest::collection::vec((0..6usize, 0..4u8), 1..300),
        ) {
            let (limiter, budgets) = fair_limiter();
            let budget = budgets[0];
            let ip = |client: usize| IpAddr::V4(Ipv4Addr::new(192, 0, 2, client as u8 + 1));
            let mut held: Vec<Vec<_>> = (0..6).map(|_| Vec::new()).collect();
            for (client, step) in steps {
                match step {
                    // Now and then the level is worked out, as the housekeeping thread does.
                    0 => limiter.work_out_levels(&budgets),
                    1 => {
                        held[client].pop();
                    }
                    _ => {
                        let total: usize = held.iter().map(Vec::len).sum();
                        let level = limiter.fair_level(Kind::Connection);
                        let share = budget.limit(GUARANTEED, total, level);
                        let mine = held[client].len();
                        match limiter.try_acquire(ip(client)) {
                            Ok(permit) => {
                                proptest::prop_assert!(mine < share && total < BUDGET);
                                held[client].push(permit);
                            }
                            Err(refused) if mine < share => {
                                proptest::prop_assert_eq!(refused.reason(), RejectReason::TotalConnections);
                                proptest::prop_assert_eq!(total, BUDGET);
                            }
                            Err(refused) => {
                                if refused.reason() == RejectReason::FairShare {
                                    proptest::prop_assert!(total >= budget.watermark);
                                    proptest::prop_assert!(mine >= level.max(GUARANTEED));
                                }
                            }
                        }
                    }
                }
            }
        }

        /// The level is max-min fair: what it hands out fits the budget, and a level one higher
        /// would not fit (unless every demand fits).
        #[test]
        fn the_level_is_the_highest_that_fits(
            mut demands in proptest::collection::vec(1u32..200, 0..60),
            budget in 1usize..2000,
        ) {
            let level = level(&mut demands, budget);
            let handed = |l: usize| demands.iter().map(|&d| (d as usize).min(l)).sum::<usize>();
            if level == NO_LEVEL {
                proptest::prop_assert!(handed(usize::MAX) <= budget);
            } else {
                proptest::prop_assert!(level == 1 || handed(level) <= budget);
                proptest::prop_assert!(handed(level + 1) > budget);
            }
        }
    }
}
