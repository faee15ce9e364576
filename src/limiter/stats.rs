//! [`Stats`], [`PointStats`], [`ByReason`] and [`ClientStats`]: what the limiter has seen.

use std::ops::Index;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::entry::Entry;
use super::points::PointCounters;
use super::{stripes, Kind, Limiter};
use crate::key::ClientKey;
use crate::limiter::AdmissionPoint;
use crate::reason::RejectReason;

/// A snapshot of a [`Limiter`]'s counters; see [`Limiter::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections holding a permit now.
    pub open_connections: usize,
    /// Requests holding a permit now.
    pub in_flight_requests: usize,
    /// Clients with an entry in the map: an open connection, an in-flight request, a rate or
    /// ban record that has not expired yet, or a visit since the last sweep (clients that left
    /// are forgotten within about a second; [`Limiter::purge_expired`] does it at once).
    pub tracked_clients: usize,
    /// Connections admitted since the limiter was created.
    pub admitted_connections: u64,
    /// Requests admitted since the limiter was created.
    pub admitted_requests: u64,
    /// Refusals since the limiter was created, by reason, at every point together.
    pub rejected: ByReason,
    /// Admitted connections the crate cut early, by cause: the listener's deadlines
    /// (`handshake_timeout`, `idle_timeout`, `min_receive_rate`) and the header timeout of
    /// `serve::Serve` (`header_timeout`). A connection refused before it was
    /// admitted (a late PROXY header: `proxy_header_timeout`) is in `rejected` instead.
    pub closed: ByReason,
    /// Requests a trusted proxy sent without naming a usable client (no header, too few
    /// entries, `unknown`, garbage): each was counted under the proxy's own address, or refused
    /// as `client_unidentified`, as
    /// [`ClientIpConfig::unidentified`](crate::client_ip::ClientIpConfig::unidentified) says. A count that
    /// keeps rising means a proxy route that does not set the header, or a client on the
    /// proxy's own host.
    pub unidentified_requests: u64,
    /// Refusals that dry-run rules (and dry-run ban policies) would have made, but let through.
    pub dry_run: u64,
    /// Bans this node imposed: by the ban policy, by [`Limiter::ban`], and one for each
    /// [`Limiter::ban_network`]. Bans applied from a fleet are counted in
    /// [`FleetStatus::bans_applied`] instead, so each ban is counted once, by the node that made it.
    pub bans: u64,
    /// Drained clients forgotten early to make room under `max_tracked_clients`: each may come
    /// back with a fresh record, so a rising count under a flood is worth an alert.
    pub evictions: u64,
    /// The same figures for each admission point in use, in the order they were registered: a
    /// point is registered when a listener or layer is built on the limiter (a
    /// [`ConnLimitLayer`](crate::ConnLimitLayer) brings both of its levels), and `direct` is
    /// always there. [`Stats::point`] finds one by name.
    pub points: Vec<PointStats>,
    /// With a fleet joined (feature `redis`), how the node's syncs with it go; `None` without.
    pub fleet: Option<FleetStatus>,
    /// With [`fair_share`](crate::config::FairShare) on, where each budget stands; `None` with
    /// it off.
    pub fair_share: Option<FairShareStats>,
}

/// Where fair share stands: [`Stats::fair_share`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FairShareStats {
    /// The connection budget, `max_conns_total` (all zeros without one).
    pub connections: BudgetStats,
    /// The request budget, `max_requests_total` (all zeros without one).
    pub requests: BudgetStats,
    /// Idle connections asked back from clients over their share, one for each client under
    /// its share that found the connection budget full.
    pub reclaims_asked: u64,
    /// Connections given back: the early closes `reclaimed_idle` (HTTP/1) and
    /// `reclaimed_goaway` (HTTP/2) in [`Stats::closed`].
    pub reclaimed: u64,
}

/// One global budget under fair share: [`FairShareStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetStats {
    /// The budget.
    pub budget: usize,
    /// How much of it is held now.
    pub held: usize,
    /// Held at or above this, the budget is contended.
    pub watermark: usize,
    /// The most one client may hold while there is room.
    pub ceiling: usize,
    /// The fair level at the last walk: under contention, a client may take more only while it
    /// holds less (or less than its static cap). `None` while every client's demand fits.
    pub level: Option<usize>,
    /// Clients that held (or, for requests, wanted) more than the level at the last walk.
    pub over_share: usize,
}

/// Where a node stands with its fleet: [`Stats::fleet`], and the fleet module's
/// `Fleet::status()` (feature `redis`), which return the same record. The fleet's task writes
/// it after every sync; `last_sync_age` is worked out when it is read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStatus {
    /// This node's name in the fleet.
    pub node: String,
    /// Whether the last sync reached the fleet's Redis and had its answers.
    pub connected: bool,
    /// How long ago the last successful sync ended, if one did.
    pub last_sync_age: Option<Duration>,
    /// Syncs that reached Redis.
    pub syncs: u64,
    /// Syncs in which something failed: Redis unreachable or silent, or some of its commands
    /// refused (see `errors` for which kind).
    pub sync_errors: u64,
    /// Failures by kind (`connection`, `timeout`, `auth`, `oom`, `cluster`, `tls`, `other`),
    /// each listed from the start, zeros included.
    pub errors: Vec<FleetError>,
    /// Bans (and lifts) this node published to the fleet: its own, and those it put back into
    /// an emptied Redis.
    pub bans_published: u64,
    /// Bans (and lifts) this node applied from the fleet.
    pub bans_applied: u64,
    /// Set while another live node uses this node's name: what it says, with the name. Two
    /// nodes of one name count their events as one, doubling the fleet's rates.
    pub duplicate_name: Option<String>,
    /// Every node of the fleet as the last heartbeat read them from Redis (this one included,
    /// marked), by name: empty until the first heartbeat is read.
    pub nodes: Vec<FleetNode>,
}

/// One node of a fleet, as its heartbeats in Redis tell it: [`FleetStatus::nodes`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetNode {
    /// The node's name.
    pub node: String,
    /// Whether it is the node these stats are of.
    pub this_node: bool,
    /// Whether it heartbeated within the name's time to live (ten sync intervals).
    pub connected: bool,
    /// How long before the last read its last heartbeat was written, by Redis's clock.
    pub last_sync_age: Option<Duration>,
    /// Its syncs, as of its last heartbeat.
    pub syncs: u64,
    /// Its syncs in which something failed, as of its last heartbeat.
    pub sync_errors: u64,
}

impl FleetStatus {
    /// The failures of kind `kind`, if it is one the fleet counts.
    pub fn error(&self, kind: &str) -> Option<&FleetError> {
        self.errors.iter().find(|e| e.kind == kind)
    }
}

/// One kind of failure a fleet's syncs met: [`FleetStatus::errors`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetError {
    /// The kind, a stable name (also the `reason` label of `connlimit_fleet_errors_total`).
    pub kind: &'static str,
    /// Syncs in which a failure of this kind happened.
    pub count: u64,
    /// The last such failure, at most 1 KiB, with any password taken out.
    pub last: Option<String>,
}

impl FleetError {
    /// No failure of `kind` yet.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn new(kind: &'static str) -> Self {
        FleetError {
            kind,
            count: 0,
            last: None,
        }
    }
}

impl Stats {
    /// The figures of the admission point named `name` (`"listener"`, `"make_service"`,
    /// `"request_layer"`, `"direct"`), if it is in use.
    pub fn point(&self, name: &str) -> Option<&PointStats> {
        self.points.iter().find(|p| p.name == name)
    }
}

/// One admission point's figures; see [`Stats::point`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PointStats {
    /// The point's name: `listener`, `make_service`, `request_layer`, or `direct` (your own
    /// calls to the limiter).
    pub name: &'static str,
    /// The point, for the metric series.
    pub(crate) point: &'static AdmissionPoint,
    /// Connections admitted here and holding a permit now.
    pub open_connections: usize,
    /// Requests admitted here and holding a permit now.
    pub in_flight_requests: usize,
    /// Connections and requests admitted here since the limiter was created.
    pub admitted: u64,
    /// Connections and requests refused here since the limiter was created, by reason: the
    /// limiter's reasons, then the point's own.
    pub rejected: ByReason,
    /// Admitted connections this point closed early, by reason.
    pub closed: ByReason,
}

/// Counts by reason name, in a fixed order (for refusals: the limiter's
/// [`RejectReason`]s, then the points' own reasons). Every reason the points in use declare is
/// listed, zeros included; indexing by a name that is not listed panics, so a typo cannot read
/// as a zero.
///
/// ```
/// use tower_connlimit::{Config, Limiter, RejectReason};
///
/// let limiter = Limiter::new(Config { max_conns_per_client: 1, ..Config::default() });
/// let ip = "192.0.2.1".parse().unwrap();
/// let _held = limiter.try_acquire(ip).unwrap();
/// assert!(limiter.try_acquire(ip).is_err());
/// let rejected = limiter.stats().rejected;
/// assert_eq!(rejected[RejectReason::ClientConnections], 1);
/// assert_eq!(rejected["client_connections"], 1);
/// assert_eq!(rejected.total(), 1);
/// assert_eq!(rejected.get("proxy_untrusted"), None, "no listener in use");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ByReason {
    counts: Vec<(&'static str, u64)>,
}

impl ByReason {
    /// The count for the reason named `name`, if it is listed.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.counts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, count)| *count)
    }

    /// Every reason's name and count, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.counts.iter().copied()
    }

    /// All counts added up.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, count)| count).sum()
    }

    /// Adds `count` to the reason named `name`, listing it last if it is new.
    fn add(&mut self, name: &'static str, count: u64) {
        match self.counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => *sum += count,
            None => self.counts.push((name, count)),
        }
    }
}

impl Index<&str> for ByReason {
    type Output = u64;

    /// The count for the reason named by the index.
    ///
    /// # Panics
    ///
    /// When no reason of that name is listed: not one of the limiter's, nor one of the points'
    /// in use. [`ByReason::get`] returns `None` instead.
    fn index(&self, name: &str) -> &u64 {
        match self.counts.iter().find(|(n, _)| *n == name) {
            Some((_, count)) => count,
            None => panic!("no reason named {name:?} is counted here"),
        }
    }
}

impl Index<RejectReason> for ByReason {
    type Output = u64;

    fn index(&self, reason: RejectReason) -> &u64 {
        &self[reason.as_str()]
    }
}

/// One client's details; see [`Limiter::client`], [`Limiter::top_clients`] and
/// [`Limiter::clients`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// The client key.
    pub key: ClientKey,
    /// Connections this client holds open.
    pub open_connections: usize,
    /// Requests this client has in flight.
    pub in_flight_requests: usize,
    /// How much longer the client is banned, if it is.
    pub banned_for: Option<Duration>,
    /// How many times the ban policy has banned this client (counted while its record is kept;
    /// bans escalate with it).
    pub bans: u32,
    /// How much longer the limiter keeps this client's record (rate state, violations, bans)
    /// once it has nothing open; `None` when there is nothing to keep.
    pub remembered_for: Option<Duration>,
}

impl ClientStats {
    pub(super) fn new(entry: &Entry, now: u64) -> Self {
        let left = |until: u64| (until > now).then(|| Duration::from_nanos(until - now));
        let (open_connections, in_flight_requests) = entry.counts();
        let record = &entry.record;
        ClientStats {
            key: entry.key,
            open_connections,
            in_flight_requests,
            banned_for: left(record.banned_until()),
            bans: record.bans(),
            remembered_for: left(record.retained_until()),
        }
    }
}

impl PointStats {
    /// The figures of one point's counters, each read once, with its admissions by [`Kind`].
    fn read(counters: &PointCounters) -> (Self, [u64; 2]) {
        let point = counters.point;
        let stripes = counters.stripes();
        let mut rejected = ByReason::default();
        for (i, reason) in point.all_refusals().enumerate() {
            rejected.add(reason.name(), stripes::sum(stripes, |s| &s.refused[i]));
        }
        let mut closed = ByReason::default();
        for (i, reason) in point.closes().iter().enumerate() {
            closed.add(reason, stripes::sum(stripes, |s| &s.closed[i]));
        }
        // The released first: admitted counts read after them are at least as large, so that a
        // figure read under load is never negative.
        let released = [Kind::Connection, Kind::Request]
            .map(|kind| stripes::sum(stripes, |s| &s.released[kind as usize]));
        let admitted = [Kind::Connection, Kind::Request]
            .map(|kind| stripes::sum(stripes, |s| &s.admitted[kind as usize]));
        let open = |kind: Kind| {
            let k = kind as usize;
            admitted[k].saturating_sub(released[k]) as usize
        };
        let stats = PointStats {
            name: point.name(),
            point,
            open_connections: open(Kind::Connection),
            in_flight_requests: open(Kind::Request),
            admitted: admitted.iter().sum(),
            rejected,
            closed,
        };
        (stats, admitted)
    }
}

impl Limiter {
    /// A snapshot of the counters: totals, refusals and early closes by reason, and the same for
    /// each admission point ([`Stats::points`]).
    ///
    /// Reads a few atomics per reason and point and takes no lock: cheap enough to poll every
    /// second.
    ///
    /// Each counter is split into per-thread stripes, so that admissions on different threads do
    /// not write one cache line; a figure is the sum of its stripes. The figures are exact
    /// whenever nothing is being admitted or released; under load, they are not all read at one
    /// instant and may disagree by the few decisions made while the snapshot was taken.
    pub fn stats(&self) -> Stats {
        let shared = &*self.shared;
        let mut stats = Stats {
            tracked_clients: shared.tracked.load(Ordering::Relaxed),
            dry_run: shared.counters.dry_run.load(Ordering::Relaxed),
            bans: shared.counters.bans.load(Ordering::Relaxed),
            evictions: shared.counters.evictions.load(Ordering::Relaxed),
            unidentified_requests: shared.counters.unidentified.load(Ordering::Relaxed),
            fleet: self.fleet_status(),
            ..Stats::default()
        };
        stats.fair_share = self.fair_share_stats();
        // Every total is a sum of what was read, so the totals agree with the points.
        for counters in shared.tallies.points.iter() {
            let (point, [connections, requests]) = PointStats::read(counters);
            stats.admitted_connections += connections;
            stats.open_connections += point.open_connections;
            stats.admitted_requests += requests;
            stats.in_flight_requests += point.in_flight_requests;
            for (reason, count) in point.rejected.iter() {
                stats.rejected.add(reason, count);
            }
            for (reason, count) in point.closed.iter() {
                stats.closed.add(reason, count);
            }
            stats.points.push(point);
        }
        if let Some(fair) = &mut stats.fair_share {
            fair.reclaimed = [super::RECLAIMED_IDLE, super::RECLAIMED_GOAWAY]
                .iter()
                .filter_map(|cause| stats.closed.get(cause))
                .sum();
        }
        stats
    }

    /// Fair share's figures, with it on.
    fn fair_share_stats(&self) -> Option<FairShareStats> {
        let installed = self.installed();
        let limits = &installed.limits;
        let kinds = [Kind::Connection, Kind::Request];
        if !kinds.iter().any(|&kind| limits.budget(kind).fair) {
            return None;
        }
        let (levels, reclaims_asked) = self.fair_figures();
        let [connections, requests] = kinds.map(|kind| {
            let budget = limits.budget(kind);
            let (level, over_share) = levels[kind as usize];
            BudgetStats {
                budget: budget.total,
                held: self.shared.tallies.total[kind as usize].load(Ordering::Relaxed),
                watermark: if budget.total == 0 {
                    0
                } else {
                    budget.watermark
                },
                ceiling: if budget.total == 0 { 0 } else { budget.ceiling },
                level: level.filter(|_| budget.fair),
                over_share: if budget.fair { over_share } else { 0 },
            }
        });
        Some(FairShareStats {
            connections,
            requests,
            reclaims_asked,
            reclaimed: 0,
        })
    }
}
