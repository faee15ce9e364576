//! [`Limiter`]: the per-client counts that every admission point shares.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use dashmap::DashMap;

mod admit;
mod clients;
mod entry;
mod fair;
mod gate;
mod hot;
mod housekeeping;
mod log;
mod networks;
mod permit;
mod points;
mod quota;
mod refused_by;
mod release;
mod roster;
pub(crate) mod sharing;
mod stats;
mod stripes;
mod summary;

use self::entry::{Entry, Record};
#[cfg(feature = "serve")]
pub(crate) use self::fair::Giveback;
pub(crate) use self::fair::{RECLAIMED_GOAWAY, RECLAIMED_IDLE};
use self::gate::Route;
use self::hot::HotConfig;
#[cfg(feature = "serve")]
pub(crate) use self::permit::CloseCounter;
pub use self::permit::{ConnPermit, RequestPermit};
pub(crate) use self::points::PointId;
pub(crate) use self::points::{AdmissionPoint, Checkpoint};
use self::points::{Points, DIRECT};
pub use self::stats::{
    BudgetStats, ByReason, ClientStats, FairShareStats, FleetError, FleetNode, FleetStatus,
    PointStats, Stats,
};
use self::summary::Summary;

use crate::clock::{nanos, Clock};
use crate::key::ClientKey;
use crate::keys::RequestKey;
use crate::limits::Limits;
use crate::reason::{RejectReason, Rejected};

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
/// assert_eq!(refused.to_string(), "too many requests");
/// assert_eq!(limiter.open_connections(client), 2);
///
/// drop(first);
/// let third = limiter.try_acquire(client).unwrap();
/// # drop((second, third));
/// ```
///
/// # How it works
///
/// A limiter is a sharded map from [`ClientKey`] to one client's entry (its open connections and
/// in-flight requests as atomics, its rate states and ban behind a lock of its own), the config
/// in force behind an `ArcSwap`, and counters split into per-thread stripes. Two functions do all
/// the counting:
///
/// - **admission** is `Limiter::admit` (`src/limiter/admit.rs`): it loads the config once, finds
///   the client's entry under its shard's *read* lock, checks the rate rule of its kind with one
///   compare-and-swap on the rule's state, and raises the client's count with another; a ban, a
///   path rule or a global cap are checked on the whole config first, in atomics too, with no
///   lock. Nothing is counted unless every check passes;
/// - **release** is `release` (`src/limiter/release.rs`), run exactly once by the permit's
///   `Drop`: it lowers the count on the entry the permit holds, without touching the map.
///
/// A client's entry outlives its last permit, so that a returning client finds it; entries with
/// nothing open and nothing to remember are swept every second, by a thread every limiter in
/// the process shares (`housekeeping.rs`). Everything
/// else in `src/limiter/` is around these: the entry (`entry.rs`), the permits (`permit.rs`),
/// the admission points and their counters (`points.rs`, `stripes.rs`), the rate and ban checks
/// (`gate.rs`), stats (`stats.rs`), logs (`log.rs`, `summary.rs`), and the clients' listings and
/// manual bans (`clients.rs`).
///
/// # Memory
///
/// The map holds an entry for each client with an open connection or an in-flight request, for
/// a client whose rate or ban record can still refuse something, and for a client that left
/// less than a sweep ago; at most
/// [`Config::max_tracked_clients`](crate::Config::max_tracked_clients) are held (see
/// [`WhenFull`](crate::config::WhenFull)), and a full map first forgets the clients nothing needs
/// remembered. A client's first visit allocates its entry; after that, admissions and releases
/// allocate nothing, except a client's first request matching a path rule, which allocates its
/// path states.
#[derive(Clone)]
pub struct Limiter {
    shared: Arc<Shared>,
}

/// A config as the limiter holds it: the limits its decisions read, and the whole config with
/// what the integrations prepared from it, which the limiter keeps without looking inside.
///
/// Both sit behind one pointer, so a decision that reads an integration's settings and the
/// limits reads them from one snapshot (see [`Settings`]).
///
/// The core cannot name the one `Config`, which sits above it and nests every integration's
/// settings, so `whole` is of the type the layer above says it is: [`Whole`], given by the one
/// implementation of [`Composition`] (in `crate::config`). The core only moves and clones it;
/// the fields are private to the module that defines them, which reads them as the type they
/// are, without a downcast. Holding it as `Arc<dyn Any>` did the same at the cost of a check
/// that could only fail on a bug; making the limiter generic over it would have put a type
/// parameter on `Limiter` and every type holding one, for a single instantiation.
pub(crate) struct Installed {
    pub(crate) limits: Limits,
    pub(crate) whole: Arc<Whole>,
}

/// What the layer above the core keeps in a limiter beside the limits: the type of
/// [`Installed::whole`].
pub(crate) trait Composition {
    /// The whole config and what the integrations prepared from it. Its default is that of the
    /// default config, so that the core's own tests can make a limiter without naming it.
    type Whole: Default + Send + Sync + 'static;
}

/// The layer above the core, which implements [`Composition`] once.
pub(crate) enum Above {}

/// The whole config as the layer above prepares it.
pub(crate) type Whole = <Above as Composition>::Whole;

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

/// How many shards the client map has: enough that clients admitted on different threads
/// seldom share a shard's lock, and that a table of a million clients is about 4,000 to a shard.
const SHARDS: usize = 256;

pub(crate) use crate::limits::Kind;

impl Kind {
    /// The reason a per-client concurrency limit of this kind refuses.
    pub(super) fn client_limit_reason(self) -> RejectReason {
        match self {
            Kind::Connection => RejectReason::ClientConnections,
            Kind::Request => RejectReason::ClientRequests,
        }
    }

    /// The reason a full global budget of this kind refuses.
    pub(super) fn total_reason(self) -> RejectReason {
        match self {
            Kind::Connection => RejectReason::TotalConnections,
            Kind::Request => RejectReason::TotalRequests,
        }
    }
}

struct Shared {
    config: ArcSwap<Installed>,
    /// The settings a common decision reads, copied out of `config` (`hot.rs`).
    hot: HotConfig,
    /// The clients, each an [`Entry`] keyed by its client key (the entry holds the key).
    clients: DashMap<Record, (), ClientHasher>,
    /// The same entries, in an array to draw from at random (`roster.rs`).
    roster: roster::Roster,
    /// How many keys each wider network holds in `clients` (`networks.rs`).
    networks: DashMap<ClientKey, u32, ClientHasher>,
    clock: Box<dyn Clock>,
    /// What the entries and their permits count into.
    tallies: Arc<Tallies>,
    /// Entries in `clients`, kept exactly (a reservation precedes every insert), so that
    /// `max_tracked_clients` is never passed and `stats()` need not lock every shard.
    tracked: Padded<AtomicUsize>,
    counters: Counters,
    summary: Summary,
    /// Held while a config is installed, so that installs happen one at a time.
    installing: Mutex<()>,
    /// Held while expired clients are swept, so that sweeps happen one at a time.
    sweeping: Mutex<()>,
    /// What a fleet must hear, when one is joined (`sharing.rs`).
    outbox: sharing::Outbox,
    /// Networks banned by the operator (`clients.rs`); their clients are banned as they are
    /// first tracked.
    network_bans: Mutex<Vec<NetworkBan>>,
    /// Whether `network_bans` may hold a running ban: a new client then looks.
    any_network_ban: std::sync::atomic::AtomicBool,
    /// The fair levels of the budgets, and reclaim (`fair.rs`).
    fair: fair::FairLevels,
    /// Which clients each reason refused most, lately (`refused_by.rs`).
    refused_by: refused_by::RefusedBy,
}

/// A network the operator banned: until when (clock nanoseconds), and why.
struct NetworkBan {
    network: crate::cidr::Cidr,
    until: u64,
    reason: crate::ban::BanReason,
}

/// What a client's entry, and each permit through it, reaches without the map: the admission
/// points' counters and the global count of open connections.
struct Tallies {
    points: Points,
    /// Per [`Kind`], open connections (in-flight requests) in the global count: those admitted
    /// while a global budget is in force (or being put in force), so the budget is never
    /// passed. Without a budget, admissions leave it alone, and no line is written by every
    /// thread.
    total: [Padded<AtomicUsize>; 2],
    /// Set for good when any client is first banned: until then, a keyed request need not
    /// look for a ban of its address.
    any_ban: std::sync::atomic::AtomicBool,
    /// Whether the config in force reclaims idle connections for fair share: a server that can
    /// give connections back then listens for asks (`ConnPermit::giveback`).
    reclaim: std::sync::atomic::AtomicBool,
}

impl Tallies {
    fn new() -> Self {
        Tallies {
            points: Points::new(),
            total: Default::default(),
            any_ban: std::sync::atomic::AtomicBool::new(false),
            reclaim: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// How long [`Limiter::install`] waits, at most, for the decisions made on a config it replaced.
/// A decision holds its config for a few microseconds; only a caller that installs a config
/// from inside one of the crate's callbacks would hold it longer.
const STRAGGLERS_WAIT: Duration = Duration::from_secs(1);

/// Waits until `replaced` (swapped out of an `ArcSwap`, which turns its readers' borrows into
/// references) is held by nothing else, up to [`STRAGGLERS_WAIT`].
fn wait_until_unshared<T>(replaced: &Arc<T>) {
    let started = Instant::now();
    while Arc::strong_count(replaced) > 1 && started.elapsed() < STRAGGLERS_WAIT {
        std::thread::yield_now();
    }
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
    unidentified: AtomicU64,
    /// Paces the log line about unidentified requests.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    unidentified_logged: log::Every,
    /// Paces the log line about keys naming a tier the config does not have.
    unknown_tier_logged: log::Every,
}

impl Limiter {
    /// A limiter enforcing `installed`, on the time of `clock`, looked after by the sweeper
    /// that forgets expired clients (`housekeeping.rs`).
    pub(crate) fn with_installed(installed: Installed, clock: impl Clock) -> Self {
        let limiter = Limiter::unattended(installed, clock);
        housekeeping::look_after(&limiter.shared);
        limiter
    }

    /// A limiter enforcing `installed` that no sweeper looks after: what the unit tests that
    /// walk the table themselves use.
    fn unattended(installed: Installed, clock: impl Clock) -> Self {
        let tallies = Tallies::new();
        tallies
            .reclaim
            .store(installed.limits.reclaims(), Ordering::Relaxed);
        let shared = Arc::new(Shared {
            hot: HotConfig::new(&installed.limits),
            config: ArcSwap::from_pointee(installed),
            clients: DashMap::with_hasher_and_shard_amount(ClientHasher::default(), SHARDS),
            roster: roster::Roster::new(),
            networks: DashMap::with_hasher(ClientHasher::default()),
            clock: Box::new(clock),
            tallies: Arc::new(tallies),
            tracked: Padded(AtomicUsize::new(0)),
            counters: Counters::default(),
            summary: Summary::new(),
            installing: Mutex::new(()),
            sweeping: Mutex::new(()),
            outbox: sharing::Outbox::default(),
            network_bans: Mutex::new(Vec::new()),
            any_network_ban: std::sync::atomic::AtomicBool::new(false),
            fair: fair::FairLevels::default(),
            refused_by: refused_by::RefusedBy::default(),
        });
        Limiter { shared }
    }

    /// Replaces the config in force; the next decision uses it.
    ///
    /// Putting a global budget in force where there was none first takes the connections (or
    /// requests) admitted outside the global count into it (counting, not yet refusing,
    /// meanwhile), so that the budget applies to every open one from the next decision on.
    pub(crate) fn install(&self, installed: Installed) {
        let shared = &*self.shared;
        let _one_at_a_time = shared
            .installing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if installed.limits.starts_counting(&self.installed().limits) {
            let counting = Installed {
                limits: installed.limits.counting_only(),
                whole: Arc::clone(&installed.whole),
            };
            shared.hot.publish(&counting.limits);
            let uncounting = shared.config.swap(Arc::new(counting));
            // Decisions that read the config before may still count a connection outside the
            // global count: those on the whole config are let finish first, and those on the
            // hot settings are met shard by shard (`HotConfig::still`), so that none is missed.
            wait_until_unshared(&uncounting);
            self.absorb_into_total();
        }
        shared.hot.publish(&installed.limits);
        let reclaim = installed.limits.reclaims();
        shared.tallies.reclaim.store(reclaim, Ordering::Relaxed);
        shared.config.store(Arc::new(installed));
    }

    /// Takes every connection and request outside the global counts into them, under each
    /// shard's write lock in turn, so that no decision on the shard is halfway.
    fn absorb_into_total(&self) {
        let shared = &*self.shared;
        for record in shared.clients.iter_mut() {
            let absorbed = record.key().entry().absorb();
            for (total, absorbed) in shared.tallies.total.iter().zip(absorbed) {
                total.fetch_add(absorbed as usize, Ordering::Relaxed);
            }
        }
    }

    /// The config in force.
    pub(crate) fn installed(&self) -> arc_swap::Guard<Arc<Installed>> {
        self.shared.config.load()
    }

    /// Whether `ip` lies in one of the config's
    /// [`trusted_proxies`](crate::Config::trusted_proxies).
    #[doc(hidden)]
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.installed().limits.is_trusted_proxy(ip)
    }

    /// Admits a connection from `ip`, or says why not.
    ///
    /// The returned permit counts the connection until it is dropped; keep it alive exactly as
    /// long as the connection (the listener does this by storing it in [`TrackedIo`]). A refusal
    /// counts no connection, though a refused attempt may be a rate violation.
    ///
    /// Checks, in order: a ban, `connect_rate`, the per-client limit (`max_conns_per_client`,
    /// or the longest matching override), then the global cap (`max_conns_total`). Exempt
    /// clients are counted but never refused. Concurrent calls never admit past a limit.
    /// Counted under the admission point `direct` in [`Stats`](crate::Stats).
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

    /// Admits a connection from `ip` at `point`.
    #[inline]
    fn connection_permit(&self, ip: IpAddr, point: PointId) -> Result<ConnPermit, Rejected> {
        let slot = self.admit(ip, Kind::Connection, None, point)?;
        Ok(ConnPermit::new(slot))
    }

    /// Admits a request from `ip`, for `route` when known, at `point`.
    #[inline]
    fn request_permit(
        &self,
        ip: IpAddr,
        route: Option<Route<'_>>,
        point: PointId,
    ) -> Result<RequestPermit, Rejected> {
        let slot = self.admit(ip, Kind::Request, route, point)?;
        Ok(RequestPermit::new(slot))
    }

    /// Admits a request from `ip` keyed by `key`, for `method` and `path`: against a ban of the
    /// address and the config's limits on keyed requests per address
    /// ([`KeyConfig`](crate::keys::KeyConfig)), then against the key's own: a ban, its tier's
    /// `request_rate`, every matching path rule, its tier's `max_requests`. See
    /// [`keys`](crate::keys) for the rule that makes invented keys gain nothing.
    ///
    /// The permit counts the request under the key ([`RequestPermit::client_key`]), and under
    /// the address as well while it lives.
    pub fn try_acquire_request_as(
        &self,
        ip: IpAddr,
        key: &RequestKey,
        method: &str,
        path: &str,
    ) -> Result<RequestPermit, Rejected> {
        self.keyed_request_permit(ip, key, Some(Route { method, path }), DIRECT)
    }

    fn keyed_request_permit(
        &self,
        ip: IpAddr,
        key: &RequestKey,
        route: Option<Route<'_>>,
        point: PointId,
    ) -> Result<RequestPermit, Rejected> {
        let (slot, address) = self.admit_keyed(ip, key, route, point)?;
        Ok(RequestPermit::new(slot).with_address(address))
    }

    /// The key `ip` is counted under now.
    fn key_for(&self, ip: IpAddr) -> ClientKey {
        let installed = self.installed();
        let limits = &installed.limits;
        if limits.is_exempt(ip) {
            ClientKey::exact(ip)
        } else {
            limits.key(ip)
        }
    }

    /// The clients the reason named `reason` refused most lately, most first, at most `n`, each
    /// with about how many refusals: for the operator's page.
    #[cfg_attr(not(feature = "admin"), allow(dead_code))]
    pub(crate) fn top_refused(&self, reason: &str, n: usize) -> Vec<(ClientKey, u64)> {
        self.shared.refused_by.top(reason, n)
    }

    /// The limiter clock's reading, in nanoseconds.
    fn now(&self) -> u64 {
        nanos(self.shared.clock.now())
    }
}

// Every update of the shared state is one atomic operation, or a few integer operations under a
// lock, with no user code in between, so a panic elsewhere can never leave a count half-changed:
// the limiter stays consistent across `catch_unwind`, and permits dropped while unwinding still
// release.
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
