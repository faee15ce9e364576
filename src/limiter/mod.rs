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
mod stats;

pub use self::outcome::{RejectReason, Rejected};
use self::permit::Slot;
pub use self::permit::{ConnPermit, RequestPermit};
pub use self::stats::{ClientStats, RejectedStats, Stats};

use crate::clock::nanos;
use crate::config::CompiledConfig;
use crate::rate::RateState;
use crate::{ClientKey, Clock, Config, ConfigError, RateLimit, TokioClock};

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
/// The map holds an entry only for clients that have an open connection or an in-flight request;
/// the entry is removed when its last permit is dropped. The warm path (a client that already has
/// an entry, or one whose key was seen before so the map has room) allocates nothing.
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
    open_connections: AtomicUsize,
    in_flight_requests: AtomicUsize,
    counters: Counters,
    /// Whether the "request without a client address" misconfiguration was logged at error level
    /// yet; later occurrences log at debug so a misconfigured server cannot flood its log.
    missing_addr_reported: AtomicBool,
}

#[derive(Default)]
struct Counters {
    admitted_connections: AtomicU64,
    admitted_requests: AtomicU64,
    rejected_client_connections: AtomicU64,
    rejected_total_connections: AtomicU64,
    rejected_client_requests: AtomicU64,
    rejected_connect_rate: AtomicU64,
    rejected_request_rate: AtomicU64,
    rejected_no_client_address: AtomicU64,
}

/// One client's live counts and rate state. Small and `Copy` so that a map update is a few
/// integer operations under the shard lock.
#[derive(Clone, Copy, Default, Debug)]
struct ClientState {
    connections: usize,
    requests: usize,
    connect_rate: RateState,
    request_rate: RateState,
    /// Until when (clock nanoseconds) the rate state can still refuse something: a drained entry
    /// is kept until then, so that disconnecting does not reset a client's rate.
    retain_until: u64,
}

impl ClientState {
    fn count_mut(&mut self, kind: Kind) -> &mut usize {
        match kind {
            Kind::Connection => &mut self.connections,
            Kind::Request => &mut self.requests,
        }
    }

    fn is_idle(&self) -> bool {
        self.connections == 0 && self.requests == 0
    }

    /// Whether nothing about this client needs remembering; `now` is read only when the answer
    /// depends on it.
    fn is_forgettable(&self, now: impl FnOnce() -> u64) -> bool {
        self.is_idle() && (self.retain_until == 0 || self.retain_until <= now())
    }

    fn rate_mut(&mut self, kind: Kind) -> &mut RateState {
        match kind {
            Kind::Connection => &mut self.connect_rate,
            Kind::Request => &mut self.request_rate,
        }
    }

    /// Decides one event against `kind`'s rate rule, if any, and remembers it.
    fn check_rate(&mut self, kind: Kind, rule: Option<&RateLimit>, now: u64) -> Result<(), u64> {
        let Some(rule) = rule else { return Ok(()) };
        let rate = self.rate_mut(kind);
        rate.check(rule, now)?;
        let expires = rate.expires_at(rule);
        self.retain_until = self.retain_until.max(expires);
        Ok(())
    }
}

/// What a permit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Connection,
    Request,
}

impl Kind {
    fn client_limit_reason(self) -> RejectReason {
        match self {
            Kind::Connection => RejectReason::ClientConnections,
            Kind::Request => RejectReason::ClientRequests,
        }
    }

    fn rate_reason(self) -> RejectReason {
        match self {
            Kind::Connection => RejectReason::ConnectRate,
            Kind::Request => RejectReason::RequestRate,
        }
    }

    fn rate_rule(self, config: &Config) -> Option<&RateLimit> {
        match self {
            Kind::Connection => config.connect_rate.as_ref(),
            Kind::Request => config.request_rate.as_ref(),
        }
    }
}

/// The least time between two sweeps of expired, drained entries.
const SWEEP_INTERVAL_NANOS: u64 = 1_000_000_000;

impl Shared {
    /// The all-clients count of `kind`.
    fn total(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Connection => &self.open_connections,
            Kind::Request => &self.in_flight_requests,
        }
    }

    /// The admitted-since-start counter of `kind`.
    fn admitted(&self, kind: Kind) -> &AtomicU64 {
        match kind {
            Kind::Connection => &self.counters.admitted_connections,
            Kind::Request => &self.counters.admitted_requests,
        }
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
                open_connections: AtomicUsize::new(0),
                in_flight_requests: AtomicUsize::new(0),
                counters: Counters::default(),
                missing_addr_reported: AtomicBool::new(false),
            }),
        })
    }

    /// Admits a connection from `ip`, or says why not.
    ///
    /// The returned permit counts the connection until it is dropped; keep it alive exactly as
    /// long as the connection (the listener does this by storing it in [`TrackedIo`]). A refusal
    /// leaves no trace in the per-client map.
    ///
    /// Checks, in order: the global cap (`max_conns_total`), then the per-client limit
    /// (`max_conns_per_client`, or the longest matching override). Exempt clients are counted
    /// but never refused. Concurrent calls never admit past a limit.
    ///
    /// [`TrackedIo`]: crate::TrackedIo
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnPermit, Rejected> {
        self.admit(ip, Kind::Connection).map(|key| ConnPermit {
            slot: Slot::new(self.clone(), key, Kind::Connection),
        })
    }

    /// Admits a request from `ip` against `max_requests_per_client`, or says why not.
    ///
    /// The request layer calls this for every request and keeps the permit until the response
    /// body has been sent; call it yourself to limit in-flight work in a custom server.
    pub fn try_acquire_request(&self, ip: IpAddr) -> Result<RequestPermit, Rejected> {
        self.admit(ip, Kind::Request).map(|key| RequestPermit {
            slot: Slot::new(self.clone(), key, Kind::Request),
        })
    }

    /// The number of open connections counted for `ip`'s client key (so, with the default
    /// `/64`, for the whole IPv6 subnet).
    pub fn open_connections(&self, ip: IpAddr) -> usize {
        self.client(ip).map_or(0, |c| c.open_connections)
    }

    /// The counts for `ip`'s client key, or `None` when nothing about it is tracked.
    pub fn client(&self, ip: IpAddr) -> Option<ClientStats> {
        let key = self.key_for(ip);
        self.shared
            .clients
            .get(&key)
            .map(|state| ClientStats::new(key, &state))
    }

    /// Every tracked client and its counts, in no particular order.
    ///
    /// Takes each shard's read lock in turn; meant for stats endpoints and debugging, not for
    /// the request path.
    pub fn clients(&self) -> Vec<ClientStats> {
        self.shared
            .clients
            .iter()
            .map(|entry| ClientStats::new(*entry.key(), entry.value()))
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

    /// A snapshot of the counters.
    ///
    /// Each figure is read atomically, but not all at one instant: under load the figures may
    /// disagree by the few decisions made while the snapshot was taken.
    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        Stats {
            open_connections: self.shared.open_connections.load(Ordering::Relaxed),
            in_flight_requests: self.shared.in_flight_requests.load(Ordering::Relaxed),
            tracked_clients: self.shared.clients.len(),
            admitted_connections: c.admitted_connections.load(Ordering::Relaxed),
            admitted_requests: c.admitted_requests.load(Ordering::Relaxed),
            rejected: RejectedStats {
                client_connections: c.rejected_client_connections.load(Ordering::Relaxed),
                total_connections: c.rejected_total_connections.load(Ordering::Relaxed),
                client_requests: c.rejected_client_requests.load(Ordering::Relaxed),
                connect_rate: c.rejected_connect_rate.load(Ordering::Relaxed),
                request_rate: c.rejected_request_rate.load(Ordering::Relaxed),
                no_client_address: c.rejected_no_client_address.load(Ordering::Relaxed),
            },
        }
    }

    /// Counts a request refused because it carried no client address, and says whether this is
    /// the first time (so the caller logs the misconfiguration loudly once).
    pub(crate) fn note_missing_client_address(&self) -> bool {
        self.shared
            .counters
            .rejected_no_client_address
            .fetch_add(1, Ordering::Relaxed);
        !self
            .shared
            .missing_addr_reported
            .swap(true, Ordering::Relaxed)
    }

    fn key_for(&self, ip: IpAddr) -> ClientKey {
        self.shared.config.load().client(ip).0
    }

    /// The one admission decision. Loads the config once, then, under the client's shard lock:
    /// checks the rate rule (before the concurrency checks, so a refused attempt costs nothing
    /// more), the per-client limit, reserves a place under the global cap, and counts the
    /// client. Nothing is counted unless every check passes, so a refused attempt never makes
    /// the totals look higher to concurrent callers. Returns the key the permit must release.
    fn admit(&self, ip: IpAddr, kind: Kind) -> Result<ClientKey, Rejected> {
        let shared = &*self.shared;
        let compiled = shared.config.load();
        let config = &*compiled.config;
        let (key, exempt) = compiled.client(ip);
        let (limit, rate) = match exempt {
            true => (0, None),
            false => (
                match kind {
                    Kind::Connection => compiled.conn_limit_for(ip),
                    Kind::Request => config.max_requests_per_client,
                },
                kind.rate_rule(config),
            ),
        };
        let total = shared.total(kind);
        let total_cap = match kind {
            Kind::Connection if !exempt => config.max_conns_total,
            _ => 0,
        };
        let now = if compiled.has_rates() || shared.retaining.load(Ordering::Relaxed) {
            let now = self.now();
            self.sweep_if_due(now);
            now
        } else {
            0
        };

        // The shard lock is held only inside this match: no await, no second map call.
        let decision = match shared.clients.entry(key) {
            Entry::Occupied(mut occupied) => {
                let state = occupied.get_mut();
                if let Err(wait) = state.check_rate(kind, rate, now) {
                    Err((kind.rate_reason(), Some(wait)))
                } else if limit != 0 && *state.count_mut(kind) >= limit {
                    Err((kind.client_limit_reason(), None))
                } else if !reserve(total, total_cap) {
                    Err((RejectReason::TotalConnections, None))
                } else {
                    *state.count_mut(kind) += 1;
                    Ok(())
                }
            }
            // A new client passes any rate rule (nothing was counted yet) and any per-client
            // limit (0 means unlimited, else at least 1); only the global cap can refuse it.
            Entry::Vacant(vacant) => {
                if reserve(total, total_cap) {
                    let mut state = ClientState::default();
                    let first = state.check_rate(kind, rate, now);
                    debug_assert!(first.is_ok(), "a fresh rate state allows one event");
                    *state.count_mut(kind) = 1;
                    vacant.insert(state);
                    Ok(())
                } else {
                    Err((RejectReason::TotalConnections, None))
                }
            }
        };
        match decision {
            Ok(()) => {
                shared.admitted(kind).fetch_add(1, Ordering::Relaxed);
                Ok(key)
            }
            Err((reason, wait)) => {
                let mut rejected = self.reject(reason);
                rejected.retry_after = wait.map(Duration::from_nanos);
                Err(rejected)
            }
        }
    }

    /// The limiter clock's reading, in nanoseconds.
    fn now(&self) -> u64 {
        nanos(self.shared.clock.now())
    }

    /// Forgets the drained clients whose rate state has expired, if the last sweep was at least
    /// a second ago. Called before a decision takes its shard lock; at most one caller sweeps.
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

    /// Forgets every client that has nothing open and whose rate state has expired.
    ///
    /// Admissions already do this about once a second when rate rules are configured; call it
    /// from a timer of your own to reclaim memory promptly on an idle server. Takes each shard's
    /// write lock in turn.
    pub fn purge_expired(&self) {
        let shared = &*self.shared;
        let now = self.now();
        // Cleared first: a release that keeps an entry during the scan sets it again.
        shared.retaining.store(false, Ordering::Relaxed);
        let mut kept_drained = false;
        shared.clients.retain(|_, state| {
            let forget = state.is_forgettable(|| now);
            kept_drained |= !forget && state.is_idle();
            !forget
        });
        if kept_drained {
            shared.retaining.store(true, Ordering::Relaxed);
        }
    }

    fn reject(&self, reason: RejectReason) -> Rejected {
        let c = &self.shared.counters;
        let counter = match reason {
            RejectReason::ClientConnections => &c.rejected_client_connections,
            RejectReason::TotalConnections => &c.rejected_total_connections,
            RejectReason::ClientRequests => &c.rejected_client_requests,
            RejectReason::ConnectRate => &c.rejected_connect_rate,
            RejectReason::RequestRate => &c.rejected_request_rate,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Rejected {
            reason,
            retry_after: None,
        }
    }

    /// Gives back one unit of `kind` for `key`, removing the entry when nothing about the client
    /// needs remembering (no permits, and no rate state that could still refuse).
    fn release(&self, key: &ClientKey, kind: Kind) {
        let shared = &*self.shared;
        // The client's count and the total drop together, under the shard lock that `admit`
        // counts them under.
        shared.clients.remove_if_mut(key, |_, state| {
            let count = state.count_mut(kind);
            debug_assert!(*count > 0, "released a permit that was never counted");
            *count = count.saturating_sub(1);
            shared.total(kind).fetch_sub(1, Ordering::Relaxed);
            let forget = state.is_forgettable(|| self.now());
            if !forget && state.is_idle() {
                shared.retaining.store(true, Ordering::Relaxed);
            }
            forget
        });
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
