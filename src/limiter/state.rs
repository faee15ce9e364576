//! One client's state, and the decision made under its shard lock.

use crate::ban::noise;
use crate::clock::nanos;
use crate::key::ClientKey;
use crate::limits::Limits;
use crate::rate::{RateLimit, RateState};
use crate::reason::RejectReason;

/// What a permit counts; also the index of its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Connection,
    Request,
}

/// A request's method and path, for path rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
}

/// One client's counts, rate state and ban record.
#[derive(Clone, Debug, Default)]
pub(crate) struct ClientState {
    pub(crate) connections: usize,
    pub(crate) requests: usize,
    connect_rate: RateState,
    request_rate: RateState,
    /// One state per path rule, allocated at the client's first request that matches one.
    paths: Option<Box<[RateState]>>,
    /// The config generation `paths` was laid out for; a new config starts them afresh.
    paths_generation: u64,
    violations: RateState,
    /// Until when (clock nanoseconds) the client is banned; 0 when it never was.
    pub(crate) banned_until: u64,
    /// How many times the client was banned, for escalation.
    pub(crate) bans: u32,
    /// Until when rate and ban state can still refuse something: a drained entry is kept until
    /// then, so that leaving does not reset a client's record.
    pub(crate) retain_until: u64,
}

/// What one decision needs besides the client's state: the config, the clock reading (taken at
/// most once, and only if a rule needs it), and the event.
pub(crate) struct Event<'a> {
    pub(crate) limits: &'a Limits,
    pub(crate) kind: Kind,
    pub(crate) route: Option<Route<'a>>,
    pub(crate) exempt: bool,
    pub(crate) key: &'a ClientKey,
    pub(crate) now: &'a dyn Fn() -> u64,
}

/// How a decision went, beyond the verdict: what the stats and the log should hear.
#[derive(Debug, Default)]
pub(crate) struct Notes {
    /// Refusals a dry-run rule would have made.
    pub(crate) dry_run: u32,
    /// Set when this decision banned the client.
    pub(crate) banned: bool,
    /// Set when a dry-run ban policy would have banned the client.
    pub(crate) would_ban: bool,
}

/// A refusal as the limiter decides it: the reason, and for time-bound ones, nanoseconds until
/// it would pass. (The layer's `Refusal` is the answer sent to a client.)
pub(crate) type Denial = (RejectReason, Option<u64>);

impl Kind {
    /// A stable name, for log fields.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Connection => "connection",
            Kind::Request => "request",
        }
    }

    /// The reason a per-client concurrency limit of this kind refuses.
    pub(crate) fn client_limit_reason(self) -> RejectReason {
        match self {
            Kind::Connection => RejectReason::ClientConnections,
            Kind::Request => RejectReason::ClientRequests,
        }
    }
}

impl ClientState {
    pub(crate) fn count_mut(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Connection => &mut self.connections,
            Kind::Request => &mut self.requests,
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.connections == 0 && self.requests == 0
    }

    /// Whether nothing about this client needs remembering; `now` is read only when the answer
    /// depends on it.
    pub(crate) fn is_forgettable(&self, now: impl FnOnce() -> u64) -> bool {
        self.is_idle() && (self.retain_until == 0 || self.retain_until <= now())
    }

    fn remember_until(&mut self, until: u64) {
        self.retain_until = self.retain_until.max(until);
    }

    /// Bans the client until `until`.
    pub(crate) fn ban_until(&mut self, until: u64) {
        self.banned_until = self.banned_until.max(until);
        self.remember_until(self.banned_until);
    }

    /// Lifts a ban and forgets the violation record.
    pub(crate) fn unban(&mut self) {
        self.banned_until = 0;
        self.bans = 0;
        self.violations = RateState::default();
    }

    /// Everything but the concurrency counts and the global cap: ban, then the rate rules for
    /// this event, in order. Counts what passes; a violation may ban the client.
    pub(crate) fn check_gate(&mut self, d: &Event<'_>, notes: &mut Notes) -> Result<(), Denial> {
        if d.exempt {
            return Ok(());
        }
        if self.banned_until != 0 {
            let now = (d.now)();
            if now < self.banned_until {
                return Err((RejectReason::Banned, Some(self.banned_until - now)));
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
        let mut refusal = rule
            .as_ref()
            .and_then(|rule| check_rule(state, rule, reason, d, notes, &mut self.retain_until));
        if refusal.is_none() {
            if let Some(route) = d.route {
                refusal = self.check_paths(route, d, notes);
            }
        }
        match refusal {
            None => Ok(()),
            Some(refusal) => {
                self.violation(d, notes);
                Err(refusal)
            }
        }
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
        if self.paths.is_none() || self.paths_generation != d.limits.generation {
            self.paths = Some(vec![RateState::default(); rules.len()].into_boxed_slice());
            self.paths_generation = d.limits.generation;
        }
        let states = self.paths.as_mut().expect("allocated above");
        for (i, rule) in matching {
            if let Some(refusal) = check_rule(
                &mut states[i],
                &rule.rate,
                RejectReason::PathRule,
                d,
                notes,
                &mut self.retain_until,
            ) {
                return Some(refusal);
            }
        }
        None
    }

    /// Records a violation; crossing the ban policy's threshold bans the client.
    fn violation(&mut self, d: &Event<'_>, notes: &mut Notes) {
        let Some(policy) = &d.limits.ban else {
            return;
        };
        let now = (d.now)();
        let rule = policy.violations();
        let crossed = self.violations.check(&rule, now).is_err();
        self.remember_until(self.violations.expires_at(&rule));
        if !crossed {
            return;
        }
        if policy.dry_run {
            // As a real ban would: the record starts afresh, so a client that keeps going is
            // noted once per crossing, not at every violation after it.
            self.violations = RateState::default();
            notes.would_ban = true;
            return;
        }
        self.violations = RateState::default();
        let until = now.saturating_add(policy.length(self.bans, noise(d.key, now)));
        self.bans = self.bans.saturating_add(1);
        self.ban_until(until);
        // Remember the record of bans for one longest ban after this one ends, for escalation.
        self.remember_until(until.saturating_add(nanos(policy.max_ban_for)));
        notes.banned = true;
    }
}

/// Checks one rate rule. An enforced refusal is returned; a dry-run refusal is noted and let
/// through.
fn check_rule(
    state: &mut RateState,
    rule: &RateLimit,
    reason: RejectReason,
    d: &Event<'_>,
    notes: &mut Notes,
    retain_until: &mut u64,
) -> Option<Denial> {
    let result = state.check(rule, (d.now)());
    *retain_until = (*retain_until).max(state.expires_at(rule));
    match result {
        Ok(()) => None,
        Err(_) if rule.dry_run => {
            notes.dry_run += 1;
            None
        }
        Err(wait) => Some((reason, Some(wait))),
    }
}
