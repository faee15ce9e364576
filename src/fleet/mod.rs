//! [`Fleet`]: limiters on many nodes sharing bans and rates through Redis, never on the
//! admission path (feature `redis`).
//!
//! Connection and request *concurrency* stay per node: a node's sockets and file descriptors
//! are its own (nginx, HAProxy's `conn_cur` and go-connlimit count per node too). What is per
//! *client* is shared:
//!
//! - **Bans.** A ban decided on any node (by the ban policy, or [`Limiter::ban`]) and an
//!   [`Limiter::unban`] reach every node within one sync interval and a round trip. Each ban is a
//!   Redis key with the ban's time left as its TTL, indexed in a sorted set by its end, so a ban
//!   ends everywhere at once; a node that joins, or comes back after an outage, loads the bans
//!   in force and publishes its own.
//! - **Rates.** `connect_rate`, `request_rate` and the path rules count every node's events.
//!   Each node decides locally, from its own count plus the other nodes' as of the last sync,
//!   and sends its own new events once per interval, in one pipelined batch, only for the
//!   clients active on it in that interval (a hash per client, rule and window, one field per
//!   node, expiring after two windows). So in any window the fleet admits at most the rule's
//!   events plus what the other nodes admit in one sync interval before they hear of them.
//!
//! One task per limiter does all the talking; admission only leaves notes for it (a ban, a
//! client with new events), so it never waits for Redis, whether Redis is up, down, or
//! accepting connections and never answering. While Redis cannot be reached, each node keeps
//! enforcing its own limits alone (fail-open, like Kong's and Envoy's default): the outage is
//! logged once, with a reminder every minute, shown in [`Fleet::status`], and the connection is
//! retried with backoff.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_connlimit::fleet::{Fleet, FleetConfig};
//! use tower_connlimit::{Config, Limiter};
//!
//! let limiter = Limiter::new(Config::default());
//! let fleet = Fleet::join(&limiter, FleetConfig::new("redis://127.0.0.1:6379/", "node-a"))?;
//! // Keep `fleet` for as long as the node is in the fleet; dropping it leaves.
//! # drop(fleet); Ok(()) }
//! ```
//!
//! Redis keys, under the prefix (default `connlimit`): `{prefix}:ban:{client}` (the node that
//! banned, with the ban's TTL), `{prefix}:bans` (a sorted set of banned clients by the end of
//! their ban, in Redis's milliseconds), `{prefix}:bans:version` (a counter bumped on every
//! change), and `{prefix}:rate:{rule}:{period_ms}:{window}:{client}` (a hash of each node's
//! events, expiring after two periods). Keys hold client keys (an address, or a network such as
//! `2001:db8::/64`) and node names only, no request data. Each active client costs, per rule,
//! one small hash per window (120 bytes with three nodes, by Redis 7's `MEMORY USAGE`), each
//! kept for two windows; a ban, a key of 88 bytes and its place in the sorted set. The commands are plain
//! Redis 7 commands (`SET PX`, `ZADD`, `ZRANGE BYSCORE`, `HINCRBY`, `PEXPIRE`, `HGETALL`,
//! `TIME`), with no scripts, so Valkey and Dragonfly serve them too. AUTH goes in the URL
//! (`redis://user:password@host/`); TLS (`rediss://`) needs the `redis-tls` feature.

mod status;
mod sync;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

pub use self::status::FleetStatus;
use crate::error::ConfigError;
use crate::limiter::Limiter;

/// How a node joins a fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// The Redis (or Valkey) to meet on: `redis://[user:password@]host[:port][/db]`, or
    /// `rediss://` for TLS (feature `redis-tls`).
    pub url: String,
    /// This node's name, unique in the fleet: its field in the shared rate counts.
    pub node: String,
    /// What every key starts with, so that two fleets can share one Redis. Default `connlimit`.
    pub prefix: String,
    /// How often the node sends its news and hears the fleet's. Default 100 ms.
    pub sync_interval: Duration,
    /// How long one sync may wait for Redis before it counts as failed. Default 1 s.
    pub sync_timeout: Duration,
}

impl FleetConfig {
    /// Joining the Redis at `url` as `node`, with the default prefix and intervals.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> Self {
        FleetConfig {
            url: url.into(),
            node: node.into(),
            prefix: "connlimit".to_owned(),
            sync_interval: Duration::from_millis(100),
            sync_timeout: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !name_ok(&self.node) {
            return Err(ConfigError::new(
                "fleet.node",
                "must be letters, digits, '-', '_' or '.', and not empty",
            ));
        }
        if !name_ok(&self.prefix) {
            return Err(ConfigError::new(
                "fleet.prefix",
                "must be letters, digits, '-', '_' or '.', and not empty",
            ));
        }
        if self.sync_interval < Duration::from_millis(1)
            || self.sync_interval > Duration::from_secs(60)
        {
            return Err(ConfigError::new(
                "fleet.sync_interval",
                "must be between 1 ms and 60 s",
            ));
        }
        if self.sync_timeout.is_zero() {
            return Err(ConfigError::new(
                "fleet.sync_timeout",
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

/// A limiter's membership of a fleet: see the [module docs](self). Dropping it leaves the
/// fleet (the node keeps its bans, and decides alone from then on).
#[derive(Debug)]
pub struct Fleet {
    task: JoinHandle<()>,
    status: Arc<Mutex<FleetStatus>>,
    limiter: Limiter,
}

impl Fleet {
    /// Joins `limiter` to the fleet `config` describes, and starts the task that syncs with it.
    /// Returns at once: the connection is made in the background, and retried while Redis is
    /// down, the node deciding alone meanwhile. Call it from within a tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a URL that cannot be a Redis URL (`fleet.url`), a bad node name or
    /// prefix, an interval out of range, or a limiter already in a fleet.
    pub fn join(limiter: &Limiter, config: FleetConfig) -> Result<Fleet, ConfigError> {
        config.validate()?;
        let client = redis::Client::open(config.url.as_str())
            .map_err(|err| ConfigError::new("fleet.url", err.to_string()))?;
        if limiter.start_sharing() {
            return Err(ConfigError::new(
                "fleet",
                "this limiter is already in a fleet",
            ));
        }
        let status = Arc::new(Mutex::new(FleetStatus::new(&config)));
        let task = tokio::spawn(sync::run(
            limiter.clone(),
            client,
            config,
            Arc::clone(&status),
        ));
        Ok(Fleet {
            task,
            status,
            limiter: limiter.clone(),
        })
    }

    /// Where the node stands with the fleet now.
    pub fn status(&self) -> FleetStatus {
        let mut status = status::lock(&self.status).clone();
        if let Some(health) = self.limiter.fleet_health() {
            status.connected = health.connected;
            status.last_sync_age = health.last_sync_age;
            status.sync_errors = health.sync_errors;
        }
        status
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.task.abort();
        self.limiter.stop_sharing();
    }
}
