//! [`Limiter`]: the shared per-client counters that every admission point consults.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

mod outcome;
mod permit;
mod point;
mod state;
mod stats;
mod summary;

pub use self::outcome::{Decision, RejectReason, Rejected};
use self::permit::Slot;
pub use self::permit::{ConnPermit, RequestPermit};
pub use self::point::AdmissionPoint;
pub(crate) use self::point::Cause;
use self::point::{PointCounters, CAUSES};
pub(crate) use self::state::Kind;
use self::state::{ClientState, Event, Notes, Route};
pub(crate) use self::stats::Closed;
pub use self::stats::{ClientStats, PointStats, RejectedStats, Stats, TimeoutStats};
use self::summary::{Summary, Window, SAMPLE};

use crate::clock::nanos;
use crate::config::CompiledConfig;
use crate::config::WhenFull;
use crate::{ClientKey, Clock, Config, ConfigError, TokioClock};

/// Counts live connections and in-flight requests per client, and admits or refuses new ones.
///
/// `Limiter` is a cheap handle: cloning it clones an [`Arc`], and every clone reads and updates the
/// same map, counters and config. Hand one clone to the point that counts connections — the
/// listener *or* the make-service layer, never both, or every connection is counted twice — and
/// another to the request layer, and they enforce one set of limits against one view of each
/// client.
///
/// # Examples
///
/// The go-connlimit flow: admit, hold the permit while the connection lives, drop it to free.
///
/// ```
/// use std::net::IpAddr;
/// use tower_connlimit::{Config, Limiter, RejectReason};
///
/// let limiter = Limiter::new(Config { max_conns_per_client: 2, ..Config::default() });
/// let client: IpAddr = "192.0.2.1".parse().unwrap();
///
/// let first = limiter.try_acquire(client).unwrap();
/// let second = limiter.try_acquire(client).unwrap();
/// let refused = limiter.try_acquire(client).unwrap_err();
/// assert_eq!(refused.reason(), RejectReason::ClientConnections);
/// assert_eq!(refused.to_string(), "client connection limit reached");
/// assert_eq!(limiter.open_connections(client), 2);
///
/// drop(first);
/// let third = limiter.try_acquire(client).unwrap();
/// # drop((second, third));
/// ```
///
/// # Memory
///
/// The map holds an entry for each client with an open connection or an in-flight request, and,
/// when rate rules or bans are configured, for a client that left while its record can still
/// refuse something; such entries are swept once expired, and at most
/// [`Config::max_tracked_clients`] are held (see [`WhenFull`](crate::WhenFull)). The warm path (a
/// client that already has an entry, or one whose key was seen before so the map has room)
/// allocates nothing; a client's first request matching a path rule allocates its path states.
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

/// The per-client map's hasher: foldhash with a per-map random seed. Client keys are partly chosen
/// by remote peers, so the seed must be secret. std's SipHash would also do, but made a warm
/// admit+release about 30% slower in `benches/admission.rs`.
type ClientHasher = foldhash::fast::RandomState;

struct Shared {
    config: ArcSwap<CompiledConfig>,
    clients: DashMap<ClientKey, ClientState, ClientHasher>,
    clock: Box<dyn Clock>,
    /// When (clock nanoseconds) the next sweep of expired, drained entries is due.
    next_sweep: AtomicU64,
    /// Whether the map may hold drained entries kept for their rate state, so sweeps must go
    /// on (even after a config change removed every rate rule).
    retaining: AtomicBool,
    /// Entries in `clients`, kept exactly (a reservation precedes every insert), so that
    /// `max_tracked_clients` is never passed and `stats()` need not lock every shard.
    tracked: Padded<AtomicUsize>,
    /// Open connections, kept in one exact count so that `max_conns_total` is never passed.
    /// (Requests have no global cap: their total is the sum of the per-point counts.)
    open_connections: Padded<AtomicUsize>,
    /// Opens, admissions and refusals, per kind (connections, requests) and admission point.
    points: [[PointCounters; 4]; 2],
    counters: Counters,
    summary: Summary,
    /// Whether the "request without a client address" misconfiguration was logged at error level
    /// yet; later occurrences log at debug so a misconfigured server cannot flood its log.
    missing_addr_reported: AtomicBool,
}

/// A value on a cache line of its own (128 bytes covers adjacent-line prefetching), so that
/// counters every admission writes do not slow down the reads of the fields beside them.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The counters that belong to no admission point.
#[derive(Default)]
struct Counters {
    timeout_handshake: AtomicU64,
    timeout_idle: AtomicU64,
    timeout_min_receive_rate: AtomicU64,
    dry_run: AtomicU64,
    bans: AtomicU64,
    evictions: AtomicU64,
}

/// How many entries one eviction looks at, at most, and how many drained ones it samples.
const EVICTION_SCAN: usize = 4096;
const EVICTION_SAMPLE: usize = 256;

/// The least time between two sweeps of expired, drained entries.
const SWEEP_INTERVAL_NANOS: u64 = 1_000_000_000;

impl Shared {
    /// The all-clients count of `kind` that a global cap is checked against: connections only.
    fn total(&self, kind: Kind) -> Option<&AtomicUsize> {
        match kind {
            Kind::Connection => Some(&self.open_connections),
            Kind::Request => None,
        }
    }

    fn point(&self, kind: Kind, point: AdmissionPoint) -> &PointCounters {
        &self.points[kind as usize][point.index()]
    }
}

impl Limiter {
    /// A limiter enforcing `config`.
    ///
    /// # Panics
    ///
    /// If `config` is invalid (see [`Config::validate`]); use [`Limiter::try_new`] to handle that
    /// as an error instead.
    pub fn new(config: Config) -> Self {
        match Self::try_new(config) {
            Ok(limiter) => limiter,
            Err(err) => panic!("{err}"),
        }
    }

    /// A limiter enforcing `config`, or the reason `config` is invalid.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the offending field.
    pub fn try_new(config: Config) -> Result<Self, ConfigError> {
        Self::try_with_clock(config, TokioClock::new())
    }

    /// A limiter enforcing `config` on the time of `clock`, or why `config` is invalid.
    ///
    /// Rates are measured on `clock`. The default, [`TokioClock`], follows tokio's paused time;
    /// a [`FakeClock`](crate::FakeClock) makes time move only when a test says so.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the offending field.
    pub fn try_with_clock(config: Config, clock: impl Clock) -> Result<Self, ConfigError> {
        let compiled = CompiledConfig::compile(config)?;
        Ok(Limiter {
            shared: Arc::new(Shared {
                config: ArcSwap::from_pointee(compiled),
                clients: DashMap::with_hasher(ClientHasher::default()),
                clock: Box::new(clock),
                next_sweep: AtomicU64::new(0),
                retaining: AtomicBool::new(false),
                tracked: Padded(AtomicUsize::new(0)),
                open_connections: Padded(AtomicUsize::new(0)),
                points: Default::default(),
                counters: Counters::default(),
                summary: Summary::new(),
                missing_addr_reported: AtomicBool::new(false),
            }),
        })
    }

    /// Admits a connection from `ip`, or says why not.
    ///
    /// The returned permit counts the connection until it is dropped; keep it alive exactly as
    /// long as the connection (the listener does this by storing it in [`TrackedIo`]). A refusal
    /// counts nothing in the per-client map, though a refused attempt may be a rate violation.
    ///
    /// Checks, in order: a ban, `connect_rate`, the per-client limit (`max_conns_per_client`,
    /// or the longest matching override), then the global cap (`max_conns_total`). Exempt
    /// clients are counted but never refused. Concurrent calls never admit past a limit.
    ///
    /// [`TrackedIo`]: crate::TrackedIo
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnPermit, Rejected> {
        self.try_acquire_at(ip, AdmissionPoint::Direct)
    }

    /// [`try_acquire`](Limiter::try_acquire), counted under `point`.
    pub(crate) fn try_acquire_at(
        &self,
        ip: IpAddr,
        point: AdmissionPoint,
    ) -> Result<ConnPermit, Rejected> {
        let key = self.admit(ip, Kind::Connection, None, point)?;
        let permit = ConnPermit {
            slot: Slot::new(self.clone(), key, Kind::Connection, point),
        };
        self.admitted(&key, Kind::Connection, point);
        Ok(permit)
    }

    /// Admits a request from `ip` against a ban, `request_rate` and `max_requests_per_client`,
    /// or says why not. Path rules need the route: see [`Limiter::try_acquire_request_to`].
    pub fn try_acquire_request(&self, ip: IpAddr) -> Result<RequestPermit, Rejected> {
        self.request_permit(ip, None, AdmissionPoint::Direct)
    }

    /// Admits a request from `ip` for `method` and `path`: a ban, `request_rate`, every
    /// matching path rule, then `max_requests_per_client`.
    ///
    /// The request layer calls this for every request and keeps the permit until the response
    /// body has been sent; call it yourself to limit requests in a custom server.
    pub fn try_acquire_request_to(
        &self,
        ip: IpAddr,
        method: &http::Method,
        path: &str,
    ) -> Result<RequestPermit, Rejected> {
        self.try_acquire_request_at(ip, method, path, AdmissionPoint::Direct)
    }

    /// [`try_acquire_request_to`](Limiter::try_acquire_request_to), counted under `point`.
    pub(crate) fn try_acquire_request_at(
        &self,
        ip: IpAddr,
        method: &http::Method,
        path: &str,
        point: AdmissionPoint,
    ) -> Result<RequestPermit, Rejected> {
        self.request_permit(ip, Some(Route { method, path }), point)
    }

    fn request_permit(
        &self,
        ip: IpAddr,
        route: Option<Route<'_>>,
        point: AdmissionPoint,
    ) -> Result<RequestPermit, Rejected> {
        let key = self.admit(ip, Kind::Request, route, point)?;
        let permit = RequestPermit {
            slot: Slot::new(self.clone(), key, Kind::Request, point),
        };
        self.admitted(&key, Kind::Request, point);
        Ok(permit)
    }

    /// A security gate's `allowConnect`: the connection decision as a [`Decision`](Decision) for
    /// a custom server to enforce. `Allow` carries the permit; a refusal is always `Close`.
    pub fn allow_connect(&self, ip: IpAddr) -> Decision<ConnPermit> {
        match self.try_acquire(ip) {
            Ok(permit) => Decision::Allow(permit),
            Err(rejected) => Decision::Close(rejected),
        }
    }

    /// A security gate's `allowRequest`: `Allow` with the permit; `Drop` (ignore or answer 429, keep
    /// the connection) for a limit or rate; `Close` for a banned client.
    pub fn allow_request(
        &self,
        ip: IpAddr,
        method: &http::Method,
        path: &str,
    ) -> Decision<RequestPermit> {
        match self.try_acquire_request_to(ip, method, path) {
            Ok(permit) => Decision::Allow(permit),
            Err(rejected) if rejected.reason() == RejectReason::Banned => Decision::Close(rejected),
            Err(rejected) => Decision::Drop(rejected),
        }
    }

    /// Bans `ip`'s client key for `duration`, from now; an existing longer ban stays. A banned
    /// client is refused everywhere: the listener closes it at accept.
    pub fn ban(&self, ip: IpAddr, duration: std::time::Duration) {
        let shared = &*self.shared;
        let key = self.key_for(ip);
        let until = self.now().saturating_add(nanos(duration));
        let mut inserted = false;
        shared
            .clients
            .entry(key)
            .and_modify(|state| state.ban_until(until))
            .or_insert_with(|| {
                // A manual ban is always recorded, even past `max_tracked_clients`.
                inserted = true;
                let mut state = ClientState::default();
                state.ban_until(until);
                state
            });
        if inserted {
            shared.tracked.fetch_add(1, Ordering::Relaxed);
        }
        shared.retaining.store(true, Ordering::Relaxed);
        shared.counters.bans.fetch_add(1, Ordering::Relaxed);
        tracing::info!(client = %key, ?duration, "client banned by the operator");
    }

    /// Lifts the ban on `ip`'s client key and forgets its violations and earlier bans. Returns
    /// whether it was banned.
    pub fn unban(&self, ip: IpAddr) -> bool {
        let shared = &*self.shared;
        let key = self.key_for(ip);
        let now = self.now();
        let mut was_banned = false;
        let removed = shared.clients.remove_if_mut(&key, |_, state| {
            was_banned = state.banned_until > now;
            state.unban();
            state.is_forgettable(|| now)
        });
        if removed.is_some() {
            shared.tracked.fetch_sub(1, Ordering::Relaxed);
        }
        was_banned
    }

    /// The clients banned now, with the time each ban has left.
    pub fn bans(&self) -> Vec<(ClientKey, std::time::Duration)> {
        let now = self.now();
        self.shared
            .clients
            .iter()
            .filter(|entry| entry.banned_until > now)
            .map(|entry| {
                let left = std::time::Duration::from_nanos(entry.banned_until - now);
                (*entry.key(), left)
            })
            .collect()
    }

    /// The number of open connections counted for `ip`'s client key (so, with the default
    /// `/64`, for the whole IPv6 subnet).
    pub fn open_connections(&self, ip: IpAddr) -> usize {
        self.client(ip).map_or(0, |c| c.open_connections)
    }

    /// The details of `ip`'s client key: its open connections, in-flight requests and ban, or
    /// `None` when nothing about it is tracked.
    pub fn client(&self, ip: IpAddr) -> Option<ClientStats> {
        let key = self.key_for(ip);
        let now = self.now();
        self.shared
            .clients
            .get(&key)
            .map(|state| ClientStats::new(key, &state, now))
    }

    /// Every tracked client and its counts, in no particular order.
    ///
    /// Takes each shard's read lock in turn; meant for stats endpoints and debugging, not for
    /// the request path.
    pub fn clients(&self) -> Vec<ClientStats> {
        let now = self.now();
        self.shared
            .clients
            .iter()
            .map(|entry| ClientStats::new(*entry.key(), entry.value(), now))
            .collect()
    }

    /// The `n` clients holding the most open connections, most first; ties go to the client with
    /// more requests in flight. Clients with nothing open are left out, so the list may be
    /// shorter than `n`.
    ///
    /// Reads every entry (each shard's read lock in turn) and keeps only `n` of them, so it
    /// costs one pass over the map and memory for `n` results: fine for a stats endpoint or a
    /// periodic log, not for the request path.
    pub fn top_clients(&self, n: usize) -> Vec<ClientStats> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        if n == 0 {
            return Vec::new();
        }
        let now = self.now();
        // A min-heap of the best `n` so far: the weakest is on top, ready to be pushed out.
        let mut best = BinaryHeap::new();
        for entry in self.shared.clients.iter() {
            if !entry.is_idle() {
                best.push(Reverse(Ranked(ClientStats::new(
                    *entry.key(),
                    entry.value(),
                    now,
                ))));
                if best.len() > n {
                    best.pop();
                }
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|Reverse(Ranked(client))| client)
            .collect()
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.shared.config.load().config)
    }

    /// Replaces the config atomically; the next decision uses it.
    ///
    /// Lowering a limit never closes open connections: it only refuses new ones until the client
    /// is back under the limit (go-connlimit's behaviour). A changed prefix applies to new
    /// connections; open ones are released against the key they were counted under.
    ///
    /// # Errors
    ///
    /// An invalid config is refused with a [`ConfigError`], and the previous config stays.
    pub fn set_config(&self, config: Config) -> Result<(), ConfigError> {
        let compiled = CompiledConfig::compile(config)?;
        self.shared.config.store(Arc::new(compiled));
        Ok(())
    }

    /// A snapshot of the counters: totals, refusals by reason, and the same per admission point
    /// ([`Stats::listener`], [`Stats::make_service`], [`Stats::request_layer`],
    /// [`Stats::direct`]).
    ///
    /// Reads about 130 atomics and takes no lock: cheap enough to poll every second.
    ///
    /// Each figure is read atomically, but not all at one instant: under load the figures may
    /// disagree by the few decisions made while the snapshot was taken.
    pub fn stats(&self) -> Stats {
        let shared = &*self.shared;
        let c = &shared.counters;
        // Each counter is read once, and every total is a sum of what was read.
        let read = |kind: Kind, point: AdmissionPoint| {
            let counters = shared.point(kind, point);
            let refused: [u64; CAUSES] =
                std::array::from_fn(|i| counters.refused[i].load(Ordering::Relaxed));
            (
                counters.open.load(Ordering::Relaxed),
                counters.admitted.load(Ordering::Relaxed),
                RejectedStats::from_counts(&refused),
            )
        };
        let mut admitted_connections = 0;
        let mut admitted_requests = 0;
        let by_point = AdmissionPoint::ALL.map(|point| {
            let (connections, admitted_c, rejected_c) = read(Kind::Connection, point);
            let (requests, admitted_r, rejected_r) = read(Kind::Request, point);
            admitted_connections += admitted_c;
            admitted_requests += admitted_r;
            PointStats {
                open_connections: connections,
                in_flight_requests: requests,
                admitted: admitted_c + admitted_r,
                rejected: rejected_c.plus(&rejected_r),
            }
        });
        Stats {
            open_connections: shared.open_connections.load(Ordering::Relaxed),
            in_flight_requests: by_point.iter().map(|point| point.in_flight_requests).sum(),
            tracked_clients: shared.tracked.load(Ordering::Relaxed),
            admitted_connections,
            admitted_requests,
            rejected: by_point
                .iter()
                .fold(RejectedStats::default(), |sum, point| {
                    sum.plus(&point.rejected)
                }),
            timeouts: TimeoutStats {
                handshake: c.timeout_handshake.load(Ordering::Relaxed),
                idle: c.timeout_idle.load(Ordering::Relaxed),
                min_receive_rate: c.timeout_min_receive_rate.load(Ordering::Relaxed),
            },
            dry_run: c.dry_run.load(Ordering::Relaxed),
            bans: c.bans.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            listener: by_point[0],
            make_service: by_point[1],
            request_layer: by_point[2],
            direct: by_point[3],
        }
    }

    /// Counts a connection or request refused at `point` because it carried no client address,
    /// and says whether this is the first time (so the caller logs the misconfiguration loudly
    /// once).
    pub(crate) fn note_missing_client_address(&self, kind: Kind, point: AdmissionPoint) -> bool {
        self.refused(kind, point, Cause::NoClientAddress, None);
        !self
            .shared
            .missing_addr_reported
            .swap(true, Ordering::Relaxed)
    }

    /// Counts a connection the listener refused before the limits could decide (a PROXY-header
    /// problem) from `peer`, when known.
    pub(crate) fn refused_at_listener(&self, cause: Cause, peer: Option<IpAddr>) {
        let key = peer.map(|ip| self.key_for(ip));
        self.refused(
            Kind::Connection,
            AdmissionPoint::Listener,
            cause,
            key.as_ref(),
        );
    }

    /// Counts an admitted connection that a deadline closed.
    pub(crate) fn count_closed(&self, why: Closed) {
        let c = &self.shared.counters;
        let counter = match why {
            Closed::HandshakeTimeout => &c.timeout_handshake,
            Closed::IdleTimeout => &c.timeout_idle,
            Closed::MinReceiveRate => &c.timeout_min_receive_rate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts, logs and sums up one refusal of `kind` at `point` for `cause`.
    ///
    /// Every refusal is logged at debug. At warn, the first after a quiet spell is logged on its
    /// own and opens a summary window; the others are summed up per window (see `summary`).
    fn refused(&self, kind: Kind, point: AdmissionPoint, cause: Cause, client: Option<&ClientKey>) {
        let shared = &*self.shared;
        let previous =
            shared.point(kind, point).refused[cause.index()].fetch_add(1, Ordering::Relaxed);
        let client_field = client.map(tracing::field::display);
        let (kind, reason) = (kind.as_str(), cause.as_str());
        tracing::debug!(client = client_field, kind, %point, reason, "refused");
        match shared.summary.open_until() {
            None => {
                if shared.summary.open(self.now(), self.total_refused()) {
                    tracing::warn!(
                        client = client_field,
                        kind,
                        %point,
                        reason,
                        "refusing: further refusals are summed up every 10s"
                    );
                }
            }
            Some(end) => {
                if let Some(client) = client {
                    shared.summary.note(client);
                }
                if previous % SAMPLE == 0 {
                    self.close_summary_if_over(end);
                }
            }
        }
    }

    /// After a permit is made: logs the admission, and now and then ends a summary window that
    /// is over. Runs once the permit exists, so that nothing here can leave a count behind.
    fn admitted(&self, key: &ClientKey, kind: Kind, point: AdmissionPoint) {
        tracing::trace!(client = %key, kind = kind.as_str(), %point, "admitted");
        let shared = &*self.shared;
        if let Some(end) = shared.summary.open_until() {
            if shared.point(kind, point).admitted.load(Ordering::Relaxed) % SAMPLE == 0 {
                self.close_summary_if_over(end);
            }
        }
    }

    /// Ends the summary window that ends at `end`, if it is over, and logs it.
    fn close_summary_if_over(&self, end: u64) {
        let now = self.now();
        if now >= end {
            if let Some(window) = self
                .shared
                .summary
                .close_if_over(end, now, self.total_refused())
            {
                log_summary(&window);
            }
        }
    }

    /// Every refusal counted so far, at every point: for the summary windows, once per window.
    fn total_refused(&self) -> u64 {
        self.shared
            .points
            .iter()
            .flatten()
            .flat_map(|point| &point.refused)
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// The config in force, compiled.
    pub(crate) fn compiled(&self) -> arc_swap::Guard<Arc<CompiledConfig>> {
        self.shared.config.load()
    }

    fn key_for(&self, ip: IpAddr) -> ClientKey {
        self.shared.config.load().client(ip).0
    }

    /// The one admission decision. Loads the config once, then, under the client's shard lock:
    /// a ban, the rate rules (before the concurrency checks, so a flood is refused at the
    /// cheapest check), the per-client limit, a place under the global cap, and the count.
    /// Nothing is counted unless every check passes, so a refused attempt never makes the totals
    /// look higher to concurrent callers. Returns the key the permit must release.
    fn admit(
        &self,
        ip: IpAddr,
        kind: Kind,
        route: Option<Route<'_>>,
        point: AdmissionPoint,
    ) -> Result<ClientKey, Rejected> {
        let shared = &*self.shared;
        let compiled = shared.config.load();
        let config = &*compiled.config;
        let (key, exempt) = compiled.client(ip);
        let limit = match (exempt, kind) {
            (true, _) => 0,
            (false, Kind::Connection) => compiled.conn_limit_for(ip),
            (false, Kind::Request) => config.max_requests_per_client,
        };
        let total = shared.total(kind);
        let total_cap = match kind {
            Kind::Connection if !exempt => config.max_conns_total,
            _ => 0,
        };
        // The clock is read at most once per decision, and only when something needs it.
        let clock_reading = std::cell::Cell::new(None);
        let now = || match clock_reading.get() {
            Some(now) => now,
            None => {
                let now = self.now();
                clock_reading.set(Some(now));
                now
            }
        };
        if compiled.has_rates() || shared.retaining.load(Ordering::Relaxed) {
            self.sweep_if_due(now());
        }
        let decision = Event {
            compiled: &compiled,
            kind,
            route,
            exempt,
            key: &key,
            now: &now,
        };
        let mut notes = Notes::default();

        let mut evicted = false;
        let verdict = loop {
            // The shard lock is held only inside this match: no await, no second map call.
            break match shared.clients.entry(key) {
                Entry::Occupied(mut occupied) => {
                    let state = occupied.get_mut();
                    state
                        .check_gate(&decision, &mut notes)
                        .and_then(|()| count(state, kind, limit, total, total_cap))
                }
                Entry::Vacant(vacant) => {
                    if !reserve(&shared.tracked, config.max_tracked_clients) {
                        drop(vacant);
                        // Full: make room once, outside the lock, then try again.
                        if !evicted
                            && config.when_full == WhenFull::EvictStalest
                            && self.evict_stalest()
                        {
                            evicted = true;
                            continue;
                        }
                        Err((RejectReason::TrackedClientsFull, None))
                    } else {
                        let mut state = ClientState::default();
                        let verdict = state
                            .check_gate(&decision, &mut notes)
                            .and_then(|()| count(&mut state, kind, limit, total, total_cap));
                        if verdict.is_ok() || !state.is_forgettable(now) {
                            // Kept even when refused, if the attempt left a record (a
                            // violation, a ban) that must outlive it.
                            vacant.insert(state);
                            if verdict.is_err() {
                                shared.retaining.store(true, Ordering::Relaxed);
                            }
                        } else {
                            shared.tracked.fetch_sub(1, Ordering::Relaxed);
                        }
                        verdict
                    }
                }
            };
        };
        self.record(&key, &notes);
        match verdict {
            Ok(()) => {
                let counters = shared.point(kind, point);
                counters.open.fetch_add(1, Ordering::Relaxed);
                counters.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(key)
            }
            Err((reason, wait)) => {
                self.refused(kind, point, Cause::Limit(reason), Some(&key));
                Err(Rejected {
                    reason,
                    retry_after: wait.map(Duration::from_nanos),
                })
            }
        }
    }

    /// Counts what a decision noticed besides its verdict, and logs bans.
    fn record(&self, key: &ClientKey, notes: &Notes) {
        let c = &self.shared.counters;
        if notes.dry_run > 0 {
            c.dry_run
                .fetch_add(u64::from(notes.dry_run), Ordering::Relaxed);
            tracing::debug!(client = %key, "dry-run rule would have refused");
        }
        if notes.would_ban {
            c.dry_run.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(client = %key, "dry-run ban policy would have banned");
        }
        if notes.banned {
            // At most one line per client per ban.
            c.bans.fetch_add(1, Ordering::Relaxed);
            tracing::info!(client = %key, "client banned after repeated violations");
        }
    }

    /// The limiter clock's reading, in nanoseconds.
    fn now(&self) -> u64 {
        nanos(self.shared.clock.now())
    }

    /// Forgets the drained clients whose state has expired, if the last sweep was at least a
    /// second ago. Called before a decision takes its shard lock; at most one caller sweeps.
    fn sweep_if_due(&self, now: u64) {
        let next = &self.shared.next_sweep;
        let due = next.load(Ordering::Relaxed);
        if now >= due
            && next
                .compare_exchange(
                    due,
                    now + SWEEP_INTERVAL_NANOS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.purge_expired();
        }
    }

    /// Forgets every client that has nothing open and whose rate and ban state has expired.
    ///
    /// Admissions already do this about once a second while rate rules or bans are in use; call
    /// it from a timer of your own to reclaim memory promptly on an idle server. Takes each
    /// shard's write lock in turn.
    pub fn purge_expired(&self) {
        let shared = &*self.shared;
        let now = self.now();
        // Cleared first: a release that keeps an entry during the scan sets it again.
        shared.retaining.store(false, Ordering::Relaxed);
        let mut kept_drained = false;
        let mut removed = 0;
        shared.clients.retain(|_, state| {
            let forget = state.is_forgettable(|| now);
            kept_drained |= !forget && state.is_idle();
            removed += usize::from(forget);
            !forget
        });
        shared.tracked.fetch_sub(removed, Ordering::Relaxed);
        if kept_drained {
            shared.retaining.store(true, Ordering::Relaxed);
        }
    }

    /// Makes room for new clients: samples up to [`EVICTION_SAMPLE`] drained clients (those with
    /// nothing open) and forgets the quarter whose records expire first — the stalest, expired
    /// ones before all. Evicting in batches spreads the cost of a scan over many newcomers.
    /// Returns whether any client was forgotten.
    fn evict_stalest(&self) -> bool {
        let shared = &*self.shared;
        let mut sample: Vec<(u64, ClientKey)> = shared
            .clients
            .iter()
            .take(EVICTION_SCAN)
            .filter(|entry| entry.is_idle())
            .take(EVICTION_SAMPLE)
            .map(|entry| (entry.retain_until, *entry.key()))
            .collect();
        sample.sort_unstable_by_key(|(until, _)| *until);
        let batch = sample.len().div_ceil(4);
        let mut evicted = 0;
        for (_, key) in sample.iter().take(batch) {
            if shared
                .clients
                .remove_if(key, |_, state| state.is_idle())
                .is_some()
            {
                evicted += 1;
                tracing::debug!(client = %key, "forgot a drained client to make room");
            }
        }
        shared.tracked.fetch_sub(evicted, Ordering::Relaxed);
        shared
            .counters
            .evictions
            .fetch_add(evicted as u64, Ordering::Relaxed);
        evicted > 0
    }

    /// Gives back one unit of `kind` for `key`, removing the entry when nothing about the client
    /// needs remembering (no permits, and no rate or ban state that could still refuse).
    fn release(&self, key: &ClientKey, kind: Kind, point: AdmissionPoint) {
        let shared = &*self.shared;
        shared
            .point(kind, point)
            .open
            .fetch_sub(1, Ordering::Relaxed);
        // The client's count and the total drop together, under the shard lock that `admit`
        // counts them under.
        let removed = shared.clients.remove_if_mut(key, |_, state| {
            let count = state.count_mut(kind);
            debug_assert!(*count > 0, "released a permit that was never counted");
            *count = count.saturating_sub(1);
            if let Some(total) = shared.total(kind) {
                total.fetch_sub(1, Ordering::Relaxed);
            }
            let forget = state.is_forgettable(|| self.now());
            if !forget && state.is_idle() {
                shared.retaining.store(true, Ordering::Relaxed);
            }
            forget
        });
        if removed.is_some() {
            shared.tracked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A client ranked for [`Limiter::top_clients`]: most connections, then most requests, then
/// the lowest key, so that the order is stable.
struct Ranked(ClientStats);

impl Ranked {
    fn rank(&self) -> (usize, usize, std::cmp::Reverse<ClientKey>) {
        let c = &self.0;
        (
            c.open_connections,
            c.in_flight_requests,
            std::cmp::Reverse(c.key),
        )
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.rank() == other.rank()
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// Logs a finished window of refusals at warn: one line per window however many there were.
fn log_summary(window: &Window) {
    let about = if window.at_least { "at least" } else { "about" };
    tracing::warn!(
        refused = window.refused,
        clients = window.clients,
        seconds = window.seconds,
        "{} more connections or requests refused from {about} {} clients in the last {}s",
        window.refused,
        window.clients,
        window.seconds
    );
}

/// The concurrency checks, after the gate: the per-client limit, then a place under the global
/// cap; counts the client when both pass.
fn count(
    state: &mut ClientState,
    kind: Kind,
    limit: usize,
    total: Option<&AtomicUsize>,
    total_cap: usize,
) -> Result<(), state::Denial> {
    if limit != 0 && *state.count_mut(kind) >= limit {
        Err((kind.client_limit_reason(), None))
    } else if total.is_some_and(|total| !reserve(total, total_cap)) {
        Err((RejectReason::TotalConnections, None))
    } else {
        *state.count_mut(kind) += 1;
        Ok(())
    }
}

/// Adds one to `total` unless that would pass `cap` (0 = no cap). A compare-and-swap loop, so
/// racing callers can never push the count past the cap, even for an instant.
#[inline]
fn reserve(total: &AtomicUsize, cap: usize) -> bool {
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

// Every update of the shared state is a few integer operations under a shard lock, with no
// user code in between, so a panic elsewhere can never leave a count half-changed: the limiter
// stays consistent across `catch_unwind`, and permits dropped while unwinding still release.
impl std::panic::UnwindSafe for Limiter {}
impl std::panic::RefUnwindSafe for Limiter {}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("config", &self.config())
            .field("stats", &self.stats())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<Limiter>();
        assert_send_sync::<ConnPermit>();
        assert_send_sync::<RequestPermit>();
        assert_send_sync::<Rejected>();
        assert_send_sync::<Stats>();
    }

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
