//! [`RateRecord`]: one client's rate and ban record, held in atomics so that a decision with a
//! rate rule or a ban takes no lock; and the checks a decision makes with it before the
//! concurrency limits.
//!
//! Each rate rule's state is one word, decided and counted with a compare-and-swap
//! (`rate::AtomicRate`); a ban is its end, in one word. The parts few clients have (path rule
//! states, the ban count and reason, the fleet's counts) are allocated on first use and reached
//! through one more pointer. What the record must be kept for (`retain_until`) and when a rule
//! last looked at the client (`last_seen`) move forward only, and only by whole steps, so that
//! a busy client's decisions seldom write them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;

use super::fair::Giveback;
use super::Kind;
use crate::ban::{noise, BanPolicy, BanReason};
use crate::clock::nanos;
use crate::key::ClientKey;
use crate::limits::Limits;
use crate::rate::{AtomicRate, PathRule, RateLimit};
use crate::reason::RejectReason;

/// A request's method and path, for path rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
}

/// How often, at most, a busy client's `last_seen` is written: what making room ranks records
/// by needs no finer time.
const SEEN_STEP: u64 = 1_000_000_000;

/// One client's rate states and ban record.
#[derive(Debug, Default)]
pub(super) struct RateRecord {
    connect: AtomicRate,
    request: AtomicRate,
    /// The ban policy's count of rate refusals.
    violations: AtomicRate,
    /// Until when the client is banned (clock nanoseconds); 0 once it is not.
    banned_until: AtomicU64,
    /// Until when the record can still refuse something: a drained entry is kept until then,
    /// so that leaving does not reset a client's record.
    retain_until: AtomicU64,
    /// When a rule last looked at the client, in whole [`SEEN_STEP`]s (seconds) of the clock:
    /// what making room for a newcomer ranks a drained client's record by, stalest first.
    last_seen: AtomicU32,
    /// One state per path rule of one config, made at the client's first request matching
    /// one. Here rather than in the rare parts: a path rule's decision reaches its states
    /// through one pointer fewer (a cache miss fewer, with many clients).
    paths: ArcSwapOption<PathStates>,
    /// The parts few clients have, allocated at the first need (a pointer: what a client
    /// without them pays).
    rare: ArcSwapOption<RareRecord>,
}

/// The parts of a client's record few clients have.
#[derive(Debug, Default)]
struct RareRecord {
    /// How many times the client was banned, for escalation.
    bans: AtomicU32,
    /// Why the client is banned, while it is.
    ban_reason: ArcSwapOption<BanReason>,
    /// With a fleet joined: the events to send, and the fleet's counts seen so far.
    fleet: ArcSwapOption<FleetCounts>,
    /// With fair share's reclaim, what the client is asked to give back, made when a server
    /// that can give back serves one of its connections.
    giveback: std::sync::OnceLock<Arc<Giveback>>,
}

/// A client's path rule states under the config of one generation.
#[derive(Debug)]
struct PathStates {
    generation: u64,
    states: Box<[AtomicRate]>,
}

/// A client's rate events as a fleet shares them, per rule (`sharing::RuleId`), under the config
/// of one generation: a new config starts them afresh, so that an event is never sent under
/// another rule's name.
#[derive(Debug)]
struct FleetCounts {
    generation: u64,
    /// Events admitted here and not yet sent.
    unsent: Box<[AtomicU32]>,
    /// Whether the client is on the sync task's list of clients with events to send.
    listed: AtomicBool,
    /// What only the sync task reads and writes, once per sync.
    sync: Mutex<SyncCounts>,
}

/// Per rule: the events this node sent in the rule's fleet window, and the other nodes' events
/// in it as counted here so far, each with the window's number.
#[derive(Debug, Default)]
struct SyncCounts {
    sent: Vec<(u64, u32)>,
    seen: Vec<(u64, u32)>,
}

impl FleetCounts {
    fn new(generation: u64, rules: usize) -> Self {
        FleetCounts {
            generation,
            unsent: (0..rules).map(|_| AtomicU32::new(0)).collect(),
            listed: AtomicBool::new(false),
            sync: Mutex::new(SyncCounts {
                sent: vec![(0, 0); rules],
                seen: vec![(0, 0); rules],
            }),
        }
    }
}

/// What one decision needs besides the client's record: the config, the clock reading (taken at
/// most once, and only if a rule needs it), and the event.
pub(super) struct Event<'a> {
    pub(super) limits: &'a Limits,
    pub(super) kind: Kind,
    pub(super) route: Option<Route<'a>>,
    pub(super) key: &'a ClientKey,
    pub(super) now: &'a dyn Fn() -> u64,
    /// With a fleet joined, where to note a client with events to send.
    pub(super) sharing: Option<&'a super::sharing::Outbox>,
}

impl Event<'_> {
    /// The rate rule for the event's kind, and the reason it refuses with.
    fn kind_rule(&self) -> (Option<&RateLimit>, RejectReason) {
        match self.kind {
            Kind::Connection => (self.limits.connect_rate.as_ref(), RejectReason::ConnectRate),
            Kind::Request => (self.limits.request_rate.as_ref(), RejectReason::RequestRate),
        }
    }

    /// Which path rules the event's route matches, as a set of their places (at most
    /// [`MAX_PATH_RULES`](crate::limits::MAX_PATH_RULES)): worked out once per decision.
    fn matching_paths(&self) -> u64 {
        let Some(route) = self.route else {
            return 0;
        };
        let rules = &self.limits.path_rules;
        rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.matches(route.method, route.path))
            .fold(0, |set, (i, _)| set | 1 << i)
    }
}

/// What a decision did besides its verdict: what the stats and the log should hear.
#[derive(Debug, Default)]
pub(super) struct SideEffects {
    /// Refusals a dry-run rule would have made.
    pub(super) dry_run: u32,
    /// Set when this decision banned the client.
    pub(super) banned: bool,
    /// Set when this decision found the client's ban over.
    pub(super) ban_over: bool,
    /// Set when a dry-run ban policy would have banned the client.
    pub(super) would_ban: bool,
}

impl SideEffects {
    /// Whether there is anything to count or log.
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.dry_run > 0 || self.banned || self.would_ban
    }
}

/// What [`RateRecord::peek_request`] found, in nanoseconds.
#[derive(Debug, Default)]
pub(super) struct RequestPeek {
    pub(super) banned_for: Option<u64>,
    /// The request rate's events left, and until when (see `AtomicRate::remaining`).
    pub(super) rate: Option<(u32, u64)>,
    pub(super) path_wait: Option<u64>,
}

/// A refusal as the limiter decides it: the reason, and for time-bound ones, nanoseconds until
/// it would pass. (The layer's `Refusal` is the answer sent to a client.)
pub(super) type Denial = (RejectReason, Option<u64>);

impl RateRecord {
    /// Whether the record can still refuse something at `now`, so the client must be kept.
    pub(super) fn retains(&self, now: u64) -> bool {
        self.retain_until.load(Ordering::Relaxed) > now
    }

    /// Until when the record is kept, or 0.
    pub(super) fn retained_until(&self) -> u64 {
        self.retain_until.load(Ordering::Relaxed)
    }

    /// How forgetting the client to make room for a newcomer ranks at `now`, lowest first:
    /// `None` while it is banned (a running ban is never forgotten), 0 when nothing in the record
    /// can refuse anything any more, and otherwise when a rule last looked at it, so that the
    /// record of the client seen longest ago goes first.
    pub(super) fn eviction_rank(&self, now: u64) -> Option<u64> {
        if self.banned_until() > now {
            return None;
        }
        if !self.retains(now) {
            return Some(0);
        }
        Some(u64::from(self.last_seen.load(Ordering::Relaxed)).max(1))
    }

    /// What the client is asked to give back, if a server that can give back serves it.
    pub(super) fn giveback(&self) -> Option<Arc<Giveback>> {
        self.rare.load().as_ref()?.giveback.get().cloned()
    }

    /// What the client is asked to give back, made at the first need.
    #[cfg(feature = "serve")]
    pub(super) fn giveback_or_new(&self) -> Arc<Giveback> {
        Arc::clone(self.rare().giveback.get_or_init(Arc::default))
    }

    /// How many times the client was banned.
    pub(super) fn bans(&self) -> u32 {
        self.rare
            .load()
            .as_ref()
            .map_or(0, |rare| rare.bans.load(Ordering::Relaxed))
    }

    /// The rare parts, made at the first need (a racing decision's, if it made them first).
    fn rare(&self) -> Arc<RareRecord> {
        if let Some(rare) = self.rare.load_full() {
            return rare;
        }
        let fresh = Arc::new(RareRecord::default());
        let before = self
            .rare
            .compare_and_swap(&None::<Arc<RareRecord>>, Some(Arc::clone(&fresh)));
        match &*before {
            Some(theirs) => Arc::clone(theirs),
            None => fresh,
        }
    }

    /// Keeps the record until at least `until`: a read, and a write only when `until` is later.
    #[inline]
    fn remember_until(&self, until: u64) {
        if until > self.retain_until.load(Ordering::Relaxed) {
            self.retain_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Notes that a rule looked at the client at `now`.
    #[inline]
    fn seen(&self, now: u64) {
        // Whole steps (seconds) in 32 bits: 136 years of them.
        let step = u32::try_from(now / SEEN_STEP).unwrap_or(u32::MAX);
        if step > self.last_seen.load(Ordering::Relaxed) {
            self.last_seen.store(step, Ordering::Relaxed);
        }
    }

    /// Until when the client is banned, or 0.
    pub(super) fn banned_until(&self) -> u64 {
        self.banned_until.load(Ordering::Relaxed)
    }

    /// Why the client is banned, while it is (at `now`).
    pub(super) fn ban_reason(&self, now: u64) -> Option<Arc<BanReason>> {
        if self.banned_until() <= now {
            return None;
        }
        self.rare.load().as_ref()?.ban_reason.load_full()
    }

    /// Bans the client until `until`, decided at `now`, for `reason`. An existing ban that
    /// ends later stays, with its own reason.
    pub(super) fn ban_until(&self, until: u64, now: u64, reason: BanReason) {
        let rare = self.rare();
        let before = self.banned_until.fetch_max(until, Ordering::Relaxed);
        if until >= before || rare.ban_reason.load().is_none() {
            rare.ban_reason.store(Some(Arc::new(reason)));
        }
        self.remember_until(until);
        self.seen(now);
    }

    /// Lifts a ban and forgets the violation record.
    pub(super) fn unban(&self) {
        self.banned_until.store(0, Ordering::Relaxed);
        self.violations.reset();
        if let Some(rare) = &*self.rare.load() {
            rare.ban_reason.store(None);
            rare.bans.store(0, Ordering::Relaxed);
        }
    }

    /// Everything but the concurrency counts and the global cap: a ban, then the rate rules
    /// for this event, in order. Counts what passes; a violation may ban the client. `fx` says
    /// whether the client's ban began or ended here.
    pub(super) fn check(&self, d: &Event<'_>, fx: &mut SideEffects) -> Result<(), Denial> {
        self.check_ban(d, fx)?;
        let (rule, reason) = d.kind_rule();
        let mut refusal =
            rule.and_then(|rule| self.check_rule(self.kind_state(d), rule, reason, d, fx));
        let paths = d.matching_paths();
        if refusal.is_none() && paths != 0 {
            refusal = self.check_paths(paths, d, fx);
        }
        match refusal {
            None => {
                if let Some(outbox) = d.sharing {
                    self.count_for_fleet(d, paths, outbox);
                }
                Ok(())
            }
            Some(refusal) => {
                self.violation(d, fx, refusal.0);
                Err(refusal)
            }
        }
    }

    /// The common rated decision, on the hot settings: whether `rule`, the rule of `kind` (of
    /// `interval`), admits an event at `now`, counting it if so. A refusal changes nothing: the decision is
    /// then made again on the whole config, which counts the violation.
    #[inline]
    pub(super) fn admits(&self, kind: Kind, rule: &RateLimit, interval: u64, now: u64) -> bool {
        let state = match kind {
            Kind::Connection => &self.connect,
            Kind::Request => &self.request,
        };
        if state.check_with(rule, Some(interval), now).is_err() {
            return false;
        }
        self.remember_until(state.expires_at_with(rule, Some(interval), now));
        self.seen(now);
        true
    }

    /// What the record says of a request at `now` under `limits`, spending nothing: how long
    /// a ban has to run, what is left of the request rate, and how long until the first path
    /// rule matching `route` that would refuse it admits again.
    pub(super) fn peek_request(
        &self,
        limits: &Limits,
        route: Option<Route<'_>>,
        now: u64,
    ) -> RequestPeek {
        let banned_for = self
            .banned_until()
            .checked_sub(now)
            .filter(|&left| left > 0);
        let rate = (limits.request_rate.as_ref()).map(|rule| self.request.remaining(rule, now));
        let paths = self.paths.load();
        let states = paths.as_deref();
        let path_wait = match (route, states) {
            (Some(route), Some(states)) if states.generation == limits.lookups.generation => {
                (limits.path_rules.iter().zip(states.states.iter()))
                    .filter(|(rule, _)| {
                        !rule.rate.dry_run && rule.matches(route.method, route.path)
                    })
                    .find_map(|(rule, state)| match state.remaining(&rule.rate, now) {
                        (0, wait) => Some(wait),
                        _ => None,
                    })
            }
            _ => None,
        };
        RequestPeek {
            banned_for,
            rate,
            path_wait,
        }
    }

    /// The state of the event's kind's rule.
    fn kind_state(&self, d: &Event<'_>) -> &AtomicRate {
        match d.kind {
            Kind::Connection => &self.connect,
            Kind::Request => &self.request,
        }
    }

    /// A ban in force refuses; one that is over is ended here.
    #[inline]
    fn check_ban(&self, d: &Event<'_>, fx: &mut SideEffects) -> Result<(), Denial> {
        let until = self.banned_until.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(());
        }
        let now = (d.now)();
        self.seen(now);
        if now < until {
            return Err((RejectReason::Banned, Some(until - now)));
        }
        let ended = self
            .banned_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
        if ended {
            if let Some(rare) = &*self.rare.load() {
                rare.ban_reason.store(None);
            }
            fx.ban_over = true;
        }
        Ok(())
    }

    /// Checks one rate rule. An enforced refusal is returned; a dry-run refusal is noted and let
    /// through. The record is kept until the state expires, and the client was seen now.
    fn check_rule(
        &self,
        state: &AtomicRate,
        rule: &RateLimit,
        reason: RejectReason,
        d: &Event<'_>,
        fx: &mut SideEffects,
    ) -> Option<Denial> {
        let now = (d.now)();
        let result = state.check(rule, now);
        self.remember_until(state.expires_at(rule, now));
        self.seen(now);
        match result {
            Ok(()) => None,
            Err(_) if rule.dry_run => {
                fx.dry_run += 1;
                None
            }
            Err(wait) => Some((reason, Some(wait))),
        }
    }

    /// Checks every path rule in `paths` (a set of places), in order; the first enforced
    /// refusal stops the checks.
    fn check_paths(&self, paths: u64, d: &Event<'_>, fx: &mut SideEffects) -> Option<Denial> {
        let rules = &d.limits.path_rules;
        let check = |states: &PathStates, fx: &mut SideEffects| {
            places(paths).find_map(|i| {
                self.check_rule(
                    &states.states[i],
                    &rules[i].rate,
                    RejectReason::PathRule,
                    d,
                    fx,
                )
            })
        };
        // The common case borrows the states made under this config (no reference count
        // taken); the first request under a config makes them.
        let current = self.paths.load();
        match &*current {
            Some(states) if states.generation == d.limits.lookups.generation => check(states, fx),
            _ => {
                drop(current);
                check(&self.path_states(d.limits), fx)
            }
        }
    }

    /// The client's path rule states under `limits`, made at the first use under its config.
    fn path_states(&self, limits: &Limits) -> Arc<PathStates> {
        let generation = limits.lookups.generation;
        if let Some(states) = self.paths.load_full() {
            if states.generation == generation {
                return states;
            }
        }
        let fresh = Arc::new(PathStates {
            generation,
            states: path_rules_states(&limits.path_rules),
        });
        // A racing decision may have made them first: theirs then.
        let before = self
            .paths
            .compare_and_swap(&None::<Arc<PathStates>>, Some(Arc::clone(&fresh)));
        match &*before {
            Some(theirs) if theirs.generation == generation => Arc::clone(theirs),
            _ => {
                self.paths.store(Some(Arc::clone(&fresh)));
                fresh
            }
        }
    }

    /// Records a violation of the rule that refused for `reason`; crossing the ban policy's
    /// threshold bans the client.
    fn violation(&self, d: &Event<'_>, fx: &mut SideEffects, reason: RejectReason) {
        let Some(policy) = &d.limits.ban else {
            return;
        };
        let now = (d.now)();
        let rule = policy.violations();
        let crossed = self.violations.check(&rule, now).is_err();
        self.remember_until(self.violations.expires_at(&rule, now));
        if !crossed {
            return;
        }
        // The record starts afresh, as after a real ban, so that a dry-run policy notes a
        // client that keeps going once per crossing, not at every violation after it.
        self.violations.reset();
        if policy.dry_run {
            fx.would_ban = true;
            return;
        }
        self.ban_by_policy(policy, d.key, now, reason);
        fx.banned = true;
    }

    /// Bans the client by `policy`, at `now`, the rule that refused it last refusing for
    /// `reason`.
    fn ban_by_policy(&self, policy: &BanPolicy, key: &ClientKey, now: u64, reason: RejectReason) {
        let earlier = self.rare().bans.fetch_add(1, Ordering::Relaxed);
        let until = now.saturating_add(policy.length(earlier, noise(key, now)));
        let why = BanReason::Policy {
            last: reason,
            violations: policy.max_violations.saturating_add(1),
            within: policy.within,
        };
        self.ban_until(until, now, why);
        // Remember the record of bans for one longest ban after this one ends, for escalation.
        self.remember_until(until.saturating_add(nanos(policy.max_ban_for)));
    }

    /// Counts the event each rule just admitted (the kind's rule, the path rules in `paths`),
    /// for the fleet to hear at its next sync; a client with events to send is listed once.
    #[cold]
    #[inline(never)]
    fn count_for_fleet(&self, d: &Event<'_>, paths: u64, outbox: &super::sharing::Outbox) {
        let limits = d.limits;
        let counts = self.fleet_counts(limits);
        let mut counted = false;
        if d.kind_rule().0.is_some() {
            let id = match d.kind {
                Kind::Connection => 0,
                Kind::Request => 1,
            };
            add_one(&counts.unsent[id]);
            counted = true;
        }
        for i in places(paths) {
            add_one(&counts.unsent[2 + i]);
            counted = true;
        }
        if counted && !counts.listed.swap(true, Ordering::Relaxed) {
            outbox.active(*d.key);
        }
    }

    /// The client's fleet counts under `limits`, made at the first use under its config.
    fn fleet_counts(&self, limits: &Limits) -> Arc<FleetCounts> {
        let rare = self.rare();
        let generation = limits.lookups.generation;
        if let Some(counts) = rare.fleet.load_full() {
            if counts.generation == generation {
                return counts;
            }
        }
        let fresh = Arc::new(FleetCounts::new(generation, 2 + limits.path_rules.len()));
        rare.fleet.store(Some(Arc::clone(&fresh)));
        fresh
    }

    /// The fleet's counts, if they were made (unlike `fleet_counts`, which makes them).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn fleet_counts_made(&self) -> Option<Arc<FleetCounts>> {
        self.rare.load().as_ref()?.fleet.load_full()
    }

    /// The events admitted here under the config of `generation` and not yet sent, per rule;
    /// none are left unsent (events counted under another config are dropped), and the client
    /// may be listed again.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn take_unsent(&self, generation: u64) -> Vec<(usize, u32)> {
        let Some(counts) = self.fleet_counts_made() else {
            return Vec::new();
        };
        counts.listed.store(false, Ordering::Relaxed);
        if counts.generation != generation {
            return Vec::new();
        }
        counts
            .unsent
            .iter()
            .enumerate()
            .filter_map(|(id, n)| {
                let n = n.swap(0, Ordering::Relaxed);
                (n > 0).then_some((id, n))
            })
            .collect()
    }

    /// Takes back events that could not be sent (rule `id`, `n` of them, under the config of
    /// `generation`), to send at the next sync, keeping at most `cap` unsent for the rule.
    /// Whether any are kept (the caller then lists the client again).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn keep_unsent(&self, id: usize, n: u32, cap: u32, generation: u64) -> bool {
        let Some(counts) = self.fleet_counts_made() else {
            return false;
        };
        let Some(unsent) = counts.unsent.get(id) else {
            return false;
        };
        if counts.generation != generation {
            return false;
        }
        let _ = unsent.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |have| {
            Some(have.saturating_add(n).min(cap))
        });
        !counts.listed.swap(true, Ordering::Relaxed)
    }

    /// Counts what the fleet's total says the other nodes admitted under rule `id` (`rule`) in
    /// its window `window`: `total` events in all, of which this node had sent what it sent in
    /// that window before, plus `sent` now. The events not counted here yet are counted as if
    /// they had happened `now`. Forced: they happened.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn charge_fleet(
        &self,
        rule: &RateLimit,
        id: usize,
        window: u64,
        total: u64,
        sent: u32,
        now: u64,
        limits: &Limits,
    ) {
        let counts = self.fleet_counts(limits);
        let new = {
            let mut sync = counts
                .sync
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let SyncCounts { sent: mine, seen } = &mut *sync;
            let (Some(mine), Some(seen)) = (mine.get_mut(id), seen.get_mut(id)) else {
                return;
            };
            if mine.0 != window {
                *mine = (window, 0);
            }
            mine.1 = mine.1.saturating_add(sent);
            let others = u32::try_from(total.saturating_sub(u64::from(mine.1))).unwrap_or(u32::MAX);
            if seen.0 != window {
                *seen = (window, 0);
            }
            let new = others.saturating_sub(seen.1);
            seen.1 = seen.1.max(others);
            new
        };
        if new == 0 {
            return;
        }
        let paths;
        let state = match id {
            0 => &self.connect,
            1 => &self.request,
            i => {
                paths = self.path_states(limits);
                match paths.states.get(i - 2) {
                    Some(state) => state,
                    None => return,
                }
            }
        };
        state.charge(rule, now, new);
        self.remember_until(state.expires_at(rule, now));
        self.seen(now);
    }
}

/// Fresh states for `rules`.
fn path_rules_states(rules: &[PathRule]) -> Box<[AtomicRate]> {
    rules.iter().map(|_| AtomicRate::default()).collect()
}

/// The places in the set `set`, lowest first.
fn places(mut set: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        (set != 0).then(|| {
            let i = set.trailing_zeros() as usize;
            set &= set - 1;
            i
        })
    })
}

/// Adds one to `count`, saturating.
#[inline]
fn add_one(count: &AtomicU32) {
    let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_the_set_bits_lowest_first() {
        assert_eq!(places(0).count(), 0);
        assert_eq!(places(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(places(1 << 63).collect::<Vec<_>>(), [63]);
    }
}
