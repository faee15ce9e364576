//! [`FleetConfig`]: how a node joins a fleet, checked once at [`Fleet::join`](super::Fleet::join).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::redact;
use crate::error::ConfigError;

/// Where the fleet's Redis is: one server (or a managed endpoint that looks like one), or a
/// Redis Cluster by some of its nodes.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Endpoint {
    /// `redis://[user:password@]host[:port][/db]`, or `rediss://` for TLS (feature
    /// `redis-tls`).
    Server(String),
    /// A Redis Cluster's seed nodes, each a URL as for [`Endpoint::Server`] (with the same
    /// credentials): the client learns the rest of the cluster from them.
    Cluster(Vec<String>),
}

impl Endpoint {
    /// The URLs, as given.
    pub(super) fn urls(&self) -> &[String] {
        match self {
            Endpoint::Server(url) => std::slice::from_ref(url),
            Endpoint::Cluster(seeds) => seeds,
        }
    }

    /// The passwords in the URLs, to take out of anything printed.
    pub(super) fn secrets(&self) -> Vec<String> {
        self.urls()
            .iter()
            .filter_map(|u| redact::password(u))
            .collect()
    }
}

impl fmt::Debug for Endpoint {
    /// The URLs with their passwords as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls().iter().map(|u| redact::url(u)).collect();
        match self {
            Endpoint::Server(_) => f.debug_tuple("Server").field(&urls[0]).finish(),
            Endpoint::Cluster(_) => f.debug_tuple("Cluster").field(&urls).finish(),
        }
    }
}

impl fmt::Display for Endpoint {
    /// The URLs, comma-separated, with their passwords as `***`: fit for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let urls: Vec<String> = self.urls().iter().map(|u| redact::url(u)).collect();
        f.write_str(&urls.join(","))
    }
}

/// How a node joins a fleet. `Debug` shows URLs with their passwords as `***`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetConfig {
    /// The Redis (or Valkey) to meet on.
    pub redis: Endpoint,
    /// This node's name, unique in the fleet: letters, digits, `-`, `_` or `.`. A node registers
    /// it in Redis while it runs; [`Fleet::join`](super::Fleet::join) refuses a name another live
    /// node holds.
    pub node: String,
    /// What every key starts with, so that two fleets can share one Redis. Default `connlimit`.
    pub prefix: String,
    /// How often the node sends its news and hears the fleet's. Default 100 ms.
    pub sync_interval: Duration,
    /// How long one sync (and the first contact at join) may wait for Redis before it counts as
    /// failed. Default 1 s.
    pub sync_timeout: Duration,
    /// A PEM file of the CA certificates to trust for `rediss://` (feature `redis-tls`), for a
    /// Redis whose certificate no public CA signed. Without it, the Web PKI's roots.
    pub ca_file: Option<PathBuf>,
}

impl FleetConfig {
    /// Joining the Redis at `url` as `node`, with the default prefix and intervals.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> Self {
        FleetConfig::at(Endpoint::Server(url.into()), node.into())
    }

    /// Joining the Redis Cluster that `seeds` are nodes of, as `node`.
    pub fn cluster<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
        node: impl Into<String>,
    ) -> Self {
        let seeds = seeds.into_iter().map(Into::into).collect();
        FleetConfig::at(Endpoint::Cluster(seeds), node.into())
    }

    fn at(redis: Endpoint, node: String) -> Self {
        FleetConfig {
            redis,
            node,
            prefix: "connlimit".to_owned(),
            sync_interval: Duration::from_millis(100),
            sync_timeout: Duration::from_secs(1),
            ca_file: None,
        }
    }

    /// How long a node's name stays registered without a heartbeat: ten sync intervals, and
    /// at least 2 s.
    pub(super) fn name_ttl(&self) -> Duration {
        (self.sync_interval * 10).max(Duration::from_secs(2))
    }

    /// Checks the fields that need no Redis.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        for (field, value) in [("fleet.node", &self.node), ("fleet.prefix", &self.prefix)] {
            if !name_ok(value) {
                return Err(ConfigError::new(
                    field,
                    "must be 1 to 64 letters, digits, '-', '_' or '.'",
                ));
            }
        }
        let urls = self.redis.urls();
        if urls.is_empty() {
            return Err(ConfigError::new(
                "fleet.redis",
                "a cluster needs at least one seed node",
            ));
        }
        for url in urls {
            check_url(url)?;
        }
        if self.sync_interval < Duration::from_millis(1)
            || self.sync_interval > Duration::from_secs(60)
        {
            return Err(ConfigError::new(
                "fleet.sync_interval",
                "must be between 1 ms and 60 s",
            ));
        }
        if self.sync_timeout.is_zero() || self.sync_timeout > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "fleet.sync_timeout",
                "must be longer than zero and at most 60 s",
            ));
        }
        let tls = urls.iter().any(|url| url.starts_with("rediss://"));
        if self.ca_file.is_some() && !tls {
            return Err(ConfigError::new(
                "fleet.ca_file",
                "is for rediss:// URLs, and no URL is one",
            ));
        }
        if tls && !cfg!(feature = "redis-tls") {
            return Err(ConfigError::new(
                "fleet.redis",
                "rediss:// needs the `redis-tls` feature of tower-connlimit",
            ));
        }
        Ok(())
    }
}

/// Refuses the URL schemes the fleet cannot use, naming what it can.
fn check_url(url: &str) -> Result<(), ConfigError> {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    let refusal = match scheme {
        "redis" | "rediss" => return Ok(()),
        "redis+sentinel" | "rediss+sentinel" => {
            "Redis Sentinel is not supported: give the master's redis:// URL (behind a stable \
             address that follows failovers), or a Redis Cluster's seed nodes \
             (FleetConfig::cluster)"
        }
        "redis+cluster" | "rediss+cluster" => {
            "give a Redis Cluster's seed nodes as redis:// URLs to FleetConfig::cluster \
             (the server example: --redis-cluster URL,URL,...)"
        }
        "unix" | "redis+unix" => "a Unix socket is not supported: give a redis:// URL",
        _ => "must be a redis:// or rediss:// URL",
    };
    Err(ConfigError::new(
        "fleet.redis",
        format!("{}: {refusal}", redact::url(url)),
    ))
}

impl fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetConfig")
            .field("redis", &self.redis)
            .field("node", &self.node)
            .field("prefix", &self.prefix)
            .field("sync_interval", &self.sync_interval)
            .field("sync_timeout", &self.sync_timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_name_their_field_and_show_no_password() {
        let config = FleetConfig::new("redis://u:hunter2@127.0.0.1:6379/", "a");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(format!("{config:?}").contains("u:***@127.0.0.1"));
        assert_eq!(config.redis.to_string(), "redis://u:***@127.0.0.1:6379/");
        config.validate().unwrap();
        let cases = [
            (
                FleetConfig::new("redis+sentinel://:hunter2@h:26379/m", "a"),
                "fleet.redis",
            ),
            (
                FleetConfig::new("redis+cluster://h:7000", "a"),
                "fleet.redis",
            ),
            (FleetConfig::new("http://h", "a"), "fleet.redis"),
            (
                FleetConfig::cluster(Vec::<String>::new(), "a"),
                "fleet.redis",
            ),
            (FleetConfig::new("redis://h", "a b"), "fleet.node"),
            (FleetConfig::new("redis://h", ""), "fleet.node"),
            (
                FleetConfig {
                    ca_file: Some("ca.pem".into()),
                    ..FleetConfig::new("redis://h", "a")
                },
                "fleet.ca_file",
            ),
            (
                FleetConfig {
                    sync_interval: Duration::ZERO,
                    ..FleetConfig::new("redis://h", "a")
                },
                "fleet.sync_interval",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }
}
