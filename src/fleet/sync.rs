//! The fleet's one task per limiter: every sync interval, one pipelined round trip to Redis
//! that renews the node's name, publishes its bans and rate events, and reads the fleet's (and
//! a second one only when the first leaves something to do: an emptied shard's epoch, a shard
//! read whole, totals of counters Redis was too full to add to).

use std::time::{Duration, Instant};

use redis::cmd;

use super::bans::BanBook;
use super::config::FleetConfig;
use super::failure::Failures;
use super::keys::Keys;
use super::link::{Batch, Link, Reply};
use super::names::NameTag;
use super::rates::RateBook;
use super::value;
use crate::limiter::Limiter;

/// The longest pause between tries while Redis cannot be reached.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Every how many syncs Redis's clock is read again (ours carries it forward in between).
const TIME_EVERY: u64 = 10;

/// Redis's clock, as read by `TIME` and carried forward by ours: what windows and ban ends are
/// counted in, so that every node agrees on them whatever its own clock says.
#[derive(Debug, Default)]
struct RedisClock {
    /// Redis's milliseconds at an instant of ours.
    read: Option<(u64, Instant)>,
}

impl RedisClock {
    fn now_ms(&self) -> Option<u64> {
        self.read
            .map(|(ms, at)| ms.saturating_add(at.elapsed().as_millis() as u64))
    }

    /// Takes in a `TIME` reply.
    fn set(&mut self, reply: Option<&Reply>) {
        if let Some(Ok(time)) = reply {
            if let [secs, micros] = value::items(time) {
                if let (Some(secs), Some(micros)) = (value::int(secs), value::int(micros)) {
                    let ms = (secs.max(0) as u64) * 1000 + (micros.max(0) as u64) / 1000;
                    self.read = Some((ms, Instant::now()));
                }
            }
        }
    }
}

/// Everything the task keeps between syncs.
pub(super) struct Syncer {
    limiter: Limiter,
    link: Link,
    interval: Duration,
    bans: BanBook,
    rates: RateBook,
    name: NameTag,
    failures: Failures,
    clock: RedisClock,
    /// Syncs in a row that did not reach Redis, for the backoff.
    unreached: u32,
    /// Syncs so far.
    syncs: u64,
    /// Every how many syncs the name is renewed: four times per name TTL.
    beat_every: u64,
}

impl Syncer {
    pub(super) fn new(limiter: Limiter, link: Link, config: &FleetConfig, instance: &str) -> Self {
        let keys = Keys::new(&config.prefix);
        Syncer {
            bans: BanBook::new(keys.clone(), &config.node, instance),
            rates: RateBook::new(keys.clone()),
            name: NameTag::new(config, &keys, instance),
            limiter,
            link,
            interval: config.sync_interval,
            failures: Failures::default(),
            clock: RedisClock::default(),
            unreached: 0,
            syncs: 0,
            beat_every: (config.name_ttl().as_millis()
                / (4 * config.sync_interval.as_millis()).max(1))
            .max(1) as u64,
        }
    }

    /// Syncs every interval (backing off while Redis cannot be reached), until aborted.
    pub(super) async fn run(mut self) {
        loop {
            self.sync_once().await;
            let pause = if self.unreached == 0 {
                self.interval
            } else {
                (self.interval * 2u32.saturating_pow(self.unreached.min(16))).min(MAX_BACKOFF)
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn sync_once(&mut self) {
        let now_ms = match self.clock.now_ms() {
            Some(now) => now,
            None => {
                let mut batch = Batch::default();
                batch.push("", cmd("TIME"));
                let replies = self.link.run(batch).await;
                self.note_failures(&replies);
                self.clock.set(replies.first());
                match self.clock.now_ms() {
                    Some(now) => now,
                    None => return self.end_sync(),
                }
            }
        };
        for (banned, ban) in self.limiter.take_ban_notes() {
            self.bans.note(banned, ban, now_ms);
        }
        let read_at = Instant::now();
        let mut batch = Batch::default();
        if self.syncs % self.beat_every == 0 {
            let errors = self
                .limiter
                .fleet_status()
                .map_or(0, |status| status.sync_errors);
            self.name.ask(&mut batch, now_ms, self.syncs, errors);
        }
        self.bans.ask(&mut batch, now_ms);
        self.rates.ask(&self.limiter, &mut batch, now_ms);
        let time = (self.syncs % TIME_EVERY == 0).then(|| batch.push("", cmd("TIME")));
        self.syncs += 1;
        let replies = self.link.run(batch).await;
        self.note_failures(&replies);
        self.clock.set(time.and_then(|time| replies.get(time)));
        let mut second = Batch::default();
        self.name.heard(&replies, &self.limiter, &mut second);
        let bans = self
            .bans
            .heard(&replies, &self.limiter, now_ms, read_at, &mut second);
        let rates = self.rates.heard(&replies, &self.limiter, &mut second);
        // Run even when empty: a shard read whole with no bans in it completes here.
        let replies = self.link.run(second).await;
        self.note_failures(&replies);
        self.bans
            .followed_up(bans, &replies, &self.limiter, now_ms, read_at);
        self.rates.followed_up(rates, &replies, &self.limiter);
        self.end_sync();
    }

    fn note_failures(&mut self, replies: &[Reply]) {
        for reply in replies {
            self.failures.note(reply);
        }
    }

    /// Counts the sync in the limiter's fleet status, and sets the backoff.
    fn end_sync(&mut self) {
        let reached = self.failures.reached();
        if reached {
            if self.unreached > 0 {
                // What was missed meanwhile comes from the shards' logs (or their bans whole,
                // after a long absence): nothing is assumed lifted.
                tracing::info!("the fleet's Redis answers again: sharing bans and rates");
            }
            self.unreached = 0;
        } else {
            self.unreached = self.unreached.saturating_add(1);
        }
        self.limiter.note_sync(reached);
        self.failures.end_sync(&self.limiter);
        let (published, applied) = (
            std::mem::take(&mut self.bans.published),
            std::mem::take(&mut self.bans.applied),
        );
        self.limiter.update_fleet_status(|status| {
            status.bans_published += published;
            status.bans_applied += applied;
        });
    }
}
