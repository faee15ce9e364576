//! [`Limiter`]: the per-client counts that every admission point shares.

use std::any::Any;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::Arc;

use arc_swap::ArcSwap;
use dashmap::DashMap;

mod admit;
mod clients;
mod housekeeping;
mod log;
mod permit;
mod points;
mod release;
mod state;
mod stats;
mod summary;

pub use self::permit::{ConnPermit, RequestPermit};
pub(crate) use self::points::PointId;
pub use self::points::{AdmissionPoint, Checkpoint};
use self::points::{Points, DIRECT};
pub(crate) use self::state::Kind;
use self::state::{ClientState, Route};
pub use self::stats::{ByReason, ClientStats, PointStats, Stats};
use self::summary::Summary;

use crate::clock::{nanos, Clock};
use crate::key::ClientKey;
use crate::limits::Limits;
use crate::reason::{Decision, RejectReason, Rejected};

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
/// # How it works
///
/// A limiter is a sharded map from [`ClientKey`] to one client's state (its open connections,
/// in-flight requests, rate states and ban), the config in force behind an `ArcSwap`, and a few
/// counters. Two functions do all the counting:
///
/// - **admission** is `Limiter::admit` (`src/limiter/admit.rs`): it loads the limits once, then
///   under the client's shard lock checks a ban, the rate rules, the per-client limit and a place
///   under the global cap, and counts the client only if every check passed;
/// - **release** is `Limiter::release` (`src/limiter/release.rs`), run exactly once by the
///   permit's `Drop`: it gives the unit back under the same shard lock, and forgets the client
///   when nothing about it needs remembering.
///
/// Everything else in `src/limiter/` is around them: the permits (`permit.rs`), the admission
/// points and their counters (`points.rs`), the per-client checks (`state.rs`), stats
/// (`stats.rs`), logs (`log.rs`, `summary.rs`), the clients' listings and manual bans
/// (`clients.rs`), and forgetting expired or idle clients (`housekeeping.rs`).
///
/// # Memory
///
/// The map holds an entry for each client with an open connection or an in-flight request, and,
/// when rate rules or bans are configured, for a client that left while its record can still
/// refuse something; such entries are swept once expired, and at most
/// [`Config::max_tracked_clients`](crate::Config::max_tracked_clients) are held (see
/// [`WhenFull`](crate::WhenFull)). The warm path (a client that already has an entry, or one whose
/// key was seen before so the map has room) allocates nothing; a client's first request
/// matching a path rule allocates its path states.
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

/// A config as the limiter holds it: the limits its decisions read, and the whole config with
/// what the integrations prepared from it, which the limiter keeps without looking inside.
///
/// `whole` is the one type-erased value in the crate, and deliberately so: the core cannot name
/// the one `Config`, which sits above it. Only `crate::config` stores it (when a config is
/// installed) and reads it back (for `Limiter::config` and [`Settings`]), always as the type it
/// stored, so the downcast there cannot fail.
pub(crate) struct Installed {
    pub(crate) limits: Limits,
    pub(crate) whole: Box<dyn Any + Send + Sync>,
}

/// An integration's settings in the config in force, by type: the core knows no integration,
/// so each one asks the limiter for its own settings type, and the one `Config` (which nests
/// every integration's settings) provides it (`crate::config`).
pub(crate) trait Settings<T> {
    /// Calls `f` with the settings of type `T` and the limits of the config in force, both read
    /// from one snapshot, so that a decision never mixes two configs.
    fn with_settings<R>(&self, f: impl FnOnce(&T, &Limits) -> R) -> R;
}

/// The per-client map's hasher: foldhash with a per-map random seed. Client keys are partly chosen
/// by remote peers, so the seed must be secret. std's SipHash would also do, but made a warm
/// admit+release about 30% slower in `benches/admission.rs`.
type ClientHasher = foldhash::fast::RandomState;

struct Shared {
    config: ArcSwap<Installed>,
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
    /// The admission points and what each admitted, refused and closed.
    points: Points,
    counters: Counters,
    summary: Summary,
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
    dry_run: AtomicU64,
    bans: AtomicU64,
    evictions: AtomicU64,
}

impl Limiter {
    /// A limiter enforcing `installed`, on the time of `clock`.
    pub(crate) fn with_installed(installed: Installed, clock: impl Clock) -> Self {
        Limiter {
            shared: Arc::new(Shared {
                config: ArcSwap::from_pointee(installed),
                clients: DashMap::with_hasher(ClientHasher::default()),
                clock: Box::new(clock),
                next_sweep: AtomicU64::new(0),
                retaining: AtomicBool::new(false),
                tracked: Padded(AtomicUsize::new(0)),
                open_connections: Padded(AtomicUsize::new(0)),
                points: Points::new(),
                counters: Counters::default(),
                summary: Summary::new(),
            }),
        }
    }

    /// Replaces the config in force; the next decision uses it.
    pub(crate) fn install(&self, installed: Installed) {
        self.shared.config.store(Arc::new(installed));
    }

    /// The config in force.
    pub(crate) fn installed(&self) -> arc_swap::Guard<Arc<Installed>> {
        self.shared.config.load()
    }

    /// Whether `ip` lies in one of the config's
    /// [`trusted_proxies`](crate::Config::trusted_proxies).
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.installed().limits.is_trusted_proxy(ip)
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
    /// Counted under the admission point [`AdmissionPoint::DIRECT`].
    ///
    /// [`TrackedIo`]: crate::TrackedIo
    pub fn try_acquire(&self, ip: IpAddr) -> Result<ConnPermit, Rejected> {
        self.connection_permit(ip, DIRECT)
    }

    /// Admits a request from `ip` against a ban, `request_rate` and `max_requests_per_client`,
    /// or says why not. Path rules need the route: see [`Limiter::try_acquire_request_to`].
    pub fn try_acquire_request(&self, ip: IpAddr) -> Result<RequestPermit, Rejected> {
        self.request_permit(ip, None, DIRECT)
    }

    /// Admits a request from `ip` for `method` (such as `"POST"`) and `path`: a ban,
    /// `request_rate`, every matching path rule, then `max_requests_per_client`.
    ///
    /// The request layer does this for every request and keeps the permit until the response
    /// body has been sent; call it yourself to limit requests in a custom server.
    pub fn try_acquire_request_to(
        &self,
        ip: IpAddr,
        method: &str,
        path: &str,
    ) -> Result<RequestPermit, Rejected> {
        self.request_permit(ip, Some(Route { method, path }), DIRECT)
    }

    /// A security gate's `allowConnect`: the connection decision as a [`Decision`] for a custom
    /// server to enforce. `Allow` carries the permit; a refusal is always `Close`.
    pub fn allow_connect(&self, ip: IpAddr) -> Decision<ConnPermit> {
        match self.try_acquire(ip) {
            Ok(permit) => Decision::Allow(permit),
            Err(rejected) => Decision::Close(rejected),
        }
    }

    /// A security gate's `allowRequest`: `Allow` with the permit; `Drop` (ignore or answer 429, keep
    /// the connection) for a limit or rate; `Close` for a banned client.
    pub fn allow_request(&self, ip: IpAddr, method: &str, path: &str) -> Decision<RequestPermit> {
        match self.try_acquire_request_to(ip, method, path) {
            Ok(permit) => Decision::Allow(permit),
            Err(rejected) if rejected.reason() == RejectReason::Banned => Decision::Close(rejected),
            Err(rejected) => Decision::Drop(rejected),
        }
    }

    /// Admits a connection from `ip` at `point`.
    fn connection_permit(&self, ip: IpAddr, point: PointId) -> Result<ConnPermit, Rejected> {
        let key = self.admit(ip, Kind::Connection, None, point)?;
        let permit = ConnPermit::new(self.clone(), key, point);
        self.admitted(&key, Kind::Connection, point);
        Ok(permit)
    }

    /// Admits a request from `ip`, for `route` when known, at `point`.
    fn request_permit(
        &self,
        ip: IpAddr,
        route: Option<Route<'_>>,
        point: PointId,
    ) -> Result<RequestPermit, Rejected> {
        let key = self.admit(ip, Kind::Request, route, point)?;
        let permit = RequestPermit::new(self.clone(), key, point);
        self.admitted(&key, Kind::Request, point);
        Ok(permit)
    }

    /// The key `ip` is counted under now.
    fn key_for(&self, ip: IpAddr) -> ClientKey {
        self.installed().limits.client(ip).0
    }

    /// The limiter clock's reading, in nanoseconds.
    fn now(&self) -> u64 {
        nanos(self.shared.clock.now())
    }
}

// Every update of the shared state is a few integer operations under a shard lock, with no
// user code in between, so a panic elsewhere can never leave a count half-changed: the limiter
// stays consistent across `catch_unwind`, and permits dropped while unwinding still release.
impl std::panic::UnwindSafe for Limiter {}
impl std::panic::RefUnwindSafe for Limiter {}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("limits", &self.installed().limits)
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
        assert_send_sync::<Checkpoint>();
        assert_send_sync::<Rejected>();
        assert_send_sync::<Stats>();
    }
}
