//! The fleet's one task per limiter: every sync interval, one pipelined round trip to Redis
//! that publishes this node's bans and rate events and reads back the fleet's, and a second one
//! when the fleet's bans changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Value};

use super::status::{self, FleetStatus};
use super::FleetConfig;
use crate::key::ClientKey;
use crate::limiter::Limiter;

/// How often an outage is logged again while it lasts.
const REMINDER: Duration = Duration::from_secs(60);
/// The longest pause between tries while Redis is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the task remembers between syncs.
struct State {
    /// Bans (and lifts) to publish: kept until a sync succeeds.
    pending: HashMap<ClientKey, Option<Duration>>,
    /// The fleet's bans this node knows of, by their end in Redis's milliseconds.
    known: HashMap<ClientKey, u64>,
    /// The fleet's ban version when last read; `None` forces a read.
    ban_version: Option<u64>,
    /// Redis's clock in milliseconds at an instant of ours, from the last `TIME`.
    redis_clock: Option<(u64, Instant)>,
    /// Since when Redis has been unreachable, and when that was last logged.
    down: Option<(Instant, Instant)>,
    /// Consecutive failed syncs, for the backoff.
    failures: u32,
}

impl State {
    /// Redis's clock now, in milliseconds, as estimated from the last `TIME`.
    fn redis_now_ms(&self) -> Option<u64> {
        self.redis_clock
            .map(|(ms, at)| ms.saturating_add(at.elapsed().as_millis() as u64))
    }
}

/// The keys of one fleet.
struct Keys<'a> {
    prefix: &'a str,
}

impl Keys<'_> {
    fn ban(&self, client: &str) -> String {
        format!("{}:ban:{client}", self.prefix)
    }
    fn bans(&self) -> String {
        format!("{}:bans", self.prefix)
    }
    fn version(&self) -> String {
        format!("{}:bans:version", self.prefix)
    }
    fn rate(&self, rule: usize, period_ms: u64, window: u64, client: &str) -> String {
        format!("{}:rate:{rule}:{period_ms}:{window}:{client}", self.prefix)
    }
}

pub(super) async fn run(
    limiter: Limiter,
    client: redis::Client,
    config: FleetConfig,
    status: Arc<Mutex<FleetStatus>>,
) {
    let manager = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(config.sync_timeout))
        .set_response_timeout(Some(config.sync_timeout))
        .set_number_of_retries(1)
        .set_max_delay(MAX_BACKOFF);
    let mut connection = match ConnectionManager::new_lazy_with_config(client, manager) {
        Ok(connection) => connection,
        Err(err) => {
            tracing::error!(%err, "cannot set up the fleet's Redis connection; deciding alone");
            status::lock(&status).last_error = Some(err.to_string());
            return;
        }
    };
    let mut state = State {
        pending: HashMap::new(),
        known: HashMap::new(),
        ban_version: None,
        redis_clock: None,
        down: None,
        failures: 0,
    };
    let mut first = true;
    loop {
        let pause = if state.failures == 0 {
            config.sync_interval
        } else {
            (config.sync_interval * 2u32.saturating_pow(state.failures.min(16))).min(MAX_BACKOFF)
        };
        if !first {
            tokio::time::sleep(pause).await;
        }
        first = false;
        for (key, left) in limiter.take_ban_notes() {
            state.pending.insert(key, left);
        }
        let synced = tokio::time::timeout(
            config.sync_timeout,
            sync_once(&limiter, &mut connection, &config, &mut state, &status),
        )
        .await;
        let error = match synced {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!("no answer within {:?}", config.sync_timeout)),
        };
        match error {
            None => on_success(&limiter, &mut state, &status),
            Some(error) => on_failure(&limiter, &mut state, &status, error),
        }
    }
}

fn on_success(limiter: &Limiter, state: &mut State, status: &Mutex<FleetStatus>) {
    state.failures = 0;
    limiter.note_sync(true);
    if let Some((since, _)) = state.down.take() {
        tracing::info!(
            after = ?since.elapsed(),
            "the fleet's Redis is back: publishing this node's bans, reading the fleet's"
        );
        republish(limiter, state);
    }
    let mut status = status::lock(status);
    status.syncs += 1;
    status.last_error = None;
}

fn on_failure(limiter: &Limiter, state: &mut State, status: &Mutex<FleetStatus>, error: String) {
    state.failures = state.failures.saturating_add(1);
    limiter.note_sync(false);
    // Rate events gathered while down are not shared: each node enforces its own limits.
    drop(limiter.take_rate_events());
    match &mut state.down {
        None => {
            tracing::warn!(
                %error,
                "cannot reach the fleet's Redis: this node decides alone until it is back"
            );
            state.down = Some((Instant::now(), Instant::now()));
        }
        Some((since, reminded)) if reminded.elapsed() >= REMINDER => {
            tracing::warn!(%error, down_for = ?since.elapsed(), "the fleet's Redis is still unreachable");
            *reminded = Instant::now();
        }
        Some(_) => {}
    }
    // What the fleet said may have changed meanwhile: read it all again when back.
    state.ban_version = None;
    status::lock(status).last_error = Some(error);
}

/// Queues this node's live bans for publishing, after an outage.
fn republish(limiter: &Limiter, state: &mut State) {
    for (key, ban) in limiter.bans() {
        state.pending.entry(key).or_insert(Some(ban.left));
    }
}

async fn sync_once(
    limiter: &Limiter,
    connection: &mut ConnectionManager,
    config: &FleetConfig,
    state: &mut State,
    status: &Mutex<FleetStatus>,
) -> RedisResult<()> {
    let keys = Keys {
        prefix: &config.prefix,
    };
    let node = config.node.as_str();
    let now_ms = match state.redis_now_ms() {
        Some(now) => now,
        None => {
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(connection).await?;
            let now = secs * 1000 + micros / 1000;
            state.redis_clock = Some((now, Instant::now()));
            now
        }
    };
    let mut pipe = redis::pipe();
    // This node's bans and lifts.
    let publishing: Vec<(ClientKey, Option<Duration>)> =
        state.pending.iter().map(|(k, v)| (*k, *v)).collect();
    for (key, left) in &publishing {
        let client = key.to_string();
        match left {
            Some(left) => {
                let ms = (left.as_millis() as u64).max(1);
                pipe.cmd("SET")
                    .arg(keys.ban(&client))
                    .arg(node)
                    .arg("PX")
                    .arg(ms)
                    .ignore();
                pipe.cmd("ZADD")
                    .arg(keys.bans())
                    .arg(now_ms + ms)
                    .arg(&client)
                    .ignore();
            }
            None => {
                pipe.cmd("DEL").arg(keys.ban(&client)).ignore();
                pipe.cmd("ZREM").arg(keys.bans()).arg(&client).ignore();
            }
        }
    }
    if !publishing.is_empty() {
        pipe.cmd("INCR").arg(keys.version()).ignore();
    }
    pipe.cmd("ZREMRANGEBYSCORE")
        .arg(keys.bans())
        .arg("-inf")
        .arg(now_ms)
        .ignore();
    // This node's rate events, and the fleet's counts for the same clients and rules.
    let events = limiter.take_rate_events();
    let mut asked = Vec::new();
    for (key, rules) in &events {
        let client = key.to_string();
        for &(rule, n) in rules {
            let Some(period) = limiter.rule_period(rule) else {
                continue;
            };
            let period_ms = (period.as_millis() as u64).max(1);
            let window = now_ms / period_ms;
            let hash = keys.rate(rule, period_ms, window, &client);
            pipe.cmd("HINCRBY").arg(&hash).arg(node).arg(n).ignore();
            pipe.cmd("PEXPIRE")
                .arg(&hash)
                .arg(period_ms.saturating_mul(2))
                .ignore();
            pipe.cmd("HGETALL").arg(&hash);
            asked.push((*key, rule, window));
        }
    }
    pipe.cmd("GET").arg(keys.version());
    pipe.cmd("TIME");
    let mut answers: Vec<Value> = pipe.query_async(connection).await?;
    let time = answers.pop();
    let version = answers.pop();
    // Published: the fleet has them now.
    let published = publishing.len() as u64;
    for (key, left) in publishing {
        state.pending.remove(&key);
        match left {
            Some(left) => {
                state
                    .known
                    .insert(key, now_ms + (left.as_millis() as u64).max(1));
            }
            None => {
                state.known.remove(&key);
            }
        }
    }
    for ((key, rule, window), counts) in asked.into_iter().zip(answers) {
        let counts: HashMap<String, u64> = redis::from_redis_value(counts).unwrap_or_default();
        let others: u64 = counts
            .iter()
            .filter(|(name, _)| name.as_str() != node)
            .map(|(_, n)| *n)
            .sum();
        limiter.charge_others(
            &key,
            rule,
            window,
            u32::try_from(others).unwrap_or(u32::MAX),
        );
    }
    if let Some(time) = time {
        if let Ok((secs, micros)) = redis::from_redis_value::<(u64, u64)>(time) {
            state.redis_clock = Some((secs * 1000 + micros / 1000, Instant::now()));
        }
    }
    let version: Option<u64> = version.and_then(|v| redis::from_redis_value(v).ok());
    let mut applied = 0;
    if state.ban_version.is_none() || version != state.ban_version {
        let now_ms = state.redis_now_ms().unwrap_or(now_ms);
        let bans: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys.bans())
            .arg(format!("({now_ms}"))
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(connection)
            .await?;
        applied = apply_bans(limiter, state, bans, now_ms);
        state.ban_version = Some(version.unwrap_or(0));
    }
    let mut status = status::lock(status);
    status.bans_published += published;
    status.bans_applied += applied;
    Ok(())
}

/// Brings this node's bans in line with the fleet's (`bans`, each client with the end of its
/// ban); returns how many bans and lifts it applied.
fn apply_bans(limiter: &Limiter, state: &mut State, bans: Vec<(String, f64)>, now_ms: u64) -> u64 {
    let mut applied = 0;
    let mut in_force = HashMap::new();
    for (client, end) in bans {
        let Ok(key) = client.parse::<ClientKey>() else {
            continue;
        };
        let end = end as u64;
        in_force.insert(key, end);
        if state.known.get(&key) != Some(&end) {
            limiter.apply_fleet_ban(key, Duration::from_millis(end.saturating_sub(now_ms)));
            applied += 1;
        }
    }
    for (key, end) in std::mem::take(&mut state.known) {
        if !in_force.contains_key(&key) && end > now_ms {
            // Lifted before its end, by another node.
            limiter.apply_fleet_unban(key);
            applied += 1;
        }
    }
    state.known = in_force;
    applied
}
