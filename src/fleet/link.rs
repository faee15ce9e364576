//! The connection to the fleet's Redis, one server or a Redis Cluster, and the one way a sync
//! talks to it: a batch of commands, sent pipelined, each answered on its own, so that one
//! refused command (a write to a full Redis) fails only itself.
//!
//! On a cluster a pipeline must stay on one slot: the batch is split by slot (the keys' hash
//! tags keep what belongs together on one), and the slots' pipelines are sent concurrently.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Value};

use super::config::{Endpoint, FleetConfig};
use super::failure::{Failure, Kind};
use super::keys;
use crate::error::ConfigError;

/// The longest pause the connection manager makes between reconnection tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How many slots' pipelines are in flight at once on a cluster.
const SLOTS_IN_FLIGHT: usize = 32;

/// One command of a batch, with the key that decides its slot.
#[derive(Debug)]
pub(super) struct Command {
    key: String,
    cmd: Cmd,
}

impl Command {
    /// `cmd`, on the slot of `key` (its first key).
    pub(super) fn new(key: impl Into<String>, cmd: Cmd) -> Self {
        Command {
            key: key.into(),
            cmd,
        }
    }
}

/// The commands of one round trip, each pushed with the index its reply will have.
#[derive(Debug, Default)]
pub(super) struct Batch {
    commands: Vec<Command>,
}

impl Batch {
    /// Adds `cmd`, on the slot of `key`; the index of its reply.
    pub(super) fn push(&mut self, key: impl Into<String>, cmd: Cmd) -> usize {
        self.commands.push(Command::new(key, cmd));
        self.commands.len() - 1
    }
}

/// What one command got back.
pub(super) type Reply = Result<Value, Failure>;

/// The connection to the fleet's Redis.
pub(super) struct Link {
    conn: Conn,
    timeout: Duration,
    /// The passwords of the URLs, taken out of every failure's text.
    secrets: Vec<String>,
}

enum Conn {
    Server(ConnectionManager),
    /// A cluster's client, and its connection once made (boxed: the client is large, and
    /// only one link exists per fleet).
    Cluster(Box<ClusterClient>, Option<ClusterConnection>),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.conn {
            Conn::Server(_) => "server",
            Conn::Cluster(..) => "cluster",
        };
        f.debug_struct("Link").field("kind", &kind).finish()
    }
}

impl Link {
    /// A link to `config`'s Redis, connecting on first use and reconnecting after a failure.
    ///
    /// # Errors
    ///
    /// A URL the client cannot use, or a CA file that cannot be read.
    pub(super) fn open(config: &FleetConfig) -> Result<Link, ConfigError> {
        let secrets = config.redis.secrets();
        let refused = |err: redis::RedisError| {
            let text = super::redact::scrub(&err.to_string(), &secrets, super::failure::MAX_TEXT);
            ConfigError::new("fleet.redis", format!("{}: {text}", config.redis))
        };
        #[cfg(feature = "redis-tls")]
        let certificates = match &config.ca_file {
            Some(path) => Some(super::tls::certificates(path)?),
            None => None,
        };
        #[cfg(feature = "redis-tls")]
        super::tls::ensure_crypto_provider();
        let timeout = config.sync_timeout;
        let conn = match &config.redis {
            Endpoint::Server(url) => {
                #[cfg(feature = "redis-tls")]
                let client = match certificates {
                    Some(certs) => redis::Client::build_with_tls(url.as_str(), certs),
                    None => redis::Client::open(url.as_str()),
                };
                #[cfg(not(feature = "redis-tls"))]
                let client = redis::Client::open(url.as_str());
                let client = client.map_err(refused)?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(MAX_BACKOFF);
                let manager =
                    ConnectionManager::new_lazy_with_config(client, manager).map_err(refused)?;
                Conn::Server(manager)
            }
            Endpoint::Cluster(seeds) => {
                let builder = ClusterClient::builder(seeds.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1);
                #[cfg(feature = "redis-tls")]
                let builder = match certificates {
                    Some(certs) => builder.certs(certs),
                    None => builder,
                };
                Conn::Cluster(Box::new(builder.build().map_err(refused)?), None)
            }
        };
        Ok(Link {
            conn,
            timeout,
            secrets,
        })
    }

    /// Sends `commands` and returns each one's reply, in order, within the sync timeout.
    pub(super) async fn run(&mut self, batch: Batch) -> Vec<Reply> {
        let commands = batch.commands;
        if commands.is_empty() {
            return Vec::new();
        }
        let n = commands.len();
        let timeout = self.timeout;
        let secrets = self.secrets.clone();
        match tokio::time::timeout(timeout, self.send(commands, &secrets)).await {
            Ok(replies) => replies,
            Err(_) => {
                let text = format!("no answer within {timeout:?}");
                vec![Err(Failure::new(Kind::Timeout, &text, &secrets)); n]
            }
        }
    }

    /// Sends `commands`: one pipeline to a server, one per slot to a cluster.
    async fn send(&mut self, commands: Vec<Command>, secrets: &[String]) -> Vec<Reply> {
        let n = commands.len();
        match &mut self.conn {
            Conn::Server(manager) => {
                let answer = pipeline(commands.iter()).query_async(manager).await;
                replies(answer, n, secrets)
            }
            Conn::Cluster(client, conn) => {
                let conn = match conn {
                    Some(conn) => conn.clone(),
                    None => match client.get_async_connection().await {
                        Ok(made) => conn.insert(made).clone(),
                        Err(err) => return vec![Err(Failure::of(&err, secrets)); n],
                    },
                };
                send_by_slot(conn, commands, secrets).await
            }
        }
    }
}

/// Each command's reply from a pipeline's `answer` (for `n` commands): its value, the error it
/// got, or the pipeline's own failure.
fn replies(answer: redis::RedisResult<Vec<Value>>, n: usize, secrets: &[String]) -> Vec<Reply> {
    match answer {
        Ok(values) => values
            .into_iter()
            .map(|value| match value {
                Value::ServerError(err) => Err(Failure::new(
                    Kind::of_server(&err),
                    &err.to_string(),
                    secrets,
                )),
                value => Ok(value),
            })
            .collect(),
        Err(err) => vec![Err(Failure::of(&err, secrets)); n],
    }
}

/// A pipeline of `commands` that answers each on its own.
fn pipeline<'a>(commands: impl Iterator<Item = &'a Command>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for command in commands {
        pipe.add_command(command.cmd.clone());
    }
    pipe
}

/// Sends `commands` to a cluster, one pipeline per slot, and puts the replies back in order.
/// Every slot's commands are answered; a slot whose commands were redirected (`MOVED`, `ASK`) is asked once more with a single
/// command, which the cluster client follows and learns the new slot map from.
async fn send_by_slot(
    conn: ClusterConnection,
    commands: Vec<Command>,
    secrets: &[String],
) -> Vec<Reply> {
    let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, command) in commands.iter().enumerate() {
        by_slot.entry(keys::slot(&command.key)).or_default().push(i);
    }
    let commands = &commands;
    let answered: Vec<_> = stream::iter(by_slot.into_values())
        .map(|indices| {
            let mut conn = conn.clone();
            async move {
                let pipe = pipeline(indices.iter().map(|&i| &commands[i]));
                let answer: redis::RedisResult<Vec<Value>> = pipe.query_async(&mut conn).await;
                if matches!(&answer, Ok(values) if values.iter().any(is_redirect)) {
                    let nudge = redis::cmd("EXISTS").arg(&commands[indices[0]].key).clone();
                    let _: redis::RedisResult<Value> = nudge.query_async(&mut conn).await;
                }
                (indices, answer)
            }
        })
        .buffer_unordered(SLOTS_IN_FLIGHT)
        .collect()
        .await;
    let mut all: Vec<Option<Reply>> = (0..commands.len()).map(|_| None).collect();
    for (indices, answer) in answered {
        let n = indices.len();
        for (i, reply) in indices.into_iter().zip(replies(answer, n, secrets)) {
            all[i] = Some(reply);
        }
    }
    all.into_iter()
        .map(|reply| reply.unwrap_or(Ok(Value::Nil)))
        .collect()
}

fn is_redirect(value: &Value) -> bool {
    matches!(value, Value::ServerError(err) if matches!(err.code(), "MOVED" | "ASK"))
}
