//! What a limiter shares with the other limiters of a fleet, and takes from them: the bans it
//! decides, and the events its rate rules admit, gathered for a sync task to send; the bans and
//! the events other nodes decided, applied. The core names no transport: an integration (the
//! `fleet` module, over Redis) drives these from a task of its own, so admission never waits
//! for it. Nothing here runs unless a fleet is joined.
// Only the fleet (feature `redis`) drives the sharing side.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::Limiter;
use crate::ban::BanReason;
use crate::clock::nanos;
use crate::key::ClientKey;
use crate::limits::Limits;
use crate::rate::RateLimit;

/// A ban to tell the fleet about, or its lifting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BanNote {
    /// Banned until this reading of the limiter's clock (nanoseconds).
    Banned(ClientKey, u64),
    Unbanned(ClientKey),
}

/// Where decisions leave what the fleet must hear, until the sync task takes it.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Whether a fleet is joined: decisions leave nothing here otherwise.
    enabled: AtomicBool,
    inner: Mutex<Gathered>,
    /// How the syncs go, for `stats()`.
    connected: AtomicBool,
    /// When the last sync succeeded (clock nanoseconds, plus one; 0: never).
    last_sync: AtomicU64,
    sync_errors: AtomicU64,
}

/// What was gathered since the last sync.
#[derive(Debug, Default)]
struct Gathered {
    bans: Vec<BanNote>,
    /// Clients with rate events not yet sent.
    active: HashSet<ClientKey>,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, Gathered> {
        // Pushes and takes only: a panic elsewhere leaves it usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    #[inline]
    pub(super) fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(super) fn ban(&self, note: BanNote) {
        if self.enabled() {
            self.lock().bans.push(note);
        }
    }

    /// Notes that `key` has events to send (called on its first event since the last sync).
    pub(super) fn active(&self, key: ClientKey) {
        self.lock().active.insert(key);
    }
}

/// A rate rule as the fleet names it: `connect_rate` (0), `request_rate` (1), or path rule
/// `i` (2 + i).
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
    /// Starts gathering what a fleet must hear; returns whether it had already started (one
    /// fleet per limiter).
    pub(crate) fn start_sharing(&self) -> bool {
        self.shared.outbox.enabled.swap(true, Ordering::Relaxed)
    }

    /// Stops gathering, and drops what was gathered.
    pub(crate) fn stop_sharing(&self) {
        let outbox = &self.shared.outbox;
        outbox.enabled.store(false, Ordering::Relaxed);
        *outbox.lock() = Gathered::default();
    }

    /// Takes the bans decided since the last call, each with the time it has left (`None`:
    /// lifted). Bans already over are left out.
    pub(crate) fn take_ban_notes(&self) -> Vec<(ClientKey, Option<Duration>)> {
        let notes = std::mem::take(&mut self.shared.outbox.lock().bans);
        let now = self.now();
        notes
            .into_iter()
            .filter_map(|note| match note {
                BanNote::Banned(key, until) => {
                    (until > now).then(|| (key, Some(Duration::from_nanos(until - now))))
                }
                BanNote::Unbanned(key) => Some((key, None)),
            })
            .collect()
    }

    /// Takes the rate events admitted since the last call: for each client, each rule's count.
    pub(crate) fn take_rate_events(&self) -> Vec<(ClientKey, Vec<(RuleId, u32)>)> {
        let active = std::mem::take(&mut self.shared.outbox.lock().active);
        active
            .into_iter()
            .filter_map(|key| {
                let record = self.shared.clients.get(&key)?;
                let events = record.key().entry().gate().take_unsent();
                (!events.is_empty()).then_some((key, events))
            })
            .collect()
    }

    /// Counts, for `key` and rule `id`, the events the other nodes admitted in the rule's
    /// current window (`window`), as the fleet last saw them: the ones not counted yet are
    /// counted now, as if they had just happened here.
    pub(crate) fn charge_others(&self, key: &ClientKey, id: RuleId, window: u64, others: u32) {
        let installed = self.installed();
        let Some(rule) = rule(&installed.limits, id) else {
            return;
        };
        if let Some(record) = self.shared.clients.get(key) {
            let now = self.now();
            let entry = record.key().entry();
            entry
                .gate()
                .charge_others(rule, id, window, others, now, &installed.limits);
        }
    }

    /// Bans `key` for `left`, as another node decided: like [`Limiter::ban`], but not told back
    /// to the fleet.
    pub(crate) fn apply_fleet_ban(&self, key: ClientKey, left: Duration) {
        let now = self.now();
        let reason = BanReason::Given(Arc::from("banned by another node of the fleet"));
        self.ban_key(key, now, now.saturating_add(nanos(left)), reason);
    }

    /// Lifts the ban on `key`, as another node decided; not told back to the fleet.
    pub(crate) fn apply_fleet_unban(&self, key: ClientKey) -> bool {
        self.unban_key(key)
    }

    /// The period of rule `id` under the config in force.
    pub(crate) fn rule_period(&self, id: RuleId) -> Option<Duration> {
        rule(&self.installed().limits, id).map(|rule| rule.period)
    }

    /// Notes how a sync with the fleet went, for [`Limiter::stats`].
    pub(crate) fn note_sync(&self, succeeded: bool) {
        let outbox = &self.shared.outbox;
        outbox.connected.store(succeeded, Ordering::Relaxed);
        if succeeded {
            outbox.last_sync.store(self.now() + 1, Ordering::Relaxed);
        } else {
            outbox.sync_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// How the syncs with the fleet go, when one is joined.
    pub(crate) fn fleet_health(&self) -> Option<super::FleetHealth> {
        let outbox = &self.shared.outbox;
        if !outbox.enabled() {
            return None;
        }
        let last_sync = outbox.last_sync.load(Ordering::Relaxed);
        let now = self.now();
        Some(super::FleetHealth {
            connected: outbox.connected.load(Ordering::Relaxed),
            last_sync_age: (last_sync != 0)
                .then(|| Duration::from_nanos(now.saturating_sub(last_sync - 1))),
            sync_errors: outbox.sync_errors.load(Ordering::Relaxed),
        })
    }
}
