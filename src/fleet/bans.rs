//! The fleet's bans in Redis, and what this node knows of them.
//!
//! Bans are spread over [`BAN_SHARDS`] shards by a hash of what is banned. Each shard has its
//! bans in force (a key per ban, expiring at its end, and a sorted set of them by end), a log
//! of its bans and lifts (a stream, kept for [`LOG_KEEP`]), and an epoch (a random id set once).
//!
//! - **Publishing** a ban writes its key, its place in the sorted set and a log event; a lift
//!   deletes both and logs it. What could not be written (Redis full, or away) is kept and
//!   written at a later sync.
//! - **Hearing** the fleet reads each shard's log from the last event seen; a node that has
//!   not read a shard for nearly as long as the log keeps (or never has) reads the shard's bans
//!   whole instead, then the log from where it stood.
//! - **Nothing but a lift lifts.** A ban missing from Redis is never read as "no ban": a node
//!   keeps every ban it has (its own, and those it learnt) until it ends or a lift event says
//!   so. A shard whose epoch is gone or changed was emptied (`FLUSHALL`, a restart without
//!   persistence, a failover to an empty replica): the node adopts the new epoch, reads what
//!   the shard has, and puts back every ban it knows that the shard lacks.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::keys::{Keys, BAN_SHARDS, LOG_KEEP};
use super::link::{Batch, Reply};
use super::value;
use crate::ban::BanReason;
use crate::limiter::sharing::{BanSpec, Banned};
use crate::limiter::Limiter;
use redis::Value;

/// The most bans (and lifts) one shard publishes in one sync; the rest wait for the next.
const PUBLISH_PER_SYNC: usize = 512;
/// The most log events read from one shard in one sync.
const READ_PER_SYNC: usize = 1000;
/// The most keys one `MGET` of a shard's bans asks for.
const MGET_CHUNK: usize = 500;
/// How often a node drops the ended bans from the sorted sets, and forgets the ended bans it
/// learnt.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// How long before the log forgets its events a node reads a shard whole instead.
const LOG_MARGIN: Duration = Duration::from_secs(10);
/// How long a lift stays in its shard (as the ban's key, marked lifted): a node that was away
/// for longer than the log keeps, but less than this, still hears of it when it reads the shard
/// whole.
const LIFT_KEEP: Duration = Duration::from_secs(24 * 3600);
/// Every how many syncs a node checks every shard's epoch and log, whatever the fleet's change
/// counter says. In between, it reads the logs only when the counter moved: a quiet fleet costs
/// a node one small read per sync, not two per shard.
const FULL_EVERY: u64 = 10;

/// A ban as the fleet shares it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Shared {
    /// When it ends, in Redis's milliseconds.
    end_ms: u64,
    /// The node that decided it.
    origin: String,
    /// Why, as text.
    reason: String,
}

/// `0|LIFTED_AT|NODE|`: the value of a lifted ban's key, kept for [`LIFT_KEEP`].
fn lift_record(now_ms: u64, node: &str) -> String {
    format!("0|{now_ms}|{node}|")
}

/// Whether a ban key's value says the ban was lifted.
fn is_lift(record: &str) -> bool {
    record.starts_with("0|")
}

impl Shared {
    /// `1|END|ORIGIN|REASON`: the value of a ban's key.
    fn encode(&self) -> String {
        format!("1|{}|{}|{}", self.end_ms, self.origin, self.reason)
    }

    fn decode(text: &str) -> Option<Shared> {
        let mut parts = text.splitn(4, '|');
        if parts.next()? != "1" {
            return None;
        }
        Some(Shared {
            end_ms: parts.next()?.parse().ok()?,
            origin: parts.next()?.to_owned(),
            reason: parts.next()?.to_owned(),
        })
    }
}

/// What this node knows of one shard.
#[derive(Debug)]
struct Shard {
    /// The epoch adopted; `None` before the first.
    epoch: Option<String>,
    /// The id of the last log event seen (`0-0`: none).
    last_id: String,
    /// When the log was last read whole up to `last_id`.
    read_at: Option<Instant>,
    /// Set when the shard must be read whole at the next sync.
    needs_snapshot: bool,
    /// Set when, after that read, the bans the shard lacks must be put back.
    restore: bool,
}

impl Shard {
    fn new() -> Self {
        Shard {
            epoch: None,
            last_id: "0-0".to_owned(),
            read_at: None,
            needs_snapshot: true,
            // At join: once the shard is read, the bans this node holds that it lacks are put
            // in (those it says were lifted are lifted here instead).
            restore: true,
        }
    }
}

/// Where the replies of one shard's commands are, in a sync's first round trip.
#[derive(Debug, Default)]
struct Asked {
    /// The shard's epoch, when the shard is read this sync.
    epoch: Option<usize>,
    /// The log's newest event and the banned subjects, for a whole read.
    snapshot: Option<(usize, usize)>,
    /// The log since `last_id`.
    log: Option<usize>,
    /// The bans and lifts published: each subject, what was sent, and its commands' replies.
    published: Vec<(Banned, Option<Shared>, [usize; 3])>,
}

/// A shard read whole: its number, the newest log id, and each `MGET` of its bans (the reply's
/// index, with the subjects asked for).
type Snapshot = (usize, String, Vec<(usize, Vec<Banned>)>);

/// What a sync's first round trip leaves to its second: epochs to set, and bans to read.
#[derive(Debug, Default)]
pub(super) struct FollowUp {
    /// Shards whose epoch must be set (`SET NX`, then `GET`): their replies' indices.
    epochs: Vec<(usize, usize, usize)>,
    /// Shards read whole.
    snapshots: Vec<Snapshot>,
    /// Shards whose logs are read because the change counter moved: their epoch and log.
    logs: Vec<(usize, usize, usize)>,
}

/// The fleet's bans as this node knows them, and what it has yet to publish.
#[derive(Debug)]
pub(super) struct BanBook {
    keys: Keys,
    node: String,
    /// This node's random id: its own log events are known by it.
    instance: String,
    shards: Vec<Shard>,
    /// The bans learnt from the fleet, with the node that decided each.
    learnt: HashMap<Banned, Shared>,
    /// Bans (`Some`) and lifts (`None`) to publish, in no particular order; the latest note
    /// about a subject replaces the one before.
    pending: HashMap<Banned, Option<Shared>>,
    /// This sync's first round trip, per shard.
    asked: Vec<Asked>,
    /// The fleet's change counter (`{P:meta}:bans:seq`, raised by every sync that publishes),
    /// as last read: `None` before the first read, `Some(None)` while it is missing.
    seq: Option<Option<i64>>,
    /// This sync's reading of the counter, and what it should say if only this node changed it.
    asked_seq: Option<(usize, Option<i64>)>,
    /// Syncs so far, for [`FULL_EVERY`].
    syncs: u64,
    /// Set when the next sync must read every shard.
    force_full: bool,
    last_prune: Option<Instant>,
    /// Counts for the status, taken at the end of each sync.
    pub(super) published: u64,
    pub(super) applied: u64,
}

impl BanBook {
    pub(super) fn new(keys: Keys, node: &str, instance: &str) -> Self {
        BanBook {
            keys,
            node: node.to_owned(),
            instance: instance.to_owned(),
            shards: (0..BAN_SHARDS).map(|_| Shard::new()).collect(),
            learnt: HashMap::new(),
            pending: HashMap::new(),
            asked: Vec::new(),
            seq: None,
            asked_seq: None,
            syncs: 0,
            force_full: true,
            last_prune: None,
            published: 0,
            applied: 0,
        }
    }

    /// Queues this node's ban (`Some`) or lift (`None`) of `banned`, decided now.
    pub(super) fn note(&mut self, banned: Banned, ban: Option<BanSpec>, now_ms: u64) {
        let shared = ban.map(|(left, reason)| Shared {
            end_ms: now_ms.saturating_add(millis(left)),
            origin: self.node.clone(),
            reason: reason.to_string(),
        });
        if shared.is_none() {
            self.learnt.remove(&banned);
        }
        self.pending.insert(banned, shared);
    }

    /// `ban` on `banned` as the fleet shares it: with the node that decided it, if learnt.
    fn as_shared(&self, banned: Banned, (left, reason): BanSpec, now_ms: u64) -> Shared {
        let origin = match self.learnt.get(&banned) {
            Some(learnt) => learnt.origin.clone(),
            None => self.node.clone(),
        };
        Shared {
            end_ms: now_ms.saturating_add(millis(left)),
            origin,
            reason: reason.to_string(),
        }
    }

    /// Adds the first round trip's commands: each shard's epoch, its log (or all its bans),
    /// and what this node publishes to it.
    pub(super) fn ask(&mut self, batch: &mut Batch, now_ms: u64) {
        let prune = self.last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
        if prune {
            self.last_prune = Some(Instant::now());
            self.learnt.retain(|_, ban| ban.end_ms > now_ms);
        }
        let mut by_shard: Vec<Vec<(Banned, Option<Shared>)>> = vec![Vec::new(); BAN_SHARDS];
        for (banned, ban) in &self.pending {
            let list = &mut by_shard[Keys::shard_of(banned)];
            if list.len() < PUBLISH_PER_SYNC {
                list.push((*banned, ban.clone()));
            }
        }
        let keys = &self.keys;
        for shard in &mut self.shards {
            if shard
                .read_at
                .is_some_and(|at| at.elapsed() + LOG_MARGIN >= LOG_KEEP)
            {
                shard.needs_snapshot = true;
            }
        }
        let full = std::mem::take(&mut self.force_full)
            || self.syncs % FULL_EVERY == 0
            || self.shards.iter().any(|shard| shard.needs_snapshot);
        self.syncs += 1;
        let publishes = by_shard.iter().any(|list| !list.is_empty());
        self.asked = Vec::with_capacity(BAN_SHARDS);
        for (s, publishing) in by_shard.into_iter().enumerate() {
            let shard = &mut self.shards[s];
            let log = keys.log(s);
            let mut asked = Asked::default();
            if !full {
                // Read only if the change counter says so, in the second round trip.
            } else if shard.needs_snapshot {
                asked.epoch = Some(batch.push(&log, cmd("GET").arg(keys.epoch(s)).clone()));
                let top = cmd("XREVRANGE")
                    .arg(&log)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .clone();
                let members = cmd("ZRANGE")
                    .arg(keys.ends(s))
                    .arg(format!("({now_ms}"))
                    .arg("+inf")
                    .arg("BYSCORE")
                    .clone();
                asked.snapshot = Some((batch.push(&log, top), batch.push(&log, members)));
            } else {
                asked.epoch = Some(batch.push(&log, cmd("GET").arg(keys.epoch(s)).clone()));
                asked.log = Some(batch.push(&log, read_log(&log, &shard.last_id)));
            }
            let keep_from = now_ms.saturating_sub(millis(LOG_KEEP));
            for (banned, ban) in publishing {
                let subject = banned.to_string();
                let key = keys.ban(s, &banned);
                let mut event = cmd("XADD");
                event
                    .arg(&log)
                    .arg("MINID")
                    .arg("~")
                    .arg(keep_from)
                    .arg("*");
                // The key holds the ban until its end, or the lift for `LIFT_KEEP`; the sorted
                // set lists it until then.
                let (record, until_ms) = match &ban {
                    Some(ban) => {
                        event.arg("op").arg("ban").arg("s").arg(&subject);
                        event.arg("e").arg(ban.end_ms).arg("n").arg(&ban.origin);
                        event.arg("r").arg(&ban.reason);
                        (ban.encode(), ban.end_ms.max(1))
                    }
                    None => {
                        event
                            .arg("op")
                            .arg("lift")
                            .arg("s")
                            .arg(&subject)
                            .arg("n")
                            .arg(&self.node);
                        let until = now_ms.saturating_add(millis(LIFT_KEEP));
                        (lift_record(now_ms, &self.node), until)
                    }
                };
                event.arg("i").arg(&self.instance);
                let set = cmd("SET")
                    .arg(&key)
                    .arg(record)
                    .arg("PXAT")
                    .arg(until_ms)
                    .clone();
                let index = cmd("ZADD")
                    .arg(keys.ends(s))
                    .arg("GT")
                    .arg(until_ms)
                    .arg(&subject)
                    .clone();
                let replies = [
                    batch.push(&log, set),
                    batch.push(&log, index),
                    batch.push(&log, event),
                ];
                asked.published.push((banned, ban, replies));
            }
            if prune {
                let ended = cmd("ZREMRANGEBYSCORE")
                    .arg(keys.ends(s))
                    .arg("-inf")
                    .arg(now_ms)
                    .clone();
                batch.push(&log, ended);
            }
            self.asked.push(asked);
        }
        let seq_key = keys.bans_seq();
        let last = self.seq.flatten();
        let expected = if publishes {
            batch.push(&seq_key, cmd("INCR").arg(&seq_key).clone());
            Some(last.unwrap_or(0) + 1)
        } else {
            last
        };
        let read = batch.push(&seq_key, cmd("GET").arg(&seq_key).clone());
        self.asked_seq = Some((read, expected));
    }

    /// Takes in the first round trip's replies (`replies`, read at `read_at`): applies the
    /// events heard, notes what was published, and says what the second round trip must do.
    pub(super) fn heard(
        &mut self,
        replies: &[Reply],
        limiter: &Limiter,
        now_ms: u64,
        read_at: Instant,
        batch: &mut Batch,
    ) -> FollowUp {
        let mut follow_up = FollowUp::default();
        let mut emptied = Vec::new();
        let asked = std::mem::take(&mut self.asked);
        for (s, asked) in asked.into_iter().enumerate() {
            for (banned, sent, [a, b, c]) in asked.published {
                let written = [a, b, c]
                    .iter()
                    .all(|&i| matches!(replies.get(i), Some(Ok(_))));
                if written && self.pending.get(&banned) == Some(&sent) {
                    self.pending.remove(&banned);
                    self.published += 1;
                }
            }
            let Some(Some(Ok(epoch))) = asked.epoch.map(|i| replies.get(i)) else {
                // Not read this time, or nothing is known of the shard: its reads are not
                // trusted either.
                continue;
            };
            if self.check_epoch(s, value::text(epoch), batch, &mut follow_up) {
                emptied.push(s);
            }
            if let Some(Some(Ok(events))) = asked.log.map(|i| replies.get(i)) {
                self.take_log(s, events, limiter, now_ms, read_at);
            }
            if let Some((top, members)) = asked.snapshot {
                if let (Some(Ok(top)), Some(Ok(members))) = (replies.get(top), replies.get(members))
                {
                    let top = value::entries(top)
                        .into_iter()
                        .next()
                        .map_or_else(|| "0-0".to_owned(), |(id, _)| id);
                    let subjects: Vec<Banned> = value::items(members)
                        .iter()
                        .filter_map(|m| value::text(m)?.parse().ok())
                        .collect();
                    let gets = subjects
                        .chunks(MGET_CHUNK)
                        .map(|chunk| {
                            let mut mget = cmd("MGET");
                            for banned in chunk {
                                mget.arg(self.keys.ban(s, banned));
                            }
                            (batch.push(self.keys.log(s), mget), chunk.to_vec())
                        })
                        .collect();
                    follow_up.snapshots.push((s, top, gets));
                }
            }
        }
        if let Some((read, expected)) = self.asked_seq.take() {
            match replies.get(read) {
                Some(Ok(seq)) => {
                    let seq = value::int(seq);
                    // Another node published (or the counter is gone): its events may have
                    // come after this sync's reads, so the logs are read again now.
                    if seq != expected {
                        self.read_logs(batch, &mut follow_up);
                    }
                    self.seq = Some(seq);
                }
                _ => self.force_full = true,
            }
        }
        if !emptied.is_empty() {
            tracing::warn!(
                shards = ?emptied,
                "the fleet's Redis lost ban shards (emptied, restarted without its data, or failed \
                 over to an empty replica): this node keeps every ban it knows and puts back those \
                 the shards lack"
            );
        }
        follow_up
    }

    /// Adds, to the second round trip, every shard's epoch and log since the last event seen.
    fn read_logs(&self, batch: &mut Batch, follow_up: &mut FollowUp) {
        for (s, shard) in self.shards.iter().enumerate() {
            if shard.needs_snapshot {
                continue;
            }
            let log = self.keys.log(s);
            let epoch = batch.push(&log, cmd("GET").arg(self.keys.epoch(s)).clone());
            let events = batch.push(&log, read_log(&log, &shard.last_id));
            follow_up.logs.push((s, epoch, events));
        }
    }

    /// Applies shard `s`'s log events (`events`, as `XRANGE` answered, read at `read_at`).
    fn take_log(
        &mut self,
        s: usize,
        events: &Value,
        limiter: &Limiter,
        now_ms: u64,
        read_at: Instant,
    ) {
        let events = value::entries(events);
        for (id, fields) in &events {
            self.apply_event(fields, limiter, now_ms);
            self.shards[s].last_id.clone_from(id);
        }
        // A full batch leaves more to read: the log was read up to `last_id`, not to now.
        if events.len() < READ_PER_SYNC {
            self.shards[s].read_at = Some(read_at);
        }
    }

    /// Compares shard `s`'s epoch in Redis (`epoch`) with the one adopted; whether the shard
    /// was emptied or replaced since.
    fn check_epoch(
        &mut self,
        s: usize,
        epoch: Option<String>,
        batch: &mut Batch,
        follow_up: &mut FollowUp,
    ) -> bool {
        let shard = &mut self.shards[s];
        let emptied = match (&shard.epoch, &epoch) {
            (Some(adopted), Some(epoch)) if adopted == epoch => return false,
            (adopted, _) => adopted.is_some(),
        };
        if emptied {
            shard.needs_snapshot = true;
            shard.restore = true;
        }
        if epoch.is_none() {
            let log = self.keys.log(s);
            let set = cmd("SET")
                .arg(self.keys.epoch(s))
                .arg(new_id())
                .arg("NX")
                .clone();
            let get = cmd("GET").arg(self.keys.epoch(s)).clone();
            follow_up
                .epochs
                .push((s, batch.push(&log, set), batch.push(&log, get)));
        }
        shard.epoch = epoch;
        emptied
    }

    /// Takes in the second round trip's replies: the epochs set, and the shards read whole.
    pub(super) fn followed_up(
        &mut self,
        follow_up: FollowUp,
        replies: &[Reply],
        limiter: &Limiter,
        now_ms: u64,
        read_at: Instant,
    ) {
        for (s, _, get) in follow_up.epochs {
            if let Some(Ok(epoch)) = replies.get(get) {
                self.shards[s].epoch = value::text(epoch);
            }
        }
        for (s, epoch, events) in follow_up.logs {
            let epoch = replies
                .get(epoch)
                .and_then(|r| r.as_ref().ok())
                .and_then(value::text);
            match (epoch, replies.get(events)) {
                // The epoch it had: the log goes on from where it stood.
                (Some(epoch), Some(Ok(events)))
                    if self.shards[s].epoch.as_ref() == Some(&epoch) =>
                {
                    self.take_log(s, events, limiter, now_ms, read_at);
                }
                // Emptied, replaced, or not read: the next sync looks at every shard.
                _ => self.force_full = true,
            }
        }
        let mut live: Option<Vec<(Banned, BanSpec)>> = None;
        let mut restored = 0;
        for (s, top, gets) in follow_up.snapshots {
            let mut found = HashMap::new();
            let mut lifted = HashSet::new();
            let mut complete = true;
            for (index, subjects) in gets {
                let Some(Ok(values)) = replies.get(index) else {
                    complete = false;
                    continue;
                };
                for (banned, record) in subjects.into_iter().zip(value::items(values)) {
                    let Some(record) = value::text(record) else {
                        continue;
                    };
                    if is_lift(&record) {
                        lifted.insert(banned);
                    } else if let Some(shared) = Shared::decode(&record) {
                        found.insert(banned, shared);
                    }
                }
            }
            for (banned, shared) in &found {
                self.apply_ban(*banned, shared.clone(), limiter, now_ms);
            }
            for banned in &lifted {
                self.apply_lift(*banned, limiter);
            }
            if !complete {
                continue;
            }
            let shard = &mut self.shards[s];
            shard.last_id = top;
            shard.read_at = Some(read_at);
            shard.needs_snapshot = false;
            if std::mem::take(&mut shard.restore) {
                let live = live.get_or_insert_with(|| limiter.live_bans());
                restored += self.restore(s, &found, &lifted, live, now_ms);
            }
        }
        if restored > 0 {
            tracing::info!(
                restored,
                "published the bans this node holds that the fleet's Redis lacked"
            );
        }
    }

    /// Queues for publishing every ban in force here (`live`) that belongs to shard `s` and that
    /// the shard (`found`) lacks or has ending sooner, and that it does not say was lifted
    /// (`lifted`); how many.
    fn restore(
        &mut self,
        s: usize,
        found: &HashMap<Banned, Shared>,
        lifted: &HashSet<Banned>,
        live: &[(Banned, BanSpec)],
        now_ms: u64,
    ) -> usize {
        let mut restored = 0;
        for (banned, ban) in live {
            if Keys::shard_of(banned) != s || lifted.contains(banned) {
                continue;
            }
            let shared = self.as_shared(*banned, ban.clone(), now_ms);
            let held = found
                .get(banned)
                .is_some_and(|f| f.end_ms + 1000 >= shared.end_ms);
            if !held {
                self.pending.entry(*banned).or_insert(Some(shared));
                restored += 1;
            }
        }
        restored
    }

    /// Applies one log event, unless this node wrote it.
    fn apply_event(&mut self, fields: &[(String, String)], limiter: &Limiter, now_ms: u64) {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if field("i") == Some(self.instance.as_str()) {
            return;
        }
        let Some(banned) = field("s").and_then(|s| s.parse::<Banned>().ok()) else {
            return;
        };
        match field("op") {
            Some("ban") => {
                let Some(end_ms) = field("e").and_then(|e| e.parse().ok()) else {
                    return;
                };
                let shared = Shared {
                    end_ms,
                    origin: field("n").unwrap_or_default().to_owned(),
                    reason: field("r").unwrap_or_default().to_owned(),
                };
                self.apply_ban(banned, shared, limiter, now_ms);
            }
            Some("lift") => self.apply_lift(banned, limiter),
            _ => {}
        }
    }

    /// Applies a lift the fleet has heard of.
    fn apply_lift(&mut self, banned: Banned, limiter: &Limiter) {
        // A ban this node made and has yet to publish is newer than the lift.
        if matches!(self.pending.get(&banned), Some(Some(_))) {
            return;
        }
        let learnt = self.learnt.remove(&banned).is_some();
        if limiter.apply_fleet_unban(banned) || learnt {
            self.applied += 1;
        }
    }

    /// Applies a ban the fleet has, unless this node has it already, as long.
    fn apply_ban(&mut self, banned: Banned, shared: Shared, limiter: &Limiter, now_ms: u64) {
        if shared.end_ms <= now_ms {
            return;
        }
        if self
            .learnt
            .get(&banned)
            .is_some_and(|known| known.end_ms >= shared.end_ms)
        {
            return;
        }
        let left = Duration::from_millis(shared.end_ms - now_ms);
        if shared.origin != self.node || !self.is_own(banned, left, limiter) {
            limiter.apply_fleet_ban(banned, left, BanReason::given(&shared.reason));
            self.applied += 1;
        }
        self.learnt.insert(banned, shared);
    }

    /// Whether this node holds a ban on `banned` of at least `left` already (its own, read back
    /// from the fleet).
    fn is_own(&self, banned: Banned, left: Duration, limiter: &Limiter) -> bool {
        limiter
            .ban_on(banned)
            .is_some_and(|(held, _)| held + Duration::from_secs(1) >= left)
    }
}

fn cmd(name: &str) -> redis::Cmd {
    redis::cmd(name)
}

/// `XRANGE` of `log` after `last_id`.
fn read_log(log: &str, last_id: &str) -> redis::Cmd {
    cmd("XRANGE")
        .arg(log)
        .arg(format!("({last_id}"))
        .arg("+")
        .arg("COUNT")
        .arg(READ_PER_SYNC)
        .clone()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A random id (epochs, instances): 128 bits from the process's random hasher seeds and the
/// time.
pub(super) fn new_id() -> String {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let a = foldhash::fast::RandomState::default().hash_one(now);
    let b = foldhash::fast::RandomState::default().hash_one((now, std::process::id()));
    format!("{a:016x}{b:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ban_record_reads_back() {
        let shared = Shared {
            end_ms: 1_700_000_000_123,
            origin: "node-a".to_owned(),
            reason: "scraping | /login".to_owned(),
        };
        assert_eq!(Shared::decode(&shared.encode()), Some(shared));
        assert_eq!(Shared::decode("2|1|a|b"), None);
        assert_eq!(Shared::decode("1|x|a|b"), None);
        assert_ne!(new_id(), new_id());
    }
}
