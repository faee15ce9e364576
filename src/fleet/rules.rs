//! The names rate rules are shared under: a path rule's own `name` when it has one, else a hash
//! of everything that makes the rule what it is. Nodes on different configs (a rolling deploy
//! that adds, removes or reorders rules) thus never add their counts together unless the rules
//! are the same, or the user says they are by naming them alike.

use std::time::Duration;

use super::keys::fnv1a;
use crate::limiter::sharing::{rule, RuleId};
use crate::limits::Limits;
use crate::rate::RateLimit;

/// One rule as the fleet counts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SharedRule {
    /// Its name in Redis keys: `n:NAME` or `h:HASH`.
    pub(super) id: String,
    /// Its period in milliseconds (at least 1): the length of the fleet's windows.
    pub(super) period_ms: u64,
}

/// The rules of `limits` by the limiter's numbering ([`RuleId`]).
pub(super) fn shared_rules(limits: &Limits) -> Vec<Option<SharedRule>> {
    (0..2 + limits.path_rules.len())
        .map(|id: RuleId| {
            let rate = rule(limits, id)?;
            let named = id
                .checked_sub(2)
                .and_then(|i| limits.path_rules[i].name.as_deref());
            let id = match named {
                Some(name) => format!("n:{name}"),
                None => format!(
                    "h:{:012x}",
                    fnv1a(describe(limits, id, rate).as_bytes()) >> 16
                ),
            };
            Some(SharedRule {
                id,
                period_ms: millis(rate.period),
            })
        })
        .collect()
}

/// Everything that makes rule `id` (`rate`) what it is, as text: its kind (with a path rule's
/// path, match and method), events, period, strategy and burst. Not `dry_run`: a rule counts
/// the same whether it enforces or not.
fn describe(limits: &Limits, id: RuleId, rate: &RateLimit) -> String {
    let kind = match id {
        0 => "connect".to_owned(),
        1 => "request".to_owned(),
        i => {
            let rule = &limits.path_rules[i - 2];
            format!(
                "path {:?} {:?} {:?}",
                rule.path,
                rule.matching,
                rule.method.as_deref().unwrap_or("*")
            )
        }
    };
    format!(
        "{kind} {} {}ns {:?} {}",
        rate.events,
        rate.period.as_nanos(),
        rate.strategy,
        rate.burst
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::{PathRule, Strategy};
    use crate::Config;

    fn rules(config: Config) -> Vec<Option<SharedRule>> {
        let limiter = crate::Limiter::new(config);
        limiter.with_limits(shared_rules)
    }

    #[test]
    fn rules_are_named_by_what_they_are_not_where_they_are() {
        let minute = Duration::from_secs(60);
        let login = PathRule::exact("/login", RateLimit::new(5, minute)).method("POST");
        let api = PathRule::prefix("/api", RateLimit::new(100, minute));
        let before = rules(Config {
            request_rate: Some(RateLimit::new(100, minute)),
            path_rules: vec![login.clone()],
            ..Config::default()
        });
        // A rolling deploy adds a rule in front: the login rule keeps its id.
        let after = rules(Config {
            request_rate: Some(RateLimit::new(100, minute)),
            path_rules: vec![api.clone(), login.clone()],
            ..Config::default()
        });
        assert_eq!(before[0], None);
        assert_eq!(before[1], after[1]);
        assert_eq!(before[2], after[3]);
        assert_ne!(after[2], after[3]);
        let ids: Vec<_> = after.iter().flatten().map(|r| r.id.clone()).collect();
        assert!(
            ids.iter().all(|id| id.len() == 14 && id.starts_with("h:")),
            "{ids:?}"
        );
        // Another count, strategy or method is another rule; a name is the user's word.
        let other = rules(Config {
            request_rate: Some(RateLimit::new(100, minute).strategy(Strategy::FixedWindow)),
            path_rules: vec![
                PathRule::exact("/login", RateLimit::new(6, minute)).method("POST"),
                login.clone().method("GET"),
                login.named("login"),
            ],
            ..Config::default()
        });
        assert_ne!(other[1], before[1]);
        assert_ne!(other[2], before[2]);
        assert_ne!(other[3], before[2]);
        assert_eq!(other[4].as_ref().unwrap().id, "n:login");
        assert_eq!(other[4].as_ref().unwrap().period_ms, 60_000);
    }
}
