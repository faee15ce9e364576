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

mod bans;
mod config;
mod failure;
mod keys;
mod link;
mod names;
mod rates;
mod redact;
mod rules;
mod sync;
#[cfg(feature = "redis-tls")]
mod tls;
mod value;

use tokio::task::JoinHandle;

pub use self::config::{Endpoint, FleetConfig};
pub use crate::limiter::{FleetError, FleetStatus};
use crate::error::ConfigError;
use crate::limiter::Limiter;

/// A limiter's membership of a fleet: see the [module docs](self). Dropping it leaves the
/// fleet (the node keeps its bans, and decides alone from then on).
#[derive(Debug)]
pub struct Fleet {
    task: JoinHandle<()>,
    limiter: Limiter,
}

impl Fleet {
    /// Joins `limiter` to the fleet `config` describes, and starts the task that syncs with it.
    /// Call it from within a tokio runtime, at start-up: it waits for Redis's first answer (at
    /// most `sync_timeout`), and, when another node holds this node's name, for one name TTL
    /// (ten sync intervals, at least 2 s) in case that node is this one restarted.
    ///
    /// A Redis that cannot be reached now is not an error: the node starts on its local limits
    /// and joins when Redis answers, as after an outage.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field: a URL the fleet cannot use (`fleet.redis`: not
    /// `redis://` or `rediss://`, Sentinel, a Unix socket, `rediss://` without the `redis-tls`
    /// feature), credentials Redis refuses or a TLS handshake that fails (`fleet.redis`), a CA
    /// file that cannot be read (`fleet.ca_file`), a name another live node holds
    /// (`fleet.node`), a bad prefix or interval, or a limiter already in a fleet (`fleet`).
    pub async fn join(limiter: &Limiter, config: FleetConfig) -> Result<Fleet, ConfigError> {
        config.validate()?;
        if limiter.fleet_status().is_some() {
            return Err(ConfigError::new(
                "fleet",
                "this limiter is already in a fleet",
            ));
        }
        let mut link = link::Link::open(&config)?;
        let instance = bans::new_id();
        let keys = keys::Keys::new(&config.prefix);
        let name = names::NameTag::new(&config, &keys, &instance);
        name.claim(&mut link, config.sync_interval).await?;
        let status = FleetStatus {
            node: config.node.clone(),
            errors: failure::Kind::ALL
                .iter()
                .map(|kind| FleetError::new(kind.as_str()))
                .collect(),
            ..FleetStatus::default()
        };
        if limiter.start_sharing(status) {
            return Err(ConfigError::new(
                "fleet",
                "this limiter is already in a fleet",
            ));
        }
        tracing::info!(node = %config.node, redis = %config.redis, "joined the fleet");
        let syncer = sync::Syncer::new(limiter.clone(), link, &config, &instance);
        Ok(Fleet {
            task: tokio::spawn(syncer.run()),
            limiter: limiter.clone(),
        })
    }

    /// Where the node stands with the fleet now: the same record as the limiter's
    /// [`Stats::fleet`](crate::Stats::fleet).
    pub fn status(&self) -> FleetStatus {
        self.limiter.fleet_status().unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.task.abort();
        self.limiter.stop_sharing();
    }
}
