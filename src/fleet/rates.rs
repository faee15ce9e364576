//! The fleet's rate counts in Redis: one counter per client, rule and window, that every node
//! adds its new events to and reads the fleet's total from in the same command (`INCRBY`), so
//! that a node's work per client does not grow with the number of nodes. The counter expires
//! after two of the rule's periods (`PEXPIRE … NX`, set once).
//!
//! A node's share of a total is what it sent into that window; the rest is the other nodes',
//! which the limiter counts as if it had just happened here. Events that could not be sent
//! (Redis away or full) are kept in the clients' records, at most a rule's worth, and sent at
//! the next sync that can; while Redis is full, totals are still read (`GET`).

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
