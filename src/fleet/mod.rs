//! [`Fleet`]: limiters on many nodes sharing bans and rates through Redis (or Valkey, or a
//! Redis Cluster), never on the admission path (feature `redis`).
//!
//! Connection and request *concurrency* stay per node: a node's sockets and file descriptors
//! are its own (nginx, HAProxy's `conn_cur` and go-connlimit count per node too). What is per
//! *client* is shared:
//!
//! - **Bans**, of clients and of networks, with their reasons. A ban decided on any node (by
//!   the ban policy, [`Limiter::ban`] or [`Limiter::ban_network`]) and a lift reach every node
//!   within one sync interval and a round trip. A ban ends everywhere at once (its end is
//!   Redis's clock). A lift stays in Redis for 24 h, so a node that was away hears of it when it
//!   is back. Only a lift or its end lifts a ban: a Redis that lost its data (`FLUSHALL`,
//!   a restart without persistence, a failover to an empty replica) is noticed by the epoch of
//!   each ban shard and filled again from the nodes' own bans, never read as "no bans".
//! - **Rates.** `connect_rate`, `request_rate` and the path rules count every node's events.
//!   Each node decides locally, from its own count plus the other nodes' as of the last sync,
//!   and once per interval adds its new events to one counter per client, rule and window,
//!   reading the fleet's total in the same command. So in any window the fleet admits at most
//!   the rule's events plus, for each node the client reaches in that window, what that node
//!   admits before its next sync (at least its first request there: a node hears of a client's
//!   window when it sends its own events of it); and each node's Redis work per client is the
//!   same whatever the fleet's size. BENCHMARKS.md measures both.
//!   Rules are shared under a stable id: a path rule's `name`, or a hash of the rule, so
//!   nodes on different configs never mix the counts of different rules.
//!
//! One task per limiter does all the talking; admission only leaves notes for it (a ban, a
//! client with new events), so it never waits for Redis, whether Redis is up, down, full, or
//! accepting connections and never answering.
//!
//! # Failures
//!
//! | what fails | what the node does | what the operator sees |
//! |---|---|---|
//! | Redis unreachable at start | starts on its local limits; joins when Redis answers | `connection` errors in [`Fleet::status`] and `connlimit_fleet_errors_total`; one warning |
//! | Redis stopped, killed, or silent | decides alone, keeps every ban, keeps its rate events (a rule's worth per client) for the first sync after; retries with backoff up to 5 s | `connected: false`, `connection` or `timeout` errors; one warning per kind, then one a minute |
//! | Redis emptied (`FLUSHALL`, restart without persistence, empty replica) | lifts nothing; adopts the new epoch and puts back every ban it knows | a warning per emptied shard; `bans_published` rises |
//! | Redis full (`maxmemory`, `noeviction`) | reads go on (bans heard, rate totals read); what it cannot write waits, bounded | `oom` errors; `connected` stays true |
//! | a cluster slot moved | follows the redirection, retries at the next sync | `cluster` errors while it lasts |
//! | wrong password, TLS refused | [`Fleet::join`] fails with the reason (no password in it) | the error at start-up |
//! | two live nodes with one name | refused at join; if it happens later, warned about | `duplicate_name` in the status, `connlimit_fleet_duplicate_name` |
//!
//! Each kind of failure is logged in one line of at most 1 KiB, at most once a minute while it
//! lasts, and the status keeps the last of each kind; a URL's password is shown as `***` in
//! every log line, error, status and `Debug`.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tower_connlimit::fleet::{Fleet, FleetConfig};
//! use tower_connlimit::{Config, Limiter};
//!
//! let limiter = Limiter::new(Config::default());
//! let fleet = Fleet::join(&limiter, FleetConfig::new("redis://127.0.0.1:6379/", "node-a")).await?;
//! // A Redis Cluster, by some of its nodes:
//! // FleetConfig::cluster(["redis://10.0.0.1:7000/", "redis://10.0.0.2:7000/"], "node-a")
//! // Keep `fleet` for as long as the node is in the fleet; dropping it leaves.
//! # drop(fleet); Ok(()) }
//! ```
//!
//! # In Redis
//!
//! Keys, under the prefix `P` (default `connlimit`), hash-tagged so that what one sync sends for
//! one client or one ban shard lands on one Redis Cluster slot:
//!
//! | key | what |
//! |---|---|
//! | `{P:c:CLIENT}:r:RULE:WINDOW` | a counter of the fleet's events of one client under one rule in one window, expiring after two periods |
//! | `{P:bS}:ban:c:CLIENT`, `{P:bS}:ban:n:NETWORK` | a ban in force (its end, origin node and reason), expiring at its end; after a lift, the lift, kept 24 h; `S` is one of 16 shards |
//! | `{P:bS}:ends` | the shard's bans by end (a sorted set) |
//! | `{P:bS}:log` | the shard's bans and lifts (a stream), kept for 60 s; a node away longer reads the shard whole |
//! | `{P:bS}:epoch` | the shard's epoch: a random id, set once |
//! | `{P:meta}:node:NAME` | the instance holding a node name, renewed four times per TTL |
//! | `{P:meta}:nodes` | a hash of each node's heartbeat, `"at syncs errors"` (Redis's milliseconds, its syncs, its failed syncs), written and read with the name's renewal, so that each node's status lists every node (`FleetStatus::nodes`); a node silent for 60 TTLs is taken out |
//! | `{P:meta}:bans:seq` | a counter every publishing sync raises: while it stands still, nodes read no log (but every tenth sync) |
//!
//! Keys hold client keys (an address, or a network such as `2001:db8::/64`), node names and
//! ban reasons, no request data. The commands are plain Redis 7.0 commands (`INCRBY`,
//! `PEXPIRE … NX`, `SET … PXAT`, `SET … GET`, `ZADD GT`, `XADD … MINID`, exclusive
//! `XRANGE`), with no scripts; Valkey serves them too (not tested here: Debian bookworm packages
//! no Valkey). Give Redis `maxmemory-policy noeviction` (or leave `maxmemory` unset): an
//! evicting policy may drop ban keys, which live nodes keep but a node joining later would not
//! learn. AUTH goes in the URL (`redis://user:password@host/`); TLS (`rediss://`) needs the
//! `redis-tls` feature, and [`FleetConfig::ca_file`] for a private CA. Redis Sentinel is not
//! supported: give the master's address behind a name that follows failovers, or use a cluster.
//!
//! With `redis-tls`, the fleet installs rustls's ring provider as the process default when no
//! provider is installed yet, so that a build with several providers never panics; install
//! your own first to use another.

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
use crate::error::ConfigError;
use crate::limiter::Limiter;
pub use crate::limiter::{FleetError, FleetStatus};

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
