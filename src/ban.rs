//! [`BanPolicy`]: when clients that keep breaking rate rules are banned, and for how long.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{at_most_longest, nanos};
use crate::error::ConfigError;
use crate::key::ClientKey;
use crate::rate::{RateLimit, Strategy};
use crate::reason::RejectReason;

/// When clients are banned, and for how long.
///
/// Every request or connection a rate rule refuses is a *violation*. A client with more than
/// `max_violations` violations within `within` is banned for `ban_for`: refused at every
/// admission point (the listener closes it at accept) until the ban expires. With `escalate`,
/// each further ban of the same client lasts twice the one before, up to `max_ban_for` (like
/// fail2ban's `bantime.increment`); the client's record of bans is kept while it is tracked.
/// `jitter` adds a random part to every ban, so that banned clients do not all come back at
/// the same instant.
///
/// In a config file (feature `serde`), `max_ban_for` defaults to `ban_for`, `jitter` to zero,
/// and `escalate` and `dry_run` to `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(from = "file::BanSpec", into = "file::BanSpec")
)]
pub struct BanPolicy {
    /// Violations tolerated within `within`; one more bans the client. At least 1.
    pub max_violations: u32,
    /// The window violations are counted over.
    pub within: Duration,
    /// How long a first ban lasts.
    pub ban_for: Duration,
    /// Whether repeat bans double in length.
    pub escalate: bool,
    /// The longest ban escalation can reach.
    pub max_ban_for: Duration,
    /// Up to this much is added to each ban, at random.
    pub jitter: Duration,
    /// Shadow mode: count (as dry-run) and log the bans that would happen, but ban no one.
    pub dry_run: bool,
}

impl BanPolicy {
    /// Ban for `ban_for` a client with more than `max_violations` violations within `within`;
    /// no escalation, no jitter.
    pub fn new(max_violations: u32, within: Duration, ban_for: Duration) -> Self {
        BanPolicy {
            max_violations,
            within,
            ban_for,
            escalate: false,
            max_ban_for: ban_for,
            jitter: Duration::ZERO,
            dry_run: false,
        }
    }

    /// Repeat bans double, up to `max_ban_for`.
    pub fn escalate(mut self, max_ban_for: Duration) -> Self {
        self.escalate = true;
        self.max_ban_for = max_ban_for;
        self
    }

    /// Adds up to `jitter` to each ban, at random.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Shadow mode: bans are counted and logged, not enforced.
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }

    /// The violation count as a rate rule: its refusal is the ban trigger.
    pub(crate) fn violations(&self) -> RateLimit {
        RateLimit::new(self.max_violations, self.within).strategy(Strategy::FixedWindow)
    }

    /// Checks the policy, naming `ban.<field>` in the error.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_violations == 0 {
            return Err(ConfigError::zero_count("ban.max_violations", "ban"));
        }
        if self.within.is_zero() {
            return Err(ConfigError::new("ban.within", "must be longer than zero"));
        }
        if let Err(err) = self.violations().validate("ban") {
            return Err(ConfigError::new("ban.within", err.reason()));
        }
        for (field, d) in [
            ("ban.within", self.within),
            ("ban.ban_for", self.ban_for),
            ("ban.max_ban_for", self.max_ban_for),
            ("ban.jitter", self.jitter),
        ] {
            at_most_longest(field, d)?;
        }
        if self.ban_for.is_zero() {
            return Err(ConfigError::new("ban.ban_for", "must be longer than zero"));
        }
        if self.escalate && self.max_ban_for < self.ban_for {
            return Err(ConfigError::new(
                "ban.max_ban_for",
                format!(
                    "{:?} is shorter than ban_for ({:?})",
                    self.max_ban_for, self.ban_for
                ),
            ));
        }
        Ok(())
    }

    /// The length of a client's next ban, in nanoseconds: `ban_for`, doubled per earlier ban
    /// when escalating (capped at `max_ban_for`), plus up to `jitter` drawn from `noise`.
    pub(crate) fn length(&self, earlier_bans: u32, noise: u64) -> u64 {
        let base = nanos(self.ban_for);
        let length = if self.escalate {
            let doubled = base.saturating_mul(1u64 << earlier_bans.min(63));
            doubled.min(nanos(self.max_ban_for))
        } else {
            base
        };
        let jitter = nanos(self.jitter);
        // Up to `jitter` inclusive; the whole of `noise` when `jitter` is `u64::MAX`.
        length.saturating_add(match jitter.checked_add(1) {
            Some(range) => noise % range,
            None => noise,
        })
    }
}

/// Why a client or network is banned: kept with the ban in the limiter, shown by
/// [`Limiter::bans`](crate::Limiter::bans) and the admin API, and forgotten with the ban.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BanReason {
    /// The [`BanPolicy`]: the client's rate refusals within `within` passed the policy's
    /// `max_violations`; `last` is the rule that refused it last (`connect_rate`,
    /// `request_rate` or `path_rule`).
    Policy {
        /// The rule whose refusal crossed the threshold.
        last: RejectReason,
        /// The refusals counted within `within`, the last included.
        violations: u32,
        /// The window they were counted over.
        within: Duration,
    },
    /// The words of whoever banned: an operator through
    /// [`Limiter::ban_with_reason`](crate::Limiter::ban_with_reason) or the admin API, at most
    /// [`BanReason::MAX_LEN`] bytes of printable text.
    Given(Arc<str>),
}

impl BanReason {
    /// The longest a given reason is kept, in bytes; longer ones are cut at a character
    /// boundary.
    pub const MAX_LEN: usize = 200;

    /// A reason in someone's words, made printable (control characters become spaces, so that
    /// a reason cannot forge log lines) and cut to [`BanReason::MAX_LEN`] bytes.
    pub fn given(words: &str) -> Self {
        let mut text = String::with_capacity(words.len().min(Self::MAX_LEN));
        for c in words.trim().chars() {
            let c = if c.is_control() { ' ' } else { c };
            if text.len() + c.len_utf8() > Self::MAX_LEN {
                break;
            }
            text.push(c);
        }
        BanReason::Given(text.into())
    }

    /// What [`Limiter::ban`](crate::Limiter::ban) records: no words were given.
    pub(crate) fn operator() -> Self {
        BanReason::Given(Arc::from("banned by the operator"))
    }
}

impl fmt::Display for BanReason {
    /// `rate limits exceeded 21 times in 60s (last: request_rate)`, or the given words.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BanReason::Policy {
                last,
                violations,
                within,
            } => write!(
                f,
                "rate limits exceeded {violations} times in {within:?} (last: {last})"
            ),
            BanReason::Given(words) => f.write_str(words),
        }
    }
}

/// A ban in force: how long it has left, and why. See [`Limiter::bans`](crate::Limiter::bans)
/// and [`Limiter::banned_networks`](crate::Limiter::banned_networks).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ban {
    /// How much longer it runs.
    pub left: Duration,
    /// Why it was made.
    pub reason: BanReason,
}

/// A cheap random number for ban jitter: a hash of the clock reading and the client key with a
/// per-process random seed. Not for cryptography; only so that bans do not all end together.
pub(crate) fn noise(key: &ClientKey, now: u64) -> u64 {
    foldhash::fast::RandomState::default().hash_one((key, now))
}

/// Ban policies in config files.
#[cfg(feature = "serde")]
mod file {
    use std::time::Duration;

    use serde::{Deserialize, Serialize};

    use super::BanPolicy;

    /// A policy as a file writes it: `max_ban_for` may be left to `ban_for`. A policy is
    /// written whole, every field given.
    #[derive(Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct BanSpec {
        max_violations: u32,
        #[serde(with = "humantime_serde")]
        within: Duration,
        #[serde(with = "humantime_serde")]
        ban_for: Duration,
        #[serde(default)]
        escalate: bool,
        #[serde(default, with = "humantime_serde")]
        max_ban_for: Option<Duration>,
        #[serde(default, with = "humantime_serde")]
        jitter: Option<Duration>,
        #[serde(default)]
        dry_run: bool,
    }

    impl From<BanSpec> for BanPolicy {
        fn from(f: BanSpec) -> Self {
            BanPolicy {
                max_violations: f.max_violations,
                within: f.within,
                ban_for: f.ban_for,
                escalate: f.escalate,
                max_ban_for: f.max_ban_for.unwrap_or(f.ban_for),
                jitter: f.jitter.unwrap_or_default(),
                dry_run: f.dry_run,
            }
        }
    }

    impl From<BanPolicy> for BanSpec {
        fn from(p: BanPolicy) -> Self {
            BanSpec {
                max_violations: p.max_violations,
                within: p.within,
                ban_for: p.ban_for,
                escalate: p.escalate,
                max_ban_for: Some(p.max_ban_for),
                jitter: Some(p.jitter),
                dry_run: p.dry_run,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_length_escalates_caps_and_jitters() {
        let secs = |s| Duration::from_secs(s);
        let policy = BanPolicy::new(3, secs(10), secs(60)).escalate(secs(600));
        let n = |s: u64| s * 1_000_000_000;
        assert_eq!(policy.length(0, 12345), n(60));
        assert_eq!(policy.length(1, 12345), n(120));
        assert_eq!(policy.length(3, 12345), n(480));
        assert_eq!(policy.length(4, 12345), n(600));
        assert_eq!(policy.length(200, 12345), n(600));
        let jittered = policy.jitter(secs(5));
        for noise in [0, 1, u64::MAX, 987_654_321_987] {
            let length = jittered.length(0, noise);
            assert!((n(60)..=n(65)).contains(&length));
        }
        assert_eq!(BanPolicy::new(1, secs(1), secs(7)).length(5, 99), n(7));
    }

    #[test]
    fn given_reasons_are_printable_and_bounded() {
        assert_eq!(
            BanReason::given("  scraping\n/login\u{1b}[31m ").to_string(),
            "scraping /login [31m"
        );
        let long = "é".repeat(BanReason::MAX_LEN);
        let BanReason::Given(cut) = BanReason::given(&long) else {
            unreachable!("given words are Given")
        };
        assert_eq!(cut.len(), BanReason::MAX_LEN);
        let policy = BanReason::Policy {
            last: RejectReason::RequestRate,
            violations: 21,
            within: Duration::from_secs(60),
        };
        assert_eq!(
            policy.to_string(),
            "rate limits exceeded 21 times in 60s (last: request_rate)"
        );
    }
}
