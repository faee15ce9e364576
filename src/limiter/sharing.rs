//! What a limiter shares with the other limiters of a fleet, and takes from them: the bans it
//! decides (of clients and of networks, with their reasons), and the events its rate rules
//! admit, gathered for a sync task to send; the bans and the events other nodes decided,
//! applied; and the fleet's status, which the sync task writes and [`Limiter::stats`] reads.
//! The core names no transport: an integration (the `fleet` module, over Redis) drives these
//! from a task of its own, so admission never waits for it. Nothing here runs unless a fleet is
//! joined.
// Only the fleet (feature `redis`) drives the sharing side.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::{stripes, FleetStatus, Limiter};
use crate::ban::BanReason;
use crate::cidr::Cidr;
use crate::clock::nanos;
use crate::key::ClientKey;
use crate::limits::Limits;
use crate::rate::RateLimit;

/// What a ban is on: one client key, or a network the operator banned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Banned {
    Client(ClientKey),
    Network(Cidr),
}

impl fmt::Display for Banned {
    /// `c:192.0.2.1`, `c:2001:db8::/64`, `n:10.0.0.0/8`: the kind first, since a client key of
    /// a prefix reads like a network.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Banned::Client(key) => write!(f, "c:{key}"),
            Banned::Network(network) => write!(f, "n:{network}"),
        }
    }
}

impl FromStr for Banned {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        match s.split_once(':') {
            Some(("c", key)) => key.parse().map(Banned::Client).map_err(drop),
            Some(("n", network)) => network.parse().map(Banned::Network).map_err(drop),
            _ => Err(()),
        }
    }
}

/// A ban to tell the fleet about, or its lifting. What the ban is (its end and reason) is read
/// from the limiter when the note is taken, so that the fleet hears the ban in force then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BanNote {
    Banned(Banned),
    Unbanned(Banned),
}

/// A ban in force, as the fleet shares it: how long it has left, and why.
pub(crate) type BanSpec = (Duration, BanReason);

/// Where decisions leave what the fleet must hear, until the sync task takes it, and the
/// fleet's status.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Whether a fleet is joined: decisions leave nothing here otherwise.
    enabled: AtomicBool,
    inner: Mutex<Gathered>,
    /// Clients with rate events not yet sent, listed by the thread that admitted their first
    /// event since the last sync, in that thread's stripe: admissions on different threads
    /// never wait for each other here, and a client is listed once (its entry says so).
    active: [Mutex<Vec<ClientKey>>; stripes::STRIPES],
    /// Where the node stands with the fleet, as the sync task last wrote it.
    status: Mutex<FleetStatus>,
    /// When the last sync succeeded (clock nanoseconds, plus one; 0: never).
    last_sync: AtomicU64,
}

/// What was gathered since the last sync.
#[derive(Debug, Default)]
struct Gathered {
    bans: Vec<BanNote>,
}

/// Locks `mutex`, which is only ever assigned whole values: a panic elsewhere leaves it usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Outbox {
    #[inline]
    pub(super) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(super) fn ban(&self, note: BanNote) {
        if self.enabled() {
            lock(&self.inner).bans.push(note);
        }
    }

    /// Notes that `key` has events to send (called on its first event since the last sync).
    pub(super) fn active(&self, key: ClientKey) {
        lock(&self.active[stripes::stripe()]).push(key);
    }

    /// Takes every client listed since the last call.
    fn take_active(&self) -> Vec<ClientKey> {
        let mut active = Vec::new();
        for stripe in &self.active {
            active.append(&mut lock(stripe));
        }
        active
    }
}

/// A rate rule as the limiter numbers it under one config: `connect_rate` (0), `request_rate`
/// (1), or path rule `i` (2 + i). The fleet names rules by a stable id of its own.
pub(crate) type RuleId = usize;

/// The rule `id` names under `limits`.
pub(crate) fn rule(limits: &Limits, id: RuleId) -> Option<&RateLimit> {
    match id {
        0 => limits.connect_rate.as_ref(),
        1 => limits.request_rate.as_ref(),
        i => limits.path_rules.get(i - 2).map(|rule| &rule.rate),
    }
}

impl Limiter {
    /// Starts gathering what a fleet must hear, with `status` as the fleet's first status;
    /// returns whether it had already started (one fleet per limiter).
    pub(crate) fn start_sharing(&self, status: FleetStatus) -> bool {
        let outbox = &self.shared.outbox;
        if outbox.enabled.swap(true, Ordering::Relaxed) {
            return true;
        }
        *lock(&outbox.status) = status;
        outbox.last_sync.store(0, Ordering::Relaxed);
        false
    }

    /// Stops gathering, and drops what was gathered.
    pub(crate) fn stop_sharing(&self) {
        let outbox = &self.shared.outbox;
        outbox.enabled.store(false, Ordering::Relaxed);
        *lock(&outbox.inner) = Gathered::default();
        drop(outbox.take_active());
    }

    /// Takes the bans decided since the last call, each with the ban in force on it now
    /// (`None`: lifted, or over already), in the order they were decided.
    pub(crate) fn take_ban_notes(&self) -> Vec<(Banned, Option<BanSpec>)> {
        let notes = std::mem::take(&mut lock(&self.shared.outbox.inner).bans);
        notes
            .into_iter()
            .map(|note| match note {
                BanNote::Banned(banned) => (banned, self.ban_on(banned)),
                BanNote::Unbanned(banned) => (banned, None),
            })
            .collect()
    }

    /// The ban in force on `banned`, if any.
    pub(crate) fn ban_on(&self, banned: Banned) -> Option<BanSpec> {
        let now = self.now();
        match banned {
            Banned::Client(key) => {
                let found = self.shared.clients.get(&key)?;
                let record = &found.key().entry().record;
                let reason = BanReason::clone(&*record.ban_reason(now)?);
                let left = record.banned_until().saturating_sub(now);
                Some((Duration::from_nanos(left), reason))
            }
            Banned::Network(network) => self
                .banned_networks()
                .into_iter()
                .find(|(n, _)| *n == network)
                .map(|(_, ban)| (ban.left, ban.reason)),
        }
    }

    /// Every ban in force here: the networks', and the clients' that no network ban covers
    /// as long (those come with their network's).
    pub(crate) fn live_bans(&self) -> Vec<(Banned, BanSpec)> {
        let networks = self.banned_networks();
        let covered = |key: &ClientKey, left: Duration| {
            networks
                .iter()
                .any(|(network, ban)| ban.left >= left && super::clients::within(key, *network))
        };
        let clients = self
            .bans()
            .into_iter()
            .filter(|(key, ban)| !covered(key, ban.left))
            .map(|(key, ban)| (Banned::Client(key), (ban.left, ban.reason)));
        let networks = networks
            .iter()
            .map(|(network, ban)| (Banned::Network(*network), (ban.left, ban.reason.clone())));
        clients.chain(networks).collect()
    }

    /// Takes the rate events admitted under the config of `generation` since the last call:
    /// for each client, each rule's count.
    pub(crate) fn take_rate_events(&self, generation: u64) -> Vec<(ClientKey, Vec<(RuleId, u32)>)> {
        let active = self.shared.outbox.take_active();
        active
            .into_iter()
            .filter_map(|key| {
                let record = self.shared.clients.get(&key)?;
                let events = record.key().entry().record.take_unsent(generation);
                (!events.is_empty()).then_some((key, events))
            })
            .collect()
    }

    /// Takes back `n` events of `key` under rule `id` (config `generation`) that could not be
    /// sent, for the next sync: at most the rule's `events` (or its burst) are kept, so that an
    /// outage cannot make a client look busier than one node alone lets it be.
    pub(crate) fn keep_rate_events(&self, key: ClientKey, id: RuleId, n: u32, generation: u64) {
        let installed = self.installed();
        let Some(rule) = rule(&installed.limits, id) else {
            return;
        };
        let cap = rule.events.max(rule.burst);
        let relist = match self.shared.clients.get(&key) {
            Some(record) => record
                .key()
                .entry()
                .record
                .keep_unsent(id, n, cap, generation),
            None => false,
        };
        if relist {
            self.shared.outbox.active(key);
        }
    }

    /// Counts, for `key` and rule `id`, what the fleet's `total` for the rule's window
    /// `window` says the other nodes admitted, this node having just sent `sent` events into
    /// it: the ones not counted yet are counted now, as if they had just happened here.
    pub(crate) fn charge_fleet(
        &self,
        key: &ClientKey,
        id: RuleId,
        window: u64,
        total: u64,
        sent: u32,
    ) {
        let installed = self.installed();
        let Some(rule) = rule(&installed.limits, id) else {
            return;
        };
        if let Some(record) = self.shared.clients.get(key) {
            let now = self.now();
            let entry = record.key().entry();
            entry
                .record
                .charge_fleet(rule, id, window, total, sent, now, &installed.limits);
        }
    }

    /// Bans `banned` for `left` with `reason`, as another node decided: like [`Limiter::ban`]
    /// or [`Limiter::ban_network`], but neither told back to the fleet nor counted in
    /// `stats().bans` (the node that decided it counted it).
    pub(crate) fn apply_fleet_ban(&self, banned: Banned, left: Duration, reason: BanReason) {
        let now = self.now();
        let until = now.saturating_add(nanos(left));
        match banned {
            Banned::Client(key) => self.ban_key(key, now, until, reason),
            Banned::Network(network) => self.ban_network_until(network, now, until, reason),
        }
    }

    /// Lifts the ban on `banned`, as another node decided; not told back to the fleet.
    pub(crate) fn apply_fleet_unban(&self, banned: Banned) -> bool {
        match banned {
            Banned::Client(key) => self.unban_key(key),
            Banned::Network(network) => self.lift_network(network),
        }
    }

    /// Notes how a sync with the fleet went: whether it reached Redis.
    pub(crate) fn note_sync(&self, reached: bool) {
        let outbox = &self.shared.outbox;
        if reached {
            outbox.last_sync.store(self.now() + 1, Ordering::Relaxed);
        }
        let mut status = lock(&outbox.status);
        status.connected = reached;
        if reached {
            status.syncs += 1;
        }
    }

    /// Changes the fleet's status.
    pub(crate) fn update_fleet_status(&self, change: impl FnOnce(&mut FleetStatus)) {
        change(&mut lock(&self.shared.outbox.status));
    }

    /// Where the node stands with its fleet, when one is joined.
    pub(crate) fn fleet_status(&self) -> Option<FleetStatus> {
        let outbox = &self.shared.outbox;
        if !outbox.enabled() {
            return None;
        }
        let mut status = lock(&outbox.status).clone();
        let last_sync = outbox.last_sync.load(Ordering::Relaxed);
        status.last_sync_age = (last_sync != 0)
            .then(|| Duration::from_nanos(self.now().saturating_sub(last_sync - 1)));
        Some(status)
    }

    /// The limits in force and their generation, for the fleet's rule names.
    pub(crate) fn with_limits<R>(&self, f: impl FnOnce(&Limits) -> R) -> R {
        f(&self.installed().limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banned_reads_back_what_it_writes() {
        for text in [
            "c:192.0.2.1",
            "c:2001:db8::/64",
            "n:10.0.0.0/8",
            "n:2001:db8::/32",
        ] {
            let banned: Banned = text.parse().unwrap();
            assert_eq!(banned.to_string(), text);
        }
        for bad in ["192.0.2.1", "x:192.0.2.1", "c:nope", "n:10.0.0.1/8", ""] {
            assert!(bad.parse::<Banned>().is_err(), "{bad}");
        }
    }
}
