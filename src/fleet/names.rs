//! Node names: each node holds its name in Redis (`{P:meta}:node:NAME`, its random instance id,
//! with a TTL it renews at every sync), so that two live nodes of one name, which would count
//! their events as one and double the fleet's rates, are told so: refused at join, or warned
//! about (with the name, once a minute) and shown in the status when it happens later.

use std::time::{Duration, Instant};

use redis::cmd;

use super::config::FleetConfig;
use super::failure::Kind;
use super::keys::Keys;
use super::link::{Batch, Link, Reply};
use super::value;
use crate::error::ConfigError;
use crate::limiter::Limiter;

/// How often a duplicate name is logged again while it lasts.
const REMINDER: Duration = Duration::from_secs(60);

/// A heartbeat older than this many name TTLs is taken out of the nodes' hash: a node gone for
/// good.
const FORGET_AFTER_TTLS: u32 = 60;

/// This node's hold on its name.
#[derive(Debug)]
pub(super) struct NameTag {
    name: String,
    key: String,
    /// The nodes' heartbeats (`Keys::nodes`).
    nodes_key: String,
    /// This sync's read of the nodes' heartbeats, and Redis's time then.
    nodes_asked: Option<(usize, u64)>,
    instance: String,
    ttl: Duration,
    /// This sync's heartbeat reply.
    asked: Option<usize>,
    /// When the duplicate was last logged, while there is one.
    warned: Option<Instant>,
    /// When another instance was last seen holding the name.
    other_seen: Option<Instant>,
}

impl NameTag {
    pub(super) fn new(config: &FleetConfig, keys: &Keys, instance: &str) -> Self {
        NameTag {
            name: config.node.clone(),
            key: keys.node(&config.node),
            nodes_key: keys.nodes(),
            nodes_asked: None,
            instance: instance.to_owned(),
            ttl: config.name_ttl(),
            asked: None,
            warned: None,
            other_seen: None,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Takes the name at join, waiting up to one TTL for a holder that stopped heartbeating (a
    /// restarted node takes its name back). Whether Redis answered.
    ///
    /// # Errors
    ///
    /// Redis refused the credentials or TLS failed (`fleet.redis`), or another live node holds
    /// the name (`fleet.node`).
    pub(super) async fn claim(
        &self,
        link: &mut Link,
        interval: Duration,
    ) -> Result<bool, ConfigError> {
        let started = Instant::now();
        let pause = interval.clamp(Duration::from_millis(50), Duration::from_millis(500));
        loop {
            let mut batch = Batch::default();
            let claim = cmd("SET")
                .arg(&self.key)
                .arg(&self.instance)
                .arg("NX")
                .arg("PX")
                .arg(self.ttl_ms())
                .clone();
            batch.push(&self.key, claim);
            let holder = batch.push(&self.key, cmd("GET").arg(&self.key).clone());
            let replies = link.run(batch).await;
            if let [Err(failure), ..] = &replies[..] {
                return match failure.kind {
                    Kind::Auth | Kind::Tls | Kind::Other => Err(ConfigError::new(
                        "fleet.redis",
                        format!(
                            "the fleet's Redis {}: {}",
                            refusal(failure.kind),
                            failure.text
                        ),
                    )),
                    _ => {
                        tracing::warn!(
                            kind = failure.kind.as_str(),
                            error = %failure.text,
                            "cannot reach the fleet's Redis at start: this node starts on its \
                             local limits and joins when Redis answers"
                        );
                        Ok(false)
                    }
                };
            }
            let held_by = replies
                .get(holder)
                .and_then(|r| r.as_ref().ok())
                .and_then(value::text);
            // Another's: wait for it to expire. None: it expired between the two commands, and
            // the next try takes it.
            if held_by.as_deref() == Some(self.instance.as_str()) {
                return Ok(true);
            }
            if started.elapsed() > self.ttl + pause {
                return Err(ConfigError::new(
                    "fleet.node",
                    format!(
                        "{:?} is the name of another live node of this fleet (it renewed it \
                         within the last {:?}): give each node a name of its own",
                        self.name, self.ttl
                    ),
                ));
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Adds this sync's heartbeat: the name set to this instance again, reading who had it;
    /// and this node's line in the nodes' hash (at `now_ms`, Redis's clock, with `syncs` and
    /// `errors` so far), reading everyone's.
    pub(super) fn ask(&mut self, batch: &mut Batch, now_ms: u64, syncs: u64, errors: u64) {
        let beat = cmd("SET")
            .arg(&self.key)
            .arg(&self.instance)
            .arg("PX")
            .arg(self.ttl_ms())
            .arg("GET")
            .clone();
        self.asked = Some(batch.push(&self.key, beat));
        let line = format!("{now_ms} {syncs} {errors}");
        let write = cmd("HSET")
            .arg(&self.nodes_key)
            .arg(&self.name)
            .arg(line)
            .clone();
        batch.push(&self.nodes_key, write);
        let read = batch.push(&self.nodes_key, cmd("HGETALL").arg(&self.nodes_key).clone());
        self.nodes_asked = Some((read, now_ms));
    }

    /// Takes in the nodes' heartbeats: every node, connected if it beat within the name's TTL;
    /// a node silent for [`FORGET_AFTER_TTLS`] TTLs is taken out of the hash by the next
    /// heartbeat (`batch`).
    fn heard_nodes(&mut self, replies: &[Reply], limiter: &Limiter, batch: &mut Batch) {
        let Some((read, now_ms)) = self.nodes_asked.take() else {
            return;
        };
        let Some(Ok(reply)) = replies.get(read) else {
            return;
        };
        let ttl = self.ttl_ms();
        let mut nodes = Vec::new();
        for (name, line) in value::pairs(reply) {
            let mut numbers = line.split(' ').map(|n| n.parse::<u64>().ok());
            let (Some(Some(at)), Some(Some(syncs)), Some(Some(errors))) =
                (numbers.next(), numbers.next(), numbers.next())
            else {
                continue;
            };
            let age = now_ms.saturating_sub(at);
            if age > ttl.saturating_mul(u64::from(FORGET_AFTER_TTLS)) {
                batch.push(
                    &self.nodes_key,
                    cmd("HDEL").arg(&self.nodes_key).arg(&name).clone(),
                );
                continue;
            }
            nodes.push(crate::stats::FleetNode {
                this_node: name == self.name,
                node: name,
                connected: age <= ttl,
                last_sync_age: Some(Duration::from_millis(age)),
                syncs,
                sync_errors: errors,
            });
        }
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        limiter.update_fleet_status(|status| status.nodes = nodes);
    }

    /// Takes in the heartbeat's reply: another instance's id there means another live node
    /// of this name.
    pub(super) fn heard(&mut self, replies: &[Reply], limiter: &Limiter, batch: &mut Batch) {
        self.heard_nodes(replies, limiter, batch);
        let Some(Some(Ok(previous))) = self.asked.take().map(|i| replies.get(i)) else {
            return;
        };
        if value::text(previous).is_some_and(|id| id != self.instance) {
            self.other_seen = Some(Instant::now());
        }
        // Two live nodes of one name overwrite each other at every sync; a name TTL without
        // seeing the other means it is gone.
        let duplicate = self.other_seen.is_some_and(|at| at.elapsed() < self.ttl);
        let warning = duplicate.then(|| {
            format!(
                "another live node of this fleet is named {:?}: the two count their events as \
                 one, doubling the fleet's rates; give each node a name of its own",
                self.name
            )
        });
        if let Some(text) = &warning {
            if self.warned.is_none_or(|at| at.elapsed() >= REMINDER) {
                tracing::warn!(node = %self.name, "{text}");
                self.warned = Some(Instant::now());
            }
        } else if self.warned.take().is_some() {
            tracing::info!(node = %self.name, "no other live node is named like this one any more");
        }
        limiter.update_fleet_status(|status| status.duplicate_name = warning);
    }
}

fn refusal(kind: Kind) -> &'static str {
    match kind {
        Kind::Auth => "refused this node's credentials",
        Kind::Tls => "could not be reached over TLS",
        _ => "refused this node",
    }
}
