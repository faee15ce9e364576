//! Admission: the one function that decides and counts.

use std::cell::OnceCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry as MapSlot;

use super::entry::{Entry, Record, Tally};
use super::gate::{Denial, Event, Route, SideEffects};
use super::hot::Hot;
use super::permit::AddressCount;
use super::permit::Release;
use super::{stripes, Kind, Limiter, PointId};
use crate::cidr_table::Overlap;
use crate::fair_share::Budget;
use crate::key::ClientKey;
use crate::keys::RequestKey;
use crate::limits::Limits;
use crate::rate::RateLimit;
use crate::reason::{RejectReason, Rejected};

/// A decision's admission: the client's entry, and how the unit stands to the global count.
/// Made into a [`Release`] at once, which releases it.
struct Admitted {
    entry: Arc<Entry>,
    tally: Tally,
}

impl Limiter {
    /// The one admission decision. Reads the config once, finds the client's entry (making it on
    /// the client's first visit), and under the entry's map shard's *read* lock checks a ban and
    /// the rate rules (each a compare-and-swap on the rule's state), then the per-client
    /// limit and a place under the global cap, counting the client only if every check passed.
    /// Nothing is counted unless every check passes, so a refused attempt never makes the totals
    /// look higher to concurrent callers. Returns the admission, ready to be released.
    #[inline]
    pub(super) fn admit(
        &self,
        ip: IpAddr,
        kind: Kind,
        route: Option<Route<'_>>,
        point: PointId,
    ) -> Result<Release, Rejected> {
        // The common case, on the hot settings alone (`hot.rs`) and with no lock: no global cap
        // in force and no path rule to match, a client with an entry, a limit worked out under
        // the config in force, no exempt address and no ban, and no fleet to tell. The rate
        // rule of the decision's kind, if any, then one compare-and-swap on the client's count.
        if let Some(hot) = self.shared.hot.read(kind, route.is_some()) {
            let key = ClientKey::new(ip, hot.ipv4_prefix, hot.ipv6_prefix);
            if let Some(decided) = self.admit_hot(&hot, key, kind, point) {
                return decided;
            }
        }
        self.admit_on_config(ip, kind, route, point)
    }

    /// The common case on the hot settings `hot`, for the client `key`; `None` when it needs
    /// the whole config. Always inlined: returned through memory, its nested result cost a
    /// store-forwarding stall per admission (a fifth of a refusal's time).
    #[inline(always)]
    fn admit_hot(
        &self,
        hot: &Hot,
        key: ClientKey,
        kind: Kind,
        point: PointId,
    ) -> Option<Result<Release, Rejected>> {
        let shared = &*self.shared;
        // The shard's read lock is held while `found` lives: no await, no second map call.
        let found = shared.clients.get(&key)?;
        let entry = found.key().entry();
        let limit = entry.plain_limit(hot.generation)?;
        if !shared.hot.still(hot) {
            return None;
        }
        // With a fleet joined, a rated decision goes the whole way (its events are shared):
        // the clock is not read here, to be read there.
        let admits = |(rule, interval): (RateLimit, u64)| {
            !shared.outbox.enabled() && entry.record.admits(kind, &rule, interval, self.now())
        };
        if !hot.rule().is_none_or(admits) {
            return None;
        }
        let limit = match kind {
            Kind::Connection => limit,
            Kind::Request => hot.max_requests_per_client,
        };
        if !entry.try_count(kind, limit, Tally::Outside) {
            drop(found);
            let reason = kind.client_limit_reason();
            return Some(Err(self.refuse_decided(kind, point, &key, reason, None)));
        }
        let release = Release::new(Arc::clone(entry), kind, point, Tally::Outside);
        drop(found);
        self.count_admitted(&key, kind, point);
        Some(Ok(release))
    }

    /// Every other case, on the whole config: rate rules, a ban, a global cap, an exempt client,
    /// a client seen for the first time, a config not yet seen by the client's entry.
    #[inline(never)]
    fn admit_on_config(
        &self,
        ip: IpAddr,
        kind: Kind,
        route: Option<Route<'_>>,
        point: PointId,
    ) -> Result<Release, Rejected> {
        let installed = self.shared.config.load();
        let limits = &installed.limits;
        let mut key = limits.key(ip);
        match self.decide(ip, &mut key, limits, kind, route) {
            Ok(Admitted { entry, tally }) => {
                // Made first, so that nothing after it can leave a count behind.
                let slot = Release::new(entry, kind, point, tally);
                self.count_admitted(&key, kind, point);
                Ok(slot)
            }
            Err((reason, wait)) => Err(self.refuse_decided(kind, point, &key, reason, wait)),
        }
    }

    /// Admits a request from `ip` keyed by `key` on the whole config: its address first (a ban,
    /// and the limits on keyed requests per address when set), then the key, on its tier's
    /// limits. The address's count, if taken, is given back when the key refuses.
    pub(super) fn admit_keyed(
        &self,
        ip: IpAddr,
        key: &RequestKey,
        route: Option<Route<'_>>,
        point: PointId,
    ) -> Result<(Release, Option<AddressCount>), Rejected> {
        let kind = Kind::Request;
        let shared = &*self.shared;
        // The common case: no tiers and no limits per address, a key that names no tier, and
        // no ban anywhere yet. The key is then decided as an address is, on the hot settings.
        let no_ban = !shared.any_network_ban.load(Ordering::Relaxed)
            && !shared.tallies.any_ban.load(Ordering::Relaxed);
        if key.tier_name().is_none() && no_ban {
            if let Some(hot) = shared.hot.read(kind, route.is_some()) {
                if hot.keys_plain {
                    let decided = self.admit_hot(&hot, key.client_key(), kind, point);
                    if let Some(decided) = decided {
                        return decided.map(|slot| (slot, None));
                    }
                }
            }
        }
        let installed = self.shared.config.load();
        let limits = &installed.limits;
        let keyed = limits.keyed();
        let (address_limits, limited) = keyed.address();
        let mut address_key = limits.key(ip);
        // Without limits per address, only a ban of the address is looked for, and only in an
        // entry the address has already.
        let banned = || {
            let found = self.shared.clients.get(&address_key);
            found.is_some_and(|found| found.key().entry().may_be_banned())
        };
        // An address in a banned network may have no entry yet: deciding makes it, banned.
        let network_ban = shared.any_network_ban.load(Ordering::Relaxed);
        let address = if limited || network_ban || banned() {
            match self.decide(ip, &mut address_key, address_limits, kind, None) {
                Ok(Admitted { entry, .. }) => Some(AddressCount(entry)),
                Err((reason, wait)) => {
                    return Err(self.refuse_decided(kind, point, &address_key, reason, wait))
                }
            }
        } else {
            None
        };
        let (tier_limits, unknown_tier) = keyed.of(key, limits);
        if unknown_tier {
            self.unknown_tier(key);
        }
        let mut named = key.client_key();
        match self.decide(ip, &mut named, tier_limits, kind, route) {
            Ok(Admitted { entry, tally }) => {
                let slot = Release::new(entry, kind, point, tally);
                self.count_admitted(&named, kind, point);
                Ok((slot, address))
            }
            Err((reason, wait)) => Err(self.refuse_decided(kind, point, &named, reason, wait)),
        }
    }

    /// Logs, at most every 10 seconds, a key that named a tier the config does not have: it is
    /// held to the default tier.
    #[cold]
    fn unknown_tier(&self, key: &RequestKey) {
        if self
            .shared
            .counters
            .unknown_tier_logged
            .due(super::log::EVENT_LOG_PERIOD)
        {
            tracing::warn!(
                key = %key.client_key(),
                tier = ?key.tier_name(),
                "a request key named a tier the config does not have: held to the default tier"
            );
        }
    }

    /// Counts and logs an admission at `point`, once its slot is made.
    #[inline]
    fn count_admitted(&self, key: &ClientKey, kind: Kind, point: PointId) {
        let counters = self.shared.tallies.points.get(point);
        let sample = stripes::up(&counters.mine().admitted[kind as usize]);
        self.admitted(key, kind, counters, sample);
    }

    /// The one decision sequence on the whole config: find the client's entry (making it on the
    /// client's first visit, or a new config's first for its key; counting an exempt client
    /// under its exact address; making room in a full table), then decide under the entry's map
    /// shard's read lock.
    fn decide(
        &self,
        ip: IpAddr,
        key: &mut ClientKey,
        limits: &Limits,
        kind: Kind,
        route: Option<Route<'_>>,
    ) -> Result<Admitted, Denial> {
        let shared = &*self.shared;
        let exact = ClientKey::exact(ip);
        let named = key.fingerprint().is_some();
        let mut rooms_made = 0;
        // Bounded: each turn finds the entry, or changes the key (to the exact one, or to the
        // network's, each at most once), or inserts, or makes room at most `MAX_ROOMS` times.
        loop {
            // The shard's read lock is held only inside this block.
            if let Some(record) = shared.clients.get(key) {
                let entry = record.key().entry();
                let own = entry.own_limits(limits);
                let exempt = match own.exempt {
                    Overlap::None => false,
                    Overlap::Fully => true,
                    Overlap::Partly => limits.is_exempt(ip),
                };
                if exempt && *key != exact {
                    // An exempt client is counted under its exact address.
                    *key = exact;
                    continue;
                }
                let decision = Decision {
                    entry,
                    limit: own.limit,
                    exempt,
                    proxy: own.proxy,
                    limits,
                    kind,
                };
                return decision.run(self, key, route);
            }
            // The client's first visit (or a new config's first for its key). A named key is
            // no address: no exemption, no network.
            if !named && *key != exact && limits.is_exempt(ip) {
                *key = exact;
                continue;
            }
            let network = if named || (*key == exact && limits.is_exempt(ip)) {
                None
            } else {
                limits.network_of(key)
            };
            match self.insert(*key, limits.max_tracked_clients, network) {
                Inserted::Yes => {
                    self.ban_if_in_banned_network(*key);
                    continue;
                }
                Inserted::NetworkFull(network) => {
                    // The network holds its most keys: its further addresses share its key.
                    *key = network;
                    continue;
                }
                Inserted::TableFull => {}
            }
            // Full: make room (a few times at most, as racing newcomers may take it), then
            // try again.
            if self.make_room_within(&mut rooms_made, limits) {
                continue;
            }
            return Err((RejectReason::TrackedClientsFull, None));
        }
    }

    /// Makes room in a full table, at most [`MAX_ROOMS`] times for one admission (racing
    /// newcomers may take the room made): `rooms_made` counts them. Whether it made room; a
    /// search that finds nothing to forget is not repeated, so that the refusal stays cheap.
    fn make_room_within(&self, rooms_made: &mut usize, limits: &Limits) -> bool {
        if *rooms_made == MAX_ROOMS {
            return false;
        }
        *rooms_made += 1;
        self.make_room(limits.when_full, self.now())
    }

    /// Counts and logs a refusal the decision made, and says it to the caller.
    #[cold]
    #[inline(never)]
    fn refuse_decided(
        &self,
        kind: Kind,
        point: PointId,
        key: &ClientKey,
        reason: RejectReason,
        wait: Option<u64>,
    ) -> Rejected {
        self.refused(kind, point, reason as usize, reason.info(), Some(key));
        Rejected {
            reason,
            retry_after: wait.map(Duration::from_nanos),
        }
    }

    /// Puts an empty entry for `key` in the map, if none is there, reserving its place under
    /// `max_tracked_clients` (0: no limit) and, with `network`, among the network's keys first.
    pub(super) fn insert(
        &self,
        key: ClientKey,
        max_tracked_clients: usize,
        network: Option<(ClientKey, usize)>,
    ) -> Inserted {
        let shared = &*self.shared;
        if let Some((network, cap)) = network {
            if !self.join_network(network, cap) {
                return Inserted::NetworkFull(network);
            }
        }
        let network_prefix = network.map_or(0, |(network, _)| network.prefix_len());
        let leave = |limiter: &Limiter| {
            if network_prefix != 0 {
                limiter.leave_network(&key, network_prefix);
            }
        };
        if !reserve(&shared.tracked, max_tracked_clients) {
            leave(self);
            return Inserted::TableFull;
        }
        let entry = Arc::new(Entry::new(key, network_prefix, Arc::clone(&shared.tallies)));
        match shared.clients.entry(Record(Arc::clone(&entry))) {
            MapSlot::Vacant(vacant) => {
                // On the roster before anyone can find it in the map, and so before anyone can
                // forget it (`forget_if` takes it off the roster after taking it out of the map).
                shared.roster.add(&entry);
                vacant.insert(());
            }
            MapSlot::Occupied(_) => {
                // Another admission made it first.
                shared.tracked.fetch_sub(1, Ordering::Relaxed);
                leave(self);
            }
        }
        Inserted::Yes
    }
}

/// How many times one admission makes room in a full table before it gives up.
const MAX_ROOMS: usize = 3;

/// What [`Limiter::insert`] did.
pub(super) enum Inserted {
    /// The key has an entry (this call's or a racing one's).
    Yes,
    /// The table holds `max_tracked_clients`.
    TableFull,
    /// The key's network holds its most keys: the network's own key, to use instead.
    NetworkFull(ClientKey),
}

/// What one decision is about: the client's entry and its limit for the event, and the config.
struct Decision<'a> {
    entry: &'a Arc<Entry>,
    /// The client's connection limit (0: none); the request limit is in `limits`.
    limit: usize,
    exempt: bool,
    /// A trusted proxy speaks for other clients: its *connections* carry every client's
    /// requests, so they are counted (and held to the global cap) but never limited per client,
    /// nor by a connect rate or a ban; the clients it names are limited instead, under their own
    /// keys. Its *requests* are another matter: a request counted under the proxy's own key is
    /// one it named no client for, and it is held to the ordinary per-client limits, as nginx's
    /// `realip` does, never exempt.
    proxy: bool,
    limits: &'a Limits,
    kind: Kind,
}

impl Decision<'_> {
    /// The client's static cap for this event (0: none): its guaranteed share under fair share.
    #[inline]
    fn static_limit(&self) -> usize {
        match self.kind {
            Kind::Connection => self.limit,
            Kind::Request => self.limits.max_requests_per_client,
        }
    }

    /// The limit for this event (0: none), with the budget's use at `held`: the static cap, or
    /// under fair share the ceiling or the fair level (`FairShare`).
    #[inline]
    fn limit(&self, limiter: &Limiter, budget: &Budget, held: usize) -> usize {
        if self.exempt || self.proxy_connection() {
            return 0;
        }
        if !budget.fair {
            return self.static_limit();
        }
        budget.limit(self.static_limit(), held, limiter.fair_level(self.kind))
    }

    /// Whether this is a trusted proxy's connection, which no per-client limit applies to.
    #[inline]
    fn proxy_connection(&self) -> bool {
        self.proxy && self.kind == Kind::Connection
    }

    /// How this event stands to its kind's global count: in it while the config counts it;
    /// apart from it for a keyed request's address, whose request is counted under its key.
    #[inline]
    fn tally(&self) -> Tally {
        if self.limits.counts_total(self.kind) {
            Tally::InTotal
        } else if self.limits.lookups.apart {
            Tally::Apart
        } else {
            Tally::Outside
        }
    }

    /// Whether a ban or a rate rule must be checked.
    #[inline]
    fn gated(&self) -> bool {
        !self.exempt
            && !self.proxy_connection()
            && (self.limits.has_rates() || self.entry.may_be_banned())
    }

    /// The decision: a ban and the rate rules (for `route`, when known) on the client's record,
    /// then the client's count, then a place in the global count; none of them takes a lock.
    /// Counts and logs what the checks noticed besides the verdict.
    fn run(
        &self,
        limiter: &Limiter,
        key: &ClientKey,
        route: Option<Route<'_>>,
    ) -> Result<Admitted, Denial> {
        if self.gated() {
            let mut fx = SideEffects::default();
            let checked = self.check_gate(limiter, key, route, &mut fx);
            if fx.any() {
                limiter.record(key, &fx);
            }
            checked?;
        }
        let (entry, kind, tally) = (self.entry, self.kind, self.tally());
        let budget = self.limits.budget(kind);
        let total = &entry.tallies.total[kind as usize];
        // Read only under fair share, whose limit depends on how full the budget is.
        let held = if budget.fair {
            total.load(Ordering::Relaxed)
        } else {
            0
        };
        let limit = self.limit(limiter, budget, held);
        if !entry.try_count(kind, limit, tally) {
            return Err(self.refused_by_limit(budget, held, limit));
        }
        if tally == Tally::InTotal {
            let cap = if self.exempt { 0 } else { budget.total };
            if !reserve(total, cap) {
                entry.uncount(kind, Tally::InTotal);
                if budget.fair {
                    // Under its share (its limit let it in), and the budget full.
                    entry.mark_wanting(kind);
                    if kind == Kind::Connection && self.limits.reclaims() {
                        limiter.ask_back();
                    }
                }
                return Err((kind.total_reason(), None));
            }
        }
        Ok(Admitted {
            entry: Arc::clone(entry),
            tally,
        })
    }

    /// Why the client's count refused at `limit`, with the budget's use at `held`: its static
    /// cap or ceiling, or, under contention, its fair share (the client then wants more than
    /// it holds, which the next fair level hears of).
    #[cold]
    fn refused_by_limit(&self, budget: &Budget, held: usize, limit: usize) -> Denial {
        if !budget.fair {
            return (self.kind.client_limit_reason(), None);
        }
        self.entry.mark_wanting(self.kind);
        let share_ceiling = budget.ceiling.max(self.static_limit());
        if held >= budget.watermark && limit < share_ceiling {
            (RejectReason::FairShare, None)
        } else {
            (self.kind.client_limit_reason(), None)
        }
    }

    /// The ban and the rate rules on the client's record.
    fn check_gate(
        &self,
        limiter: &Limiter,
        key: &ClientKey,
        route: Option<Route<'_>>,
        fx: &mut SideEffects,
    ) -> Result<(), Denial> {
        // The clock is read at most once per decision, and only if a rule needs it.
        let reading = OnceCell::new();
        let now = || *reading.get_or_init(|| limiter.now());
        let outbox = &limiter.shared.outbox;
        let event = Event {
            limits: self.limits,
            kind: self.kind,
            route,
            key,
            now: &now,
            // Events under a tier's rules (or a keyed request's address's) are not shared: a
            // fleet counts by the config's own rules. A key held to those is shared as an
            // address is, under its fingerprint.
            sharing: (outbox.enabled() && !self.limits.lookups.derived).then_some(outbox),
        };
        let entry = self.entry;
        let checked = entry.record.check(&event, fx);
        if fx.banned || fx.ban_over {
            entry.mark_banned(fx.banned);
        }
        checked
    }
}

/// Adds one to `total` unless that would pass `cap` (0 = no cap). A compare-and-swap loop, so
/// racing callers can never push the count past the cap, even for an instant.
#[inline]
pub(super) fn reserve(total: &AtomicUsize, cap: usize) -> bool {
    if cap == 0 {
        total.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    total
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < cap).then_some(n + 1)
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_respects_the_cap() {
        let total = AtomicUsize::new(0);
        assert!(reserve(&total, 2));
        assert!(reserve(&total, 2));
        assert!(!reserve(&total, 2));
        assert_eq!(total.load(Ordering::Relaxed), 2);
        assert!(reserve(&total, 0));
        assert_eq!(total.load(Ordering::Relaxed), 3);
    }
}
