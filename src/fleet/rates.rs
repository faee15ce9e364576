//! The fleet's rate counts in Redis: one counter per client, rule and window, that every node
//! adds its new events to and reads the fleet's total from in the same command (`INCRBY`), so
//! that a node's work per client does not grow with the number of nodes. The counter expires
//! after two of the rule's periods (`PEXPIRE … NX`, set once).
//!
//! A node's share of a total is what it sent into that window; the rest is the other nodes',
//! which the limiter counts as if it had just happened here. Events that could not be sent
//! (Redis away or full) are kept in the clients' records, at most a rule's worth, and sent at
//! the next sync that can; while Redis is full, totals are still read (`GET`).
//!
//! The expiry is a second plain command rather than a script (`INCRBY` then `PEXPIRE` in one
//! `EVALSHA`): it costs one more small command per counter and sync, but needs no script cache
//! (a restarted or failed-over Redis has none), works where managed offerings restrict
//! scripting, and keeps the whole fleet to commands Valkey and every Redis 7 serve alike. `NX`
//! sets the expiry once, so the counter dies two periods after its window began, however often
//! it is added to.

use redis::cmd;

use super::failure::Kind;
use super::keys::Keys;
use super::link::{Batch, Reply};
use super::rules::{shared_rules, SharedRule};
use super::value;
use crate::key::ClientKey;
use crate::limiter::sharing::RuleId;
use crate::limiter::Limiter;

/// One counter a sync adds to.
#[derive(Debug)]
struct Sent {
    client: ClientKey,
    rule: RuleId,
    window: u64,
    events: u32,
    counter: String,
    reply: usize,
}

/// Counters to read in the second round trip, their adding having been refused.
#[derive(Debug, Default)]
pub(super) struct FollowUp {
    reads: Vec<(ClientKey, RuleId, u64, usize)>,
}

/// What the node shares of its rate rules.
#[derive(Debug)]
pub(super) struct RateBook {
    keys: Keys,
    /// The config generation `rules` were named for.
    generation: Option<u64>,
    rules: Vec<Option<SharedRule>>,
    sent: Vec<Sent>,
}

impl RateBook {
    pub(super) fn new(keys: Keys) -> Self {
        RateBook {
            keys,
            generation: None,
            rules: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Adds, for every client with new events, one `INCRBY` and one `PEXPIRE NX` per rule.
    /// Windows are numbered by Redis's clock (`now_ms`).
    pub(super) fn ask(&mut self, limiter: &Limiter, batch: &mut Batch, now_ms: u64) {
        let generation = limiter.with_limits(|limits| {
            let generation = limits.lookups.generation;
            if self.generation != Some(generation) {
                self.rules = shared_rules(limits);
                self.generation = Some(generation);
            }
            generation
        });
        for (client, events) in limiter.take_rate_events(generation) {
            let tag = self.keys.client_tag(&client.to_string());
            for (rule, n) in events {
                let Some(Some(shared)) = self.rules.get(rule) else {
                    continue;
                };
                let window = now_ms / shared.period_ms;
                let counter = self.keys.rate(&tag, &shared.id, window);
                let add = cmd("INCRBY").arg(&counter).arg(n).clone();
                let reply = batch.push(&counter, add);
                let expire = cmd("PEXPIRE")
                    .arg(&counter)
                    .arg(shared.period_ms.saturating_mul(2))
                    .arg("NX")
                    .clone();
                batch.push(&counter, expire);
                self.sent.push(Sent {
                    client,
                    rule,
                    window,
                    events: n,
                    counter,
                    reply,
                });
            }
        }
    }

    /// Takes in the totals: each one charges the limiter with the other nodes' events. Events
    /// whose adding failed are kept for the next sync; while Redis is full, their totals are read
    /// in the second round trip.
    pub(super) fn heard(
        &mut self,
        replies: &[Reply],
        limiter: &Limiter,
        batch: &mut Batch,
    ) -> FollowUp {
        let mut follow_up = FollowUp::default();
        let generation = self.generation.unwrap_or_default();
        for sent in std::mem::take(&mut self.sent) {
            match replies.get(sent.reply) {
                Some(Ok(total)) => {
                    let total = value::int(total).unwrap_or(0).max(0) as u64;
                    limiter.charge_fleet(&sent.client, sent.rule, sent.window, total, sent.events);
                }
                failed => {
                    limiter.keep_rate_events(sent.client, sent.rule, sent.events, generation);
                    if matches!(failed, Some(Err(f)) if f.kind == Kind::Oom) {
                        let read = batch.push(&sent.counter, cmd("GET").arg(&sent.counter).clone());
                        follow_up
                            .reads
                            .push((sent.client, sent.rule, sent.window, read));
                    }
                }
            }
        }
        follow_up
    }

    /// Takes in the totals read in the second round trip.
    pub(super) fn followed_up(&self, follow_up: FollowUp, replies: &[Reply], limiter: &Limiter) {
        for (client, rule, window, read) in follow_up.reads {
            if let Some(Ok(total)) = replies.get(read) {
                let total = value::int(total).unwrap_or(0).max(0) as u64;
                limiter.charge_fleet(&client, rule, window, total, 0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::limiter::{FleetStatus, Limiter};
    use crate::rate::RateLimit;
    use crate::Config;

    fn sharing(events: u32) -> (Limiter, std::net::IpAddr, u64) {
        let limiter = Limiter::new(Config {
            request_rate: Some(RateLimit::new(events, Duration::from_secs(60))),
            ..Config::default()
        });
        assert!(!limiter.start_sharing(FleetStatus::default()));
        let generation = limiter.with_limits(|limits| limits.lookups.generation);
        (limiter, "192.0.2.1".parse().unwrap(), generation)
    }

    #[test]
    fn events_kept_through_an_outage_are_capped_at_the_rule() {
        let (limiter, ip, generation) = sharing(5);
        for _ in 0..5 {
            drop(limiter.try_acquire_request(ip).unwrap());
        }
        let events = limiter.take_rate_events(generation);
        assert_eq!(events.len(), 1);
        let (key, per_rule) = &events[0];
        assert_eq!(per_rule, &[(1, 5)]);
        // Three failed syncs give the same events back: at most the rule's 5 are kept.
        for _ in 0..3 {
            limiter.keep_rate_events(*key, 1, 5, generation);
        }
        assert_eq!(
            limiter.take_rate_events(generation),
            vec![(*key, vec![(1, 5)])]
        );
        // Under another config, nothing is sent under this one's numbering.
        limiter.keep_rate_events(*key, 1, 2, generation);
        assert!(limiter.take_rate_events(generation + 1).is_empty());
    }

    #[test]
    fn the_fleets_total_less_what_this_node_sent_is_charged() {
        let (limiter, ip, generation) = sharing(10);
        drop(limiter.try_acquire_request(ip).unwrap());
        let (key, _) = limiter.take_rate_events(generation).remove(0);
        // This node sent 1 into window 7, and the fleet's total is 9: 8 are the others'.
        limiter.charge_fleet(&key, 1, 7, 9, 1);
        drop(limiter.try_acquire_request(ip).unwrap());
        assert!(
            limiter.try_acquire_request(ip).is_err(),
            "1 + 8 + 1 is the rule's 10"
        );
        // The same total read again charges nothing more.
        limiter.charge_fleet(&key, 1, 7, 9, 0);
        limiter.stop_sharing();
    }
}
