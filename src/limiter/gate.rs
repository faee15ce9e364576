//! [`Gate`]: one client's rate and ban record, and the checks made under its lock before the
//! concurrency limits.

use super::Kind;
use crate::ban::{noise, BanReason};
use crate::clock::nanos;
use crate::key::ClientKey;
use crate::limits::Limits;
use crate::rate::{RateLimit, RateState};
use crate::reason::RejectReason;

/// A request's method and path, for path rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
}

/// One client's rate states and ban record.
#[derive(Debug, Default)]
pub(super) struct Gate {
    connect_rate: RateState,
    request_rate: RateState,
    /// Until when the record can still refuse something: a drained entry is kept until then,
    /// so that leaving does not reset a client's record.
    retain_until: u64,
    /// When a rule last looked at the client (clock nanoseconds): what making room for a
    /// newcomer ranks a drained client's record by, stalest first.
    last_seen: u64,
    /// Path states and the ban record, kept only for the clients that need them.
    extra: Option<Box<Extra>>,
}

/// The parts of a client's record few clients have.
#[derive(Debug, Default)]
struct Extra {
    /// One state per path rule, allocated at the client's first request that matches one.
    paths: Option<Box<[RateState]>>,
    /// The config generation `paths` was laid out for; a new config starts them afresh.
    paths_generation: u64,
    violations: RateState,
    /// How many times the client was banned, for escalation.
    bans: u32,
    /// Until when the client is banned (clock nanoseconds); 0 once it is not.
    banned_until: u64,
    /// Why, while it is.
    ban_reason: Option<BanReason>,
    /// With a fleet joined: the events to send, and the other nodes' seen so far.
    fleet: Option<Box<FleetCounts>>,
}

impl Extra {
    /// The client's state for each of `rules` path rules under the config of `generation`:
    /// allocated at the first use under it, so that a new config starts them afresh.
    fn path_states(&mut self, generation: u64, rules: usize) -> &mut [RateState] {
        if self.paths.is_none() || self.paths_generation != generation {
            self.paths = Some(vec![RateState::default(); rules].into_boxed_slice());
            self.paths_generation = generation;
        }
        self.paths.get_or_insert_with(Box::default)
    }
}

/// A client's rate events as a fleet shares them, per rule (`sharing::RuleId`), under the config
/// of one generation: a new config starts them afresh, so that an event is never sent under
/// another rule's name.
#[derive(Debug, Default)]
struct FleetCounts {
    /// The config generation the rules are numbered by.
    generation: u64,
    /// Events admitted here and not yet sent.
    unsent: Vec<u32>,
    /// The events this node sent in a rule's fleet window (its number).
    sent: Vec<(u64, u32)>,
    /// The other nodes' events in a rule's window (its number), as counted here so far.
    seen: Vec<(u64, u32)>,
}

impl FleetCounts {
    /// Room for `rules` rules of the config of `generation`.
    fn fit(&mut self, rules: usize, generation: u64) {
        if self.generation != generation {
            *self = FleetCounts {
                generation,
                ..FleetCounts::default()
            };
        }
        if self.unsent.len() < rules {
            self.unsent.resize(rules, 0);
            self.sent.resize(rules, (0, 0));
            self.seen.resize(rules, (0, 0));
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

/// How a decision went, beyond the verdict: what the stats and the log should hear.
#[derive(Debug, Default)]
pub(super) struct Notes {
    /// Refusals a dry-run rule would have made.
    pub(super) dry_run: u32,
    /// Set when this decision banned the client.
    pub(super) banned: bool,
    /// Set when this decision found the client's ban over.
    pub(super) ban_over: bool,
    /// Set when a dry-run ban policy would have banned the client.
    pub(super) would_ban: bool,
}

impl Notes {
    /// Whether there is anything to count or log.
    #[inline]
    pub(super) fn any(&self) -> bool {
        self.dry_run > 0 || self.banned || self.would_ban
    }
}

/// A refusal as the limiter decides it: the reason, and for time-bound ones, nanoseconds until
/// it would pass. (The layer's `Refusal` is the answer sent to a client.)
pub(super) type Denial = (RejectReason, Option<u64>);

impl Gate {
    /// Whether the record can still refuse something at `now`, so the client must be kept.
    pub(super) fn retains(&self, now: u64) -> bool {
        self.retain_until > now
    }

    /// Until when the record is kept, or 0.
    pub(super) fn retained_until(&self) -> u64 {
        self.retain_until
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
        Some(self.last_seen.max(1))
    }

    /// How many times the client was banned.
    pub(super) fn bans(&self) -> u32 {
        self.extra.as_ref().map_or(0, |extra| extra.bans)
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    fn remember_until(&mut self, until: u64) {
        self.retain_until = self.retain_until.max(until);
    }

    /// Until when the client is banned, or 0.
    pub(super) fn banned_until(&self) -> u64 {
        self.extra.as_ref().map_or(0, |extra| extra.banned_until)
    }

    /// Why the client is banned, while it is (at `now`).
    pub(super) fn ban_reason(&self, now: u64) -> Option<&BanReason> {
        let extra = self.extra.as_ref()?;
        (extra.banned_until > now)
            .then_some(extra.ban_reason.as_ref())
            .flatten()
    }

    /// Bans the client until `until`, decided at `now`, for `reason`. An existing ban that
    /// ends later stays, with its own reason.
    pub(super) fn ban_until(&mut self, until: u64, now: u64, reason: BanReason) {
        let extra = self.extra();
        if until >= extra.banned_until || extra.ban_reason.is_none() {
            extra.ban_reason = Some(reason);
        }
        extra.banned_until = extra.banned_until.max(until);
        self.remember_until(until);
        self.last_seen = self.last_seen.max(now);
    }

    /// Lifts a ban and forgets the violation record.
    pub(super) fn unban(&mut self) {
        if let Some(extra) = &mut self.extra {
            extra.banned_until = 0;
            extra.ban_reason = None;
            extra.bans = 0;
            extra.violations = RateState::default();
        }
    }

    /// Everything but the concurrency counts and the global cap: ban, then the rate rules for
    /// this event, in order. Counts what passes; a violation may ban the client. `notes` says
    /// whether the client's ban began or ended here.
    pub(super) fn check(&mut self, d: &Event<'_>, notes: &mut Notes) -> Result<(), Denial> {
        if let Some(extra) = &mut self.extra {
            if extra.banned_until != 0 {
                let now = (d.now)();
                self.last_seen = self.last_seen.max(now);
                if now < extra.banned_until {
                    return Err((RejectReason::Banned, Some(extra.banned_until - now)));
                }
                extra.banned_until = 0;
                extra.ban_reason = None;
                notes.ban_over = true;
            }
        }
        let limits = d.limits;
        let (rule, state, reason) = match d.kind {
            Kind::Connection => (
                &limits.connect_rate,
                &mut self.connect_rate,
                RejectReason::ConnectRate,
            ),
            Kind::Request => (
                &limits.request_rate,
                &mut self.request_rate,
                RejectReason::RequestRate,
            ),
        };
        let mut refusal = rule.as_ref().and_then(|rule| {
            check_rule(
                state,
                rule,
                reason,
                d,
                notes,
                &mut self.retain_until,
                &mut self.last_seen,
            )
        });
        if refusal.is_none() {
            if let Some(route) = d.route {
                refusal = self.check_paths(route, d, notes);
            }
        }
        match refusal {
            None => {
                if let Some(outbox) = d.sharing {
                    self.count_for_fleet(d, outbox);
                }
                Ok(())
            }
            Some(refusal) => {
                self.violation(d, notes, refusal.0);
                Err(refusal)
            }
        }
    }

    /// Counts the event each rule just admitted, for the fleet to hear at its next sync.
    #[cold]
    #[inline(never)]
    fn count_for_fleet(&mut self, d: &Event<'_>, outbox: &super::sharing::Outbox) {
        let limits = d.limits;
        let rules = 2 + limits.path_rules.len();
        let fleet = self.extra().fleet.get_or_insert_with(Box::default);
        fleet.fit(rules, limits.lookups.generation);
        let was_quiet = fleet.unsent.iter().all(|n| *n == 0);
        let kind_rule = match d.kind {
            Kind::Connection => (0, limits.connect_rate.is_some()),
            Kind::Request => (1, limits.request_rate.is_some()),
        };
        if kind_rule.1 {
            fleet.unsent[kind_rule.0] = fleet.unsent[kind_rule.0].saturating_add(1);
        }
        if let Some(route) = d.route {
            for (i, rule) in limits.path_rules.iter().enumerate() {
                if rule.matches(route.method, route.path) {
                    fleet.unsent[2 + i] = fleet.unsent[2 + i].saturating_add(1);
                }
            }
        }
        if was_quiet && fleet.unsent.iter().any(|n| *n > 0) {
            outbox.active(*d.key);
        }
    }

    /// The events admitted here under the config of `generation` and not yet sent, per rule;
    /// none are left unsent (events counted under another config are dropped).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn take_unsent(&mut self, generation: u64) -> Vec<(usize, u32)> {
        let Some(fleet) = self.extra.as_mut().and_then(|extra| extra.fleet.as_mut()) else {
            return Vec::new();
        };
        if fleet.generation != generation {
            fleet.unsent.iter_mut().for_each(|n| *n = 0);
            return Vec::new();
        }
        fleet
            .unsent
            .iter_mut()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(id, n)| (id, std::mem::take(n)))
            .collect()
    }

    /// Takes back events that could not be sent (rule `id`, `n` of them, under the config of
    /// `generation`), to send at the next sync, keeping at most `cap` unsent for the rule.
    /// Whether any are kept.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(super) fn keep_unsent(&mut self, id: usize, n: u32, cap: u32, generation: u64) -> bool {
        let Some(fleet) = self.extra.as_mut().and_then(|extra| extra.fleet.as_mut()) else {
            return false;
        };
        match fleet.unsent.get_mut(id) {
            Some(unsent) if fleet.generation == generation => {
                *unsent = unsent.saturating_add(n).min(cap);
                true
            }
            _ => false,
        }
    }

    /// Counts what the fleet's total says the other nodes admitted under rule `id` (`rule`) in
    /// its window `window`: `total` events in all, of which this node had sent what it sent in
    /// that window before, plus `sent` now. The events not counted here yet are counted as if
    /// they had happened `now`. Forced: they happened.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn charge_fleet(
        &mut self,
        rule: &RateLimit,
        id: usize,
        window: u64,
        total: u64,
        sent: u32,
        now: u64,
        limits: &Limits,
    ) {
        let generation = limits.lookups.generation;
        let fleet = self.extra().fleet.get_or_insert_with(Box::default);
        fleet.fit(2 + limits.path_rules.len(), generation);
        let (Some(mine), Some(seen)) = (fleet.sent.get_mut(id), fleet.seen.get_mut(id)) else {
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
        if new == 0 {
            return;
        }
        let state = match id {
            0 => &mut self.connect_rate,
            1 => &mut self.request_rate,
            i => {
                let rules = limits.path_rules.len();
                let states = self
                    .extra
                    .get_or_insert_with(Box::default)
                    .path_states(generation, rules);
                match states.get_mut(i - 2) {
                    Some(state) => state,
                    None => return,
                }
            }
        };
        state.charge(rule, now, new);
        let expires = state.expires_at(rule);
        self.remember_until(expires);
        self.last_seen = self.last_seen.max(now);
    }

    fn check_paths(
        &mut self,
        route: Route<'_>,
        d: &Event<'_>,
        notes: &mut Notes,
    ) -> Option<Denial> {
        let rules = &d.limits.path_rules;
        let mut matching = rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.matches(route.method, route.path))
            .peekable();
        matching.peek()?;
        let generation = d.limits.lookups.generation;
        let states = self
            .extra
            .get_or_insert_with(Box::default)
            .path_states(generation, rules.len());
        for (i, rule) in matching {
            if let Some(refusal) = check_rule(
                &mut states[i],
                &rule.rate,
                RejectReason::PathRule,
                d,
                notes,
                &mut self.retain_until,
                &mut self.last_seen,
            ) {
                return Some(refusal);
            }
        }
        None
    }

    /// Records a violation of the rule that refused for `reason`; crossing the ban policy's
    /// threshold bans the client.
    fn violation(&mut self, d: &Event<'_>, notes: &mut Notes, reason: RejectReason) {
        let Some(policy) = &d.limits.ban else {
            return;
        };
        let now = (d.now)();
        let rule = policy.violations();
        let extra = self.extra();
        let crossed = extra.violations.check(&rule, now).is_err();
        let expires = extra.violations.expires_at(&rule);
        if crossed {
            // The record starts afresh, as after a real ban, so that a dry-run policy notes a
            // client that keeps going once per crossing, not at every violation after it.
            extra.violations = RateState::default();
        }
        self.remember_until(expires);
        if !crossed {
            return;
        }
        if policy.dry_run {
            notes.would_ban = true;
            return;
        }
        let extra = self.extra();
        let until = now.saturating_add(policy.length(extra.bans, noise(d.key, now)));
        extra.bans = extra.bans.saturating_add(1);
        let why = BanReason::Policy {
            last: reason,
            violations: policy.max_violations.saturating_add(1),
            within: policy.within,
        };
        self.ban_until(until, now, why);
        // Remember the record of bans for one longest ban after this one ends, for escalation.
        self.remember_until(until.saturating_add(nanos(policy.max_ban_for)));
        notes.banned = true;
    }
}

/// Checks one rate rule. An enforced refusal is returned; a dry-run refusal is noted and let
/// through. The record is kept until the state expires, and the client was seen now.
fn check_rule(
    state: &mut RateState,
    rule: &RateLimit,
    reason: RejectReason,
    d: &Event<'_>,
    notes: &mut Notes,
    retain_until: &mut u64,
    last_seen: &mut u64,
) -> Option<Denial> {
    let now = (d.now)();
    let result = state.check(rule, now);
    *retain_until = (*retain_until).max(state.expires_at(rule));
    *last_seen = (*last_seen).max(now);
    match result {
        Ok(()) => None,
        Err(_) if rule.dry_run => {
            notes.dry_run += 1;
            None
        }
        Err(wait) => Some((reason, Some(wait))),
    }
}
