//! One client's state, and the decision made under its shard lock.

use std::hash::BuildHasher;

use crate::config::BanPolicy;
use crate::config::CompiledConfig;
use crate::rate::RateState;
use crate::{ClientKey, RateLimit, RejectReason};

/// What a permit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Connection,
    Request,
}

/// A request's method and path, for path rules.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route<'a> {
    pub(crate) method: &'a http::Method,
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
    pub(crate) compiled: &'a CompiledConfig,
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
        let config = &*d.compiled.config;
        let (rule, state, reason) = match d.kind {
            Kind::Connection => (
                &config.connect_rate,
                &mut self.connect_rate,
                RejectReason::ConnectRate,
            ),
            Kind::Request => (
                &config.request_rate,
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
        let rules = &d.compiled.config.path_rules;
        let mut matching = rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.matches(route.method, route.path))
            .peekable();
        matching.peek()?;
        if self.paths.is_none() || self.paths_generation != d.compiled.generation {
            self.paths = Some(vec![RateState::default(); rules.len()].into_boxed_slice());
            self.paths_generation = d.compiled.generation;
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
        let Some(policy) = &d.compiled.config.ban else {
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
        let until = now.saturating_add(ban_length(policy, self.bans, noise(d.key, now)));
        self.bans = self.bans.saturating_add(1);
        self.ban_until(until);
        // Remember the record of bans for one longest ban after this one ends, for escalation.
        self.remember_until(until.saturating_add(crate::clock::nanos(policy.max_ban_for)));
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

/// The length of a client's next ban, in nanoseconds: `ban_for`, doubled per earlier ban when
/// escalating (capped at `max_ban_for`), plus up to `jitter` drawn from `noise`.
fn ban_length(policy: &BanPolicy, earlier_bans: u32, noise: u64) -> u64 {
    let base = crate::clock::nanos(policy.ban_for);
    let length = if policy.escalate {
        let doubled = base.saturating_mul(1u64 << earlier_bans.min(63));
        doubled.min(crate::clock::nanos(policy.max_ban_for))
    } else {
        base
    };
    let jitter = crate::clock::nanos(policy.jitter);
    length.saturating_add(if jitter == 0 { 0 } else { noise % (jitter + 1) })
}

/// A cheap random number for ban jitter: a hash of the clock reading and the client key with a
/// per-process random seed. Not for cryptography; only so that bans do not all end together.
fn noise(key: &ClientKey, now: u64) -> u64 {
    foldhash::fast::RandomState::default().hash_one((key, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ban_length_escalates_caps_and_jitters() {
        let secs = |s| Duration::from_secs(s);
        let policy = BanPolicy::new(3, secs(10), secs(60)).escalate(secs(600));
        let n = |s: u64| s * 1_000_000_000;
        assert_eq!(ban_length(&policy, 0, 12345), n(60));
        assert_eq!(ban_length(&policy, 1, 12345), n(120));
        assert_eq!(ban_length(&policy, 3, 12345), n(480));
        assert_eq!(ban_length(&policy, 4, 12345), n(600));
        assert_eq!(ban_length(&policy, 200, 12345), n(600));
        let jittered = policy.jitter(secs(5));
        for noise in [0, 1, u64::MAX, 987_654_321_987] {
            let length = ban_length(&jittered, 0, noise);
            assert!((n(60)..=n(65)).contains(&length));
        }
        assert_eq!(
            ban_length(&BanPolicy::new(1, secs(1), secs(7)), 5, 99),
            n(7)
        );
    }
}
